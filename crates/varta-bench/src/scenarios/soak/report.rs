//! soak, the report: tables, goal lines and the JSON of one run.

use serde_json::json;

use super::verify::{mismatch, rss_growth};
use super::{Run, ScrapeSample};
use crate::scenarios::Table;
use crate::stats::{num, percentile, Cmp, Goal};
use crate::Outcome;

/// Accepted beats/s between the first scrape at or after `from` and the
/// last one before `to` (the observer's `varta_events_total{kind="beat"}`).
pub(super) fn accepted_rate(scrapes: &[ScrapeSample], from: f64, to: f64) -> Option<f64> {
    let ok: Vec<(f64, u64)> = scrapes
        .iter()
        .filter(|s| s.t >= from && s.t < to)
        .filter_map(|s| Some((s.t, s.beats?)))
        .collect();
    let (&(t0, b0), &(t1, b1)) = (ok.first()?, ok.last()?);
    (t1 > t0).then(|| b1.saturating_sub(b0) as f64 / (t1 - t0))
}

/// Median RSS (MiB) of each whole minute (each 10 s in short runs).
fn rss_timeline(r: &Run) -> Vec<(u64, f64)> {
    let step = if r.cfg.duration_secs >= 300.0 { 60 } else { 10 };
    let mut out = Vec::new();
    let mut from = 0;
    while (from + step) as f64 <= r.cfg.duration_secs + 0.5 {
        let mut v: Vec<f64> = r
            .procs
            .iter()
            .filter(|p| p.t >= from as f64 && p.t < (from + step) as f64)
            .map(|p| p.rss_kib as f64 / 1024.0)
            .collect();
        v.sort_by(f64::total_cmp);
        if !v.is_empty() {
            out.push((from + step, percentile(&v, 0.5)));
        }
        from += step;
    }
    out
}

pub(super) fn report(r: &Run) -> Outcome {
    let c = &r.cfg;
    let end = c.duration_secs;
    // Load.
    let scheduled = c.agents as f64 * c.hz;
    let sent: u64 = r.senders.iter().map(|s| s.sent).sum();
    let send_errors: u64 = r.senders.iter().map(|s| s.errors).sum();
    let abandoned: u64 = r.senders.iter().map(|s| s.abandoned).sum();
    let accepted = accepted_rate(&r.scrapes, c.warmup_secs, end).unwrap_or(f64::NAN);
    let accepted_all = accepted_rate(&r.scrapes, 0.0, end).unwrap_or(f64::NAN);
    let share = accepted / c.max_ingest;
    let first = r.procs.iter().find(|p| p.t >= c.warmup_secs);
    let last = r.procs.last();
    let (cpu, drops_total) = match (first, last, r.procs.first()) {
        (Some(a), Some(b), Some(z)) if b.t > a.t => (
            (b.cpu_ticks - a.cpu_ticks) as f64 / r.clk_tck / (b.t - a.t),
            b.udp_drops - z.udp_drops,
        ),
        _ => (f64::NAN, 0),
    };
    let gap = r.senders.iter().map(|s| s.max_gap_ms).fold(0.0, f64::max);
    let sender_cores: f64 = r.senders.iter().map(|s| s.cpu_cores).sum();
    println!("### load\n");
    let mut t = Table::new(&[
        "agents × Hz",
        "beats scheduled/s",
        "deaths/s",
        "silenced",
        "threshold ms",
        "tracker capacity",
        "datagrams sent (errors, given up)",
        "beats accepted/s after warm-up (whole run)",
        "share of the measured max ingest",
        "rcvbuf drops",
        "observer CPU after warm-up (cores)",
        "sender CPU (cores), worst pacing gap ms",
    ]);
    t.row(vec![
        format!("{} × {}", num(c.agents as f64, 0), c.hz),
        num(scheduled, 0),
        num(c.deaths_per_sec, 0),
        num(r.stalls.expected as f64, 0),
        num(c.threshold_ms as f64, 0),
        num(f64::from(c.capacity), 0),
        format!("{} ({send_errors}, {abandoned})", num(sent as f64, 0)),
        format!("{} ({})", num(accepted, 0), num(accepted_all, 0)),
        format!("{:.3} of {}", share, num(c.max_ingest, 0)),
        num(drops_total as f64, 0),
        num(cpu, 2),
        format!("{}, {}", num(sender_cores, 2), num(gap, 1)),
    ]);
    t.print();

    // RSS.
    let growth = rss_growth(
        &r.procs.iter().map(|p| (p.t, p.rss_kib)).collect::<Vec<_>>(),
        c.warmup_secs,
        c.window_secs,
        end,
    );
    let rss_max = r.procs.iter().map(|p| p.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let timeline = rss_timeline(r);
    println!(
        "\n### RSS (VmRSS every second; warm-up {} s, windows {} s)\n",
        c.warmup_secs, c.window_secs
    );
    let mut t = Table::new(&[
        "at start MiB",
        "first window after warm-up, median MiB",
        "last window, median MiB",
        "growth",
        "max MiB",
    ]);
    t.row(vec![
        num(
            r.procs
                .first()
                .map_or(f64::NAN, |p| p.rss_kib as f64 / 1024.0),
            1,
        ),
        num(growth.map_or(f64::NAN, |g| g.first_kib / 1024.0), 2),
        num(growth.map_or(f64::NAN, |g| g.last_kib / 1024.0), 2),
        format!("{} %", num(growth.map_or(f64::NAN, |g| g.pct), 2)),
        num(rss_max, 2),
    ]);
    t.print();
    println!(
        "\nmedian RSS per {}: {}",
        if end >= 300.0 { "minute" } else { "10 s" },
        timeline
            .iter()
            .map(|(s, m)| format!("{s} s {m:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Deaths and stalls.
    let d = &r.deaths;
    let s = &r.stalls;
    let death_faults = d.missing + d.duplicates + d.unexpected;
    let false_stalls = s.unexpected + s.duplicates;
    println!(
        "\n### deaths and stalls (export file; settled {:.1} s after the load stopped)\n",
        r.settle_secs
    );
    let mut t = Table::new(&[
        "",
        "sent",
        "with a line",
        "missing",
        "duplicate lines",
        "lines for other pids",
    ]);
    t.row(vec![
        "deaths (terminal frame) → exit".into(),
        num(d.expected as f64, 0),
        num(d.seen as f64, 0),
        num(d.missing as f64, 0),
        num(d.duplicates as f64, 0),
        num(d.unexpected as f64, 0),
    ]);
    t.row(vec![
        "silenced (no terminal frame) → stall".into(),
        num(s.expected as f64, 0),
        num(s.seen as f64, 0),
        num(s.missing as f64, 0),
        num(s.duplicates as f64, 0),
        format!("{} (false stalls)", num(s.unexpected as f64, 0)),
    ]);
    t.print();

    // Export vs counters.
    let diff = mismatch(&r.rows);
    println!(
        "\n### export lines vs the observer's counters (final scrape; TSV, --no-export-beats; {} lines, {:.1} MiB, {} malformed)\n",
        num(r.export.lines as f64, 0),
        r.export_bytes as f64 / (1 << 20) as f64,
        r.export.malformed
    );
    let mut t = Table::new(&[
        "TSV kind",
        "lines in the file",
        "varta_events_total of its kinds",
        "difference",
    ]);
    for row in &r.rows {
        t.row(vec![
            row.kind.clone(),
            num(row.file_lines as f64, 0),
            num(row.counted_events as f64, 0),
            num(row.file_lines as f64 - row.counted_events as f64, 0),
        ]);
    }
    let total_file: u64 = r.rows.iter().map(|x| x.file_lines).sum();
    let total_cnt: u64 = r.rows.iter().map(|x| x.counted_events).sum();
    t.row(vec![
        "all".into(),
        num(total_file as f64, 0),
        num(total_cnt as f64, 0),
        num(total_file as f64 - total_cnt as f64, 0),
    ]);
    t.print();
    let not_written: Vec<String> = r
        .final_events
        .iter()
        .filter(|(k, &n)| n > 0 && super::verify::tsv_kind(k).is_none())
        .map(|(k, n)| format!("{k} {}", num(*n as f64, 0)))
        .collect();
    println!(
        "\nvarta_export_lines_dropped_total {}, varta_export_write_errors_total {}; counted but not written to the TSV by design: {}; beats sent {} vs accepted (varta_events_total{{kind=\"beat\"}}) {}",
        r.lines_dropped.map_or("absent".into(), |v| num(v, 0)),
        r.write_errors.map_or("absent".into(), |v| num(v, 0)),
        not_written.join(", "),
        num((sent - d.expected as u64) as f64, 0),
        num(r.final_events.get("beat").copied().unwrap_or(0) as f64, 0),
    );

    // Scrapes.
    let mut lat: Vec<f64> = r.scrapes.iter().filter_map(|s| s.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let failed: Vec<&ScrapeSample> = r
        .scrapes
        .iter()
        .filter(|s| s.latency_ms.is_none())
        .collect();
    let body = r
        .scrapes
        .iter()
        .rev()
        .find(|s| s.body_bytes > 0)
        .map_or(0, |s| s.body_bytes);
    println!("\n### /metrics, one GET a second\n");
    let mut t = Table::new(&[
        "scrapes", "failed", "p50 ms", "p99 ms", "max ms", "body KiB",
    ]);
    t.row(vec![
        num(r.scrapes.len() as f64, 0),
        if failed.is_empty() {
            "0".into()
        } else {
            format!(
                "{} ({})",
                failed.len(),
                failed
                    .iter()
                    .map(|s| format!("{:.0} s {}", s.t, s.fail.clone().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        num(percentile(&lat, 0.5), 2),
        num(percentile(&lat, 0.99), 2),
        num(lat.last().copied().unwrap_or(f64::NAN), 2),
        num(body as f64 / 1024.0, 0),
    ]);
    t.print();

    let goals = vec![
        Goal::new(
            &format!("soak load: accepted beats/s after warm-up as a share of the measured max ingest ({}/s)", num(c.max_ingest, 0)),
            share,
            Cmp::AtLeast,
            0.5,
            "",
        ),
        Goal::new(
            "soak RSS growth after warm-up (first vs last window, medians)",
            growth.map_or(f64::NAN, |g| g.pct),
            Cmp::AtMost,
            5.0,
            " %",
        ),
        Goal::new("soak false stalls", false_stalls as f64, Cmp::AtMost, 0.0, ""),
        Goal::new("soak silenced agents without their one stall", s.missing as f64, Cmp::AtMost, 0.0, ""),
        Goal::new("soak deaths without exactly one exit line", death_faults as f64, Cmp::AtMost, 0.0, ""),
        Goal::new(
            "soak export lines vs event counters, sum of |difference| over kinds",
            diff as f64 + r.lines_dropped.unwrap_or(f64::NAN),
            Cmp::AtMost,
            0.0,
            "",
        ),
        Goal::new("soak /metrics scrapes failed", failed.len() as f64, Cmp::AtMost, 0.0, ""),
    ];
    Outcome {
        scenario: "soak",
        results: json!({
            "config": c,
            "started_utc": r.started_utc,
            "beats_scheduled_per_sec": scheduled,
            "datagrams_sent": sent, "send_errors": send_errors, "abandoned": abandoned,
            "accepted_per_sec_after_warmup": accepted, "accepted_per_sec_whole_run": accepted_all,
            "share_of_max_ingest": share,
            "rcvbuf_drops": drops_total,
            "observer_cpu_cores_after_warmup": cpu,
            "senders": r.senders,
            "rss_growth": growth, "rss_max_mib": rss_max, "rss_median_mib_timeline": timeline,
            "deaths": r.deaths, "stalls": r.stalls, "false_stalls": false_stalls,
            "export": { "lines": r.export.lines, "bytes": r.export_bytes, "malformed": r.export.malformed, "by_kind": r.export.by_kind },
            "final_events_total": r.final_events,
            "export_vs_counters": r.rows, "export_mismatch": diff,
            "export_lines_dropped": r.lines_dropped, "export_write_errors": r.write_errors,
            "settle_secs": r.settle_secs,
            "scrapes": { "count": r.scrapes.len(), "failed": failed.len(), "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99), "max_ms": lat.last(), "body_bytes": body },
            "proc_samples": r.procs,
            "scrape_samples": r.scrapes,
        }),
        goals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, beats: Option<u64>) -> ScrapeSample {
        ScrapeSample {
            t,
            latency_ms: beats.map(|_| 1.0),
            fail: None,
            body_bytes: 0,
            beats,
            stalls: None,
            exits: None,
        }
    }

    #[test]
    fn accepted_rate_uses_the_scrapes_inside_the_span() {
        let v = vec![
            s(1.0, Some(0)),
            s(2.0, Some(100)),
            s(3.0, None),
            s(4.0, Some(400)),
            s(5.0, Some(1000)),
        ];
        assert_eq!(accepted_rate(&v, 2.0, 5.0), Some(150.0));
        assert_eq!(accepted_rate(&v, 0.0, 10.0), Some(250.0));
        assert_eq!(accepted_rate(&v, 4.5, 4.9), None);
    }
}
