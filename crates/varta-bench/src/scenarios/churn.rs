//! `churn`: what new agents cost.
//!
//! 1. Identity resolution: `procread::read("/proc", pid)` timed over live
//!    `sleep` children (the identity thread's work per new UDS agent), and
//!    the detection loop's share of admitting an agent with identity
//!    resolution on vs off, in-process, through the daemon's own `Policy`
//!    (admission recorded, a request queued to the identity thread or the
//!    agent named `unknown` when that bounded queue is full, the answer
//!    applied on the `Waker`'s wake-up).
//! 2. Accepted beat rate under churn: our release observer with a plaintext
//!    UDP listener, a steady set of pids beating at a fixed rate, with and
//!    without a stream of fresh pids (each beats once and falls silent);
//!    accepted beats counted from the export file. Both streams are built
//!    before the clock starts and paced separately, each by its own thread
//!    sending `sendmmsg` batches from its own socket; what the kernel
//!    accepted from them in the window is the offered rate, reported with
//!    its share of the schedule (the goal is only measured when both kept
//!    to it). A few steady agents fall silent during the window; their
//!    beats are sent one by one and timestamped right before the `send`
//!    the kernel accepted, so their stall overshoot is, as in `detect`,
//!    stall line readable in the export − last delivered beat − threshold.
//!    (Timestamping a beat when it was queued, not sent, made a sender
//!    that fell behind its schedule report its own backlog as overshoot.)
//!    New agents at 100 k/s can only come over UDP here: a UDS agent must
//!    be a live process. A UDP agent's identity is its peer address,
//!    resolved inline on the loop (no /proc read).

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders};
use serde::Serialize;
use serde_json::json;
use varta_vlp::{Frame, Status, FRAME_LEN};
use varta_watch::config::EvictionPolicy;
use varta_watch::events::{EventBus, Origin};
use varta_watch::identity::{procread, Registry};
use varta_watch::policy::Policy;
use varta_watch::tracker::{Incoming, NoProbe, Tracker, TrackerSettings, Verdict};

use super::{rotated, SplitMix, Table};
use crate::exportfile::{file_len, StallWatcher};
use crate::procs::{bench_dir, monotonic_ns, Binaries, Observer, ObserverSpec, Res, Which};
use crate::stats::{num, percentile, Cmp, Goal, Summary};
use crate::udpload::{udp_stat, BATCH};
use crate::{ChurnArgs, Common, Outcome};

/// First pid of the steady set; churn pids start at [`CHURN_BASE`].
const STEADY_BASE: u32 = 2;
const CHURN_BASE: u32 = 10_000_000;

// ---------------------------------------------------------------------------
// Part 1: identity resolution.

/// `sleep` children, killed and reaped on drop.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn thread_cpu_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

#[derive(Serialize, Clone, Copy)]
struct ReadCost {
    reads: usize,
    p50_ns: f64,
    p99_ns: f64,
    mean_ns: f64,
    gone_p50_ns: f64,
}

/// `procread::read` over `procs` live children, `rounds` times each; and
/// over pids that do not exist (the gone path).
fn read_cost(procs: usize, rounds: usize) -> Res<ReadCost> {
    let mut kids = Sleepers(Vec::with_capacity(procs));
    for _ in 0..procs {
        kids.0.push(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?,
        );
    }
    let pids: Vec<u32> = kids.0.iter().map(Child::id).collect();
    let root = Path::new("/proc");
    // Warm-up: dentries, page cache of /proc.
    for &p in &pids {
        if procread::read(root, p).is_none() {
            return Err(format!("procread::read(/proc, {p}) found no live process").into());
        }
    }
    let mut t = Vec::with_capacity(procs * rounds);
    for _ in 0..rounds {
        for &p in &pids {
            let s = Instant::now();
            let r = procread::read(root, p);
            t.push(s.elapsed().as_nanos() as f64);
            std::hint::black_box(r);
        }
    }
    drop(kids);
    let mut gone = Vec::new();
    for i in 0..(procs * rounds).min(10_000) {
        // Above this machine's pid_max: never a live process.
        let p = 4_000_000 + i as u32;
        let s = Instant::now();
        std::hint::black_box(procread::read(root, p));
        gone.push(s.elapsed().as_nanos() as f64);
    }
    let mean = t.iter().sum::<f64>() / t.len() as f64;
    t.sort_by(f64::total_cmp);
    gone.sort_by(f64::total_cmp);
    Ok(ReadCost {
        reads: t.len(),
        p50_ns: percentile(&t, 0.5),
        p99_ns: percentile(&t, 0.99),
        mean_ns: mean,
        gone_p50_ns: percentile(&gone, 0.5),
    })
}

#[derive(Serialize, Clone, Copy)]
struct AdmitCost {
    agents: u32,
    /// Loop-thread CPU ns per admitted agent, identity resolution off.
    off_ns: f64,
    /// The same through the daemon's `Policy` (admissions queued to the
    /// identity thread, the answers applied).
    on_ns: f64,
    /// Agents named `unknown` at once because the identity queue was full
    /// (the bounded budget at work), identity on.
    queue_full: u64,
}

/// The loop thread's CPU per admitted kernel-attested agent, identity
/// resolution off vs on, through the daemon's own `Policy`: after every
/// 32-frame batch `Policy::after_batch` (admissions to the identity
/// thread), and — as the daemon's mio loop does when the identity thread's
/// `Waker` fires — `Policy::on_wake` (answers applied: `is_life`, identity
/// record, interning, rule match, class assignment, `Identified` event).
/// Both paths poll the same mio `Poll` once per batch with a zero timeout,
/// as the daemon's loop waits on epoll every iteration.
fn admit_cost(n: u32, on: bool) -> Res<(f64, u64)> {
    let mut t = Tracker::new(TrackerSettings {
        capacity: n,
        threshold_ns: 5_000_000_000,
        eviction: EvictionPolicy::Strict,
        max_beat_rate: 100,
        global_beat_rate: 0,
        global_beat_burst: 0,
        own_pidns: 0,
        allow_cross_namespace: false,
    });
    let mut bus = EventBus::new();
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(8);
    const WAKE: mio::Token = mio::Token(0);
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
    let config = match varta_watch::config::load(
        ["varta-watch", "--threshold-ms", "5000"].map(std::ffi::OsString::from),
    )? {
        varta_watch::config::Loaded::Run(c) => c,
        _ => return Err("default configuration did not load".into()),
    };
    let mut policy = if on {
        let p = Policy::new(&config, Arc::new(Registry::default()), waker, 0)?;
        p.setup(&mut t);
        Some(p)
    } else {
        None
    };
    // Pids above pid_max: the identity thread's read fails at once, as for
    // a process gone before it was read.
    let pids: Vec<u32> = (0..n).map(|i| 4_000_000 + i).collect();
    let mut verdicts = [Verdict::Dropped; 32];
    let mut batch = Vec::with_capacity(32);
    let cpu0 = thread_cpu_ns();
    let mut now = 1_000_000_000;
    for (k, chunk) in pids.chunks(32).enumerate() {
        batch.clear();
        batch.extend(chunk.iter().map(|&pid| Incoming {
            pid,
            frame: Frame::new(Status::Ok, pid, 1, 1, 0),
            origin: Origin::KernelAttested,
            pidns: None,
            new_session: false,
            peer: None,
        }));
        now = 1_000_000_000 + k as u64;
        t.on_batch(
            now,
            &batch,
            &mut NoProbe,
            &mut bus,
            &mut verdicts[..batch.len()],
        );
        poll.poll(&mut events, Some(Duration::ZERO))?;
        if let Some(p) = policy.as_mut() {
            p.after_batch(now, &mut t, &mut bus);
            if !events.is_empty() {
                p.on_wake(now, &mut t, &mut bus);
            }
        }
    }
    let mut cpu = thread_cpu_ns() - cpu0;
    if let Some(p) = policy.as_mut() {
        // The rest of the answers: blocking waits are not loop CPU.
        let identified = |p: &Policy| p.names().len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while identified(p) < n as usize {
            if Instant::now() > deadline {
                return Err(format!("identity thread answered {} of {n}", identified(p)).into());
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            let c0 = thread_cpu_ns();
            p.on_wake(now, &mut t, &mut bus);
            cpu += thread_cpu_ns() - c0;
        }
    }
    if t.len() != n as usize {
        return Err(format!("admitted {} of {n}", t.len()).into());
    }
    let queue_full = policy.map_or(0, |p| p.stats().queue_full.load(Ordering::Relaxed));
    Ok((cpu as f64 / f64::from(n), queue_full))
}

// ---------------------------------------------------------------------------
// Part 2: UDP churn.

/// Items of a stream paced at `rate`/s due after `elapsed`.
fn due_count(elapsed: Duration, rate: f64, len: usize) -> usize {
    ((elapsed.as_secs_f64() * rate) as usize).min(len)
}

/// One paced stream of pre-built datagrams.
struct Stream {
    /// Datagrams per second.
    rate: f64,
    data: Vec<[u8; FRAME_LEN]>,
}

impl Stream {
    /// The steady pids other than `skip`, round-robin at `hz` each: round r
    /// of a pid carries nonce r + 1. Long enough for `secs` (+ a batch).
    fn steady(steady: u32, skip: &[u32], hz: f64, secs: f64) -> Stream {
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
    fn churn(rate: f64, secs: f64) -> Stream {
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
struct SilentAgent {
    pid: u32,
    phase: Duration,
    /// 1 / hz.
    period: Duration,
    silent_at: Duration,
    nonce: u64,
    /// (nonce, CLOCK_MONOTONIC ns just before its `send`) of the last beat
    /// the kernel accepted.
    last: Option<(u64, u64)>,
}

/// What one sender thread did.
#[derive(Default)]
struct Sent {
    /// Failed `sendmmsg`/`send` calls.
    errors: u64,
    /// Most a stream fell behind its schedule at any tick, ms.
    max_lag_ms: f64,
    /// The thread's CPU time over its run / its run time.
    cpu_cores: f64,
    /// Silent agents' last accepted beats: pid → (nonce, ns).
    last: HashMap<u32, (u64, u64)>,
}

/// Sends up to `data[..due]` from `*pos` in `sendmmsg` batches of
/// [`BATCH`]; adds what the kernel accepted to `counter`.
fn send_due(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<()>,
    data: &[[u8; FRAME_LEN]],
    pos: &mut usize,
    due: usize,
    counter: &AtomicU64,
    errors: &mut u64,
) {
    let no_cmsgs: [ControlMessage; 0] = [];
    let mut failures = 0;
    while *pos < due && failures < 100 {
        let take = (due - *pos).min(BATCH);
        let iovs: [[IoSlice; 1]; BATCH] = std::array::from_fn(|k| {
            [IoSlice::new(
                data.get(*pos + k)
                    .filter(|_| k < take)
                    .map_or(&[], |d| &d[..]),
            )]
        });
        match sendmmsg(
            sock.as_raw_fd(),
            headers,
            &iovs[..take],
            [None::<()>; BATCH],
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(r) => {
                let n = r.count();
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
fn pace(
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
struct Progress {
    steady: AtomicU64,
    churn: AtomicU64,
}

/// `beat` lines whose newline lies in `[from, to)`: (steady, churn).
fn count_beats(path: &Path, from: u64, to: u64) -> Res<(u64, u64)> {
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

fn udp_addr(obs: &Observer) -> Res<SocketAddr> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(obs.log_path()).unwrap_or_default();
        let found = text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("udp: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        if let Some(a) = found {
            return Ok(a);
        }
        if Instant::now() > until {
            return Err(format!("no `udp: IP:PORT` line within 10 s: {}", obs.log_tail()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Serialize, Clone, Default)]
struct Phase {
    churn_per_sec: f64,
    window_secs: f64,
    /// Scheduled datagrams/s (steady stream + silent agents; new pids).
    steady_scheduled_per_sec: f64,
    churn_scheduled_per_sec: f64,
    /// Datagrams the kernel accepted from the senders in the window, /s.
    steady_sent_per_sec: f64,
    churn_sent_per_sec: f64,
    steady_accepted_per_sec: f64,
    churn_accepted_per_sec: f64,
    total_accepted_per_sec: f64,
    /// Receive-buffer drops of the observer's socket in the window, /s.
    rcvbuf_drops_per_sec: f64,
    send_errors: u64,
    /// Most the steady / churn stream fell behind schedule, ms.
    steady_max_lag_ms: f64,
    churn_max_lag_ms: f64,
    /// Sender threads' CPU over their run, cores.
    steady_sender_cores: f64,
    churn_sender_cores: f64,
    /// Overshoot of the silent steady agents, ms (stall line readable −
    /// send of the last beat the kernel accepted − threshold).
    overshoot_ms: Vec<f64>,
    /// Silent agents whose stall was not seen.
    unmatched: usize,
    /// Observer CPU over the window, cores.
    cpu_cores: f64,
}

impl Phase {
    /// Sent in the window / scheduled, both streams (1.0: on schedule).
    fn offered_share(&self) -> f64 {
        (self.steady_sent_per_sec + self.churn_sent_per_sec)
            / (self.steady_scheduled_per_sec + self.churn_scheduled_per_sec)
    }
}

struct Cfg<'a> {
    bins: &'a Binaries,
    steady: u32,
    hz: f64,
    threshold_ms: u64,
    capacity: u32,
    settle: Duration,
    window: Duration,
    silent: usize,
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the comm.
    g(11) + g(12)
}

fn phase(cfg: &Cfg, churn: f64, seed: u64) -> Res<Phase> {
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
    let addr = udp_addr(&obs)?;
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

pub fn run(a: &ChurnArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let steady = a
        .churn_steady
        .unwrap_or(if c.quick { 2_000 } else { 10_000 });
    let secs = a.churn_secs.unwrap_or(if c.quick { 3.0 } else { 5.0 });
    let rate = a.churn_rate;
    if steady < a.churn_silent as u32 || steady == 0 || !(1.0..=600.0).contains(&secs) {
        return Err(
            "churn needs --churn-steady >= --churn-silent, >= 1, --churn-secs in 1..=600".into(),
        );
    }
    println!("## churn: new agents — identity resolution cost, accepted beats under churn");
    // Part 1.
    let procs = 200;
    let rounds = if c.quick { 5 } else { 50 };
    let mut reads = Vec::new();
    let mut admits = Vec::new();
    let admit_n = if c.quick { 20_000 } else { 100_000 };
    for rep in 0..c.reps {
        let r = read_cost(procs, rounds)?;
        let (off, _) = admit_cost(admit_n, false)?;
        let (on, queue_full) = admit_cost(admit_n, true)?;
        eprintln!(
            "  rep {}: procread p50 {:.0} ns p99 {:.0} ns; loop per admission off {off:.0} ns, on {on:.0} ns ({queue_full} named unknown: identity queue full)",
            rep + 1,
            r.p50_ns,
            r.p99_ns
        );
        reads.push(r);
        admits.push(AdmitCost {
            agents: admit_n,
            off_ns: off,
            on_ns: on,
            queue_full,
        });
    }
    let col = |f: &dyn Fn(usize) -> f64| Summary::of(&(0..reads.len()).map(f).collect::<Vec<_>>());
    let p50 = col(&|i| reads[i].p50_ns / 1e3);
    let p99 = col(&|i| reads[i].p99_ns / 1e3);
    let mean = col(&|i| reads[i].mean_ns / 1e3);
    let gone = col(&|i| reads[i].gone_p50_ns / 1e3);
    let off = col(&|i| admits[i].off_ns);
    let on = col(&|i| admits[i].on_ns);
    let delta = col(&|i| admits[i].on_ns - admits[i].off_ns);
    let full = col(&|i| admits[i].queue_full as f64);
    println!(
        "\n### identity: procread::read(\"/proc\", pid) over {procs} live `sleep` children × {rounds} rounds\n"
    );
    let mut t = Table::new(&["p50 µs", "p99 µs", "mean µs", "gone pid, p50 µs"]);
    t.row(vec![p50.cell(1), p99.cell(1), mean.cell(1), gone.cell(2)]);
    t.print();
    println!(
        "\n### identity: loop-thread CPU per admitted UDS agent ({} agents, in-process)\n",
        num(f64::from(admit_n), 0)
    );
    let mut t = Table::new(&[
        "identity off, ns",
        "identity on, ns",
        "on − off, ns",
        "named unknown at once (identity queue full)",
    ]);
    t.row(vec![off.cell(0), on.cell(0), delta.cell(0), full.cell(0)]);
    t.print();

    // Part 2.
    let capacity = a.churn_capacity.unwrap_or_else(|| {
        steady + (rate * (a.churn_threshold_ms as f64 / 1e3) * 2.5) as u32 + 4096
    });
    let cfg = Cfg {
        bins,
        steady,
        hz: a.churn_hz,
        threshold_ms: a.churn_threshold_ms,
        capacity,
        settle: Duration::from_secs(1),
        window: Duration::from_secs_f64(secs),
        silent: a.churn_silent,
    };
    println!(
        "\n### churn: {} steady UDP pids at {} Hz, threshold {} ms, with 0 and {} new pids/s, {secs} s window, tracker capacity {} (strict)\n",
        num(f64::from(steady), 0),
        a.churn_hz,
        a.churn_threshold_ms,
        num(rate, 0),
        num(f64::from(capacity), 0)
    );
    let rates = [0.0, rate];
    let mut phases: Vec<Vec<Phase>> = vec![Vec::new(), Vec::new()];
    for rep in 0..c.reps as usize {
        for which in rotated(&[0usize, 1], rep) {
            let p = phase(&cfg, rates[which], a.churn_seed + rep as u64)?;
            eprintln!(
                "  rep {}: churn {}/s: sent {} + {}/s ({:.1} % of schedule, lag max {:.1} / {:.1} ms, senders {:.2} + {:.2} cores), \
                 steady accepted {}/s, total {}/s, rcvbuf drops {}/s, observer {:.2} cores, overshoot max {:.2} ms ({} unmatched)",
                rep + 1,
                num(rates[which], 0),
                num(p.steady_sent_per_sec, 0),
                num(p.churn_sent_per_sec, 0),
                p.offered_share() * 100.0,
                p.steady_max_lag_ms,
                p.churn_max_lag_ms,
                p.steady_sender_cores,
                p.churn_sender_cores,
                num(p.steady_accepted_per_sec, 0),
                num(p.total_accepted_per_sec, 0),
                num(p.rcvbuf_drops_per_sec, 0),
                p.cpu_cores,
                p.overshoot_ms.iter().copied().fold(f64::NAN, f64::max),
                p.unmatched
            );
            phases[which].push(p);
        }
    }
    let mut t = Table::new(&[
        "new pids/s",
        "steady sent/s",
        "new pids sent/s",
        "sent / scheduled",
        "steady accepted/s",
        "new-pid beats accepted/s",
        "total accepted/s",
        "rcvbuf drops/s",
        "observer CPU (cores)",
        "sender CPU steady + churn (cores)",
        "silent-agent overshoot ms p50 / max (n, unmatched)",
    ]);
    let mut rows = Vec::new();
    for (w, v) in phases.iter().enumerate() {
        let s = |f: fn(&Phase) -> f64| Summary::of(&v.iter().map(f).collect::<Vec<_>>());
        let mut ov: Vec<f64> = v.iter().flat_map(|p| p.overshoot_ms.clone()).collect();
        ov.sort_by(f64::total_cmp);
        let unmatched: usize = v.iter().map(|p| p.unmatched).sum();
        let (sa, ta) = (
            s(|p| p.steady_accepted_per_sec),
            s(|p| p.total_accepted_per_sec),
        );
        t.row(vec![
            num(rates[w], 0),
            s(|p| p.steady_sent_per_sec).cell(0),
            s(|p| p.churn_sent_per_sec).cell(0),
            s(Phase::offered_share).cell(3),
            sa.cell(0),
            s(|p| p.churn_accepted_per_sec).cell(0),
            ta.cell(0),
            s(|p| p.rcvbuf_drops_per_sec).cell(0),
            s(|p| p.cpu_cores).cell(2),
            format!(
                "{} + {}",
                s(|p| p.steady_sender_cores).cell(2),
                s(|p| p.churn_sender_cores).cell(2)
            ),
            format!(
                "{} / {} ({}, {unmatched})",
                num(percentile(&ov, 0.5), 3),
                num(ov.last().copied().unwrap_or(f64::NAN), 3),
                ov.len()
            ),
        ]);
        rows.push(json!({
            "new_pids_per_sec": rates[w], "steady_accepted_per_sec": sa, "total_accepted_per_sec": ta,
            "offered_share": s(Phase::offered_share),
            "overshoot_ms_sorted": ov, "unmatched": unmatched, "per_rep": v,
        }));
    }
    t.print();
    let ratio: Vec<f64> = phases[1]
        .iter()
        .zip(&phases[0])
        .map(|(ch, base)| ch.steady_accepted_per_sec / base.steady_accepted_per_sec)
        .collect();
    let ratio = Summary::of(&ratio);
    // The bar is about the observer: it is only tested when the senders
    // kept (within 5 %) to the schedule in every phase.
    let min_share = phases
        .iter()
        .flatten()
        .map(Phase::offered_share)
        .fold(f64::INFINITY, f64::min);
    let on_schedule = min_share >= 0.95;
    println!(
        "\n(median (min–max) of {} reps; overshoot pooled over reps = stall line readable in the export − send of the last beat the kernel accepted − threshold. \
         Steady accepted with churn / without: {}; senders' lowest share of schedule {:.3}{})",
        c.reps,
        ratio.cell(3),
        min_share,
        if on_schedule {
            ""
        } else {
            ": SENDER-LIMITED, the goal is not measured"
        }
    );
    let goals = vec![Goal::new(
        &format!(
            "churn: steady accepted beats/s under {} new pids/s, share of no churn{}",
            num(rate, 0),
            if on_schedule {
                ""
            } else {
                " (sender-limited: not measured)"
            }
        ),
        if on_schedule { ratio.median } else { f64::NAN },
        Cmp::AtLeast,
        0.9,
        "",
    )];
    Ok(Outcome {
        scenario: "churn",
        results: json!({
            "procread": { "procs": procs, "rounds": rounds, "p50_us": p50, "p99_us": p99, "mean_us": mean, "gone_p50_us": gone, "per_rep": reads },
            "admission_loop_cpu_ns": { "off": off, "on": on, "delta": delta, "per_rep": admits },
            "udp": { "steady": steady, "hz": a.churn_hz, "threshold_ms": a.churn_threshold_ms, "capacity": capacity, "window_secs": secs, "phases": rows, "steady_ratio": ratio },
        }),
        goals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
