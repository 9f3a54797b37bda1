//! The adaptive concurrency cap of an LM endpoint: at most `limit` requests in flight.
//!
//! The limit starts at the configured maximum. It is judged over windows of requests (at least
//! [`MIN_WINDOW`], at least the limit): a window where more than [`THROTTLE_SHARE`] of the
//! answers were 429 is throttled, so the limit shrinks by [`DECREASE`] and the level it failed at
//! teaches a *safe* level (nine tenths of it). In quiet windows the limit climbs back by one per
//! window up to the safe level; above it, it only probes: one step up after `hold` quiet windows
//! at the safe level. A probe that meets [`PROBE_FAILURES`] 429s goes back at once and doubles
//! `hold`, so a server whose concurrency cap sits just under the probe is asked above its cap
//! less and less often; a probe that passes a whole window raises the safe level. Background
//! 429s (a server that throttles a few requests at random) stay under the share and do not move
//! the limit.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The share of 429s in a window above which the limit shrinks.
const THROTTLE_SHARE: f64 = 0.15;
/// The factor the limit shrinks by.
const DECREASE: f64 = 0.75;
/// Requests in a window at least.
const MIN_WINDOW: usize = 64;
/// 429s that fail a probe above the safe level.
const PROBE_FAILURES: usize = 3;
/// Quiet windows at the safe level before the first probe.
const FIRST_HOLD: usize = 8;

#[derive(Debug)]
struct State {
    max: usize,
    limit: usize,
    in_flight: usize,
    window_done: usize,
    window_throttled: usize,
    /// The limit climbs freely up to here; above, it probes.
    safe: usize,
    /// Quiet windows at the safe level before a probe.
    hold: usize,
    quiet: usize,
}

/// Shared by every caller of one (model, base URL) in the process.
#[derive(Debug)]
pub struct AdaptiveLimiter {
    state: Mutex<State>,
    notify: Notify,
}

/// One request's place in flight; dropping it frees the place.
pub struct Permit {
    limiter: Arc<AdaptiveLimiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.state.lock().in_flight -= 1;
        self.limiter.notify.notify_one();
    }
}

impl AdaptiveLimiter {
    /// A limiter allowing `max` requests in flight.
    pub fn new(max: usize) -> Arc<AdaptiveLimiter> {
        let max = max.max(1);
        Arc::new(AdaptiveLimiter {
            state: Mutex::new(State {
                max,
                limit: max,
                in_flight: 0,
                window_done: 0,
                window_throttled: 0,
                safe: max,
                hold: FIRST_HOLD,
                quiet: 0,
            }),
            notify: Notify::new(),
        })
    }

    /// Waits for a place in flight.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    return Permit {
                        limiter: self.clone(),
                    };
                }
            }
            notified.await;
        }
    }

    /// Lowers the maximum to `max` if that is tighter (two LMs of one endpoint share the
    /// stricter cap).
    pub fn tighten(&self, max: usize) {
        let mut s = self.state.lock();
        if max.max(1) < s.max {
            s.max = max.max(1);
            s.limit = s.limit.min(s.max);
            s.safe = s.safe.min(s.max);
        }
    }

    /// Records how a request ended: `throttled` when the server answered 429.
    pub fn record(&self, throttled: bool) {
        let grew = {
            let mut s = self.state.lock();
            s.window_done += 1;
            s.window_throttled += throttled as usize;
            let probing = s.limit > s.safe;
            if probing && s.window_throttled >= PROBE_FAILURES {
                // the probe found the server's cap: back to the safe level, probe half as often
                tracing::debug!(
                    probe = s.limit,
                    safe = s.safe,
                    "LM concurrency probe throttled"
                );
                s.limit = s.safe;
                s.hold = s.hold.saturating_mul(2);
                s.quiet = 0;
                s.window_done = 0;
                s.window_throttled = 0;
                return;
            }
            if s.window_done < s.limit.max(MIN_WINDOW) {
                return;
            }
            let share = s.window_throttled as f64 / s.window_done as f64;
            s.window_done = 0;
            s.window_throttled = 0;
            if share > THROTTLE_SHARE {
                let lower = (((s.limit as f64) * DECREASE).floor() as usize).max(1);
                tracing::debug!(
                    from = s.limit,
                    to = lower,
                    share,
                    "LM concurrency lowered after 429s"
                );
                s.safe = (((s.limit as f64) * 0.9).floor() as usize)
                    .clamp(1, s.limit.saturating_sub(1).max(1));
                s.limit = lower;
                s.quiet = 0;
                false
            } else if probing {
                // a whole quiet window above the safe level: that level is safe too
                s.safe = s.limit;
                s.quiet = 0;
                false
            } else if s.limit < s.safe {
                s.limit += 1;
                true
            } else if s.limit < s.max {
                s.quiet += 1;
                if s.quiet >= s.hold {
                    s.quiet = 0;
                    s.limit += 1;
                    true
                } else {
                    false
                }
            } else {
                false
            }
        };
        if grew {
            self.notify.notify_one();
        }
    }

    /// The current limit and how many requests are in flight.
    pub fn snapshot(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.limit, s.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_lowers_the_limit_and_probes_above_the_safe_level_less_and_less() {
        let l = AdaptiveLimiter::new(40);
        for i in 0..64 {
            l.record(i % 2 == 0);
        }
        assert_eq!(l.snapshot().0, 30); // 40 * 0.75; safe level 36
                                        // 5% random throttling: no decrease, back up to the safe level, one step per window
        for i in 0..64 * 6 {
            l.record(i % 20 == 0);
        }
        assert_eq!(l.snapshot().0, 36);
        for i in 0..64 * FIRST_HOLD {
            l.record(i % 20 == 0);
        }
        assert_eq!(l.snapshot().0, 37, "a probe after the hold");
        for _ in 0..PROBE_FAILURES {
            l.record(true);
        }
        assert_eq!(l.snapshot().0, 36, "a throttled probe goes back at once");
        for _ in 0..64 * (2 * FIRST_HOLD - 1) {
            l.record(false);
        }
        assert_eq!(l.snapshot().0, 36, "the next probe waits twice as long");
        for _ in 0..64 {
            l.record(false);
        }
        assert_eq!(l.snapshot().0, 37);
        for _ in 0..64 {
            l.record(false);
        }
        assert_eq!(
            l.snapshot().0,
            37,
            "a quiet probe window makes its level safe"
        );
        l.tighten(10);
        assert_eq!(l.snapshot().0, 10);
    }

    #[tokio::test]
    async fn permits_are_capped_and_freed() {
        let l = AdaptiveLimiter::new(2);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        let _c = tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.snapshot().1, 2);
    }
}
