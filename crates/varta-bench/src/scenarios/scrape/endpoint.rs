//! The observers' `/metrics` endpoints as a client sees them: the token,
//! the bound addresses, one scrape, gauges read from a body, and part 2's
//! sequential scrapes.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procs::{Observer, Res};
use crate::scenarios::rotated;

/// Time between two sequential scrapes of one observer (part 2).
pub(super) const SEQ_PERIOD: Duration = Duration::from_millis(1200);

/// Socket timeouts of every scrape (a scrape slower than this is a failure).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// A sequential scrape's outcome (part 2).
#[derive(Default, Serialize)]
pub(super) struct SeqRun {
    pub(super) latency_ms: Vec<f64>,
    pub(super) failed: usize,
    /// Failures by kind, as `FAIL_LEGEND` names them.
    pub(super) failed_by_kind: [usize; 5],
    /// From the last complete body.
    pub(super) body_bytes: usize,
    pub(super) per_pid_series: usize,
    pub(super) pids_tracked: Option<f64>,
}

/// True when the binary's `--help` mentions `--prom-addr` outside our
/// "accepted, not yet active" heading.
pub(super) fn serves_metrics(bin: &Path) -> bool {
    let Ok(out) = Command::new(bin).arg("--help").output() else {
        return false;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut inactive = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) && !line.is_empty() {
            inactive = line.contains("not yet active");
            continue;
        }
        if !inactive && line.trim_start().starts_with("--prom-addr") {
            return true;
        }
    }
    false
}

/// 64 hex characters from the kernel's random pool.
pub(crate) fn random_token() -> Res<String> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Writes the token file with mode 0600, as both observers demand.
pub(crate) fn write_secret(path: &Path, token: &str) -> Res<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

/// A loopback port free a moment ago, for the original (which does not
/// print the port it bound when asked for port 0).
pub(crate) fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Ours prints `metrics: http://ADDR/metrics` on stdout (its log file
/// here); returns the address once it accepts connections.
pub(crate) fn ours_metrics_addr(obs: &Observer) -> Res<SocketAddr> {
    wait_listening(ours_printed_addr(obs, "metrics: http://", "/metrics")?, obs)
}

/// An address ours prints on stdout (its log file here) as a line
/// `{prefix}ADDR{suffix}`: `metrics: http://ADDR/metrics`, `udp: ADDR`.
pub(super) fn ours_printed_addr(obs: &Observer, prefix: &str, suffix: &str) -> Res<SocketAddr> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(obs.log_path()).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        {
            return Ok(addr);
        }
        if Instant::now() > until {
            return Err(format!(
                "our observer printed no `{prefix}ADDR{suffix}` line within 10 s: {}",
                obs.log_tail()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn wait_listening(addr: SocketAddr, obs: &Observer) -> Res<SocketAddr> {
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > until {
            return Err(format!("nothing listens on {addr} after 10 s: {}", obs.log_tail()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(addr)
}

pub(crate) fn request_bytes(token: &str) -> Vec<u8> {
    format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/plain;version=0.0.4\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// How a scrape failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    Connect = 0,
    Closed = 1,
    Timeout = 2,
    Status = 3,
    Truncated = 4,
}

/// The kinds of [`Fail`], in index order, for table notes.
pub(super) const FAIL_LEGEND: &str = "connect/closed/timeout/non-200 status/truncated";

/// One scrape: connect, send `request`, read to EOF into `buf`. Returns the
/// latency (connect → last byte) and the body's range in `buf`.
pub(crate) fn scrape(
    addr: SocketAddr,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(Duration, std::ops::Range<usize>), Fail> {
    let t0 = Instant::now();
    let mut s = match TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT) {
        Ok(s) => s,
        Err(e) if is_timeout(&e) => return Err(Fail::Timeout),
        Err(_) => return Err(Fail::Connect),
    };
    let _ = s.set_read_timeout(Some(SCRAPE_TIMEOUT));
    let _ = s.set_write_timeout(Some(SCRAPE_TIMEOUT));
    let _ = s.set_nodelay(true);
    buf.clear();
    if let Err(e) = s.write_all(request) {
        return Err(if is_timeout(&e) {
            Fail::Timeout
        } else {
            Fail::Closed
        });
    }
    let read = s.read_to_end(buf);
    let elapsed = t0.elapsed();
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let timed_out = matches!(&read, Err(e) if is_timeout(e));
    let Some(head_end) = head_end else {
        return Err(if timed_out {
            Fail::Timeout
        } else {
            Fail::Closed
        });
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status_ok = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|c| c == "200");
    if !status_ok {
        return Err(Fail::Status);
    }
    let body = head_end + 4..buf.len();
    let len = body.len();
    let complete = if let Some(cl) = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    }) {
        len >= cl
    } else if head.contains("transfer-encoding: chunked") {
        buf.ends_with(b"0\r\n\r\n")
    } else {
        read.is_ok()
    };
    if !complete {
        return Err(if timed_out {
            Fail::Timeout
        } else {
            Fail::Truncated
        });
    }
    Ok((elapsed, body))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// A gauge's value in a text-format body (first sample line of `name`).
pub(super) fn gauge(body: &[u8], name: &str) -> Option<f64> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let v = rest.strip_prefix(' ')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// `varta_observer_iteration_seconds` of ours: cumulative bucket counts
/// (upper bound in seconds, count), sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct LoopHist {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl LoopHist {
    const NAME: &'static str = "varta_observer_iteration_seconds";

    /// The histogram in a text-format body (None if absent).
    pub(super) fn parse(body: &[u8]) -> Option<LoopHist> {
        let text = std::str::from_utf8(body).ok()?;
        let mut h = LoopHist::default();
        let mut seen = false;
        for l in text.lines() {
            let Some(rest) = l.strip_prefix(Self::NAME) else {
                continue;
            };
            let (series, value) = rest.rsplit_once(' ')?;
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            if let Some(le) = series
                .strip_prefix("_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                h.buckets.push((le, v));
                seen = true;
            } else if series == "_sum" {
                h.sum = v;
            } else if series == "_count" {
                h.count = v;
            }
        }
        seen.then_some(h)
    }

    /// Iterations longer than `secs` (the next bucket bound at or above it).
    fn over(&self, secs: f64) -> f64 {
        let below = self
            .buckets
            .iter()
            .find(|(le, _)| *le >= secs)
            .map_or(self.count, |(_, c)| *c);
        self.count - below
    }
}

/// What ours' loop did between two readings of its iteration histogram.
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct LoopDelta {
    pub iterations: f64,
    /// Iteration wall time, summed (seconds).
    pub busy_secs: f64,
    pub over_10ms: f64,
    pub over_50ms: f64,
}

impl LoopDelta {
    pub(super) fn between(a: &LoopHist, b: &LoopHist) -> LoopDelta {
        LoopDelta {
            iterations: b.count - a.count,
            busy_secs: b.sum - a.sum,
            over_10ms: b.over(0.01) - a.over(0.01),
            over_50ms: b.over(0.05) - a.over(0.05),
        }
    }
}

/// One scrape of ours within `limit`: its loop iteration histogram.
pub(super) fn loop_hist(addr: SocketAddr, request: &[u8], limit: Duration) -> Option<LoopHist> {
    let until = Instant::now() + limit;
    let mut buf = Vec::new();
    loop {
        if let Ok((_, body)) = scrape(addr, request, &mut buf) {
            return LoopHist::parse(&buf[body]);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Our tracker as one scrape of ours shows it.
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct TrackerGauges {
    /// `varta_watch_pids_tracked`: every agent in the tracker.
    pub pids_tracked: f64,
    /// `varta_agents{state="alive"}` and `{state="stalled"}`.
    pub alive: f64,
    pub stalled: f64,
}

/// Scrapes ours until one scrape succeeds or `limit` passes (a flooded
/// endpoint refuses or times out some): its tracker gauges.
pub(super) fn tracker_gauges(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> Option<TrackerGauges> {
    let until = Instant::now() + limit;
    let mut buf = Vec::new();
    loop {
        if let Ok((_, body)) = scrape(addr, request, &mut buf) {
            let b = &buf[body];
            let g = |name| gauge(b, name).unwrap_or(f64::NAN);
            return Some(TrackerGauges {
                pids_tracked: g("varta_watch_pids_tracked"),
                alive: g("varta_agents{state=\"alive\"}"),
                stalled: g("varta_agents{state=\"stalled\"}"),
            });
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn per_pid_series(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"varta_beats_total{pid=\""))
        .count()
}

/// Scrapes each observer until it tracks its `want` pids (or `limit`
/// passes); returns the last `varta_watch_pids_tracked` of each (NaN when
/// never read).
pub(super) fn wait_tracked<const N: usize>(
    addrs: &[SocketAddr; N],
    request: &[u8],
    want: &[usize; N],
    limit: Duration,
) -> [f64; N] {
    let until = Instant::now() + limit;
    let mut got = [f64::NAN; N];
    let mut buf = Vec::new();
    loop {
        for (o, addr) in addrs.iter().enumerate() {
            if let Ok((_, body)) = scrape(*addr, request, &mut buf) {
                if let Some(v) = gauge(&buf[body], "varta_watch_pids_tracked") {
                    got[o] = v;
                }
            }
        }
        if got.iter().zip(want).all(|(&v, &w)| v >= w as f64) || Instant::now() > until {
            return got;
        }
        // The original re-renders at most once a second.
        std::thread::sleep(Duration::from_millis(1100));
    }
}

/// Part 2: `n` scrapes of each observer, one at a time, rotating which
/// goes first, each observer every [`SEQ_PERIOD`].
pub(super) fn sequential<const N: usize>(
    addrs: &[SocketAddr; N],
    request: &[u8],
    n: usize,
) -> [SeqRun; N] {
    let mut runs: [SeqRun; N] = std::array::from_fn(|_| SeqRun::default());
    let order: Vec<usize> = (0..N).collect();
    let mut buf = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let at = SEQ_PERIOD * i as u32;
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        for o in rotated(&order, i) {
            match scrape(addrs[o], request, &mut buf) {
                Ok((d, body)) => {
                    let r = &mut runs[o];
                    r.latency_ms.push(d.as_secs_f64() * 1e3);
                    r.body_bytes = body.len();
                    r.per_pid_series = per_pid_series(&buf[body.clone()]);
                    r.pids_tracked = gauge(&buf[body], "varta_watch_pids_tracked");
                }
                Err(f) => {
                    runs[o].failed += 1;
                    runs[o].failed_by_kind[f as usize] += 1;
                }
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn reads_gauges_and_series() {
        let body = b"# TYPE varta_beats_total counter\nvarta_beats_total{pid=\"1\"} 3\n\
                     varta_beats_total{pid=\"2\"} 4\nvarta_watch_pids_tracked 2\n\
                     varta_watch_pids_tracked_max 9\n";
        assert_eq!(per_pid_series(body), 2);
        assert_eq!(gauge(body, "varta_watch_pids_tracked"), Some(2.0));
        assert_eq!(gauge(body, "varta_nope"), None);
    }

    #[test]
    fn reads_the_loop_histogram() {
        let body = b"varta_observer_iteration_seconds_sum 0.5\n\
                     varta_observer_iteration_seconds_count 10\n\
                     varta_observer_iteration_seconds_bucket{le=\"0.005\"} 7\n\
                     varta_observer_iteration_seconds_bucket{le=\"0.01\"} 8\n\
                     varta_observer_iteration_seconds_bucket{le=\"0.05\"} 9\n\
                     varta_observer_iteration_seconds_bucket{le=\"+Inf\"} 10\n";
        let h = LoopHist::parse(body).unwrap();
        assert_eq!((h.count, h.sum, h.buckets.len()), (10.0, 0.5, 4));
        let d = LoopDelta::between(&LoopHist::default(), &h);
        assert_eq!((d.iterations, d.over_10ms, d.over_50ms), (10.0, 2.0, 1.0));
        assert!(LoopHist::parse(b"varta_other 1\n").is_none());
    }

    #[test]
    fn scrapes_a_canned_response() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for body in ["hello", "trunc"] {
                let (mut s, _) = l.accept().unwrap();
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req);
                let cl = if body == "hello" { 5 } else { 50 };
                let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {cl}\r\n\r\n{body}");
            }
        });
        let mut buf = Vec::new();
        let (_, body) = scrape(addr, b"GET / HTTP/1.0\r\n\r\n", &mut buf).unwrap();
        assert_eq!(&buf[body], b"hello");
        assert_eq!(
            scrape(addr, b"GET / HTTP/1.0\r\n\r\n", &mut buf),
            Err(Fail::Truncated)
        );
        server.join().unwrap();
    }
}
