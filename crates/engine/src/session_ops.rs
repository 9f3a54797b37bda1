//! The operations a process performs on a session, as one vocabulary ([`SessionOp`] in,
//! [`SessionOut`] back) that both transports use: the Python extension applies them to this
//! process's engine, the gRPC service to the session a stream joined ([`apply`] in both).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dspex_optimizer::Distribution;

use crate::error::{EngineError, Result};
use crate::session::{DType, Data, Regex, Session, VarType};
use crate::tools::{self, Call, ToolProvider, ToolSpec};

/// One operation on a session.
#[derive(Debug, Clone)]
pub enum SessionOp {
    /// Declares a variable (`define`); out: its version.
    Define {
        /// The variable's name.
        name: String,
        /// Its type and constraints.
        ty: VarType,
        /// Its first value.
        value: Data,
        /// Its constraints define a search-space distribution.
        tunable: bool,
    },
    /// A variable's value and version.
    Get(String),
    /// Sets variables, all or none: (name, value, expected version); out: the new versions.
    Set(Vec<(String, Data, Option<u64>)>),
    /// Removes a variable.
    Delete(String),
    /// The variable names matching a glob (all when None).
    List(Option<String>),
    /// A variable's type name, tunable flag and distribution.
    Spec(String),
    /// Builds a BM25 index; out: how many documents it holds.
    Index {
        /// The index's name.
        name: String,
        /// The documents.
        texts: Vec<String>,
        /// How results name them (their positions when None).
        ids: Option<Vec<Data>>,
        /// Drop English stop words.
        stop_words: bool,
        /// Reduce words to their stem.
        stem: bool,
    },
    /// The specs of the session's tools.
    ToolSpecs,
    /// Calls a tool with named arguments.
    Call {
        /// The tool.
        tool: String,
        /// Its arguments.
        args: BTreeMap<String, Data>,
    },
    /// Registers a tool the caller's provider runs.
    Register {
        /// What it takes.
        spec: ToolSpec,
        /// How long a call may take.
        timeout: Duration,
    },
    /// Removes a tool the caller's provider registered.
    Unregister(String),
    /// Adds an LM the session's `lm` tool and programs call, from the JSON settings of
    /// `dspex.native.LM` (see `LmConfig::from_json`).
    AddLm {
        /// How the session names it.
        name: String,
        /// Its settings (the API key included).
        config: String,
    },
    /// Runs a program once, or a program study (see [`ProgramAction`]); out: its result.
    Program {
        /// What to do.
        action: ProgramAction,
        /// The JSON of the program and its settings.
        spec: String,
    },
}

/// What a [`SessionOp::Program`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramAction {
    /// Runs `program` with `params` on `inputs`; out: `{prediction, trace}`.
    Run,
    /// Runs `program` with `params` on each of `inputs` (a list), `concurrency` at a time; out:
    /// a list of `{prediction, trace}` or `{error}`, in order.
    RunMany,
    /// Runs a program study ([`crate::program_study::ProgramStudySpec`]); out: its summary.
    Optimize,
}

impl ProgramAction {
    /// The action's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ProgramAction::Run => "run",
            ProgramAction::RunMany => "run_many",
            ProgramAction::Optimize => "optimize",
        }
    }

    /// The action named `s`.
    pub fn parse(s: &str) -> Result<ProgramAction> {
        match s {
            "run" => Ok(ProgramAction::Run),
            "run_many" => Ok(ProgramAction::RunMany),
            "optimize" => Ok(ProgramAction::Optimize),
            _ => Err(EngineError::InvalidArgument(format!(
                "unknown program action {s:?} (run, run_many, optimize)"
            ))),
        }
    }
}

/// What an operation gives back.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOut {
    /// A version (define).
    Version(u64),
    /// A value and its version (get).
    Variable(Data, u64),
    /// New versions (set).
    Versions(Vec<u64>),
    /// Names (list).
    Names(Vec<String>),
    /// Type name, tunable, distribution of a tunable variable (spec).
    Spec(String, bool, Option<Distribution>),
    /// A count (index).
    Count(u64),
    /// Tool specs.
    Tools(Vec<ToolSpec>),
    /// A tool's result.
    Value(Data),
    /// Nothing to say (delete, register, unregister).
    Done,
}

/// What [`apply`] gives: the answer, or (a call of a registered tool, `map`) the answer to come.
pub enum Applied {
    /// The answer.
    Done(SessionOut),
    /// A tool call under way: its result, once it is there.
    Pending(Pin<Box<dyn Future<Output = Result<Data>> + Send>>),
}

impl Applied {
    /// The answer, once it is there.
    pub async fn wait(self) -> Result<SessionOut> {
        match self {
            Applied::Done(out) => Ok(out),
            Applied::Pending(f) => f.await.map(SessionOut::Value),
        }
    }
}

/// Runs `op` on `session`; `provider` runs the tools the caller registers (None: it cannot
/// register any). Everything answers at once but calls of registered tools and `map`, which
/// come back pending (run them on the engine's runtime).
pub fn apply(
    session: &Arc<Session>,
    provider: Option<&Arc<ToolProvider>>,
    op: SessionOp,
) -> Result<Applied> {
    Ok(Applied::Done(match op {
        SessionOp::Define {
            name,
            ty,
            value,
            tunable,
        } => SessionOut::Version(session.define(&name, ty, value, tunable)?),
        SessionOp::Get(name) => {
            let v = session.variable(&name)?;
            SessionOut::Variable(v.value, v.version)
        }
        SessionOp::Set(changes) => SessionOut::Versions(session.set_many(changes)?),
        SessionOp::Delete(name) => {
            session.delete(&name)?;
            SessionOut::Done
        }
        SessionOp::List(pattern) => SessionOut::Names(session.list(pattern.as_deref())),
        SessionOp::Spec(name) => {
            let v = session.variable(&name)?;
            let dist = if v.tunable {
                Some(v.ty.distribution()?)
            } else {
                None
            };
            SessionOut::Spec(v.ty.name().to_string(), v.tunable, dist)
        }
        SessionOp::Index {
            name,
            texts,
            ids,
            stop_words,
            stem,
        } => SessionOut::Count(session.index(
            &name,
            texts,
            ids,
            tools::tokenizer(stop_words, stem),
        )? as u64),
        SessionOp::ToolSpecs => SessionOut::Tools(session.tool_specs()),
        SessionOp::Call { tool, args } => match tools::call(session, &tool, args) {
            Call::Ready(r) => SessionOut::Value(r?),
            Call::Pending(f) => return Ok(Applied::Pending(f)),
        },
        SessionOp::Register { spec, timeout } => {
            let provider = provider.ok_or_else(|| {
                EngineError::InvalidOperation("this connection cannot serve tools".into())
            })?;
            session.register_tool(spec, provider, timeout)?;
            SessionOut::Done
        }
        SessionOp::Unregister(name) => {
            let provider = provider.ok_or_else(|| EngineError::NotFoundIn {
                what: "tool",
                name: name.clone(),
            })?;
            session.unregister_tool(&name, provider)?;
            SessionOut::Done
        }
        SessionOp::AddLm { name, config } => {
            let config = serde_json::from_str(&config)
                .map_err(|e| {
                    EngineError::InvalidArgument(format!(
                        "LM {name:?}: the settings are not JSON: {e}"
                    ))
                })
                .and_then(|v| {
                    dspex_native::lm::LmConfig::from_json(&v).map_err(|e| tools::lm_error("lm", e))
                })?;
            let session = session.clone();
            return Ok(Applied::Pending(Box::pin(async move {
                let lm = dspex_native::lm::Lm::new(config)
                    .await
                    .map_err(|e| tools::lm_error("lm", e))?;
                session.add_lm(&name, lm)?;
                Ok(Data::Null)
            })));
        }
        SessionOp::Program { action, spec } => {
            let spec: serde_json::Value = serde_json::from_str(&spec).map_err(|e| {
                EngineError::InvalidArgument(format!("the program settings are not JSON: {e}"))
            })?;
            let session = session.clone();
            return Ok(Applied::Pending(match action {
                ProgramAction::Optimize => {
                    let spec = crate::program_study::ProgramStudySpec::from_json(&spec)?;
                    Box::pin(crate::program_study::optimize(session, spec))
                }
                ProgramAction::RunMany => {
                    let runs = crate::program::run_many_spec(&spec)?;
                    Box::pin(crate::program::run_many(session, runs))
                }
                ProgramAction::Run => {
                    let (program, params, inputs) = crate::program::run_spec(&spec)?;
                    Box::pin(async move {
                        let ran = program.run(&session, &params, inputs).await?;
                        Ok(crate::program::ran_data(ran))
                    })
                }
            }));
        }
    }))
}

impl VarType {
    /// The constraints of this type as `define` takes them (see [`VarType::from_constraints`]).
    pub fn constraints(&self) -> BTreeMap<String, Data> {
        let mut c = BTreeMap::new();
        let mut put = |k: &str, v: Option<Data>| {
            if let Some(v) = v {
                c.insert(k.to_string(), v);
            }
        };
        match self {
            VarType::Float { min, max, log } => {
                put("min", min.map(Data::Float));
                put("max", max.map(Data::Float));
                put("log", Some(Data::Bool(*log)));
            }
            VarType::Int { min, max, log } => {
                put("min", min.map(Data::Int));
                put("max", max.map(Data::Int));
                put("log", Some(Data::Bool(*log)));
            }
            VarType::Str {
                max_length,
                pattern,
            } => {
                put("max_length", max_length.map(|n| Data::Int(n as i64)));
                put(
                    "pattern",
                    pattern.as_ref().map(|p| Data::Str(p.as_str().to_string())),
                );
            }
            VarType::Bool => {}
            VarType::Choice { choices } => put("choices", Some(Data::List(choices.clone()))),
            VarType::Tensor { shape, dtype } => {
                put(
                    "shape",
                    Some(Data::List(
                        shape.iter().map(|d| Data::Int(*d as i64)).collect(),
                    )),
                );
                put("dtype", Some(Data::Str(dtype.as_str().to_string())));
            }
        }
        c
    }

    /// The type named `kind` ("float", "int", "str", "bool", "choice", "embedding", "tensor")
    /// with the constraints of `define`: float/int `min`, `max`, `log`; str `max_length`,
    /// `pattern`; choice `choices`; embedding/tensor `shape`, `dtype`. A None constraint is
    /// absent.
    pub fn from_constraints(kind: &str, c: &BTreeMap<String, Data>) -> Result<VarType> {
        let bad = |m: String| EngineError::InvalidArgument(m);
        let allowed: &[&str] = match kind {
            "float" | "int" => &["min", "max", "log"],
            "str" => &["max_length", "pattern"],
            "bool" => &[],
            "choice" => &["choices"],
            "tensor" | "embedding" => &["shape", "dtype"],
            other => {
                return Err(bad(format!(
                "unknown variable type {other:?} (float, int, str, bool, choice, embedding or tensor)"
            )))
            }
        };
        if let Some(k) = c.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(format!(
                "a {kind} variable takes no constraint {k:?} (it takes {allowed:?})"
            )));
        }
        let get = |k: &str| c.get(k).filter(|v| **v != Data::Null);
        let wrong = |k: &str, want: &str, v: &Data| {
            bad(format!(
                "{k}={v}: wrong type (a {want} is needed, got a {})",
                v.kind()
            ))
        };
        let float = |k: &str| match get(k) {
            None => Ok(None),
            Some(Data::Float(x)) => Ok(Some(*x)),
            Some(Data::Int(i)) => Ok(Some(*i as f64)),
            Some(v) => Err(wrong(k, "float", v)),
        };
        let int = |k: &str| match get(k) {
            None => Ok(None),
            Some(Data::Int(i)) => Ok(Some(*i)),
            Some(v) => Err(wrong(k, "int", v)),
        };
        let text = |k: &str| match get(k) {
            None => Ok(None),
            Some(Data::Str(s)) => Ok(Some(s.clone())),
            Some(v) => Err(wrong(k, "str", v)),
        };
        let log = match get("log") {
            None => false,
            Some(Data::Bool(b)) => *b,
            Some(v) => return Err(wrong("log", "bool", v)),
        };
        let size = |k: &str, i: i64| {
            usize::try_from(i).map_err(|_| bad(format!("{k} must be >= 0, got {i}")))
        };
        Ok(match kind {
            "float" => VarType::Float {
                min: float("min")?,
                max: float("max")?,
                log,
            },
            "int" => VarType::Int {
                min: int("min")?,
                max: int("max")?,
                log,
            },
            "str" => VarType::Str {
                max_length: int("max_length")?
                    .map(|n| size("max_length", n))
                    .transpose()?,
                pattern: text("pattern")?
                    .map(|p| {
                        Regex::new(&p).map_err(|e| {
                            bad(format!("pattern {p:?} is not a regular expression: {e}"))
                        })
                    })
                    .transpose()?,
            },
            "bool" => VarType::Bool,
            "choice" => match get("choices") {
                Some(Data::List(choices)) => VarType::Choice {
                    choices: choices.clone(),
                },
                Some(v) => return Err(wrong("choices", "list", v)),
                None => return Err(bad("a choice variable needs choices=[...]".into())),
            },
            _ => {
                let shape = match get("shape") {
                    Some(Data::List(dims)) => dims
                        .iter()
                        .map(|d| match d {
                            Data::Int(i) => size("shape", *i),
                            v => Err(wrong("shape", "list of int", v)),
                        })
                        .collect::<Result<Vec<_>>>()?,
                    Some(v) => return Err(wrong("shape", "list of int", v)),
                    None => return Err(bad(format!("a {kind} variable needs shape=(...)"))),
                };
                VarType::Tensor {
                    shape,
                    dtype: DType::parse(text("dtype")?.as_deref().unwrap_or("float32"))?,
                }
            }
        })
    }
}
