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

mod identity;
mod udp;

use std::time::Duration;

use serde_json::json;

use super::{rotated, Table};
use crate::procs::{Binaries, Res};
use crate::stats::{num, percentile, Cmp, Goal, Summary};
use crate::{ChurnArgs, Common, Outcome};
use identity::*;
use udp::*;

/// First pid of the steady set; churn pids start at [`CHURN_BASE`].
pub(super) const STEADY_BASE: u32 = 2;
pub(super) const CHURN_BASE: u32 = 10_000_000;

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
