//! `scrape`: does serving `/metrics` delay stall detection, and how long
//! does a scrape take, at 10 k per-pid series — ours and the original.
//!
//! Both observers run side by side with `--prom-addr` on loopback, a bearer
//! token and rate limiting off (`--prom-rate-limit-burst 0`, which both
//! accept). Load agents — real sender processes, one pid each, since both
//! observers take the pid from the kernel (`SO_PASSCRED`) and ours also
//! reads `/proc/<pid>/stat` — beat every second for the whole run. Ours is
//! beaten by all of them; the original by as many as its tracker can hold
//! (at most 4096 pids in 0.2.0, beats of further pids are dropped).
//!
//! Part 1, stall overshoot. Every repetition has three phases, in rotated
//! order: no flood, ours' `/metrics` flooded, the original's flooded. The
//! flood is a separate process (niced, so that the load generator's own CPU
//! does not pass for observer delay) running `scrapers` threads that scrape
//! back to back with the token, and `slowloris` connections that send one
//! header byte per second (reopened at the next second when the server
//! closes them). In each phase `stalls` fresh agents beat both observers
//! every 100 ms, report (socket, nonce, CLOCK_MONOTONIC) of each delivered
//! beat, and fall silent at seeded random instants — alive, as in
//! `recovery`, unless `--scrape-sigkill` asks for SIGKILL as in `detect`
//! (see [`crate::ScrapeArgs::scrape_sigkill`] for why that is not the
//! default). The flood runs from a second before the first agent falls
//! silent until a second after the last stall is due. Overshoot = stall line
//! readable in the export (inotify, as in `detect`) − last delivered beat −
//! threshold. Each observer is measured in every phase, so each gets three
//! conditions: no flood, own endpoint flooded, the other observer's endpoint
//! flooded (the neighbour's load on the same 2 cores).
//!
//! Part 2, scrape latency: sequential scrapes with the token, one at a
//! time, rotating between the observers, each observer scraped every 1.2 s
//! (the original re-renders its body at most once a second and serves the
//! cached one in between; at this pace every scrape is rendered fresh, as
//! with a real scrape interval). Latency = connect → last body byte. A third
//! observer, ours beaten by the original's agents only, gives the
//! like-for-like row.

use super::{report_readers, SplitMix};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{rotated, Table};
use crate::exportfile::{SeenStall, StallWatcher};
use crate::procs::{
    bench_dir, monotonic_ns, spawn_senders, spawn_stoppable_senders, Binaries, ChildGuard,
    Observer, ObserverSpec, Res, Sender, SenderSpec, Which, REPORT_SOCKET_SHIFT,
};
use crate::stats::{num, percentile, Cmp, Goal, Summary};
use crate::{Common, Outcome, ScrapeArgs};

/// Beat interval of the agents that fall silent, ms (as in `detect`).
const STALL_INTERVAL_MS: u64 = 100;

/// Overshoot p99 with the flood may exceed the run without it by this much.
const OVERSHOOT_SLACK_MS: f64 = 2.0;

/// Time between two sequential scrapes of one observer (part 2).
const SEQ_PERIOD: Duration = Duration::from_millis(1200);

/// Socket timeouts of every scrape (a scrape slower than this is a failure).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The flood runs this long before a phase's first agent falls silent.
const FLOOD_WARMUP: Duration = Duration::from_millis(1000);

/// Observer index 0 is ours, 1 the original, everywhere below; index 2
/// (part 2 only) is ours again with only the original's agents.
const OBS: [Which; 2] = [Which::Ours, Which::Original];

/// Part 2's third observer.
const SMALL_LABEL: &str = "varta-watch (ours), the original's agents only";

/// Rows of the sequential-scrape table.
const SEQ_LABELS: [&str; 3] = [
    "varta-watch (ours)",
    "varta-watch 0.2.0 (original)",
    SMALL_LABEL,
];

/// `MAX_CAPACITY` of the original 0.2.0's tracker (`src/tracker.rs`):
/// `--tracker-capacity` is clamped to it, and beats of further pids are
/// dropped as capacity_exceeded.
const ORIGINAL_MAX_TRACKED: usize = 4096;

/// Tracker slots of the original left free beyond every stalling agent of
/// the run, so none of them ever waits for an eviction.
const ORIGINAL_SLACK: usize = 64;

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
}

#[derive(Serialize)]
struct PhaseRun {
    rep: usize,
    phase: Phase,
    /// Index 0 ours, 1 the original.
    detection: [Detection; 2],
    flood: Option<FloodStats>,
}

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
    fn merge(&mut self, o: &FloodStats) {
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

    fn failed(&self) -> u64 {
        self.failed_connect
            + self.failed_closed
            + self.failed_timeout
            + self.failed_status
            + self.truncated
    }
}

/// A sequential scrape's outcome (part 2).
#[derive(Default, Serialize)]
struct SeqRun {
    latency_ms: Vec<f64>,
    failed: usize,
    /// Failures by kind, as `FAIL_LEGEND` names them.
    failed_by_kind: [usize; 5],
    /// From the last complete body.
    body_bytes: usize,
    per_pid_series: usize,
    pids_tracked: Option<f64>,
}

pub fn run(a: &ScrapeArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let agents = a
        .scrape_agents
        .unwrap_or(if c.quick { 1000 } else { 10_000 });
    let stalls = a.scrape_stalls.unwrap_or(if c.quick { 10 } else { 30 });
    let stop_secs = a
        .scrape_stop_secs
        .unwrap_or(if c.quick { 2.0 } else { 3.0 });
    let seq = a.seq_scrapes.unwrap_or(if c.quick { 5 } else { 20 });
    let threshold_ms = a.scrape_threshold_ms;
    let earliest_ms = 5 * STALL_INTERVAL_MS + 200;
    let span_ms = (stop_secs * 1000.0) as u64;
    if agents == 0
        || stalls == 0
        || 3 * c.reps as usize * stalls + ORIGINAL_SLACK >= ORIGINAL_MAX_TRACKED
        || span_ms <= earliest_ms + 100
        || threshold_ms < 10
        || a.scrape_load_interval_ms == 0
        || seq == 0
    {
        return Err(format!(
            "scrape needs --scrape-agents, --seq-scrapes and --scrape-load-interval-ms >= 1, \
             --scrape-stalls from 1 to {}, --scrape-threshold-ms >= 10 and \
             --scrape-stop-secs above {:.1} s",
            (ORIGINAL_MAX_TRACKED - ORIGINAL_SLACK - 1) / (3 * c.reps as usize),
            (earliest_ms + 100) as f64 / 1000.0
        )
        .into());
    }
    if a.scrape_load_interval_ms * 2 > threshold_ms {
        eprintln!(
            "varta-bench: note: load agents beat every {} ms with a {} ms threshold: a single \
             dropped beat can stall them",
            a.scrape_load_interval_ms, threshold_ms
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
    // The original's tracker holds at most 4096 pids; give it as many load
    // agents as leave a slot for every stalling agent of the run.
    let orig_agents =
        agents.min(ORIGINAL_MAX_TRACKED - 3 * c.reps as usize * stalls - ORIGINAL_SLACK);
    println!(
        "## scrape: {agents} agents beating every {} ms ({orig_agents} of them also beat the \
         original, whose tracker holds at most {ORIGINAL_MAX_TRACKED}), threshold {threshold_ms} \
         ms; per phase {stalls} more agents {} over {stop_secs} s; flood = {} scrapers + {} \
         slowloris (nice {}); {} reps",
        a.scrape_load_interval_ms,
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

    let dir = bench_dir()?;
    // Ours at the original's agent count (part 2 only): its own directory,
    // since observers name their files by kind.
    let dir_small = bench_dir()?;
    let token = random_token()?;
    let token_file = dir.path().join("prom.token");
    write_secret(&token_file, &token)?;
    let phase_est = Duration::from_secs_f64(stop_secs)
        + Duration::from_millis(threshold_ms + 1000)
        + FLOOD_WARMUP
        + Duration::from_secs(5);
    let lifetime = Duration::from_millis(agents as u64 * 6)
        + phase_est * (3 * c.reps)
        + SEQ_PERIOD * seq as u32
        + Duration::from_secs(120);
    // Room for every load agent and every stalling agent.
    let capacity = (agents + 3 * c.reps as usize * stalls).next_power_of_two() * 2;
    let token_arg = token_file.to_string_lossy().into_owned();
    let limit_arg = a.per_agent_metrics_limit.to_string();
    let orig_port = free_port()?;
    let orig_addr_arg = format!("127.0.0.1:{orig_port}");
    let common_flags = [
        "--prom-token-file",
        &token_arg,
        "--prom-rate-limit-burst",
        "0",
    ];
    let mut ours_flags: Vec<&str> = common_flags.to_vec();
    ours_flags.extend([
        "--prom-addr",
        "127.0.0.1:0",
        "--per-agent-metrics-limit",
        &limit_arg,
    ]);
    let mut detect_flags = ours_flags.clone();
    detect_flags.extend(["--export-file-sync-every", "1"]);
    let mut orig_flags: Vec<&str> = common_flags.to_vec();
    orig_flags.extend([
        "--prom-addr",
        &orig_addr_arg,
        "--export-file-sync-every",
        "1",
    ]);
    let spec = |which, dir, export, tracker_capacity, extra| ObserverSpec {
        which,
        dir,
        threshold_ms,
        export,
        tracker_capacity,
        extra,
        lifetime: lifetime + Duration::from_secs(30),
    };
    let mut ours = Observer::start(
        bins,
        &spec(Which::Ours, dir.path(), true, capacity, &detect_flags),
    )?;
    let mut orig = Observer::start(
        bins,
        &spec(
            Which::Original,
            dir.path(),
            true,
            ORIGINAL_MAX_TRACKED,
            &orig_flags,
        ),
    )?;
    let mut small = Observer::start(
        bins,
        &spec(
            Which::Ours,
            dir_small.path(),
            false,
            ORIGINAL_MAX_TRACKED,
            &ours_flags,
        ),
    )?;
    let addrs = [
        ours_metrics_addr(&ours)?,
        wait_listening(SocketAddr::from(([127, 0, 0, 1], orig_port)), &orig)?,
        ours_metrics_addr(&small)?,
    ];
    let watchers = [
        StallWatcher::start(ours.export.clone().ok_or("no export file")?)?,
        StallWatcher::start(orig.export.clone().ok_or("no export file")?)?,
    ];
    let request = request_bytes(&token);

    eprintln!("  starting {agents} load agents...");
    let t_spawn = Instant::now();
    let mut load = spawn_senders(
        orig_agents,
        &SenderSpec {
            sockets: &[&ours.socket, &orig.socket, &small.socket],
            interval_ms: Some(a.scrape_load_interval_ms),
            report: false,
            lifetime,
        },
    )?;
    load.extend(spawn_senders(
        agents - orig_agents,
        &SenderSpec {
            sockets: &[&ours.socket],
            interval_ms: Some(a.scrape_load_interval_ms),
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
    let tracked = wait_tracked(
        &addrs,
        &request,
        &[agents, orig_agents, orig_agents],
        Duration::from_secs(30),
    );
    eprintln!(
        "  load agents up in {spawn_secs:.1} s; pids tracked: ours {}, original {}, ours (small) {}",
        num(tracked[0], 0),
        num(tracked[1], 0),
        num(tracked[2], 0)
    );
    let labels = [Which::Ours.label(), Which::Original.label(), SMALL_LABEL];
    let check = |ours: &mut Observer, orig: &mut Observer, small: &mut Observer| -> Res<()> {
        ours.check_running(labels[0])?;
        orig.check_running(labels[1])?;
        small.check_running(labels[2])
    };
    check(&mut ours, &mut orig, &mut small)?;

    let exe = std::env::current_exe()?;
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
    for rep in 0..c.reps as usize {
        for (p, phase) in rotated(&all_phases, rep).into_iter().enumerate() {
            let seed = a.scrape_seed.wrapping_add((3 * rep + p) as u64);
            let begin_ns = monotonic_ns();
            // Which observer each stalling agent beats first alternates by rep.
            let order = rotated(&[0usize, 1], rep);
            let socks = [ours.socket.as_path(), orig.socket.as_path()];
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
            // The last stall is due one threshold after the last agent fell silent.
            std::thread::sleep(Duration::from_millis(threshold_ms + 1000));
            let flood = match flood {
                Some(f) => Some(f.stop()?),
                None => None,
            };
            let end_ns = monotonic_ns();
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
            if let Some(f) = &flood {
                let mut l = f.latency_ms.clone();
                l.sort_by(f64::total_cmp);
                eprintln!(
                    "  rep {} {:?}: flood {} ok ({:.0}/s, p50 {:.1} ms), {} failed, slowloris {} opened",
                    rep + 1,
                    phase,
                    f.ok,
                    f.ok as f64 / f.secs.max(1e-9),
                    percentile(&l, 0.5),
                    f.failed(),
                    f.slow_opened
                );
            } else {
                eprintln!("  rep {} {:?}: done", rep + 1, phase);
            }
            phases.push(PhaseRun {
                rep,
                phase,
                detection: Default::default(),
                flood,
            });
            // Spurious stalls of load agents are attributed to a phase by
            // when they were seen.
            windows.push((begin_ns, end_ns));
            check(&mut ours, &mut orig, &mut small)?;
        }
    }

    // Part 2: sequential scrapes, one at a time, each observer every SEQ_PERIOD.
    eprintln!("  sequential scrapes: {seq} per observer...");
    let seqs = sequential(&addrs, &request, seq);
    check(&mut ours, &mut orig, &mut small)?;

    let [w_ours, w_orig] = watchers;
    let seen = [w_ours.finish()?, w_orig.finish()?];
    ours.stop();
    orig.stop();
    small.stop();
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
                ph.detection[o].load_stalled += seen_o
                    .iter()
                    .filter(|s| {
                        let began = s.seen_ns.saturating_sub(threshold_ns);
                        began >= *from && began < *to
                    })
                    .filter(|s| load_pids.contains(&s.pid))
                    .count();
            }
        }
    }

    let setup = Setup {
        agents,
        orig_agents,
        stalls,
        stop_secs,
        tracked,
        spawn_secs,
    };
    report(a, c, &setup, &phases, &seqs)
}

/// What `report` prints besides the runs.
struct Setup {
    agents: usize,
    orig_agents: usize,
    stalls: usize,
    stop_secs: f64,
    tracked: [f64; 3],
    spawn_secs: f64,
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
    let mut rng = SplitMix(seed);
    let mut schedule: Vec<(u64, usize)> = (0..kids.len())
        .map(|i| (earliest_ms + rng.next() % (span_ms - earliest_ms), i))
        .collect();
    schedule.sort_unstable();
    let start = Instant::now();
    for &(at_ms, i) in &schedule {
        if let Some(wait) = Duration::from_millis(at_ms).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        if sigkill {
            kids[i].guard.kill();
        } else {
            let stdin = kids[i].stdin.as_mut().ok_or("a stall agent has no stdin")?;
            stdin.write_all(b"S")?;
        }
    }
    Ok(())
}

/// Percentiles of one observer under one condition.
struct Stats {
    p50: Summary,
    p99: Summary,
    max: Summary,
    pooled: [f64; 3],
    samples: usize,
    missed: usize,
    unmatched: usize,
    spurious: usize,
    load_stalled: usize,
}

impl Stats {
    fn of(runs: &[&Detection]) -> Stats {
        let sorted = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let per = |g: &dyn Fn(&[f64]) -> f64| -> Summary {
            Summary::of(
                &runs
                    .iter()
                    .map(|r| g(&sorted(&r.overshoot_ms)))
                    .collect::<Vec<_>>(),
            )
        };
        let all: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.overshoot_ms.iter().copied())
            .collect();
        let all = sorted(&all);
        Stats {
            p50: per(&|s| percentile(s, 0.5)),
            p99: per(&|s| percentile(s, 0.99)),
            max: per(&|s| s.last().copied().unwrap_or(f64::NAN)),
            pooled: [
                percentile(&all, 0.5),
                percentile(&all, 0.99),
                all.last().copied().unwrap_or(f64::NAN),
            ],
            samples: all.len(),
            missed: runs.iter().map(|r| r.missed).sum(),
            unmatched: runs.iter().map(|r| r.unmatched).sum(),
            spurious: runs.iter().map(|r| r.spurious).sum(),
            load_stalled: runs.iter().map(|r| r.load_stalled).sum(),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max,
            "pooled_ms": { "p50": self.pooled[0], "p99": self.pooled[1], "max": self.pooled[2] },
            "stalls": self.samples, "missed": self.missed, "unmatched": self.unmatched,
            "spurious": self.spurious, "load_agents_stalled": self.load_stalled,
        })
    }
}

fn report(
    a: &ScrapeArgs,
    c: &Common,
    setup: &Setup,
    phases: &[PhaseRun],
    seqs: &[SeqRun; 3],
) -> Res<Outcome> {
    let stalls = setup.stalls;
    let stats = |o: usize, cond: Condition| {
        let runs: Vec<&Detection> = phases
            .iter()
            .filter(|p| Condition::of(p.phase, o) == cond)
            .map(|p| &p.detection[o])
            .collect();
        Stats::of(&runs)
    };
    let all: Vec<Vec<Stats>> = (0..2)
        .map(|o| CONDITIONS.iter().map(|&cnd| stats(o, cnd)).collect())
        .collect();

    println!("\n### stall overshoot = stall line readable in the export − last beat − threshold\n");
    let mut t = Table::new(&[
        "observer",
        "condition",
        "stalls (missed, unmatched, spurious)",
        "load agents stalled",
        "p50 ms",
        "p99 ms",
        "max ms",
        "pooled p50 / p99 / max ms",
    ]);
    for (o, which) in OBS.iter().enumerate() {
        for (ci, cond) in CONDITIONS.iter().enumerate() {
            let s = &all[o][ci];
            t.row(vec![
                which.label().into(),
                cond.label().into(),
                format!(
                    "{} ({}, {}, {})",
                    s.samples, s.missed, s.unmatched, s.spurious
                ),
                s.load_stalled.to_string(),
                s.p50.cell(3),
                s.p99.cell(3),
                s.max.cell(3),
                format!(
                    "{} / {} / {}",
                    num(s.pooled[0], 3),
                    num(s.pooled[1], 3),
                    num(s.pooled[2], 3)
                ),
            ]);
        }
    }
    t.print();
    println!(
        "\nmedian (min–max) of the per-rep percentiles, {} reps of {stalls} stalls per observer \
         and condition; counts are totals. spurious: a stall line before the agent's last beat; \
         load agents stalled: stall lines for agents that beat all along (beats lost, e.g. to a \
         full socket queue), counted in the phase where they were due to start (seen − threshold)",
        c.reps
    );

    println!("\n### the flood, as the flood process saw it (all reps)\n");
    let mut t = Table::new(&[
        "flooded observer",
        "scrapes ok/s",
        "scrape p50 ms",
        "scrape p99 ms",
        "failed (closed, timeout, status, truncated, connect)",
        "slowloris opened (closed by server)",
    ]);
    let mut flood_js = Vec::new();
    for (o, which) in OBS.iter().enumerate() {
        let mut f = FloodStats::default();
        for p in phases.iter().filter(|p| p.phase.flooded() == Some(o)) {
            if let Some(x) = &p.flood {
                f.merge(x);
                f.secs += x.secs;
            }
        }
        let mut l = f.latency_ms.clone();
        l.sort_by(f64::total_cmp);
        t.row(vec![
            which.label().into(),
            num(f.ok as f64 / f.secs.max(1e-9), 1),
            num(percentile(&l, 0.5), 2),
            num(percentile(&l, 0.99), 2),
            format!(
                "{} ({}, {}, {}, {}, {})",
                f.failed(),
                f.failed_closed,
                f.failed_timeout,
                f.failed_status,
                f.truncated,
                f.failed_connect
            ),
            format!("{} ({})", f.slow_opened, f.slow_closed),
        ]);
        flood_js.push(json!({
            "secs": f.secs, "ok": f.ok, "ok_per_sec": f.ok as f64 / f.secs.max(1e-9),
            "latency_p50_ms": percentile(&l, 0.5), "latency_p99_ms": percentile(&l, 0.99),
            "failed_closed": f.failed_closed, "failed_timeout": f.failed_timeout,
            "failed_status": f.failed_status, "truncated": f.truncated,
            "failed_connect": f.failed_connect, "slowloris_opened": f.slow_opened,
            "slowloris_closed_by_server": f.slow_closed, "slowloris_bytes": f.slow_bytes,
        }));
    }
    t.print();

    println!(
        "\n### sequential scrape latency (connect → last byte), one scrape per observer every {:.1} s\n",
        SEQ_PERIOD.as_secs_f64()
    );
    let mut t = Table::new(&[
        "observer",
        "pids tracked",
        "per-pid series",
        "body KiB",
        "scrapes (failed)",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]);
    let mut seq_js = Vec::new();
    for (o, label) in SEQ_LABELS.iter().enumerate() {
        let s = &seqs[o];
        let mut l = s.latency_ms.clone();
        l.sort_by(f64::total_cmp);
        t.row(vec![
            (*label).into(),
            s.pids_tracked.map_or("n/a".into(), |v| num(v, 0)),
            num(s.per_pid_series as f64, 0),
            num(s.body_bytes as f64 / 1024.0, 0),
            if s.failed == 0 {
                format!("{} (0)", l.len())
            } else {
                let k = &s.failed_by_kind;
                format!(
                    "{} ({}: {}/{}/{}/{}/{})",
                    l.len(),
                    s.failed,
                    k[0],
                    k[1],
                    k[2],
                    k[3],
                    k[4]
                )
            },
            num(percentile(&l, 0.5), 2),
            num(percentile(&l, 0.99), 2),
            num(l.last().copied().unwrap_or(f64::NAN), 2),
        ]);
        seq_js.push(json!({
            "p50_ms": percentile(&l, 0.5), "p99_ms": percentile(&l, 0.99),
            "max_ms": l.last().copied().unwrap_or(f64::NAN), "run": s,
        }));
    }
    t.print();
    println!(
        "\nper-pid series = varta_beats_total{{pid=…}} lines in the last body; ours caps them at \
         --per-agent-metrics-limit {}, the original at the {ORIGINAL_MAX_TRACKED} pids its tracker \
         holds; the third row is ours beaten by the same {} agents as the original; failed: {}",
        a.per_agent_metrics_limit, setup.orig_agents, FAIL_LEGEND
    );

    let (oq, of) = (&all[0][0], &all[0][1]);
    let (uq, uf) = (&all[1][0], &all[1][1]);
    println!(
        "\nflood − no flood, pooled p99: ours {} ms, original {} ms; p50: ours {} ms, original {} ms",
        num(of.pooled[1] - oq.pooled[1], 3),
        num(uf.pooled[1] - uq.pooled[1], 3),
        num(of.pooled[0] - oq.pooled[0], 3),
        num(uf.pooled[0] - uq.pooled[0], 3),
    );
    let goals = vec![Goal::new(
        "scrape ours overshoot p99 with /metrics flooded within +2 ms of without",
        of.pooled[1] - oq.pooled[1],
        Cmp::AtMost,
        OVERSHOOT_SLACK_MS,
        " ms",
    )];
    let obs_js = |o: usize| {
        json!({
            "no_flood": all[o][0].json(),
            "own_flooded": all[o][1].json(),
            "neighbour_flooded": all[o][2].json(),
            "flood": flood_js[o],
            "sequential_scrapes": seq_js[o],
            "pids_tracked_at_start": setup.tracked[o],
        })
    };
    Ok(Outcome {
        scenario: "scrape",
        results: json!({
            "agents": setup.agents,
            "original_agents": setup.orig_agents,
            "load_interval_ms": a.scrape_load_interval_ms,
            "threshold_ms": a.scrape_threshold_ms,
            "stalls_per_phase": stalls,
            "stop_span_secs": setup.stop_secs,
            "scrapers": a.scrapers,
            "slowloris": a.slowloris,
            "flood_nice": a.flood_nice,
            "per_agent_metrics_limit": a.per_agent_metrics_limit,
            "seed": a.scrape_seed,
            "agent_spawn_secs": setup.spawn_secs,
            "ours": obs_js(0),
            "original": obs_js(1),
            "ours_original_agents_only": {
                "sequential_scrapes": seq_js[2],
                "pids_tracked_at_start": setup.tracked[2],
            },
            "phases": phases,
        }),
        goals,
    })
}

/// True when the binary's `--help` mentions `--prom-addr` outside our
/// "accepted, not yet active" heading.
fn serves_metrics(bin: &Path) -> bool {
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
fn random_token() -> Res<String> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Writes the token file with mode 0600, as both observers demand.
fn write_secret(path: &Path, token: &str) -> Res<()> {
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
fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Ours prints `metrics: http://ADDR/metrics` on stdout (its log file here).
fn ours_metrics_addr(obs: &Observer) -> Res<SocketAddr> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(obs.log_path()).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| {
            l.strip_prefix("metrics: http://")?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        }) {
            return wait_listening(addr, obs);
        }
        if Instant::now() > until {
            return Err(format!(
                "our observer printed no `metrics: http://ADDR/metrics` line within 10 s: {}",
                obs.log_tail()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_listening(addr: SocketAddr, obs: &Observer) -> Res<SocketAddr> {
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > until {
            return Err(format!("nothing listens on {addr} after 10 s: {}", obs.log_tail()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(addr)
}

fn request_bytes(token: &str) -> Vec<u8> {
    format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/plain;version=0.0.4\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// How a scrape failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    Connect = 0,
    Closed = 1,
    Timeout = 2,
    Status = 3,
    Truncated = 4,
}

/// The kinds of [`Fail`], in index order, for table notes.
const FAIL_LEGEND: &str = "connect/closed/timeout/non-200 status/truncated";

/// One scrape: connect, send `request`, read to EOF into `buf`. Returns the
/// latency (connect → last byte) and the body's range in `buf`.
fn scrape(
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
fn gauge(body: &[u8], name: &str) -> Option<f64> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let v = rest.strip_prefix(' ')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

fn per_pid_series(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"varta_beats_total{pid=\""))
        .count()
}

/// Scrapes each observer until it tracks its `want` pids (or `limit`
/// passes); returns the last `varta_watch_pids_tracked` of each (NaN when
/// never read).
fn wait_tracked<const N: usize>(
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
fn sequential<const N: usize>(addrs: &[SocketAddr; N], request: &[u8], n: usize) -> [SeqRun; N] {
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

/// How to start the flood process.
struct FloodCfg<'a> {
    exe: &'a Path,
    token_file: &'a Path,
    scrapers: usize,
    slowloris: usize,
    nice: u8,
}

/// A running flood process; [`Flood::stop`] closes its stdin and reads its
/// stats.
struct Flood {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
}

impl Flood {
    fn start(cfg: &FloodCfg, addr: SocketAddr) -> Res<Flood> {
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

    fn stop(mut self) -> Res<FloodStats> {
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
