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

pub(crate) mod endpoint;
mod flood;
mod report;

pub use flood::{flood, FloodArgs};

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{report_readers, rotated, SplitMix};
use crate::exportfile::{SeenStall, StallWatcher};
use crate::procs::{
    bench_dir, monotonic_ns, spawn_senders, spawn_stoppable_senders, Binaries, Observer,
    ObserverSpec, Res, Sender, SenderSpec, Which, REPORT_SOCKET_SHIFT,
};
use crate::stats::{num, percentile};
use crate::{Common, Outcome, ScrapeArgs};
use endpoint::{
    free_port, ours_metrics_addr, random_token, request_bytes, sequential, serves_metrics,
    wait_listening, wait_tracked, write_secret, SEQ_PERIOD,
};
use flood::{Flood, FloodCfg, FloodStats};
use report::report;

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
