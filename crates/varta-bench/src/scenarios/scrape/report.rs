//! The scrape scenario's tables, goal and JSON.

use serde_json::json;

use super::endpoint::{LoopDelta, SeqRun, TrackerGauges, FAIL_LEGEND, SEQ_PERIOD};
use super::flood::FloodStats;
use super::{
    Condition, Detection, Phase, PhaseRun, Setup, CONDITIONS, OBS, ORIGINAL_MAX_TRACKED,
    SMALL_LABEL,
};
use crate::procs::Res;
use crate::scenarios::Table;
use crate::stats::{num, percentile, Cmp, Goal, Summary};
use crate::{Common, Outcome, ScrapeArgs};

/// Overshoot p99 with the flood may exceed the run without it by this much.
const OVERSHOOT_SLACK_MS: f64 = 2.0;

/// Rows of the sequential-scrape table.
const SEQ_LABELS: [&str; 3] = [
    "varta-watch (ours)",
    "varta-watch 0.2.0 (original)",
    SMALL_LABEL,
];

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
    load_stalled_udp: usize,
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
            load_stalled_udp: runs.iter().map(|r| r.load_stalled_udp).sum(),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max,
            "pooled_ms": { "p50": self.pooled[0], "p99": self.pooled[1], "max": self.pooled[2] },
            "stalls": self.samples, "missed": self.missed, "unmatched": self.unmatched,
            "spurious": self.spurious, "load_agents_stalled": self.load_stalled,
            "udp_load_agents_stalled": self.load_stalled_udp,
        })
    }
}

pub(super) fn report(
    a: &ScrapeArgs,
    c: &Common,
    setup: &Setup,
    phases: &[PhaseRun],
    seqs: &[SeqRun; 3],
) -> Res<Outcome> {
    let stalls = setup.agents.stalls;
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
        "load agents stalled (UDP)",
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
                format!("{} ({})", s.load_stalled, s.load_stalled_udp),
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
         full socket queue), counted in the phase where they were due to start (seen − threshold); \
         (UDP): of them, UDP agents",
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
        a.per_agent_metrics_limit, setup.agents.uds_all, FAIL_LEGEND
    );
    let load_js = load_tables(a, setup, phases);

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
            "load": if a.scrape_uds_load { "uds" } else { "udp" },
            "agents": setup.agents,
            "ours_load_agents": setup.agents.ours_load(),
            "original_agents": setup.agents.uds_all,
            "ours_tracker_capacity": setup.ours_capacity,
            "ours_no_export_beats": !a.scrape_uds_load && !a.scrape_export_beats,
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
            "udp_load": load_js["udp_load"],
            "ours_tracker_mid_phase": load_js["ours_tracker_mid_phase"],
            "part1_cpu_cores": load_js["part1_cpu_cores"],
            "original_udp_probes": setup.probes,
            "phases": phases,
        }),
        goals,
    })
}

/// The tables of the load itself: our tracker while the phases ran, the
/// UDP load process, and the original's UDP probes.
fn load_tables(a: &ScrapeArgs, setup: &Setup, phases: &[PhaseRun]) -> serde_json::Value {
    println!(
        "\n### our tracker mid-phase (one scrape of ours per phase, while the flood ran) and \
         our detection loop\n"
    );
    let mut t = Table::new(&[
        "phase",
        "phases scraped",
        "pids tracked min–max",
        "alive min–max",
        "stalled min–max",
        "UDP datagrams dropped by the kernel",
        "loop iterations (> 10 ms, > 50 ms)",
        "loop busy",
    ]);
    let range = |v: &[f64]| {
        let s = Summary::of(v);
        format!("{}–{}", num(s.min, 0), num(s.max, 0))
    };
    let mut mid_js = Vec::new();
    for (label, ph) in PHASES {
        let runs: Vec<&PhaseRun> = phases.iter().filter(|p| p.phase == ph).collect();
        let got: Vec<&TrackerGauges> = runs
            .iter()
            .filter_map(|p| p.ours_tracker.as_ref())
            .collect();
        let col = |f: &dyn Fn(&TrackerGauges) -> f64| got.iter().map(|g| f(g)).collect::<Vec<_>>();
        let (tracked, alive, stalled) = (
            col(&|g| g.pids_tracked),
            col(&|g| g.alive),
            col(&|g| g.stalled),
        );
        let drops: Option<u64> = runs.iter().map(|p| p.ours_udp_dropped).sum();
        let loops: Option<Vec<LoopDelta>> = runs.iter().map(|p| p.ours_loop).collect();
        let secs: f64 = runs.iter().map(|p| p.secs).sum();
        let loop_sum = loops.as_ref().map(|l| {
            let f = |g: &dyn Fn(&LoopDelta) -> f64| l.iter().map(g).sum::<f64>();
            LoopDelta {
                iterations: f(&|d| d.iterations),
                busy_secs: f(&|d| d.busy_secs),
                over_10ms: f(&|d| d.over_10ms),
                over_50ms: f(&|d| d.over_50ms),
            }
        });
        t.row(vec![
            label.into(),
            format!("{} of {}", got.len(), runs.len()),
            range(&tracked),
            range(&alive),
            range(&stalled),
            drops.map_or("n/a".into(), |d| num(d as f64, 0)),
            loop_sum.map_or("n/a".into(), |d| {
                format!(
                    "{} ({}, {})",
                    num(d.iterations, 0),
                    num(d.over_10ms, 0),
                    num(d.over_50ms, 0)
                )
            }),
            loop_sum.map_or("n/a".into(), |d| {
                format!("{}%", num(100.0 * d.busy_secs / secs.max(1e-9), 1))
            }),
        ]);
        mid_js.push(json!({
            "phase": ph, "scraped": got.len(), "phases": runs.len(),
            "pids_tracked": Summary::of(&tracked), "alive": Summary::of(&alive),
            "stalled": Summary::of(&stalled), "udp_dropped": drops,
            "loop": loop_sum, "secs": secs,
        }));
    }
    t.print();
    println!(
        "\nvarta_watch_pids_tracked and varta_agents{{state=…}} of ours; ours tracks {} load \
         agents plus each phase's {} stalling agents (stalled ones stay tracked), capacity {}; \
         loop: varta_observer_iteration_seconds of ours read before and after each phase \
         (iterations, of them longer than 10 / 50 ms; busy = summed iteration time / phase time)",
        num(setup.agents.ours_load() as f64, 0),
        setup.agents.stalls,
        num(setup.ours_capacity as f64, 0)
    );
    let cores =
        |i: usize| setup.part1_cpu[i].map_or("n/a".into(), |c| format!("{}%", num(100.0 * c, 1)));
    println!(
        "\nCPU during part 1, % of one core: ours {}, the original {}, ours (small) {}, UDP load \
         process {}",
        cores(0),
        cores(1),
        cores(2),
        cores(3)
    );

    let mut udp_js = serde_json::Value::Null;
    if let Some(l) = &setup.load {
        println!("\n### the UDP load (one process, plaintext UDP to ours, loopback)\n");
        let mut t = Table::new(&[
            "agents",
            "beat every",
            "threads",
            "datagrams sent",
            "per second",
            "late ticks (> 50 ms)",
            "max lag ms",
            "CPU s (% of one core)",
        ]);
        let sent: u64 = l.sent.iter().sum();
        t.row(vec![
            num(setup.agents.udp as f64, 0),
            format!("{} ms", a.scrape_load_interval_ms),
            a.scrape_udp_threads.to_string(),
            num(sent as f64, 0),
            num(sent as f64 / l.secs.max(1e-9), 0),
            format!(
                "{} of {}",
                num(l.late_ticks as f64, 0),
                num(l.ticks as f64, 0)
            ),
            num(l.max_lag_ms, 1),
            format!(
                "{} ({}%)",
                num(l.cpu_secs, 1),
                num(100.0 * l.cpu_secs / l.secs.max(1e-9), 1)
            ),
        ]);
        t.print();
        udp_js = json!({
            "agents": setup.agents.udp, "first_pid": super::UDP_FIRST_PID,
            "threads": a.scrape_udp_threads, "stats": l,
            "sent_per_sec": sent as f64 / l.secs.max(1e-9),
        });
    }
    if !setup.probes.is_empty() {
        println!(
            "\n### the original fed over its own UDP listener (probe: a fresh original, alone, \
             before the run, nothing on its Unix socket)\n"
        );
        let mut t = Table::new(&[
            "--read-timeout-ms",
            "agents",
            "secs",
            "datagrams sent",
            "dropped by the kernel",
            "beats accepted",
            "pids tracked at the end",
        ]);
        for p in &setup.probes {
            t.row(vec![
                p.read_timeout_ms
                    .map_or("default (100)".into(), |v| v.to_string()),
                num(f64::from(p.agents), 0),
                num(p.secs, 1),
                num(p.sent as f64, 0),
                p.dropped.map_or("n/a".into(), |d| num(d as f64, 0)),
                num(p.beats_exported as f64, 0),
                num(p.pids_tracked, 0),
            ]);
        }
        t.print();
        println!(
            "\nbeats accepted = beat lines in its export; each agent beat every {} ms. The main \
             run therefore feeds the original its {} agents as sender processes on its Unix \
             socket",
            a.scrape_load_interval_ms,
            num(setup.agents.uds_all as f64, 0)
        );
    }
    json!({
        "udp_load": udp_js, "ours_tracker_mid_phase": mid_js,
        "part1_cpu_cores": {
            "ours": setup.part1_cpu[0], "original": setup.part1_cpu[1],
            "ours_small": setup.part1_cpu[2], "udp_load": setup.part1_cpu[3],
        },
    })
}

/// Phases in table order.
const PHASES: [(&str, Phase); 3] = [
    ("no flood", Phase::Quiet),
    ("ours' /metrics flooded", Phase::FloodOurs),
    ("the original's /metrics flooded", Phase::FloodOriginal),
];

/// One progress line per phase on stderr.
pub(super) fn progress(
    rep: usize,
    phase: Phase,
    flood: Option<&FloodStats>,
    t: Option<&TrackerGauges>,
) {
    let tracker = t.map_or("ours not scraped".into(), |t| {
        format!(
            "ours tracks {} ({} alive)",
            num(t.pids_tracked, 0),
            num(t.alive, 0)
        )
    });
    match flood {
        Some(f) => {
            let mut l = f.latency_ms.clone();
            l.sort_by(f64::total_cmp);
            eprintln!(
                "  rep {} {phase:?}: flood {} ok ({:.0}/s, p50 {:.1} ms), {} failed, slowloris {} \
                 opened; {tracker}",
                rep + 1,
                f.ok,
                f.ok as f64 / f.secs.max(1e-9),
                percentile(&l, 0.5),
                f.failed(),
                f.slow_opened
            );
        }
        None => eprintln!("  rep {} {phase:?}: done; {tracker}", rep + 1),
    }
}
