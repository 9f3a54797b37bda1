//! Sessions: engine-side namespaces that Python processes join, and the typed, constrained,
//! versioned **variables** shared by everyone in a session.
//!
//! A session is named by an id (generated when none is given); joining an existing id reaches
//! the same state. Every call through a session refreshes it; a session idle for longer than its
//! TTL is removed by [`Sessions::sweep`] with everything it owns. One session never sees
//! another's variables: every lookup goes through the session that owns them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dspex_optimizer::{
    CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue,
};
use parking_lot::Mutex;

use crate::error::{EngineError, Result};
use crate::tools::{ExternalTool, ToolProvider, ToolSpec};

/// The regular expressions of `str` variables' `pattern` constraint.
pub use regex::Regex;

/// A value held by a variable (or passed to and from a tool): JSON-like data plus bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// None.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes (tensors, embeddings, binary payloads).
    Bytes(Vec<u8>),
    /// A list of values.
    List(Vec<Data>),
    /// A map from string keys to values.
    Map(BTreeMap<String, Data>),
}

impl Data {
    /// The kind of the value, as error messages name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Data::Null => "None",
            Data::Bool(_) => "bool",
            Data::Int(_) => "int",
            Data::Float(_) => "float",
            Data::Str(_) => "str",
            Data::Bytes(_) => "bytes",
            Data::List(_) => "list",
            Data::Map(_) => "dict",
        }
    }

    /// Roughly how many bytes the value holds (for the payload limit).
    pub fn size(&self) -> usize {
        match self {
            Data::Null | Data::Bool(_) | Data::Int(_) | Data::Float(_) => 8,
            Data::Str(s) => s.len(),
            Data::Bytes(b) => b.len(),
            Data::List(l) => l.iter().map(Data::size).sum::<usize>() + 8,
            Data::Map(m) => m.iter().map(|(k, v)| k.len() + v.size()).sum::<usize>() + 8,
        }
    }

    /// A JSON value as data (a number is an int when it is one).
    pub fn from_json(v: &serde_json::Value) -> Data {
        use serde_json::Value;
        match v {
            Value::Null => Data::Null,
            Value::Bool(b) => Data::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Data::Int(i),
                None => Data::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Data::Str(s.clone()),
            Value::Array(a) => Data::List(a.iter().map(Data::from_json).collect()),
            Value::Object(m) => Data::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Data::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The value as JSON (bytes become a list of numbers; a non-finite float becomes null).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Data::Null => Value::Null,
            Data::Bool(b) => Value::Bool(*b),
            Data::Int(i) => Value::from(*i),
            Data::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Data::Str(s) => Value::String(s.clone()),
            Data::Bytes(b) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
            Data::List(l) => Value::Array(l.iter().map(Data::to_json).collect()),
            Data::Map(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

impl std::fmt::Display for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Data::Null => write!(f, "None"),
            Data::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Data::Int(i) => write!(f, "{i}"),
            Data::Float(x) => write!(f, "{x}"),
            Data::Str(s) => write!(f, "{s:?}"),
            Data::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Data::List(l) => write!(f, "<list of {}>", l.len()),
            Data::Map(m) => write!(f, "<dict of {}>", m.len()),
        }
    }
}

/// Element type of a tensor variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// Unsigned byte.
    U8,
}

impl DType {
    /// Parses "float32", "float64", "int32", "int64" or "uint8".
    pub fn parse(s: &str) -> Result<DType> {
        Ok(match s {
            "float32" | "f32" => DType::F32,
            "float64" | "f64" => DType::F64,
            "int32" | "i32" => DType::I32,
            "int64" | "i64" => DType::I64,
            "uint8" | "u8" => DType::U8,
            other => {
                return Err(EngineError::InvalidArgument(format!(
                    "unknown dtype {other:?} (float32, float64, int32, int64 or uint8)"
                )))
            }
        })
    }

    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// The name `parse` accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
        }
    }
}

/// The type and constraints of a variable.
#[derive(Debug, Clone)]
pub enum VarType {
    /// A float in `[min, max]` (either bound optional); `log`: searched on a log scale.
    Float {
        /// Lower bound.
        min: Option<f64>,
        /// Upper bound.
        max: Option<f64>,
        /// Log scale (needs `min > 0`).
        log: bool,
    },
    /// An integer in `[min, max]`.
    Int {
        /// Lower bound.
        min: Option<i64>,
        /// Upper bound.
        max: Option<i64>,
        /// Log scale (needs `min > 0`).
        log: bool,
    },
    /// A string of at most `max_length` characters matching `pattern` (whole string).
    Str {
        /// Longest accepted string, in characters.
        max_length: Option<usize>,
        /// A regular expression the whole string must match.
        pattern: Option<regex::Regex>,
    },
    /// True or False.
    Bool,
    /// One of `choices` (None, bool, int, float or str).
    Choice {
        /// The accepted values.
        choices: Vec<Data>,
    },
    /// Packed little-endian elements of `dtype` with `shape` (an embedding is a 1-D tensor).
    Tensor {
        /// Dimensions; their product times the dtype width is the byte length.
        shape: Vec<usize>,
        /// Element type.
        dtype: DType,
    },
}

impl VarType {
    /// The type's name ("float", "int", "str", "bool", "choice", "tensor").
    pub fn name(&self) -> &'static str {
        match self {
            VarType::Float { .. } => "float",
            VarType::Int { .. } => "int",
            VarType::Str { .. } => "str",
            VarType::Bool => "bool",
            VarType::Choice { .. } => "choice",
            VarType::Tensor { .. } => "tensor",
        }
    }

    /// Checks the constraints themselves (min <= max, log with min > 0, choices not empty).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::InvalidArgument(m));
        match self {
            VarType::Float { min, max, log } => {
                if min.is_some_and(|v| !v.is_finite()) || max.is_some_and(|v| !v.is_finite()) {
                    return bad("min and max must be finite".into());
                }
                if let (Some(a), Some(b)) = (min, max) {
                    if a > b {
                        return bad(format!("min {a} is greater than max {b}"));
                    }
                }
                if *log && !min.is_some_and(|a| a > 0.0) {
                    return bad("log=True needs min > 0".into());
                }
            }
            VarType::Int { min, max, log } => {
                if let (Some(a), Some(b)) = (min, max) {
                    if a > b {
                        return bad(format!("min {a} is greater than max {b}"));
                    }
                }
                if *log && !min.is_some_and(|a| a > 0) {
                    return bad("log=True needs min >= 1".into());
                }
            }
            VarType::Choice { choices } => {
                if choices.is_empty() {
                    return bad("choices must not be empty".into());
                }
                if let Some(c) = choices.iter().find(|c| {
                    !matches!(
                        c,
                        Data::Null | Data::Bool(_) | Data::Int(_) | Data::Float(_) | Data::Str(_)
                    )
                }) {
                    return bad(format!(
                        "choices must be None, bool, int, float or str, got a {}",
                        c.kind()
                    ));
                }
            }
            VarType::Str { .. } | VarType::Bool | VarType::Tensor { .. } => {}
        }
        Ok(())
    }

    /// Checks `value` against the type and its constraints; ints are accepted for floats (and
    /// stored as floats).
    pub fn check(&self, value: Data) -> std::result::Result<Data, String> {
        match (self, value) {
            (VarType::Float { min, max, .. }, v @ (Data::Float(_) | Data::Int(_))) => {
                let x = match v {
                    Data::Int(i) => i as f64,
                    Data::Float(x) => x,
                    _ => unreachable!("matched above"),
                };
                if !x.is_finite() {
                    return Err(format!("{x} is not a finite number"));
                }
                if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
                    return Err(format!(
                        "{x} is outside [{}, {}]",
                        fmt_bound(*min),
                        fmt_bound(*max)
                    ));
                }
                Ok(Data::Float(x))
            }
            (VarType::Int { min, max, .. }, Data::Int(i)) => {
                if min.is_some_and(|m| i < m) || max.is_some_and(|m| i > m) {
                    return Err(format!(
                        "{i} is outside [{}, {}]",
                        min.map_or("-inf".into(), |m| m.to_string()),
                        max.map_or("inf".into(), |m| m.to_string())
                    ));
                }
                Ok(Data::Int(i))
            }
            (
                VarType::Str {
                    max_length,
                    pattern,
                },
                Data::Str(s),
            ) => {
                let n = s.chars().count();
                if max_length.is_some_and(|m| n > m) {
                    return Err(format!(
                        "a string of {n} characters is longer than max_length {}",
                        max_length.unwrap_or_default()
                    ));
                }
                if let Some(p) = pattern {
                    let whole = p
                        .find(&s)
                        .is_some_and(|m| m.start() == 0 && m.end() == s.len());
                    if !whole {
                        return Err(format!("{s:?} does not match the pattern {:?}", p.as_str()));
                    }
                }
                Ok(Data::Str(s))
            }
            (VarType::Bool, Data::Bool(b)) => Ok(Data::Bool(b)),
            (VarType::Choice { choices }, v) => {
                if choices.iter().any(|c| same_choice(c, &v)) {
                    Ok(v)
                } else {
                    Err(format!("{v} is not one of the choices"))
                }
            }
            (VarType::Tensor { shape, dtype }, Data::Bytes(b)) => {
                let want = shape.iter().product::<usize>() * dtype.width();
                if b.len() != want {
                    return Err(format!(
                        "{} bytes do not hold a {} tensor of shape {shape:?} ({want} bytes)",
                        b.len(),
                        dtype.as_str()
                    ));
                }
                Ok(Data::Bytes(b))
            }
            (t, v) => Err(format!(
                "a {} variable cannot hold a {}",
                t.name(),
                v.kind()
            )),
        }
    }

    /// The search-space distribution a tunable variable of this type defines.
    pub fn distribution(&self) -> Result<Distribution> {
        let need = |what: &str| {
            EngineError::InvalidArgument(format!("a tunable {} variable needs {what}", self.name()))
        };
        Ok(match self {
            VarType::Float { min, max, log } => Distribution::Float(FloatDistribution::new(
                min.ok_or_else(|| need("min"))?,
                max.ok_or_else(|| need("max"))?,
                *log,
                None,
            )?),
            VarType::Int { min, max, log } => Distribution::Int(IntDistribution::new(
                min.ok_or_else(|| need("min"))?,
                max.ok_or_else(|| need("max"))?,
                *log,
                1,
            )?),
            VarType::Bool => Distribution::Categorical(CategoricalDistribution::new(vec![
                ParamValue::Bool(false),
                ParamValue::Bool(true),
            ])?),
            VarType::Choice { choices } => Distribution::Categorical(CategoricalDistribution::new(
                choices
                    .iter()
                    .map(|c| match c {
                        Data::Null => ParamValue::None,
                        Data::Bool(b) => ParamValue::Bool(*b),
                        Data::Int(i) => ParamValue::Int(*i),
                        Data::Float(x) => ParamValue::Float(*x),
                        Data::Str(s) => ParamValue::Str(s.clone()),
                        _ => ParamValue::None,
                    })
                    .collect(),
            )?),
            VarType::Str { .. } | VarType::Tensor { .. } => {
                return Err(EngineError::InvalidArgument(format!(
                    "a {} variable cannot be tunable (float, int, bool and choice can)",
                    self.name()
                )))
            }
        })
    }
}

fn fmt_bound(b: Option<f64>) -> String {
    b.map_or("-inf/inf".into(), |v| v.to_string())
}

/// Choices compare by kind and value (1 is not True, 1 is not 1.0).
fn same_choice(a: &Data, b: &Data) -> bool {
    match (a, b) {
        (Data::Float(x), Data::Float(y)) => x == y,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b) && a == b,
    }
}

/// A variable: its type, its current value and how many times it was set.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Type and constraints.
    pub ty: VarType,
    /// The current value (checked against `ty`).
    pub value: Data,
    /// 1 when defined, +1 on each set.
    pub version: u64,
    /// Its constraints define a search-space distribution.
    pub tunable: bool,
}

/// A change to a variable, as watchers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct VarEvent {
    /// The variable's name.
    pub name: String,
    /// The new value; None when the variable was deleted.
    pub value: Option<Data>,
    /// The new version (the last one for a deletion).
    pub version: u64,
}

/// A BM25 index of a session, with the ids and texts of its documents.
#[derive(Debug)]
pub struct NamedIndex {
    /// The index.
    pub index: dspex_native::Bm25Index,
    /// The id of each document (its position when none were given).
    pub ids: Vec<Data>,
    /// The text of each document.
    pub texts: Vec<String>,
}

/// Changes a watcher may fall behind by before it is told it missed some.
const WATCH_BUFFER: usize = 1024;

/// One engine-side session.
#[derive(Debug)]
pub struct Session {
    id: String,
    ttl: Duration,
    last_seen: Mutex<Instant>,
    variables: Mutex<BTreeMap<String, Variable>>,
    indexes: Mutex<HashMap<String, Arc<NamedIndex>>>,
    lms: Mutex<HashMap<String, dspex_native::lm::Lm>>,
    tools: Mutex<crate::tools::ExternalTools>,
    /// Created by the first `watch` (a channel preallocates its buffer: most sessions never
    /// have a watcher).
    events: std::sync::OnceLock<tokio::sync::broadcast::Sender<VarEvent>>,
    max_value_bytes: usize,
}

impl Session {
    /// The session's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Idle time after which the session expires.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long since the last call through this session.
    pub fn idle(&self) -> Duration {
        self.last_seen.lock().elapsed()
    }

    /// Marks the session as used now.
    pub fn touch(&self) {
        *self.last_seen.lock() = Instant::now();
    }

    fn checked(&self, name: &str, ty: &VarType, value: Data) -> Result<Data> {
        let size = value.size();
        if size > self.max_value_bytes {
            return Err(EngineError::InvalidArgument(format!(
                "variable {name:?}: a value of {size} bytes is larger than the limit of {} bytes",
                self.max_value_bytes
            )));
        }
        ty.check(value)
            .map_err(|why| EngineError::InvalidArgument(format!("variable {name:?}: {why}")))
    }

    /// Declares a variable with its type, constraints and first value (version 1). Declaring a
    /// name again is an error unless the type is the same, in which case nothing changes and
    /// the current version is returned (several processes may declare what they share).
    pub fn define(&self, name: &str, ty: VarType, value: Data, tunable: bool) -> Result<u64> {
        self.touch();
        if name.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a variable name must not be empty".into(),
            ));
        }
        ty.validate()
            .map_err(|e| EngineError::InvalidArgument(format!("variable {name:?}: {e}")))?;
        if tunable {
            ty.distribution()
                .map_err(|e| EngineError::InvalidArgument(format!("variable {name:?}: {e}")))?;
        }
        let value = self.checked(name, &ty, value)?;
        let mut vars = self.variables.lock();
        if let Some(v) = vars.get(name) {
            if v.ty.name() == ty.name() {
                return Ok(v.version);
            }
            return Err(EngineError::InvalidArgument(format!(
                "variable {name:?} is already defined as a {} variable",
                v.ty.name()
            )));
        }
        vars.insert(
            name.to_string(),
            Variable {
                ty,
                value: value.clone(),
                version: 1,
                tunable,
            },
        );
        drop(vars);
        self.publish(VarEvent {
            name: name.to_string(),
            value: Some(value),
            version: 1,
        });
        Ok(1)
    }

    fn missing(name: &str) -> EngineError {
        EngineError::NotFoundIn {
            what: "variable",
            name: name.to_string(),
        }
    }

    /// The variable `name` (a copy).
    pub fn variable(&self, name: &str) -> Result<Variable> {
        self.touch();
        self.variables
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| Self::missing(name))
    }

    /// Sets `name` to `value`; with `expected_version`, only if the variable is still at that
    /// version. Returns the new version.
    pub fn set(&self, name: &str, value: Data, expected_version: Option<u64>) -> Result<u64> {
        self.set_many(vec![(name.to_string(), value, expected_version)])
            .map(|v| v[0])
    }

    /// Sets several variables at once: all or none (each checked, and each expected version
    /// matched, before any changes). Returns the new versions in order.
    pub fn set_many(&self, changes: Vec<(String, Data, Option<u64>)>) -> Result<Vec<u64>> {
        self.touch();
        let mut vars = self.variables.lock();
        let mut checked = Vec::with_capacity(changes.len());
        for (name, value, expected) in changes {
            let v = vars.get(&name).ok_or_else(|| Self::missing(&name))?;
            if let Some(e) = expected {
                if e != v.version {
                    return Err(EngineError::FailedPrecondition(format!(
                        "variable {name:?} is at version {}, not the expected version {e}",
                        v.version
                    )));
                }
            }
            let value = self.checked(&name, &v.ty, value)?;
            checked.push((name, value));
        }
        let mut out = Vec::with_capacity(checked.len());
        let mut events = Vec::with_capacity(checked.len());
        for (name, value) in checked {
            let v = vars.get_mut(&name).ok_or_else(|| Self::missing(&name))?;
            v.value = value.clone();
            v.version += 1;
            out.push(v.version);
            events.push(VarEvent {
                name,
                value: Some(value),
                version: v.version,
            });
        }
        drop(vars);
        for e in events {
            self.publish(e);
        }
        Ok(out)
    }

    /// Removes `name`.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.touch();
        let v = self
            .variables
            .lock()
            .remove(name)
            .ok_or_else(|| Self::missing(name))?;
        self.publish(VarEvent {
            name: name.to_string(),
            value: None,
            version: v.version,
        });
        Ok(())
    }

    /// The names of the variables matching `pattern` (a glob: `*` any run, `?` one character;
    /// None: all), sorted.
    pub fn list(&self, pattern: Option<&str>) -> Vec<String> {
        self.touch();
        self.variables
            .lock()
            .keys()
            .filter(|k| pattern.is_none_or(|p| glob_match(p, k)))
            .cloned()
            .collect()
    }

    /// Builds (or replaces) the BM25 index `name` over `texts`; `ids` name the documents in
    /// search results (their positions when None). Returns how many documents it holds.
    pub fn index(
        &self,
        name: &str,
        texts: Vec<String>,
        ids: Option<Vec<Data>>,
        tokenizer: dspex_native::Tokenizer,
    ) -> Result<usize> {
        self.touch();
        if name.is_empty() {
            return Err(EngineError::InvalidArgument(
                "an index name must not be empty".into(),
            ));
        }
        let ids = match ids {
            Some(ids) if ids.len() != texts.len() => {
                return Err(EngineError::InvalidArgument(format!(
                    "index {name:?}: {} ids for {} texts",
                    ids.len(),
                    texts.len()
                )))
            }
            Some(ids) => ids,
            None => (0..texts.len() as i64).map(Data::Int).collect(),
        };
        let size: usize = texts.iter().map(String::len).sum();
        if size > self.max_value_bytes {
            return Err(EngineError::InvalidArgument(format!(
                "index {name:?}: {size} bytes of text is more than the limit of {} bytes",
                self.max_value_bytes
            )));
        }
        let index = dspex_native::Bm25Index::build(&texts, tokenizer);
        let n = index.len();
        self.indexes
            .lock()
            .insert(name.to_string(), Arc::new(NamedIndex { index, ids, texts }));
        Ok(n)
    }

    /// The index `name`.
    pub fn index_named(&self, name: &str) -> Result<Arc<NamedIndex>> {
        self.indexes
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFoundIn {
                what: "index",
                name: name.to_string(),
            })
    }

    /// The names of the session's indexes, sorted.
    pub fn index_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.indexes.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Adds (or replaces) the LM `name` that the `lm` tool and programs of the session call.
    pub fn add_lm(&self, name: &str, lm: dspex_native::lm::Lm) -> Result<()> {
        self.touch();
        if name.is_empty() {
            return Err(EngineError::InvalidArgument(
                "an LM name must not be empty".into(),
            ));
        }
        self.lms.lock().insert(name.to_string(), lm);
        Ok(())
    }

    /// The LM `name`.
    pub fn lm_named(&self, name: &str) -> Result<dspex_native::lm::Lm> {
        self.lms
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFoundIn {
                what: "LM",
                name: name.to_string(),
            })
    }
    /// Registers a tool that `provider` runs, callable by everyone in the session; a call
    /// waits at most `timeout`. A name of a native tool, or of another provider's tool, is
    /// refused, unless both registrations are `shared` with the same parameters and result
    /// (the provider then joins the tool's pool); the same provider registering a name again
    /// replaces its registration.
    pub fn register_tool(
        &self,
        spec: ToolSpec,
        provider: &Arc<ToolProvider>,
        timeout: Duration,
    ) -> Result<()> {
        self.touch();
        spec.validate()?;
        if timeout.is_zero() {
            return Err(EngineError::InvalidArgument(format!(
                "tool {:?}: the timeout must be > 0 seconds",
                spec.name
            )));
        }
        if crate::tools::native_specs()
            .iter()
            .any(|s| s.name == spec.name)
        {
            return Err(EngineError::InvalidArgument(format!(
                "tool {:?}: a native tool has this name",
                spec.name
            )));
        }
        let mut tools = self.tools.lock();
        let mut providers = vec![provider.clone()];
        if let Some(t) = tools.get(&spec.name) {
            let others = t
                .providers
                .iter()
                .filter(|p| p.id() != provider.id() && p.alive());
            let same = |a: &ToolSpec| {
                a.params == spec.params
                    && a.returns == spec.returns
                    && a.extra_args == spec.extra_args
            };
            for p in others {
                if !(spec.shared && t.spec.shared) {
                    return Err(EngineError::InvalidArgument(format!(
                        "tool {:?} is already registered in session {:?} by another process \
                         (a tool several processes serve is registered with shared=True by each)",
                        spec.name, self.id
                    )));
                }
                if !same(&t.spec) {
                    return Err(EngineError::InvalidArgument(format!(
                        "tool {:?}: the processes sharing it must register the same parameters \
                         and result",
                        spec.name
                    )));
                }
                providers.push(p.clone());
            }
        }
        let tool = ExternalTool {
            spec,
            providers,
            timeout,
            orphaned_since: None,
        };
        tools.insert(tool.spec.name.clone(), Arc::new(tool));
        Ok(())
    }

    /// Removes `provider` from the tool `name` (the tool goes when no provider is left).
    pub fn unregister_tool(&self, name: &str, provider: &ToolProvider) -> Result<()> {
        self.touch();
        let mut tools = self.tools.lock();
        let Some(t) = tools.get(name) else {
            return Err(EngineError::NotFoundIn {
                what: "tool",
                name: name.to_string(),
            });
        };
        if !t.providers.iter().any(|p| p.id() == provider.id()) {
            return Err(EngineError::NotFoundIn {
                what: "tool",
                name: name.to_string(),
            });
        }
        let mut rest = (**t).clone();
        rest.providers.retain(|p| p.id() != provider.id());
        if rest.providers.is_empty() {
            tools.remove(name);
        } else {
            tools.insert(name.to_string(), Arc::new(rest));
        }
        Ok(())
    }

    /// Removes the provider `id` from every tool (its process is gone).
    pub fn drop_provider(&self, id: u64) {
        self.retain_providers(|p| p.id() != id);
    }

    /// Removes the providers whose process is gone from every tool.
    pub fn drop_dead_providers(&self) {
        self.retain_providers(|p| p.alive());
    }

    /// Keeps the providers `keep` accepts. A tool left without any goes, except a shared one,
    /// which waits its timeout for a process to join (see [`ExternalTool::orphaned_since`]).
    fn retain_providers(&self, keep: impl Fn(&ToolProvider) -> bool) {
        let mut tools = self.tools.lock();
        tools.retain(|_, t| {
            if t.providers.iter().all(|p| keep(p)) {
                return !t.expired();
            }
            let mut rest = (**t).clone();
            rest.providers.retain(|p| keep(p));
            if rest.providers.is_empty() && rest.orphaned_since.is_none() {
                rest.orphaned_since = Some(std::time::Instant::now());
            }
            let left = !rest.providers.is_empty() || rest.spec.shared;
            *t = Arc::new(rest);
            left
        });
    }

    /// The registered tool `name`, if any.
    pub fn registered_tool(&self, name: &str) -> Option<Arc<ExternalTool>> {
        let mut tools = self.tools.lock();
        tools.retain(|_, t| !t.expired());
        tools.get(name).cloned()
    }

    /// The specs of every tool of the session, native first, then registered ones by name.
    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        let mut out = crate::tools::native_specs().to_vec();
        let mut tools = self.tools.lock();
        tools.retain(|_, t| !t.expired());
        let mut names: Vec<&String> = tools.keys().collect();
        names.sort();
        out.extend(names.into_iter().map(|n| tools[n].spec.clone()));
        out
    }

    /// A receiver of every later change to this session's variables.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<VarEvent> {
        self.touch();
        self.events
            .get_or_init(|| tokio::sync::broadcast::channel(WATCH_BUFFER).0)
            .subscribe()
    }

    fn publish(&self, event: VarEvent) {
        if let Some(tx) = self.events.get() {
            let _ = tx.send(event);
        }
    }
}

/// `*` matches any run of characters, `?` one character; everything else itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What `list` tells about a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// The session's id.
    pub id: String,
    /// Seconds since its last use.
    pub idle_seconds: f64,
    /// Its TTL in seconds.
    pub ttl_seconds: f64,
    /// How many variables it holds.
    pub n_variables: usize,
    /// The tools processes registered in it, sorted.
    pub tools: Vec<String>,
    /// Its indexes, sorted.
    pub indexes: Vec<String>,
}

/// Limits of a session registry.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most sessions open at once.
    pub max_sessions: usize,
    /// Largest value a variable may hold, in bytes.
    pub max_value_bytes: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_sessions: 10_000,
            max_value_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The sessions of one engine.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    limits: Mutex<SessionLimits>,
}

impl Sessions {
    /// A registry with `limits`.
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            limits: Mutex::new(limits),
        }
    }

    /// Changes the limits (sessions open already keep their value limit).
    pub fn set_limits(&self, limits: SessionLimits) {
        *self.limits.lock() = limits;
    }

    /// Joins session `id` (refreshing it), or creates it (a generated id when None) with `ttl`.
    pub fn open(&self, id: Option<&str>, ttl: Duration) -> Result<Arc<Session>> {
        if ttl.is_zero() {
            return Err(EngineError::InvalidArgument(
                "a session's ttl must be > 0 seconds".into(),
            ));
        }
        let mut map = self.map.lock();
        let id = match id {
            Some("") => {
                return Err(EngineError::InvalidArgument(
                    "a session id must not be empty".into(),
                ))
            }
            Some(id) => id.to_string(),
            None => loop {
                let candidate = format!("session-{}", &crate::cli::random_token()[..16]);
                if !map.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        if let Some(s) = map.get(&id) {
            s.touch();
            return Ok(s.clone());
        }
        let limits = *self.limits.lock();
        if map.len() >= limits.max_sessions {
            return Err(EngineError::ResourceExhausted(format!(
                "this engine holds {} sessions, its limit; close some or wait for idle ones to expire",
                map.len()
            )));
        }
        let s = Arc::new(Session {
            id: id.clone(),
            ttl,
            last_seen: Mutex::new(Instant::now()),
            variables: Mutex::new(BTreeMap::new()),
            indexes: Mutex::new(HashMap::new()),
            lms: Mutex::new(HashMap::new()),
            tools: Mutex::new(HashMap::new()),
            events: std::sync::OnceLock::new(),
            max_value_bytes: limits.max_value_bytes,
        });
        map.insert(id, s.clone());
        Ok(s)
    }

    /// Session `id`, refreshed.
    pub fn get(&self, id: &str) -> Result<Arc<Session>> {
        let s = self
            .map
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFoundIn {
                what: "session",
                name: id.to_string(),
            })?;
        s.touch();
        Ok(s)
    }

    /// Session `id` if it is open, without counting the look-up as traffic.
    pub fn peek(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().get(id).cloned()
    }

    /// Closes session `id` and releases everything it owns.
    pub fn close(&self, id: &str) -> Result<()> {
        self.map
            .lock()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| EngineError::NotFoundIn {
                what: "session",
                name: id.to_string(),
            })
    }

    /// Sweeps `registry` every second on `runtime` (until the registry is dropped).
    pub fn spawn_sweeper(registry: &Arc<Sessions>, runtime: &tokio::runtime::Handle) {
        let weak = Arc::downgrade(registry);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(r) => {
                        let n = r.sweep();
                        if n > 0 {
                            tracing::debug!(expired = n, "idle sessions swept");
                        }
                    }
                    None => break,
                }
            }
        });
    }

    /// Removes the sessions idle for longer than their TTL; returns how many.
    pub fn sweep(&self) -> usize {
        let mut map = self.map.lock();
        let before = map.len();
        map.retain(|_, s| s.idle() <= s.ttl);
        before - map.len()
    }

    /// The open sessions, sorted by id.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .map
            .lock()
            .values()
            .map(|s| SessionInfo {
                id: s.id.clone(),
                idle_seconds: s.idle().as_secs_f64(),
                ttl_seconds: s.ttl.as_secs_f64(),
                n_variables: s.variables.lock().len(),
                tools: {
                    let mut t: Vec<String> = s.tools.lock().keys().cloned().collect();
                    t.sort();
                    t
                },
                indexes: s.index_names(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(min: f64, max: f64) -> VarType {
        VarType::Float {
            min: Some(min),
            max: Some(max),
            log: false,
        }
    }

    #[test]
    fn variables_are_typed_constrained_and_versioned() {
        let reg = Sessions::new(SessionLimits::default());
        let s = reg.open(Some("a"), Duration::from_secs(60)).unwrap();
        assert_eq!(
            s.define("t", float(0.0, 2.0), Data::Int(1), true).unwrap(),
            1
        );
        assert_eq!(s.variable("t").unwrap().value, Data::Float(1.0));
        assert_eq!(s.set("t", Data::Float(1.5), Some(1)).unwrap(), 2);
        let stale = s.set("t", Data::Float(0.5), Some(1)).unwrap_err();
        assert!(stale.to_string().contains("version 2") && stale.to_string().contains("version 1"));
        let out = s.set("t", Data::Float(3.0), None).unwrap_err();
        assert!(out.to_string().contains("outside"), "{out}");
        let kind = s.set("t", Data::Str("x".into()), None).unwrap_err();
        assert!(
            kind.to_string()
                .contains("float variable cannot hold a str"),
            "{kind}"
        );
        assert_eq!(s.variable("t").unwrap().version, 2);
        assert!(s.variable("nope").is_err());
    }

    #[test]
    fn set_many_is_all_or_nothing() {
        let reg = Sessions::new(SessionLimits::default());
        let s = reg.open(None, Duration::from_secs(60)).unwrap();
        s.define("a", float(0.0, 1.0), Data::Float(0.1), false)
            .unwrap();
        s.define("b", VarType::Bool, Data::Bool(false), false)
            .unwrap();
        let err = s
            .set_many(vec![
                ("a".into(), Data::Float(0.2), None),
                ("b".into(), Data::Int(3), None),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("\"b\""), "{err}");
        assert_eq!(s.variable("a").unwrap().value, Data::Float(0.1));
        let v = s
            .set_many(vec![
                ("a".into(), Data::Float(0.2), Some(1)),
                ("b".into(), Data::Bool(true), Some(1)),
            ])
            .unwrap();
        assert_eq!(v, vec![2, 2]);
    }

    #[test]
    fn constraints_of_every_type() {
        let s = Sessions::default()
            .open(Some("c"), Duration::from_secs(1))
            .unwrap();
        let word = VarType::Str {
            max_length: Some(5),
            pattern: Some(regex::Regex::new("[a-z]+").unwrap()),
        };
        s.define("w", word, Data::Str("abc".into()), false).unwrap();
        assert!(s.set("w", Data::Str("abc1".into()), None).is_err());
        assert!(s.set("w", Data::Str("abcdef".into()), None).is_err());
        let pick = VarType::Choice {
            choices: vec![Data::Int(1), Data::Str("x".into())],
        };
        s.define("c", pick, Data::Int(1), true).unwrap();
        assert!(s.set("c", Data::Bool(true), None).is_err());
        assert!(s.set("c", Data::Str("x".into()), None).is_ok());
        let emb = VarType::Tensor {
            shape: vec![2, 3],
            dtype: DType::F32,
        };
        s.define("e", emb, Data::Bytes(vec![0; 24]), false).unwrap();
        assert!(s.set("e", Data::Bytes(vec![0; 20]), None).is_err());
        let bad_log = VarType::Int {
            min: Some(0),
            max: Some(9),
            log: true,
        };
        assert!(s.define("l", bad_log, Data::Int(1), false).is_err());
        let open = VarType::Float {
            min: None,
            max: None,
            log: false,
        };
        assert!(s.define("o", open.clone(), Data::Float(1.0), true).is_err());
        s.define("o", open, Data::Float(1e300), false).unwrap();
        assert_eq!(s.list(Some("?")), vec!["c", "e", "o", "w"]);
        assert_eq!(s.list(Some("*w*")), vec!["w"]);
    }

    #[test]
    fn tunable_variables_define_distributions() {
        let d = float(0.1, 1.0).distribution().unwrap();
        assert!(matches!(d, Distribution::Float(_)));
        let c = VarType::Choice {
            choices: vec![Data::Str("a".into()), Data::Str("b".into())],
        };
        assert!(matches!(
            c.distribution().unwrap(),
            Distribution::Categorical(_)
        ));
        assert!(VarType::Str {
            max_length: None,
            pattern: None
        }
        .distribution()
        .is_err());
    }

    #[test]
    fn sessions_are_joined_capped_swept_and_closed() {
        let reg = Sessions::new(SessionLimits {
            max_sessions: 2,
            ..Default::default()
        });
        let a = reg.open(Some("a"), Duration::from_millis(30)).unwrap();
        a.define("x", VarType::Bool, Data::Bool(true), false)
            .unwrap();
        let again = reg.open(Some("a"), Duration::from_secs(60)).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = reg.open(None, Duration::from_secs(60)).unwrap();
        assert!(b.variable("x").is_err(), "sessions do not share variables");
        let full = reg.open(Some("c"), Duration::from_secs(60)).unwrap_err();
        assert_eq!(full.code(), crate::ErrorCode::ResourceExhausted);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(reg.sweep(), 1);
        assert!(reg.get("a").is_err());
        reg.close(b.id()).unwrap();
        assert!(reg.is_empty());
        assert!(reg.close("zzz").is_err());
    }

    #[test]
    fn watchers_see_every_change() {
        let s = Sessions::default()
            .open(Some("w"), Duration::from_secs(60))
            .unwrap();
        let mut rx = s.watch();
        s.define("n", VarType::Bool, Data::Bool(false), false)
            .unwrap();
        s.set("n", Data::Bool(true), None).unwrap();
        s.delete("n").unwrap();
        let got: Vec<VarEvent> = (0..3).map(|_| rx.try_recv().unwrap()).collect();
        assert_eq!(got[1].value, Some(Data::Bool(true)));
        assert_eq!(got[1].version, 2);
        assert_eq!(got[2].value, None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("a*", "abc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*b*", "abc"));
        assert!(!glob_match("b*", "abc"));
    }
}
