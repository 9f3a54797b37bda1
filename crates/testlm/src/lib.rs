//! A local OpenAI-compatible HTTP server for tests and benchmarks.
//!
//! It speaks the real wire format of `POST /v1/chat/completions` and `POST /v1/embeddings`
//! (and `GET /v1/models`), so a client that works against it works against OpenAI, vLLM,
//! llama.cpp's server, Ollama or a LiteLLM proxy. What it answers is programmable:
//!
//! - server-wide, by [`Behavior`] (given at start, changed with `POST /control/behavior`):
//!   latency, an API key it requires, the models it knows, 429 answers whenever more than
//!   `max_inflight` requests are in flight, random 429 and 500 answers, `Retry-After`;
//! - per request, by markers in the last message's content: `[[reply:TEXT]]` answers TEXT,
//!   `[[status:N]]` answers with status N, `[[flaky:N]]` fails the first N requests with that
//!   exact content with 503, `[[sleep:MS]]` adds latency, `[[slow-first:MS]]` adds latency to
//!   the first request with that exact content only, `[[malformed]]` sends JSON cut in the
//!   middle, `[[slow-body:MS]]` sends the body in pieces MS apart, `[[drop]]` drops the
//!   connection halfway through the body, `[[huge:BYTES]]` answers a body of that size,
//!   `[[hash]]` ends text answers with ` h<digit>`, a digit hashed from every message of the
//!   request (so instructions and demos change the answer, as they change a real model's).
//!
//! Without a marker the answer is `echo: ` followed by the last message's content, in the
//! structure of DSPy's or dspex's chat format when the system message asks for output fields. Usage counts
//! words. `GET /control/stats` returns what the server saw (`load_429`: the 429s for too many
//! requests in flight, apart from the random ones); `POST /control/reset` zeroes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

/// What the server does with every request (per-request markers come on top).
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Time an accepted request takes before its answer starts.
    pub latency: Duration,
    /// Answer 429 to a request arriving while this many are already in flight.
    pub max_inflight: Option<usize>,
    /// The `Retry-After` header (seconds) sent with every 429 and 503.
    pub retry_after: Option<f64>,
    /// Probability of a random 429 for an accepted request.
    pub random_429: f64,
    /// Probability of a random 500 for an accepted request.
    pub random_500: f64,
    /// The bearer token every request must carry (401 otherwise).
    pub api_key: Option<String>,
    /// The models the server knows (404 for others); empty: every model.
    pub models: Vec<String>,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            latency: Duration::ZERO,
            max_inflight: None,
            retry_after: None,
            random_429: 0.0,
            random_500: 0.0,
            api_key: None,
            models: Vec::new(),
        }
    }
}

impl Behavior {
    /// Reads a behaviour from its JSON form (`latency_ms`, `max_inflight`, `retry_after`,
    /// `random_429`, `random_500`, `api_key`, `models`); absent fields keep their defaults.
    pub fn from_json(v: &Value) -> Result<Behavior, String> {
        let obj = v.as_object().ok_or("the behavior must be a JSON object")?;
        let mut b = Behavior::default();
        for (k, val) in obj {
            let num = || val.as_f64().ok_or(format!("{k} must be a number"));
            match k.as_str() {
                "latency_ms" => b.latency = Duration::from_secs_f64(num()?.max(0.0) / 1000.0),
                "max_inflight" => b.max_inflight = val.as_u64().map(|n| n as usize),
                "retry_after" => b.retry_after = val.as_f64(),
                "random_429" => b.random_429 = num()?,
                "random_500" => b.random_500 = num()?,
                "api_key" => b.api_key = val.as_str().map(str::to_string),
                "models" => {
                    b.models = val
                        .as_array()
                        .ok_or("models must be a list")?
                        .iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect()
                }
                other => return Err(format!("unknown behavior field {other:?}")),
            }
        }
        Ok(b)
    }
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    inflight: AtomicUsize,
    max_inflight_seen: AtomicUsize,
    /// 429s for too many requests in flight (the random ones are not counted here).
    load_429: AtomicU64,
    by_status: Mutex<HashMap<u16, u64>>,
    by_content: Mutex<HashMap<String, u64>>,
}

struct Shared {
    behavior: Mutex<Behavior>,
    stats: Stats,
    rng: Mutex<SmallRng>,
}

/// A running server; dropping it does not stop it (it lives as long as its runtime).
#[derive(Debug, Clone, Copy)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Running {
    /// The base URL a client uses (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Binds `addr` (port 0: any free port) and serves in a task of the current tokio runtime.
pub async fn start(addr: SocketAddr, behavior: Behavior, seed: u64) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router(behavior, seed);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Running { addr })
}

/// The server's routes, over a fresh state.
pub fn router(behavior: Behavior, seed: u64) -> Router {
    let shared = Arc::new(Shared {
        behavior: Mutex::new(behavior),
        stats: Stats::default(),
        rng: Mutex::new(SmallRng::seed_from_u64(seed)),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/control/stats", get(stats))
        .route("/control/reset", post(reset))
        .route("/control/behavior", post(set_behavior))
        .with_state(shared)
}

fn error(status: u16, message: &str, retry_after: Option<f64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": "test_server_error", "code": status.as_u16()}});
    let mut resp = (status, Json(body)).into_response();
    if let Some(secs) = retry_after {
        if let Ok(v) = format!("{secs}").parse() {
            resp.headers_mut().insert("retry-after", v);
        }
    }
    resp
}

/// Decrements the in-flight count when the request ends (answered or dropped).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The checks every API request passes before its own work: counting, the API key, the
/// in-flight limit, random failures, latency. `Err` is the answer to send instead.
async fn admit(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    model: Option<&str>,
) -> Result<InFlight, Response> {
    let st = &shared.stats;
    st.requests.fetch_add(1, Ordering::SeqCst);
    let now = st.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    let guard = InFlight(shared.clone());
    st.max_inflight_seen.fetch_max(now, Ordering::SeqCst);
    let b = shared.behavior.lock().clone();
    if let Some(key) = &b.api_key {
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            return Err(error(401, "Incorrect API key provided.", None));
        }
    }
    if let Some(m) = model {
        if !b.models.is_empty() && !b.models.iter().any(|k| k == m) {
            return Err(error(
                404,
                &format!("The model `{m}` does not exist."),
                None,
            ));
        }
    }
    if b.max_inflight.is_some_and(|max| now > max) {
        st.load_429.fetch_add(1, Ordering::SeqCst);
        return Err(error(
            429,
            "Rate limit reached: too many requests in flight.",
            b.retry_after,
        ));
    }
    let (r429, r500) = {
        let mut rng = shared.rng.lock();
        (rng.random::<f64>(), rng.random::<f64>())
    };
    if r429 < b.random_429 {
        return Err(error(429, "Rate limit reached (random).", b.retry_after));
    }
    if r500 < b.random_500 {
        return Err(error(500, "The server had an error (random).", None));
    }
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    Ok(guard)
}

fn marker<'a>(content: &'a str, name: &str) -> Option<&'a str> {
    let start = content.find(&format!("[[{name}"))? + name.len() + 2;
    let rest = &content[start..];
    let end = rest.find("]]")?;
    Some(rest[..end].trim_start_matches(':'))
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn record(shared: &Shared, status: u16) {
    *shared.stats.by_status.lock().entry(status).or_default() += 1;
    if status == 200 {
        shared.stats.ok.fetch_add(1, Ordering::SeqCst);
    }
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let resp = chat_inner(&shared, &headers, &body).await;
    record(&shared, resp.status().as_u16());
    resp
}

async fn chat_inner(shared: &Arc<Shared>, headers: &HeaderMap, body: &[u8]) -> Response {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(400, &format!("invalid JSON body: {e}"), None),
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return error(400, "you must provide a model parameter", None);
    };
    let Some(messages) = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return error(400, "messages must be a non-empty list", None);
    };
    let guard = match admit(shared, headers, Some(model)).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| words(&content_text(&m["content"])))
        .sum();
    let last = content_text(&messages[messages.len() - 1]["content"]);
    let seen = {
        let mut by = shared.stats.by_content.lock();
        let n = by.entry(last.clone()).or_default();
        *n += 1;
        *n
    };
    if let Some(ms) = marker(&last, "sleep").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(ms) = marker(&last, "slow-first").and_then(|s| s.parse::<u64>().ok()) {
        if seen == 1 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    if let Some(n) = marker(&last, "flaky").and_then(|s| s.parse::<u64>().ok()) {
        if seen <= n {
            let retry_after = shared.behavior.lock().retry_after;
            return error(503, "temporarily unavailable (flaky)", retry_after);
        }
    }
    if let Some(code) = marker(&last, "status").and_then(|s| s.parse::<u16>().ok()) {
        return error(code, &format!("status {code} as asked"), None);
    }
    let system = messages
        .first()
        .filter(|m| m["role"] == "system")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default();
    // `[[hash]]`: text answers end with ` h<digit>`, a digit hashed from every message, so
    // that instructions and demos change the answer (as they change a real model's)
    let tag = match marker(&last, "hash") {
        Some(_) => {
            let all: String = messages
                .iter()
                .map(|m| content_text(&m["content"]))
                .collect();
            let h = all.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            format!(" h{}", h % 10)
        }
        None => String::new(),
    };
    let text = match marker(&last, "reply") {
        Some(t) => t.to_string(),
        None => fields_answer(&system, &last, &tag).unwrap_or_else(|| format!("echo: {last}{tag}")),
    };
    let completion_tokens = words(&text);
    let answer = json!({
        "id": format!("chatcmpl-{}", shared.stats.requests.load(Ordering::SeqCst)),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    });
    let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
    if let Some(size) = marker(&last, "huge").and_then(|s| s.parse::<usize>().ok()) {
        let pad = "x".repeat(size);
        let answer =
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": pad}}]});
        bytes = serde_json::to_vec(&answer).unwrap_or_default();
    }
    if marker(&last, "malformed").is_some() {
        bytes.truncate(bytes.len() / 2);
    }
    let drop_halfway = marker(&last, "drop").is_some();
    let slow = marker(&last, "slow-body").and_then(|s| s.parse::<u64>().ok());
    if !drop_halfway && slow.is_none() {
        drop(guard);
        return ([("content-type", "application/json")], bytes).into_response();
    }
    // A body in four pieces, `slow` ms apart; with `drop`, an I/O error after the second piece
    // makes the server abort the connection mid-body.
    let step = bytes.len().div_ceil(4).max(1);
    let pieces: Vec<bytes::Bytes> = bytes
        .chunks(step)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let delay = Duration::from_millis(slow.unwrap_or(0));
    let stream = futures_util::stream::unfold(
        (0usize, pieces, guard),
        move |(i, pieces, guard)| async move {
            if i >= pieces.len() {
                return None;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if drop_halfway && i == 2 {
                let err =
                    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped on purpose");
                return Some((Err(err), (usize::MAX, pieces, guard)));
            }
            let piece = pieces[i].clone();
            Some((Ok::<_, std::io::Error>(piece), (i + 1, pieces, guard)))
        },
    );
    let len = bytes.len();
    Response::builder()
        .header("content-type", "application/json")
        .header("content-length", len)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(500, "cannot build the response", None))
}

/// An answer in the structure a prompt asks for, when its system message lists output fields:
/// DSPy's chat format (`Your output fields are:` ... `[[ ## name ## ]]`) or dspex's (`Outputs:
/// name (type), ...`, `## name` headers). A text field holds `echo: ` and the last message
/// (brackets removed, so it cannot look like a field marker) and `tag`; other types a fixed
/// value.
fn fields_answer(system: &str, last: &str, tag: &str) -> Option<String> {
    let echo = format!("echo: {}{tag}", last.replace("[[", "").replace("]]", ""));
    if let Some(rest) = system.split("Your output fields are:").nth(1) {
        let names: Vec<&str> = rest
            .lines()
            .skip(1)
            .map_while(|l| {
                l.split('`')
                    .nth(1)
                    .filter(|_| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect();
        if names.is_empty() {
            return None;
        }
        let mut out: String = names
            .iter()
            .map(|n| format!("[[ ## {n} ## ]]\n{echo}\n\n"))
            .collect();
        out.push_str("[[ ## completed ## ]]");
        return Some(out);
    }
    let line = system.lines().find_map(|l| l.strip_prefix("Outputs: "))?;
    let parts: Vec<String> = line
        .split(", ")
        .filter_map(|f| {
            let (name, ty) = f.split_once(" (")?;
            let value = match ty.trim_end_matches(')') {
                "int" => "1".to_string(),
                "float" => "0.5".to_string(),
                "bool" => "true".to_string(),
                "list" => format!("- {}", echo.replace('\n', " ")),
                _ => echo.clone(),
            };
            Some(format!("## {name}\n{value}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// A deterministic 16-dimensional embedding: word hashes spread over the dimensions.
fn embed(text: &str) -> Vec<f64> {
    let mut v = [0.0f64; 16];
    for w in text.split_whitespace() {
        let h = w
            .to_lowercase()
            .bytes()
            .fold(1469598103934665603u64, |h, b| {
                (h ^ b as u64).wrapping_mul(1099511628211)
            });
        v[(h % 16) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let resp = async {
        let req: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(400, &format!("invalid JSON body: {e}"), None),
        };
        let model = req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let inputs: Vec<String> = match req.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect(),
            _ => return error(400, "input must be a string or a list of strings", None),
        };
        let _guard = match admit(&shared, &headers, Some(&model)).await {
            Ok(g) => g,
            Err(resp) => return resp,
        };
        let tokens: u64 = inputs.iter().map(|s| words(s)).sum();
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": embed(s)}))
            .collect();
        Json(json!({"object": "list", "data": data, "model": model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response()
    }
    .await;
    record(&shared, resp.status().as_u16());
    resp
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let models = shared.behavior.lock().models.clone();
    let data: Vec<Value> = models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": "dspex-testlm"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let st = &shared.stats;
    let by_status: HashMap<String, u64> = st
        .by_status
        .lock()
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Json(json!({
        "requests": st.requests.load(Ordering::SeqCst),
        "ok": st.ok.load(Ordering::SeqCst),
        "inflight": st.inflight.load(Ordering::SeqCst),
        "max_inflight_seen": st.max_inflight_seen.load(Ordering::SeqCst),
        "load_429": st.load_429.load(Ordering::SeqCst),
        "by_status": by_status,
        "distinct_contents": st.by_content.lock().len(),
    }))
}

async fn reset(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let st = &shared.stats;
    st.requests.store(0, Ordering::SeqCst);
    st.ok.store(0, Ordering::SeqCst);
    st.max_inflight_seen.store(0, Ordering::SeqCst);
    st.load_429.store(0, Ordering::SeqCst);
    st.by_status.lock().clear();
    st.by_content.lock().clear();
    Json(json!({"reset": true}))
}

async fn set_behavior(State(shared): State<Arc<Shared>>, Json(v): Json<Value>) -> Response {
    match Behavior::from_json(&v) {
        Ok(b) => {
            *shared.behavior.lock() = b;
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => error(400, &e, None),
    }
}
