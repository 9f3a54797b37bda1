//! The LM client: OpenAI-compatible chat completions and embeddings over HTTP, for OpenAI,
//! vLLM, llama.cpp's server, Ollama and LiteLLM proxies.
//!
//! Every [`Lm`] of one (model, base URL) in the process shares one [`Endpoint`]: an adaptive
//! concurrency cap (lowered when the server answers 429, raised back when it stops) and the
//! client-side requests- and tokens-per-minute limits. Each `Lm` has its own accounting
//! ([`Stats`], shared with its tagged copies) and hard [`Budget`]. Answers are cached by a
//! content-addressed key ([`cache`]) in memory and, with a cache path, in a SQLite file that
//! other processes share. Retries back off exponentially with jitter on connection errors,
//! timeouts, 408/409/429 and 5xx, honouring `Retry-After`; an optional hedge sends a second
//! identical request when the first is slow and takes whichever answers first.

pub mod cache;
mod limiter;
pub mod stats;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use rand::RngExt;
use serde_json::{json, Map, Value};

pub use cache::LmCache;
pub use limiter::AdaptiveLimiter;
pub use stats::{Budget, BudgetLimits, CallRecord, Price, Stats, Usage, Wire};

/// Errors of the LM client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LmError {
    /// A bad argument, refused before any request (Python: ValueError).
    #[error("{0}")]
    InvalidArgument(String),
    /// The server answered with an error status (after the retries a retryable one got).
    #[error("{method} {url} answered {status}{after}: {message}")]
    Http {
        /// `POST`.
        method: &'static str,
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's error message, and what to do about it.
        message: String,
        /// ` after N attempts` when it was retried.
        after: String,
    },
    /// No answer: connection refused or dropped, or the per-call timeout passed, on every attempt.
    #[error("{method} {url} failed after {attempts} attempt(s): {message}")]
    Transport {
        /// `POST`.
        method: &'static str,
        /// The endpoint.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// The answer was not the JSON the API defines, or too large.
    #[error("bad answer from {url}: {message}")]
    BadAnswer {
        /// The endpoint.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A budget is exhausted: no call was made.
    #[error("LM budget exceeded: {0}")]
    BudgetExceeded(String),
    /// The cache file could not be read or written.
    #[error("{0}")]
    Cache(String),
}

impl LmError {
    /// The HTTP status, for server answers.
    pub fn status(&self) -> Option<u16> {
        match self {
            LmError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How an LM is configured. `api_key` is never logged, cached or shown.
#[derive(Clone)]
pub struct LmConfig {
    /// The model name sent to the server.
    pub model: String,
    /// The API's base URL (ending in `/v1` for most servers).
    pub base_url: String,
    /// The API key (sent as a bearer token), if any.
    pub api_key: Option<String>,
    /// The environment variable the key came from (named in 401 errors).
    pub api_key_env: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Completion token limit.
    pub max_tokens: Option<u64>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Requests per minute (client side, shared by the endpoint).
    pub rpm: Option<u32>,
    /// Tokens per minute (client side, shared by the endpoint; estimated before the call).
    pub tpm: Option<u32>,
    /// Requests in flight at most (shared by the endpoint).
    pub max_concurrency: usize,
    /// Whether answers are cached.
    pub cache: bool,
    /// The SQLite file of the cache (memory only without).
    pub cache_path: Option<PathBuf>,
    /// Extra HTTP headers.
    pub headers: Vec<(String, String)>,
    /// Hard limits.
    pub budget: BudgetLimits,
    /// Prices by model.
    pub prices: HashMap<String, Price>,
    /// Send a second identical request after this long without an answer.
    pub hedge_after: Option<Duration>,
    /// The largest answer body accepted.
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for LmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmConfig")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl LmConfig {
    /// A configuration with the defaults (`base_url` must be given).
    pub fn new(model: &str, base_url: &str) -> LmConfig {
        LmConfig {
            model: model.to_string(),
            base_url: base_url.to_string(),
            api_key: None,
            api_key_env: "OPENAI_API_KEY".into(),
            temperature: 0.0,
            max_tokens: None,
            timeout: Duration::from_secs(60),
            max_retries: 5,
            rpm: None,
            tpm: None,
            max_concurrency: 64,
            cache: true,
            cache_path: None,
            headers: Vec::new(),
            budget: BudgetLimits::default(),
            prices: HashMap::new(),
            hedge_after: None,
            max_response_bytes: 32 << 20,
        }
    }

    /// Reads a configuration from JSON (the fields of `dspex.native.LM`: `model`, `base_url`,
    /// `api_key`, `api_key_env`, `temperature`, `max_tokens`, `timeout` and `hedge_after` in
    /// seconds, `max_retries`, `rpm`, `tpm`, `max_concurrency`, `cache`, `cache_path`,
    /// `headers` {name: value}, `max_calls`, `max_total_tokens`, `max_cost`, `prices`
    /// {model: {"input", "output"}} per million tokens, `max_response_bytes`), then validates it.
    /// Unknown fields and wrong types are errors naming the field.
    pub fn from_json(v: &Value) -> Result<LmConfig, LmError> {
        let bad = |m: String| LmError::InvalidArgument(m);
        let obj = v
            .as_object()
            .ok_or_else(|| bad("LM configuration must be a JSON object".into()))?;
        let model = obj
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("LM model must be a string".into()))?;
        let base_url = obj
            .get("base_url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("LM base_url must be a string".into()))?;
        let mut c = LmConfig::new(model, base_url);
        let uint = |k: &str, x: &Value| {
            x.as_u64()
                .ok_or_else(|| bad(format!("LM {k} must be an int >= 0, got {x}")))
        };
        let secs = |k: &str, x: &Value| {
            x.as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| bad(format!("LM {k} must be a number of seconds >= 0, got {x}")))
        };
        for (k, x) in obj {
            if x.is_null() {
                continue;
            }
            let s = || {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("LM {k} must be a string, got {x}")))
            };
            match k.as_str() {
                "model" | "base_url" => {}
                "api_key" => c.api_key = Some(s()?),
                "api_key_env" => c.api_key_env = s()?,
                "temperature" => {
                    c.temperature = x
                        .as_f64()
                        .ok_or_else(|| bad(format!("LM temperature must be a number, got {x}")))?
                }
                "max_tokens" => c.max_tokens = Some(uint(k, x)?),
                "timeout" => c.timeout = secs(k, x)?,
                "hedge_after" => c.hedge_after = Some(secs(k, x)?),
                "max_retries" => c.max_retries = uint(k, x)?.min(100) as u32,
                "rpm" => c.rpm = Some(uint(k, x)?.min(u32::MAX as u64) as u32),
                "tpm" => c.tpm = Some(uint(k, x)?.min(u32::MAX as u64) as u32),
                "max_concurrency" => c.max_concurrency = uint(k, x)?.min(1 << 20) as usize,
                "cache" => {
                    c.cache = x
                        .as_bool()
                        .ok_or_else(|| bad(format!("LM cache must be a bool, got {x}")))?
                }
                "cache_path" => c.cache_path = Some(PathBuf::from(s()?)),
                "max_calls" | "max_total_tokens" | "max_cost" => {}
                "max_response_bytes" => {
                    c.max_response_bytes = uint(k, x)?.min(usize::MAX as u64) as usize
                }
                "headers" => {
                    let h = x.as_object().ok_or_else(|| {
                        bad(format!("LM headers must be a dict of str to str, got {x}"))
                    })?;
                    for (name, value) in h {
                        let value = value
                            .as_str()
                            .ok_or_else(|| bad(format!("LM headers[{name:?}] must be a string")))?;
                        c.headers.push((name.clone(), value.to_string()));
                    }
                }
                "prices" => {
                    let p = x.as_object().ok_or_else(|| bad(format!("LM prices must be a dict of model to {{\"input\", \"output\"}}, got {x}")))?;
                    for (m, price) in p {
                        let f = |side: &str| {
                            price.get(side).and_then(Value::as_f64).ok_or_else(|| {
                                bad(format!("LM prices[{m:?}] must have numbers \"input\" and \"output\" (per million tokens), got {price}"))
                            })
                        };
                        c.prices.insert(
                            m.clone(),
                            Price {
                                input: f("input")?,
                                output: f("output")?,
                            },
                        );
                    }
                }
                other => return Err(bad(format!("LM: unknown setting {other:?}"))),
            }
        }
        c.budget = BudgetLimits::from_json(v, "LM").map_err(bad)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks every field; the error names the field and the value.
    pub fn validate(&self) -> Result<(), LmError> {
        let bad = |m: String| Err(LmError::InvalidArgument(m));
        if self.model.trim().is_empty() {
            return bad("LM model must be a non-empty string".into());
        }
        match reqwest::Url::parse(&self.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => {
                return bad(format!(
                    "LM base_url must be http:// or https://, got scheme {:?} in {:?}",
                    u.scheme(),
                    self.base_url
                ))
            }
            Err(e) => return bad(format!("LM base_url {:?} is not a URL: {e}", self.base_url)),
        }
        check_temperature(self.temperature)?;
        if let Some(m) = self.max_tokens {
            check_max_tokens(m)?;
        }
        if self.timeout.is_zero() {
            return bad("LM timeout must be > 0 seconds".into());
        }
        if self.max_concurrency == 0 {
            return bad("LM max_concurrency must be >= 1, got 0".into());
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            return bad("LM rpm and tpm must be >= 1 (None: no limit)".into());
        }
        if let Some(c) = self.budget.max_cost.filter(|c| !c.is_finite() || *c < 0.0) {
            return bad(format!("LM max_cost must be a finite number >= 0, got {c}"));
        }
        if self.hedge_after.is_some_and(|h| h.is_zero()) {
            return bad("LM hedge_after must be > 0 seconds".into());
        }
        for (model, p) in &self.prices {
            if !(p.input.is_finite() && p.output.is_finite() && p.input >= 0.0 && p.output >= 0.0) {
                return bad(format!(
                    "LM prices[{model:?}] must be finite numbers >= 0, got {p:?}"
                ));
            }
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(format!("LM headers: {name:?} is not a valid header name"));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return bad(format!(
                    "LM headers[{name:?}]: the value is not a valid header value"
                ));
            }
        }
        Ok(())
    }
}

fn check_temperature(t: f64) -> Result<(), LmError> {
    if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
        return Err(LmError::InvalidArgument(format!(
            "LM temperature must be between 0 and 2, got {t}"
        )));
    }
    Ok(())
}

fn check_max_tokens(m: u64) -> Result<(), LmError> {
    if m == 0 {
        return Err(LmError::InvalidArgument(
            "LM max_tokens must be >= 1 (None: the server's default), got 0".into(),
        ));
    }
    Ok(())
}

/// The state one (model, base URL) shares in the process.
pub struct Endpoint {
    limiter: Arc<AdaptiveLimiter>,
    rpm: Mutex<Option<(u32, Arc<DefaultDirectRateLimiter>)>>,
    tpm: Mutex<Option<(u32, Arc<DefaultDirectRateLimiter>)>>,
}

type EndpointKey = (String, String);
static ENDPOINTS: Mutex<Option<HashMap<EndpointKey, Weak<Endpoint>>>> = Mutex::new(None);

fn per_minute(n: u32) -> Arc<DefaultDirectRateLimiter> {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(Quota::per_minute(n)))
}

/// Keeps the stricter of an existing rate limit and a new one.
fn tighten_rate(slot: &Mutex<Option<(u32, Arc<DefaultDirectRateLimiter>)>>, new: Option<u32>) {
    let Some(n) = new else { return };
    let mut s = slot.lock();
    if s.as_ref().is_none_or(|(old, _)| n < *old) {
        *s = Some((n, per_minute(n)));
    }
}

impl Endpoint {
    /// The endpoint of `config`'s model and base URL, shared with every other LM of the process
    /// that uses them; its limits become the stricter of the existing ones and `config`'s.
    pub fn shared(config: &LmConfig) -> Arc<Endpoint> {
        let key = (
            config.model.clone(),
            config.base_url.trim_end_matches('/').to_string(),
        );
        let mut map = ENDPOINTS.lock();
        let map = map.get_or_insert_with(HashMap::new);
        map.retain(|_, w| w.strong_count() > 0);
        let ep = match map.get(&key).and_then(Weak::upgrade) {
            Some(ep) => {
                ep.limiter.tighten(config.max_concurrency);
                ep
            }
            None => {
                let ep = Arc::new(Endpoint {
                    limiter: AdaptiveLimiter::new(config.max_concurrency),
                    rpm: Mutex::new(None),
                    tpm: Mutex::new(None),
                });
                map.insert(key, Arc::downgrade(&ep));
                ep
            }
        };
        tighten_rate(&ep.rpm, config.rpm);
        tighten_rate(&ep.tpm, config.tpm);
        ep
    }

    /// The concurrency limit now and the requests in flight.
    pub fn concurrency(&self) -> (usize, usize) {
        self.limiter.snapshot()
    }

    async fn admit(&self, est_tokens: u32) -> limiter::Permit {
        let permit = self.limiter.acquire().await;
        let rpm = self.rpm.lock().as_ref().map(|(_, l)| l.clone());
        if let Some(l) = rpm {
            l.until_ready().await;
        }
        let tpm = self.tpm.lock().clone();
        if let Some((cap, l)) = tpm {
            let n = NonZeroU32::new(est_tokens.clamp(1, cap)).unwrap_or(NonZeroU32::MIN);
            let _ = l.until_n_ready(n).await; // n <= the burst size, so never InsufficientCapacity
        }
        permit
    }
}

fn http_client() -> Result<reqwest::Client, LmError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // reqwest's rustls backend takes the process-wide provider: ring, as tonic's
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
                .user_agent(concat!("dspex/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .clone()
        .map_err(LmError::InvalidArgument)
}

/// An answer of the chat completions API.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The first choice's message content.
    pub text: String,
    /// Every choice's content (more than one with `n` > 1).
    pub choices: Vec<String>,
    /// Why the first choice stopped (`stop`, `length`, ...).
    pub finish_reason: Option<String>,
    /// The server's token counts.
    pub usage: Usage,
    /// Answered from the cache (no request made).
    pub cached: bool,
    /// Seconds from the call to the answer.
    pub latency: f64,
    /// The model that answered (as the server names it).
    pub model: String,
    /// The estimated price of the answer's tokens from the price table (a cache hit has the
    /// price of the call it repeats, though it spent nothing); None when the model has no price.
    pub cost: Option<f64>,
}

/// An answer of the embeddings API.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f64>>,
    /// The server's token counts.
    pub usage: Usage,
    /// Answered from the cache.
    pub cached: bool,
}

/// One chat call: messages and per-call overrides of the sampling parameters.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// `[{"role": ..., "content": ...}, ...]`.
    pub messages: Value,
    /// Sent in the request body over the LM's own (temperature, max_tokens, top_p, stop, seed,
    /// n, response_format, ...).
    pub overrides: Map<String, Value>,
    /// Keeps deliberate repeats of one request apart in the cache.
    pub rollout_id: Option<String>,
}

impl ChatRequest {
    /// A request of one user message.
    pub fn prompt(text: &str) -> ChatRequest {
        ChatRequest {
            messages: json!([{"role": "user", "content": text}]),
            ..Default::default()
        }
    }
}

/// Fields of a request that name the LM itself and cannot be overridden per call.
const FIXED: [&str; 4] = ["model", "messages", "api_key", "base_url"];

/// An LM: a configuration, its endpoint, cache, accounting and budget. Cheap to clone; clones
/// share everything (`with_tag` clones with a tag for the accounting).
#[derive(Clone)]
pub struct Lm {
    inner: Arc<LmInner>,
    tag: Option<Arc<str>>,
    /// A budget of a wider scope (a study's) that this copy's calls are charged to as well.
    scope: Option<Arc<Budget>>,
}

struct LmInner {
    config: LmConfig,
    endpoint: Arc<Endpoint>,
    cache: Option<Arc<LmCache>>,
    stats: Stats,
    budget: Budget,
    client: reqwest::Client,
    chat_url: String,
    embed_url: String,
}

impl std::fmt::Debug for Lm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lm")
            .field("config", &self.inner.config)
            .field("tag", &self.tag)
            .field("scope", &self.scope)
            .finish()
    }
}

/// A call reserved from the budgets: given back when the call is dropped (its study stopped,
/// say) before its first request was sent, so the budgets count the calls that were made.
struct Reservation<'a> {
    lm: &'a Lm,
    sent: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.lm.inner.budget.release();
            if let Some(scope) = &self.lm.scope {
                scope.release();
            }
        }
    }
}

/// A failed attempt: whether to retry, and after how long the server asked for.
struct Failure {
    error: LmError,
    retry: bool,
    retry_after: Option<Duration>,
    throttled: bool,
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(600.0)))
}

/// Exponential backoff with jitter: 0.25 s, 0.5 s, 1 s ... capped at 20 s, each scaled by a
/// random factor in [0.5, 1).
fn backoff(attempt: u32) -> Duration {
    let base = (0.25 * 2f64.powi(attempt.saturating_sub(1).min(16) as i32)).min(20.0);
    Duration::from_secs_f64(base * (0.5 + 0.5 * rand::rng().random::<f64>()))
}

impl Lm {
    /// Validates `config` and builds the LM (opening its cache file when it has one).
    pub async fn new(config: LmConfig) -> Result<Lm, LmError> {
        config.validate()?;
        let cache = if config.cache {
            Some(LmCache::shared(config.cache_path.as_deref()).await?)
        } else {
            None
        };
        let base = config.base_url.trim_end_matches('/').to_string();
        Ok(Lm {
            inner: Arc::new(LmInner {
                endpoint: Endpoint::shared(&config),
                cache,
                stats: Stats::default(),
                budget: Budget::new(config.budget),
                client: http_client()?,
                chat_url: format!("{base}/chat/completions"),
                embed_url: format!("{base}/embeddings"),
                config,
            }),
            tag: None,
            scope: None,
        })
    }

    /// A copy whose calls are accounted under `tag` as well (same limits, cache and budget).
    pub fn with_tag(&self, tag: &str) -> Lm {
        Lm {
            tag: Some(Arc::from(tag)),
            ..self.clone()
        }
    }

    /// A copy whose calls are charged to `scope` as well as to this LM's own budget: a call
    /// starts only when both allow it (a study's budget over every LM it uses).
    pub fn with_budget(&self, scope: Arc<Budget>) -> Lm {
        Lm {
            scope: Some(scope),
            ..self.clone()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LmConfig {
        &self.inner.config
    }

    /// The accounting as JSON (totals, `by_tag`, the budget spent, the endpoint's concurrency).
    pub fn stats(&self) -> Value {
        let mut v = self.inner.stats.to_json();
        let (calls, tokens, cost) = self.inner.budget.spent();
        let b = &self.inner.config.budget;
        v["budget"] = json!({"max_calls": b.max_calls, "max_total_tokens": b.max_total_tokens, "max_cost": b.max_cost,
                             "calls": calls, "tokens": tokens, "cost": cost});
        let (limit, in_flight) = self.inner.endpoint.concurrency();
        v["concurrency"] = json!({"limit": limit, "in_flight": in_flight, "max": self.inner.config.max_concurrency});
        v["priced"] = json!(self
            .inner
            .config
            .prices
            .contains_key(&self.inner.config.model));
        v
    }

    /// The request body and cache key of a chat call (validating the messages and overrides).
    fn chat_body(&self, req: &ChatRequest) -> Result<Value, LmError> {
        let msgs = req
            .messages
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                LmError::InvalidArgument(
                    "LM messages must be a non-empty list of {\"role\", \"content\"} dicts".into(),
                )
            })?;
        for (i, m) in msgs.iter().enumerate() {
            let role_ok = m.get("role").and_then(Value::as_str).is_some();
            let content_ok = matches!(m.get("content"), Some(Value::String(_) | Value::Array(_)));
            if !(role_ok && content_ok) {
                return Err(LmError::InvalidArgument(format!(
                    "LM messages[{i}] must be a dict with a str \"role\" and a str (or list of parts) \"content\", got {m}"
                )));
            }
        }
        let c = &self.inner.config;
        let mut body = Map::new();
        body.insert("model".into(), json!(c.model));
        body.insert("messages".into(), req.messages.clone());
        body.insert("temperature".into(), json!(c.temperature));
        if let Some(m) = c.max_tokens {
            body.insert("max_tokens".into(), json!(m));
        }
        for (k, v) in &req.overrides {
            if FIXED.contains(&k.as_str()) {
                return Err(LmError::InvalidArgument(format!(
                    "LM call: {k:?} cannot be set per call (make another LM)"
                )));
            }
            match k.as_str() {
                "temperature" => check_temperature(v.as_f64().ok_or_else(|| {
                    LmError::InvalidArgument(format!("LM temperature must be a number, got {v}"))
                })?)?,
                "max_tokens" => match v {
                    Value::Null => {}
                    _ => check_max_tokens(v.as_u64().ok_or_else(|| {
                        LmError::InvalidArgument(format!(
                            "LM max_tokens must be a positive int, got {v}"
                        ))
                    })?)?,
                },
                _ => {}
            }
            if v.is_null() {
                body.remove(k);
            } else {
                body.insert(k.clone(), v.clone());
            }
        }
        Ok(Value::Object(body))
    }

    /// Calls the chat completions API (or answers from the cache).
    pub async fn chat(&self, req: &ChatRequest) -> Result<Completion, LmError> {
        let start = Instant::now();
        let body = self.chat_body(req)?;
        let (value, cached, wire) = self
            .cached_call("chat", &body, req.rollout_id.as_deref())
            .await
            .map_err(|(e, wire)| {
                self.record(false, true, wire, Usage::default(), start);
                e
            })?;
        let mut c = parse_completion(&value, &self.inner.chat_url)?;
        c.cached = cached;
        c.latency = start.elapsed().as_secs_f64();
        let usage = if cached { Usage::default() } else { c.usage };
        self.record(cached, false, wire, usage, start);
        c.cost = self.price(c.usage);
        Ok(c)
    }

    /// Calls the embeddings API for `texts` (or answers from the cache).
    pub async fn embed(&self, texts: &[String]) -> Result<Embeddings, LmError> {
        let start = Instant::now();
        if texts.is_empty() {
            return Err(LmError::InvalidArgument(
                "LM.embed needs at least one text".into(),
            ));
        }
        let body = json!({"model": self.inner.config.model, "input": texts});
        let (value, cached, wire) =
            self.cached_call("embed", &body, None)
                .await
                .map_err(|(e, wire)| {
                    self.record(false, true, wire, Usage::default(), start);
                    e
                })?;
        let mut e = parse_embeddings(&value, texts.len(), &self.inner.embed_url)?;
        e.cached = cached;
        self.record(
            cached,
            false,
            wire,
            if cached { Usage::default() } else { e.usage },
            start,
        );
        Ok(e)
    }

    /// Many chat calls, answers in order. Those already cached are looked up together (memory,
    /// then one disk query per few thousand) and answered without a task each; the rest run
    /// concurrently as [`Lm::chat`] does.
    pub async fn chat_many(&self, reqs: &[ChatRequest]) -> Vec<Result<Completion, LmError>> {
        let start = Instant::now();
        let mut out: Vec<Option<Result<Completion, LmError>>> = Vec::with_capacity(reqs.len());
        out.resize_with(reqs.len(), || None);
        if let Some(cache) = &self.inner.cache {
            // a request that is not valid has no key: `chat` reports its error below
            let keyed: Vec<(usize, String)> = reqs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let body = self.chat_body(r).ok()?;
                    Some((i, cache::key("chat", &body, r.rollout_id.as_deref())))
                })
                .collect();
            let keys: Vec<String> = keyed.iter().map(|(_, k)| k.clone()).collect();
            // an unreadable cache file: every call then asks it (and reports it) itself
            if let Ok(found) = cache.get_many(&keys).await {
                for ((i, _), text) in keyed.iter().zip(found) {
                    if let Some(text) = text {
                        out[*i] = Some(self.cached_completion(&text, start));
                    }
                }
            }
        }
        let rest = reqs
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|(r, _)| self.chat(r));
        let mut rest = futures_util::future::join_all(rest).await.into_iter();
        out.into_iter()
            .map(|o| {
                o.or_else(|| rest.next())
                    .unwrap_or_else(|| Err(LmError::Cache("an LM batch lost an answer".into())))
            })
            .collect()
    }

    /// The completion of a cached answer (accounted as a cache hit).
    fn cached_completion(&self, text: &str, start: Instant) -> Result<Completion, LmError> {
        let mut c = completion_of_text(text, &self.inner.chat_url)?;
        c.cached = true;
        c.latency = start.elapsed().as_secs_f64();
        self.record(true, false, Wire::default(), Usage::default(), start);
        c.cost = self.price(c.usage);
        Ok(c)
    }

    /// Reserves one call from this LM's budget and from its scope's.
    fn reserve(&self) -> Result<Reservation<'_>, LmError> {
        self.inner.budget.reserve()?;
        if let Some(scope) = &self.scope {
            if let Err(e) = scope.reserve() {
                self.inner.budget.release();
                return Err(e);
            }
        }
        Ok(Reservation {
            lm: self,
            sent: false,
        })
    }

    /// The estimated price of `usage` (None when the model has no price).
    fn price(&self, usage: Usage) -> Option<f64> {
        let p = self.inner.config.prices.get(&self.inner.config.model)?;
        Some(
            (usage.prompt_tokens as f64 * p.input + usage.completion_tokens as f64 * p.output)
                / 1e6,
        )
    }

    /// Accounts one call (and spends its usage from the budgets).
    fn record(&self, cached: bool, failed: bool, wire: Wire, usage: Usage, start: Instant) {
        let cost = if cached || failed {
            Some(0.0)
        } else {
            self.price(usage)
        };
        if !cached && !failed {
            self.inner.budget.spend(usage, cost);
            if let Some(scope) = &self.scope {
                scope.spend(usage, cost);
            }
        }
        let r = CallRecord {
            cached,
            failed,
            wire,
            usage,
            cost,
            latency: start.elapsed().as_secs_f64(),
        };
        self.inner.stats.record(self.tag.as_deref(), &r);
    }

    /// The answer to `body`: from the cache, or from the server (then cached). Concurrent
    /// identical requests make one HTTP call.
    async fn cached_call(
        &self,
        kind: &str,
        body: &Value,
        rollout: Option<&str>,
    ) -> Result<(Value, bool, Wire), (LmError, Wire)> {
        let Some(cache) = &self.inner.cache else {
            return self
                .call_server(kind, body)
                .await
                .map(|(v, w)| (v, false, w));
        };
        let key = cache::key(kind, body, rollout);
        let wire_cell = Mutex::new(None::<Wire>);
        let got = cache
            .memory()
            .try_get_with(key.clone(), async {
                if let Some(v) = cache
                    .disk_get(&key)
                    .await
                    .map_err(|e| (e, Wire::default()))?
                {
                    return Ok(v);
                }
                let (v, wire) = self.call_server(kind, body).await?;
                *wire_cell.lock() = Some(wire);
                let text = v.to_string();
                if let Err(e) = cache
                    .disk_put(&key, kind, &self.inner.config.model, &text)
                    .await
                {
                    tracing::warn!("{e}: the answer is cached in memory only");
                }
                Ok::<_, (LmError, Wire)>(Arc::<str>::from(text))
            })
            .await;
        let wire = wire_cell.lock().take();
        match got {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    (
                        LmError::Cache(format!("LM cache entry {key} is not JSON: {e}")),
                        Wire::default(),
                    )
                })?;
                Ok((v, wire.is_none(), wire.unwrap_or_default()))
            }
            // this call made the request that failed: its wire counts are its own; a call that
            // waited on another's failed request made none
            Err(e) => Err((
                e.0.clone(),
                if wire.is_some() { e.1 } else { Wire::default() },
            )),
        }
    }

    /// Sends `body` with the budget, limits, retries and hedge.
    async fn call_server(
        &self,
        kind: &str,
        body: &Value,
    ) -> Result<(Value, Wire), (LmError, Wire)> {
        let mut wire = Wire::default();
        let mut reserved = self.reserve().map_err(|e| (e, wire))?;
        let c = &self.inner.config;
        let url = if kind == "embed" {
            &self.inner.embed_url
        } else {
            &self.inner.chat_url
        };
        let est_tokens = (body.to_string().len() / 4) as u64 + c.max_tokens.unwrap_or(256);
        let span = tracing::debug_span!("lm_call", model = %c.model, kind);
        let _enter = span.enter();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let permit = self
                .inner
                .endpoint
                .admit(est_tokens.min(u32::MAX as u64) as u32)
                .await;
            reserved.sent = true;
            let result = self.attempt_hedged(url, body, &mut wire).await;
            drop(permit);
            let failure = match result {
                Ok(v) => {
                    self.inner.endpoint.limiter.record(false);
                    return Ok((v, wire));
                }
                Err(f) => f,
            };
            self.inner.endpoint.limiter.record(failure.throttled);
            if failure.throttled {
                wire.throttled += 1;
            }
            if !failure.retry || attempt > c.max_retries {
                let error = match failure.error {
                    LmError::Http {
                        method,
                        url,
                        status,
                        message,
                        ..
                    } if attempt > 1 => LmError::Http {
                        method,
                        url,
                        status,
                        message,
                        after: format!(" after {attempt} attempts"),
                    },
                    LmError::Transport {
                        method,
                        url,
                        message,
                        ..
                    } => LmError::Transport {
                        method,
                        url,
                        attempts: attempt,
                        message,
                    },
                    e => e,
                };
                tracing::debug!(attempt, "LM call failed: {error}");
                return Err((error, wire));
            }
            wire.retries += 1;
            let wait = failure.retry_after.unwrap_or_else(|| backoff(attempt));
            tracing::debug!(
                attempt,
                wait_s = wait.as_secs_f64(),
                "LM call retried: {}",
                failure.error
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt; with `hedge_after`, a second identical request when the first has not
    /// answered by then, the first success winning (the other is cancelled).
    async fn attempt_hedged(
        &self,
        url: &str,
        body: &Value,
        wire: &mut Wire,
    ) -> Result<Value, Failure> {
        wire.requests += 1;
        let Some(after) = self.inner.config.hedge_after else {
            return self.attempt(url, body).await;
        };
        let first = self.attempt(url, body);
        tokio::pin!(first);
        tokio::select! {
            r = &mut first => return r,
            _ = tokio::time::sleep(after) => {}
        }
        wire.requests += 1;
        wire.hedges += 1;
        let second = self.attempt(url, body);
        tokio::pin!(second);
        tokio::select! {
            r = &mut first => match r { Ok(v) => Ok(v), Err(_) => second.await },
            r = &mut second => match r { Ok(v) => Ok(v), Err(_) => first.await },
        }
    }

    async fn attempt(&self, url: &str, body: &Value) -> Result<Value, Failure> {
        let c = &self.inner.config;
        let transport = |message: String| Failure {
            error: LmError::Transport {
                method: "POST",
                url: url.to_string(),
                attempts: 1,
                message,
            },
            retry: true,
            retry_after: None,
            throttled: false,
        };
        let mut rb = self.inner.client.post(url).timeout(c.timeout).json(body);
        if let Some(key) = &c.api_key {
            rb = rb.bearer_auth(key);
        }
        for (k, v) in &c.headers {
            rb = rb.header(k, v);
        }
        let mut resp = match rb.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(transport(format!(
                    "no answer within the timeout of {:?}",
                    c.timeout
                )))
            }
            Err(e) => return Err(transport(describe(&e))),
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers());
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > c.max_response_bytes {
                        return Err(Failure {
                            error: LmError::BadAnswer {
                                url: url.to_string(),
                                message: format!(
                                    "the answer is larger than the limit of {} bytes",
                                    c.max_response_bytes
                                ),
                            },
                            retry: false,
                            retry_after: None,
                            throttled: false,
                        });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(transport(format!(
                        "the answer did not arrive within the timeout of {:?}",
                        c.timeout
                    )))
                }
                Err(e) => {
                    return Err(transport(format!(
                        "the connection broke while reading the answer: {}",
                        describe(&e)
                    )))
                }
            }
        }
        if !(200..300).contains(&status) {
            let detail = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
                });
            let message = match status {
                401 | 403 => format!(
                    "{detail} (the server refused the API key: pass api_key= or set the {} environment variable)",
                    c.api_key_env
                ),
                404 => format!("{detail} (is the model name {:?} and the base URL right?)", c.model),
                _ => detail,
            };
            let retry = matches!(status, 408 | 409 | 429) || status >= 500;
            return Err(Failure {
                error: LmError::Http {
                    method: "POST",
                    url: url.to_string(),
                    status,
                    message,
                    after: String::new(),
                },
                retry,
                retry_after: after,
                throttled: status == 429,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Failure {
            error: LmError::BadAnswer {
                url: url.to_string(),
                message: format!(
                    "the body is not JSON ({e}); it starts with {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
                ),
            },
            retry: false,
            retry_after: None,
            throttled: false,
        })
    }
}

/// A transport error with its causes ("error sending request: ... connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn usage_of(v: &Value) -> Usage {
    let n = |k: &str| {
        v.get("usage")
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
    }
}

/// The usual shape of a chat answer, read straight from its text (a cache hit builds no
/// `Value`); an answer of any other shape is read by [`parse_completion`], with the same result
/// or its error.
#[derive(serde::Deserialize)]
struct ChatAnswer {
    choices: Vec<ChatChoice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(serde::Deserialize)]
struct ChatChoice {
    message: ChatMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(serde::Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(serde::Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// The completion in the text of a chat answer (a cached one).
fn completion_of_text(text: &str, url: &str) -> Result<Completion, LmError> {
    match serde_json::from_str::<ChatAnswer>(text) {
        Ok(a) if !a.choices.is_empty() => {
            let finish_reason = a.choices[0].finish_reason.clone();
            let choices: Vec<String> = a
                .choices
                .into_iter()
                .map(|c| c.message.content.unwrap_or_default())
                .collect();
            let usage = a.usage.unwrap_or(ChatUsage {
                prompt_tokens: None,
                completion_tokens: None,
            });
            Ok(Completion {
                text: choices[0].clone(),
                choices,
                finish_reason,
                usage: Usage {
                    prompt_tokens: usage.prompt_tokens.unwrap_or(0),
                    completion_tokens: usage.completion_tokens.unwrap_or(0),
                },
                cached: false,
                latency: 0.0,
                model: a.model.unwrap_or_default(),
                cost: None,
            })
        }
        _ => {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| LmError::Cache(format!("an LM cache entry is not JSON: {e}")))?;
            parse_completion(&v, url)
        }
    }
}

fn parse_completion(v: &Value, url: &str) -> Result<Completion, LmError> {
    let bad = |m: &str| LmError::BadAnswer {
        url: url.to_string(),
        message: m.to_string(),
    };
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("no \"choices\" in the answer"))?;
    let texts: Vec<String> = choices
        .iter()
        .map(|ch| match ch.pointer("/message/content") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Null) | None if ch.pointer("/message").is_some() => Ok(String::new()),
            _ => Err(bad("a choice has no \"message\" with a \"content\"")),
        })
        .collect::<Result<_, _>>()?;
    Ok(Completion {
        text: texts[0].clone(),
        finish_reason: choices[0]
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        choices: texts,
        usage: usage_of(v),
        cached: false,
        latency: 0.0,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        cost: None,
    })
}

fn parse_embeddings(v: &Value, n: usize, url: &str) -> Result<Embeddings, LmError> {
    let bad = |m: String| LmError::BadAnswer {
        url: url.to_string(),
        message: m,
    };
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"data\" list in the answer".into()))?;
    if data.len() != n {
        return Err(bad(format!("{} embeddings for {n} inputs", data.len())));
    }
    let mut vectors = vec![Vec::new(); n];
    for (i, d) in data.iter().enumerate() {
        let idx = d
            .get("index")
            .and_then(Value::as_u64)
            .map_or(i, |x| x as usize);
        let emb = d
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("data[{i}] has no \"embedding\" list")))?;
        let vec: Option<Vec<f64>> = emb.iter().map(Value::as_f64).collect();
        let slot = vectors
            .get_mut(idx)
            .ok_or_else(|| bad(format!("data[{i}] has index {idx} out of range")))?;
        *slot = vec.ok_or_else(|| bad(format!("data[{i}].embedding has a non-number")))?;
    }
    Ok(Embeddings {
        vectors,
        usage: usage_of(v),
        cached: false,
    })
}

#[cfg(test)]
mod tests;
