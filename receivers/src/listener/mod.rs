//! The listener every receiver serves through: accepts TCP connections (TLS optional), detects
//! HTTP/1.1 or HTTP/2, and serves them with hyper under one set of [`Limits`] — header, body,
//! request and idle timeouts, max connections, max HTTP/2 streams — and bearer/mTLS [`auth`].
//! Every refusal is counted: connections in `sluice_receiver_connections_refused_total{reason}`
//! (`max_connections`, `header_timeout`, `tls_handshake`), requests in
//! `sluice_receiver_refused_requests_total{reason}` (`unauthenticated`, `body_timeout`,
//! `request_timeout`, `max_concurrent_streams`; no `signal` label: the listener does not decode).

pub mod auth;
pub mod config;
pub mod tls;

pub use config::{AuthConfig, Limits, TlsConfig};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sluice_core::metrics::Metrics;
use sluice_core::LogEvery;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A file's modification time and length, to notice a changed certificate or token file.
pub(crate) type Stamp = Option<(SystemTime, u64)>;

pub(crate) fn file_stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// What a listener speaks, for the refusals it writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// gRPC: refusals are trailers-only responses with a `grpc-status`.
    Grpc,
    /// Plain HTTP: refusals are HTTP status codes.
    Http,
}

/// A receiver's TLS and auth state, shared by its listeners and kept current by [`Security::watch`].
#[derive(Default)]
pub struct Security {
    tls: Option<tls::Tls>,
    auth: Option<auth::Auth>,
}

impl Security {
    /// Loads certificates and tokens now (errors name the file or variable, never a secret).
    pub fn new(tls: Option<&TlsConfig>, auth: Option<&AuthConfig>) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            tls: tls
                .map(tls::Tls::new)
                .transpose()
                .map_err(|e| format!("tls: {e}"))?,
            auth: auth
                .map(auth::Auth::new)
                .transpose()
                .map_err(|e| format!("auth: {e}"))?,
        }))
    }

    /// Re-reads changed certificate and token files until `shutdown`.
    pub async fn watch(self: Arc<Self>, receiver: String, shutdown: CancellationToken) {
        let tls_every = self.tls.as_ref().map(tls::Tls::interval);
        let auth_every = self
            .auth
            .as_ref()
            .filter(|a| a.watches_file())
            .map(auth::Auth::interval);
        let Some(every) = [tls_every, auth_every].into_iter().flatten().min() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let this = self.clone();
            let name = receiver.clone();
            // File reads and PEM parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(t) = &this.tls {
                    t.check(&name);
                }
                if let Some(a) = &this.auth {
                    a.check_file(&name);
                }
            })
            .await;
        }
    }
}

/// Refusals come in floods: each kind is logged at most once per 10 s per listener.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What one listener shares with its connections.
struct Shared {
    receiver: String,
    listener: &'static str,
    flavor: Flavor,
    limits: Limits,
    security: Arc<Security>,
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    open: Gauge,
    refused_max_connections: Counter,
    refused_header_timeout: Counter,
    refused_tls: Counter,
    unauthenticated: Counter,
    body_timeout: Counter,
    request_timeout: Counter,
    log_max: LogEvery,
    log_tls: LogEvery,
    log_auth: LogEvery,
    log_accept: LogEvery,
    refused_streams: Counter,
    log_streams: Arc<LogEvery>,
}

/// A bound socket with the limits and security it serves under.
pub struct Listener {
    tcp: TcpListener,
    shared: Arc<Shared>,
}

/// The HTTP/2 preface; a connection that starts otherwise is HTTP/1.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Listener {
    /// Wraps `tcp` (listener `listener` of receiver `receiver`, e.g. `"grpc"`).
    pub fn new(
        tcp: TcpListener,
        receiver: &str,
        listener: &'static str,
        flavor: Flavor,
        limits: &Limits,
        security: Arc<Security>,
        metrics: &Metrics,
    ) -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // Header time is watched per connection below (so an idle keep-alive connection is
        // governed by idle_timeout, not by the header timer hyper would start at once).
        h1.timer(TokioTimer::new()).header_read_timeout(None);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams);
        let conns = |reason| metrics.receiver_connections_refused(receiver, listener, reason);
        let reqs = |reason| metrics.receiver_refused_requests_unrouted(receiver, reason);
        Self {
            tcp,
            shared: Arc::new(Shared {
                receiver: receiver.to_owned(),
                listener,
                flavor,
                limits: limits.clone(),
                security,
                h1,
                h2,
                open: metrics.receiver_connections(receiver, listener),
                refused_max_connections: conns("max_connections"),
                refused_header_timeout: conns("header_timeout"),
                refused_tls: conns("tls_handshake"),
                unauthenticated: reqs("unauthenticated"),
                body_timeout: reqs("body_timeout"),
                request_timeout: reqs("request_timeout"),
                log_max: LogEvery::new(LOG_EVERY),
                log_tls: LogEvery::new(LOG_EVERY),
                log_auth: LogEvery::new(LOG_EVERY),
                log_accept: LogEvery::new(LOG_EVERY),
                refused_streams: reqs("max_concurrent_streams"),
                log_streams: Arc::new(LogEvery::new(LOG_EVERY)),
            }),
        }
    }

    /// The bound address, for the start-up log.
    pub fn local_addr(&self) -> String {
        self.tcp
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.shared.security.tls.is_some()
    }

    /// Serves `svc` until `shutdown`; then stops accepting, asks open connections to finish
    /// (in-flight requests complete; none is held past `request_timeout`) and returns.
    pub async fn serve<S, B>(self, svc: S, shutdown: CancellationToken)
    where
        S: tower::Service<Request<TimedBody>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Self { tcp, shared } = self;
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                a = tcp.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    if shared.log_accept.check().is_some() {
                        tracing::warn!(receiver = %shared.receiver, listener = shared.listener, error = %e, "accept failed (logged at most every 10 s)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                shared.refused_max_connections.inc();
                if shared.log_max.check().is_some() {
                    tracing::warn!(receiver = %shared.receiver, listener = shared.listener, max_connections = shared.limits.max_connections, "connection refused: max_connections reached (counted in sluice_receiver_connections_refused_total{{reason=\"max_connections\"}}; logged at most every 10 s)");
                }
                drop(stream);
                continue;
            };
            tracker.spawn(connection(
                stream,
                permit,
                shared.clone(),
                svc.clone(),
                shutdown.clone(),
            ));
        }
        drop(tcp);
        tracker.close();
        tracker.wait().await;
    }
}

/// Decrements the open-connections gauge when the connection ends, however it ends.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn connection<S, B>(
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    sh: Arc<Shared>,
    svc: S,
    shutdown: CancellationToken,
) where
    S: tower::Service<Request<TimedBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    sh.open.inc();
    let _open = Open(sh.open.clone());
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + sh.limits.header_read_timeout.0;
    match &sh.security.tls {
        None => serve_io(stream, false, deadline, sh, svc, shutdown).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            // A connection still handshaking holds up no shutdown.
            let handshake = tokio::select! {
                () = shutdown.cancelled() => return,
                r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => r,
            };
            match handshake {
                Ok(Ok(s)) => {
                    let verified = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    serve_io(s, verified, deadline, sh, svc, shutdown).await;
                }
                Ok(Err(e)) => {
                    sh.refused_tls.inc();
                    if sh.log_tls.check().is_some() {
                        tracing::warn!(receiver = %sh.receiver, listener = sh.listener, error = %e, "TLS handshake failed (a plaintext client, an untrusted or missing client certificate...; counted in sluice_receiver_connections_refused_total{{reason=\"tls_handshake\"}}; logged at most every 10 s)");
                    }
                }
                Err(_) => {
                    sh.refused_header_timeout.inc();
                }
            }
        }
    }
}

/// Per-connection bookkeeping the watchdog reads: requests in flight, when the last one ended,
/// and since when request bytes have been arriving with no request started (HTTP/1 header time).
struct ConnState {
    start: Instant,
    in_flight: AtomicU64,
    started: AtomicU64,
    /// Milliseconds since `start` + 1 at the last request's end (0: none yet).
    last_end: AtomicU64,
    /// Milliseconds since `start` + 1 when header bytes began arriving (0: not waiting).
    header_since: AtomicU64,
    wake: Notify,
}

impl ConnState {
    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.start).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms.saturating_sub(1))
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.header_since.store(0, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Bytes arrived: with no request in flight they are a header, whose clock starts now.
    fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.header_since.load(Ordering::Relaxed) == 0
        {
            self.header_since
                .store(self.ms(Instant::now()), Ordering::Relaxed);
            self.wake.notify_one();
        }
    }
}

/// One request in flight; its end is when the idle clock restarts.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        s.last_end.store(s.ms(Instant::now()), Ordering::Relaxed);
        if s.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            s.wake.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// The connection's IO with the bytes read during protocol detection put back in front,
    /// noting when header bytes arrive.
    struct Prefixed<I> {
        head: [u8; 24],
        pos: usize,
        len: usize,
        state: Arc<ConnState>,
        watch_headers: bool,
        // HTTP/2 only: reads the frames hyper writes, to count the streams h2 refuses.
        frames: Option<FrameWatch>,
        #[pin]
        io: I,
    }
}

impl<I: AsyncRead> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if let Some(rest) = this
            .head
            .get(*this.pos..*this.len)
            .filter(|r| !r.is_empty())
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            *this.pos += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if *this.watch_headers && buf.filled().len() > before {
            this.state.read_some();
        }
        r
    }
}

impl<I: AsyncWrite> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let (Some(w), Poll::Ready(Ok(n))) = (this.frames.as_mut(), &r) {
            w.saw(buf.get(..*n).unwrap_or_default());
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if let (Some(w), Poll::Ready(Ok(n))) = (this.frames.as_mut(), &r) {
            let mut left = *n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                w.saw(b.get(..take).unwrap_or_default());
                left -= take;
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Follows the HTTP/2 frames a connection writes and counts `RST_STREAM(REFUSED_STREAM)`: h2
/// refuses streams over `max_concurrent_streams` itself without telling hyper, so the frames are
/// the only place the refusal can be seen. Skipping payloads by their length keeps it cheap.
struct FrameWatch {
    sh: Arc<Shared>,
    /// Bytes of the current frame's header (9) or RST_STREAM error code (4) read so far.
    got: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    /// Reading an RST_STREAM's 4-byte error code rather than a frame header.
    in_code: bool,
}

/// HTTP/2 frame type RST_STREAM and error code REFUSED_STREAM (RFC 9113).
const RST_STREAM: u8 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

impl FrameWatch {
    fn new(sh: Arc<Shared>) -> Self {
        Self {
            sh,
            got: [0; 9],
            have: 0,
            skip: 0,
            in_code: false,
        }
    }

    /// Takes the next bytes written to the connection.
    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let want = if self.in_code { 4 } else { 9 };
            let n = (want - self.have).min(bytes.len());
            if let (Some(dst), Some(src)) =
                (self.got.get_mut(self.have..self.have + n), bytes.get(..n))
            {
                dst.copy_from_slice(src);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.have < want {
                return;
            }
            self.have = 0;
            let [a, b, c, d, ..] = self.got;
            if self.in_code {
                self.in_code = false;
                if u32::from_be_bytes([a, b, c, d]) == REFUSED_STREAM {
                    self.refused();
                }
                continue;
            }
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if d == RST_STREAM && len == 4 {
                self.in_code = true;
            } else {
                self.skip = len;
            }
        }
    }

    fn refused(&self) {
        self.sh.refused_streams.inc();
        if let Some(skipped) = self.sh.log_streams.check() {
            tracing::warn!(receiver = %self.sh.receiver, listener = self.sh.listener, max_concurrent_streams = self.sh.limits.max_concurrent_streams, skipped,
                "HTTP/2 stream refused: the client opened more streams than max_concurrent_streams (counted in sluice_receiver_refused_requests_total{{reason=\"max_concurrent_streams\"}}; logged at most every 10 s)");
        }
    }
}

/// What the watchdog decided.
enum Verdict {
    Fine,
    HeaderTimeout,
    Idle,
}

async fn serve_io<I, S, B>(
    mut io: I,
    verified: bool,
    deadline: Instant,
    sh: Arc<Shared>,
    svc: S,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<TimedBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Protocol detection: read until the bytes leave the HTTP/2 preface or complete it.
    let mut head = [0u8; 24];
    let mut len = 0;
    let h2 = loop {
        let Some(room) = head.get_mut(len..) else {
            break true;
        };
        let read = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout_at(deadline, io.read(room)) => r,
        };
        match read {
            Err(_) => {
                sh.refused_header_timeout.inc();
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => len += n,
        }
        if head.get(..len) != PREFACE.get(..len) {
            break false;
        }
        if len == PREFACE.len() {
            break true;
        }
    };
    let state = Arc::new(ConnState {
        start: Instant::now(),
        in_flight: AtomicU64::new(0),
        started: AtomicU64::new(0),
        last_end: AtomicU64::new(0),
        header_since: AtomicU64::new(0),
        wake: Notify::new(),
    });
    // The header clock of the first request started at accept.
    let since_accept = deadline - sh.limits.header_read_timeout.0;
    state.header_since.store(
        if h2 {
            0
        } else {
            state.ms(since_accept.max(state.start))
        },
        Ordering::Relaxed,
    );
    let io = TokioIo::new(Prefixed {
        head,
        pos: 0,
        len,
        state: state.clone(),
        watch_headers: !h2,
        frames: h2.then(|| FrameWatch::new(sh.clone())),
        io,
    });
    let service = {
        let (sh, state) = (sh.clone(), state.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(req, sh.clone(), svc.clone(), state.begin(), verified)
        })
    };
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            let mut closing: Option<Instant> = None;
            // One timer for the connection's life: it is moved earlier when a deadline comes
            // sooner, and re-armed only once it fired (an early wake just re-checks), so requests
            // do not register and cancel timers (two wakes per request otherwise).
            let sleep = tokio::time::sleep_until(next_wake(&state, &sh.limits, h2, None));
            tokio::pin!(sleep);
            loop {
                let wake = next_wake(&state, &sh.limits, h2, closing);
                if sleep.is_elapsed() || wake < sleep.deadline() {
                    sleep.as_mut().reset(wake);
                }
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(receiver = %sh.receiver, listener = sh.listener, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = shutdown.cancelled(), if closing.is_none() => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    () = state.wake.notified() => {}
                    () = &mut sleep => {
                        let now = Instant::now();
                        if let Some(c) = closing {
                            if now >= c + sh.limits.request_timeout.0 {
                                break;
                            }
                            continue;
                        }
                        match verdict(&state, &sh.limits, h2, now) {
                            Verdict::Fine => {}
                            Verdict::HeaderTimeout => {
                                sh.refused_header_timeout.inc();
                                break;
                            }
                            Verdict::Idle => {
                                conn.as_mut().graceful_shutdown();
                                closing = Some(now);
                            }
                        }
                    }
                }
            }
        }};
    }
    if h2 {
        drive!(sh.h2.serve_connection(io, service))
    } else {
        drive!(sh.h1.serve_connection(io, service))
    }
}

fn next_wake(state: &ConnState, limits: &Limits, h2: bool, closing: Option<Instant>) -> Instant {
    if let Some(c) = closing {
        return c + limits.request_timeout.0;
    }
    let header = limits.header_read_timeout.0;
    let idle = limits.idle_timeout.0;
    let mut wake = if state.in_flight.load(Ordering::Relaxed) == 0 {
        let last = state.last_end.load(Ordering::Relaxed);
        state.at(last) + idle
    } else {
        Instant::now() + idle
    };
    if h2 {
        if state.started.load(Ordering::Relaxed) == 0 {
            wake = wake.min(state.start + header);
        }
    } else {
        let since = state.header_since.load(Ordering::Relaxed);
        if since != 0 {
            wake = wake.min(state.at(since) + header);
        }
    }
    wake
}

fn verdict(state: &ConnState, limits: &Limits, h2: bool, now: Instant) -> Verdict {
    let header = limits.header_read_timeout.0;
    if h2 {
        if state.started.load(Ordering::Relaxed) == 0 && now >= state.start + header {
            return Verdict::HeaderTimeout;
        }
    } else {
        let since = state.header_since.load(Ordering::Relaxed);
        if since != 0
            && state.in_flight.load(Ordering::Relaxed) == 0
            && now >= state.at(since) + header
        {
            return Verdict::HeaderTimeout;
        }
    }
    if state.in_flight.load(Ordering::Relaxed) == 0
        && now >= state.at(state.last_end.load(Ordering::Relaxed)) + limits.idle_timeout.0
    {
        return Verdict::Idle;
    }
    Verdict::Fine
}

/// Why the listener answered a request itself.
enum Refusal {
    Unauthenticated,
    Timeout,
}

impl Shared {
    fn refusal<B>(&self, why: Refusal) -> Response<Either<B, Full<Bytes>>> {
        let (status, grpc, msg) = match why {
            Refusal::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "16",
                "missing or invalid bearer token",
            ),
            Refusal::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "4",
                "request not completed within request_timeout",
            ),
        };
        let mut resp = match self.flavor {
            Flavor::Grpc => {
                let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
                let h = r.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                h.insert("grpc-status", HeaderValue::from_static(grpc));
                h.insert("grpc-message", HeaderValue::from_static(msg));
                r
            }
            Flavor::Http => {
                let mut r =
                    Response::new(Either::Right(Full::new(Bytes::from_static(msg.as_bytes()))));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
        };
        if matches!(why, Refusal::Unauthenticated) {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

async fn handle<S, B>(
    req: Request<Incoming>,
    sh: Arc<Shared>,
    svc: S,
    _in_flight: InFlight,
    verified: bool,
) -> Result<Response<Either<B, Full<Bytes>>>, Infallible>
where
    S: tower::Service<Request<TimedBody>, Response = Response<B>, Error = Infallible>,
{
    if let Some(auth) = &sh.security.auth {
        let by_certificate = verified && auth.accepts_client_certificates();
        if !by_certificate && !auth.allows(req.headers()) {
            sh.unauthenticated.inc();
            if sh.log_auth.check().is_some() {
                tracing::warn!(receiver = %sh.receiver, listener = sh.listener, path = %req.uri().path(), "request refused: missing or invalid bearer token (counted in sluice_receiver_refused_requests_total{{reason=\"unauthenticated\"}}; logged at most every 10 s)");
            }
            return Ok(sh.refusal(Refusal::Unauthenticated));
        }
    }
    let limits = &sh.limits;
    let body_deadline = Instant::now() + limits.body_read_timeout.0;
    let req = req.map(|b| TimedBody {
        inner: b,
        deadline: body_deadline,
        sleep: None,
        expired: Some(sh.body_timeout.clone()),
        grpc: sh.flavor == Flavor::Grpc,
    });
    match tokio::time::timeout(limits.request_timeout.0, svc.oneshot(req)).await {
        Ok(Ok(resp)) => Ok(resp.map(Either::Left)),
        Ok(Err(never)) => match never {},
        Err(_) => {
            sh.request_timeout.inc();
            Ok(sh.refusal(Refusal::Timeout))
        }
    }
}

/// The body did not arrive within `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within body_read_timeout")]
pub struct BodyTimeout;

/// Whether `e` (or what caused it) is a [`BodyTimeout`], so handlers do not count it twice.
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<BodyTimeout>() {
            return true;
        }
        cur = e.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTimeout`] (gRPC: a `DEADLINE_EXCEEDED` status) once
    /// its deadline passes (counted once).
    pub struct TimedBody {
        #[pin]
        inner: Incoming,
        deadline: Instant,
        sleep: Option<Pin<Box<Sleep>>>,
        expired: Option<Counter>,
        grpc: bool,
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(f) = this.inner.poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        let deadline = *this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            if let Some(c) = this.expired.take() {
                c.inc();
            }
            // gRPC clients get DEADLINE_EXCEEDED (retryable) rather than tonic's UNKNOWN.
            return Poll::Ready(Some(Err(if *this.grpc {
                Box::new(tonic::Status::deadline_exceeded(BodyTimeout.to_string()))
            } else {
                Box::new(BodyTimeout)
            })));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
