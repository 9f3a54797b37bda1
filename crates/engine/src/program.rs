//! Engine-resident programs: pipelines of native modules (BM25 retrieval, LM predictions,
//! Python tools, rank fusion) whose arguments may be distributions — the program's search
//! space.
//!
//! A program is JSON (what `dspex.native.Program` sends):
//!
//! ```json
//! {"steps": [
//!   {"name": "retrieve", "module": "retrieve",
//!    "args": {"index": "docs", "k": {"distribution": "<Optuna distribution JSON>"}}},
//!   {"name": "predict", "module": "predict",
//!    "args": {"signature": "context, question -> answer", "lm": "main"}}
//! ]}
//! ```
//!
//! Each step reads named fields of the running state (the example's inputs, then what earlier
//! steps wrote) and writes new ones. Modules and their arguments (defaults after `=`):
//! - `retrieve`: `index`, `k=5`, `k1=1.2`, `b=0.75`, `stem=false`, `query="question"` →
//!   `output="context"`, the top `k` texts of the session's BM25 index `index` (with `stem`, of
//!   the index `index#stem`);
//! - `predict` / `chain_of_thought`: `signature`, `lm` (an LM of the session), `instructions`,
//!   `demos` (a list of example dicts, or a list of such lists picked by `demo_set`),
//!   `temperature`, `max_tokens` → the signature's outputs (`reasoning` first for chain of
//!   thought);
//! - `python_tool`: `tool` (a tool of the session), `inputs` (the fields passed; default every
//!   field so far) → `output` (when null, a dict result is merged into the state); any other
//!   argument is passed to the tool as a keyword;
//! - `fuse`: `a`, `b` (two list fields), `weight=0.5`, `k=10` → `output="context"`, their
//!   reciprocal-rank fusion.
//!
//! A tunable argument is named `step.arg` in the trial's params.

use std::collections::BTreeMap;
use std::sync::Arc;

use dspex_native::lm::{Budget, BudgetLimits};
use dspex_native::predict::{self, Signature};
use dspex_optimizer::{Distribution, ParamValue};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};
use crate::session::{Data, Session};
use crate::tools;

/// One step of a program.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name (unique in the program).
    pub name: String,
    /// What it runs.
    pub module: ModuleKind,
    /// Its fixed arguments.
    pub args: Map<String, Value>,
    /// Its tunable arguments, in order.
    pub space: Vec<(String, Distribution)>,
}

/// The modules a step can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// BM25 search of a session index.
    Retrieve,
    /// One LM call shaped by a signature.
    Predict,
    /// Predict with a `reasoning` output first.
    ChainOfThought,
    /// A call of a session tool (a Python function).
    PythonTool,
    /// Reciprocal-rank fusion of two lists.
    Fuse,
}

impl ModuleKind {
    fn parse(s: &str) -> Option<ModuleKind> {
        Some(match s {
            "retrieve" => ModuleKind::Retrieve,
            "predict" => ModuleKind::Predict,
            "chain_of_thought" => ModuleKind::ChainOfThought,
            "python_tool" => ModuleKind::PythonTool,
            "fuse" => ModuleKind::Fuse,
            _ => return None,
        })
    }

    fn known_args(self) -> &'static [&'static str] {
        match self {
            ModuleKind::Retrieve => &["index", "k", "k1", "b", "stem", "query", "output"],
            ModuleKind::Predict | ModuleKind::ChainOfThought => &[
                "signature",
                "lm",
                "instructions",
                "demos",
                "demo_set",
                "temperature",
                "max_tokens",
            ],
            ModuleKind::PythonTool => &[],
            ModuleKind::Fuse => &["a", "b", "weight", "k", "output"],
        }
    }
}

/// A program's steps set up for one configuration (see [`Program::configure`]).
#[derive(Debug)]
pub struct Configured(Vec<ConfiguredStep>);

#[derive(Debug)]
struct ConfiguredStep {
    args: Map<String, Value>,
    /// Predict and ChainOfThought: the signature, the instructions and the demos.
    predict: Option<PredictSetup>,
}

/// What a Predict step's arguments set up: the signature, the instructions and the demos.
#[derive(Debug)]
struct PredictSetup {
    sig: Signature,
    instructions: String,
    demos: Vec<Map<String, Value>>,
}

/// A program: its steps, in order.
#[derive(Debug, Clone)]
pub struct Program {
    /// The steps.
    pub steps: Vec<Step>,
    /// A budget every LM call of the program's runs is charged to as well as to its LM's own
    /// (a study's `max_calls`, `max_total_tokens`, `max_cost`).
    pub budget: Option<Arc<Budget>>,
}

/// What one step did, for the metric's `trace`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    /// The step's name.
    pub step: String,
    /// The fields it read.
    pub inputs: Map<String, Value>,
    /// The fields it wrote.
    pub outputs: Map<String, Value>,
}

/// A run of a program on one example.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// Every field the steps wrote (the prediction).
    pub prediction: Map<String, Value>,
    /// What each step read and wrote.
    pub trace: Vec<TraceEntry>,
    /// LM tokens the run's predictions used (prompt and completion; cache hits count too).
    pub tokens: u64,
    /// The estimated price of its LM calls' tokens (cache hits priced as the calls they
    /// repeat; unpriced models add nothing).
    pub cost: f64,
}

/// What one step read and wrote, and the LM tokens and cost it used.
type StepOutput = (Map<String, Value>, Map<String, Value>, u64, f64);

fn bad(step: &str, m: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("step {step:?}: {m}"))
}

impl Program {
    /// Reads a program from its JSON form, checking every fixed argument.
    pub fn from_json(v: &Value) -> Result<Program> {
        let steps = v.get("steps").and_then(Value::as_array).ok_or_else(|| {
            EngineError::InvalidArgument("a program needs \"steps\": a list".into())
        })?;
        if steps.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a program needs at least one step".into(),
            ));
        }
        let mut out: Vec<Step> = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty() && !n.contains('.'))
                .ok_or_else(|| {
                    EngineError::InvalidArgument(format!(
                        "step {i}: a name (a non-empty str without '.') is needed"
                    ))
                })?;
            if out.iter().any(|o| o.name == name) {
                return Err(bad(name, "two steps have this name"));
            }
            let module = s.get("module").and_then(Value::as_str).unwrap_or_default();
            let module = ModuleKind::parse(module).ok_or_else(|| {
                bad(name, format!("unknown module {module:?} (retrieve, predict, chain_of_thought, python_tool, fuse)"))
            })?;
            let mut args = Map::new();
            let mut space = Vec::new();
            let given = match s.get("args") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(_) => return Err(bad(name, "args must be a dict")),
            };
            for (k, v) in given {
                let known = module.known_args();
                if !known.is_empty() && !known.contains(&k.as_str()) {
                    return Err(bad(
                        name,
                        format!(
                            "unknown argument {k:?} of {module:?} (known: {})",
                            known.join(", ")
                        ),
                    ));
                }
                match v.get("distribution").and_then(Value::as_str) {
                    Some(d) if v.as_object().is_some_and(|o| o.len() == 1) => {
                        let d = Distribution::from_json(d)
                            .map_err(|e| bad(name, format!("argument {k:?}: {e}")))?;
                        space.push((k, d));
                    }
                    _ => {
                        args.insert(k, v);
                    }
                }
            }
            let step = Step {
                name: name.to_string(),
                module,
                args,
                space,
            };
            step.check_fixed()?;
            out.push(step);
        }
        Ok(Program {
            steps: out,
            budget: None,
        })
    }

    /// Every tunable argument as `(step.arg, distribution)`, in step order.
    pub fn space(&self) -> Vec<(String, Distribution)> {
        self.steps
            .iter()
            .flat_map(|s| {
                s.space
                    .iter()
                    .map(move |(a, d)| (format!("{}.{a}", s.name), d.clone()))
            })
            .collect()
    }

    /// Runs the program on `inputs` with `params` (a value for every `step.arg` of the space).
    pub async fn run(
        &self,
        session: &Arc<Session>,
        params: &BTreeMap<String, ParamValue>,
        inputs: Map<String, Value>,
    ) -> Result<Ran> {
        let configured = self.configure(params)?;
        self.run_configured(session, &configured, inputs).await
    }

    /// The steps' arguments for `params`, checked, with what Predict steps derive from them
    /// (signature, instructions, demos): done once for the many runs of a configuration.
    pub fn configure(&self, params: &BTreeMap<String, ParamValue>) -> Result<Configured> {
        self.steps
            .iter()
            .map(|step| {
                let args = step.resolve(params)?;
                let predict = step.prediction(&args)?;
                Ok(ConfiguredStep { args, predict })
            })
            .collect::<Result<_>>()
            .map(Configured)
    }

    /// Runs the program on `inputs` as [`configure`](Self::configure) set it up.
    pub async fn run_configured(
        &self,
        session: &Arc<Session>,
        configured: &Configured,
        inputs: Map<String, Value>,
    ) -> Result<Ran> {
        let mut state = inputs;
        let mut prediction = Map::new();
        let mut trace = Vec::with_capacity(self.steps.len());
        let (mut tokens, mut cost) = (0, 0.0);
        for (step, c) in self.steps.iter().zip(&configured.0) {
            let (read, wrote, used, spent) =
                step.run(session, c, &state, self.budget.as_ref()).await?;
            tokens += used;
            cost += spent;
            for (k, v) in &wrote {
                state.insert(k.clone(), v.clone());
                prediction.insert(k.clone(), v.clone());
            }
            trace.push(TraceEntry {
                step: step.name.clone(),
                inputs: read,
                outputs: wrote,
            });
        }
        Ok(Ran {
            prediction,
            trace,
            tokens,
            cost,
        })
    }
}

/// A trial's configuration: `step.arg` → value.
pub type Params = BTreeMap<String, ParamValue>;

/// The program, params and inputs of a single run: `{program, params, inputs}`.
pub fn run_spec(v: &Value) -> Result<(Program, Params, Map<String, Value>)> {
    let program = Program::from_json(v.get("program").unwrap_or(&Value::Null))?;
    let mut params = BTreeMap::new();
    if let Some(p) = v.get("params").and_then(Value::as_object) {
        for (k, x) in p {
            let pv = ParamValue::from_json(x)
                .map_err(|e| EngineError::InvalidArgument(format!("param {k:?}: {e}")))?;
            params.insert(k.clone(), pv);
        }
    }
    let inputs = match v.get("inputs") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(x) => {
            return Err(EngineError::InvalidArgument(format!(
                "inputs must be a dict, not {x}"
            )))
        }
    };
    Ok((program, params, inputs))
}

/// The budget of `spec`: its `budget` limits (`{max_calls, max_total_tokens, max_cost}`), of
/// which `budget_spent` (`{calls, tokens, cost}`) is used already; None without limits.
pub fn budget_of(spec: &Value) -> Result<Option<Arc<Budget>>> {
    let limits = match spec.get("budget") {
        None | Some(Value::Null) => return Ok(None),
        Some(b @ Value::Object(_)) => {
            BudgetLimits::from_json(b, "the study's").map_err(EngineError::InvalidArgument)?
        }
        Some(x) => {
            return Err(EngineError::InvalidArgument(format!(
                "budget must be a dict of max_calls, max_total_tokens, max_cost, not {x}"
            )))
        }
    };
    if limits == BudgetLimits::default() {
        return Ok(None);
    }
    let spent = spec.get("budget_spent").unwrap_or(&Value::Null);
    let bad = || {
        EngineError::InvalidArgument(format!(
            "budget_spent must be a dict of calls, tokens (ints >= 0) and cost (a number >= 0), not {spent}"
        ))
    };
    let (calls, tokens, cost) = match spent {
        Value::Null => (0, 0, 0.0),
        Value::Object(m) => {
            let count = |k: &str| m.get(k).map_or(Some(0), Value::as_u64);
            let cost = m
                .get("cost")
                .map_or(Some(0.0), Value::as_f64)
                .filter(|c| c.is_finite() && *c >= 0.0);
            (
                count("calls").ok_or_else(bad)?,
                count("tokens").ok_or_else(bad)?,
                cost.ok_or_else(bad)?,
            )
        }
        _ => return Err(bad()),
    };
    Ok(Some(Arc::new(Budget::with_spent(
        limits, calls, tokens, cost,
    ))))
}

/// What `budget` spent, as data (`{calls, tokens, cost}`).
pub fn spent_data(budget: &Budget) -> Data {
    let (calls, tokens, cost) = budget.spent();
    Data::Map(BTreeMap::from([
        ("calls".to_string(), Data::Int(calls as i64)),
        ("tokens".to_string(), Data::Int(tokens as i64)),
        ("cost".to_string(), Data::Float(cost)),
    ]))
}

/// A batch of runs of one program and configuration.
#[derive(Debug, Clone)]
pub struct ManyRuns {
    /// The program.
    pub program: Program,
    /// Its configuration.
    pub params: Params,
    /// The inputs of each run.
    pub inputs: Vec<Map<String, Value>>,
    /// Runs at once.
    pub concurrency: usize,
}

/// A batch of runs from `{program, params, inputs: [...], concurrency}`.
pub fn run_many_spec(v: &Value) -> Result<ManyRuns> {
    let mut one = v.clone();
    if let Some(o) = one.as_object_mut() {
        o.remove("inputs");
    }
    let (mut program, params, _) = run_spec(&one)?;
    program.budget = budget_of(v)?;
    let inputs = v
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| EngineError::InvalidArgument("inputs must be a list of dicts".into()))?
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_object()
                .cloned()
                .ok_or_else(|| EngineError::InvalidArgument(format!("inputs[{i}] is not a dict")))
        })
        .collect::<Result<_>>()?;
    let concurrency = v
        .get("concurrency")
        .and_then(Value::as_u64)
        .unwrap_or(64)
        .max(1) as usize;
    Ok(ManyRuns {
        program,
        params,
        inputs,
        concurrency,
    })
}

/// Runs `program` on every item of `inputs`, `concurrency` at a time; a list of runs (or
/// `{error}`) in order.
pub async fn run_many(session: Arc<Session>, runs: ManyRuns) -> Result<Data> {
    let ManyRuns {
        program,
        params,
        inputs,
        concurrency,
    } = runs;
    let budget = program.budget.clone();
    let configured = Arc::new(program.configure(&params)?);
    let program = Arc::new(program);
    let mut out: Vec<Data> = vec![Data::Null; inputs.len()];
    let mut in_flight = tokio::task::JoinSet::new();
    let mut items = inputs.into_iter().enumerate();
    loop {
        while in_flight.len() < concurrency {
            let Some((i, x)) = items.next() else { break };
            let (session, program, c) = (session.clone(), program.clone(), configured.clone());
            in_flight.spawn(async move { (i, program.run_configured(&session, &c, x).await) });
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        let (i, r) =
            joined.map_err(|e| EngineError::Internal(format!("a program run failed: {e}")))?;
        out[i] = match r {
            Ok(ran) => ran_data(ran),
            Err(e) => {
                let mut m = BTreeMap::new();
                m.insert("error".to_string(), Data::Str(e.to_string()));
                Data::Map(m)
            }
        };
    }
    Ok(match budget {
        // with a budget: what the runs spent, for the study that goes on charging it
        Some(b) => Data::Map(BTreeMap::from([
            ("runs".to_string(), Data::List(out)),
            ("budget_spent".to_string(), spent_data(&b)),
        ])),
        None => Data::List(out),
    })
}

/// A run as data: `{prediction, trace: [{step, inputs, outputs}, ...]}`.
pub fn ran_data(ran: Ran) -> Data {
    let trace: Vec<Value> = ran
        .trace
        .into_iter()
        .map(|t| serde_json::json!({"step": t.step, "inputs": t.inputs, "outputs": t.outputs}))
        .collect();
    Data::from_json(&serde_json::json!({"prediction": ran.prediction, "trace": trace}))
}

fn param_json(p: &ParamValue) -> Value {
    p.to_json()
}

fn get_str<'a>(
    step: &str,
    args: &'a Map<String, Value>,
    k: &str,
    default: Option<&'a str>,
) -> Result<&'a str> {
    match args.get(k) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => {
            default.ok_or_else(|| bad(step, format!("argument {k:?} is needed")))
        }
        Some(v) => Err(bad(step, format!("argument {k:?} must be a str, not {v}"))),
    }
}

fn get_f64(step: &str, args: &Map<String, Value>, k: &str, default: f64) -> Result<f64> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
            bad(
                step,
                format!("argument {k:?} must be a finite number, not {v}"),
            )
        }),
    }
}

fn get_count(step: &str, args: &Map<String, Value>, k: &str, default: usize) -> Result<usize> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 1.0)
                    .map(|x| x as u64)
            })
            .filter(|n| *n >= 1)
            .map(|n| n as usize)
            .ok_or_else(|| bad(step, format!("argument {k:?} must be an int >= 1, not {v}"))),
    }
}

fn field<'a>(step: &str, state: &'a Map<String, Value>, name: &str) -> Result<&'a Value> {
    state.get(name).ok_or_else(|| {
        let mut have: Vec<&str> = state.keys().map(String::as_str).collect();
        have.sort();
        bad(step, format!("reads the field {name:?}, which neither the example nor an earlier step has (have: {})", have.join(", ")))
    })
}

impl Step {
    /// Checks the fixed arguments (tunable ones are checked when a trial resolves them).
    fn check_fixed(&self) -> Result<()> {
        let mut probe = self.args.clone();
        for (k, d) in &self.space {
            probe.insert(k.clone(), param_json(&d.to_external(probe_internal(d))));
        }
        self.check(&probe)
    }

    fn check(&self, args: &Map<String, Value>) -> Result<()> {
        let n = self.name.as_str();
        match self.module {
            ModuleKind::Retrieve => {
                get_str(n, args, "index", None)?;
                get_count(n, args, "k", 5)?;
                get_f64(n, args, "k1", 1.2)?;
                get_f64(n, args, "b", 0.75)?;
                get_str(n, args, "query", Some("question"))?;
                get_str(n, args, "output", Some("context"))?;
                if !matches!(
                    args.get("stem"),
                    None | Some(Value::Null) | Some(Value::Bool(_))
                ) {
                    return Err(bad(n, "stem must be a bool"));
                }
            }
            ModuleKind::Predict | ModuleKind::ChainOfThought => {
                Signature::parse(get_str(n, args, "signature", None)?).map_err(|e| bad(n, e))?;
                get_str(n, args, "lm", None)?;
                get_str(n, args, "instructions", Some(""))?;
                self.demos(args)?;
                if let Some(t) = args.get("temperature").filter(|v| !v.is_null()) {
                    if !t.as_f64().is_some_and(|x| (0.0..=2.0).contains(&x)) {
                        return Err(bad(
                            n,
                            format!("temperature must be within [0, 2], not {t}"),
                        ));
                    }
                }
                get_count(n, args, "max_tokens", 1)?;
            }
            ModuleKind::PythonTool => {
                get_str(n, args, "tool", None)?;
                match args.get("inputs") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
                    Some(v) => {
                        return Err(bad(
                            n,
                            format!("inputs must be a list of field names, not {v}"),
                        ))
                    }
                }
                if !matches!(
                    args.get("output"),
                    None | Some(Value::Null) | Some(Value::String(_))
                ) {
                    return Err(bad(n, "output must be a field name or None"));
                }
            }
            ModuleKind::Fuse => {
                get_str(n, args, "a", None)?;
                get_str(n, args, "b", None)?;
                let w = get_f64(n, args, "weight", 0.5)?;
                if !(0.0..=1.0).contains(&w) {
                    return Err(bad(n, format!("weight must be within [0, 1], not {w}")));
                }
                get_count(n, args, "k", 10)?;
                get_str(n, args, "output", Some("context"))?;
            }
        }
        Ok(())
    }

    /// The demos a prediction uses: `demos` (a list of dicts), or with `demo_set`, the
    /// `demo_set`-th list of `demos`.
    fn demos(&self, args: &Map<String, Value>) -> Result<Vec<Map<String, Value>>> {
        let n = self.name.as_str();
        let list = match args.get("demos") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            Some(v) => return Err(bad(n, format!("demos must be a list, not {v}"))),
        };
        let chosen = match args.get("demo_set") {
            None | Some(Value::Null) => list,
            Some(i) => {
                let set = i
                    .as_u64()
                    .and_then(|i| list.get(i as usize))
                    .ok_or_else(|| {
                        bad(
                            n,
                            format!(
                                "demo_set {i} is not an index of the {} demo sets",
                                list.len()
                            ),
                        )
                    })?;
                set.as_array()
                    .ok_or_else(|| bad(n, "with demo_set, demos must be a list of lists"))?
            }
        };
        chosen
            .iter()
            .map(|d| {
                d.as_object()
                    .cloned()
                    .ok_or_else(|| bad(n, format!("a demo must be a dict, not {d}")))
            })
            .collect()
    }

    /// A Predict step's signature, instructions and demos under `args` (None for other steps).
    fn prediction(&self, args: &Map<String, Value>) -> Result<Option<PredictSetup>> {
        if !matches!(
            self.module,
            ModuleKind::Predict | ModuleKind::ChainOfThought
        ) {
            return Ok(None);
        }
        let n = self.name.as_str();
        let mut sig =
            Signature::parse(get_str(n, args, "signature", None)?).map_err(|e| bad(n, e))?;
        if self.module == ModuleKind::ChainOfThought {
            sig = sig.with_reasoning();
        }
        let instructions = match get_str(n, args, "instructions", Some(""))? {
            "" => sig.default_instructions(),
            s => s.to_string(),
        };
        let demos = self.demos(args)?;
        Ok(Some(PredictSetup {
            sig,
            instructions,
            demos,
        }))
    }

    /// The step's arguments with the trial's values of its tunable ones.
    fn resolve(&self, params: &BTreeMap<String, ParamValue>) -> Result<Map<String, Value>> {
        let mut args = self.args.clone();
        for (k, _) in &self.space {
            let key = format!("{}.{k}", self.name);
            let v = params.get(&key).ok_or_else(|| {
                EngineError::InvalidArgument(format!("no value for the tunable argument {key:?}"))
            })?;
            args.insert(k.clone(), param_json(v));
        }
        if !self.space.is_empty() {
            self.check(&args)?;
        }
        Ok(args)
    }

    async fn run(
        &self,
        session: &Arc<Session>,
        configured: &ConfiguredStep,
        state: &Map<String, Value>,
        budget: Option<&Arc<Budget>>,
    ) -> Result<StepOutput> {
        let n = self.name.as_str();
        let args = &configured.args;
        let mut read = Map::new();
        let mut wrote = Map::new();
        let (mut tokens, mut cost) = (0u64, 0.0);
        match self.module {
            ModuleKind::Retrieve => {
                let query_field = get_str(n, args, "query", Some("question"))?;
                let q = field(n, state, query_field)?;
                let query = q.as_str().ok_or_else(|| {
                    bad(
                        n,
                        format!("the query field {query_field:?} must be a str, not {q}"),
                    )
                })?;
                read.insert(query_field.to_string(), q.clone());
                let mut index_name = get_str(n, args, "index", None)?.to_string();
                if args.get("stem") == Some(&Value::Bool(true)) {
                    index_name.push_str("#stem");
                }
                let index = session.index_named(&index_name)?;
                let hits = index
                    .index
                    .search(
                        query,
                        get_count(n, args, "k", 5)?,
                        get_f64(n, args, "k1", 1.2)?,
                        get_f64(n, args, "b", 0.75)?,
                    )
                    .map_err(|e| bad(n, e))?;
                let texts = hits
                    .iter()
                    .map(|h| Value::String(index.texts[h.doc].clone()))
                    .collect();
                wrote.insert(
                    get_str(n, args, "output", Some("context"))?.to_string(),
                    Value::Array(texts),
                );
            }
            ModuleKind::Predict | ModuleKind::ChainOfThought => {
                let Some(PredictSetup {
                    sig,
                    instructions,
                    demos,
                }) = &configured.predict
                else {
                    return Err(EngineError::Internal(format!(
                        "step {n:?} was not configured"
                    )));
                };
                for f in &sig.inputs {
                    read.insert(f.name.clone(), field(n, state, &f.name)?.clone());
                }
                let messages = sig
                    .messages(instructions, demos, &read)
                    .map_err(|e| bad(n, e))?;
                let mut overrides = Map::new();
                for k in ["temperature", "max_tokens"] {
                    if let Some(v) = args.get(k).filter(|v| !v.is_null()) {
                        overrides.insert(k.to_string(), v.clone());
                    }
                }
                let mut lm = session.lm_named(get_str(n, args, "lm", None)?)?.with_tag(n);
                if let Some(b) = budget {
                    lm = lm.with_budget(b.clone());
                }
                let req = dspex_native::lm::ChatRequest {
                    messages,
                    overrides,
                    rollout_id: None,
                };
                let done = lm.chat(&req).await.map_err(|e| tools::lm_error(n, e))?;
                tokens = done.usage.prompt_tokens + done.usage.completion_tokens;
                cost = done.cost.unwrap_or(0.0);
                wrote = sig
                    .parse_answer(&done.text)
                    .map_err(|e| bad(n, format!("cannot read the LM's answer: {e}")))?;
            }
            ModuleKind::PythonTool => {
                let tool = get_str(n, args, "tool", None)?;
                let mut kwargs = BTreeMap::new();
                match args.get("inputs").and_then(Value::as_array) {
                    Some(names) => {
                        for name in names.iter().filter_map(Value::as_str) {
                            read.insert(name.to_string(), field(n, state, name)?.clone());
                        }
                    }
                    None => read = state.clone(),
                }
                for (k, v) in &read {
                    kwargs.insert(k.clone(), Data::from_json(v));
                }
                for (k, v) in args {
                    if !matches!(k.as_str(), "tool" | "inputs" | "output") {
                        kwargs.insert(k.clone(), Data::from_json(v));
                    }
                }
                let out = match tools::call(session, tool, kwargs) {
                    tools::Call::Ready(r) => r?,
                    tools::Call::Pending(f) => f.await?,
                }
                .to_json();
                match (args.get("output").and_then(Value::as_str), out) {
                    (Some(name), v) => {
                        wrote.insert(name.to_string(), v);
                    }
                    (None, Value::Object(m)) => wrote = m,
                    (None, v) => return Err(bad(n, format!("tool {tool:?} returned {v}, not a dict: give output= to name the field it fills"))),
                }
            }
            ModuleKind::Fuse => {
                let mut lists = Vec::new();
                for k in ["a", "b"] {
                    let name = get_str(n, args, k, None)?;
                    let v = field(n, state, name)?;
                    read.insert(name.to_string(), v.clone());
                    lists.push(v.as_array().cloned().ok_or_else(|| {
                        bad(n, format!("field {name:?} must be a list to fuse, not {v}"))
                    })?);
                }
                let fused = predict::fuse(
                    &lists[0],
                    &lists[1],
                    get_f64(n, args, "weight", 0.5)?,
                    get_count(n, args, "k", 10)?,
                );
                wrote.insert(
                    get_str(n, args, "output", Some("context"))?.to_string(),
                    Value::Array(fused),
                );
            }
        }
        Ok((read, wrote, tokens, cost))
    }
}

/// An internal value inside `d` (its low end, or its first choice), to check fixed arguments
/// together with a plausible value of the tunable ones.
fn probe_internal(d: &Distribution) -> f64 {
    match d {
        Distribution::Float(f) => f.low,
        Distribution::Int(i) => i.low as f64,
        Distribution::Categorical(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Program::from_json(&v).unwrap_err().to_string()
    }

    #[test]
    fn programs_are_checked_when_read() {
        let d = Distribution::Int(dspex_optimizer::IntDistribution::new(1, 20, false, 1).unwrap())
            .to_json();
        let p = Program::from_json(&json!({"steps": [
            {"name": "retrieve", "module": "retrieve", "args": {"index": "docs", "k": {"distribution": d}}},
            {"name": "predict", "module": "chain_of_thought", "args": {"signature": "context, question -> answer", "lm": "m"}},
        ]}))
        .unwrap();
        assert_eq!(p.space().len(), 1);
        assert_eq!(p.space()[0].0, "retrieve.k");
        for (bad, says) in [
            (json!({}), "\"steps\""),
            (json!({"steps": []}), "at least one step"),
            (
                json!({"steps": [{"name": "a.b", "module": "retrieve"}]}),
                "without '.'",
            ),
            (
                json!({"steps": [{"name": "r", "module": "rerank"}]}),
                "unknown module \"rerank\"",
            ),
            (
                json!({"steps": [{"name": "r", "module": "retrieve", "args": {"index": "i", "depth": 3}}]}),
                "unknown argument \"depth\"",
            ),
            (
                json!({"steps": [{"name": "r", "module": "retrieve", "args": {"index": "i", "k": 0}}]}),
                "int >= 1",
            ),
            (
                json!({"steps": [{"name": "r", "module": "retrieve", "args": {"index": "i", "k": {"distribution": "{}"}}}]}),
                "argument \"k\"",
            ),
            (
                json!({"steps": [{"name": "p", "module": "predict", "args": {"signature": "a -> b: tensor", "lm": "m"}}]}),
                "unknown type",
            ),
            (
                json!({"steps": [{"name": "p", "module": "predict", "args": {"signature": "a -> b", "lm": "m", "temperature": 3}}]}),
                "within [0, 2]",
            ),
            (
                json!({"steps": [{"name": "f", "module": "fuse", "args": {"a": "x", "b": "y", "weight": 2}}]}),
                "within [0, 1]",
            ),
            (
                json!({"steps": [{"name": "t", "module": "python_tool", "args": {"tool": "x", "inputs": "q"}}]}),
                "list of field names",
            ),
            (
                json!({"steps": [{"name": "x", "module": "fuse", "args": {"a": "x", "b": "y"}}, {"name": "x", "module": "fuse", "args": {"a": "x", "b": "y"}}]}),
                "two steps",
            ),
        ] {
            let e = err(bad.clone());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn demo_sets_pick_a_list_of_demos() {
        let p = Program::from_json(&json!({"steps": [{"name": "p", "module": "predict", "args": {
            "signature": "q -> a", "lm": "m", "demos": [[{"q": "1", "a": "2"}], []], "demo_set": 0}}]}))
        .unwrap();
        let demos = p.steps[0].demos(&p.steps[0].args).unwrap();
        assert_eq!(demos.len(), 1);
        let mut args = p.steps[0].args.clone();
        args.insert("demo_set".into(), json!(5));
        assert!(p.steps[0]
            .demos(&args)
            .unwrap_err()
            .to_string()
            .contains("demo_set 5"));
    }
}
