//! The HTTP server for `/metrics`, `/-/healthy`, `/-/ready` and the
//! control API ([`Api`]: `/v1/…` on a Unix socket, the read-only routes
//! also as `/api/v1/…` on TCP behind the `/metrics` token and rate limit).
//!
//! It runs on its own thread, on a single-threaded tokio runtime with
//! hyper's HTTP/1 server (the most widely used Rust HTTP stack; we never
//! parse HTTP ourselves), at a lower scheduling priority than the detection
//! loop (nice +10) so a scrape flood on a busy machine yields the CPU to
//! detection. Nothing here touches agent state: the body comes from a
//! [`Service`], which renders from snapshots the loop publishes and from
//! counters bumped where things happen.
//!
//! Every refusal is counted by reason ([`HttpCounters`]). Bounds: concurrent
//! connections (beyond: accepted and closed at once), request header size
//! and read time (slowloris), total time per connection (slow readers of a
//! large body), and per-source-IP token buckets for `/metrics`.

pub mod auth;
pub mod limit;
mod routes;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Notify, Semaphore};

pub use auth::Token;
use limit::IpLimiter;
use routes::Ctx;

/// Exposition format of a `/metrics` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

/// What the server serves. Implemented by the observer; tests use fakes.
pub trait Service: Send + Sync + 'static {
    /// The `/metrics` body. May wait (asynchronously) for a fresh snapshot
    /// from the detection loop.
    fn render(&self, format: Format) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>>;
    /// Whether the detection loop is advancing (`/-/healthy`).
    fn healthy(&self) -> bool;
}

/// A response body: a whole buffer, or a stream (the event stream).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The control Unix socket (file permissions are the access control).
    Unix,
    /// TCP, after the bearer token and rate limit (`/api/v1/…`).
    Tcp,
}

/// Per-connection state an [`Api`] handler may change: a response that
/// streams without end (`follow=1`) is exempt from the connection time
/// budget until it is cut.
#[derive(Debug, Default)]
pub struct ConnState {
    streaming: AtomicBool,
    cut: Notify,
}

impl ConnState {
    /// The response streams until the client goes away: lift the
    /// connection's total time budget.
    pub fn start_streaming(&self) {
        self.streaming.store(true, Ordering::Release);
    }

    /// The stream was cut (reader too slow): close the connection soon
    /// even if the client never reads what is left.
    pub fn cut(&self) {
        self.streaming.store(false, Ordering::Release);
        self.cut.notify_one();
    }

    fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Acquire)
    }
}

/// The control API, answered on the HTTP thread.
pub trait Api: Send + Sync + 'static {
    /// Answers `method` on `path` (`/v1/…`, without the TCP `/api`
    /// prefix) with the raw `query` string.
    fn call(
        &self,
        method: Method,
        path: String,
        query: Option<String>,
        via: Via,
        conn: Arc<ConnState>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>>;
}

/// Why a request or connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// Missing or wrong bearer token (401).
    Unauthorized,
    /// The source IP's token bucket is empty (429).
    RateLimited,
    /// The per-IP table is full of limited sources (429).
    IpTableFull,
    /// Method other than GET (405).
    MethodNotAllowed,
    /// Unknown path (404).
    NotFound,
    /// Too many connections at once: closed without a response.
    ConnectionLimit,
    /// The connection overran its time budget (headers too slow, or the
    /// response read too slowly), or its request was malformed.
    ConnectionError,
}

impl RefusalReason {
    /// Every reason, in index order.
    pub const ALL: [RefusalReason; 7] = [
        RefusalReason::Unauthorized,
        RefusalReason::RateLimited,
        RefusalReason::IpTableFull,
        RefusalReason::MethodNotAllowed,
        RefusalReason::NotFound,
        RefusalReason::ConnectionLimit,
        RefusalReason::ConnectionError,
    ];

    /// Label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::IpTableFull => "ip_table_full",
            RefusalReason::MethodNotAllowed => "method_not_allowed",
            RefusalReason::NotFound => "not_found",
            RefusalReason::ConnectionLimit => "connection_limit",
            RefusalReason::ConnectionError => "connection_error",
        }
    }
}

/// Server counters, read by the metrics renderer.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Successful `/metrics` responses.
    pub scrapes: AtomicU64,
    /// Refusals, indexed by [`RefusalReason`].
    pub refused: [AtomicU64; RefusalReason::ALL.len()],
}

impl HttpCounters {
    /// Refusals for one reason.
    pub fn refused(&self, r: RefusalReason) -> u64 {
        self.refused[r as usize].load(Ordering::Relaxed)
    }
}

/// Server settings.
#[derive(Debug)]
pub struct HttpSettings {
    /// Address to bind (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Bearer token required for `/metrics`; None serves it openly.
    pub token: Option<Token>,
    /// `/metrics` requests per second per source IP.
    pub rate_per_sec: u32,
    /// Token-bucket size per source IP; 0 disables rate limiting.
    pub burst: u32,
    /// Source IPs tracked by the limiter.
    pub ip_table: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
    /// Total time one connection may take, response included.
    pub connection_timeout: Duration,
    /// Largest request head accepted (bytes).
    pub max_request_bytes: usize,
}

impl HttpSettings {
    /// Defaults for everything but the address: the original's rate limits
    /// (5/s, burst 10), 64 connections, 5 s to send headers, 30 s per
    /// connection, 16 KiB of request head.
    pub fn new(addr: SocketAddr) -> HttpSettings {
        HttpSettings {
            addr,
            token: None,
            rate_per_sec: 5,
            burst: 10,
            ip_table: 4096,
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_request_bytes: 16 * 1024,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free port (or 0 for any) and an address of this host")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The runtime or thread could not be created.
    #[error("cannot start the HTTP server thread: {0}")]
    Start(std::io::Error),
}

/// A running server; dropping it (or [`HttpServer::stop`]) stops it.
pub struct HttpServer {
    addr: SocketAddr,
    tcp: bool,
    counters: Arc<HttpCounters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `settings.addr` (synchronously, so a bind error is a startup
    /// error) and starts the server thread.
    pub fn start(
        settings: HttpSettings,
        service: Arc<dyn Service>,
    ) -> Result<HttpServer, HttpError> {
        HttpServer::start_full(settings, true, Some(service), None)
    }

    /// Like [`HttpServer::start`], with the control API: `api` answers
    /// `/v1/…` on its Unix listener (if any) and `/api/v1/…` on TCP. With
    /// `tcp` false only the Unix listener is served (metrics off).
    pub fn start_full(
        settings: HttpSettings,
        tcp: bool,
        service: Option<Arc<dyn Service>>,
        api: Option<(Arc<dyn Api>, Option<std::os::unix::net::UnixListener>)>,
    ) -> Result<HttpServer, HttpError> {
        let std_listener = if tcp {
            let l =
                std::net::TcpListener::bind(settings.addr).map_err(|source| HttpError::Bind {
                    addr: settings.addr,
                    source,
                })?;
            l.set_nonblocking(true).map_err(HttpError::Start)?;
            Some(l)
        } else {
            None
        };
        let addr = match &std_listener {
            Some(l) => l.local_addr().map_err(HttpError::Start)?,
            None => settings.addr,
        };
        let (api, unix) = match api {
            Some((a, u)) => (Some(a), u),
            None => (None, None),
        };
        if let Some(u) = &unix {
            u.set_nonblocking(true).map_err(HttpError::Start)?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(HttpError::Start)?;
        let counters = Arc::new(HttpCounters::default());
        let ctx = Arc::new(Ctx {
            service,
            api,
            token: settings.token,
            limiter: Mutex::new(IpLimiter::new(
                settings.rate_per_sec,
                settings.burst,
                settings.ip_table,
            )),
            counters: counters.clone(),
        });
        let limits = Limits {
            max_connections: settings.max_connections.max(1),
            header_timeout: settings.header_timeout,
            connection_timeout: settings.connection_timeout,
            max_request_bytes: settings.max_request_bytes.max(8192),
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("varta-http".into())
            .spawn(move || {
                lower_priority();
                runtime.block_on(serve(std_listener, unix, ctx, limits, stop_rx));
            })
            .map_err(HttpError::Start)?;
        Ok(HttpServer {
            addr,
            tcp,
            counters,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound TCP address, None when only the Unix socket is served.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.then_some(self.addr)
    }

    /// Server counters.
    pub fn counters(&self) -> Arc<HttpCounters> {
        self.counters.clone()
    }

    /// Stops accepting and joins the thread (open connections are dropped).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    connection_timeout: Duration,
    max_request_bytes: usize,
}

/// Nice +10 for this thread only (Linux applies `setpriority` with a thread
/// id to that thread), so the detection loop wins the CPU under load.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
        tracing::debug!(error = %e, "cannot lower the HTTP thread's priority");
    }
}

/// Accepts on `l`, or never when there is no such listener.
async fn accept_tcp(
    l: &Option<tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, Option<IpAddr>)> {
    match l {
        Some(l) => l
            .accept()
            .await
            .map(|(s, p)| (s, Some(p.ip().to_canonical()))),
        None => std::future::pending().await,
    }
}

async fn accept_unix(
    l: &Option<tokio::net::UnixListener>,
) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

async fn serve(
    std_listener: Option<std::net::TcpListener>,
    std_unix: Option<std::os::unix::net::UnixListener>,
    ctx: Arc<Ctx>,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match std_listener
        .map(tokio::net::TcpListener::from_std)
        .transpose()
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "HTTP server cannot use its socket; /metrics is down");
            return;
        }
    };
    let unix = match std_unix.map(tokio::net::UnixListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "HTTP server cannot use the control socket; the control API is down");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = accept_tcp(&listener) => a.map(|(s, ip)| (Conn::Tcp(s), ip)),
            a = accept_unix(&unix) => a.map(|s| (Conn::Unix(s), None)),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            ctx.counters.refused[RefusalReason::ConnectionLimit as usize]
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match stream {
                Conn::Tcp(s) => serve_conn(TokioIo::new(s), peer, ctx, limits).await,
                Conn::Unix(s) => serve_conn(TokioIo::new(s), None, ctx, limits).await,
            }
        });
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// One connection, TCP (`peer` is its source IP) or Unix (`peer` None),
/// under the same limits. The total time budget is lifted while a
/// response streams ([`ConnState::start_streaming`]) and re-applied, with
/// a one-second grace, when the stream is cut.
async fn serve_conn<I>(io: I, peer: Option<IpAddr>, ctx: Arc<Ctx>, limits: Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::default());
    let counters = ctx.counters.clone();
    let service = {
        let state = state.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let state = state.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match peer {
                    Some(ip) => ctx.handle(req, ip, state).await,
                    None => ctx.handle_unix(req, state).await,
                })
            }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_request_bytes)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut deadline = tokio::time::Instant::now() + limits.connection_timeout;
    let ok = loop {
        tokio::select! {
            r = &mut conn => break r.is_ok(),
            _ = tokio::time::sleep_until(deadline) => {
                if state.is_streaming() {
                    deadline = tokio::time::Instant::now() + limits.connection_timeout;
                    continue;
                }
                break false;
            }
            _ = state.cut.notified() => {
                deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    };
    if !ok {
        counters.refused[RefusalReason::ConnectionError as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
