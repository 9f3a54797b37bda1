//! The adaptive concurrency cap of an LM endpoint: at most `limit` requests in flight, where
//! `limit` starts at the configured maximum, shrinks when the server answers 429 to a noticeable
//! share of a window of requests, and grows back by one per window without throttling.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The share of 429s in a window above which the limit shrinks. Random throttling below it
/// (a server's background 429s) does not collapse the limit.
const THROTTLE_SHARE: f64 = 0.1;
/// The factor the limit shrinks by.
const DECREASE: f64 = 0.75;

#[derive(Debug)]
struct State {
    max: usize,
    limit: usize,
    in_flight: usize,
    window_done: usize,
    window_throttled: usize,
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
        }
    }

    /// Records how a request ended: `throttled` when the server answered 429.
    pub fn record(&self, throttled: bool) {
        let grew = {
            let mut s = self.state.lock();
            s.window_done += 1;
            s.window_throttled += throttled as usize;
            if s.window_done < s.limit.max(8) {
                return;
            }
            let share = s.window_throttled as f64 / s.window_done as f64;
            s.window_done = 0;
            s.window_throttled = 0;
            if share > THROTTLE_SHARE {
                let lower = ((s.limit as f64) * DECREASE).floor() as usize;
                tracing::debug!(
                    from = s.limit,
                    to = lower.max(1),
                    share,
                    "LM concurrency lowered after 429s"
                );
                s.limit = lower.max(1);
                false
            } else if s.limit < s.max {
                s.limit += 1;
                true
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
    fn throttling_above_the_share_lowers_the_limit_and_quiet_windows_raise_it() {
        let l = AdaptiveLimiter::new(32);
        for i in 0..32 {
            l.record(i % 2 == 0);
        }
        assert_eq!(l.snapshot().0, 24);
        // 5% random throttling: no decrease, growth back to the maximum
        for i in 0..2000 {
            l.record(i % 20 == 0);
        }
        assert_eq!(l.snapshot().0, 32);
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
