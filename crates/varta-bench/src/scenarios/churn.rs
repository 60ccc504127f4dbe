//! `churn`: what new agents cost.
//!
//! 1. Identity resolution: `procread::read("/proc", pid)` timed over live
//!    `sleep` children (the identity thread's work per new UDS agent), and
//!    the detection loop's share of admitting an agent with identity
//!    resolution on (admission recorded, a request queued, the answer
//!    applied) vs off, in-process.
//! 2. Accepted beat rate under churn: our release observer with a plaintext
//!    UDP listener, a steady set of pids beating at a fixed rate, with and
//!    without a stream of fresh pids (each beats once and falls silent);
//!    accepted beats counted from the export file, and the stall overshoot
//!    of a few steady agents that fall silent during the window (seen in
//!    the export file − send time of their last beat − threshold).
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
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders};
use serde::Serialize;
use serde_json::json;
use varta_vlp::{Frame, Status};
use varta_watch::config::EvictionPolicy;
use varta_watch::events::{Event, EventBus, Origin};
use varta_watch::identity::{attested_record, procread, Registry};
use varta_watch::tracker::{Incoming, NoProbe, Tracker, TrackerSettings, Verdict};

use super::{rotated, SplitMix, Table};
use crate::exportfile::{file_len, StallWatcher};
use crate::procs::{bench_dir, monotonic_ns, Binaries, Observer, ObserverSpec, Res, Which};
use crate::stats::{num, percentile, Cmp, Goal, Summary};
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
    /// The same with admissions recorded, queued to an identity thread and
    /// the answers applied (the daemon's `Policy` path, rebuilt here).
    on_ns: f64,
}

/// The loop thread's CPU per admitted kernel-attested agent, identity
/// resolution off vs on. `Policy::new` needs a `mio::Waker` (this crate
/// does not depend on mio), so the on-path is rebuilt from the same public
/// pieces the policy engine uses: `Tracker::record_admissions` /
/// `take_admitted` after every 32-frame batch, a `sync_channel(16384)`
/// `try_send` per admission (what `Resolver::request` is), an identity
/// thread calling `procread::read` and replying, and per reply
/// `is_life` + `attested_record` + `Registry::intern` + `assign_class` +
/// an `Identified` event (what `Policy::on_wake` does without rules).
fn admit_cost(n: u32, on: bool) -> Res<f64> {
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
    let registry = Registry::default();
    if on {
        t.record_admissions();
    }
    let (req_tx, req_rx) = mpsc::sync_channel::<(u32, u64)>(16_384);
    let (rep_tx, rep_rx) = mpsc::sync_channel(16_384);
    let worker = std::thread::spawn(move || {
        while let Ok((pid, start)) = req_rx.recv() {
            let raw = procread::read(Path::new("/proc"), pid);
            if rep_tx.send((pid, start, raw)).is_err() {
                return;
            }
        }
    });
    // Pids above pid_max: the identity thread's read fails at once, as for
    // a process gone before it was read.
    let pids: Vec<u32> = (0..n).map(|i| 4_000_000 + i).collect();
    let mut verdicts = [Verdict::Dropped; 32];
    let mut batch = Vec::with_capacity(32);
    let mut queued = 0u64;
    let mut applied = 0u64;
    let apply = |t: &mut Tracker, bus: &mut EventBus, (pid, start, raw)| {
        if t.is_life(pid, start) {
            let rec = attested_record(Option::as_ref(&raw), None, pid);
            let id = registry.intern(rec);
            t.assign_class(pid, 0);
            bus.emit(
                0,
                Event::Identified {
                    pid,
                    identity: id,
                    rule: None,
                },
            );
        }
    };
    let cpu0 = thread_cpu_ns();
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
        let now = 1_000_000_000 + k as u64;
        t.on_batch(
            now,
            &batch,
            &mut NoProbe,
            &mut bus,
            &mut verdicts[..batch.len()],
        );
        if on {
            for a in t.take_admitted() {
                if req_tx.try_send((a.pid, a.start_time)).is_ok() {
                    queued += 1;
                }
            }
            for r in rep_rx.try_iter() {
                apply(&mut t, &mut bus, r);
                applied += 1;
            }
        }
    }
    let mut cpu = thread_cpu_ns() - cpu0;
    if on {
        // The rest of the answers: blocking waits are not loop CPU.
        while applied < queued {
            let r = rep_rx.recv()?;
            let c0 = thread_cpu_ns();
            apply(&mut t, &mut bus, r);
            cpu += thread_cpu_ns() - c0;
            applied += 1;
        }
    }
    drop(req_tx);
    drop(rep_rx);
    let _ = worker.join();
    if t.len() != n as usize {
        return Err(format!("admitted {} of {n}", t.len()).into());
    }
    Ok(cpu as f64 / f64::from(n))
}

// ---------------------------------------------------------------------------
// Part 2: UDP churn.

/// One phase's settings.
struct Load {
    addr: SocketAddr,
    steady: u32,
    /// Beats per second of each steady pid.
    hz: f64,
    /// New pids per second (0: no churn).
    churn: f64,
    /// Steady pids that fall silent, and when (since the start of sending).
    silent: Vec<(u32, Duration)>,
    duration: Duration,
}

/// What the sender did.
#[derive(Default)]
struct Sent {
    errors: u64,
    /// Per silent pid: (nonce, CLOCK_MONOTONIC ns) of its last beat.
    last: HashMap<u32, (u64, u64)>,
    /// Ticks that ended behind schedule by more than 10 ms.
    late_ticks: u64,
}

/// Datagrams sent so far: (steady, churn), read at the window edges.
#[derive(Default)]
struct Progress {
    steady: AtomicU64,
    churn: AtomicU64,
}

/// Sends `queue` (is-steady, datagram) with `sendmmsg`, 32 at a time.
fn flush(sock: &UdpSocket, queue: &[(bool, [u8; 32])], p: &Progress, errors: &mut u64) {
    let fd = sock.as_raw_fd();
    let mut headers = MultiHeaders::<()>::preallocate(32, None);
    let no_cmsgs: [ControlMessage; 0] = [];
    let mut pos = 0;
    let mut failures = 0;
    while pos < queue.len() && failures < 1000 {
        let take = (queue.len() - pos).min(32);
        let iovs: Vec<[IoSlice; 1]> = queue[pos..pos + take]
            .iter()
            .map(|(_, d)| [IoSlice::new(d)])
            .collect();
        match sendmmsg(
            fd,
            &mut headers,
            &iovs,
            [None::<()>; 32],
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(r) => {
                let n = r.count();
                let st = queue[pos..pos + n].iter().filter(|q| q.0).count() as u64;
                p.steady.fetch_add(st, Ordering::Relaxed);
                p.churn.fetch_add(n as u64 - st, Ordering::Relaxed);
                pos += n;
            }
            Err(Errno::EINTR) => {}
            Err(_) => {
                *errors += 1;
                failures += 1;
            }
        }
    }
}

/// Paced sender: every half millisecond, the steady beats and new pids due
/// by then, in `sendmmsg` batches.
fn send(load: &Load, stop: &AtomicBool, p: &Progress) -> Res<Sent> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(load.addr)?;
    let mut sent = Sent::default();
    let mut nonce = vec![0u64; load.steady as usize];
    let silent: HashMap<u32, Duration> = load.silent.iter().copied().collect();
    let steady_rate = f64::from(load.steady) * load.hz;
    let (mut steady_done, mut churn_done) = (0u64, 0u64);
    let mut queue: Vec<(bool, [u8; 32])> = Vec::new();
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let el = start.elapsed();
        if el >= load.duration {
            break;
        }
        let s = el.as_secs_f64();
        queue.clear();
        let steady_due = (s * steady_rate) as u64;
        let churn_due = (s * load.churn) as u64;
        // Interleaved as they fall due, steady and new alike.
        while steady_done < steady_due || churn_done < churn_due {
            let steady_next = steady_done as f64 / steady_rate.max(1e-9);
            let churn_next = churn_done as f64 / load.churn.max(1e-9);
            if steady_done < steady_due && (churn_done >= churn_due || steady_next <= churn_next) {
                let i = (steady_done % u64::from(load.steady)) as usize;
                steady_done += 1;
                let pid = STEADY_BASE + i as u32;
                if silent.get(&pid).is_some_and(|&at| el >= at) {
                    continue;
                }
                nonce[i] += 1;
                queue.push((
                    true,
                    Frame::new(Status::Ok, pid, nonce[i], nonce[i], 0).to_bytes(),
                ));
                if silent.contains_key(&pid) {
                    sent.last.insert(pid, (nonce[i], monotonic_ns()));
                }
            } else {
                let pid = CHURN_BASE + churn_done as u32;
                churn_done += 1;
                queue.push((false, Frame::new(Status::Ok, pid, 1, 1, 0).to_bytes()));
            }
        }
        flush(&sock, &queue, p, &mut sent.errors);
        if start.elapsed().as_secs_f64() - s > 0.010 {
            sent.late_ticks += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(sent)
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
    steady_sent_per_sec: f64,
    churn_sent_per_sec: f64,
    steady_accepted_per_sec: f64,
    churn_accepted_per_sec: f64,
    total_accepted_per_sec: f64,
    send_errors: u64,
    late_ticks: u64,
    /// Overshoot of the silent steady agents, ms (seen − last send − threshold).
    overshoot_ms: Vec<f64>,
    /// Silent agents whose stall was not seen.
    unmatched: usize,
    /// Observer CPU over the window, cores.
    cpu_cores: f64,
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
    let load = Load {
        addr,
        steady: cfg.steady,
        hz: cfg.hz,
        churn,
        silent,
        duration: total,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let (stop2, progress2) = (stop.clone(), progress.clone());
    let sender = std::thread::spawn(move || send(&load, &stop2, &progress2));
    let sent_now = || {
        (
            progress.steady.load(Ordering::Relaxed),
            progress.churn.load(Ordering::Relaxed),
        )
    };
    std::thread::sleep(cfg.settle);
    let (t0, f0, c0, s0) = (
        Instant::now(),
        file_len(&export),
        cpu_ticks(obs.pid()),
        sent_now(),
    );
    std::thread::sleep(cfg.window);
    let (t1, f1, c1, s1) = (
        Instant::now(),
        file_len(&export),
        cpu_ticks(obs.pid()),
        sent_now(),
    );
    // Let the last silent agents' stalls come out.
    std::thread::sleep(Duration::from_millis(cfg.threshold_ms + 1000));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().map_err(|_| "sender panicked")??;
    obs.check_running("varta-watch (ours)")?;
    let seen = watcher.finish()?;
    obs.stop();
    let dt = (t1 - t0).as_secs_f64();
    let (steady, churned) = count_beats(&export, f0, f1)?;
    let mut overshoot = Vec::new();
    let mut unmatched = 0;
    for pid in &silent_pids {
        let Some(&(nonce, sent_ns)) = sent.last.get(pid) else {
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
        steady_sent_per_sec: (s1.0 - s0.0) as f64 / dt,
        churn_sent_per_sec: (s1.1 - s0.1) as f64 / dt,
        steady_accepted_per_sec: steady as f64 / dt,
        churn_accepted_per_sec: churned as f64 / dt,
        total_accepted_per_sec: (steady + churned) as f64 / dt,
        send_errors: sent.errors,
        late_ticks: sent.late_ticks,
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
        let off = admit_cost(admit_n, false)?;
        let on = admit_cost(admit_n, true)?;
        eprintln!(
            "  rep {}: procread p50 {:.0} ns p99 {:.0} ns; loop per admission off {off:.0} ns, on {on:.0} ns",
            rep + 1,
            r.p50_ns,
            r.p99_ns
        );
        reads.push(r);
        admits.push(AdmitCost {
            agents: admit_n,
            off_ns: off,
            on_ns: on,
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
    let mut t = Table::new(&["identity off, ns", "identity on, ns", "on − off, ns"]);
    t.row(vec![off.cell(0), on.cell(0), delta.cell(0)]);
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
                "  rep {}: churn {}/s: steady accepted {}/s, total {}/s, observer {:.2} cores, overshoot max {:.2} ms ({} unmatched)",
                rep + 1,
                num(rates[which], 0),
                num(p.steady_accepted_per_sec, 0),
                num(p.total_accepted_per_sec, 0),
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
        "steady accepted/s",
        "new pids sent/s",
        "new-pid beats accepted/s",
        "total accepted/s",
        "observer CPU (cores)",
        "silent-agent overshoot ms p50 / max (unmatched)",
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
            sa.cell(0),
            s(|p| p.churn_sent_per_sec).cell(0),
            s(|p| p.churn_accepted_per_sec).cell(0),
            ta.cell(0),
            s(|p| p.cpu_cores).cell(2),
            format!(
                "{} / {} ({unmatched})",
                num(percentile(&ov, 0.5), 2),
                num(ov.last().copied().unwrap_or(f64::NAN), 2)
            ),
        ]);
        rows.push(json!({
            "new_pids_per_sec": rates[w], "steady_accepted_per_sec": sa, "total_accepted_per_sec": ta,
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
    println!(
        "\n(median (min–max) of {} reps; overshoot pooled over reps. Steady accepted with churn / without: {})",
        c.reps,
        ratio.cell(3)
    );
    let goals = vec![Goal::new(
        &format!(
            "churn: steady accepted beats/s under {} new pids/s, share of no churn",
            num(rate, 0)
        ),
        ratio.median,
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
