//! The tools of a session: the engine-native ones ([`native_specs`]) and those a process
//! registers ([`ToolProvider`]: Python functions, called as a direct call on the evaluator threads
//! when embedded, over the session stream when remote). Every tool has a [`ToolSpec`]; a call's
//! named arguments are checked against it (unknown or missing names, wrong types: each error
//! names the argument). [`call`] runs one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dspex_native::{chunk_words, Tokenizer};
use tokio::sync::{mpsc, oneshot};

use crate::error::{EngineError, Result};
use crate::session::{Data, Session};

/// One parameter of a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolParam {
    /// Its name.
    pub name: String,
    /// Its type: "str", "int", "float", "bool", "bytes", "list", "dict", "any".
    pub ty: String,
    /// Whether a call must give it.
    pub required: bool,
    /// The value an optional parameter takes when a call leaves it out (None: the tool itself
    /// fills it in, as a Python default that is not plain data).
    pub default: Option<Data>,
    /// What it means.
    pub description: String,
}

/// What a tool takes and returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its parameters, in order.
    pub params: Vec<ToolParam>,
    /// It takes named arguments beyond `params` too (a Python `**kwargs`).
    pub extra_args: bool,
    /// The type of its result.
    pub returns: String,
    /// Several processes may serve it (a pool of workers): each registers the same spec, a call
    /// goes to the one with the fewest calls under way, and a call whose process went away is
    /// sent to another (waiting up to the tool's timeout for one to join when none is left).
    pub shared: bool,
}

/// The parameter types a spec may name.
pub const PARAM_TYPES: [&str; 8] = [
    "str", "int", "float", "bool", "bytes", "list", "dict", "any",
];

impl ToolSpec {
    /// Checks the spec a process registers: a non-empty name, distinct parameter names, known
    /// types.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| EngineError::InvalidArgument(format!("tool {:?}: {m}", self.name));
        if self.name.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a tool name must not be empty".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.params {
            if !seen.insert(p.name.as_str()) {
                return Err(bad(format!("parameter {:?} is declared twice", p.name)));
            }
            if !PARAM_TYPES.contains(&p.ty.as_str()) {
                return Err(bad(format!(
                    "parameter {:?} has type {:?}; types are {PARAM_TYPES:?}",
                    p.name, p.ty
                )));
            }
        }
        Ok(())
    }
}

fn param(name: &str, ty: &str, default: Option<Data>, description: &str) -> ToolParam {
    ToolParam {
        name: name.into(),
        ty: ty.into(),
        required: default.is_none(),
        default,
        description: description.into(),
    }
}

fn native(name: &str, description: &str, params: Vec<ToolParam>, returns: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: description.into(),
        params,
        extra_args: false,
        returns: returns.into(),
        shared: false,
    }
}

/// The engine-native tools every session has.
pub fn native_specs() -> &'static [ToolSpec] {
    static SPECS: OnceLock<Vec<ToolSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        vec![
            native(
                "echo",
                "Returns its argument (measures the cost of a call).",
                vec![param("value", "any", Some(Data::Null), "what to return")],
                "any",
            ),
            native(
                "search",
                "BM25 full-text search of an index of the session (see index); returns the best \
                 documents as {id, score, text}, best first.",
                vec![
                    param("index", "str", None, "the index's name"),
                    param("query", "str", None, "the query text"),
                    param("k", "int", Some(Data::Int(5)), "how many documents"),
                    param(
                        "k1",
                        "float",
                        Some(Data::Float(1.2)),
                        "term-frequency saturation",
                    ),
                    param(
                        "b",
                        "float",
                        Some(Data::Float(0.75)),
                        "length normalisation, in [0, 1]",
                    ),
                ],
                "list",
            ),
            native(
                "chunk",
                "Splits a text into chunks of `size` words overlapping by `overlap`.",
                vec![
                    param("text", "str", None, "the text"),
                    param("size", "int", Some(Data::Int(200)), "words per chunk"),
                    param(
                        "overlap",
                        "int",
                        Some(Data::Int(20)),
                        "words shared by neighbours",
                    ),
                ],
                "list",
            ),
            native(
                "map",
                "Calls `tool` once for each argument dict of `calls`, `concurrency` calls at a \
                 time in the engine; returns the results in order. With return_exceptions, a \
                 failed call's place holds {error, kind, message} instead of failing the whole.",
                vec![
                    param("tool", "str", None, "the tool to call"),
                    param(
                        "calls",
                        "list",
                        None,
                        "one dict of named arguments per call",
                    ),
                    param(
                        "concurrency",
                        "int",
                        Some(Data::Int(64)),
                        "calls in flight at most",
                    ),
                    param(
                        "return_exceptions",
                        "bool",
                        Some(Data::Bool(false)),
                        "report failed calls in place",
                    ),
                ],
                "list",
            ),
            native(
                "lm",
                "Calls the LM `lm` of the session (see add_lm) with a prompt or a list of \
                 messages; returns {text, choices, finish_reason, prompt_tokens, \
                 completion_tokens, cached, latency, model}.",
                vec![
                    param("lm", "str", None, "the LM's name in the session"),
                    param("prompt", "str", Some(Data::Null), "one user message"),
                    param(
                        "messages",
                        "list",
                        Some(Data::Null),
                        "[{role, content}, ...] instead of a prompt",
                    ),
                    param(
                        "params",
                        "dict",
                        Some(Data::Map(BTreeMap::new())),
                        "request parameters over the LM's own (temperature, max_tokens, ...)",
                    ),
                    param(
                        "rollout_id",
                        "str",
                        Some(Data::Null),
                        "keeps deliberate repeats apart in the cache",
                    ),
                    param("tag", "str", Some(Data::Null), "accounting tag of the call"),
                ],
                "dict",
            ),
        ]
    })
}

/// A call to a tool a process registered, as its provider receives it. The provider answers
/// through `reply`; dropping it unanswered tells the caller the provider is gone.
#[derive(Debug)]
pub struct ToolCall {
    /// The tool's name.
    pub tool: String,
    /// The named arguments, checked against the tool's spec.
    pub args: BTreeMap<String, Data>,
    /// Where the result goes (an [`EngineError::Tool`] when the tool raised).
    pub reply: oneshot::Sender<Result<Data>>,
}

/// A process (or a thread pool of this one) that runs the tools it registered: the engine sends
/// it [`ToolCall`]s. When the receiving side is dropped its tools become unavailable and are
/// removed at their next call.
#[derive(Debug)]
pub struct ToolProvider {
    id: u64,
    tx: mpsc::UnboundedSender<ToolCall>,
    /// Calls sent to it and not answered yet.
    busy: AtomicUsize,
}

impl ToolProvider {
    /// A provider and the receiver its calls arrive on.
    pub fn new() -> (Arc<ToolProvider>, mpsc::UnboundedReceiver<ToolCall>) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        (
            Arc::new(ToolProvider {
                id,
                tx,
                busy: AtomicUsize::new(0),
            }),
            rx,
        )
    }

    /// A sender of calls into this provider's receiver (a transport that receives calls from
    /// elsewhere feeds them in here).
    pub fn sender(&self) -> mpsc::UnboundedSender<ToolCall> {
        self.tx.clone()
    }

    /// Its identity (tools remember which provider registered them).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True while its receiver exists.
    pub fn alive(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// A tool registered by a process (or, shared, by several).
#[derive(Debug, Clone)]
pub struct ExternalTool {
    /// What it takes.
    pub spec: ToolSpec,
    /// Who runs it: one provider, or the pool of a shared tool.
    pub providers: Vec<Arc<ToolProvider>>,
    /// How long a call may take.
    pub timeout: Duration,
    /// Set when every process of a shared tool went away without unregistering it: the tool
    /// waits `timeout` for one to join (a supervised pool restarting its workers), calls made
    /// meanwhile wait for it, then the tool goes.
    pub orphaned_since: Option<std::time::Instant>,
}

impl ExternalTool {
    /// True for an orphaned shared tool whose wait for a process is over.
    pub fn expired(&self) -> bool {
        self.orphaned_since
            .is_some_and(|t| t.elapsed() >= self.timeout)
    }

    /// The live provider with the fewest calls under way.
    fn least_busy(&self) -> Option<&Arc<ToolProvider>> {
        self.providers
            .iter()
            .filter(|p| p.alive())
            .min_by_key(|p| p.busy.load(Ordering::Relaxed))
    }
}

/// The registered tools of a session, by name.
pub type ExternalTools = HashMap<String, Arc<ExternalTool>>;

/// The arguments of a call, checked against `spec` and completed with the defaults.
fn bind(spec: &ToolSpec, mut args: BTreeMap<String, Data>) -> Result<BTreeMap<String, Data>> {
    let bad = |m: String| EngineError::InvalidArgument(format!("tool {:?}: {m}", spec.name));
    let mut out = BTreeMap::new();
    for p in &spec.params {
        let v = match args.remove(&p.name) {
            Some(v) => v,
            None if p.required => return Err(bad(format!("missing argument {:?}", p.name))),
            None => match &p.default {
                Some(d) => d.clone(),
                None => continue,
            },
        };
        let v = match (p.ty.as_str(), v) {
            ("any", v)
            | ("str", v @ Data::Str(_))
            | ("int", v @ Data::Int(_))
            | ("bool", v @ Data::Bool(_))
            | ("float", v @ Data::Float(_))
            | ("bytes", v @ Data::Bytes(_))
            | ("list", v @ Data::List(_))
            | ("dict", v @ Data::Map(_)) => v,
            ("float", Data::Int(i)) => Data::Float(i as f64),
            // an optional argument (default None) may be None
            (_, Data::Null) if p.default == Some(Data::Null) => Data::Null,
            (ty, v) => {
                return Err(bad(format!(
                    "argument {:?} must be a {ty}, got a {} ({v})",
                    p.name,
                    v.kind()
                )))
            }
        };
        out.insert(p.name.clone(), v);
    }
    if let Some(extra) = args.keys().next() {
        if !spec.extra_args {
            let names: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
            return Err(bad(format!(
                "unknown argument {extra:?} (it takes {names:?})"
            )));
        }
        out.append(&mut args);
    }
    Ok(out)
}

fn int(a: &BTreeMap<String, Data>, k: &str) -> i64 {
    match a.get(k) {
        Some(Data::Int(i)) => *i,
        _ => 0,
    }
}

fn float(a: &BTreeMap<String, Data>, k: &str) -> f64 {
    match a.get(k) {
        Some(Data::Float(x)) => *x,
        _ => f64::NAN,
    }
}

fn text<'a>(a: &'a BTreeMap<String, Data>, k: &str) -> &'a str {
    match a.get(k) {
        Some(Data::Str(s)) => s,
        _ => "",
    }
}

fn count(name: &str, v: i64) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| EngineError::InvalidArgument(format!("{name} must be >= 0, got {v}")))
}

/// A tool call under way: native tools answer at once, registered tools and `map` later (on
/// the engine's runtime).
pub enum Call {
    /// The answer.
    Ready(Result<Data>),
    /// The answer to come.
    Pending(Pin<Box<dyn Future<Output = Result<Data>> + Send>>),
}

impl Call {
    /// The answer, once it is there.
    pub async fn wait(self) -> Result<Data> {
        match self {
            Call::Ready(r) => r,
            Call::Pending(f) => f.await,
        }
    }
}

/// Calls the tool `name` of `session` (native or registered) with named arguments.
pub fn call(session: &Arc<Session>, name: &str, args: BTreeMap<String, Data>) -> Call {
    session.touch();
    if let Some(tool) = session.registered_tool(name) {
        return match bind(&tool.spec, args) {
            Ok(args) => Call::Pending(Box::pin(call_registered(session.clone(), tool, args))),
            Err(e) => Call::Ready(Err(e)),
        };
    }
    if name == "map" {
        return match bind(&native_specs()[3], args) {
            Ok(args) => Call::Pending(Box::pin(map(session.clone(), args))),
            Err(e) => Call::Ready(Err(e)),
        };
    }
    if name == "lm" {
        return match bind(&native_specs()[4], args).and_then(|a| lm_request(session, a)) {
            Ok((lm, req)) => Call::Pending(Box::pin(async move {
                lm.chat(&req)
                    .await
                    .map(completion_data)
                    .map_err(|e| lm_error("lm", e))
            })),
            Err(e) => Call::Ready(Err(e)),
        };
    }
    Call::Ready(call_native(session, name, args))
}

/// An LM error as a tool error: `kind` is `BudgetExceeded` or `LMError` (a bad argument is
/// InvalidArgument).
pub fn lm_error(tool: &str, e: dspex_native::lm::LmError) -> EngineError {
    use dspex_native::lm::LmError;
    match e {
        LmError::InvalidArgument(m) => EngineError::InvalidArgument(m),
        LmError::BudgetExceeded(_) => {
            EngineError::tool_raised(tool, "BudgetExceeded", &e.to_string(), "")
        }
        _ => EngineError::tool_raised(tool, "LMError", &e.to_string(), ""),
    }
}

/// The LM and request of a call of the `lm` tool.
fn lm_request(
    session: &Session,
    a: BTreeMap<String, Data>,
) -> Result<(dspex_native::lm::Lm, dspex_native::lm::ChatRequest)> {
    use dspex_native::lm::ChatRequest;
    let bad = |m: &str| EngineError::InvalidArgument(format!("tool \"lm\": {m}"));
    let mut lm = session.lm_named(text(&a, "lm"))?;
    if let Some(Data::Str(tag)) = a.get("tag") {
        lm = lm.with_tag(tag);
    }
    let messages = match (a.get("prompt"), a.get("messages")) {
        (Some(Data::Str(p)), Some(Data::Null) | None) => {
            serde_json::json!([{"role": "user", "content": p}])
        }
        (Some(Data::Null) | None, Some(m @ Data::List(_))) => m.to_json(),
        _ => return Err(bad("give either prompt or messages")),
    };
    let overrides = match a.get("params").map(Data::to_json) {
        Some(serde_json::Value::Object(m)) => m,
        _ => Default::default(),
    };
    let rollout_id = match a.get("rollout_id") {
        Some(Data::Str(r)) => Some(r.clone()),
        _ => None,
    };
    Ok((
        lm,
        ChatRequest {
            messages,
            overrides,
            rollout_id,
        },
    ))
}

fn completion_data(c: dspex_native::lm::Completion) -> Data {
    let mut m = BTreeMap::new();
    m.insert("text".to_string(), Data::Str(c.text));
    m.insert(
        "choices".to_string(),
        Data::List(c.choices.into_iter().map(Data::Str).collect()),
    );
    m.insert(
        "finish_reason".to_string(),
        c.finish_reason.map_or(Data::Null, Data::Str),
    );
    m.insert(
        "prompt_tokens".to_string(),
        Data::Int(c.usage.prompt_tokens as i64),
    );
    m.insert(
        "completion_tokens".to_string(),
        Data::Int(c.usage.completion_tokens as i64),
    );
    m.insert("cached".to_string(), Data::Bool(c.cached));
    m.insert("latency".to_string(), Data::Float(c.latency));
    m.insert("model".to_string(), Data::Str(c.model));
    Data::Map(m)
}

/// A call under way at a provider (counted while it lives).
struct Busy<'a>(&'a ToolProvider);

impl<'a> Busy<'a> {
    fn new(p: &'a ToolProvider) -> Self {
        p.busy.fetch_add(1, Ordering::Relaxed);
        Busy(p)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn call_registered(
    session: Arc<Session>,
    mut tool: Arc<ExternalTool>,
    mut args: BTreeMap<String, Data>,
) -> Result<Data> {
    let name = tool.spec.name.clone();
    loop {
        let Some(provider) = tool.least_busy().cloned() else {
            session.drop_dead_providers();
            let gone = "the process that registered it is gone";
            if !tool.spec.shared {
                return Err(EngineError::tool_unavailable(&name, gone));
            }
            // every process of the pool is gone for now: wait for one to join
            tool = live_pool(&session, &name, tool.timeout)
                .await
                .ok_or_else(|| EngineError::tool_unavailable(&name, gone))?;
            continue;
        };
        let (reply, answer) = oneshot::channel();
        let _busy = Busy::new(&provider);
        // a shared tool's call may have to go to another process: keep its arguments
        let call_args = if tool.spec.shared {
            args.clone()
        } else {
            std::mem::take(&mut args)
        };
        let sent = provider.tx.send(ToolCall {
            tool: name.clone(),
            args: call_args,
            reply,
        });
        let lost = match sent {
            Err(_) => "the process that registered it is gone",
            Ok(()) => match tokio::time::timeout(tool.timeout, answer).await {
                Ok(Ok(result)) => {
                    session.touch();
                    return result;
                }
                Ok(Err(_)) => "the process that registered it went away during the call",
                Err(_) => return Err(EngineError::tool_timeout(&name, tool.timeout.as_secs_f64())),
            },
        };
        session.drop_dead_providers();
        if !tool.spec.shared {
            return Err(EngineError::tool_unavailable(&name, lost));
        }
        // a shared tool is tried on the processes left, or on one that joins within the
        // tool's timeout (a supervised pool restarting its workers)
        tool = live_pool(&session, &name, tool.timeout)
            .await
            .ok_or_else(|| EngineError::tool_unavailable(&name, lost))?;
    }
}

/// The shared tool `name` once it has a live provider, waiting at most `wait` for one.
async fn live_pool(session: &Session, name: &str, wait: Duration) -> Option<Arc<ExternalTool>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match session.registered_tool(name) {
            Some(t) if t.spec.shared && t.least_busy().is_some() => return Some(t),
            _ if tokio::time::Instant::now() >= deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The native tool `map`: `calls` of one tool, `concurrency` at a time, results in order.
async fn map(session: Arc<Session>, a: BTreeMap<String, Data>) -> Result<Data> {
    let tool = text(&a, "tool").to_string();
    let bad = |m: String| EngineError::InvalidArgument(format!("tool \"map\": {m}"));
    if tool == "map" {
        return Err(bad("map cannot call map".into()));
    }
    let concurrency = count("concurrency", int(&a, "concurrency"))?;
    if concurrency == 0 {
        return Err(bad("concurrency must be >= 1".into()));
    }
    let return_exceptions = matches!(a.get("return_exceptions"), Some(Data::Bool(true)));
    let Some(Data::List(calls)) = a.get("calls") else {
        return Err(bad("calls must be a list".into()));
    };
    let mut jobs = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate() {
        match c {
            Data::Map(m) => jobs.push(m.clone()),
            other => {
                return Err(bad(format!(
                    "calls[{i}] must be a dict of named arguments, got a {}",
                    other.kind()
                )))
            }
        }
    }
    let n = jobs.len();
    let jobs = Arc::new(parking_lot::Mutex::new(jobs.into_iter().enumerate()));
    let results = Arc::new(parking_lot::Mutex::new(vec![None; n]));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n) {
        let (session, tool, jobs, results, failed) = (
            session.clone(),
            tool.clone(),
            jobs.clone(),
            results.clone(),
            failed.clone(),
        );
        workers.spawn(async move {
            while !failed.load(Ordering::Relaxed) {
                let Some((i, args)) = jobs.lock().next() else {
                    break;
                };
                let r = call(&session, &tool, args).wait().await;
                if r.is_err() && !return_exceptions {
                    failed.store(true, Ordering::Relaxed);
                }
                results.lock()[i] = Some(r);
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| EngineError::Internal(format!("a map worker failed: {e}")))?;
    }
    let results = std::mem::take(&mut *results.lock());
    let mut out = Vec::with_capacity(n);
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) if return_exceptions => {
                let kind = match &e {
                    EngineError::Tool { kind, .. } => kind.clone(),
                    other => other.code().as_str().to_string(),
                };
                let mut m = BTreeMap::new();
                m.insert("error".to_string(), Data::Str(e.code().as_str().into()));
                m.insert("kind".to_string(), Data::Str(kind));
                m.insert("message".to_string(), Data::Str(e.to_string()));
                out.push(Data::Map(m));
            }
            Some(Err(e)) => return Err(e),
            None if return_exceptions => {
                return Err(EngineError::Internal(format!("map: call {i} never ran")))
            }
            None => {} // not started after an earlier failure
        }
    }
    Ok(Data::List(out))
}

/// Runs the native tool `name` of `session` with named arguments (`map` is async: see [`call`]).
pub fn call_native(session: &Session, name: &str, args: BTreeMap<String, Data>) -> Result<Data> {
    session.touch();
    let spec = native_specs()
        .iter()
        .find(|s| s.name == name && s.name != "map" && s.name != "lm")
        .ok_or_else(|| EngineError::NotFoundIn {
            what: "tool",
            name: name.to_string(),
        })?;
    let a = bind(spec, args)?;
    let invalid =
        |e: dspex_native::NativeError| EngineError::InvalidArgument(format!("tool {name:?}: {e}"));
    Ok(match name {
        "echo" => a.get("value").cloned().unwrap_or(Data::Null),
        "search" => {
            let idx = session.index_named(text(&a, "index"))?;
            let hits = idx
                .index
                .search(
                    text(&a, "query"),
                    count("k", int(&a, "k"))?,
                    float(&a, "k1"),
                    float(&a, "b"),
                )
                .map_err(invalid)?;
            Data::List(
                hits.into_iter()
                    .map(|h| {
                        let mut m = BTreeMap::new();
                        m.insert("id".to_string(), idx.ids[h.doc].clone());
                        m.insert("score".to_string(), Data::Float(h.score));
                        m.insert("text".to_string(), Data::Str(idx.texts[h.doc].clone()));
                        Data::Map(m)
                    })
                    .collect(),
            )
        }
        "chunk" => Data::List(
            chunk_words(
                text(&a, "text"),
                count("size", int(&a, "size"))?,
                count("overlap", int(&a, "overlap"))?,
            )
            .map_err(invalid)?
            .into_iter()
            .map(Data::Str)
            .collect(),
        ),
        other => {
            return Err(EngineError::Internal(format!(
                "native tool {other:?} has a spec but no implementation"
            )))
        }
    })
}

/// A tokenizer from the options of `index`.
pub fn tokenizer(stop_words: bool, stem: bool) -> Tokenizer {
    Tokenizer { stop_words, stem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Sessions;
    use std::time::Duration;

    fn args(pairs: &[(&str, Data)]) -> BTreeMap<String, Data> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn search_chunk_and_echo() {
        let s = Sessions::default()
            .open(None, Duration::from_secs(60))
            .unwrap();
        let texts = vec![
            "the quick brown fox".to_string(),
            "a lazy dog sleeps".to_string(),
            "the fox and the dog".to_string(),
        ];
        s.index("docs", texts, None, tokenizer(true, false))
            .unwrap();
        let out = call_native(
            &s,
            "search",
            args(&[
                ("index", Data::Str("docs".into())),
                ("query", Data::Str("fox".into())),
                ("k", Data::Int(1)),
            ]),
        )
        .unwrap();
        let Data::List(hits) = out else {
            panic!("{out:?}")
        };
        assert_eq!(hits.len(), 1);
        let Data::Map(m) = &hits[0] else { panic!() };
        // "fox" is in documents 0 and 2; the shorter one (2 terms after stop words) wins.
        assert_eq!(m["id"], Data::Int(2));
        assert_eq!(
            call_native(&s, "echo", args(&[("value", Data::Int(7))])).unwrap(),
            Data::Int(7)
        );
        let c = call_native(
            &s,
            "chunk",
            args(&[
                ("text", Data::Str("a b c d".into())),
                ("size", Data::Int(2)),
                ("overlap", Data::Int(0)),
            ]),
        )
        .unwrap();
        assert_eq!(
            c,
            Data::List(vec![Data::Str("a b".into()), Data::Str("c d".into())])
        );
    }

    #[test]
    fn bad_calls_name_what_is_wrong() {
        let s = Sessions::default()
            .open(None, Duration::from_secs(60))
            .unwrap();
        let e = call_native(&s, "nope", BTreeMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "tool \"nope\" not found");
        let e = call_native(&s, "search", args(&[("query", Data::Str("x".into()))])).unwrap_err();
        assert!(e.to_string().contains("missing argument \"index\""), "{e}");
        let e = call_native(
            &s,
            "search",
            args(&[("index", Data::Int(1)), ("query", Data::Str("x".into()))]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("argument \"index\" must be a str, got a int"),
            "{e}"
        );
        let e = call_native(&s, "echo", args(&[("valu", Data::Int(1))])).unwrap_err();
        assert!(e.to_string().contains("unknown argument \"valu\""), "{e}");
        let e = call_native(
            &s,
            "search",
            args(&[
                ("index", Data::Str("none".into())),
                ("query", Data::Str("x".into())),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("index \"none\" not found"), "{e}");
    }
    fn spec(name: &str, params: &[(&str, &str, bool)]) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            params: params
                .iter()
                .map(|(n, t, required)| ToolParam {
                    name: n.to_string(),
                    ty: t.to_string(),
                    required: *required,
                    default: None,
                    description: String::new(),
                })
                .collect(),
            extra_args: false,
            returns: "any".into(),
            shared: false,
        }
    }

    /// A provider answering `double(x)` with 2x, raising for x < 0 and never answering x == 0.
    fn doubler(
        mut rx: mpsc::UnboundedReceiver<ToolCall>,
        held: Arc<parking_lot::Mutex<Vec<ToolCall>>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let answer = match c.args.get("x") {
                    Some(Data::Int(0)) => {
                        held.lock().push(c);
                        continue;
                    }
                    Some(Data::Int(x)) if *x < 0 => Err(EngineError::tool_raised(
                        &c.tool,
                        "ValueError",
                        "negative",
                        "Traceback ...",
                    )),
                    Some(Data::Int(x)) => Ok(Data::Int(2 * x)),
                    _ => Ok(Data::Null),
                };
                let _ = c.reply.send(answer);
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registered_tools_answer_fail_time_out_and_go_away() {
        let s = Sessions::default()
            .open(None, Duration::from_secs(60))
            .unwrap();
        let (provider, rx) = ToolProvider::new();
        let held = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let task = doubler(rx, held.clone());
        s.register_tool(
            spec("double", &[("x", "int", true)]),
            &provider,
            Duration::from_millis(200),
        )
        .unwrap();
        let x = |v: i64| args(&[("x", Data::Int(v))]);
        assert_eq!(
            call(&s, "double", x(21)).wait().await.unwrap(),
            Data::Int(42)
        );
        // Arguments are checked before the call leaves the engine.
        let e = call(&s, "double", args(&[("x", Data::Str("1".into()))]))
            .wait()
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("argument \"x\" must be a int"),
            "{e}"
        );
        let e = call(&s, "double", x(-1)).wait().await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::ToolError);
        assert_eq!(e.to_string(), "tool \"double\" raised ValueError: negative");
        let e = call(&s, "double", x(0)).wait().await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::ToolTimeout, "{e}");
        // map: results in order, failures in place with return_exceptions.
        let calls = Data::List((1..=100).map(|v| Data::Map(x(v))).collect());
        let out = call(
            &s,
            "map",
            args(&[
                ("tool", Data::Str("double".into())),
                ("calls", calls),
                ("concurrency", Data::Int(8)),
            ]),
        )
        .wait()
        .await
        .unwrap();
        assert_eq!(
            out,
            Data::List((1..=100).map(|v| Data::Int(2 * v)).collect())
        );
        let mixed = Data::List(vec![Data::Map(x(1)), Data::Map(x(-2))]);
        let e = call(
            &s,
            "map",
            args(&[
                ("tool", Data::Str("double".into())),
                ("calls", mixed.clone()),
            ]),
        )
        .wait()
        .await
        .unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::ToolError);
        let out = call(
            &s,
            "map",
            args(&[
                ("tool", Data::Str("double".into())),
                ("calls", mixed),
                ("return_exceptions", Data::Bool(true)),
            ]),
        )
        .wait()
        .await
        .unwrap();
        let Data::List(out) = out else { panic!() };
        assert_eq!(out[0], Data::Int(2));
        let Data::Map(err) = &out[1] else { panic!() };
        assert_eq!(err["kind"], Data::Str("ValueError".into()));
        // Another provider cannot take the name; a native name is refused.
        let (other, _other_rx) = ToolProvider::new();
        let e = s
            .register_tool(spec("double", &[]), &other, Duration::from_secs(1))
            .unwrap_err();
        assert!(e.to_string().contains("already registered"), "{e}");
        let e = s
            .register_tool(spec("search", &[]), &other, Duration::from_secs(1))
            .unwrap_err();
        assert!(e.to_string().contains("native tool"), "{e}");
        // A call in flight when the provider goes away fails fast, and the tool is removed.
        s.register_tool(
            spec("double", &[("x", "int", true)]),
            &provider,
            Duration::from_secs(30),
        )
        .unwrap();
        let pending = tokio::spawn({
            let s = s.clone();
            async move { call(&s, "double", x(0)).wait().await }
        });
        while held.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let _ = task.await;
        held.lock().clear();
        let e = pending.await.unwrap().unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::ToolUnavailable, "{e}");
        assert!(s.registered_tool("double").is_none());
        let e = call(&s, "double", x(1)).wait().await.unwrap_err();
        assert_eq!(e.to_string(), "tool \"double\" not found");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_tool_spreads_calls_and_survives_a_process_going_away() {
        let s = Sessions::default()
            .open(None, Duration::from_secs(60))
            .unwrap();
        let shared = || spec_shared("double", &[("x", "int", true)]);
        let (a, a_rx) = ToolProvider::new();
        let (b, b_rx) = ToolProvider::new();
        let held_a = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let held_b = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let task_a = doubler(a_rx, held_a.clone());
        let task_b = doubler(b_rx, held_b.clone());
        let t = Duration::from_secs(30);
        s.register_tool(shared(), &a, t).unwrap();
        // not shared by the second, or another spec: refused
        let e = s
            .register_tool(spec("double", &[("x", "int", true)]), &b, t)
            .unwrap_err();
        assert!(e.to_string().contains("shared=True"), "{e}");
        let e = s
            .register_tool(spec_shared("double", &[("y", "int", true)]), &b, t)
            .unwrap_err();
        assert!(e.to_string().contains("same parameters"), "{e}");
        s.register_tool(shared(), &b, t).unwrap();
        assert_eq!(s.registered_tool("double").unwrap().providers.len(), 2);
        // two calls that hang go to different processes (the least busy one)
        let x = |v: i64| args(&[("x", Data::Int(v))]);
        let hanging: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { call(&s, "double", x(0)).wait().await })
            })
            .collect();
        while held_a.lock().len() + held_b.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((held_a.lock().len(), held_b.lock().len()), (1, 1));
        // process a goes away: its call is sent to b, which holds it too
        task_a.abort();
        let _ = task_a.await;
        held_a.lock().clear();
        while held_b.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(s.registered_tool("double").unwrap().providers.len(), 1);
        for c in held_b.lock().drain(..) {
            let _ = c.reply.send(Ok(Data::Int(7)));
        }
        for h in hanging {
            assert_eq!(h.await.unwrap().unwrap(), Data::Int(7));
        }
        assert_eq!(call(&s, "double", x(4)).wait().await.unwrap(), Data::Int(8));
        // every process gone (the tool with them): a call waits for one to join
        let pending = tokio::spawn({
            let s = s.clone();
            async move { call(&s, "double", x(0)).wait().await }
        });
        while held_b.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task_b.abort();
        let _ = task_b.await;
        held_b.lock().clear();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // the tool stays, with no process, and a call made now waits too
        let orphan = s.registered_tool("double").unwrap();
        assert!(orphan.providers.is_empty() && orphan.orphaned_since.is_some());
        assert!(s.tool_specs().iter().any(|t| t.name == "double"));
        let later = tokio::spawn({
            let s = s.clone();
            async move { call(&s, "double", x(0)).wait().await }
        });
        let (c, mut c_rx) = ToolProvider::new();
        s.register_tool(shared(), &c, t).unwrap();
        for _ in 0..2 {
            let _ = c_rx.recv().await.unwrap().reply.send(Ok(Data::Int(99)));
        }
        assert_eq!(pending.await.unwrap().unwrap(), Data::Int(99));
        assert_eq!(later.await.unwrap().unwrap(), Data::Int(99));
        // the last one leaves: the tool goes
        s.unregister_tool("double", &c).unwrap();
        assert!(s.registered_tool("double").is_none());
        // a pool whose processes never come back goes after the tool's timeout
        let (d, d_rx) = ToolProvider::new();
        let short = Duration::from_millis(200);
        s.register_tool(shared(), &d, short).unwrap();
        drop(d_rx);
        s.drop_dead_providers();
        assert!(s.registered_tool("double").is_some());
        let e = call(&s, "double", x(0)).wait().await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::ToolUnavailable, "{e}");
        assert!(s.registered_tool("double").is_none());
        assert!(!s.tool_specs().iter().any(|t| t.name == "double"));
    }

    fn spec_shared(name: &str, params: &[(&str, &str, bool)]) -> ToolSpec {
        ToolSpec {
            shared: true,
            ..spec(name, params)
        }
    }
}
