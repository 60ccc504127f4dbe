//! churn, part 1: what identity resolution costs per new agent — the
//! identity thread's `/proc` read, and the detection loop's share through
//! the daemon's own `Policy`.

use crate::udpload::thread_cpu_ns;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use varta_vlp::{Frame, Status};
use varta_watch::config::EvictionPolicy;
use varta_watch::events::{EventBus, Origin};
use varta_watch::identity::{procread, Registry};
use varta_watch::policy::Policy;
use varta_watch::tracker::{Incoming, NoProbe, Tracker, TrackerSettings, Verdict};

use crate::procs::Res;
use crate::stats::percentile;

// ---------------------------------------------------------------------------
// Part 1: identity resolution.

/// `sleep` children, killed and reaped on drop.
pub(super) struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
#[derive(Serialize, Clone, Copy)]
pub(super) struct ReadCost {
    pub(super) reads: usize,
    pub(super) p50_ns: f64,
    pub(super) p99_ns: f64,
    pub(super) mean_ns: f64,
    pub(super) gone_p50_ns: f64,
}

/// `procread::read` over `procs` live children, `rounds` times each; and
/// over pids that do not exist (the gone path).
pub(super) fn read_cost(procs: usize, rounds: usize) -> Res<ReadCost> {
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
pub(super) struct AdmitCost {
    pub(super) agents: u32,
    /// Loop-thread CPU ns per admitted agent, identity resolution off.
    pub(super) off_ns: f64,
    /// The same through the daemon's `Policy` (admissions queued to the
    /// identity thread, the answers applied).
    pub(super) on_ns: f64,
    /// Agents named `unknown` at once because the identity queue was full
    /// (the bounded budget at work), identity on.
    pub(super) queue_full: u64,
}

/// The loop thread's CPU per admitted kernel-attested agent, identity
/// resolution off vs on, through the daemon's own `Policy`: after every
/// 32-frame batch `Policy::after_batch` (admissions to the identity
/// thread), and — as the daemon's mio loop does when the identity thread's
/// `Waker` fires — `Policy::on_wake` (answers applied: `is_life`, identity
/// record, interning, rule match, class assignment, `Identified` event).
/// Both paths poll the same mio `Poll` once per batch with a zero timeout,
/// as the daemon's loop waits on epoll every iteration.
pub(super) fn admit_cost(n: u32, on: bool) -> Res<(f64, u64)> {
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
