//! The engine as a server from Python: the `dspex` command line, the loopback server that lets
//! worker processes evaluate an embedded study, and the supervised pool of those processes
//! (`study.optimize(..., processes=N)`).

use std::sync::Arc;

use dspex_engine::grpc::{pb, LoopbackServer};
use dspex_engine::workers::{WorkerCommand, WorkerPool};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::embedded::EmbeddedRun;
use crate::study::{PyRun, PyStudy};
use crate::{block, engine, guard, RemoteError, SLICE};

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

/// Serves the embedded `study` with a fresh random token: on `bind` (`host:port`; default
/// 127.0.0.1 and a free port), over TLS when `tls_cert` and `tls_key` (PEM) are given.
#[pyfunction]
#[pyo3(signature = (study, bind=None, tls_cert=None, tls_key=None))]
pub(crate) fn serve_embedded(
    py: Python<'_>,
    study: &PyStudy,
    bind: Option<String>,
    tls_cert: Option<Vec<u8>>,
    tls_key: Option<Vec<u8>>,
) -> PyResult<EmbeddedServer> {
    let inner = study.backend.engine_study().ok_or_else(|| {
        PyValueError::new_err("serve_embedded needs an embedded study; this one is remote")
    })?;
    let (bind, tls) = listen_options(bind, tls_cert, tls_key)?;
    let server = block(py, async move {
        LoopbackServer::start_at(inner, bind, tls)
            .await
            .map_err(|e| RemoteError::new_err(e.to_string()))
    })?;
    Ok(EmbeddedServer { server })
}

/// Where a server listens and its TLS identity, from `serve_*`'s arguments.
type ListenOptions = (Option<std::net::SocketAddr>, Option<(Vec<u8>, Vec<u8>)>);

fn listen_options(
    bind: Option<String>,
    tls_cert: Option<Vec<u8>>,
    tls_key: Option<Vec<u8>>,
) -> PyResult<ListenOptions> {
    let bind = match bind {
        None => None,
        Some(b) => Some(b.parse::<std::net::SocketAddr>().map_err(|e| {
            PyValueError::new_err(format!(
                "bind must be host:port (an IP address), got {b:?}: {e}"
            ))
        })?),
    };
    let tls = match (tls_cert, tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "TLS needs both a certificate and its key",
            ))
        }
    };
    Ok((bind, tls))
}

/// Serves this process's sessions with a fresh random token, so that other processes join
/// them (a program study's metric workers): on `bind` (default 127.0.0.1 and a free port),
/// over TLS when `tls_cert` and `tls_key` (PEM) are given.
#[pyfunction]
#[pyo3(signature = (bind=None, tls_cert=None, tls_key=None))]
pub(crate) fn serve_sessions(
    py: Python<'_>,
    bind: Option<String>,
    tls_cert: Option<Vec<u8>>,
    tls_key: Option<Vec<u8>>,
) -> PyResult<EmbeddedServer> {
    let sessions = crate::session::registry()?;
    let (bind, tls) = listen_options(bind, tls_cert, tls_key)?;
    let server = block(py, async move {
        LoopbackServer::start_sessions_at(sessions, bind, tls)
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
            backend: Box::new(EmbeddedRun::new(run)),
        })
    }

    /// Stops the server (open streams end).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| guard(|| self.server.close()))
    }
}

/// Worker processes that attach to an engine, restarted with backoff when they crash (the
/// engine's pool, as `dspex optimize` runs it).
#[pyclass(name = "WorkerPool", module = "dspex._native")]
pub(crate) struct PyWorkerPool {
    pool: parking_lot::Mutex<WorkerPool>,
}

#[pymethods]
impl PyWorkerPool {
    /// Starts `n` workers running `argv` (each gets `--name <name_prefix>-<i>`) with the
    /// extra environment `env`; each may crash `max_restarts` times.
    #[new]
    #[pyo3(signature = (argv, env, n, max_restarts=10, name_prefix="worker".to_string(), quiet_stdout=false))]
    fn new(
        argv: Vec<String>,
        env: std::collections::BTreeMap<String, String>,
        n: usize,
        max_restarts: u32,
        name_prefix: String,
        quiet_stdout: bool,
    ) -> PyResult<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| PyValueError::new_err("argv must name a program"))?;
        let command = WorkerCommand {
            program: program.clone(),
            args: args.to_vec(),
            env: env.into_iter().collect(),
            name_prefix,
            quiet_stdout,
        };
        let pool = guard(|| WorkerPool::start(command, n, max_restarts))?;
        Ok(PyWorkerPool {
            pool: parking_lot::Mutex::new(pool),
        })
    }

    /// Restarts the workers that exited (after their backoff); returns how many are alive.
    fn supervise(&self) -> PyResult<usize> {
        guard(|| self.pool.lock().supervise(false))
    }

    /// True when every worker crashed too often to be restarted.
    #[getter]
    fn exhausted(&self) -> bool {
        self.pool.lock().exhausted()
    }

    #[getter]
    fn restarts(&self) -> u64 {
        self.pool.lock().restarts
    }

    /// Waits up to `grace` seconds for the workers to exit, then kills the rest.
    #[pyo3(signature = (grace=5.0))]
    fn close(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = std::time::Duration::try_from_secs_f64(grace).map_err(|_| {
            PyValueError::new_err(format!(
                "grace must be a number of seconds >= 0, got {grace}"
            ))
        })?;
        py.detach(|| guard(|| self.pool.lock().shutdown(grace)))
    }
}
