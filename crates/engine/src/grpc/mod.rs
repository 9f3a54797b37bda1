//! The remote engine: the gRPC service of `proto/dspex/v1/dspex.proto` (tonic), its
//! authentication and the server that `dspex serve` and `dspex optimize` run.
//!
//! Evaluators on an `Attach` stream are evaluators of the same [`crate::Run`] as the embedded
//! Python threads: the stream task pulls requests from the run and answers it with `done`.

pub mod convert;
mod idle;
mod service;
mod sessions;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::service::InterceptorLayer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

pub use service::{run_options, ActiveRun, EngineService};

use crate::error::{EngineError, Result};

/// Code generated from the .proto at build time.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("dspex.v1");

    /// The encoded file descriptor set, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/dspex_descriptor.bin"));
}

/// Default limit of one message, both ways (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Default limit of Attach and Session streams open at once on one engine.
pub const DEFAULT_MAX_STREAMS: usize = 4096;
/// Default limit of concurrent calls (HTTP/2 streams) on one connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Default of [`ServeOptions::idle_timeout`]: a connection with no call for 10 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest request header block accepted (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// A call's request must have arrived and its answer begun within this (a client's shorter
/// `grpc-timeout` wins); streams only need their first message by then.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// A TLS handshake not done by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Every call must carry `authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM certificate(s) of a CA: with `tls`, only clients presenting a certificate signed by
    /// it get in (mutual TLS).
    pub client_ca: Option<Vec<u8>>,
    /// Serve the gRPC reflection service (for grpcurl and friends).
    pub reflection: bool,
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
    /// Attach and Session streams open at once on the engine (more: RESOURCE_EXHAUSTED).
    pub max_streams: usize,
    /// Concurrent calls on one connection (more are refused by HTTP/2: REFUSED_STREAM).
    pub max_streams_per_connection: u32,
    /// A connection with no call in flight for this long is closed (None: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            token: None,
            tls: None,
            client_ca: None,
            reflection: true,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// What a listening address requires: anything but loopback needs a token, and TLS unless
/// `insecure` says that trials and the token may cross the network in plain text.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>, tls: bool, insecure: bool) -> Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if token.is_none_or(str::is_empty) {
        return Err(EngineError::InvalidArgument(format!(
            "listening on the non-loopback address {addr} requires a token (--token-file or DSPEX_TOKEN)"
        )));
    }
    if !tls && !insecure {
        return Err(EngineError::InvalidArgument(format!(
            "listening on the non-loopback address {addr} without TLS sends the token and every trial in plain text: \
             give --tls-cert and --tls-key, or --insecure to accept that (a trusted network, a TLS-terminating proxy)"
        )));
    }
    Ok(())
}

/// Byte comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// The interceptor that checks the token on every call.
#[derive(Clone)]
struct Auth {
    token: Option<Arc<[u8]>>,
    rejected: Arc<RejectLog>,
}

/// Rejected calls, logged as a warning at most once per [`RejectLog::PERIOD`] (with how many
/// went unlogged), so a client hammering the port with a wrong token cannot flood the log.
#[derive(Default)]
struct RejectLog(std::sync::Mutex<(Option<std::time::Instant>, u64)>);

impl RejectLog {
    const PERIOD: Duration = Duration::from_secs(10);

    fn reject(&self, peer: Option<SocketAddr>) {
        let Ok(mut g) = self.0.lock() else { return };
        let (last, quiet) = &mut *g;
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::PERIOD) {
            *quiet += 1;
            return;
        }
        let peer = peer.map_or_else(|| "an unknown peer".to_string(), |p| p.to_string());
        tracing::warn!(
            "rejected a call from {peer}: missing or wrong token ({} more rejected since the last warning)",
            *quiet
        );
        *last = Some(now);
        *quiet = 0;
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> std::result::Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token) {
            Ok(req)
        } else {
            self.rejected.reject(req.remote_addr());
            Err(Status::unauthenticated("missing or wrong token"))
        }
    }
}

/// Serves `service` on `listener` until `shutdown` completes, then drains (graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    service: EngineService,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let io = |e: &dyn std::fmt::Display| EngineError::Internal(format!("gRPC server: {e}"));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<pb::engine_server::EngineServer<EngineService>>()
        .await;
    let reflection = if options.reflection {
        Some(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(|e| io(&e))?,
        )
    } else {
        None
    };
    service.set_max_message_bytes(options.max_message_bytes);
    service.set_max_streams(options.max_streams);
    let engine = pb::engine_server::EngineServer::new(service)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    let token = options
        .token
        .filter(|t| !t.is_empty())
        .map(|t| Arc::from(t.into_bytes()));
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(options.max_streams_per_connection))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .timeout(CALL_TIMEOUT);
    match (options.tls, options.client_ca) {
        (Some((cert, key)), ca) => {
            let mut cfg = ServerTlsConfig::new()
                .identity(Identity::from_pem(cert, key))
                .timeout(TLS_HANDSHAKE_TIMEOUT);
            if let Some(ca) = ca {
                cfg = cfg.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(cfg).map_err(|e| io(&e))?;
        }
        (None, Some(_)) => {
            return Err(EngineError::InvalidArgument(
                "a client CA (mutual TLS) needs the server's own certificate and key".into(),
            ))
        }
        (None, None) => {}
    }
    // TCP_NODELAY on every accepted connection. `Server::tcp_nodelay` is ignored by
    // `serve_with_incoming*`: without this, Nagle holds a small frame (a Reply) while an
    // earlier one (an Evaluate) waits for the client's delayed ACK, ~40 ms per stall, which
    // capped `async def` objectives with several trials in flight on one stream at ~50/s.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let auth = Auth {
        token,
        rejected: Arc::default(),
    };
    let conns = idle::Connections::default();
    let (wrap, idle_timeout) = (conns.clone(), options.idle_timeout);
    let incoming = incoming.map(move |c| c.map(|tcp| wrap.wrap(tcp, idle_timeout)));
    builder
        .layer(InterceptorLayer::new(auth))
        .layer(idle::CountCalls(conns))
        .add_service(health)
        .add_optional_service(reflection)
        .add_service(engine)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| io(&e))
}

/// An engine server on a free loopback port, with a fresh random token, serving one study to
/// the engine's own worker processes (`dspex optimize`, `study.optimize(processes=N)`).
pub struct LoopbackServer {
    service: EngineService,
    study: Option<Arc<crate::Study>>,
    address: SocketAddr,
    token: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl LoopbackServer {
    /// Listens on 127.0.0.1 (a free port) and serves `study` (heartbeats every 500 ms: the
    /// workers are local). Call from within the runtime.
    pub async fn start(study: Arc<crate::Study>) -> Result<LoopbackServer> {
        Self::start_at(study, None, None).await
    }

    /// [`LoopbackServer::start`] on `bind` (`host:port`, port 0 for a free one; default
    /// 127.0.0.1:0), with TLS when `tls` (PEM certificate chain and key) is given: for workers
    /// on other machines (a cluster's). The token is always required.
    pub async fn start_at(
        study: Arc<crate::Study>,
        bind: Option<SocketAddr>,
        tls: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<LoopbackServer> {
        let service =
            EngineService::with_heartbeat(study.storage().clone(), Duration::from_millis(500));
        service.add_study(study.clone());
        Self::listen(service, Some(study), bind, tls).await
    }

    /// Listens on 127.0.0.1 (a free port) and serves `sessions`, the sessions of this process,
    /// so that other processes join them (a program study's metric workers). Call from within
    /// the runtime.
    pub async fn start_sessions(sessions: Arc<crate::session::Sessions>) -> Result<LoopbackServer> {
        Self::start_sessions_at(sessions, None, None).await
    }

    /// [`LoopbackServer::start_sessions`] on `bind`, with TLS when `tls` is given (see
    /// [`LoopbackServer::start_at`]).
    pub async fn start_sessions_at(
        sessions: Arc<crate::session::Sessions>,
        bind: Option<SocketAddr>,
        tls: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<LoopbackServer> {
        let service = EngineService::with_heartbeat(
            Arc::new(crate::InMemoryStorage::new()),
            Duration::from_millis(500),
        )
        .sharing_sessions(sessions);
        Self::listen(service, None, bind, tls).await
    }

    async fn listen(
        service: EngineService,
        study: Option<Arc<crate::Study>>,
        bind: Option<SocketAddr>,
        tls: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<LoopbackServer> {
        let bind = bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| EngineError::InvalidArgument(format!("cannot listen on {bind}: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| EngineError::Internal(format!("cannot listen on {bind}: {e}")))?;
        let token = crate::cli::random_token();
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(serve(
            listener,
            service.clone(),
            ServeOptions {
                token: Some(token.clone()),
                tls,
                reflection: address.ip().is_loopback(),
                ..Default::default()
            },
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        Ok(LoopbackServer {
            service,
            study,
            address,
            token,
            stop,
            task,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The token every call must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Starts a run of the study that attached workers evaluate; `space`: parameters sampled
    /// before each evaluation is sent (study.toml's search space).
    pub fn start_run(
        &self,
        options: crate::RunOptions,
        max_retries: u32,
        space: Arc<std::collections::BTreeMap<String, dspex_optimizer::Distribution>>,
    ) -> Result<Arc<crate::Run>> {
        let study = self.study.clone().ok_or_else(|| {
            EngineError::InvalidOperation("this server serves sessions, not a study".into())
        })?;
        let run = service::start_stream_run(study.clone(), options, max_retries)?;
        self.service.set_active_run(
            study.name(),
            ActiveRun {
                run: run.clone(),
                space,
            },
        )?;
        Ok(run)
    }

    /// Ends the open streams, interrupts the active runs and stops listening (without
    /// waiting for the server task).
    pub fn close(&self) {
        self.service.shutdown();
        let _ = self.stop.send(true);
    }

    /// [`LoopbackServer::close`], then waits up to `grace` for the server to stop.
    pub async fn shutdown(self, grace: Duration) {
        self.close();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn non_loopback_needs_a_token_and_tls_or_insecure() {
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let lo6: SocketAddr = "[::1]:1".parse().unwrap();
        for (tls, insecure) in [(false, false), (true, false), (false, true), (true, true)] {
            assert!(check_bind(&any, None, tls, insecure).is_err());
            assert!(check_bind(&any, Some(""), tls, insecure).is_err());
            assert_eq!(
                check_bind(&any, Some("t"), tls, insecure).is_ok(),
                tls || insecure
            );
            assert!(check_bind(&lo, None, tls, insecure).is_ok());
            assert!(check_bind(&lo6, None, tls, insecure).is_ok());
        }
        let e = check_bind(&any, Some("t"), false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-cert") && e.contains("--insecure"), "{e}");
    }

    #[test]
    fn rejections_are_logged_at_most_once_per_period() {
        let log = RejectLog::default();
        for _ in 0..5 {
            log.reject(None);
        }
        let g = log.0.lock().unwrap();
        assert!(g.0.is_some());
        assert_eq!(g.1, 4, "four rejections counted, not logged");
    }
}
