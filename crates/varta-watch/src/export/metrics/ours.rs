//! Families the original did not have.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::DescriptorEncoder;

use super::enc::{counter, counters_by, gauge, gauges_by, histogram, per_pid_gauge, Res};
use super::{lock, Shared, Snapshot};
use crate::events::{Event, RejectReason};
use crate::http::RefusalReason;

/// Every family of ours.
pub(super) fn encode(e: &mut DescriptorEncoder, s: &Shared, snap: &Snapshot) -> Res {
    let c = &s.counters;
    let o = &s.obs;
    let n = &snap.counts;

    gauges_by(
        e,
        "varta_agents",
        "Agents by state (given_up: recovery gave up on them; they also count as stalled or exited).",
        "state",
        [
            ("alive", n.alive),
            ("stalled", n.stalled),
            ("exited", n.exited),
            ("given_up", n.given_up),
        ],
    )?;
    per_pid_gauge(
        e,
        "varta_last_beat_timestamp_seconds",
        "Wall-clock time of the last accepted beat per agent pid, Unix seconds (alert on time() minus this).",
        &snap.agents,
        |a| a.last_beat_unix_s,
    )?;
    gauges_by(
        e,
        "varta_build_info",
        "Always 1; the version label names the running observer.",
        "version",
        [(env!("CARGO_PKG_VERSION"), 1u32)],
    )?;
    gauge(
        e,
        "varta_udp_sender_state_entries",
        "Secure-UDP senders (pids) holding replay state now.",
        c.udp_senders(),
    )?;
    gauge(
        e,
        "varta_udp_sender_state_capacity",
        "Most secure-UDP senders with replay state (--udp-sender-capacity; 0 without a secure UDP listener). New senders beyond it are refused while every entry is live.",
        s.udp_sender_capacity,
    )?;
    gauge(
        e,
        "varta_per_agent_metrics_limit",
        "Per-pid series are rendered for at most this many agents (--per-agent-metrics-limit).",
        s.per_agent_limit,
    )?;
    gauge(
        e,
        "varta_per_agent_metrics_omitted_agents",
        "Agents left out of this body's per-pid series by --per-agent-metrics-limit.",
        snap.overflow,
    )?;
    counter(
        e,
        "varta_per_agent_metrics_overflow",
        "Agents left out of per-pid series by --per-agent-metrics-limit, summed over rendered bodies.",
        s.overflow_total.load(Ordering::Relaxed),
    )?;
    counters_by(
        e,
        "varta_events",
        "Events raised by the observer, by kind.",
        "kind",
        Event::KINDS.iter().map(|k| (*k, c.kind(k))),
    )?;
    counters_by(
        e,
        "varta_rejected",
        "Well-formed datagrams not accepted as beats, by reason.",
        "reason",
        RejectReason::ALL
            .iter()
            .map(|r| (r.as_str(), c.rejected(*r))),
    )?;
    histogram(
        e,
        "varta_detection_overshoot_seconds",
        "How late each stall was raised: detection time minus (last beat + threshold).",
        &o.detection_overshoot,
    )?;
    histogram(
        e,
        "varta_ingest_batch_size",
        "Datagrams handed to the tracker per loop wake-up.",
        &o.ingest_batch,
    )?;
    let export = lock(&s.export).totals();
    counter(
        e,
        "varta_export_write_errors",
        "Failed write(2)/fdatasync calls on the event file.",
        export.write_errors,
    )?;
    counter(
        e,
        "varta_export_lines_dropped",
        "Event-file lines lost because writing them failed.",
        export.lines_dropped,
    )?;
    counter(
        e,
        "varta_audit_write_errors",
        "Failed write, sync or rotation attempts on the recovery audit log (each retry counts).",
        s.audit.write_errors(),
    )?;
    counter(
        e,
        "varta_audit_records_committed",
        "Recovery audit records written and fdatasynced.",
        s.audit.records_committed(),
    )?;
    let http = s.http.get();
    counters_by(
        e,
        "varta_http_refused",
        "HTTP requests or connections refused, by reason.",
        "reason",
        RefusalReason::ALL
            .iter()
            .map(|r| (r.as_str(), http.map_or(0, |h| h.refused(*r)))),
    )?;
    counter(
        e,
        "varta_http_scrapes",
        "Successful /metrics responses.",
        http.map_or(0, |h| h.scrapes.load(Ordering::Relaxed)),
    )?;
    let rec = |f: fn(&crate::recovery::RecoveryStats) -> u64| s.recovery.as_deref().map_or(0, f);
    counter(
        e,
        "varta_recovery_trigger_queue_dropped",
        "Recovery triggers dropped because the queue to the recovery thread was full.",
        rec(|r| r.triggers_dropped.load(Ordering::Relaxed)),
    )?;
    counter(
        e,
        "varta_recovery_report_queue_dropped",
        "Recovery reports dropped because the queue back to the detection loop was full.",
        rec(|r| r.reports_dropped.load(Ordering::Relaxed)),
    )?;
    gauge(
        e,
        "varta_recovery_children_running",
        "Recovery commands running now.",
        rec(|r| r.running.load(Ordering::Relaxed)),
    )
}
