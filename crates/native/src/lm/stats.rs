//! Accounting (calls, tokens, cache hits, retries, latency, estimated cost; per LM and per tag)
//! and hard budgets.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::LmError;

/// Price of a model in currency units per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

/// Token counts of one answer as the server reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the completion.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// What happened on the wire for one logical call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wire {
    /// HTTP requests sent (first attempt, retries and hedges).
    pub requests: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Hedged second requests.
    pub hedges: u64,
    /// 429 answers.
    pub throttled: u64,
}

#[derive(Debug)]
struct Counters {
    calls: u64,
    cache_hits: u64,
    errors: u64,
    wire: Wire,
    usage: Usage,
    cost: f64,
    unpriced_calls: u64,
    latency_us: Histogram<u64>,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            calls: 0,
            cache_hits: 0,
            errors: 0,
            wire: Wire::default(),
            usage: Usage::default(),
            cost: 0.0,
            unpriced_calls: 0,
            // 1 us .. 1 h at 2 significant digits; new() only fails on bad bounds
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .unwrap_or_else(|_| Histogram::new(2).expect("2 sigfigs is valid")),
        }
    }

    fn to_json(&self) -> Value {
        let h = &self.latency_us;
        let secs = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e6
            }
        };
        json!({
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "errors": self.errors,
            "requests": self.wire.requests,
            "retries": self.wire.retries,
            "hedges": self.wire.hedges,
            "throttled": self.wire.throttled,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "total_tokens": self.usage.total(),
            "cost": self.cost,
            "unpriced_calls": self.unpriced_calls,
            "latency": {"p50": secs(0.5), "p90": secs(0.9), "p99": secs(0.99), "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1e6 },
                        "mean": if h.is_empty() { 0.0 } else { h.mean() / 1e6 }},
        })
    }
}

/// How one logical call ended, for the accounting.
#[derive(Debug, Clone, Copy)]
pub struct CallRecord {
    /// Answered from the cache.
    pub cached: bool,
    /// Failed.
    pub failed: bool,
    /// The wire counters.
    pub wire: Wire,
    /// Tokens (zero for a cache hit or a failure).
    pub usage: Usage,
    /// Estimated cost, `None` when the model has no price.
    pub cost: Option<f64>,
    /// Seconds from the call to its answer.
    pub latency: f64,
}

/// The accounting of one LM (shared by its tagged copies).
#[derive(Debug)]
pub struct Stats {
    inner: Mutex<(Counters, HashMap<String, Counters>)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            inner: Mutex::new((Counters::new(), HashMap::new())),
        }
    }
}

impl Stats {
    /// Adds one call under `tag` (and the total).
    pub fn record(&self, tag: Option<&str>, r: &CallRecord) {
        let mut g = self.inner.lock();
        let (total, tags) = &mut *g;
        let apply = |c: &mut Counters| {
            c.calls += 1;
            c.cache_hits += r.cached as u64;
            c.errors += r.failed as u64;
            c.wire.requests += r.wire.requests;
            c.wire.retries += r.wire.retries;
            c.wire.hedges += r.wire.hedges;
            c.wire.throttled += r.wire.throttled;
            c.usage.prompt_tokens += r.usage.prompt_tokens;
            c.usage.completion_tokens += r.usage.completion_tokens;
            match r.cost {
                Some(x) => c.cost += x,
                None if !r.cached && !r.failed => c.unpriced_calls += 1,
                None => {}
            }
            let _ = c
                .latency_us
                .record(((r.latency * 1e6) as u64).clamp(1, 3_600_000_000));
        };
        apply(total);
        if let Some(t) = tag {
            apply(tags.entry(t.to_string()).or_insert_with(Counters::new));
        }
    }

    /// Everything as JSON: the totals, and `by_tag`.
    pub fn to_json(&self) -> Value {
        let g = self.inner.lock();
        let mut v = g.0.to_json();
        let tags: BTreeMap<&String, Value> = g.1.iter().map(|(k, c)| (k, c.to_json())).collect();
        v["by_tag"] = json!(tags);
        v
    }
}

/// Hard limits of an LM; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetLimits {
    /// Logical calls that reach the server (cache hits are free; retries and hedges do not count).
    pub max_calls: Option<u64>,
    /// Prompt plus completion tokens.
    pub max_total_tokens: Option<u64>,
    /// Estimated cost (from the price table).
    pub max_cost: Option<f64>,
}

impl BudgetLimits {
    /// The limits among the keys of `v` (`max_calls`, `max_total_tokens`, `max_cost`; others
    /// are left alone), checked; `what` names their owner in an error.
    pub fn from_json(v: &Value, what: &str) -> Result<BudgetLimits, String> {
        let field = |k: &str| v.get(k).filter(|x| !x.is_null());
        let count = |k: &str| {
            field(k)
                .map(|x| {
                    x.as_u64()
                        .ok_or_else(|| format!("{what} {k} must be an int >= 0, got {x}"))
                })
                .transpose()
        };
        Ok(BudgetLimits {
            max_calls: count("max_calls")?,
            max_total_tokens: count("max_total_tokens")?,
            max_cost: field("max_cost")
                .map(|x| {
                    x.as_f64()
                        .filter(|c| c.is_finite() && *c >= 0.0)
                        .ok_or_else(|| {
                            format!("{what} max_cost must be a finite number >= 0, got {x}")
                        })
                })
                .transpose()?,
        })
    }
}

#[derive(Debug, Default)]
struct Spent {
    calls: u64,
    tokens: u64,
    cost: f64,
}

/// A budget: calls are reserved before they start, tokens and cost are added when answers
/// arrive (so calls already in flight when a token or cost budget runs out may overshoot it by
/// their own usage; no call starts after it).
#[derive(Debug, Default)]
pub struct Budget {
    limits: BudgetLimits,
    spent: Mutex<Spent>,
}

impl Budget {
    /// A budget with these limits.
    pub fn new(limits: BudgetLimits) -> Budget {
        Budget {
            limits,
            spent: Mutex::new(Spent::default()),
        }
    }

    /// A budget with these limits of which `calls`, `tokens` and `cost` are spent already
    /// (what the runs before a study, bootstrapping its demos, used).
    pub fn with_spent(limits: BudgetLimits, calls: u64, tokens: u64, cost: f64) -> Budget {
        Budget {
            limits,
            spent: Mutex::new(Spent {
                calls,
                tokens,
                cost,
            }),
        }
    }

    /// Whether there is any limit at all.
    pub fn is_limited(&self) -> bool {
        self.limits != BudgetLimits::default()
    }

    /// Reserves one call, or says which limit is exhausted.
    pub fn reserve(&self) -> Result<(), LmError> {
        if !self.is_limited() {
            return Ok(());
        }
        let mut s = self.spent.lock();
        let l = &self.limits;
        if let Some(max) = l.max_calls.filter(|&m| s.calls >= m) {
            return Err(LmError::BudgetExceeded(format!(
                "max_calls={max} reached ({} calls made)",
                s.calls
            )));
        }
        if let Some(max) = l.max_total_tokens.filter(|&m| s.tokens >= m) {
            return Err(LmError::BudgetExceeded(format!(
                "max_total_tokens={max} reached ({} tokens used)",
                s.tokens
            )));
        }
        if let Some(max) = l.max_cost.filter(|&m| s.cost >= m) {
            return Err(LmError::BudgetExceeded(format!(
                "max_cost={max} reached (estimated cost {:.6})",
                s.cost
            )));
        }
        s.calls += 1;
        Ok(())
    }

    /// Gives back a reserved call that did not start.
    pub fn release(&self) {
        if self.is_limited() {
            let mut s = self.spent.lock();
            s.calls = s.calls.saturating_sub(1);
        }
    }

    /// Adds what an answered call used.
    pub fn spend(&self, usage: Usage, cost: Option<f64>) {
        if self.is_limited() {
            let mut s = self.spent.lock();
            s.tokens += usage.total();
            s.cost += cost.unwrap_or(0.0);
        }
    }

    /// What was spent: calls, tokens, cost.
    pub fn spent(&self) -> (u64, u64, f64) {
        let s = self.spent.lock();
        (s.calls, s.tokens, s.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_once_exhausted_and_say_which() {
        let b = Budget::new(BudgetLimits {
            max_calls: Some(2),
            ..Default::default()
        });
        b.reserve().unwrap();
        b.reserve().unwrap();
        let e = b.reserve().unwrap_err().to_string();
        assert!(e.contains("max_calls=2"), "{e}");
        let b = Budget::new(BudgetLimits {
            max_total_tokens: Some(10),
            ..Default::default()
        });
        b.reserve().unwrap();
        b.spend(
            Usage {
                prompt_tokens: 6,
                completion_tokens: 4,
            },
            None,
        );
        assert!(b
            .reserve()
            .unwrap_err()
            .to_string()
            .contains("max_total_tokens=10"));
    }

    #[test]
    fn stats_keep_tags_apart_and_count_unpriced_calls() {
        let s = Stats::default();
        let r = CallRecord {
            cached: false,
            failed: false,
            wire: Wire {
                requests: 2,
                retries: 1,
                ..Default::default()
            },
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
            },
            cost: None,
            latency: 0.1,
        };
        s.record(Some("a"), &r);
        s.record(
            None,
            &CallRecord {
                cached: true,
                cost: Some(0.0),
                usage: Usage::default(),
                ..r
            },
        );
        let v = s.to_json();
        assert_eq!(v["calls"], 2);
        assert_eq!(v["cache_hits"], 1);
        assert_eq!(v["total_tokens"], 5);
        assert_eq!(v["unpriced_calls"], 1);
        assert_eq!(v["by_tag"]["a"]["calls"], 1);
        assert!((v["latency"]["p50"].as_f64().unwrap() - 0.1).abs() < 0.01);
    }
}
