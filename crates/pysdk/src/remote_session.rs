//! A session of a served engine (`DSpexSessionContext(engine=...)`): one `Session` stream per
//! context. Operations are sent with correlation ids (many in flight at once) and answered by
//! id; the engine's calls of the tools this process serves arrive on the same stream and go to
//! the context's tool inbox, exactly like the calls of this process's own engine; watch events
//! arrive by the id of their watch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dspex_engine::grpc::convert::*;
use dspex_engine::grpc::pb;
use dspex_engine::grpc::pb::session_reply::Kind;
use dspex_engine::grpc::pb::session_request::Op;
use dspex_engine::session::Data;
use dspex_engine::session_ops::{SessionOp, SessionOut};
use dspex_engine::tools::ToolCall;
use dspex_engine::EngineError;
use parking_lot::Mutex;
use prost::Message;
use pyo3::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::remote::{status_err, RemoteClient};
use crate::{block, to_py_err, RemoteError};

/// A change seen by a watch: (name, value or None when deleted, version), or how many changes
/// it missed.
pub(crate) type WatchEvent = Result<(String, Option<Data>, u64), u64>;

/// Why a request got no answer.
pub(crate) enum Failure {
    /// The engine refused it.
    Engine(EngineError),
    /// The stream is gone.
    Broken(String),
}

impl Failure {
    pub(crate) fn into_py(self) -> PyErr {
        match self {
            Failure::Engine(e) => to_py_err(e),
            Failure::Broken(why) => RemoteError::new_err(why),
        }
    }
}

type Waiter = oneshot::Sender<Result<SessionOut, Failure>>;

/// One session stream.
pub(crate) struct RemoteSession {
    pub(crate) id: String,
    out: mpsc::UnboundedSender<pb::SessionRequest>,
    waiting: Mutex<HashMap<u64, Waiter>>,
    watches: Mutex<HashMap<u64, mpsc::UnboundedSender<WatchEvent>>>,
    /// Where the engine's tool calls go (the context's inbox), once it serves tools.
    calls: Mutex<Option<mpsc::UnboundedSender<ToolCall>>>,
    next_id: AtomicU64,
    /// Why the stream ended (None while it is open).
    broken: Mutex<Option<String>>,
    /// The engine's message size limit.
    max_message_bytes: usize,
}

impl RemoteSession {
    /// Opens (or joins) session `session_id` on the engine of `client`.
    pub(crate) fn open(
        py: Python<'_>,
        client: &RemoteClient,
        session_id: Option<String>,
        ttl: f64,
    ) -> PyResult<Arc<RemoteSession>> {
        let mut c = client.c();
        block(py, async move {
            let (out, rx) = mpsc::unbounded_channel();
            let open = pb::SessionRequest {
                id: 0,
                op: Some(Op::Open(pb::OpenSession {
                    session_id: session_id.unwrap_or_default(),
                    ttl_seconds: ttl,
                })),
            };
            out.send(open)
                .map_err(|_| RemoteError::new_err("the session stream closed"))?;
            let mut inbound = c
                .session(UnboundedReceiverStream::new(rx))
                .await
                .map_err(status_err)?
                .into_inner();
            let opened = match inbound.message().await.map_err(status_err)? {
                Some(pb::SessionReply {
                    kind: Some(Kind::Opened(o)),
                    ..
                }) => o,
                Some(pb::SessionReply {
                    kind: Some(Kind::Error(e)),
                    ..
                }) => return Err(to_py_err(error_from_pb(e))),
                _ => return Err(RemoteError::new_err("the engine did not open the session")),
            };
            let limit = usize::try_from(opened.max_message_bytes).unwrap_or(usize::MAX);
            let s = Arc::new(RemoteSession {
                id: opened.session_id,
                out,
                waiting: Mutex::new(HashMap::new()),
                watches: Mutex::new(HashMap::new()),
                calls: Mutex::new(None),
                next_id: AtomicU64::new(1),
                broken: Mutex::new(None),
                max_message_bytes: if limit == 0 { usize::MAX } else { limit },
            });
            tokio::spawn(read(Arc::downgrade(&s), inbound));
            Ok(s)
        })
    }

    /// True until the stream ends.
    pub(crate) fn alive(&self) -> bool {
        self.broken.lock().is_none()
    }

    fn check_open(&self) -> Result<(), Failure> {
        match &*self.broken.lock() {
            Some(why) => Err(Failure::Broken(why.clone())),
            None => Ok(()),
        }
    }

    /// Sends `op` with a fresh id; the receiver gets the answer.
    fn send(
        &self,
        op: Op,
    ) -> Result<(u64, oneshot::Receiver<Result<SessionOut, Failure>>), Failure> {
        self.check_open()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req = pb::SessionRequest { id, op: Some(op) };
        let size = req.encoded_len();
        if size > self.max_message_bytes {
            return Err(Failure::Engine(EngineError::InvalidArgument(format!(
                "a request of {size} bytes is larger than the engine's message limit of {} \
                 bytes (dspex serve --max-message-bytes)",
                self.max_message_bytes
            ))));
        }
        let (tx, rx) = oneshot::channel();
        {
            // Under the lock the reader takes to fail what waits when the stream ends: a
            // request is either failed by it or sees that the stream ended.
            let mut waiting = self.waiting.lock();
            self.check_open()?;
            waiting.insert(id, tx);
        }
        if self.out.send(req).is_err() {
            self.waiting.lock().remove(&id);
            return Err(closed());
        }
        Ok((id, rx))
    }

    /// Runs `op` on the engine and waits for its answer (blocking: call it without the GIL).
    pub(crate) fn request(&self, op: Op) -> Result<SessionOut, Failure> {
        let (_, rx) = self.send(op)?;
        rx.blocking_recv().unwrap_or_else(|_| Err(closed()))
    }

    /// Runs the session operation `op` on the engine (blocking).
    pub(crate) fn apply(&self, op: &SessionOp) -> Result<SessionOut, Failure> {
        self.request(session_op_to_pb(op))
    }

    /// Runs `op` on the engine like [`apply`](Self::apply), checking signals while it waits: on
    /// Ctrl-C the engine is asked to cancel the request (a program study then fails its trials
    /// in flight), and `KeyboardInterrupt` is raised once the engine answered (at most 30 s).
    pub(crate) fn apply_interruptible(
        &self,
        py: Python<'_>,
        op: &SessionOp,
    ) -> PyResult<SessionOut> {
        let (id, rx) = self.send(session_op_to_pb(op)).map_err(Failure::into_py)?;
        let h = dspex_engine::runtime::handle().map_err(to_py_err)?;
        let answer = crate::interruptible(
            py,
            rx,
            |rx| {
                h.block_on(async { tokio::time::timeout(crate::SLICE, rx).await })
                    .ok()
                    .map(|r| Ok(r.unwrap_or_else(|_| Err(closed()))))
            },
            |rx| {
                let cancel = pb::SessionRequest {
                    id,
                    op: Some(Op::Cancel(pb::Empty {})),
                };
                if self.out.send(cancel).is_ok() {
                    let _ = h.block_on(async {
                        tokio::time::timeout(Duration::from_secs(30), rx).await
                    });
                }
            },
        )?;
        answer.map_err(Failure::into_py)
    }

    /// Closes the session on the engine (blocking).
    pub(crate) fn close(&self) -> Result<(), Failure> {
        self.request(Op::Close(pb::Empty {})).map(drop)
    }

    /// Starts a watch: its events arrive on the receiver.
    pub(crate) fn watch(&self) -> Result<mpsc::UnboundedReceiver<WatchEvent>, Failure> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, _) = self.send(Op::Watch(pb::Empty {}))?;
        self.waiting.lock().remove(&id);
        self.watches.lock().insert(id, tx);
        Ok(rx)
    }

    /// From now on the engine's tool calls go to `calls`.
    pub(crate) fn serve_tools(&self, calls: mpsc::UnboundedSender<ToolCall>) {
        *self.calls.lock() = Some(calls);
    }

    /// Tool calls are not taken any more.
    pub(crate) fn stop_serving(&self) {
        self.calls.lock().take();
    }
}

fn closed() -> Failure {
    Failure::Broken("the session stream closed".into())
}

/// Reads the stream: answers, tool calls, watch events; fails what waits when it ends.
async fn read(
    session: std::sync::Weak<RemoteSession>,
    mut inbound: tonic::Streaming<pb::SessionReply>,
) {
    let why = loop {
        let msg = inbound.message().await;
        let Some(s) = session.upgrade() else { return };
        let reply = match msg {
            Ok(Some(r)) => r,
            Ok(None) => break "the engine ended the session stream".to_string(),
            Err(status) => {
                break format!("the session stream broke: {}", status_err(status));
            }
        };
        match reply.kind {
            Some(Kind::Call(call)) => run_call(&s, reply.id, call),
            Some(Kind::Event(e)) => {
                let event = if e.missed > 0 {
                    Err(e.missed)
                } else {
                    match e.value.map(value_from_pb).transpose() {
                        Ok(v) => Ok((e.name, v, e.version)),
                        Err(_) => continue,
                    }
                };
                let mut watches = s.watches.lock();
                if let Some(w) = watches.get(&reply.id) {
                    if w.send(event).is_err() {
                        watches.remove(&reply.id);
                    }
                }
            }
            kind => {
                if let Some(w) = s.waiting.lock().remove(&reply.id) {
                    let _ = w.send(session_out_from_pb(kind).map_err(Failure::Engine));
                }
            }
        }
    };
    if let Some(s) = session.upgrade() {
        let mut waiting = s.waiting.lock();
        *s.broken.lock() = Some(why.clone());
        for (_, w) in waiting.drain() {
            let _ = w.send(Err(Failure::Broken(why.clone())));
        }
        drop(waiting);
        s.watches.lock().clear();
        s.calls.lock().take();
    }
}

/// Hands an engine's tool call to the inbox, and sends its answer back.
fn run_call(s: &Arc<RemoteSession>, id: u64, call: pb::ToolCall) {
    let (reply, answer) = oneshot::channel();
    let args = map_from_pb(call.args);
    let tool = call.tool;
    let out = s.out.clone();
    let queued = match args {
        Ok(args) => match &*s.calls.lock() {
            Some(calls) => calls
                .send(ToolCall {
                    tool: tool.clone(),
                    args,
                    reply,
                })
                .is_ok(),
            None => false,
        },
        Err(e) => {
            let _ = reply.send(Err(e));
            true
        }
    };
    tokio::spawn(async move {
        let result = if queued {
            answer.await.unwrap_or_else(|_| {
                Err(EngineError::tool_unavailable(
                    &tool,
                    "the process serving it stopped during the call",
                ))
            })
        } else {
            Err(EngineError::tool_unavailable(
                &tool,
                "the process that registered it does not serve tools any more",
            ))
        };
        let result = match result {
            Ok(v) => pb::tool_answer::Result::Value(value_to_pb(&v)),
            Err(e) => pb::tool_answer::Result::Error(error_to_pb(&e)),
        };
        let _ = out.send(pb::SessionRequest {
            id,
            op: Some(Op::Answer(pb::ToolAnswer {
                result: Some(result),
            })),
        });
    });
}
