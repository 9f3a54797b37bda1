//! Waking an asyncio event loop when trials are queued for it.
//!
//! An `async def` objective is evaluated by tasks of one event loop. Blocking in `pull` would
//! need a second Python thread, whose every answer costs a hand-off of the GIL and a call into
//! the loop from another thread. Instead the loop watches the read end of a socket pair
//! (`loop.add_reader`); the engine writes a byte to it when a trial is queued or the run ends,
//! and the loop then pulls without waiting.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use pyo3::exceptions::PyOSError;
use pyo3::PyResult;

/// A descriptor that becomes readable when trials are queued (see the module docs).
pub(crate) struct LoopSignal {
    read: UnixStream,
    write: UnixStream,
    /// True when the next [`LoopSignal::notify`] writes: at most one byte is written between
    /// two pulls, so the socket never fills up.
    armed: AtomicBool,
}

impl LoopSignal {
    pub(crate) fn new() -> PyResult<Self> {
        let err = |e: std::io::Error| {
            PyOSError::new_err(format!("cannot create the wake-up socket: {e}"))
        };
        let (read, write) = UnixStream::pair().map_err(err)?;
        read.set_nonblocking(true).map_err(err)?;
        write.set_nonblocking(true).map_err(err)?;
        Ok(LoopSignal {
            read,
            write,
            armed: AtomicBool::new(true),
        })
    }

    /// The descriptor the event loop watches (read it empty before each pull).
    pub(crate) fn fd(&self) -> i32 {
        self.read.as_raw_fd()
    }

    /// A trial was queued or the run ended.
    pub(crate) fn notify(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            // A full socket (cannot happen, see `armed`) already wakes the loop.
            let _ = (&self.write).write(&[1]);
        }
    }

    /// Before a pull takes what is queued: what is queued after it writes again.
    pub(crate) fn rearm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

/// The descriptor of the signal kept in `cell`, created on first use; `connect` has a new one
/// notified by its source.
pub(crate) fn watched_fd(
    cell: &OnceLock<Arc<LoopSignal>>,
    connect: impl FnOnce(Arc<LoopSignal>) -> PyResult<()>,
) -> PyResult<i32> {
    if let Some(s) = cell.get() {
        return Ok(s.fd());
    }
    let s = Arc::new(LoopSignal::new()?);
    connect(s.clone())?;
    Ok(cell.get_or_init(|| s).fd())
}
