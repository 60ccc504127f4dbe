//! The HTTP server for `/metrics`, `/-/healthy` and `/-/ready`.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

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
        let std_listener =
            std::net::TcpListener::bind(settings.addr).map_err(|source| HttpError::Bind {
                addr: settings.addr,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(HttpError::Start)?;
        let addr = std_listener.local_addr().map_err(HttpError::Start)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(HttpError::Start)?;
        let counters = Arc::new(HttpCounters::default());
        let ctx = Arc::new(Ctx {
            service,
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
                runtime.block_on(serve(std_listener, ctx, limits, stop_rx));
            })
            .map_err(HttpError::Start)?;
        Ok(HttpServer {
            addr,
            counters,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

async fn serve(
    std_listener: std::net::TcpListener,
    ctx: Arc<Ctx>,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "HTTP server cannot use its socket; /metrics is down");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
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
            let ip: IpAddr = peer.ip().to_canonical();
            let service = service_fn(|req| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(ctx.handle(req, ip).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_request_bytes)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    ctx.counters.refused[RefusalReason::ConnectionError as usize]
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
