//! The server over real TCP with a fake [`Service`]. Requests are written
//! by hand on purpose: slowloris and oversize tests need byte-level control
//! that a client library hides.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;

use super::*;

const HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

struct Fake {
    healthy: AtomicBool,
}

impl Service for Fake {
    fn render(&self, format: Format) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>> {
        Box::pin(async move {
            match format {
                Format::Prometheus => b"# TYPE x_total counter\nx_total 1\n".to_vec(),
                Format::OpenMetrics => b"# TYPE x counter\nx_total 1\n# EOF\n".to_vec(),
            }
        })
    }
    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

fn server(tweak: impl FnOnce(&mut HttpSettings)) -> (HttpServer, Arc<Fake>) {
    let mut s = HttpSettings::new("127.0.0.1:0".parse().unwrap());
    s.token = Some(Token::from_file_text(HEX.as_bytes()).unwrap());
    tweak(&mut s);
    let fake = Arc::new(Fake {
        healthy: AtomicBool::new(true),
    });
    (HttpServer::start(s, fake.clone()).unwrap(), fake)
}

/// Sends `head` (a full request head) and returns the whole response.
fn send(addr: SocketAddr, head: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
    )
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn metrics_needs_the_token() {
    let (srv, _) = server(|_| {});
    let addr = srv.local_addr();
    assert_ne!(addr.port(), 0, "port 0 resolved to a real port");
    let ok = get(
        addr,
        "/metrics",
        &format!("authorization: bearer {}\r\n", HEX.to_uppercase()),
    );
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.ends_with("x_total 1\n"));
    assert_eq!(
        header(&ok, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for extra in [
        "",
        "Authorization: Bearer 00\r\n",
        "Authorization: Basic abc\r\n",
    ] {
        let r = get(addr, "/metrics", extra);
        assert_eq!(status(&r), 401, "{r}");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"varta\"")
        );
    }
    assert_eq!(srv.counters().refused(RefusalReason::Unauthorized), 3);
    assert_eq!(srv.counters().scrapes.load(Ordering::Relaxed), 1);
}

#[test]
fn openmetrics_when_asked() {
    let (srv, _) = server(|_| {});
    let r = get(
        srv.local_addr(),
        "/metrics",
        &format!("Authorization: Bearer {HEX}\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"),
    );
    assert_eq!(status(&r), 200);
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(r.ends_with("# EOF\n"));
}

#[test]
fn methods_paths_and_health() {
    let (srv, fake) = server(|_| {});
    let addr = srv.local_addr();
    let r = send(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 405);
    assert_eq!(header(&r, "allow"), Some("GET"));
    assert_eq!(status(&get(addr, "/nope", "")), 404);
    assert_eq!(status(&get(addr, "/-/ready", "")), 200);
    assert_eq!(status(&get(addr, "/-/healthy", "")), 200, "no token needed");
    fake.healthy.store(false, Ordering::Relaxed);
    assert_eq!(status(&get(addr, "/-/healthy", "")), 503);
    let c = srv.counters();
    assert_eq!(c.refused(RefusalReason::MethodNotAllowed), 1);
    assert_eq!(c.refused(RefusalReason::NotFound), 1);
}

#[test]
fn rate_limit_per_source() {
    let (srv, _) = server(|s| {
        s.rate_per_sec = 1;
        s.burst = 3;
    });
    let addr = srv.local_addr();
    let auth = format!("Authorization: Bearer {HEX}\r\n");
    let codes: Vec<u16> = (0..5)
        .map(|_| status(&get(addr, "/metrics", &auth)))
        .collect();
    assert_eq!(codes, vec![200, 200, 200, 429, 429]);
    assert_eq!(srv.counters().refused(RefusalReason::RateLimited), 2);
    // Rate limiting comes before the token check: no brute force at speed.
    assert_eq!(status(&get(addr, "/metrics", "")), 429);
}

#[test]
fn slowloris_is_cut_off_and_counted() {
    let (srv, _) = server(|s| s.header_timeout = Duration::from_millis(200));
    let mut c = TcpStream::connect(srv.local_addr()).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "closed by the header timeout"
    );
    let start = std::time::Instant::now();
    while srv.counters().refused(RefusalReason::ConnectionError) == 0
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(srv.counters().refused(RefusalReason::ConnectionError), 1);
}

#[test]
fn connection_limit_closes_extra_connections() {
    let (srv, _) = server(|s| s.max_connections = 2);
    let addr = srv.local_addr();
    // Two connections that never finish their headers hold both slots.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let r = get(addr, "/-/ready", "");
    assert_eq!(r, "", "closed without a response");
    assert_eq!(srv.counters().refused(RefusalReason::ConnectionLimit), 1);
    held.clear();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(status(&get(addr, "/-/ready", "")), 200, "slots are freed");
}

#[test]
fn oversized_request_head_is_refused() {
    let (srv, _) = server(|s| s.max_request_bytes = 8192);
    let big = "a".repeat(64 * 1024);
    let r = get(srv.local_addr(), "/metrics", &format!("X-Big: {big}\r\n"));
    assert!(
        status(&r) == 431 || r.is_empty(),
        "{}",
        &r[..r.len().min(200)]
    );
}

#[test]
fn ipv6_and_bind_errors() {
    if let Ok(s) = HttpServer::start(
        HttpSettings::new("[::1]:0".parse().unwrap()),
        Arc::new(Fake {
            healthy: AtomicBool::new(true),
        }),
    ) {
        assert!(s.local_addr().is_ipv6());
        assert_eq!(status(&get(s.local_addr(), "/-/ready", "")), 200);
        // The same port again: a clear bind error.
        let e = HttpServer::start(
            HttpSettings::new(s.local_addr()),
            Arc::new(Fake {
                healthy: AtomicBool::new(true),
            }),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("cannot listen on"), "{e}");
    }
}
