//! The scrape flood: a separate (niced) process running concurrent
//! scrapers and slowloris connections against one `/metrics` endpoint, and
//! the harness's handle on it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::endpoint::{request_bytes, scrape, Fail};
use crate::procs::{ChildGuard, Res};

/// What the flood process measured, printed by it as one JSON line.
#[derive(Default, Serialize, Deserialize, Clone)]
pub struct FloodStats {
    pub secs: f64,
    /// Complete 200 responses.
    pub ok: u64,
    /// Their latency, connect → last byte, ms.
    pub latency_ms: Vec<f64>,
    /// Connection refused or not made.
    pub failed_connect: u64,
    /// Closed or reset before a complete response head (the original's
    /// drain closes surplus connections unserved; ours past 64 connections).
    pub failed_closed: u64,
    /// No progress within the 2 s socket timeouts.
    pub failed_timeout: u64,
    /// A response other than 200.
    pub failed_status: u64,
    /// 200, but fewer body bytes than announced.
    pub truncated: u64,
    /// Slowloris connections opened and closed by the server.
    pub slow_opened: u64,
    pub slow_closed: u64,
    /// Header bytes the slowloris connections sent.
    pub slow_bytes: u64,
}

impl FloodStats {
    pub(super) fn merge(&mut self, o: &FloodStats) {
        self.ok += o.ok;
        self.latency_ms.extend_from_slice(&o.latency_ms);
        self.failed_connect += o.failed_connect;
        self.failed_closed += o.failed_closed;
        self.failed_timeout += o.failed_timeout;
        self.failed_status += o.failed_status;
        self.truncated += o.truncated;
        self.slow_opened += o.slow_opened;
        self.slow_closed += o.slow_closed;
        self.slow_bytes += o.slow_bytes;
    }

    pub(super) fn failed(&self) -> u64 {
        self.failed_connect
            + self.failed_closed
            + self.failed_timeout
            + self.failed_status
            + self.truncated
    }
}

/// How to start the flood process.
pub(super) struct FloodCfg<'a> {
    pub(super) exe: &'a Path,
    pub(super) token_file: &'a Path,
    pub(super) scrapers: usize,
    pub(super) slowloris: usize,
    pub(super) nice: u8,
}

/// A running flood process; [`Flood::stop`] closes its stdin and reads its
/// stats.
pub(super) struct Flood {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
}

impl Flood {
    pub(super) fn start(cfg: &FloodCfg, addr: SocketAddr) -> Res<Flood> {
        let mut cmd = if cfg.nice > 0 {
            let mut c = Command::new("nice");
            c.args(["-n", &cfg.nice.to_string()]).arg(cfg.exe);
            c
        } else {
            Command::new(cfg.exe)
        };
        cmd.arg("scrape-flood")
            .args(["--addr", &addr.to_string()])
            .arg("--token-file")
            .arg(cfg.token_file)
            .args(["--scrapers", &cfg.scrapers.to_string()])
            .args(["--slowloris", &cfg.slowloris.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the flood ({}): {e}", cfg.exe.display()))?;
        let mut guard = ChildGuard { child };
        let stdin = guard.child.stdin.take();
        let mut stdout = guard.child.stdout.take();
        let mut byte = [0u8; 1];
        let ready = stdout
            .as_mut()
            .is_some_and(|o| o.read_exact(&mut byte).is_ok());
        if !ready {
            return Err("the flood process exited before starting".into());
        }
        Ok(Flood {
            guard,
            stdin,
            stdout,
        })
    }

    pub(super) fn stop(mut self) -> Res<FloodStats> {
        drop(self.stdin.take());
        let mut text = String::new();
        if let Some(o) = self.stdout.as_mut() {
            o.read_to_string(&mut text)?;
        }
        let _ = self.guard.child.wait();
        Ok(serde_json::from_str(text.trim())
            .map_err(|e| format!("the flood process reported garbage ({e}): {text:?}"))?)
    }
}

/// Arguments of the hidden `scrape-flood` subcommand.
pub struct FloodArgs {
    pub addr: SocketAddr,
    pub token_file: PathBuf,
    pub scrapers: usize,
    pub slowloris: usize,
}

/// The flood process: `scrapers` threads scraping back to back and one
/// thread keeping `slowloris` connections dribbling header bytes, until
/// stdin closes; then one JSON line of [`FloodStats`] on stdout.
pub fn flood(a: &FloodArgs) -> Res<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
        return Ok(());
    }
    let token = std::fs::read_to_string(&a.token_file)?.trim().to_string();
    let request = Arc::new(request_bytes(&token));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut threads: Vec<JoinHandle<FloodStats>> = Vec::new();
    for _ in 0..a.scrapers {
        let (stop, request, addr) = (stop.clone(), request.clone(), a.addr);
        threads.push(std::thread::spawn(move || scraper(addr, &request, &stop)));
    }
    if a.slowloris > 0 {
        let (stop, addr, n) = (stop.clone(), a.addr, a.slowloris);
        let prefix = format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
        );
        threads.push(std::thread::spawn(move || {
            slowloris(addr, n, prefix.as_bytes(), &stop)
        }));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(b"R")?;
    out.flush()?;
    let mut byte = [0u8; 1];
    let _ = std::io::stdin().read(&mut byte);
    stop.store(true, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let mut total = FloodStats::default();
    for t in threads {
        if let Ok(s) = t.join() {
            total.merge(&s);
        }
    }
    total.secs = secs;
    writeln!(out, "{}", serde_json::to_string(&total)?)?;
    out.flush()?;
    Ok(())
}

fn scraper(addr: SocketAddr, request: &[u8], stop: &AtomicBool) -> FloodStats {
    let mut s = FloodStats::default();
    let mut buf = Vec::with_capacity(4 << 20);
    while !stop.load(Ordering::Relaxed) {
        match scrape(addr, request, &mut buf) {
            Ok((d, _)) => {
                s.ok += 1;
                s.latency_ms.push(d.as_secs_f64() * 1e3);
            }
            Err(Fail::Connect) => {
                s.failed_connect += 1;
                // Refused outright: do not spin on it.
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Fail::Closed) => s.failed_closed += 1,
            Err(Fail::Timeout) => s.failed_timeout += 1,
            Err(Fail::Status) => s.failed_status += 1,
            Err(Fail::Truncated) => s.truncated += 1,
        }
    }
    s
}

/// `n` connections, each sent one more header byte every second: the
/// request line, Host, the valid token, then `X-Slow: a` headers forever.
/// A connection the server closes (or answers) is reopened at the next tick.
fn slowloris(addr: SocketAddr, n: usize, prefix: &[u8], stop: &AtomicBool) -> FloodStats {
    const FILLER: &[u8] = b"X-Slow: a\r\n";
    let byte_at = |pos: usize| {
        if pos < prefix.len() {
            prefix[pos]
        } else {
            FILLER[(pos - prefix.len()) % FILLER.len()]
        }
    };
    let mut s = FloodStats::default();
    let mut conns: Vec<Option<(TcpStream, usize)>> = (0..n).map(|_| None).collect();
    let start = Instant::now();
    let mut tick = 0u32;
    while !stop.load(Ordering::Relaxed) {
        for c in conns.iter_mut() {
            if c.is_none() {
                if let Ok(t) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                    let _ = t.set_nonblocking(true);
                    let _ = t.set_nodelay(true);
                    s.slow_opened += 1;
                    *c = Some((t, 0));
                }
            }
            let mut closed = false;
            if let Some((t, pos)) = c.as_mut() {
                let mut sink = [0u8; 4096];
                match t.read(&mut sink) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // EOF, an answer (405, 408, ...) or a reset: the server is done with it.
                    _ => closed = true,
                }
                if !closed {
                    match t.write(&[byte_at(*pos)]) {
                        Ok(1) => {
                            *pos += 1;
                            s.slow_bytes += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        _ => closed = true,
                    }
                }
            }
            if closed {
                s.slow_closed += 1;
                *c = None;
            }
        }
        tick += 1;
        let next = Duration::from_secs(1) * tick;
        while !stop.load(Ordering::Relaxed) {
            match next.checked_sub(start.elapsed()) {
                Some(w) => std::thread::sleep(w.min(Duration::from_millis(50))),
                None => break,
            }
        }
    }
    s
}
