//! soak, the watchers: a scraper GETting `/metrics` once a second, and the
//! per-second samples of the observer process (RSS, CPU, socket drops).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::verify::{events_by_kind, parse_vmrss};
use crate::scenarios::scrape::endpoint::scrape;
use crate::udpload::{stat_ticks, udp_stat};

/// One scrape of the run.
#[derive(Serialize, Clone, Debug)]
pub(super) struct ScrapeSample {
    /// Seconds since the load started (when the scrape began).
    pub(super) t: f64,
    /// Connect → last byte, ms; None when it failed.
    pub(super) latency_ms: Option<f64>,
    /// How it failed (connect, closed, timeout, status, truncated).
    pub(super) fail: Option<String>,
    pub(super) body_bytes: usize,
    /// `varta_events_total{kind}` for beat, stall and exit.
    pub(super) beats: Option<u64>,
    pub(super) stalls: Option<u64>,
    pub(super) exits: Option<u64>,
}

/// GETs `/metrics` every second on the second (from `start`) on its own
/// thread until stopped.
pub(super) struct Scraper {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<ScrapeSample>>>,
    handle: Option<JoinHandle<()>>,
}

/// One GET of `/metrics`: its sample and the body (None on failure).
pub(super) fn scrape_once(
    addr: SocketAddr,
    request: &[u8],
    t: f64,
) -> (ScrapeSample, Option<String>) {
    let mut buf = Vec::new();
    match scrape(addr, request, &mut buf) {
        Ok((lat, range)) => {
            let body = String::from_utf8_lossy(&buf[range]).into_owned();
            let ev = events_by_kind(&body);
            let s = ScrapeSample {
                t,
                latency_ms: Some(lat.as_secs_f64() * 1e3),
                fail: None,
                body_bytes: body.len(),
                beats: ev.get("beat").copied(),
                stalls: ev.get("stall").copied(),
                exits: ev.get("exit").copied(),
            };
            (s, Some(body))
        }
        Err(f) => (
            ScrapeSample {
                t,
                latency_ms: None,
                fail: Some(format!("{f:?}").to_lowercase()),
                body_bytes: 0,
                beats: None,
                stalls: None,
                exits: None,
            },
            None,
        ),
    }
}

impl Scraper {
    pub(super) fn start(addr: SocketAddr, request: Vec<u8>, start: Instant) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            let mut k = 1u64;
            while !stop2.load(Ordering::Relaxed) {
                let due = start + Duration::from_secs(k);
                let now = Instant::now();
                if now < due {
                    // Short naps so a stop is noticed within 50 ms.
                    std::thread::sleep((due - now).min(Duration::from_millis(50)));
                    continue;
                }
                k += 1;
                let (s, _) = scrape_once(addr, &request, start.elapsed().as_secs_f64());
                if let Ok(mut v) = samples2.lock() {
                    v.push(s);
                }
                // A scrape slower than a second skips the ticks it overran
                // instead of firing them back to back.
                while start + Duration::from_secs(k) < Instant::now() {
                    k += 1;
                }
            }
        });
        Scraper {
            stop,
            samples,
            handle: Some(handle),
        }
    }

    /// The most recent sample, for progress lines.
    pub(super) fn last(&self) -> Option<ScrapeSample> {
        self.samples.lock().ok()?.last().cloned()
    }

    pub(super) fn finish(mut self) -> Vec<ScrapeSample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The observer process at one instant.
#[derive(Serialize, Clone, Copy, Debug)]
pub(super) struct ProcSample {
    pub(super) t: f64,
    pub(super) rss_kib: u64,
    /// utime + stime so far, clock ticks.
    pub(super) cpu_ticks: u64,
    /// The UDP socket's receive-buffer drops so far (`/proc/net/udp`).
    pub(super) udp_drops: u64,
}

pub(super) fn proc_sample(pid: u32, udp_port: u16, t: f64) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        t,
        rss_kib: parse_vmrss(&status)?,
        cpu_ticks: stat_ticks(&format!("/proc/{pid}/stat")).ok()?,
        udp_drops: udp_stat(udp_port).ok().flatten().map_or(0, |s| s.drops),
    })
}
