//! The `Session` stream of the service: one process's operations on one session, the calls of
//! the tools it serves, and its watches. Operations go through [`session_ops::apply`], as they
//! do in the Python extension's own engine.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tonic::{Status, Streaming};

use super::convert::*;
use super::pb;
use super::pb::session_reply::Kind;
use super::pb::session_request::Op;
use crate::error::{EngineError, Result};
use crate::session::{Data, Session, Sessions};
use crate::session_ops::{self, Applied};
use crate::tools::{ToolCall, ToolProvider};

type Outbound = mpsc::Sender<std::result::Result<pb::SessionReply, Status>>;

/// Default idle time of a session opened without one.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

fn reply(id: u64, kind: Kind) -> std::result::Result<pb::SessionReply, Status> {
    Ok(pb::SessionReply {
        id,
        kind: Some(kind),
    })
}

fn error(id: u64, e: &EngineError) -> std::result::Result<pb::SessionReply, Status> {
    reply(id, Kind::Error(error_to_pb(e)))
}

/// Opens (or joins) the session the first message names; returns its id and the session.
pub(super) fn open(sessions: &Sessions, first: pb::SessionRequest) -> Result<(u64, Arc<Session>)> {
    let Some(Op::Open(o)) = first.op else {
        return Err(EngineError::InvalidArgument(
            "the first message of a session stream must be open".into(),
        ));
    };
    let ttl = if o.ttl_seconds == 0.0 {
        DEFAULT_TTL
    } else {
        Duration::try_from_secs_f64(o.ttl_seconds).map_err(|_| {
            EngineError::InvalidArgument(format!("ttl_seconds must be > 0, got {}", o.ttl_seconds))
        })?
    };
    let id = (!o.session_id.is_empty()).then_some(o.session_id.as_str());
    Ok((first.id, sessions.open(id, ttl)?))
}

/// Serves one session stream until the client ends it, the session closes, or the server shuts
/// down; the tools the stream registered leave the session then.
pub(super) async fn drive(
    sessions: Arc<Sessions>,
    session: Arc<Session>,
    mut inbound: Streaming<pb::SessionRequest>,
    tx: Outbound,
    mut closing: watch::Receiver<bool>,
) {
    let (provider, mut calls) = ToolProvider::new();
    let mut u = Underway::default();
    let mut next_call = 0u64;
    loop {
        while u.tasks.try_join_next().is_some() {}
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let done = handle(&sessions, &session, &provider, &mut u, &tx, req).await;
                    if done {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(session = session.id(), %status, "session stream broke");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            },
            Some(ToolCall { tool, args, reply: answer }) = calls.recv() => {
                next_call += 1;
                let msg = pb::SessionReply {
                    id: next_call,
                    kind: Some(Kind::Call(pb::ToolCall { tool, args: map_to_pb(&args) })),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
                u.answers.retain(|_, w| !w.is_closed()); // callers that timed out
                u.answers.insert(next_call, answer);
            }
            _ = closing.changed() => break,
        }
    }
    session.drop_provider(provider.id());
}

/// What a session stream has under way.
#[derive(Default)]
struct Underway {
    /// The engine's tool calls to this stream, by call id: they wait for the stream's answer.
    answers: HashMap<u64, oneshot::Sender<Result<Data>>>,
    /// The stream's requests being worked on, by request id: sending cancels one.
    cancels: HashMap<u64, oneshot::Sender<()>>,
    /// Watches and requests being worked on: they end with the stream (dropping the set aborts
    /// them, and a program study dropped so fails its trials in flight), so nothing keeps the
    /// stream open after it.
    tasks: tokio::task::JoinSet<()>,
}

/// Handles one request; true when the stream is done.
async fn handle(
    sessions: &Arc<Sessions>,
    session: &Arc<Session>,
    provider: &Arc<ToolProvider>,
    u: &mut Underway,
    tx: &Outbound,
    req: pb::SessionRequest,
) -> bool {
    let id = req.id;
    let Some(op) = req.op else {
        let _ = tx
            .send(error(
                id,
                &EngineError::InvalidArgument("a request without an op".into()),
            ))
            .await;
        return false;
    };
    // Every request but an answer is traffic on the session, and needs it open.
    if !matches!(op, Op::Answer(_)) {
        match sessions.get(session.id()) {
            Ok(s) if Arc::ptr_eq(&s, session) => {}
            _ => {
                let gone = EngineError::NotFoundIn {
                    what: "session",
                    name: format!("{} (closed or expired)", session.id()),
                };
                let _ = tx.send(error(id, &gone)).await;
                return true;
            }
        }
    }
    let op = match op {
        Op::Answer(a) => {
            if let Some(w) = u.answers.remove(&id) {
                let r = match a.result {
                    Some(pb::tool_answer::Result::Value(v)) => value_from_pb(v),
                    Some(pb::tool_answer::Result::Error(e)) => Err(error_from_pb(e)),
                    None => Err(EngineError::InvalidArgument(
                        "a tool answer without a result".into(),
                    )),
                };
                let _ = w.send(r);
            }
            return false;
        }
        Op::Watch(_) => {
            u.tasks
                .spawn(forward_watch(id, session.watch(), tx.clone()));
            return false;
        }
        Op::Cancel(_) => {
            if let Some(c) = u.cancels.remove(&id) {
                let _ = c.send(());
            }
            return false;
        }
        Op::Close(_) => {
            let r = sessions.close(session.id());
            let _ = tx
                .send(match r {
                    Ok(()) => reply(id, Kind::Done(pb::Empty {})),
                    Err(e) => error(id, &e),
                })
                .await;
            return true;
        }
        Op::Open(_) => {
            let e = EngineError::InvalidArgument("this stream already joined a session".into());
            let _ = tx.send(error(id, &e)).await;
            return false;
        }
        op => match session_op_from_pb(op) {
            Ok(Some(op)) => op,
            Ok(None) => return false,
            Err(e) => {
                let _ = tx.send(error(id, &e)).await;
                return false;
            }
        },
    };
    let applied = catch_unwind(AssertUnwindSafe(|| {
        session_ops::apply(session, Some(provider), op)
    }))
    .unwrap_or_else(|_| Err(EngineError::Internal("the engine panicked".into())));
    match applied {
        Ok(Applied::Done(out)) => {
            let _ = tx.send(reply(id, session_out_to_pb(&out))).await;
        }
        Err(e) => {
            let _ = tx.send(error(id, &e)).await;
        }
        Ok(pending) => {
            // A request that waits (a registered tool's call, a program study): answered when
            // it is done, or when it was cancelled and its clean-up is done.
            let tx = tx.clone();
            let (cancel, cancelled) = oneshot::channel();
            u.cancels.retain(|_, c| !c.is_closed()); // requests answered since
            u.cancels.insert(id, cancel);
            u.tasks.spawn(async move {
                let r = tokio::select! {
                    r = pending.wait() => Some(r),
                    Ok(()) = cancelled => None,
                };
                // (the request's work was dropped with the select)
                let r = match r {
                    Some(r) => r,
                    None => {
                        crate::runtime::settled().await;
                        Err(EngineError::FailedPrecondition(
                            "the request was cancelled by its caller".into(),
                        ))
                    }
                };
                let _ = tx
                    .send(match r {
                        Ok(out) => reply(id, session_out_to_pb(&out)),
                        Err(e) => error(id, &e),
                    })
                    .await;
            });
        }
    }
    false
}

/// Sends the session's variable changes as events of the watch `id` until the stream ends.
async fn forward_watch(
    id: u64,
    mut rx: broadcast::Receiver<crate::session::VarEvent>,
    tx: Outbound,
) {
    loop {
        let event = match rx.recv().await {
            Ok(e) => pb::VariableEvent {
                name: e.name,
                value: e.value.as_ref().map(value_to_pb),
                version: e.version,
                missed: 0,
            },
            Err(broadcast::error::RecvError::Lagged(n)) => pb::VariableEvent {
                missed: n,
                ..Default::default()
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(reply(id, Kind::Event(event))).await.is_err() {
            return;
        }
    }
}

/// The open sessions, as `ListSessions` reports them.
pub(super) fn list(sessions: &Sessions) -> pb::SessionList {
    pb::SessionList {
        sessions: sessions
            .list()
            .into_iter()
            .map(|s| pb::SessionInfo {
                session_id: s.id,
                idle_seconds: s.idle_seconds,
                ttl_seconds: s.ttl_seconds,
                variables: s.n_variables as u64,
                tools: s.tools,
                indexes: s.indexes,
            })
            .collect(),
    }
}
