//! The control API (`docs/api.md`): status, agents, live events and
//! reload over HTTP/1.1 + JSON, served on the HTTP thread (the same hyper
//! runtime as `/metrics`) from a Unix socket (`--control-socket`, mode
//! 0600) and, read-only, under `/api/v1/…` on the metrics TCP listener.
//!
//! The detection loop's part is small and bounded: on a wake-up it copies
//! one chunk of compact agent records toward a snapshot ([`snapshot`]), or runs
//! a reload the API asked for; a sink copies events into a ring
//! ([`events`]). Filtering, sorting, names and JSON are the HTTP thread's
//! work ([`api`], [`query`], [`render`]). Recovery history comes straight
//! from the recovery thread ([`crate::recovery::history`]).

mod api;
pub mod events;
pub mod loop_side;
pub mod mirror;
pub mod query;
pub mod record;
mod render;
pub mod snapshot;
pub mod socket;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{oneshot, watch};

pub use api::ControlApi;
pub use events::{ControlSink, EventHub};
pub use loop_side::ControlLoop;
pub use snapshot::AgentsSnapshot;

use crate::identity::Registry;
use crate::recovery::history::RecoveryHistory;

/// How long a request waits for the loop (snapshot or reload) before
/// answering 503.
pub const LOOP_WAIT: Duration = Duration::from_secs(2);
/// A snapshot younger than this answers a request as it is (as `/metrics`).
pub const SHARE_WINDOW: Duration = crate::export::metrics::endpoint::SHARE_WINDOW;
/// Continuation pages (`cursor=`) accept a snapshot up to this old, so
/// paging through a million agents sorts a few snapshots, not one per page.
pub const PAGE_SHARE_WINDOW: Duration = Duration::from_secs(2);

pub use crate::daemon::ReloadOutcome;

/// The last reload and when it happened.
#[derive(Clone, Debug)]
pub struct LastReload {
    /// Wall clock, Unix ms.
    pub at_unix_ms: u64,
    /// What it came to.
    pub outcome: ReloadOutcome,
}

/// One `[[agent]]` rule as `/v1/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSummary {
    /// 1-based.
    pub index: usize,
    /// The `match` table, TOML spelling.
    pub matcher: String,
    /// Effective threshold, ms.
    pub threshold_ms: u64,
    /// Startup grace, ms.
    pub startup_grace_ms: u64,
    /// `required = true`.
    pub required: bool,
    /// `global`, `rule` or `off`.
    pub recovery: &'static str,
}

/// Settings `/v1/status` shows that a reload can change (the loop updates
/// them at start and after each reload).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--threshold-ms`.
    pub threshold_ms: u64,
    /// `--config`.
    pub config_file: Option<String>,
    /// The rules.
    pub rules: Vec<RuleSummary>,
    /// Recovery runs at all (agents get a `recovery` object).
    pub recovery_on: bool,
}

impl Settings {
    /// From a configuration.
    pub fn of(cfg: &crate::config::Config) -> Settings {
        let global = cfg
            .recovery
            .as_ref()
            .is_some_and(crate::config::RecoveryConfig::has_global_command);
        Settings {
            threshold_ms: cfg.threshold.as_millis() as u64,
            config_file: cfg.config_file.as_ref().map(|p| p.display().to_string()),
            rules: cfg
                .rules
                .rules
                .iter()
                .map(|r| RuleSummary {
                    index: r.index + 1,
                    matcher: r.matcher.to_string(),
                    threshold_ms: r.threshold_or(cfg.threshold).as_millis() as u64,
                    startup_grace_ms: r.startup_grace.unwrap_or_default().as_millis() as u64,
                    required: r.required,
                    recovery: if r.recovery == Some(false) {
                        "off"
                    } else if r.recovery_exec.is_some() {
                        "rule"
                    } else if global {
                        "global"
                    } else {
                        "off"
                    },
                })
                .collect(),
            recovery_on: cfg.recovery.is_some(),
        }
    }
}

/// Listener addresses for `/v1/status` (`None`: off).
#[derive(Clone, Debug, Default)]
pub struct Listeners {
    /// Beat socket.
    pub socket: Option<String>,
    /// Control socket.
    pub control: Option<String>,
    /// UDP listener.
    pub udp: Option<String>,
    /// `/metrics`.
    pub metrics: Option<String>,
}

/// Counters and timings of the API (`varta_control_*`).
#[derive(Debug)]
pub struct ControlStats {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// `varta_control_snapshot_seconds`: loop time per agents snapshot,
    /// all chunks together.
    pub snapshot_seconds: Histogram,
    /// `varta_control_snapshot_chunk_seconds`: the longest chunk of each
    /// snapshot.
    pub snapshot_chunk_seconds: Histogram,
    /// `varta_control_mirror_sync_seconds`: loop time per background sync
    /// of the snapshot mirror ([`mirror::SYNC_AT`] changed agents each).
    pub mirror_sync_seconds: Histogram,
    /// `varta_control_mirror_synced_total`: agent changes applied to the
    /// mirror by background syncs.
    pub mirror_synced: std::sync::atomic::AtomicU64,
    /// Background mirror syncs so far.
    pub mirror_syncs: std::sync::atomic::AtomicU64,
    /// Loop time of those syncs, µs in all.
    pub mirror_sync_us: std::sync::atomic::AtomicU64,
    /// The event ring and streams (reader gauges).
    pub events: Arc<EventHub>,
}

impl Default for ControlStats {
    fn default() -> Self {
        let b = crate::export::metrics::SECONDS_BUCKETS;
        ControlStats {
            requests: Mutex::new(BTreeMap::new()),
            snapshot_seconds: Histogram::new(b),
            snapshot_chunk_seconds: Histogram::new(b),
            mirror_sync_seconds: Histogram::new(b),
            mirror_synced: Default::default(),
            mirror_syncs: Default::default(),
            mirror_sync_us: Default::default(),
            events: Arc::new(EventHub::default()),
        }
    }
}

impl ControlStats {
    /// Counts one answered request.
    pub fn request(&self, route: &'static str, code: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, code))
            .or_insert(0) += 1;
    }

    /// (route, code, count) of every request counted so far.
    pub fn requests(&self) -> Vec<(&'static str, u16, u64)> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&(r, c), &n)| (r, c, n))
            .collect()
    }
}

type ReloadReply = oneshot::Sender<ReloadOutcome>;

/// State shared by the loop side and the HTTP side.
pub struct Shared {
    wanted: AtomicBool,
    waker: Arc<mio::Waker>,
    latest: Mutex<Option<Arc<AgentsSnapshot>>>,
    published: watch::Sender<u64>,
    pool: snapshot::Pool,
    reloads: Mutex<std::sync::mpsc::Sender<ReloadReply>>,
    settings: Mutex<Settings>,
    last_reload: Mutex<Option<LastReload>>,
    listeners: Mutex<Listeners>,
    started: Instant,
    /// Turns identity ids into strings.
    pub registry: Arc<Registry>,
    /// Per-agent recovery summaries (None without recovery).
    pub history: Option<Arc<RecoveryHistory>>,
    /// Counters for `/metrics` (the event hub is in it).
    pub stats: Arc<ControlStats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The loop did not answer within [`LOOP_WAIT`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the detection loop did not answer within 2 s; it may be overloaded or wedged (see /-/healthy)"
)]
pub struct LoopTimeout;

impl Shared {
    /// HTTP side: a snapshot at most `window` old, asking the loop for a
    /// new one when needed (requests waiting together share it).
    pub async fn snapshot(&self, window: Duration) -> Result<Arc<AgentsSnapshot>, LoopTimeout> {
        if let Some(s) = lock(&self.latest).as_ref() {
            if s.taken.elapsed() < window {
                return Ok(s.clone());
            }
        }
        let mut rx = self.published.subscribe();
        let seen = *rx.borrow_and_update();
        self.wanted.store(true, Ordering::Release);
        let _ = self.waker.wake();
        let answered = matches!(
            tokio::time::timeout(LOOP_WAIT, rx.wait_for(|g| *g > seen)).await,
            Ok(Ok(_))
        );
        if !answered {
            return Err(LoopTimeout);
        }
        lock(&self.latest).clone().ok_or(LoopTimeout)
    }

    /// HTTP side: asks the loop to reload and waits for the outcome.
    pub async fn reload(&self) -> Result<ReloadOutcome, LoopTimeout> {
        let (tx, rx) = oneshot::channel();
        if lock(&self.reloads).send(tx).is_err() {
            return Err(LoopTimeout);
        }
        let _ = self.waker.wake();
        match tokio::time::timeout(LOOP_WAIT, rx).await {
            Ok(Ok(o)) => Ok(o),
            _ => Err(LoopTimeout),
        }
    }

    /// Current reloadable settings.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// The last reload.
    pub fn last_reload(&self) -> Option<LastReload> {
        lock(&self.last_reload).clone()
    }

    /// Listener addresses.
    pub fn listeners(&self) -> Listeners {
        lock(&self.listeners).clone()
    }

    /// Seconds since the observer started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records where a listener ended up (known after the HTTP server and
    /// the UDP socket are bound).
    pub fn set_listeners(&self, l: Listeners) {
        *lock(&self.listeners) = l;
    }
}
