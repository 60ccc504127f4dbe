//! `idle`: CPU used by each observer while agents beat at 1 Hz — the
//! everyday load. Both observers run side by side and every agent process
//! beats both, so they see the same pids at the same moments.
//!
//! CPU = utime + stime from /proc/<pid>/stat over the window. Those tick at
//! 10 ms, coarse for a nearly idle process, so the table also shows the
//! nanosecond run time from /proc/<pid>/task/*/schedstat and the context
//! switches per second (≈ wake-ups), which explain the difference.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::unistd::{sysconf, SysconfVar};
use serde_json::json;

use super::Table;
use crate::procs::{
    bench_dir, spawn_senders, Binaries, Observer, ObserverSpec, Res, SenderSpec, Which,
    TRACKER_CAPACITY,
};
use crate::stats::{Cmp, Goal, Summary};
use crate::{Common, IdleArgs, Outcome};

/// Agents are admitted and startup work is done before the window opens.
const SETTLE: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    ticks: u64,
    sched_ns: Option<u64>,
    ctxt: u64,
}

fn sample(pid: u32) -> Res<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces): state is
    // field 3, utime 14 and stime 15 (man 5 proc).
    let rest = stat.rsplit_once(')').ok_or("malformed /proc/<pid>/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Res<u64> {
        Ok(f.get(n - 3)
            .ok_or("short /proc/<pid>/stat")?
            .parse::<u64>()?)
    };
    let ticks = field(14)? + field(15)?;
    let mut sched_ns = Some(0u64);
    let mut ctxt = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let p = task.path();
        let s = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            });
        sched_ns = match (sched_ns, s) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        ctxt += ctxt_switches(&p.join("status"));
    }
    Ok(Cpu {
        ticks,
        sched_ns,
        ctxt,
    })
}

fn ctxt_switches(status: &Path) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
        .sum()
}

/// Per observer and repetition: CPU % by ticks, by schedstat, switches/s.
type Use = (f64, f64, f64);

pub fn run(a: &IdleArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let agents = a.idle_agents.unwrap_or(if c.quick { 10 } else { 50 });
    let secs = a.idle_secs.unwrap_or(if c.quick { 3.0 } else { 30.0 });
    if agents == 0 || !(1.0..=86_400.0).contains(&secs) {
        return Err("idle needs --idle-agents >= 1 and --idle-secs in 1..=86400".into());
    }
    let tck = sysconf(SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    println!("## idle: {agents} agents beating at 1 Hz, {secs} s window, both observers side by side, {} reps", c.reps);
    let mut ours: Vec<Use> = Vec::new();
    let mut orig: Vec<Use> = Vec::new();
    for rep in 0..c.reps {
        let (o, u) = one_run(bins, agents, secs, tck)?;
        eprintln!(
            "  rep {}: ours {:.3}% (schedstat {:.3}%), original {:.3}% (schedstat {:.3}%)",
            rep + 1,
            o.0,
            o.1,
            u.0,
            u.1
        );
        ours.push(o);
        orig.push(u);
    }
    let col = |v: &[Use], f: fn(&Use) -> f64| Summary::of(&v.iter().map(f).collect::<Vec<_>>());
    let mut t = Table::new(&[
        "observer",
        "CPU % (utime+stime)",
        "CPU % (schedstat)",
        "context switches/s",
    ]);
    let mut js = Vec::new();
    for (which, v) in [(Which::Ours, &ours), (Which::Original, &orig)] {
        let (ticks, sched, sw) = (col(v, |u| u.0), col(v, |u| u.1), col(v, |u| u.2));
        t.row(vec![
            which.label().into(),
            ticks.cell(3),
            sched.cell(3),
            sw.cell(1),
        ]);
        js.push(json!({ "cpu_percent": ticks, "cpu_percent_schedstat": sched, "context_switches_per_sec": sw }));
    }
    println!();
    t.print();
    println!("\n(CPU % of one core; median (min–max) of {} reps)", c.reps);
    let (o, u) = (col(&ours, |u| u.0).median, col(&orig, |u| u.0).median);
    let (os, us) = (col(&ours, |u| u.1).median, col(&orig, |u| u.1).median);
    let goals = vec![
        Goal::new(
            "idle ours CPU <= original (utime+stime)",
            o,
            Cmp::AtMost,
            u,
            "%",
        ),
        // The same goal at nanosecond resolution: ticks are 10 ms, so a
        // nearly idle observer often shows 0 ticks in a short window.
        Goal::new(
            "idle ours CPU <= original (schedstat)",
            os,
            Cmp::AtMost,
            us,
            "%",
        ),
    ];
    Ok(Outcome {
        scenario: "idle",
        results: json!({ "agents": agents, "window_secs": secs, "ours": js[0], "original": js[1] }),
        goals,
    })
}

fn one_run(bins: &Binaries, agents: usize, secs: f64, tck: f64) -> Res<(Use, Use)> {
    let dir = bench_dir()?;
    let window = Duration::from_secs_f64(secs);
    let lifetime = window + SETTLE + Duration::from_secs(60);
    let spec = |which| ObserverSpec {
        which,
        dir: dir.path(),
        threshold_ms: 5_000,
        export: false,
        tracker_capacity: TRACKER_CAPACITY,
        extra: &[],
        lifetime: lifetime + Duration::from_secs(30),
    };
    let ours = Observer::start(bins, &spec(Which::Ours))?;
    let orig = Observer::start(bins, &spec(Which::Original))?;
    let kids = spawn_senders(
        agents,
        &SenderSpec {
            sockets: &[&ours.socket, &orig.socket],
            interval_ms: Some(1000),
            report: false,
            lifetime,
        },
    )?;
    std::thread::sleep(SETTLE);
    let (o0, u0, t0) = (sample(ours.pid())?, sample(orig.pid())?, Instant::now());
    std::thread::sleep(window);
    let (o1, u1, t1) = (sample(ours.pid())?, sample(orig.pid())?, Instant::now());
    drop(kids);
    ours.stop();
    orig.stop();
    let wall = (t1 - t0).as_secs_f64();
    let usage = |a: Cpu, b: Cpu| -> Use {
        let ticks = b.ticks.saturating_sub(a.ticks) as f64 / tck / wall * 100.0;
        let sched = match (a.sched_ns, b.sched_ns) {
            (Some(x), Some(y)) => y.saturating_sub(x) as f64 / 1e9 / wall * 100.0,
            _ => f64::NAN,
        };
        let sw = b.ctxt.saturating_sub(a.ctxt) as f64 / wall;
        (ticks, sched, sw)
    };
    Ok((usage(o0, o1), usage(u0, u1)))
}
