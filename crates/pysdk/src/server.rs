//! The engine as a server from Python: the `dspex` command line, and the loopback server that
//! lets worker processes evaluate an embedded study (`study.optimize(..., processes=N)`).

use std::sync::Arc;

use dspex_engine::grpc::{pb, LoopbackServer};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::embedded::EmbeddedRun;
use crate::study::{PyRun, PyStudy};
use crate::{block, engine, RemoteError, SLICE};

/// Runs the `dspex` command line (the Rust CLI) with `argv`; returns the exit code. Ctrl-C
/// in Python stops the command gracefully.
#[pyfunction]
#[pyo3(signature = (argv, python=None))]
pub(crate) fn cli_main(py: Python<'_>, argv: Vec<String>, python: Option<String>) -> PyResult<i32> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let env = dspex_engine::cli::CliEnv { python, cancel: rx };
    let worker = std::thread::Builder::new()
        .name("dspex-cli".into())
        .spawn(move || dspex_engine::cli::run(argv, env))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the CLI thread: {e}")))?;
    let mut interrupted = false;
    loop {
        if worker.is_finished() {
            break;
        }
        py.detach(|| std::thread::sleep(SLICE));
        if let Err(e) = py.check_signals() {
            if interrupted {
                return Err(e);
            }
            interrupted = true;
            let _ = tx.send(true);
        }
    }
    match worker.join() {
        Ok(code) => Ok(code),
        Err(_) => Err(PyRuntimeError::new_err(
            "internal error: the dspex CLI panicked",
        )),
    }
}

/// An in-process engine server on a loopback port that serves one embedded study, so worker
/// processes can attach to it.
#[pyclass(frozen, name = "EmbeddedServer", module = "dspex._native")]
pub(crate) struct EmbeddedServer {
    server: LoopbackServer,
}

/// Serves the embedded `study` on 127.0.0.1 (a free port) with a fresh random token.
#[pyfunction]
pub(crate) fn serve_embedded(py: Python<'_>, study: &PyStudy) -> PyResult<EmbeddedServer> {
    let inner = study.backend.engine_study().ok_or_else(|| {
        PyValueError::new_err("serve_embedded needs an embedded study; this one is remote")
    })?;
    let server = block(py, async move {
        LoopbackServer::start(inner)
            .await
            .map_err(|e| RemoteError::new_err(e.to_string()))
    })?;
    Ok(EmbeddedServer { server })
}

#[pymethods]
impl EmbeddedServer {
    #[getter]
    fn address(&self) -> String {
        self.server.address().to_string()
    }

    #[getter]
    fn token(&self) -> &str {
        self.server.token()
    }

    /// Starts a run of the study that attached workers evaluate: as many trials in flight as
    /// they take, at most `max_concurrency`.
    #[pyo3(signature = (n_trials=None, timeout=None, max_concurrency=None, trial_timeout=None, max_retries=0))]
    fn start_run(
        &self,
        py: Python<'_>,
        n_trials: Option<u64>,
        timeout: Option<f64>,
        max_concurrency: Option<u32>,
        trial_timeout: Option<f64>,
        max_retries: u32,
    ) -> PyResult<PyRun> {
        let spec = pb::RunSpec {
            n_trials,
            timeout,
            max_concurrency,
            trial_timeout,
            max_retries,
        };
        let run = engine(py, || {
            let (opts, retries) = dspex_engine::grpc::run_options(&spec)?;
            self.server.start_run(opts, retries, Arc::default())
        })?;
        Ok(PyRun {
            backend: Box::new(EmbeddedRun(run)),
        })
    }

    /// Stops the server (open streams end).
    fn close(&self) {
        self.server.close();
    }
}
