//! churn, part 2: accepted beats of a steady set of UDP agents with and
//! without a stream of fresh pids, against our release observer.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::MultiHeaders;
use serde::Serialize;
use varta_vlp::{Frame, Status, FRAME_LEN};

use super::{CHURN_BASE, STEADY_BASE};
use crate::exportfile::{file_len, StallWatcher};
use crate::procs::{bench_dir, monotonic_ns, Binaries, Observer, ObserverSpec, Res, Which};
use crate::scenarios::SplitMix;
use crate::udpload::{send_frames, thread_cpu_ns, udp_stat, BATCH};

// ---------------------------------------------------------------------------
// Part 2: UDP churn.

/// Items of a stream paced at `rate`/s due after `elapsed`.
pub(super) fn due_count(elapsed: Duration, rate: f64, len: usize) -> usize {
    ((elapsed.as_secs_f64() * rate) as usize).min(len)
}

/// One paced stream of pre-built datagrams.
pub(super) struct Stream {
    /// Datagrams per second.
    pub(super) rate: f64,
    pub(super) data: Vec<[u8; FRAME_LEN]>,
}

impl Stream {
    /// The steady pids other than `skip`, round-robin at `hz` each: round r
    /// of a pid carries nonce r + 1. Long enough for `secs` (+ a batch).
    pub(super) fn steady(steady: u32, skip: &[u32], hz: f64, secs: f64) -> Stream {
        let pids: Vec<u32> = (STEADY_BASE..STEADY_BASE + steady)
            .filter(|p| !skip.contains(p))
            .collect();
        let rate = pids.len() as f64 * hz;
        let count = (rate * secs) as usize + BATCH;
        let data = (0..count)
            .map(|j| {
                let (pid, round) = (pids[j % pids.len()], (j / pids.len()) as u64 + 1);
                Frame::new(Status::Ok, pid, round, round, 0).to_bytes()
            })
            .collect();
        Stream { rate, data }
    }

    /// `rate` fresh pids per second from [`CHURN_BASE`], one beat each.
    pub(super) fn churn(rate: f64, secs: f64) -> Stream {
        let count = (rate * secs) as usize + BATCH;
        let data = (0..count as u32)
            .map(|j| Frame::new(Status::Ok, CHURN_BASE + j, 1, 1, 0).to_bytes())
            .collect();
        Stream { rate, data }
    }
}

/// A steady pid that falls silent: beats at `hz` (its own phase) until
/// `silent_at`, each one sent on its own and timestamped right before the
/// `send(2)` that the kernel accepted.
pub(super) struct SilentAgent {
    pub(super) pid: u32,
    pub(super) phase: Duration,
    /// 1 / hz.
    pub(super) period: Duration,
    pub(super) silent_at: Duration,
    pub(super) nonce: u64,
    /// (nonce, CLOCK_MONOTONIC ns just before its `send`) of the last beat
    /// the kernel accepted.
    pub(super) last: Option<(u64, u64)>,
}

/// What one sender thread did.
#[derive(Default)]
pub(super) struct Sent {
    /// Failed `sendmmsg`/`send` calls.
    pub(super) errors: u64,
    /// Most a stream fell behind its schedule at any tick, ms.
    pub(super) max_lag_ms: f64,
    /// The thread's CPU time over its run / its run time.
    pub(super) cpu_cores: f64,
    /// Silent agents' last accepted beats: pid → (nonce, ns).
    pub(super) last: HashMap<u32, (u64, u64)>,
}

/// Sends up to `data[..due]` from `*pos` in `sendmmsg` batches of
/// [`BATCH`]; adds what the kernel accepted to `counter`.
pub(super) fn send_due(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<()>,
    data: &[[u8; FRAME_LEN]],
    pos: &mut usize,
    due: usize,
    counter: &AtomicU64,
    errors: &mut u64,
) {
    let mut failures = 0;
    while *pos < due && failures < 100 {
        match send_frames(sock, headers, &data[*pos..due]) {
            Ok(n) => {
                *pos += n;
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(Errno::EINTR) => {}
            Err(_) => {
                *errors += 1;
                failures += 1;
            }
        }
    }
}

/// One sender thread: paces `stream` from `start` (item j due at
/// j / rate s) until `duration` or `stop`, sleeping 200 µs when caught
/// up; the steady thread also beats the `silent` agents.
pub(super) fn pace(
    sock: &UdpSocket,
    stream: &Stream,
    mut silent: Vec<SilentAgent>,
    start: Instant,
    duration: Duration,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> Sent {
    let cpu0 = thread_cpu_ns();
    let mut sent = Sent::default();
    let mut headers = MultiHeaders::<()>::preallocate(BATCH, None);
    let mut pos = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let el = start.elapsed();
        if el >= duration {
            break;
        }
        let due = due_count(el, stream.rate, stream.data.len());
        let lag = due.saturating_sub(pos) as f64 / stream.rate.max(1e-9) * 1e3;
        sent.max_lag_ms = sent.max_lag_ms.max(lag);
        send_due(
            sock,
            &mut headers,
            &stream.data,
            &mut pos,
            due,
            counter,
            &mut sent.errors,
        );
        for a in &mut silent {
            let next = a.phase + a.period.mul_f64(a.nonce as f64);
            if next > el || next >= a.silent_at {
                continue;
            }
            let frame = Frame::new(Status::Ok, a.pid, a.nonce + 1, a.nonce + 1, 0).to_bytes();
            let t = monotonic_ns();
            match sock.send(&frame) {
                Ok(_) => {
                    a.nonce += 1;
                    a.last = Some((a.nonce, t));
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => sent.errors += 1,
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let run = start.elapsed().as_nanos().max(1) as f64;
    sent.cpu_cores = (thread_cpu_ns() - cpu0) as f64 / run;
    sent.last = silent
        .iter()
        .filter_map(|a| Some((a.pid, a.last?)))
        .collect();
    sent
}

/// Datagrams the kernel accepted so far: (steady, churn), read at the
/// window edges.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) steady: AtomicU64,
    pub(super) churn: AtomicU64,
}

/// `beat` lines whose newline lies in `[from, to)`: (steady, churn).
pub(super) fn count_beats(path: &Path, from: u64, to: u64) -> Res<(u64, u64)> {
    let data = std::fs::read(path)?;
    let to = (to as usize).min(data.len());
    let mut line_start = 0usize;
    let (mut steady, mut churn) = (0, 0);
    for i in 0..to {
        if data[i] != b'\n' {
            continue;
        }
        if i as u64 >= from {
            let mut cols = data[line_start..i].split(|&b| b == b'\t');
            let _ = cols.next();
            if cols.next() == Some(&b"beat"[..]) {
                let pid: u32 = cols
                    .next()
                    .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok())
                    .unwrap_or(0);
                if pid >= CHURN_BASE {
                    churn += 1;
                } else {
                    steady += 1;
                }
            }
        }
        line_start = i + 1;
    }
    Ok((steady, churn))
}

#[derive(Serialize, Clone, Default)]
pub(super) struct Phase {
    pub(super) churn_per_sec: f64,
    pub(super) window_secs: f64,
    /// Scheduled datagrams/s (steady stream + silent agents; new pids).
    pub(super) steady_scheduled_per_sec: f64,
    pub(super) churn_scheduled_per_sec: f64,
    /// Datagrams the kernel accepted from the senders in the window, /s.
    pub(super) steady_sent_per_sec: f64,
    pub(super) churn_sent_per_sec: f64,
    pub(super) steady_accepted_per_sec: f64,
    pub(super) churn_accepted_per_sec: f64,
    pub(super) total_accepted_per_sec: f64,
    /// Receive-buffer drops of the observer's socket in the window, /s.
    pub(super) rcvbuf_drops_per_sec: f64,
    pub(super) send_errors: u64,
    /// Most the steady / churn stream fell behind schedule, ms.
    pub(super) steady_max_lag_ms: f64,
    pub(super) churn_max_lag_ms: f64,
    /// Sender threads' CPU over their run, cores.
    pub(super) steady_sender_cores: f64,
    pub(super) churn_sender_cores: f64,
    /// Overshoot of the silent steady agents, ms (stall line readable −
    /// send of the last beat the kernel accepted − threshold).
    pub(super) overshoot_ms: Vec<f64>,
    /// Silent agents whose stall was not seen.
    pub(super) unmatched: usize,
    /// Observer CPU over the window, cores.
    pub(super) cpu_cores: f64,
}

impl Phase {
    /// Sent in the window / scheduled, both streams (1.0: on schedule).
    pub(super) fn offered_share(&self) -> f64 {
        (self.steady_sent_per_sec + self.churn_sent_per_sec)
            / (self.steady_scheduled_per_sec + self.churn_scheduled_per_sec)
    }
}

pub(super) struct Cfg<'a> {
    pub(super) bins: &'a Binaries,
    pub(super) steady: u32,
    pub(super) hz: f64,
    pub(super) threshold_ms: u64,
    pub(super) capacity: u32,
    pub(super) settle: Duration,
    pub(super) window: Duration,
    pub(super) silent: usize,
}

pub(super) fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the comm.
    g(11) + g(12)
}

pub(super) fn phase(cfg: &Cfg, churn: f64, seed: u64) -> Res<Phase> {
    let dir = bench_dir()?;
    let extra = [
        "--udp-port",
        "0",
        "--i-accept-plaintext-udp",
        "--udp-bind-addr",
        "127.0.0.1",
        "--tracker-eviction-policy",
        "strict",
        "--per-agent-metrics-limit",
        "0",
    ];
    let total = cfg.settle + cfg.window + Duration::from_millis(cfg.threshold_ms + 1500);
    let mut obs = Observer::start(
        cfg.bins,
        &ObserverSpec {
            which: Which::Ours,
            dir: dir.path(),
            threshold_ms: cfg.threshold_ms,
            export: true,
            tracker_capacity: cfg.capacity as usize,
            extra: &extra,
            lifetime: total + Duration::from_secs(60),
        },
    )?;
    let addr = crate::scenarios::ingest_udp::ours_udp_addr(&obs)?;
    let export = obs.export.clone().ok_or("no export file")?;
    let watcher = StallWatcher::start(export.clone())?;
    // Silent agents: spread over the window, each stall due inside it.
    let mut rng = SplitMix(seed);
    let span = cfg
        .window
        .saturating_sub(Duration::from_millis(cfg.threshold_ms + 500));
    let step = (cfg.steady as usize / cfg.silent.max(1)).max(1) as u32;
    let silent: Vec<(u32, Duration)> = (0..cfg.silent as u32)
        .map(|k| {
            let at = cfg.settle + span.mul_f64((rng.next() % 1_000_000) as f64 / 1e6);
            (STEADY_BASE + k * step, at)
        })
        .collect();
    let silent_pids: Vec<u32> = silent.iter().map(|s| s.0).collect();
    let period = 1.0 / cfg.hz;
    let agents: Vec<SilentAgent> = silent
        .iter()
        .enumerate()
        .map(|(k, &(pid, silent_at))| SilentAgent {
            pid,
            // Spread over one period, so the silent beats do not bunch.
            phase: Duration::from_secs_f64(period * k as f64 / silent.len() as f64),
            period: Duration::from_secs_f64(period),
            silent_at,
            nonce: 0,
            last: None,
        })
        .collect();
    // Built before the clock starts: the senders only pace and send.
    let secs = total.as_secs_f64();
    let steady_stream = Stream::steady(cfg.steady, &silent_pids, cfg.hz, secs);
    let churn_stream = Stream::churn(churn, secs);
    let scheduled = (
        steady_stream.rate + silent.len() as f64 * cfg.hz,
        churn_stream.rate,
    );
    let port = addr.port();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let steady_sock = UdpSocket::bind("127.0.0.1:0")?;
    steady_sock.connect(addr)?;
    let churn_sock = UdpSocket::bind("127.0.0.1:0")?;
    churn_sock.connect(addr)?;
    let (stop_s, prog_s) = (stop.clone(), progress.clone());
    let steady_thread = std::thread::spawn(move || {
        pace(
            &steady_sock,
            &steady_stream,
            agents,
            start,
            total,
            &stop_s,
            &prog_s.steady,
        )
    });
    let (stop_c, prog_c) = (stop.clone(), progress.clone());
    let churn_thread = std::thread::spawn(move || {
        pace(
            &churn_sock,
            &churn_stream,
            Vec::new(),
            start,
            total,
            &stop_c,
            &prog_c.churn,
        )
    });
    let sent_now = || {
        (
            progress.steady.load(Ordering::Relaxed),
            progress.churn.load(Ordering::Relaxed),
        )
    };
    let drops = || udp_stat(port).ok().flatten().map_or(0, |s| s.drops);
    std::thread::sleep(cfg.settle);
    let (t0, f0, c0, s0, d0) = (
        Instant::now(),
        file_len(&export),
        cpu_ticks(obs.pid()),
        sent_now(),
        drops(),
    );
    std::thread::sleep(cfg.window);
    let (t1, f1, c1, s1, d1) = (
        Instant::now(),
        file_len(&export),
        cpu_ticks(obs.pid()),
        sent_now(),
        drops(),
    );
    // Let the last silent agents' stalls come out.
    std::thread::sleep(Duration::from_millis(cfg.threshold_ms + 1000));
    stop.store(true, Ordering::Relaxed);
    let st = steady_thread.join().map_err(|_| "steady sender panicked")?;
    let ch = churn_thread.join().map_err(|_| "churn sender panicked")?;
    obs.check_running("varta-watch (ours)")?;
    let seen = watcher.finish()?;
    obs.stop();
    let dt = (t1 - t0).as_secs_f64();
    let (steady, churned) = count_beats(&export, f0, f1)?;
    let mut overshoot = Vec::new();
    let mut unmatched = 0;
    for pid in &silent_pids {
        let Some(&(nonce, sent_ns)) = st.last.get(pid) else {
            unmatched += 1;
            continue;
        };
        match seen.iter().find(|s| s.pid == *pid && s.nonce == nonce) {
            Some(s) => overshoot
                .push((s.seen_ns as f64 - sent_ns as f64 - cfg.threshold_ms as f64 * 1e6) / 1e6),
            None => unmatched += 1,
        }
    }
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(Phase {
        churn_per_sec: churn,
        window_secs: dt,
        steady_scheduled_per_sec: scheduled.0,
        churn_scheduled_per_sec: scheduled.1,
        steady_sent_per_sec: (s1.0 - s0.0) as f64 / dt,
        churn_sent_per_sec: (s1.1 - s0.1) as f64 / dt,
        steady_accepted_per_sec: steady as f64 / dt,
        churn_accepted_per_sec: churned as f64 / dt,
        total_accepted_per_sec: (steady + churned) as f64 / dt,
        rcvbuf_drops_per_sec: d1.saturating_sub(d0) as f64 / dt,
        send_errors: st.errors + ch.errors,
        steady_max_lag_ms: st.max_lag_ms,
        churn_max_lag_ms: ch.max_lag_ms,
        steady_sender_cores: st.cpu_cores,
        churn_sender_cores: ch.cpu_cores,
        overshoot_ms: overshoot,
        unmatched,
        cpu_cores: (c1 - c0) as f64 / tick / dt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use varta_vlp::Frame;

    #[test]
    fn streams_skip_silent_pids_and_keep_nonces_increasing() {
        let s = Stream::steady(5, &[STEADY_BASE + 2], 2.0, 3.0);
        assert_eq!(s.rate, 8.0);
        assert!(s.data.len() >= 24);
        let mut last: HashMap<u32, u64> = HashMap::new();
        for d in &s.data {
            let f = Frame::decode(d).unwrap();
            assert_ne!(f.pid, STEADY_BASE + 2);
            assert!((STEADY_BASE..STEADY_BASE + 5).contains(&f.pid));
            assert_eq!(f.nonce, last.get(&f.pid).map_or(1, |n| n + 1));
            last.insert(f.pid, f.nonce);
        }
        let c = Stream::churn(1000.0, 2.0);
        assert!(c.data.len() >= 2000);
        for (j, d) in c.data.iter().enumerate() {
            let f = Frame::decode(d).unwrap();
            assert_eq!((f.pid, f.nonce), (CHURN_BASE + j as u32, 1));
        }
        assert_eq!(due_count(Duration::from_millis(1500), 1000.0, 10_000), 1500);
        assert_eq!(due_count(Duration::from_secs(60), 1000.0, 10_000), 10_000);
    }
}
