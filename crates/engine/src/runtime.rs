//! The one global multi-threaded tokio runtime of the process.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{EngineError, Result};

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The global runtime, built on first use. Its worker threads only do scheduling: sampling and
/// storage writes run on the blocking pool or on the evaluator's threads.
pub fn handle() -> Result<Handle> {
    let rt = RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 4);
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
