//! The one global multi-threaded tokio runtime of the process.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{EngineError, Result};

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// How many worker threads the runtime has: `DSPEX_WORKER_THREADS` (`setting`) when it is a
/// number >= 1; else one on a machine with at most two cores, where a second worker mostly adds
/// cross-thread wake-ups to every message (measured on 2 cores: a remote round trip 158 us with
/// two workers, 109 us with one; `benches/session_tools.py`); else up to four. The workers only
/// schedule and move messages: CPU work runs on the blocking pool.
pub fn worker_threads(setting: Option<&str>, cores: usize) -> usize {
    match setting.and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n >= 1 => n,
        _ if cores <= 2 => 1,
        _ => cores.min(4),
    }
}

/// The global runtime, built on first use. Its worker threads only do scheduling: sampling and
/// storage writes run on the blocking pool or on the evaluator's threads.
pub fn handle() -> Result<Handle> {
    let rt = RUNTIME.get_or_init(|| {
        let workers = worker_threads(
            std::env::var("DSPEX_WORKER_THREADS").ok().as_deref(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("dspex-engine")
            .enable_all() // timers, and sockets for the gRPC server and client
            .build()
            .map_err(|e| e.to_string())
    });
    match rt {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(EngineError::Internal(format!(
            "cannot start the tokio runtime: {e}"
        ))),
    }
}

/// Clean-up that a cancelled call leaves behind (a run failing the trials it had in flight).
static SETTLING: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>> =
    parking_lot::Mutex::new(Vec::new());

/// Runs `cleanup` on the runtime and lets [`settled`] wait for it: a future dropped half-way
/// (its caller pressed Ctrl-C) starts its clean-up here, so that the caller can wait for the
/// storage to be consistent before the process exits.
pub fn settle_later(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let h = match Handle::try_current() {
        Ok(h) => h,
        Err(_) => match handle() {
            Ok(h) => h,
            Err(_) => return,
        },
    };
    let task = h.spawn(cleanup);
    let mut pending = SETTLING.lock();
    pending.retain(|t| !t.is_finished());
    pending.push(task);
}

/// Waits for every clean-up started by [`settle_later`] so far.
pub async fn settled() {
    loop {
        let pending = std::mem::take(&mut *SETTLING.lock());
        if pending.is_empty() {
            return;
        }
        for t in pending {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn worker_threads_follow_the_setting_then_the_cores() {
        assert_eq!(worker_threads(Some("3"), 2), 3);
        assert_eq!(worker_threads(Some("0"), 2), 1);
        assert_eq!(worker_threads(Some("x"), 8), 4);
        assert_eq!(worker_threads(None, 1), 1);
        assert_eq!(worker_threads(None, 2), 1);
        assert_eq!(worker_threads(None, 3), 3);
        assert_eq!(worker_threads(None, 64), 4);
    }
}
