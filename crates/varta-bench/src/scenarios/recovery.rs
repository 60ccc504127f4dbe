//! `recovery`: how soon after a stall is due each observer has its recovery
//! command running, and whether a slow audit log delays our stall detection.
//!
//! Load: `load` agents beat every `interval` ms for the whole run; `stalls`
//! more agents beat the same way and fall silent, one at a time, at seeded
//! random instants (the harness writes a byte to the agent's stdin; the
//! agent stops beating but stays alive, like a hung process, so its pid is
//! valid for the recovery command). Every stalling agent reports (socket,
//! nonce, CLOCK_MONOTONIC) of each delivered beat over a pipe, so the
//! instant it fell silent for an observer is the send time of its last
//! reported beat to that observer, and the stall is due one threshold later.
//!
//! Every observer gets `--recovery-exec "PROBE FILE {pid}"`, an audit file
//! and `--export-file-sync-every 1`. The probe (`varta-bench-recovery-probe`)
//! reads CLOCK_MONOTONIC first thing and appends `pid ns` to FILE, so
//!
//! * exec latency = probe start − (last beat + threshold);
//! * overshoot    = stall line readable in the export − (last beat +
//!   threshold), measured as in `detect` (inotify on the export file).
//!
//! The observers compared run side by side, every agent beating each of
//! them, so they see the same load and the same stalls at the same moments
//! and noise from the rest of the machine hits both alike. Part 1: ours and
//! the original. Part 2: ours built with `--features test-hooks`, twice, one
//! with `VARTA_TEST_AUDIT_FSYNC_DELAY_MS` set (every audit fdatasync takes
//! that much longer) and one without; the stall overshoot must not move.
//! The original has no such hook: n/a.

use super::{at_random_instants, report_readers};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{rotated, Table};
use crate::exportfile::{SeenStall, StallWatcher};
use crate::procs::{
    bench_dir, monotonic_ns, ours_with_test_hooks, recovery_probe, spawn_senders,
    spawn_stoppable_senders, Binaries, Observer, ObserverSpec, Res, SenderSpec, Which,
    REPORT_SOCKET_SHIFT, TRACKER_CAPACITY,
};
use crate::stats::{num, percentile, Cmp, Goal, Summary};
use crate::{Common, Outcome, RecoveryArgs};

/// The environment variable of our `test-hooks` build that slows every
/// audit fdatasync by this many ms.
const FSYNC_DELAY_ENV: &str = "VARTA_TEST_AUDIT_FSYNC_DELAY_MS";

/// Our `--help` heading for flags that parse but do nothing yet.
const INACTIVE_HEADING: &str = "Compatibility (accepted, not yet active)";

/// Overshoot p50/p99 with the slow audit fsync may exceed the run without
/// it by at most this much.
const OVERSHOOT_SLACK_MS: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// target/release/varta-watch.
    Ours,
    /// varta-watch 0.2.0.
    Original,
    /// Ours with `--features test-hooks`, hook unset.
    HooksPlain,
    /// Ours with `--features test-hooks`, every audit fsync slowed.
    HooksSlow,
}

impl Variant {
    fn label(self, delay_ms: u64) -> String {
        match self {
            Variant::Ours => Which::Ours.label().to_string(),
            Variant::Original => Which::Original.label().to_string(),
            Variant::HooksPlain => "ours (test-hooks), audit fsync as is".to_string(),
            Variant::HooksSlow => format!("ours (test-hooks), audit fsync +{delay_ms} ms"),
        }
    }
}

/// Result of one observer run.
#[derive(Default, serde::Serialize)]
struct Run {
    /// exec latency per stalled agent, ms.
    exec_ms: Vec<f64>,
    /// Stall overshoot per stalled agent, ms.
    overshoot_ms: Vec<f64>,
    /// Stalled agents whose recovery command never ran (within the wait).
    no_exec: usize,
    /// Stalled agents with no stall line at all (within the wait).
    no_stall: usize,
    /// Stall lines naming another nonce than the agent's last reported beat.
    unmatched: usize,
    /// Stall lines for agents still beating (load agents, or a stalling
    /// agent before its last beat).
    spurious_stalls: usize,
    /// Recovery commands for pids that never stalled, or run twice.
    spurious_execs: usize,
    /// Lines in the audit file at the end (0 when it was not written).
    audit_lines: usize,
}

impl Run {
    fn sorted(v: &[f64]) -> Vec<f64> {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// Settings shared by every run.
struct Setup<'a> {
    bins: &'a Binaries,
    hooks: Option<&'a Path>,
    probe: &'a Path,
    load: usize,
    stalls: usize,
    threshold_ms: u64,
    interval_ms: u64,
    earliest_ms: u64,
    span_ms: u64,
    delay_ms: u64,
    grace: Duration,
}

impl Setup<'_> {
    /// Safety net: agents and observers exit by themselves after this.
    fn lifetime(&self) -> Duration {
        Duration::from_millis(self.span_ms + self.threshold_ms) + Duration::from_secs(30)
    }
}

pub fn run(a: &RecoveryArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let load = a.load_agents.unwrap_or(if c.quick { 40 } else { 200 });
    let stalls = a.stall_agents.unwrap_or(if c.quick { 10 } else { 50 });
    let secs = a.stall_secs.unwrap_or(if c.quick { 2.0 } else { 4.0 });
    let threshold_ms = a.recovery_threshold_ms;
    let interval_ms = a.recovery_interval_ms;
    let earliest_ms = 5 * interval_ms + 200;
    let span_ms = (secs * 1000.0) as u64;
    if stalls == 0 || span_ms <= earliest_ms + 100 || threshold_ms < 10 || interval_ms == 0 {
        return Err(format!(
            "recovery needs --stall-agents >= 1, --recovery-threshold-ms >= 10, \
             --recovery-interval-ms >= 1 and --stall-secs above {:.1} s",
            (earliest_ms + 100) as f64 / 1000.0
        )
        .into());
    }
    println!(
        "## recovery: {load} agents beating every {interval_ms} ms + {stalls} that fall silent at \
         random times over {secs} s, threshold {threshold_ms} ms, a recovery command per stall, {} reps",
        c.reps
    );
    let probe = recovery_probe()?;
    let floor = spawn_floor(&probe, if c.quick { 20 } else { 50 })?;
    let ours_active = recovery_active(&bins.ours);
    if !ours_active {
        println!(
            "\nnote: our observer ({}) lists --recovery-exec under \"{INACTIVE_HEADING}\": \
             recovery is not implemented in this build, so only the original is measured.",
            bins.ours.display()
        );
    }
    let hooks = if ours_active {
        match ours_with_test_hooks() {
            Ok(p) if recovery_active(&p) => Ok(p),
            Ok(p) => Err(format!("{} does not implement recovery", p.display())),
            Err(e) => Err(e.to_string()),
        }
    } else {
        Err("our observer does not implement recovery yet".to_string())
    };
    if let Err(e) = &hooks {
        println!("\nnote: part 2 (slow audit fsync) not measured: {e}");
    }
    let setup = Setup {
        bins,
        hooks: hooks.as_ref().ok().map(PathBuf::as_path),
        probe: &probe,
        load,
        stalls,
        threshold_ms,
        interval_ms,
        earliest_ms,
        span_ms,
        delay_ms: a.fsync_delay_ms,
        grace: Duration::from_millis(if c.quick { 2000 } else { 3000 }),
    };

    // Part 1 and part 2 are one side-by-side run each per repetition.
    let mut groups: Vec<Vec<Variant>> = vec![if ours_active {
        vec![Variant::Ours, Variant::Original]
    } else {
        vec![Variant::Original]
    }];
    if setup.hooks.is_some() {
        groups.push(vec![Variant::HooksPlain, Variant::HooksSlow]);
    }
    let variants: Vec<Variant> = groups.iter().flatten().copied().collect();
    let all = [
        Variant::Ours,
        Variant::Original,
        Variant::HooksPlain,
        Variant::HooksSlow,
    ];
    let mut runs: Vec<Vec<Run>> = all.iter().map(|_| Vec::new()).collect();
    let slot = |v: Variant| all.iter().position(|&x| x == v).unwrap_or(0);
    for rep in 0..c.reps as usize {
        // Every run of a repetition sees the same stop schedule.
        let seed = a.recovery_seed.wrapping_add(rep as u64);
        for group in &groups {
            // Rotated: each observer is started first, and beaten first by
            // every agent, in turn.
            let order = rotated(group, rep);
            for (v, r) in order.iter().zip(one_run(&order, &setup, seed)?) {
                let (e, o) = (Run::sorted(&r.exec_ms), Run::sorted(&r.overshoot_ms));
                eprintln!(
                    "  rep {}: {:?} exec p50 {:.3} p99 {:.3} ms ({} missing); overshoot p50 {:.3} \
                     p99 {:.3} ms ({} missed, {} unmatched); spurious {} stalls {} execs; {} audit lines",
                    rep + 1,
                    v,
                    percentile(&e, 0.5),
                    percentile(&e, 0.99),
                    r.no_exec,
                    percentile(&o, 0.5),
                    percentile(&o, 0.99),
                    r.no_stall,
                    r.unmatched,
                    r.spurious_stalls,
                    r.spurious_execs,
                    r.audit_lines
                );
                runs[slot(*v)].push(r);
            }
        }
    }

    let stats = |rs: &[Run], f: fn(&Run) -> &Vec<f64>| Stats::of(rs, f);
    let exec: Vec<Stats> = runs.iter().map(|rs| stats(rs, |r| &r.exec_ms)).collect();
    let over: Vec<Stats> = runs
        .iter()
        .map(|rs| stats(rs, |r| &r.overshoot_ms))
        .collect();
    let total = |rs: &[Run], f: fn(&Run) -> usize| rs.iter().map(f).sum::<usize>();

    println!("\n### recovery exec latency = recovery command running − (last beat + threshold)\n");
    let mut t = Table::new(&[
        "observer",
        "recoveries (missing, spurious)",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]);
    for &v in &variants {
        let (rs, s) = (&runs[slot(v)], &exec[slot(v)]);
        t.row(vec![
            v.label(setup.delay_ms),
            format!(
                "{} ({}, {})",
                total(rs, |r| r.exec_ms.len()),
                total(rs, |r| r.no_exec),
                total(rs, |r| r.spurious_execs)
            ),
            s.p50.cell(3),
            s.p99.cell(3),
            s.max.cell(3),
        ]);
    }
    t.row(vec![
        "floor: the harness spawning the probe, no load".into(),
        format!("{} (0, 0)", floor.len()),
        num(percentile(&floor, 0.5), 3),
        num(percentile(&floor, 0.99), 3),
        num(floor.last().copied().unwrap_or(f64::NAN), 3),
    ]);
    t.print();
    println!(
        "\n### stall overshoot = stall line readable in the export − (last beat + threshold)\n"
    );
    let mut t = Table::new(&[
        "observer",
        "stalls (missed, unmatched, spurious)",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]);
    for &v in &variants {
        let (rs, s) = (&runs[slot(v)], &over[slot(v)]);
        t.row(vec![
            v.label(setup.delay_ms),
            format!(
                "{} ({}, {}, {})",
                total(rs, |r| r.overshoot_ms.len()),
                total(rs, |r| r.no_stall),
                total(rs, |r| r.unmatched),
                total(rs, |r| r.spurious_stalls)
            ),
            s.p50.cell(3),
            s.p99.cell(3),
            s.max.cell(3),
        ]);
    }
    t.row(vec![
        format!(
            "{}, audit fsync +{} ms",
            Which::Original.label(),
            setup.delay_ms
        ),
        "n/a (no hook)".into(),
        "n/a".into(),
        "n/a".into(),
        "n/a".into(),
    ]);
    t.print();
    println!(
        "\nmedian (min–max) of the per-rep percentiles, {} reps; counts are totals. Pooled over all reps:",
        c.reps
    );
    for &v in &variants {
        let (e, o) = (&exec[slot(v)], &over[slot(v)]);
        println!(
            "  {}: exec p50 {} p99 {} max {} ms; overshoot p50 {} p99 {} max {} ms; {} audit lines/run",
            v.label(setup.delay_ms),
            num(e.pooled[0], 3),
            num(e.pooled[1], 3),
            num(e.pooled[2], 3),
            num(o.pooled[0], 3),
            num(o.pooled[1], 3),
            num(o.pooled[2], 3),
            num(
                Summary::of(
                    &runs[slot(v)]
                        .iter()
                        .map(|r| r.audit_lines as f64)
                        .collect::<Vec<_>>()
                )
                .median,
                0
            ),
        );
    }

    // Goals on the pooled percentiles: with 50 stalls a rep, a per-rep p99
    // is that rep's max; pooling gives p99 a few more samples.
    let (eo, eu) = (&exec[slot(Variant::Ours)], &exec[slot(Variant::Original)]);
    let (op, os) = (
        &over[slot(Variant::HooksPlain)],
        &over[slot(Variant::HooksSlow)],
    );
    let ours_runs = &runs[slot(Variant::Ours)];
    let slow_runs = &runs[slot(Variant::HooksSlow)];
    let d = setup.delay_ms;
    let missing = |rs: &[Run], f: fn(&Run) -> usize| {
        if rs.is_empty() {
            f64::NAN
        } else {
            total(rs, f) as f64
        }
    };
    let goals = vec![
        Goal::new(
            "recovery exec latency p99 ours <= original",
            eo.pooled[1],
            Cmp::AtMost,
            eu.pooled[1],
            " ms",
        ),
        Goal::new(
            "recovery ours: every stall recovered (missing recoveries)",
            missing(ours_runs, |r| r.no_exec),
            Cmp::AtMost,
            0.0,
            "",
        ),
        Goal::new(
            &format!("recovery overshoot p50 with {d} ms audit fsync within +2 ms of without"),
            os.pooled[0] - op.pooled[0],
            Cmp::AtMost,
            OVERSHOOT_SLACK_MS,
            " ms",
        ),
        Goal::new(
            &format!("recovery overshoot p99 with {d} ms audit fsync within +2 ms of without"),
            os.pooled[1] - op.pooled[1],
            Cmp::AtMost,
            OVERSHOOT_SLACK_MS,
            " ms",
        ),
        Goal::new(
            &format!("recovery with {d} ms audit fsync: every stall seen (missed stalls)"),
            missing(slow_runs, |r| r.no_stall),
            Cmp::AtMost,
            0.0,
            "",
        ),
    ];
    let js = |v: Variant| {
        let i = slot(v);
        json!({
            "exec": exec[i].json(),
            "overshoot": over[i].json(),
            "per_rep": runs[i],
        })
    };
    Ok(Outcome {
        scenario: "recovery",
        results: json!({
            "load_agents": load,
            "stall_agents": stalls,
            "interval_ms": interval_ms,
            "threshold_ms": threshold_ms,
            "stop_span_secs": secs,
            "seed": a.recovery_seed,
            "fsync_delay_ms": d,
            "ours_recovery_active": ours_active,
            "spawn_floor_ms": { "p50": percentile(&floor, 0.5), "p99": percentile(&floor, 0.99),
                "max": floor.last().copied().unwrap_or(f64::NAN), "samples": floor.len() },
            "test_hooks_error": hooks.as_ref().err(),
            "ours": js(Variant::Ours),
            "original": js(Variant::Original),
            "ours_test_hooks_plain": js(Variant::HooksPlain),
            "ours_test_hooks_slow_fsync": js(Variant::HooksSlow),
            "original_slow_fsync": "n/a (no hook)",
        }),
        goals,
    })
}

/// Per-rep percentiles summarised over reps, and the pooled percentiles.
struct Stats {
    p50: Summary,
    p99: Summary,
    max: Summary,
    /// p50, p99, max over every sample of every rep.
    pooled: [f64; 3],
}

impl Stats {
    fn of(runs: &[Run], f: fn(&Run) -> &Vec<f64>) -> Stats {
        let per = |g: &dyn Fn(&[f64]) -> f64| -> Summary {
            Summary::of(
                &runs
                    .iter()
                    .map(|r| g(&Run::sorted(f(r))))
                    .collect::<Vec<_>>(),
            )
        };
        let all: Vec<f64> = runs.iter().flat_map(|r| f(r).iter().copied()).collect();
        let all = Run::sorted(&all);
        Stats {
            p50: per(&|s| percentile(s, 0.5)),
            p99: per(&|s| percentile(s, 0.99)),
            max: per(&|s| s.last().copied().unwrap_or(f64::NAN)),
            pooled: [
                percentile(&all, 0.5),
                percentile(&all, 0.99),
                all.last().copied().unwrap_or(f64::NAN),
            ],
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max,
            "pooled_ms": { "p50": self.pooled[0], "p99": self.pooled[1], "max": self.pooled[2] },
        })
    }
}

/// False when the binary's `--help` lists `--recovery-exec` under our
/// "accepted, not yet active" heading (the original has no such heading).
fn recovery_active(bin: &Path) -> bool {
    let Ok(out) = Command::new(bin).arg("--help").output() else {
        return false;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    !inactive_in_help(&text)
}

fn inactive_in_help(help: &str) -> bool {
    let mut in_section = false;
    for line in help.lines() {
        if !line.starts_with(char::is_whitespace) && !line.is_empty() {
            in_section = line.contains(INACTIVE_HEADING);
            continue;
        }
        if in_section && line.trim_start().starts_with("--recovery-exec ") {
            return true;
        }
    }
    false
}

/// The floor of exec latency on this machine: `n` spawns of the probe by
/// the harness itself (`Command::spawn`, as an observer spawns its recovery
/// command), CLOCK_MONOTONIC before the spawn to the probe's first read of
/// it, in ms, sorted.
fn spawn_floor(probe: &Path, n: usize) -> Res<Vec<f64>> {
    let dir = bench_dir()?;
    let file = dir.path().join("floor.txt");
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let before = monotonic_ns();
        let status = Command::new(probe)
            .arg(&file)
            .arg(i.to_string())
            .env_clear()
            .status()?;
        if !status.success() {
            return Err(format!("{} {} failed: {status}", probe.display(), file.display()).into());
        }
        let execs = read_execs(&file);
        let &(_, t) = execs.last().ok_or("the probe wrote nothing")?;
        v.push((t as f64 - before as f64) / 1e6);
    }
    Ok(Run::sorted(&v))
}

/// The probe's `pid ns` lines.
fn read_execs(path: &Path) -> Vec<(u32, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (p, t) = l.split_once(' ')?;
            Some((p.parse().ok()?, t.trim().parse().ok()?))
        })
        .collect()
}

/// One observer of a run, with its own files.
struct Running {
    obs: Observer,
    watcher: StallWatcher,
    execs: PathBuf,
    audit: PathBuf,
    /// Keeps the observer's directory until the run is over.
    _dir: tempfile::TempDir,
}

/// Starts one observer of variant `v` with the recovery probe.
fn start(v: Variant, s: &Setup) -> Res<Running> {
    let dir = bench_dir()?;
    let execs = dir.path().join("execs.txt");
    let audit = dir.path().join("audit.tsv");
    // No shell: the command is split on whitespace.
    let cmd = format!("{} {} {{pid}}", s.probe.display(), execs.display());
    if cmd.split_whitespace().count() != 3 {
        return Err(format!(
            "the recovery command `{cmd}` would be split wrongly: a path contains whitespace"
        )
        .into());
    }
    let audit_arg = audit.to_string_lossy().into_owned();
    let extra = [
        "--export-file-sync-every",
        "1",
        "--recovery-exec",
        &cmd,
        "--recovery-audit-file",
        &audit_arg,
        "--recovery-debounce-ms",
        "1000",
    ];
    let hooks_bins;
    let (which, bins, env) = match v {
        Variant::Ours => (Which::Ours, s.bins, vec![]),
        Variant::Original => (Which::Original, s.bins, vec![]),
        Variant::HooksPlain | Variant::HooksSlow => {
            hooks_bins = Binaries {
                ours: s.hooks.ok_or("no test-hooks build")?.to_path_buf(),
                original: s.bins.original.clone(),
            };
            let env = if v == Variant::HooksSlow {
                vec![(FSYNC_DELAY_ENV, s.delay_ms.to_string())]
            } else {
                vec![]
            };
            (Which::Ours, &hooks_bins, env)
        }
    };
    let obs = Observer::start_with_env(
        bins,
        &ObserverSpec {
            which,
            dir: dir.path(),
            threshold_ms: s.threshold_ms,
            export: true,
            tracker_capacity: TRACKER_CAPACITY,
            extra: &extra,
            lifetime: s.lifetime() + Duration::from_secs(30),
        },
        &env,
    )?;
    let export = obs.export.clone().ok_or("observer has no export file")?;
    let watcher = StallWatcher::start(export)?;
    Ok(Running {
        obs,
        watcher,
        execs,
        audit,
        _dir: dir,
    })
}

/// One run: the observers of `vs` side by side, every agent beating each
/// of them (socket i = observer i), the same agents falling silent at the
/// same instants for all. Returns one [`Run`] per observer.
fn one_run(vs: &[Variant], s: &Setup, seed: u64) -> Res<Vec<Run>> {
    let mut running = Vec::with_capacity(vs.len());
    for &v in vs {
        running.push(start(v, s)?);
    }
    let sockets: Vec<&Path> = running.iter().map(|r| r.obs.socket.as_path()).collect();
    let sender = |report| SenderSpec {
        sockets: &sockets,
        interval_ms: Some(s.interval_ms),
        report,
        lifetime: s.lifetime(),
    };
    let mut load = spawn_senders(s.load, &sender(false))?;
    let mut stallers = spawn_stoppable_senders(s.stalls, &sender(true))?;
    let readers = report_readers(&mut stallers)?;
    at_random_instants(seed, s.stalls, s.earliest_ms, s.span_ms, |i| {
        let stdin = stallers[i].stdin.as_mut().ok_or("a staller has no stdin")?;
        stdin.write_all(b"S")?;
        Ok(())
    })?;
    // The last stall is due about one threshold after the last stop; wait
    // for every recovery of every observer (or the grace period), then a
    // little for the export lines written with them.
    let until = Instant::now() + Duration::from_millis(s.threshold_ms) + s.grace;
    let pids: Vec<u32> = stallers.iter().map(|k| k.guard.pid()).collect();
    while Instant::now() < until {
        let done = running.iter().all(|r| {
            let execs = read_execs(&r.execs);
            pids.iter().all(|p| execs.iter().any(|(q, _)| q == p))
        });
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut observed = Vec::with_capacity(running.len());
    for r in running {
        let seen = r.watcher.finish()?;
        let execs = read_execs(&r.execs);
        r.obs.stop();
        let audit_lines = std::fs::read_to_string(&r.audit)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        observed.push((seen, execs, audit_lines));
    }
    for k in stallers.iter_mut().chain(load.iter_mut()) {
        k.guard.kill();
    }
    let load_pids: Vec<u32> = load.iter().map(|k| k.guard.pid()).collect();
    let reports: Vec<Vec<(u64, u64)>> = readers
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    let mask = (1u64 << REPORT_SOCKET_SHIFT) - 1;
    let runs = observed
        .into_iter()
        .enumerate()
        .map(|(i, (seen, execs, audit_lines))| {
            // This observer's beats: socket index i in the nonce's top byte.
            let mine: Vec<Vec<(u64, u64)>> = reports
                .iter()
                .map(|rep| {
                    rep.iter()
                        .filter(|(n, _)| n >> REPORT_SOCKET_SHIFT == i as u64)
                        .map(|&(n, t)| (n & mask, t))
                        .collect()
                })
                .collect();
            let mut run = pair(
                &pids,
                &mine,
                &load_pids,
                &seen,
                &execs,
                s.threshold_ms * 1_000_000,
            );
            run.audit_lines = audit_lines;
            run
        })
        .collect();
    Ok(runs)
}

/// Pairs each stalled agent's last reported beat with its stall line and
/// its recovery command's start.
fn pair(
    pids: &[u32],
    reports: &[Vec<(u64, u64)>],
    load_pids: &[u32],
    seen: &[SeenStall],
    execs: &[(u32, u64)],
    threshold_ns: u64,
) -> Run {
    let mut run = Run::default();
    for (pid, rep) in pids.iter().zip(reports) {
        let stalls: Vec<&SeenStall> = seen.iter().filter(|s| s.pid == *pid).collect();
        let runs: Vec<u64> = execs
            .iter()
            .filter(|(p, _)| p == pid)
            .map(|&(_, t)| t)
            .collect();
        let Some(&(last_nonce, sent_ns)) = rep.last() else {
            // Never beat: nothing to measure against.
            run.unmatched += 1;
            continue;
        };
        let due = sent_ns as f64 + threshold_ns as f64;
        run.spurious_stalls += stalls.iter().filter(|s| s.nonce < last_nonce).count();
        match stalls.iter().find(|s| s.nonce == last_nonce) {
            Some(s) => run.overshoot_ms.push((s.seen_ns as f64 - due) / 1e6),
            None if stalls.iter().any(|s| s.nonce > last_nonce) => run.unmatched += 1,
            None => run.no_stall += 1,
        }
        match runs.iter().min() {
            Some(&t) => run.exec_ms.push((t as f64 - due) / 1e6),
            None => run.no_exec += 1,
        }
        run.spurious_execs += runs.len().saturating_sub(1);
    }
    run.spurious_stalls += seen.iter().filter(|s| load_pids.contains(&s.pid)).count();
    run.spurious_execs += execs.iter().filter(|(p, _)| !pids.contains(p)).count();
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_last_beat_with_stall_and_exec() {
        let seen = [
            SeenStall {
                seen_ns: 2_501_000_000,
                pid: 10,
                nonce: 7,
            },
            SeenStall {
                seen_ns: 3_000_000_000,
                pid: 99,
                nonce: 4,
            },
        ];
        let reports = vec![vec![(6, 1_900_000_000), (7, 2_000_000_000)], vec![]];
        let execs = [(10, 2_503_000_000), (10, 2_600_000_000), (77, 1)];
        let run = pair(&[10, 11], &reports, &[99], &seen, &execs, 500_000_000);
        assert_eq!(run.overshoot_ms, vec![1.0]);
        assert_eq!(run.exec_ms, vec![3.0]);
        // pid 11 never beat; pid 99 is a load agent; pid 77 is nobody.
        assert_eq!(run.unmatched, 1);
        assert_eq!(run.spurious_stalls, 1);
        assert_eq!(run.spurious_execs, 2);
        assert_eq!((run.no_exec, run.no_stall), (0, 0));
    }

    #[test]
    fn missing_stall_and_exec_are_counted() {
        let reports = vec![vec![(3, 1_000_000_000)]];
        let run = pair(&[10], &reports, &[], &[], &[], 500_000_000);
        assert_eq!((run.no_exec, run.no_stall, run.unmatched), (1, 1, 0));
    }

    #[test]
    fn finds_inactive_recovery_in_help() {
        let inactive =
            "Options:\n  --socket <P>  x\n\nCompatibility (accepted, not yet active):\n      \
                        --recovery-exec <CMD>\n          Not active yet.\n";
        assert!(inactive_in_help(inactive));
        let active = "Recovery:\n  --recovery-exec <CMD>  run it\n\nCompatibility (accepted, not yet active):\n  \
                      --prom-addr <A>\n";
        assert!(!inactive_in_help(active));
        assert!(!inactive_in_help(
            "OPTIONAL:\n    --recovery-exec <CMD>  Command\n"
        ));
    }
}
