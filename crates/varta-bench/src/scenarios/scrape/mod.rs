//! `scrape`: does serving `/metrics` delay stall detection, and how long
//! does a scrape take, with 100 k agents tracked and 10 k per-pid series —
//! ours and the original.
//!
//! Both observers run side by side with `--prom-addr` on loopback, a bearer
//! token and rate limiting off (`--prom-rate-limit-burst 0`, which both
//! accept). Load agents beat every `--scrape-load-interval-ms` for the whole
//! run:
//!
//! - Unix-socket agents: real sender processes, one pid each (both
//!   observers take the pid from the kernel, `SO_PASSCRED`, and ours also
//!   reads `/proc/<pid>/stat`). As many as the original's tracker holds
//!   besides the run's stalling agents (at most 4096 pids in 0.2.0, beats of
//!   further pids are dropped) beat all three observers.
//! - UDP agents (the default; ours only): one load process ([`load`]) beats
//!   for `--scrape-agents` pids over our plaintext UDP listener on loopback,
//!   pids above the kernel's `PID_MAX_LIMIT` so that none is a real
//!   process's. That is how ours tracks 100 k agents on a machine whose
//!   `pid_max` is 32768. The original gets no UDP load in the main run: its
//!   poll loop reads one datagram per listener per iteration and blocks in
//!   its Unix-socket read for `--read-timeout-ms` when that socket is idle,
//!   so its UDP listener takes in a few datagrams per 100 ms. A probe before
//!   the run measures that (a fresh original fed the same agents over its
//!   own UDP listener, at its default read timeout and at 1 ms) and the
//!   report prints what it got.
//! - With `--scrape-uds-load`, the previous setup: every load agent is a
//!   sender process (at most ~10 k here), no UDP.
//!
//! Part 1, stall overshoot. Every repetition has three phases, in rotated
//! order: no flood, ours' `/metrics` flooded, the original's flooded. The
//! flood is a separate process (niced, so that the load generator's own CPU
//! does not pass for observer delay) running `scrapers` threads that scrape
//! back to back with the token, and `slowloris` connections that send one
//! header byte per second (reopened at the next second when the server
//! closes them). In each phase `stalls` fresh agents beat both observers
//! over their Unix sockets every 100 ms, report (socket, nonce,
//! CLOCK_MONOTONIC) of each delivered beat, and fall silent at seeded random
//! instants — alive, as in `recovery`, unless `--scrape-sigkill` asks for
//! SIGKILL as in `detect` (see [`crate::ScrapeArgs::scrape_sigkill`] for why
//! that is not the default). The flood runs from a second before the first
//! agent falls silent until a second after the last stall is due; while it
//! runs, once every agent is silent, the harness scrapes ours once to record
//! how many agents its tracker holds. Overshoot = stall line readable in the
//! export (inotify, as in `detect`) − last delivered beat − threshold. Each
//! observer is measured in every phase, so each gets three conditions: no
//! flood, own endpoint flooded, the other observer's endpoint flooded (the
//! neighbour's load on the same 2 cores).
//!
//! Part 2, scrape latency: sequential scrapes with the token, one at a
//! time, rotating between the observers, each observer scraped every 1.2 s
//! (the original re-renders its body at most once a second and serves the
//! cached one in between; at this pace every scrape is rendered fresh, as
//! with a real scrape interval). Latency = connect → last body byte. A third
//! observer, ours beaten by the original's agents only, gives the
//! like-for-like row.

pub(crate) mod endpoint;
mod flood;
mod load;
mod report;
mod rig;

pub use flood::{flood, FloodArgs};
pub use load::{load, LoadArgs};

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{at_random_instants, report_readers, rotated};
use crate::exportfile::{SeenStall, StallWatcher};
use crate::procs::{
    monotonic_ns, spawn_senders, spawn_stoppable_senders, Binaries, Res, Sender, SenderSpec, Which,
    REPORT_SOCKET_SHIFT,
};
use crate::stats::num;
use crate::{Common, Outcome, ScrapeArgs};
use endpoint::{
    loop_hist, request_bytes, sequential, serves_metrics, tracker_gauges, wait_tracked, LoopDelta,
    TrackerGauges, SEQ_PERIOD,
};
use flood::{Flood, FloodCfg, FloodStats};
use load::{cpu_secs, udp_drops, LoadStats, Target, UdpLoad};
use report::{progress, report};
use rig::{probe_original_udp_all, Rig, RigCfg, UdpProbe};

/// Beat interval of the agents that fall silent, ms (as in `detect`).
const STALL_INTERVAL_MS: u64 = 100;

/// The flood runs this long before a phase's first agent falls silent.
const FLOOD_WARMUP: Duration = Duration::from_millis(1000);

/// Observer index 0 is ours, 1 the original, everywhere below; index 2
/// (part 2 only) is ours again with only the original's agents.
const OBS: [Which; 2] = [Which::Ours, Which::Original];

/// Part 2's third observer.
const SMALL_LABEL: &str = "varta-watch (ours), the original's agents only";

/// `MAX_CAPACITY` of the original 0.2.0's tracker (`src/tracker.rs`):
/// `--tracker-capacity` is clamped to it, and beats of further pids are
/// dropped as capacity_exceeded.
const ORIGINAL_MAX_TRACKED: usize = 4096;

/// Tracker slots of the original left free beyond every stalling agent of
/// the run, so none of them ever waits for an eviction.
const ORIGINAL_SLACK: usize = 64;

/// First pid of the UDP agents: 2^23, above the kernel's `PID_MAX_LIMIT`
/// (2^22), so no UDP agent shares a pid with a process beating over the
/// Unix socket.
const UDP_FIRST_PID: u32 = 1 << 23;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Quiet,
    FloodOurs,
    FloodOriginal,
}

impl Phase {
    /// The observer whose endpoint is flooded.
    fn flooded(self) -> Option<usize> {
        match self {
            Phase::Quiet => None,
            Phase::FloodOurs => Some(0),
            Phase::FloodOriginal => Some(1),
        }
    }
}

/// What an observer went through in a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Condition {
    NoFlood,
    OwnFlooded,
    NeighbourFlooded,
}

const CONDITIONS: [Condition; 3] = [
    Condition::NoFlood,
    Condition::OwnFlooded,
    Condition::NeighbourFlooded,
];

impl Condition {
    fn of(phase: Phase, obs: usize) -> Condition {
        match phase.flooded() {
            None => Condition::NoFlood,
            Some(o) if o == obs => Condition::OwnFlooded,
            Some(_) => Condition::NeighbourFlooded,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Condition::NoFlood => "no flood",
            Condition::OwnFlooded => "own /metrics flooded",
            Condition::NeighbourFlooded => "the other's /metrics flooded",
        }
    }
}

/// One observer in one phase.
#[derive(Default, Serialize)]
struct Detection {
    overshoot_ms: Vec<f64>,
    /// Stalling agents with no stall line at all.
    missed: usize,
    /// Stall lines naming another nonce than the agent's last reported beat.
    unmatched: usize,
    /// Stall lines for a stalling agent before its last beat.
    spurious: usize,
    /// Stall lines for load agents (which beat all along), attributed to
    /// the phase in which they were due to start: seen − threshold.
    load_stalled: usize,
    /// Of those, UDP agents.
    load_stalled_udp: usize,
}

#[derive(Serialize)]
struct PhaseRun {
    rep: usize,
    phase: Phase,
    /// Index 0 ours, 1 the original.
    detection: [Detection; 2],
    flood: Option<FloodStats>,
    /// Our tracker, scraped once while the phase's flood ran.
    ours_tracker: Option<TrackerGauges>,
    /// UDP datagrams the kernel dropped at ours' full receive queue.
    ours_udp_dropped: Option<u64>,
    /// Ours' detection loop over the phase (its iteration histogram read
    /// before and after).
    ours_loop: Option<LoopDelta>,
    /// Length of the phase (stalling agents started → flood stopped), s.
    secs: f64,
}

/// Agent counts of a run.
#[derive(Clone, Copy, Serialize)]
struct Agents {
    /// Sender processes beating all three observers over their Unix sockets.
    uds_all: usize,
    /// Sender processes beating ours only (`--scrape-uds-load`).
    uds_ours: usize,
    /// UDP agents beating ours only.
    udp: usize,
    /// Agents falling silent per phase.
    stalls: usize,
}

impl Agents {
    fn ours_load(&self) -> usize {
        self.uds_all + self.uds_ours + self.udp
    }
}

pub fn run(a: &ScrapeArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let udp = !a.scrape_uds_load;
    let stalls = a.scrape_stalls.unwrap_or(if c.quick { 10 } else { 30 });
    let stop_secs = a
        .scrape_stop_secs
        .unwrap_or(if c.quick { 2.0 } else { 3.0 });
    let seq = a.seq_scrapes.unwrap_or(if c.quick { 5 } else { 20 });
    let threshold_ms = a.scrape_threshold_ms;
    let interval_ms = a.scrape_load_interval_ms;
    let earliest_ms = 5 * STALL_INTERVAL_MS + 200;
    let span_ms = (stop_secs * 1000.0) as u64;
    let reps = c.reps as usize;
    let agents = a.scrape_agents.unwrap_or(match (udp, c.quick) {
        (true, false) => 100_000,
        (true, true) | (false, false) => 10_000,
        (false, true) => 1000,
    });
    // The original's tracker holds at most 4096 pids; give it as many load
    // agents as leave a slot for every stalling agent of the run.
    let orig_room = ORIGINAL_MAX_TRACKED.checked_sub(3 * reps * stalls + ORIGINAL_SLACK);
    if agents == 0
        || stalls == 0
        || orig_room.is_none_or(|r| r == 0)
        || span_ms <= earliest_ms + 100
        || threshold_ms < 10
        || interval_ms == 0
        || seq == 0
        || a.scrape_udp_threads == 0
        || (udp && agents > (u32::MAX - UDP_FIRST_PID) as usize)
    {
        return Err(format!(
            "scrape needs --scrape-agents, --seq-scrapes, --scrape-udp-threads and \
             --scrape-load-interval-ms >= 1, --scrape-stalls from 1 to {}, \
             --scrape-threshold-ms >= 10 and --scrape-stop-secs above {:.1} s",
            (ORIGINAL_MAX_TRACKED - ORIGINAL_SLACK - 1) / (3 * reps),
            (earliest_ms + 100) as f64 / 1000.0
        )
        .into());
    }
    let orig_room = orig_room.unwrap_or(0);
    let n = if udp {
        Agents {
            uds_all: orig_room.min(if c.quick { 1000 } else { usize::MAX }),
            uds_ours: 0,
            udp: agents,
            stalls,
        }
    } else {
        Agents {
            uds_all: agents.min(orig_room),
            uds_ours: agents - agents.min(orig_room),
            udp: 0,
            stalls,
        }
    };
    if interval_ms * 2 > threshold_ms {
        eprintln!(
            "varta-bench: note: load agents beat every {interval_ms} ms with a {threshold_ms} ms \
             threshold: a single dropped beat can stall them"
        );
    }
    for (which, bin) in [(Which::Ours, &bins.ours), (Which::Original, &bins.original)] {
        if !serves_metrics(bin) {
            return Err(format!(
                "{} ({}) does not list --prom-addr in its --help: no /metrics endpoint to measure",
                which.label(),
                bin.display()
            )
            .into());
        }
    }
    println!(
        "## scrape: ours tracks {} load agents ({} over plaintext UDP, {} sender processes on \
         its Unix socket), the original {} of them (the processes; its tracker holds at most \
         {ORIGINAL_MAX_TRACKED}), all beating every {interval_ms} ms, threshold {threshold_ms} \
         ms; per phase {stalls} more agents {} over {stop_secs} s; flood = {} scrapers + {} \
         slowloris (nice {}); {} reps",
        n.ours_load(),
        n.udp,
        n.uds_all + n.uds_ours,
        n.uds_all,
        if a.scrape_sigkill {
            "SIGKILLed"
        } else {
            "fall silent (alive)"
        },
        a.scrapers,
        a.slowloris,
        a.flood_nice,
        c.reps
    );
    let exe = std::env::current_exe()?;

    // The original fed over its own UDP listener, alone, before the run.
    let probes = if udp {
        probe_original_udp_all(bins, &exe, n.uds_all as u32, interval_ms, threshold_ms)?
    } else {
        Vec::new()
    };

    let phase_est = Duration::from_secs_f64(stop_secs)
        + Duration::from_millis(threshold_ms + 1000)
        + FLOOD_WARMUP
        + Duration::from_secs(5);
    let processes = n.uds_all + n.uds_ours;
    let lifetime = Duration::from_millis(processes as u64 * 6 + 2 * interval_ms)
        + phase_est * (3 * c.reps)
        + SEQ_PERIOD * seq as u32
        + Duration::from_secs(120);
    // Room for every load agent and every stalling agent.
    let ours_capacity = (n.ours_load() + 3 * reps * stalls).next_power_of_two() * 2;
    let mut rig = Rig::start(
        bins,
        &RigCfg {
            threshold_ms,
            ours_capacity,
            per_agent_limit: a.per_agent_metrics_limit,
            ours_udp: udp,
            ours_no_export_beats: udp && !a.scrape_export_beats,
            lifetime: lifetime + Duration::from_secs(30),
        },
    )?;
    let addrs = rig.addrs;
    let watchers = [
        StallWatcher::start(rig.ours.export.clone().ok_or("no export file")?)?,
        StallWatcher::start(rig.orig.export.clone().ok_or("no export file")?)?,
    ];
    let request = request_bytes(&rig.token);

    eprintln!("  starting {processes} load agent processes...");
    let t_spawn = Instant::now();
    let mut load = spawn_senders(
        n.uds_all,
        &SenderSpec {
            sockets: &[&rig.ours.socket, &rig.orig.socket, &rig.small.socket],
            interval_ms: Some(interval_ms),
            report: false,
            lifetime,
        },
    )?;
    load.extend(spawn_senders(
        n.uds_ours,
        &SenderSpec {
            sockets: &[&rig.ours.socket],
            interval_ms: Some(interval_ms),
            report: false,
            lifetime,
        },
    )?);
    // Load agents report nothing: their pipes are not needed.
    for k in &mut load {
        k.stdout = None;
    }
    let spawn_secs = t_spawn.elapsed().as_secs_f64();
    let load_pids: HashSet<u32> = load.iter().map(|k| k.guard.pid()).collect();
    let udp_port = rig.ours_udp.map(|u| u.port());
    let mut udp_load = match rig.ours_udp {
        Some(addr) => {
            eprintln!(
                "  starting {} UDP agents ({} threads)...",
                n.udp, a.scrape_udp_threads
            );
            let target = Target {
                addr,
                first_pid: UDP_FIRST_PID,
                count: n.udp as u32,
            };
            Some(UdpLoad::start(
                &exe,
                &[target],
                interval_ms,
                a.scrape_udp_threads,
            )?)
        }
        None => None,
    };
    let is_udp = |pid: u32| pid >= UDP_FIRST_PID && ((pid - UDP_FIRST_PID) as usize) < n.udp;
    let tracked = wait_tracked(
        &addrs,
        &request,
        &[n.ours_load(), n.uds_all, n.uds_all],
        Duration::from_secs(30) + Duration::from_millis(2 * interval_ms),
    );
    eprintln!(
        "  load agents up in {:.1} s; pids tracked: ours {}, original {}, ours (small) {}",
        t_spawn.elapsed().as_secs_f64(),
        num(tracked[0], 0),
        num(tracked[1], 0),
        num(tracked[2], 0)
    );
    rig.check()?;

    let token_file = rig.token_file.clone();
    let flood_cfg = FloodCfg {
        exe: &exe,
        token_file: &token_file,
        scrapers: a.scrapers,
        slowloris: a.slowloris,
        nice: a.flood_nice,
    };
    let mut phases: Vec<PhaseRun> = Vec::new();
    // Stalling agents of every phase, for pairing once every stall is in.
    let mut stalled: Vec<Stalled> = Vec::new();
    // Each phase's [start, end] on CLOCK_MONOTONIC, by phase index.
    let mut windows: Vec<(u64, u64)> = Vec::new();
    let all_phases = [Phase::Quiet, Phase::FloodOurs, Phase::FloodOriginal];
    let cpu_pids = [
        Some(rig.ours.pid()),
        Some(rig.orig.pid()),
        Some(rig.small.pid()),
        udp_load.as_ref().map(UdpLoad::pid),
    ];
    let cpu0 = cpu_pids.map(|p| p.and_then(cpu_secs));
    let t_phases = Instant::now();
    for rep in 0..reps {
        for (p, phase) in rotated(&all_phases, rep).into_iter().enumerate() {
            let seed = a.scrape_seed.wrapping_add((3 * rep + p) as u64);
            let begin_ns = monotonic_ns();
            let drops0 = udp_port.and_then(udp_drops);
            let loop0 = loop_hist(addrs[0], &request, Duration::from_secs(2));
            // Which observer each stalling agent beats first alternates by rep.
            let order = rotated(&[0usize, 1], rep);
            let socks = [rig.ours.socket.as_path(), rig.orig.socket.as_path()];
            let sockets: Vec<&Path> = order.iter().map(|&o| socks[o]).collect();
            let spec = SenderSpec {
                sockets: &sockets,
                interval_ms: Some(STALL_INTERVAL_MS),
                report: true,
                lifetime: phase_est * 2,
            };
            let mut stallers = if a.scrape_sigkill {
                spawn_senders(stalls, &spec)?
            } else {
                spawn_stoppable_senders(stalls, &spec)?
            };
            let readers = report_readers(&mut stallers)?;
            let flood = match phase.flooded() {
                Some(o) => {
                    let f = Flood::start(&flood_cfg, addrs[o])?;
                    std::thread::sleep(FLOOD_WARMUP);
                    Some(f)
                }
                None => None,
            };
            stop_on_schedule(&mut stallers, seed, earliest_ms, span_ms, a.scrape_sigkill)?;
            // The last stall is due one threshold after the last agent fell
            // silent; meanwhile (flood still on) read our tracker once.
            let until = Instant::now() + Duration::from_millis(threshold_ms + 1000);
            let ours_tracker = tracker_gauges(addrs[0], &request, Duration::from_secs(2));
            if let Some(wait) = until.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let flood = match flood {
                Some(f) => Some(f.stop()?),
                None => None,
            };
            let end_ns = monotonic_ns();
            let drops1 = udp_port.and_then(udp_drops);
            let loop1 = loop_hist(addrs[0], &request, Duration::from_secs(2));
            // Silent agents are done with (their stalls are in): kill and
            // reap them, which closes their report pipes.
            for k in &mut stallers {
                k.guard.kill();
            }
            let reports: Vec<Vec<(u64, u64)>> = readers
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect();
            let idx = phases.len();
            for (k, rep_beats) in stallers.iter().zip(reports) {
                stalled.push(Stalled {
                    phase: idx,
                    pid: k.guard.pid(),
                    order: order.clone(),
                    reports: rep_beats,
                });
            }
            progress(rep, phase, flood.as_ref(), ours_tracker.as_ref());
            phases.push(PhaseRun {
                rep,
                phase,
                detection: Default::default(),
                flood,
                ours_tracker,
                ours_udp_dropped: drops0.zip(drops1).map(|(x, y)| y.saturating_sub(x)),
                ours_loop: loop0.zip(loop1).map(|(x, y)| LoopDelta::between(&x, &y)),
                secs: end_ns.saturating_sub(begin_ns) as f64 / 1e9,
            });
            // Spurious stalls of load agents are attributed to a phase by
            // when they were seen.
            windows.push((begin_ns, end_ns));
            rig.check()?;
            if let Some(l) = udp_load.as_mut() {
                l.check_running()?;
            }
        }
    }

    let phase_secs = t_phases.elapsed().as_secs_f64();
    let cpu1 = cpu_pids.map(|p| p.and_then(cpu_secs));
    let mut part1_cpu = [None; 4];
    for (c, (a, b)) in part1_cpu.iter_mut().zip(cpu0.iter().zip(&cpu1)) {
        *c = a.zip(*b).map(|(a, b)| (b - a) / phase_secs);
    }

    // Part 2: sequential scrapes, one at a time, each observer every SEQ_PERIOD.
    eprintln!("  sequential scrapes: {seq} per observer...");
    let seqs = sequential(&addrs, &request, seq);
    rig.check()?;

    let load_stats: Option<LoadStats> = match udp_load.take() {
        Some(l) => Some(l.stop()?),
        None => None,
    };
    let [w_ours, w_orig] = watchers;
    let seen = [w_ours.finish()?, w_orig.finish()?];
    rig.stop();
    // SIGKILL every load agent first, then reap: one by one would wait for
    // each teardown in turn.
    for k in &mut load {
        let _ = k.guard.child.kill();
    }
    for k in &mut load {
        let _ = k.guard.child.wait();
    }
    drop(load);

    // Pair every stalling agent with each observer's stall line.
    let threshold_ns = threshold_ms * 1_000_000;
    for k in &stalled {
        for (o, seen_o) in seen.iter().enumerate() {
            let si = k.order.iter().position(|&x| x == o).unwrap_or(o) as u64;
            let mine: Vec<(u64, u64)> = k
                .reports
                .iter()
                .filter(|(n, _)| n >> REPORT_SOCKET_SHIFT == si)
                .map(|&(n, t)| (n & ((1u64 << REPORT_SOCKET_SHIFT) - 1), t))
                .collect();
            pair(
                &mut phases[k.phase].detection[o],
                k.pid,
                &mine,
                seen_o,
                threshold_ns,
            );
        }
    }
    for (i, (from, to)) in windows.iter().enumerate() {
        if let Some(ph) = phases.get_mut(i) {
            for (o, seen_o) in seen.iter().enumerate() {
                let d = &mut ph.detection[o];
                for s in seen_o.iter().filter(|s| {
                    let began = s.seen_ns.saturating_sub(threshold_ns);
                    began >= *from && began < *to
                }) {
                    if is_udp(s.pid) {
                        d.load_stalled += 1;
                        d.load_stalled_udp += 1;
                    } else if load_pids.contains(&s.pid) {
                        d.load_stalled += 1;
                    }
                }
            }
        }
    }

    let setup = Setup {
        agents: n,
        ours_capacity,
        stop_secs,
        tracked,
        spawn_secs,
        probes,
        load: load_stats,
        part1_cpu,
    };
    report(a, c, &setup, &phases, &seqs)
}

/// What `report` prints besides the runs.
struct Setup {
    agents: Agents,
    ours_capacity: usize,
    stop_secs: f64,
    tracked: [f64; 3],
    spawn_secs: f64,
    /// The original fed over its own UDP listener (UDP mode).
    probes: Vec<UdpProbe>,
    /// The UDP load process (UDP mode).
    load: Option<LoadStats>,
    /// CPU use during part 1, in cores: ours, the original, small, the UDP
    /// load process.
    part1_cpu: [Option<f64>; 4],
}

/// A stalling agent: its phase, its socket order and its beat reports.
struct Stalled {
    phase: usize,
    pid: u32,
    order: Vec<usize>,
    reports: Vec<(u64, u64)>,
}

/// Pairs one stalling agent's last reported beat to this observer with the
/// stall line that names it.
fn pair(
    d: &mut Detection,
    pid: u32,
    reports: &[(u64, u64)],
    seen: &[SeenStall],
    threshold_ns: u64,
) {
    let stalls: Vec<&SeenStall> = seen.iter().filter(|s| s.pid == pid).collect();
    let Some(&(last_nonce, sent_ns)) = reports.last() else {
        d.unmatched += 1;
        return;
    };
    d.spurious += stalls.iter().filter(|s| s.nonce < last_nonce).count();
    match stalls.iter().find(|s| s.nonce == last_nonce) {
        Some(s) => d
            .overshoot_ms
            .push((s.seen_ns as f64 - sent_ns as f64 - threshold_ns as f64) / 1e6),
        None if stalls.iter().any(|s| s.nonce > last_nonce) => d.unmatched += 1,
        None => d.missed += 1,
    }
}

/// Makes every agent fall silent at seeded random instants in
/// `[earliest, span)` ms from now: a byte on its stdin (it stops beating
/// and stays alive, like a hung process), or with `sigkill` SIGKILL and
/// reap, as in `detect`.
fn stop_on_schedule(
    kids: &mut [Sender],
    seed: u64,
    earliest_ms: u64,
    span_ms: u64,
    sigkill: bool,
) -> Res<()> {
    let n = kids.len();
    at_random_instants(seed, n, earliest_ms, span_ms, |i| {
        if sigkill {
            kids[i].guard.kill();
        } else {
            let stdin = kids[i].stdin.as_mut().ok_or("a stall agent has no stdin")?;
            stdin.write_all(b"S")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_the_flooded_observer() {
        assert_eq!(Condition::of(Phase::Quiet, 0), Condition::NoFlood);
        assert_eq!(Condition::of(Phase::FloodOurs, 0), Condition::OwnFlooded);
        assert_eq!(
            Condition::of(Phase::FloodOurs, 1),
            Condition::NeighbourFlooded
        );
        assert_eq!(
            Condition::of(Phase::FloodOriginal, 1),
            Condition::OwnFlooded
        );
    }

    #[test]
    fn pairs_the_last_beat() {
        let seen = [
            SeenStall {
                seen_ns: 3_501_000_000,
                pid: 10,
                nonce: 7,
            },
            SeenStall {
                seen_ns: 1_000_000_000,
                pid: 10,
                nonce: 2,
            },
        ];
        let mut d = Detection::default();
        pair(
            &mut d,
            10,
            &[(6, 400_000_000), (7, 500_000_000)],
            &seen,
            3_000_000_000,
        );
        assert_eq!(d.overshoot_ms, vec![1.0]);
        assert_eq!((d.missed, d.unmatched, d.spurious), (0, 0, 1));
        pair(&mut d, 11, &[(1, 0)], &seen, 3_000_000_000);
        assert_eq!(d.missed, 1);
    }
}
