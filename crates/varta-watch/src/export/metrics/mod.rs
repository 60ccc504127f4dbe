//! The `/metrics` body, in the Prometheus text format 0.0.4 or OpenMetrics
//! 1.0, rendered with `prometheus-client` (choice:
//! `docs/design/metrics-exposition.md`).
//!
//! One [`Registry`] is built at start and never changes. It holds a single
//! custom `Collector` that, on every render, encodes
//! - every family of the original 0.2.0, with its name, type, HELP and label
//!   values (the 0.0.4 `# TYPE` lines name families exactly as the original
//!   does, e.g. `varta_beats_total counter`); families that mean nothing in
//!   this design are emitted with a constant (see the table under
//!   "Metrics" in the crate README and [`RETIRED`]);
//! - ours: `varta_agents{state}`, `varta_last_beat_timestamp_seconds{pid}`,
//!   `varta_build_info{version}`, histograms, write errors, HTTP refusals…,
//!   and the per-name families ([`by_name`]: `varta_agents_by_name`,
//!   `varta_agent_restarts_total`, `varta_agent_stalls_total`,
//!   `varta_required_agents`).
//!
//! Per-pid series carry `pid` first (the original's only label, so its
//! queries keep matching), then `name` — always: `unknown` while the
//! identity is being resolved or could not be — then `unit` and `container`
//! only when known. Label values are escaped by the encoder (`\`, `"`,
//! newline), so names chosen by watched processes cannot break the body.
//!
//! Values come from atomics bumped where things happen ([`Counters`],
//! [`AuditCounters`], [`RecoveryStats`], [`HttpCounters`],
//! [`FileExportCounters`], [`Observations`]) and, for the per-pid families
//! and agent counts, from a [`Snapshot`] the detection loop publishes. A
//! render never mutates the registry and never takes a lock the loop holds
//! for more than a histogram observation.
//!
//! Every label value of a fixed set (decode kinds, reject and rate-limit
//! reasons, recovery outcomes and refusal reasons, HTTP refusal reasons,
//! agent states, …) is present at zero from the first render.
//!
//! Quirk kept on purpose: the original's `varta_recovery_duration_ns_sum` is
//! a counter without `_total`. `prometheus-client` always appends the suffix
//! in 0.0.4, so for 0.0.4 the family is written by hand after the library's
//! output (promtool's three lint warnings about that name are the
//! original's own). In OpenMetrics it goes through the library
//! (`# TYPE varta_recovery_duration_ns_sum counter`, sample
//! `varta_recovery_duration_ns_sum_total`).

mod alerts;
pub mod by_name;
mod control;
mod enc;
pub mod endpoint;
mod identity;
mod original;
mod ours;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::audit::AuditCounters;
use crate::export::counters::Counters;
use crate::export::file::{FileExportCounters, FileExportStats};
use crate::http::{Format, HttpCounters};
use crate::recovery::RecoveryStats;

pub use by_name::{ByNameShared, ByNameSink, NameStats};
pub use original::{AMENDED_HELP, RETIRED};

/// The `name` label of an agent whose identity is not known (yet).
pub const UNKNOWN_NAME: &str = "unknown";

/// Buckets (seconds) of the original's loop and audit-fsync histograms,
/// preceded by finer ones (our iterations take microseconds). A superset of
/// the original's `le` values, so queries written for it keep working.
pub const SECONDS_BUCKETS: [f64; 12] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets (seconds) of `varta_detection_overshoot_seconds`.
pub const OVERSHOOT_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A stage of one loop iteration (`varta_observer_stage_seconds{stage}`),
/// with the original's label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Receiving a batch of datagrams and handing it to the tracker.
    DrainPending,
    /// Waiting in `epoll_wait`.
    Poll,
    /// Stall expiry (`Tracker::expire`).
    Maintenance,
    /// Reaping recovery children: on the recovery thread in this design,
    /// so it stays at zero.
    RecoveryReap,
    /// Serving `/metrics`: on the HTTP thread in this design, so it stays
    /// at zero.
    ServePending,
    /// Everything else: sink flushes, reload, recovery reports, watchdog.
    Housekeeping,
}

impl Stage {
    /// Every stage, in the original's order.
    pub const ALL: [Stage; 6] = [
        Stage::DrainPending,
        Stage::Poll,
        Stage::Maintenance,
        Stage::RecoveryReap,
        Stage::ServePending,
        Stage::Housekeeping,
    ];

    /// The original's label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::DrainPending => "drain_pending",
            Stage::Poll => "poll",
            Stage::Maintenance => "maintenance",
            Stage::RecoveryReap => "recovery_reap",
            Stage::ServePending => "serve_pending",
            Stage::Housekeeping => "housekeeping",
        }
    }
}

/// A log line kind of the original's `varta_log_suppressed_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Event-file write failures (`export/file.rs` warning limiter).
    FileExportIo,
    /// Audit-log write failures (audit writer thread).
    AuditIo,
    /// HTTP server errors.
    PromServe,
    /// `--heartbeat-file` write failures.
    HeartbeatIo,
    /// Audit ring at 75 %: no ring in this design, stays at zero.
    AuditRingWarn,
    /// Audit ring at 95 %: no ring in this design, stays at zero.
    AuditRingCritical,
}

impl LogKind {
    /// Every kind, in the original's order.
    pub const ALL: [LogKind; 6] = [
        LogKind::FileExportIo,
        LogKind::AuditIo,
        LogKind::PromServe,
        LogKind::HeartbeatIo,
        LogKind::AuditRingWarn,
        LogKind::AuditRingCritical,
    ];

    /// The original's label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogKind::FileExportIo => "file_export_io",
            LogKind::AuditIo => "audit_io",
            LogKind::PromServe => "prom_serve",
            LogKind::HeartbeatIo => "heartbeat_io",
            LogKind::AuditRingWarn => "audit_ring_warn",
            LogKind::AuditRingCritical => "audit_ring_critical",
        }
    }
}

/// Measurements taken where things happen that have no counter of their
/// own elsewhere. Shared (`Arc`) between the threads that record and the
/// renderer; every handle is lock-free except the histograms, whose
/// `observe` takes a short uncontended mutex (the renderer holds it only
/// while copying ~15 buckets).
#[derive(Debug)]
pub struct Observations {
    /// `varta_observer_iteration_seconds`: the loop, once per iteration,
    /// the wall time from wake-up to the end of its work (the `epoll_wait`
    /// excluded), like the original.
    pub loop_iteration: Histogram,
    /// `varta_observer_stage_seconds{stage}`, indexed by [`Stage`] (use
    /// [`Observations::stage`]): the loop, once per stage per iteration.
    pub stages: [Histogram; 6],
    /// `varta_ingest_batch_size`: the loop, once per wake-up that received
    /// datagrams, the number handed to the tracker (1..=4096).
    pub ingest_batch: Histogram,
    /// `varta_detection_overshoot_seconds`: the loop, once per `stall`
    /// event, how late it was raised: detection time minus (last beat +
    /// threshold), in seconds.
    pub detection_overshoot: Histogram,
    /// `varta_audit_fsync_seconds`: the audit writer thread, around each
    /// `fdatasync` (`audit/writer.rs`).
    pub audit_fsync: Histogram,
    recovery_duration_sum_ns: AtomicU64,
    recovery_duration_count: AtomicU64,
    recovery_table_reclaims: AtomicU64,
    log_suppressed: [AtomicU64; 6],
    /// `varta_alertmanager_*`: the push's counters, set once at start when
    /// `--alertmanager-url` is given.
    pub alerts: OnceLock<Arc<crate::alert::AlertStats>>,
    /// `varta_control_*`: the control API's counters, set once at start
    /// when `--control-socket` is on.
    pub control: OnceLock<Arc<crate::control::ControlStats>>,
    /// `varta_identity_lookups_total`: the policy engine's identity
    /// resolution counters, set once at start.
    pub identity: OnceLock<Arc<crate::policy::PolicyStats>>,
}

impl Default for Observations {
    fn default() -> Self {
        Observations::new()
    }
}

impl Observations {
    /// Empty histograms with [`SECONDS_BUCKETS`], [`OVERSHOOT_BUCKETS`] and
    /// powers of two up to 4096 for the batch size.
    pub fn new() -> Observations {
        let secs = || Histogram::new(SECONDS_BUCKETS);
        Observations {
            loop_iteration: secs(),
            stages: std::array::from_fn(|_| secs()),
            ingest_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            detection_overshoot: Histogram::new(OVERSHOOT_BUCKETS),
            audit_fsync: secs(),
            recovery_duration_sum_ns: AtomicU64::new(0),
            recovery_duration_count: AtomicU64::new(0),
            recovery_table_reclaims: AtomicU64::new(0),
            log_suppressed: Default::default(),
            alerts: OnceLock::new(),
            control: OnceLock::new(),
            identity: OnceLock::new(),
        }
    }

    /// The audit writer timed one `fdatasync` (`varta_audit_fsync_seconds`).
    pub fn observe_audit_fsync(&self, secs: f64) {
        self.audit_fsync.observe(secs);
    }

    /// The histogram of one loop stage.
    pub fn stage(&self, stage: Stage) -> &Histogram {
        &self.stages[stage as usize]
    }

    /// A recovery child finished after `ns` of wall time: the recovery
    /// thread, when it reaps it (`recovery/runner.rs`, `duration_ns`).
    /// Feeds `varta_recovery_duration_ns_sum` and `_count_total`.
    pub fn record_recovery_duration(&self, ns: u64) {
        self.recovery_duration_sum_ns
            .fetch_add(ns, Ordering::Relaxed);
        self.recovery_duration_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The recovery policy reclaimed an expired table entry to make room
    /// for a new pid (`recovery/policy.rs`):
    /// `varta_recovery_last_fired_evictions_total`.
    pub fn record_recovery_table_reclaim(&self) {
        self.recovery_table_reclaims.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` log lines of `kind` were held back by a rate limiter:
    /// `varta_log_suppressed_total{kind}`.
    pub fn record_log_suppressed(&self, kind: LogKind, n: u64) {
        self.log_suppressed[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn load(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

/// Where the renderer reads its values. Built once at start.
pub struct MetricsSources {
    /// Event counters (the counting sink).
    pub counters: Arc<Counters>,
    /// Audit writer counters (a default when there is no audit log).
    pub audit: Arc<AuditCounters>,
    /// Recovery machinery counters; None without recovery (zeros).
    pub recovery: Option<Arc<RecoveryStats>>,
    /// HTTP server counters, if known at construction; the server creates
    /// them when it starts, so they can be attached later
    /// ([`MetricsRenderer::attach_http`]). Zeros until then.
    pub http: Option<Arc<HttpCounters>>,
    /// Event-file counters; replaced on reload ([`MetricsRenderer::set_export`]).
    pub export: Option<Arc<FileExportCounters>>,
    /// Histograms and counters fed by the loop and other threads.
    pub observations: Arc<Observations>,
    /// Process start, for `varta_watch_uptime_seconds`.
    pub started: Instant,
    /// `--tracker-capacity`.
    pub tracker_capacity: u32,
    /// `SO_RCVBUF` the kernel granted on the observer socket (bytes).
    pub granted_rcvbuf: usize,
    /// `--per-agent-metrics-limit`.
    pub per_agent_limit: u32,
    /// `--udp-sender-capacity` of a secure UDP listener (0: none).
    pub udp_sender_capacity: u32,
    /// Per-name counts kept by a [`ByNameSink`] on the detection thread;
    /// None: the per-name families have no samples.
    pub by_name: Option<Arc<ByNameShared>>,
}

/// One agent's per-pid series.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSample {
    /// Agent pid.
    pub pid: u32,
    /// `name` label: the agent's name, [`UNKNOWN_NAME`] when not known.
    pub name: Arc<str>,
    /// `unit` label, only when known.
    pub unit: Option<Arc<str>>,
    /// `container` label, only when known.
    pub container: Option<Arc<str>>,
    /// Accepted beats (`varta_beats_total`).
    pub beats: u64,
    /// Stalls raised (`varta_stalls_total`).
    pub stalls: u64,
    /// `varta_status`: 0 ok, 1 degraded, 2 critical (last reported), 3
    /// stalled now (observer-detected), like the original.
    pub status: u8,
    /// Wall-clock time of the last accepted beat, Unix seconds
    /// (`varta_last_beat_timestamp_seconds`).
    pub last_beat_unix_s: f64,
}

impl Default for AgentSample {
    fn default() -> Self {
        AgentSample {
            pid: 0,
            name: Arc::from(UNKNOWN_NAME),
            unit: None,
            container: None,
            beats: 0,
            stalls: 0,
            status: 0,
            last_beat_unix_s: 0.0,
        }
    }
}

/// Agents by state (`varta_agents{state}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounts {
    /// Beating.
    pub alive: u64,
    /// Stalled (silent past the threshold).
    pub stalled: u64,
    /// Sent a dying gasp.
    pub exited: u64,
    /// Recovery gave up on them (storm cap); these agents are also counted
    /// as stalled or exited.
    pub given_up: u64,
}

impl AgentCounts {
    /// Agents in the tracker (`varta_watch_pids_tracked`).
    pub fn tracked(&self) -> u64 {
        self.alive + self.stalled + self.exited
    }
}

/// What the detection loop publishes for a scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Per-pid samples, already capped at `--per-agent-metrics-limit`.
    pub agents: Vec<AgentSample>,
    /// Agents left out of `agents` by the cap.
    pub overflow: u64,
    /// Agents by state (all of them, not only those in `agents`).
    pub counts: AgentCounts,
    /// Cached `/proc/sys/kernel/pid_max`.
    pub pid_max: u32,
    /// Wall-clock time of the loop's latest iteration, Unix seconds.
    pub last_loop_unix_s: f64,
    /// Required names and whether each has a live agent
    /// (`varta_required_agents{name,state}`).
    pub required: Vec<(Arc<str>, bool)>,
}

/// One render in progress: what the collector needs beyond the sources.
struct Scrape {
    snapshot: Arc<Snapshot>,
    format: Format,
}

/// Event-file counters and the totals of the files they replaced.
#[derive(Default)]
struct ExportSlot {
    current: Option<Arc<FileExportCounters>>,
    retired: FileExportStats,
}

impl ExportSlot {
    fn totals(&self) -> FileExportStats {
        let mut t = self.retired;
        if let Some(c) = &self.current {
            let s = c.snapshot();
            t.write_errors += s.write_errors;
            t.lines_dropped += s.lines_dropped;
        }
        t
    }
}

/// State shared by the renderer and its collector.
struct Shared {
    counters: Arc<Counters>,
    audit: Arc<AuditCounters>,
    recovery: Option<Arc<RecoveryStats>>,
    http: OnceLock<Arc<HttpCounters>>,
    export: Mutex<ExportSlot>,
    obs: Arc<Observations>,
    started: Instant,
    tracker_capacity: u32,
    granted_rcvbuf: usize,
    per_agent_limit: u32,
    udp_sender_capacity: u32,
    by_name: Option<Arc<ByNameShared>>,
    /// Sum of `Snapshot::overflow` over rendered bodies.
    overflow_total: AtomicU64,
    /// Set by `render` for the duration of one encode.
    scrape: Mutex<Option<Scrape>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry's one collector.
struct Families(Arc<Shared>);

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Families").finish_non_exhaustive()
    }
}

impl Collector for Families {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some((snapshot, format)) = lock(&self.0.scrape)
            .as_ref()
            .map(|s| (s.snapshot.clone(), s.format))
        else {
            return Ok(());
        };
        original::encode(&mut e, &self.0, &snapshot, format)?;
        ours::encode(&mut e, &self.0, &snapshot)?;
        alerts::encode(&mut e, self.0.obs.alerts.get().map(|a| &**a))?;
        control::encode(&mut e, self.0.obs.control.get().map(|c| &**c))?;
        identity::encode(&mut e, self.0.obs.identity.get().map(|c| &**c))?;
        by_name::encode(&mut e, self.0.by_name.as_deref(), &snapshot)
    }
}

/// Renders `/metrics` bodies. `Send + Sync`; renders are serialized.
pub struct MetricsRenderer {
    registry: Registry,
    shared: Arc<Shared>,
    gate: Mutex<()>,
}

impl MetricsRenderer {
    /// Builds the registry (once).
    pub fn new(sources: MetricsSources) -> MetricsRenderer {
        let http = OnceLock::new();
        if let Some(h) = sources.http {
            let _ = http.set(h);
        }
        let shared = Arc::new(Shared {
            counters: sources.counters,
            audit: sources.audit,
            recovery: sources.recovery,
            http,
            export: Mutex::new(ExportSlot {
                current: sources.export,
                retired: FileExportStats::default(),
            }),
            obs: sources.observations,
            started: sources.started,
            tracker_capacity: sources.tracker_capacity,
            granted_rcvbuf: sources.granted_rcvbuf,
            per_agent_limit: sources.per_agent_limit,
            udp_sender_capacity: sources.udp_sender_capacity,
            by_name: sources.by_name,
            overflow_total: AtomicU64::new(0),
            scrape: Mutex::new(None),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Families(shared.clone())));
        MetricsRenderer {
            registry,
            shared,
            gate: Mutex::new(()),
        }
    }

    /// Attaches the HTTP server's counters once it has started (they are
    /// created by `HttpServer::start`, which needs the service first).
    /// Later calls are ignored.
    pub fn attach_http(&self, counters: Arc<HttpCounters>) {
        let _ = self.shared.http.set(counters);
    }

    /// Points the export counters at a reopened event file (reload), or at
    /// none. The replaced file's totals are kept, so the counters never go
    /// down.
    pub fn set_export(&self, counters: Option<Arc<FileExportCounters>>) {
        let mut slot = lock(&self.shared.export);
        slot.retired = slot.totals();
        slot.current = counters;
    }

    /// The body for `snapshot` in `format` (UTF-8 text; 0.0.4 or OpenMetrics
    /// ending in `# EOF`). Adds `snapshot.overflow` to
    /// `varta_per_agent_metrics_overflow_total` (agents left out of rendered
    /// bodies).
    pub fn render(&self, snapshot: &Arc<Snapshot>, format: Format) -> Vec<u8> {
        let _serial = lock(&self.gate);
        self.shared
            .overflow_total
            .fetch_add(snapshot.overflow, Ordering::Relaxed);
        *lock(&self.shared.scrape) = Some(Scrape {
            snapshot: snapshot.clone(),
            format,
        });
        let mut out = String::with_capacity(24 * 1024 + snapshot.agents.len() * 260);
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
                    .and_then(|()| original::encode_duration_sum_004(&mut out, &self.shared))
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
        };
        *lock(&self.shared.scrape) = None;
        if encoded.is_err() {
            // Writing to a String cannot fail; only a bug in a family gets here.
            tracing::error!("metrics rendering failed; the body is incomplete");
        }
        out.into_bytes()
    }
}
