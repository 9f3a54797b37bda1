//! `dspex._native.LM`: the engine's LM client ([`dspex_engine::native::lm`]) for Python. Requests
//! and configurations cross as JSON text; answers come back as tuples that `dspex.native`
//! wraps. Calls run on the engine's runtime without the GIL.

use std::panic::{catch_unwind, AssertUnwindSafe};

use dspex_engine::native::lm::{ChatRequest, Completion, Lm, LmConfig, LmError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use serde_json::Value;

use crate::{block, to_py_err, BudgetExceeded, LMError};

/// The Python exception of an LM error (ValueError for a bad argument, `BudgetExceeded`,
/// else `LMError` with `.status`: the HTTP status or None).
fn lm_err(e: LmError) -> PyErr {
    let status = e.status();
    match e {
        LmError::InvalidArgument(m) => PyValueError::new_err(m),
        LmError::BudgetExceeded(_) => BudgetExceeded::new_err(e.to_string()),
        _ => {
            let err = LMError::new_err(e.to_string());
            Python::attach(|py| {
                // setting an attribute on a fresh exception object cannot fail
                let _ = err.value(py).setattr("status", status);
            });
            err
        }
    }
}

fn json_arg(what: &str, text: &str) -> PyResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| PyValueError::new_err(format!("LM {what}: not JSON ({e})")))
}

/// (text, choices, finish_reason, prompt_tokens, completion_tokens, cached, latency, model)
type CompletionTuple = (
    String,
    Vec<String>,
    Option<String>,
    u64,
    u64,
    bool,
    f64,
    String,
);

fn completion_tuple(c: Completion) -> CompletionTuple {
    (
        c.text,
        c.choices,
        c.finish_reason,
        c.usage.prompt_tokens,
        c.usage.completion_tokens,
        c.cached,
        c.latency,
        c.model,
    )
}

fn request(
    messages: &str,
    overrides: Option<&str>,
    rollout_id: Option<String>,
) -> PyResult<ChatRequest> {
    let overrides = match overrides.map(|o| json_arg("overrides", o)).transpose()? {
        None => Default::default(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "LM overrides must be a dict, got {other}"
            )))
        }
    };
    Ok(ChatRequest {
        messages: json_arg("messages", messages)?,
        overrides,
        rollout_id,
    })
}

/// An engine-side LM client (see `dspex.native.LM`).
#[pyclass(frozen, name = "LM", module = "dspex._native")]
pub(crate) struct PyLm {
    pub(crate) lm: Lm,
}

#[pymethods]
impl PyLm {
    /// Builds the client from its JSON configuration (validated; opens the cache file).
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<PyLm> {
        let config =
            LmConfig::from_json(&json_arg("configuration", config_json)?).map_err(lm_err)?;
        let lm = block(py, async move { Lm::new(config).await.map_err(lm_err) })?;
        Ok(PyLm { lm })
    }

    /// A client sharing everything with this one whose calls are also accounted under `tag`.
    fn with_tag(&self, tag: &str) -> PyLm {
        PyLm {
            lm: self.lm.with_tag(tag),
        }
    }

    /// One chat call; blocks (without the GIL) until it is answered.
    #[pyo3(signature = (messages, overrides=None, rollout_id=None))]
    fn call(
        &self,
        py: Python<'_>,
        messages: &str,
        overrides: Option<&str>,
        rollout_id: Option<String>,
    ) -> PyResult<CompletionTuple> {
        let req = request(messages, overrides, rollout_id)?;
        let lm = self.lm.clone();
        block(py, async move {
            lm.chat(&req).await.map(completion_tuple).map_err(lm_err)
        })
    }

    /// Starts one chat call and returns at once; `done(ok, value)` is called from an engine
    /// thread with the completion tuple or the exception.
    #[pyo3(signature = (messages, done, overrides=None, rollout_id=None))]
    fn start(
        &self,
        messages: &str,
        done: Py<PyAny>,
        overrides: Option<&str>,
        rollout_id: Option<String>,
    ) -> PyResult<()> {
        let req = request(messages, overrides, rollout_id)?;
        let lm = self.lm.clone();
        let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
        h.spawn(async move {
            let result = lm.chat(&req).await;
            // the callback needs the GIL: take it on the blocking pool, not on a worker thread
            let _ = tokio::task::spawn_blocking(move || {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    Python::attach(|py| {
                        let args = match result {
                            Ok(c) => (true, completion_tuple(c))
                                .into_pyobject(py)
                                .map(|t| t.into_any().unbind()),
                            Err(e) => (false, lm_err(e).into_value(py))
                                .into_pyobject(py)
                                .map(|t| t.into_any().unbind()),
                        };
                        let outcome = args
                            .and_then(|a| done.call1(py, a.bind(py).cast::<PyTuple>()?.clone()));
                        if let Err(e) = outcome {
                            e.write_unraisable(py, None);
                        }
                    })
                }));
            })
            .await;
        });
        Ok(())
    }

    /// Many chat calls run concurrently in the engine (each request: messages JSON, overrides
    /// JSON or None, rollout id or None); results in order. A failed call raises, or with
    /// `return_exceptions` is its exception in place.
    #[pyo3(signature = (requests, return_exceptions=false))]
    fn batch(
        &self,
        py: Python<'_>,
        requests: Vec<(String, Option<String>, Option<String>)>,
        return_exceptions: bool,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let reqs = requests
            .into_iter()
            .enumerate()
            .map(|(i, (m, o, r))| {
                request(&m, o.as_deref(), r).map_err(|e| {
                    PyValueError::new_err(format!("LM.batch item {i}: {}", e.value(py)))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let lm = self.lm.clone();
        let results: Vec<Result<Completion, LmError>> =
            block(py, async move { Ok(lm.chat_many(&reqs).await) })?;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(c) => out.push(completion_tuple(c).into_pyobject(py)?.into_any().unbind()),
                Err(e) if return_exceptions => out.push(lm_err(e).into_value(py).into_any()),
                Err(e) => return Err(lm_err(e)),
            }
        }
        Ok(out)
    }

    /// Embeddings of `texts`: (vectors, prompt_tokens, cached).
    fn embed(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<(Vec<Vec<f64>>, u64, bool)> {
        let lm = self.lm.clone();
        block(py, async move {
            let e = lm.embed(&texts).await.map_err(lm_err)?;
            Ok((e.vectors, e.usage.prompt_tokens, e.cached))
        })
    }

    /// The accounting as JSON text.
    fn stats(&self) -> String {
        self.lm.stats().to_string()
    }
}
