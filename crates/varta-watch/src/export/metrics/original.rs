//! The original 0.2.0's 58 families, in its order, with its names, types,
//! HELP texts and label values. Label values are mapped from our enums
//! where ours are spelled differently (see the crate README, "Metrics").

use std::fmt::Write as _;

use prometheus_client::encoding::DescriptorEncoder;
use varta_vlp::DecodeError;

use super::enc::{
    counter, counters_by, empty_histogram, gauge, histogram, histograms_by, per_pid_counter,
    per_pid_gauge, Res,
};
use super::{LogKind, Observations, Shared, Snapshot, Stage, SECONDS_BUCKETS};
use crate::events::{RecoveryOutcome, RefusedReason, RejectReason};
use crate::http::{Format, RefusalReason};

/// Families of the original that mean nothing in this design, as their
/// 0.0.4 names, with the reason. They are still emitted, with a constant,
/// so dashboards built for the original keep working.
pub const RETIRED: &[(&str, &str)] = &[
    ("varta_tracker_eviction_scan_truncated_total", "eviction is O(1) (per-state lists): no bounded scan that could run out; always 0"),
    ("varta_tracker_eviction_scan_window_max", "no scan window; reports the tracker capacity, i.e. ceil(capacity / window) = 1 call per frame, as the original's HELP defines it"),
    ("varta_recovery_invariant_violations_total", "the recovery table has no defensive fall-throughs; always 0"),
    ("varta_tracker_invariant_violations_total", "the tracker has no defensive fall-throughs (invariants are checked in tests); always 0"),
    ("varta_tracker_pid_index_probe_exhausted_total", "the pid index is a direct-mapped array plus a hash map, with no probe budget; always 0"),
    ("varta_recovery_outstanding_probe_exhausted_total", "running children are kept in a hash map, with no probe budget; always 0"),
    ("varta_recovery_reap_truncated_total", "each child is reaped through its own pidfd on the recovery thread, with no per-tick cap; always 0"),
    ("varta_recovery_audit_flush_budget_exceeded_total", "the audit log is written by its own thread, not flushed within a loop budget; always 0"),
    ("varta_audit_fsync_budget_exceeded_total", "no fsync budget: fdatasync runs on the audit writer thread and cannot delay detection; always 0"),
    ("varta_audit_rotation_budget_exceeded_total", "no rotation budget: rotation runs on the audit writer thread; always 0"),
    ("varta_audit_ring_watermark_total", "no audit ring: records wait in a bounded queue, whose overflow is varta_recovery_audit_dropped_total; both levels always 0"),
    ("varta_socket_bind_dir_fsync_failed_total", "the socket's directory is not fsynced: a socket node is recreated at every start, so its durability is moot; always 0"),
    ("varta_prom_ip_state_probe_exhausted_total", "the per-IP limiter is a bounded hash map, with no probe budget (a full table is varta_http_refused_total{reason=\"ip_table_full\"}); always 0"),
    ("varta_scrape_skipped_total", "every accepted scrape is rendered fresh; a rate-limited one gets 429 and counts in varta_http_refused_total{reason=\"rate_limited\"}; always 0"),
    ("varta_scrape_budget_exhausted_total", "scrapes are served on the HTTP thread, not within a loop budget; always 0"),
    ("varta_observer_iteration_budget_exceeded_total", "no soft iteration budget (--iteration-budget-ms is accepted and ignored); see varta_observer_iteration_seconds; always 0"),
    ("varta_observer_serve_pending_seconds", "scrapes are not served on the detection loop; always an empty histogram"),
    ("varta_observer_scrape_budget_exceeded_total", "no scrape budget (--scrape-budget-ms is accepted and ignored); always 0"),
    ("varta_signal_handler_install_total", "signals arrive through signal-hook into the event loop; there is no install mode; always {mode=\"direct\"} 1"),
];

/// Families whose meaning is the original's but whose original HELP says
/// something untrue here (a budget we do not have): HELP amended.
pub const AMENDED_HELP: &[&str] = &[
    "varta_audit_fsync_seconds",
    // The original force-evicted a sender; ours refuses the new one.
    "varta_sender_state_full_total",
];

/// `original` values present in `ours`, in the original's order, then ours
/// the original did not have.
fn ordered<'a>(original: &[&'a str], ours: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = original
        .iter()
        .copied()
        .filter(|o| ours.contains(o))
        .collect();
    v.extend(ours.iter().copied().filter(|o| !original.contains(o)));
    v
}

const DECODE_KINDS: [&str; 8] = [
    "bad_magic",
    "bad_version",
    "bad_status",
    "bad_pid",
    "bad_timestamp",
    "bad_nonce",
    "stall_on_wire",
    "bad_crc",
];

const OUTCOMES: [&str; 11] = [
    "spawned",
    "debounced",
    "reaped_zero",
    "reaped_nonzero",
    "killed",
    "spawn_failed",
    "refused_unauthenticated_transport",
    "refused_cross_namespace",
    "refused_debounce_capacity",
    "refused_outstanding_capacity",
    "refused_socket_mode_only",
];

/// The original's refusal reason for `socket_mode_only`: ours has no
/// `RefusedReason` for it (UDP agents are refused as
/// `unauthenticated_transport` without the listener's opt-in); its outcome
/// label is reserved.
const SOCKET_MODE_ONLY: (&str, &str) = ("socket_mode_only", "refused_socket_mode_only");

const REFUSED_ORDER: [&str; 5] = [
    "unauthenticated_transport",
    "cross_namespace_agent",
    "debounce_capacity",
    "outstanding_capacity",
    "socket_mode_only",
];

/// `varta_recovery_refused_total{reason}`: (original reason, our outcome label).
fn refused_pairs() -> Vec<(&'static str, &'static str)> {
    let mut ours: Vec<(&str, &str)> = RefusedReason::ALL
        .iter()
        .map(|r| (r.as_str(), RecoveryOutcome::Refused(*r).as_str()))
        .collect();
    ours.push(SOCKET_MODE_ONLY);
    let names: Vec<&str> = ours.iter().map(|p| p.0).collect();
    ordered(&REFUSED_ORDER, &names)
        .into_iter()
        .filter_map(|n| ours.iter().copied().find(|p| p.0 == n))
        .collect()
}

/// `varta_prom_connections_dropped_total{reason}`: the original's reasons
/// from our HTTP refusals (`drain`: accepted and closed at once because of
/// the connection cap).
const DROPPED: [(&str, RefusalReason); 3] = [
    ("drain", RefusalReason::ConnectionLimit),
    ("rate_limit", RefusalReason::RateLimited),
    ("ip_table_full", RefusalReason::IpTableFull),
];

const RETIRED_PREFIX: &str = "Retired in varta-watch 0.3";

/// HELP of a retired family: says so, and why.
fn retired_help(name_004: &str) -> String {
    let reason = RETIRED
        .iter()
        .find(|(n, _)| *n == name_004)
        .map_or("", |(_, r)| r);
    format!("{RETIRED_PREFIX}: {reason}.")
}

/// Every family of the original. `varta_recovery_duration_ns_sum` only for
/// OpenMetrics (0.0.4: [`encode_duration_sum_004`]).
pub(super) fn encode(
    e: &mut DescriptorEncoder,
    s: &Shared,
    snap: &Snapshot,
    format: Format,
) -> Res {
    let c = &s.counters;
    let o: &Observations = &s.obs;
    let agents = &snap.agents;
    let http = s.http.get();
    let refused = |r: RefusalReason| http.map_or(0, |h| h.refused(r));
    let load = Observations::load;

    per_pid_counter(
        e,
        "varta_beats",
        "Total accepted beats per agent pid.",
        agents,
        |a| a.beats,
    )?;
    per_pid_counter(
        e,
        "varta_stalls",
        "Total observer-detected stalls per agent pid.",
        agents,
        |a| a.stalls,
    )?;
    per_pid_gauge(
        e,
        "varta_status",
        "Last reported status code per agent pid (0=ok,1=degraded,2=critical,3=stall).",
        agents,
        |a| u32::from(a.status),
    )?;
    counter(
        e,
        "varta_tracker_evicted",
        "Total tracker slots reclaimed from dead agents.",
        c.kind("eviction"),
    )?;
    counter(
        e,
        "varta_frame_auth_failures",
        "Frames rejected due to PID spoofing or authentication failure.",
        c.kind("auth_failure"),
    )?;
    let kinds = ordered(&DECODE_KINDS, &DecodeError::KINDS);
    counters_by(
        e,
        "varta_decode_errors",
        "Total VLP decode failures by kind.",
        "kind",
        kinds.iter().map(|k| (*k, c.decode(k))),
    )?;
    counter(
        e,
        "varta_io_errors",
        "Total socket receive errors.",
        c.kind("io"),
    )?;
    counter(
        e,
        "varta_ctrl_truncated",
        "Total ancillary-data truncation events (MSG_CTRUNC on Linux).",
        c.kind("ctrunc"),
    )?;
    counter(
        e,
        "varta_tracker_capacity_exceeded",
        "Total beats dropped because tracker is full.",
        c.kind("capacity_exceeded"),
    )?;
    counter(
        e,
        "varta_tracker_eviction_scan_truncated",
        &retired_help("varta_tracker_eviction_scan_truncated_total"),
        0,
    )?;
    gauge(
        e,
        "varta_tracker_capacity",
        "Configured tracker capacity (max distinct agent pids).",
        s.tracker_capacity,
    )?;
    gauge(
        e,
        "varta_tracker_eviction_scan_window_max",
        &retired_help("varta_tracker_eviction_scan_window_max"),
        s.tracker_capacity,
    )?;
    let outcomes = ordered(&OUTCOMES, &RecoveryOutcome::LABELS);
    counters_by(
        e,
        "varta_recovery_outcomes",
        "Total recovery outcomes by kind.",
        "outcome",
        outcomes.iter().map(|l| (*l, c.recovery(l))),
    )?;
    if format == Format::OpenMetrics {
        counter(
            e,
            "varta_recovery_duration_ns_sum",
            DURATION_SUM_HELP,
            load(&o.recovery_duration_sum_ns),
        )?;
    }
    counter(
        e,
        "varta_recovery_duration_count",
        "Number of recovery completions contributing to varta_recovery_duration_ns_sum.",
        load(&o.recovery_duration_count),
    )?;
    counters_by(
        e,
        "varta_recovery_refused",
        "Recovery commands NOT spawned because of a structural safety gate, by reason.",
        "reason",
        refused_pairs().into_iter().map(|(r, l)| (r, c.recovery(l))),
    )?;
    counter(e, "varta_recovery_last_fired_evictions", "LastFiredTable entries dropped (debounce-respecting) to make room for a new pid at table capacity.", load(&o.recovery_table_reclaims))?;
    counter(
        e,
        "varta_recovery_invariant_violations",
        &retired_help("varta_recovery_invariant_violations_total"),
        0,
    )?;
    counters_by(
        e,
        "varta_log_suppressed",
        "Log messages suppressed by the per-kind cooldown rate limiter.",
        "kind",
        LogKind::ALL
            .iter()
            .map(|k| (k.as_str(), load(&o.log_suppressed[*k as usize]))),
    )?;
    counter(e, "varta_origin_conflict", "Beats dropped because the slot's pinned transport origin disagreed with the beat's origin.", c.kind("origin_conflict"))?;
    counter(e, "varta_frame_namespace_mismatch", "Frames dropped at receive because the peer's PID-namespace inode differs from the observer's.", c.rejected(RejectReason::CrossNamespace))?;
    counter(
        e,
        "varta_frame_rejected_pid_above_max",
        "Frames dropped at receive because frame.pid exceeded the kernel's configured pid_max.",
        c.rejected(RejectReason::PidAboveMax),
    )?;
    gauge(
        e,
        "varta_pid_max_current",
        "Observer's cached /proc/sys/kernel/pid_max (refreshed every 60s).",
        snap.pid_max,
    )?;
    counter(e, "varta_tracker_namespace_conflict", "Beats dropped because the slot's pinned PID-namespace inode disagreed with the beat's (first-namespace-wins).", c.kind("namespace_conflict"))?;
    counter(
        e,
        "varta_tracker_invariant_violations",
        &retired_help("varta_tracker_invariant_violations_total"),
        0,
    )?;
    counter(
        e,
        "varta_tracker_pid_index_probe_exhausted",
        &retired_help("varta_tracker_pid_index_probe_exhausted_total"),
        0,
    )?;
    counter(
        e,
        "varta_recovery_outstanding_probe_exhausted",
        &retired_help("varta_recovery_outstanding_probe_exhausted_total"),
        0,
    )?;
    counter(
        e,
        "varta_recovery_reap_truncated",
        &retired_help("varta_recovery_reap_truncated_total"),
        0,
    )?;
    counter(
        e,
        "varta_recovery_audit_dropped",
        "Audit lines dropped because the ring was full when they arrived.",
        s.audit.dropped_queue_full(),
    )?;
    counter(
        e,
        "varta_recovery_audit_flush_budget_exceeded",
        &retired_help("varta_recovery_audit_flush_budget_exceeded_total"),
        0,
    )?;
    histogram(e, "varta_audit_fsync_seconds", "Wall time per fdatasync(2) on the recovery audit log (on the audit writer thread; no budget).", &o.audit_fsync)?;
    counter(
        e,
        "varta_socket_bind_dir_fsync_failed",
        &retired_help("varta_socket_bind_dir_fsync_failed_total"),
        0,
    )?;
    counter(
        e,
        "varta_audit_fsync_budget_exceeded",
        &retired_help("varta_audit_fsync_budget_exceeded_total"),
        0,
    )?;
    counter(
        e,
        "varta_audit_rotation_budget_exceeded",
        &retired_help("varta_audit_rotation_budget_exceeded_total"),
        0,
    )?;
    counters_by(
        e,
        "varta_audit_ring_watermark",
        &retired_help("varta_audit_ring_watermark_total"),
        "level",
        [("warn", 0), ("critical", 0)],
    )?;
    counter(
        e,
        "varta_prom_ip_state_probe_exhausted",
        &retired_help("varta_prom_ip_state_probe_exhausted_total"),
        0,
    )?;
    counter(
        e,
        "varta_frame_decrypt_failures",
        "Total AEAD decryption/tag-verification failures.",
        c.kind("decrypt_failure"),
    )?;
    counter(
        e,
        "varta_truncated_datagrams",
        "Total datagrams received with wrong size.",
        c.kind("truncated"),
    )?;
    counter(
        e,
        "varta_sender_state_full",
        "Total new secure-UDP senders refused because the replay table was full of live senders (a live entry is never evicted).",
        c.kind("sender_state_full"),
    )?;
    counter(e, "varta_secure_aead_attempts", "Total ChaCha20-Poly1305 decryption attempts across the loaded key set. The listener trials every loaded key (and the master-key derivation, if configured) on every frame, removing the linear-in-key-index timing side-channel. In steady state this equals frames_received * (keys.len() + master_key_configured as u64).", c.aead_attempts())?;
    counters_by(
        e,
        "varta_rate_limited",
        "Frames dropped due to rate limiting.",
        "reason",
        [
            ("per_pid", c.rejected(RejectReason::RateLimitedPid)),
            ("global", c.rejected(RejectReason::RateLimitedGlobal)),
        ],
    )?;
    gauge(
        e,
        "varta_observer_uds_rcvbuf_bytes",
        "Effective SO_RCVBUF size on the observer UDS, in bytes.",
        s.granted_rcvbuf,
    )?;
    counter(e, "varta_observer_clock_regression", "Times the observer monotonic clock returned a value strictly less than the previously observed one and the forward clamp absorbed the regression. Non-zero values indicate TSC drift, VM live migration, or another clock anomaly.", c.kind("clock_regression"))?;
    counter(e, "varta_observer_clock_jump_forward", "Times the observer monotonic clock advanced by more than 5 s between adjacent poll ticks. Non-zero values indicate sleep/wake on monotonic-raw/boottime, VM live migration, or a hypervisor pause.", c.kind("clock_jump"))?;
    counter(
        e,
        "varta_scrape_skipped",
        &retired_help("varta_scrape_skipped_total"),
        0,
    )?;
    counter(
        e,
        "varta_scrape_budget_exhausted",
        &retired_help("varta_scrape_budget_exhausted_total"),
        0,
    )?;
    histogram(
        e,
        "varta_observer_iteration_seconds",
        "Observer poll-loop iteration wall time (excludes idle sleep and test-hooks wedge).",
        &o.loop_iteration,
    )?;
    counter(
        e,
        "varta_observer_iteration_budget_exceeded",
        &retired_help("varta_observer_iteration_budget_exceeded_total"),
        0,
    )?;
    empty_histogram(
        e,
        "varta_observer_serve_pending_seconds",
        &retired_help("varta_observer_serve_pending_seconds"),
        &SECONDS_BUCKETS,
    )?;
    counter(
        e,
        "varta_observer_scrape_budget_exceeded",
        &retired_help("varta_observer_scrape_budget_exceeded_total"),
        0,
    )?;
    histograms_by(
        e,
        "varta_observer_stage_seconds",
        "Per-stage observer poll-loop wall time for latency attribution.",
        "stage",
        Stage::ALL.iter().map(|st| (st.as_str(), o.stage(*st))),
    )?;
    counter(
        e,
        "varta_prom_auth_failures",
        "Number of /metrics scrapes rejected because the bearer token was missing or wrong.",
        refused(RefusalReason::Unauthorized),
    )?;
    counters_by(
        e,
        "varta_prom_connections_dropped",
        "Connections accepted on /metrics but closed before serving, by reason.",
        "reason",
        DROPPED.iter().map(|(l, r)| (*l, refused(*r))),
    )?;
    counter(
        e,
        "varta_nonce_wrap",
        "Total nonce-space wrap events detected (agent exhausted u64 nonces).",
        c.kind("nonce_wrap"),
    )?;
    counters_by(
        e,
        "varta_signal_handler_install",
        &retired_help("varta_signal_handler_install_total"),
        "mode",
        [("direct", 1)],
    )?;
    gauge(
        e,
        "varta_watch_uptime_seconds",
        "Observer process uptime in seconds.",
        s.started.elapsed().as_secs_f64(),
    )?;
    gauge(
        e,
        "varta_watch_last_poll_loop_timestamp_seconds",
        "Unix timestamp of the most recent poll loop iteration.",
        snap.last_loop_unix_s,
    )?;
    gauge(
        e,
        "varta_watch_pids_tracked",
        "Current number of agent PIDs in the tracker.",
        snap.counts.tracked(),
    )
}

const DURATION_SUM_HELP: &str = "Sum of recovery child wall-clock durations in ns.";

/// `varta_recovery_duration_ns_sum` in 0.0.4 exactly as the original wrote
/// it: a counter without `_total`, which the library cannot produce.
pub(super) fn encode_duration_sum_004(out: &mut String, s: &Shared) -> Res {
    let v = Observations::load(&s.obs.recovery_duration_sum_ns);
    write!(
        out,
        "# HELP varta_recovery_duration_ns_sum {DURATION_SUM_HELP}\n\
         # TYPE varta_recovery_duration_ns_sum counter\n\
         varta_recovery_duration_ns_sum {v}\n"
    )
}
