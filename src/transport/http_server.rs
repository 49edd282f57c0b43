//! [`HttpServer`]: serves an axum app over HTTP/1.1, plain or TLS, with the bounds a server
//! that faces hostile clients needs. At most `max_connections` connections are served at once
//! (more wait in the kernel's backlog); the TLS handshake and each request's headers must
//! arrive within `header_timeout`; a kept-alive connection with no request for `idle_timeout` is
//! closed; a client that stops reading (its writes blocked for `write_timeout`) is dropped, so a
//! stalled reader cannot pin a connection, a stream or shutdown. On shutdown the server stops
//! accepting, lets each connection finish its exchange, and drops whatever is left at the
//! deadline. Every socket has TCP_NODELAY (SSE events are small writes).
//!
//! The deadlines are kept by one watchdog per connection that reads what the connection's I/O
//! and its requests record ([`Activity`]); hyper's own header timer is only a backstop, since
//! it cannot tell a slow header from an idle connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::tls::ServerTls;

/// The bounds of an HTTP server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// For the TLS handshake and for each request's headers, from their first byte.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A connection whose writes have been blocked this long (the client stopped reading) is
    /// dropped.
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// A bound listener and how to serve it.
pub struct HttpServer {
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: ServerLimits,
}

/// Headers beyond these sizes get 431: no legitimate MCP request needs more.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// hyper's read buffer per connection: bounds what a connection costs before its body is read.
const MAX_BUF: usize = 64 * 1024;

impl HttpServer {
    pub fn new(listener: TcpListener, tls: Option<Arc<ServerTls>>, limits: ServerLimits) -> Self {
        Self {
            listener,
            tls,
            limits,
        }
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `app` until `shutdown` fires, then drains: connections finish their exchange (and
    /// close), until `drain_deadline`, when the rest are dropped.
    pub async fn serve(
        self,
        app: Router,
        shutdown: CancellationToken,
        drain_deadline: impl Future<Output = ()>,
    ) {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let connections = TaskTracker::new();
        let kill = CancellationToken::new();
        let tls = self
            .tls
            .as_ref()
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.config()));
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            // A backstop only: the watchdog keeps the real deadlines (see the module docs).
            .header_read_timeout(self.limits.idle_timeout + self.limits.header_timeout)
            .max_headers(MAX_HEADERS)
            .max_header_size(MAX_HEADER_BYTES)
            .max_buf_size(MAX_BUF);
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
                _ = shutdown.cancelled() => break,
            };
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            let connection = Connection {
                app: app.clone(),
                http: http.clone(),
                limits: self.limits.clone(),
                shutdown: shutdown.clone(),
                kill: kill.clone(),
                peer,
            };
            let tls = tls.clone();
            connections.spawn(async move {
                connection.run(tcp, tls).await;
                drop(permit);
            });
        }
        drop(self.listener);
        connections.close();
        tokio::select! {
            _ = connections.wait() => {}
            _ = drain_deadline => {
                tracing::warn!(left = connections.len(), "drain time is up; dropping the connections left");
                kill.cancel();
                connections.wait().await;
            }
        }
    }
}

/// What one connection task needs.
struct Connection {
    app: Router,
    http: http1::Builder,
    limits: ServerLimits,
    shutdown: CancellationToken,
    kill: CancellationToken,
    peer: std::net::SocketAddr,
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Header,
    Idle,
    Write,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let activity = Arc::new(Activity::new());
        match tls {
            None => {
                self.serve(Watched::new(tcp, activity.clone()), activity)
                    .await
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(tcp);
                let stream = tokio::select! {
                    stream = tokio::time::timeout(self.limits.header_timeout, handshake) => stream,
                    _ = self.kill.cancelled() => return,
                };
                match stream {
                    Ok(Ok(stream)) => {
                        self.serve(Watched::new(stream, activity.clone()), activity)
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(self, io: Watched<I>, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let (app, tracked) = (self.app.clone(), activity.clone());
        let app = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // Started now; over when the response body is sent, or the request dropped.
            let guard = RequestGuard::start(tracked.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(GuardedBody {
                        body,
                        _guard: guard,
                    })
                }))
            }
        });
        let service = TowerToHyperService::new(app);
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let watchdog = watchdog(&activity, &self.limits);
        let mut watchdog = std::pin::pin!(watchdog);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                expired = watchdog.as_mut(), if !draining => match expired {
                    Expired::Idle => {
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    Expired::Header | Expired::Write => {
                        tracing::debug!(%peer, ?expired, "dropping a connection past its deadline");
                        return;
                    }
                },
                _ = self.shutdown.cancelled(), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ = self.kill.cancelled() => return,
            }
        }
    }
}

/// What a connection's I/O and requests record for its watchdog; times are milliseconds since
/// the connection began, plus one (0: not set).
struct Activity {
    began: Instant,
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight.
    idle_since: AtomicU64,
    /// When the first bytes of a request head arrived while idle (the head is being read).
    head_since: AtomicU64,
    /// When a write (or flush) last found the socket full and has not got through since.
    blocked_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            began: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            // A new connection owes its first request's headers at once.
            head_since: AtomicU64::new(1),
            blocked_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.began.elapsed().as_millis() as u64 + 1
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
    }

    fn request_ended(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn read_some(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == 0
        {
            self.head_since.store(self.now(), Ordering::Release);
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let since = self.blocked_since.load(Ordering::Relaxed);
        match (blocked, since) {
            (true, 0) => self.blocked_since.store(self.now(), Ordering::Relaxed),
            (false, s) if s != 0 => self.blocked_since.store(0, Ordering::Relaxed),
            _ => {}
        }
    }

    /// The deadline that runs out first by `now` (see [`Activity::now`]), if one has; else
    /// how long to wait before looking again.
    fn expired(&self, limits: &ServerLimits, now: u64) -> Result<Expired, Duration> {
        let millis = |d: Duration| d.as_millis() as u64;
        let mut deadlines = Vec::with_capacity(2);
        let blocked = self.blocked_since.load(Ordering::Relaxed);
        if blocked != 0 {
            deadlines.push((Expired::Write, blocked + millis(limits.write_timeout)));
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let head = self.head_since.load(Ordering::Acquire);
            if head != 0 {
                deadlines.push((Expired::Header, head + millis(limits.header_timeout)));
            } else {
                let idle = self.idle_since.load(Ordering::Acquire);
                deadlines.push((Expired::Idle, idle + millis(limits.idle_timeout)));
            }
        }
        match deadlines.iter().min_by_key(|(_, at)| *at) {
            Some((expired, at)) if *at <= now => Ok(*expired),
            // Check again at the next deadline, and at least every second (requests start and
            // end, writes block, without waking the watchdog).
            Some((_, at)) => Err(Duration::from_millis((at - now).min(1000))),
            None => Err(Duration::from_secs(1)),
        }
    }
}

async fn watchdog(activity: &Activity, limits: &ServerLimits) -> Expired {
    loop {
        match activity.expired(limits, activity.now()) {
            Ok(expired) => return expired,
            Err(wait) => tokio::time::sleep(wait).await,
        }
    }
}

/// Marks a request as over when dropped: with its response body, once that is sent (or with
/// the request, if it never got one).
struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn start(activity: Arc<Activity>) -> Self {
        activity.request_started();
        Self(activity)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that ends its request when it is dropped.
struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's I/O, recording reads and blocked writes for its watchdog.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    fn new(io: I, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits {
            max_connections: 1,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn deadlines_follow_what_the_connection_does() {
        // Stamps are set "now" (about 1 ms into the connection's life); `expired` is asked
        // about later moments.
        let limits = limits();
        let fresh = Activity::new();
        assert!(
            fresh.expired(&limits, 50).is_err(),
            "a new connection has its header time"
        );
        assert_eq!(
            fresh.expired(&limits, 150),
            Ok(Expired::Header),
            "no request in time"
        );

        let busy = Activity::new();
        busy.request_started();
        assert!(
            busy.expired(&limits, 5_000).is_err(),
            "a long request is not idle"
        );
        busy.write_blocked(true);
        assert_eq!(
            busy.expired(&limits, 250),
            Ok(Expired::Write),
            "a reader that stopped"
        );
        busy.write_blocked(false);
        busy.request_ended();
        assert!(busy.expired(&limits, 250).is_err(), "idle, within its time");
        assert_eq!(busy.expired(&limits, 350), Ok(Expired::Idle));

        let next = Activity::new();
        next.request_started();
        next.request_ended();
        next.read_some();
        assert_eq!(
            next.expired(&limits, 150),
            Ok(Expired::Header),
            "a next request's head that trickles in"
        );
    }
}
