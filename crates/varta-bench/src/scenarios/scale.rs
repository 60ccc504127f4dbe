//! `scale`: our tracker in-process at 10 k / 100 k / 1 M agents — the real
//! `Tracker` and `EventBus` with a `CountingSink`, fed synthetic beats at
//! 1 Hz of simulated time in 32-frame `Tracker::on_batch` calls: the code
//! path a datagram takes after the daemon's `recvmmsg`. Each size runs in a fresh process (`scale-worker`) so the RSS it
//! adds is not blurred by what earlier sizes left in the allocator.
//!
//! Policy classes (`--thresholds`): at the largest size, agents spread
//! round-robin over K classes of distinct thresholds (1 s … K s); ns per
//! beat as above, then every agent left silent and the stalls drained
//! event-driven (`next_deadline()`, then `expire(at)` at exactly that time,
//! as the daemon's loop does with a perfect clock): each stall's time is
//! checked against last beat + its class threshold (overshoot must be 0),
//! and the wall-clock cost of those calls is what the classes cost.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use varta_vlp::{Frame, Status};
use varta_watch::config::EvictionPolicy;
use varta_watch::events::{Event, EventBus, Origin, Sink};
use varta_watch::export::counters::{Counters, CountingSink};
use varta_watch::tracker::{
    ClassTimeouts, Incoming, NoProbe, Tracker, TrackerSettings, Verdict, MAX_CLASSES,
};

use super::Table;
use crate::procs::Res;
use crate::stats::{num, Cmp, Goal, Summary};
use crate::{Common, Outcome, ScaleArgs};

/// What one worker measured.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Sample {
    agents: u32,
    rss_added_bytes: u64,
    ns_per_beat: f64,
    ns_per_beat_random: f64,
    expire_idle_ns: f64,
    ns_per_stall: f64,
}

/// Simulated seconds of 1 Hz beating timed per worker (median taken).
const ROUNDS: u64 = 5;
const THRESHOLD_NS: u64 = 5_000_000_000;

fn rss_bytes() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

/// Frames per tracker call: one `recvmmsg` batch, as the daemon's ingest
/// hands them over.
const BATCH: usize = 32;

/// Every pid in `pids` beats once, in that order, in socket-sized batches.
fn beat_all(t: &mut Tracker, bus: &mut EventBus, now: u64, pids: &[u32], nonce: u64) {
    let mut verdicts = [Verdict::Dropped; BATCH];
    let mut batch = Vec::with_capacity(BATCH);
    for (k, chunk) in pids.chunks(BATCH).enumerate() {
        batch.clear();
        batch.extend(chunk.iter().map(|&pid| Incoming {
            pid,
            frame: Frame::new(Status::Ok, pid, nonce, nonce, 0),
            origin: Origin::KernelAttested,
            pidns: None,
            new_session: false,
            peer: None,
        }));
        // One receive time per batch, like one wake-up of the daemon.
        t.on_batch(
            now + k as u64,
            &batch,
            &mut NoProbe,
            bus,
            &mut verdicts[..batch.len()],
        );
    }
}

/// Deterministic shuffle (xorshift64 Fisher–Yates).
fn shuffled(pids: &[u32]) -> Vec<u32> {
    let mut order = pids.to_vec();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// Times `ROUNDS` simulated seconds of 1 Hz beating in `order`; median ns/beat.
fn time_rounds(
    t: &mut Tracker,
    bus: &mut EventBus,
    now: &mut u64,
    nonce: &mut u64,
    order: &[u32],
) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        *now += 1_000_000_000;
        *nonce += 1;
        let start = Instant::now();
        beat_all(t, bus, *now, order, *nonce);
        rounds.push(start.elapsed().as_nanos() as f64 / order.len() as f64);
    }
    Summary::of(&rounds).median
}

/// The hidden `scale-worker` subcommand: prints one JSON [`Sample`].
pub fn worker(n: u32) -> Res<()> {
    if n == 0 {
        return Err("--agents must be >= 1".into());
    }
    let before = rss_bytes()?;
    // The daemon's defaults (per-pid limit 100/s on, global limit off): the
    // per-pid token bucket is part of the measured path.
    let mut t = Tracker::new(TrackerSettings {
        capacity: n,
        threshold_ns: THRESHOLD_NS,
        eviction: EvictionPolicy::Strict,
        max_beat_rate: 100,
        global_beat_rate: 0,
        global_beat_burst: 0,
        own_pidns: 0,
        allow_cross_namespace: false,
    });
    let counters = Arc::new(Counters::default());
    let mut bus = EventBus::new();
    bus.add(Box::new(CountingSink::new(counters.clone())));
    let mut now = 1_000_000_000u64;
    let mut nonce = 1u64;
    // Pids start at 2 like a real system's; admission fills the tracker.
    let pids: Vec<u32> = (2..n + 2).collect();
    beat_all(&mut t, &mut bus, now, &pids, nonce);
    let rss_added_bytes = rss_bytes()?.saturating_sub(before);
    // Pid order walks slots and index in allocation order (cache friendly);
    // random order lands every beat on a cold slot and index entry once the
    // table outgrows the caches, as agents beating independently do.
    let ns_per_beat = time_rounds(&mut t, &mut bus, &mut now, &mut nonce, &pids);
    let order = shuffled(&pids);
    let ns_per_beat_random = time_rounds(&mut t, &mut bus, &mut now, &mut nonce, &order);
    let accepted = counters.kind("beat");
    let expected = u64::from(n) * (2 * ROUNDS + 1);
    if accepted != expected {
        return Err(format!("tracker accepted {accepted} beats, expected {expected}").into());
    }
    // A stall-scan tick when nothing is due (the common case).
    let iters = 10_000u32;
    let start = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(t.expire(std::hint::black_box(now), &mut bus));
    }
    let expire_idle_ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
    // Everyone silent past the threshold: one tick raises every stall.
    let start = Instant::now();
    let stalled = t.expire(now + n as u64 / BATCH as u64 + THRESHOLD_NS + 1, &mut bus);
    let ns_per_stall = start.elapsed().as_nanos() as f64 / f64::from(stalled.max(1));
    if stalled != n {
        return Err(format!("expected {n} stalls, got {stalled}").into());
    }
    let sample = Sample {
        agents: n,
        rss_added_bytes,
        ns_per_beat,
        ns_per_beat_random,
        expire_idle_ns,
        ns_per_stall,
    };
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}

fn run_worker(n: u32) -> Res<Sample> {
    let out = Command::new(std::env::current_exe()?)
        .args(["scale-worker", "--agents", &n.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("scale worker for {n} agents failed ({})", out.status).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.trim())?)
}

pub fn run(a: &ScaleArgs, c: &Common) -> Res<Outcome> {
    let sizes = a.sizes.clone().unwrap_or_else(|| {
        if c.quick {
            vec![10_000, 1_000_000]
        } else {
            vec![10_000, 100_000, 1_000_000]
        }
    });
    if sizes.is_empty() || sizes.iter().any(|&n| n == 0 || n > 4_194_304) {
        return Err("scale --sizes must be between 1 and 4194304 agents".into());
    }
    let ks = a.thresholds.clone().unwrap_or_else(|| vec![1, 16]);
    if ks.iter().any(|&k| k == 0 || k as usize > MAX_CLASSES) {
        return Err(format!("scale --thresholds must be between 1 and {MAX_CLASSES}").into());
    }
    println!(
        "## scale: our tracker in-process, synthetic beats at 1 Hz (simulated), {} reps",
        c.reps
    );
    // samples[size index][rep]
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sizes.len()];
    for rep in 0..c.reps {
        for (i, &n) in sizes.iter().enumerate() {
            let s = run_worker(n)?;
            eprintln!(
                "  rep {}: {n} agents {:.1} MiB, {:.1} ns/beat",
                rep + 1,
                s.rss_added_bytes as f64 / 1048576.0,
                s.ns_per_beat
            );
            samples[i].push(s);
        }
    }
    let col =
        |v: &[Sample], f: fn(&Sample) -> f64| Summary::of(&v.iter().map(f).collect::<Vec<_>>());
    let mut t = Table::new(&[
        "agents",
        "RSS added MiB",
        "bytes/agent",
        "ns/beat, pid order",
        "ns/beat, random order",
        "expire, none due (ns)",
        "ns per stall raised",
    ]);
    let mut rows = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let v = &samples[i];
        let mib = col(v, |s| s.rss_added_bytes as f64 / 1048576.0);
        let per = col(v, |s| s.rss_added_bytes as f64 / f64::from(s.agents));
        let beat = col(v, |s| s.ns_per_beat);
        let random = col(v, |s| s.ns_per_beat_random);
        let idle = col(v, |s| s.expire_idle_ns);
        let stall = col(v, |s| s.ns_per_stall);
        t.row(vec![
            num(f64::from(n), 0),
            mib.cell(1),
            per.cell(0),
            beat.cell(1),
            random.cell(1),
            idle.cell(1),
            stall.cell(1),
        ]);
        rows.push(json!({
            "agents": n, "rss_added_mib": mib, "bytes_per_agent": per, "ns_per_beat_pid_order": beat, "ns_per_beat_random_order": random,
            "expire_none_due_ns": idle, "ns_per_stall": stall, "per_rep": v,
        }));
    }
    println!();
    t.print();
    println!(
        "\n(median (min–max) of {} reps; each size in a fresh process)",
        c.reps
    );

    let (small_i, large_i) = (
        (0..sizes.len()).min_by_key(|&i| sizes[i]).unwrap_or(0),
        (0..sizes.len()).max_by_key(|&i| sizes[i]).unwrap_or(0),
    );
    let (small, large) = (sizes[small_i], sizes[large_i]);
    // RSS goal is for 1 M agents; from a smaller run it is extrapolated.
    let rss_1m: Vec<f64> = samples[large_i]
        .iter()
        .map(|s| s.rss_added_bytes as f64 / f64::from(s.agents) * 1e6 / 1048576.0)
        .collect();
    let rss_name = if large == 1_000_000 {
        "scale RSS for 1 M agents <= 150 MiB".to_string()
    } else {
        format!(
            "scale RSS for 1 M agents (extrapolated from {}) <= 150 MiB",
            num(f64::from(large), 0)
        )
    };
    let ratio = |f: fn(&Sample) -> f64| -> Summary {
        let v: Vec<f64> = samples[large_i]
            .iter()
            .zip(&samples[small_i])
            .map(|(l, s)| f(l) / f(s))
            .collect();
        Summary::of(&v)
    };
    let (r_pid, r_random) = (ratio(|s| s.ns_per_beat), ratio(|s| s.ns_per_beat_random));
    let (large_s, small_s) = (num(f64::from(large), 0), num(f64::from(small), 0));
    println!(
        "ns/beat at {large_s} / at {small_s}: pid order {}, random order {}",
        r_pid.cell(2),
        r_random.cell(2)
    );
    let mut goals = vec![Goal::new(
        &rss_name,
        Summary::of(&rss_1m).median,
        Cmp::AtMost,
        150.0,
        " MiB",
    )];
    // O(1) per beat: both orders; random order is the one caches cannot hide.
    for (order, r) in [("pid order", r_pid), ("random order", r_random)] {
        goals.push(Goal::new(
            &format!("scale ns/beat ({order}) at {large_s} within 1.5x of {small_s}"),
            r.median,
            Cmp::AtMost,
            1.5,
            "x",
        ));
    }
    let (classes, class_goals) = classes_table(large, &ks, c.reps)?;
    goals.extend(class_goals);
    Ok(Outcome {
        scenario: "scale",
        results: json!({
            "sizes": rows,
            "ns_per_beat_ratio_large_over_small": { "pid_order": r_pid, "random_order": r_random },
            "classes": classes,
        }),
        goals,
    })
}

// ---------------------------------------------------------------------------
// Policy classes: the same 1 Hz beating with agents spread round-robin over
// K classes of distinct thresholds, then an event-driven stall drain.

/// Threshold of class `c`: 1 s, 2 s, … (class 0 is the global policy).
fn class_threshold_ns(c: usize) -> u64 {
    (c as u64 + 1) * 1_000_000_000
}

/// What one class worker measured.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct ClassSample {
    agents: u32,
    classes: u32,
    ns_per_beat: f64,
    ns_per_beat_random: f64,
    /// `next_deadline()` with every agent live, ns per call.
    next_deadline_ns: f64,
    /// `expire(now)` with nothing due, ns per call.
    expire_idle_ns: f64,
    /// Event-driven drain: `next_deadline()` then `expire(at)` calls until
    /// no agent is live.
    drain_calls: u64,
    drain_ns_per_call: f64,
    /// Wall clock of the whole drain (both calls) per stall raised.
    drain_ns_per_stall: f64,
    stalls: u64,
    /// Stall time − (last beat + the agent's class threshold), simulated ns.
    overshoot_min_ns: i64,
    overshoot_max_ns: i64,
    /// Stalls whose overshoot was not exactly 0.
    overshoot_nonzero: u64,
}

/// Checks every stall against the harness's own record of last beats.
struct OvershootSink {
    /// Last beat time by pid − 2 (the harness's record, not the tracker's).
    last_beat: std::rc::Rc<Vec<u64>>,
    classes: usize,
    out: std::rc::Rc<std::cell::Cell<(i64, i64, u64, u64)>>,
}

impl Sink for OvershootSink {
    fn on_event(&mut self, at_ns: u64, event: &Event) {
        if let Event::Stall {
            pid, last_beat_ns, ..
        } = *event
        {
            let i = (pid - 2) as usize;
            let ours = self.last_beat[i];
            let due = ours + class_threshold_ns(i % self.classes);
            let over = at_ns as i64 - due as i64;
            let (mut lo, mut hi, mut bad, mut n) = self.out.get();
            lo = lo.min(over);
            hi = hi.max(over);
            if over != 0 || last_beat_ns != ours {
                bad += 1;
            }
            n += 1;
            self.out.set((lo, hi, bad, n));
        }
    }
}

/// The hidden `scale-worker --classes K`: prints one JSON [`ClassSample`].
pub fn class_worker(n: u32, k: u32) -> Res<()> {
    if n == 0 || k == 0 || k as usize > MAX_CLASSES {
        return Err(format!("--agents >= 1 and --classes in 1..={MAX_CLASSES}").into());
    }
    let classes = k as usize;
    let mut t = Tracker::new(TrackerSettings {
        capacity: n,
        threshold_ns: class_threshold_ns(0),
        eviction: EvictionPolicy::Strict,
        max_beat_rate: 100,
        global_beat_rate: 0,
        global_beat_burst: 0,
        own_pidns: 0,
        allow_cross_namespace: false,
    });
    let table: Vec<ClassTimeouts> = (0..classes)
        .map(|c| ClassTimeouts {
            threshold_ns: class_threshold_ns(c),
            grace_ns: 0,
        })
        .collect();
    t.set_classes(&table);
    let counters = Arc::new(Counters::default());
    let mut bus = EventBus::new();
    bus.add(Box::new(CountingSink::new(counters.clone())));
    let mut now = 1_000_000_000u64;
    let mut nonce = 1u64;
    let pids: Vec<u32> = (2..n + 2).collect();
    beat_all(&mut t, &mut bus, now, &pids, nonce);
    for &pid in &pids {
        if !t.assign_class(pid, ((pid - 2) as usize % classes) as u8) {
            return Err(format!("assign_class({pid}) refused").into());
        }
    }
    let ns_per_beat = time_rounds(&mut t, &mut bus, &mut now, &mut nonce, &pids);
    let order = shuffled(&pids);
    let ns_per_beat_random = time_rounds(&mut t, &mut bus, &mut now, &mut nonce, &order);
    // The last round's receive times, as beat_all stamped them.
    let mut last = vec![0u64; n as usize];
    for (j, &pid) in order.iter().enumerate() {
        last[(pid - 2) as usize] = now + (j / BATCH) as u64;
    }
    let iters = 10_000u32;
    let start = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(t.next_deadline());
    }
    let next_deadline_ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
    let start = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(t.expire(std::hint::black_box(now), &mut bus));
    }
    let expire_idle_ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
    let out = std::rc::Rc::new(std::cell::Cell::new((i64::MAX, i64::MIN, 0u64, 0u64)));
    bus.add(Box::new(OvershootSink {
        last_beat: std::rc::Rc::new(last),
        classes,
        out: out.clone(),
    }));
    // The daemon's loop, with a perfect clock: sleep until the next
    // deadline, expire at exactly that time.
    let mut calls = 0u64;
    let mut stalls = 0u64;
    let start = Instant::now();
    while let Some(at) = t.next_deadline() {
        stalls += u64::from(t.expire(at, &mut bus));
        calls += 1;
    }
    let drain_ns = start.elapsed().as_nanos() as f64;
    let (lo, hi, bad, seen) = out.get();
    if stalls != u64::from(n) || seen != stalls {
        return Err(format!("drain raised {stalls} stalls ({seen} seen), expected {n}").into());
    }
    let sample = ClassSample {
        agents: n,
        classes: k,
        ns_per_beat,
        ns_per_beat_random,
        next_deadline_ns,
        expire_idle_ns,
        drain_calls: calls,
        drain_ns_per_call: drain_ns / calls as f64,
        drain_ns_per_stall: drain_ns / stalls as f64,
        stalls,
        overshoot_min_ns: lo,
        overshoot_max_ns: hi,
        overshoot_nonzero: bad,
    };
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}

fn run_class_worker(n: u32, k: u32) -> Res<ClassSample> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "scale-worker",
            "--agents",
            &n.to_string(),
            "--classes",
            &k.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "class worker ({n} agents, {k} classes) failed ({})",
            out.status
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.trim())?)
}

/// The policy-class table: K classes at `n` agents, `reps` fresh workers each.
fn classes_table(n: u32, ks: &[u32], reps: u32) -> Res<(serde_json::Value, Vec<Goal>)> {
    println!(
        "\n### scale: policy classes at {} agents (round-robin, thresholds 1 s, 2 s, … K s), event-driven stall drain",
        num(f64::from(n), 0)
    );
    let mut samples: Vec<Vec<ClassSample>> = vec![Vec::new(); ks.len()];
    for rep in 0..reps {
        for (i, &k) in ks.iter().enumerate() {
            let s = run_class_worker(n, k)?;
            eprintln!(
                "  rep {}: {k} classes {:.1} ns/beat, {:.1} random, drain {:.1} ns/stall, overshoot {}..{} ns",
                rep + 1,
                s.ns_per_beat,
                s.ns_per_beat_random,
                s.drain_ns_per_stall,
                s.overshoot_min_ns,
                s.overshoot_max_ns
            );
            samples[i].push(s);
        }
    }
    let col = |v: &[ClassSample], f: fn(&ClassSample) -> f64| {
        Summary::of(&v.iter().map(f).collect::<Vec<_>>())
    };
    let mut tab = Table::new(&[
        "classes",
        "ns/beat, pid order",
        "ns/beat, random order",
        "next_deadline() ns",
        "expire, none due (ns)",
        "drain calls",
        "ns per drain call",
        "drain ns per stall",
        "overshoot ns (min..max, ≠0)",
    ]);
    let mut rows = Vec::new();
    for (i, &k) in ks.iter().enumerate() {
        let v = &samples[i];
        let beat = col(v, |s| s.ns_per_beat);
        let random = col(v, |s| s.ns_per_beat_random);
        let nd = col(v, |s| s.next_deadline_ns);
        let idle = col(v, |s| s.expire_idle_ns);
        let calls = col(v, |s| s.drain_calls as f64);
        let per_call = col(v, |s| s.drain_ns_per_call);
        let per_stall = col(v, |s| s.drain_ns_per_stall);
        let lo = v.iter().map(|s| s.overshoot_min_ns).min().unwrap_or(0);
        let hi = v.iter().map(|s| s.overshoot_max_ns).max().unwrap_or(0);
        let bad: u64 = v.iter().map(|s| s.overshoot_nonzero).sum();
        tab.row(vec![
            k.to_string(),
            beat.cell(1),
            random.cell(1),
            nd.cell(1),
            idle.cell(1),
            calls.cell(0),
            per_call.cell(1),
            per_stall.cell(1),
            format!("{lo}..{hi}, {bad}"),
        ]);
        rows.push(json!({
            "classes": k, "agents": n, "ns_per_beat_pid_order": beat, "ns_per_beat_random_order": random,
            "next_deadline_ns": nd, "expire_none_due_ns": idle, "drain_calls": calls,
            "drain_ns_per_call": per_call, "drain_ns_per_stall": per_stall,
            "overshoot_min_ns": lo, "overshoot_max_ns": hi, "overshoot_nonzero": bad, "per_rep": v,
        }));
    }
    println!();
    tab.print();
    println!(
        "\n(median (min–max) of {reps} reps, each in a fresh process; overshoot pooled over all reps and stalls)"
    );
    let mut goals = Vec::new();
    let worst = samples
        .iter()
        .flatten()
        .map(|s| s.overshoot_max_ns.max(-s.overshoot_min_ns))
        .max()
        .unwrap_or(0);
    goals.push(Goal::new(
        "scale classes: simulated stall overshoot (any class count)",
        worst as f64,
        Cmp::AtMost,
        0.0,
        " ns",
    ));
    Ok((json!(rows), goals))
}
