//! Idle connections: a connection with no call in flight for the idle timeout is closed.
//!
//! HTTP/2 keepalive finds dead peers, not live ones that hold a connection open doing nothing
//! (each costs the engine about 23 KB). Every accepted connection is wrapped in [`IdleIo`],
//! which ends its input (an end of file, so the server closes the connection) once no call
//! has been in flight on it for the timeout; the [`CountCalls`] layer counts each connection's
//! calls, a streaming call (Attach, Session) until its response stream ends. A client's
//! channel opens a new connection for its next call.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// The open connections by peer address, with their calls in flight.
#[derive(Clone, Default)]
pub(crate) struct Connections {
    by_peer: Arc<Mutex<HashMap<SocketAddr, Arc<Activity>>>>,
}

/// One connection's calls in flight and when the last one started or ended.
#[derive(Debug)]
struct Activity {
    calls: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock() = Instant::now();
    }

    /// When the connection becomes idle for `timeout` (None while a call is in flight).
    fn idle_at(&self, timeout: Duration) -> Option<Instant> {
        (self.calls.load(Ordering::Acquire) == 0).then(|| *self.last.lock() + timeout)
    }
}

impl Connections {
    /// Wraps an accepted connection, to be closed once idle for `timeout` (None: never).
    pub(crate) fn wrap(&self, io: TcpStream, timeout: Option<Duration>) -> IdleIo {
        let activity = Arc::new(Activity {
            calls: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        });
        let peer = io.peer_addr().ok();
        if let Some(p) = peer {
            self.by_peer.lock().insert(p, activity.clone());
        }
        IdleIo {
            io,
            activity,
            timeout,
            timer: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            closed: false,
            peer,
            conns: self.clone(),
        }
    }

    /// Counts a call on the connection from `peer` until the guard drops.
    fn start_call(&self, peer: SocketAddr) -> Option<CallGuard> {
        let activity = self.by_peer.lock().get(&peer)?.clone();
        activity.calls.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Some(CallGuard(activity))
    }
}

/// A call in flight (see [`Connections::start_call`]).
struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted connection whose input ends once it has been idle for the timeout.
pub(crate) struct IdleIo {
    io: TcpStream,
    activity: Arc<Activity>,
    timeout: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    closed: bool,
    peer: Option<SocketAddr>,
    conns: Connections,
}

impl Drop for IdleIo {
    fn drop(&mut self) {
        if let Some(p) = self.peer {
            let mut by_peer = self.conns.by_peer.lock();
            if by_peer
                .get(&p)
                .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
            {
                by_peer.remove(&p);
            }
        }
    }
}

impl Connected for IdleIo {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(r) = Pin::new(&mut this.io).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        // Nothing to read: wake up when the connection may have become idle.
        let (Some(timer), Some(timeout)) = (this.timer.as_mut(), this.timeout) else {
            return Poll::Pending;
        };
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match this.activity.idle_at(timeout) {
                Some(at) if at <= now => {
                    tracing::debug!(peer = ?this.peer, ?timeout, "idle connection closed");
                    this.closed = true;
                    return Poll::Ready(Ok(()));
                }
                Some(at) => timer.as_mut().reset(at),
                None => timer.as_mut().reset(now + timeout),
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The layer that counts each connection's calls in flight (see the module docs).
#[derive(Clone)]
pub(crate) struct CountCalls(pub(crate) Connections);

impl<S> tower_layer::Layer<S> for CountCalls {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            conns: self.0.clone(),
        }
    }
}

/// A service whose calls are counted on their connection.
#[derive(Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    conns: Connections,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for Counted<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body + Send + Unpin + 'static,
{
    type Response = http::Response<Guarded<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ext = req.extensions();
        let peer = ext
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|i| i.get_ref().remote_addr())
            });
        let guard = peer.and_then(|p| self.conns.start_call(p));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| Guarded {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its call counted until it ends (or is dropped).
pub(crate) struct Guarded<B> {
    body: B,
    _guard: Option<CallGuard>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
