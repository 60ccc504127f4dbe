//! Glue between the detection loop and the HTTP server: a scrape asks the
//! loop for a fresh per-agent snapshot, the loop copies at most
//! `--per-agent-metrics-limit` agents (O(limit), no lock the loop waits
//! on), and the HTTP thread renders from it — rendering a large body never
//! holds anything the loop needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::Waker;
use tokio::sync::watch;

use super::{AgentCounts, AgentSample, MetricsRenderer, Snapshot};
use crate::health::LoopHealth;
use crate::http::{Format, Service};
use crate::tracker::{SlotState, Tracker};

/// How long a scrape waits for the loop's snapshot before rendering the
/// previous one (the loop is wedged: `/-/healthy` says so, and the counters
/// in the body still move).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// The hand-over point for snapshots.
pub struct SnapshotBridge {
    wanted: AtomicBool,
    waker: Arc<Waker>,
    latest: Mutex<Arc<Snapshot>>,
    published: watch::Sender<u64>,
    limit: usize,
}

impl SnapshotBridge {
    /// A bridge that wakes the loop through `waker`; snapshots hold at most
    /// `limit` agents.
    pub fn new(waker: Arc<Waker>, limit: u32) -> SnapshotBridge {
        SnapshotBridge {
            wanted: AtomicBool::new(false),
            waker,
            latest: Mutex::new(Arc::new(Snapshot::default())),
            published: watch::channel(0).0,
            limit: limit as usize,
        }
    }

    /// Loop side: whether a scrape is waiting for a snapshot (clears it).
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }

    /// Loop side: copies what a scrape needs out of the tracker and hands
    /// it over. `now_ns` is observer time; `given_up` comes from recovery.
    pub fn publish(&self, tracker: &Tracker, now_ns: u64, pid_max: u32, given_up: u64) {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let (alive, stalled, exited) = tracker.counts();
        let tracked = u64::from(alive) + u64::from(stalled) + u64::from(exited);
        let mut agents = Vec::with_capacity(self.limit.min(tracked as usize));
        tracker.for_each_agent(|s, t| {
            if agents.len() >= self.limit {
                return false;
            }
            agents.push(AgentSample {
                pid: s.pid,
                beats: t.beats,
                stalls: t.stalls,
                // The original's codes: the last reported status, or 3
                // (stall) while the observer considers the agent stalled.
                status: if s.state == SlotState::Stalled {
                    3
                } else {
                    s.status as u8
                },
                last_beat_unix_s: wall
                    - now_ns.saturating_sub(s.last_beat_ns) as f64 / 1_000_000_000.0,
            });
            true
        });
        let snapshot = Snapshot {
            overflow: tracked.saturating_sub(agents.len() as u64),
            agents,
            counts: AgentCounts {
                alive: u64::from(alive),
                stalled: u64::from(stalled),
                exited: u64::from(exited),
                given_up,
            },
            pid_max,
            last_loop_unix_s: wall,
        };
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        self.published.send_modify(|g| *g += 1);
    }

    /// HTTP side: asks the loop for a snapshot and waits for it (bounded).
    async fn fresh(&self) -> Arc<Snapshot> {
        let mut rx = self.published.subscribe();
        let seen = *rx.borrow_and_update();
        self.wanted.store(true, Ordering::Release);
        let _ = self.waker.wake();
        let _ = tokio::time::timeout(SNAPSHOT_WAIT, rx.wait_for(|g| *g > seen)).await;
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The observer's [`Service`]: renders `/metrics` from a fresh snapshot and
/// answers `/-/healthy` from the loop's liveness record.
pub struct ObserverService {
    renderer: Arc<MetricsRenderer>,
    bridge: Arc<SnapshotBridge>,
    health: Arc<LoopHealth>,
}

impl ObserverService {
    /// Ties the pieces together.
    pub fn new(
        renderer: Arc<MetricsRenderer>,
        bridge: Arc<SnapshotBridge>,
        health: Arc<LoopHealth>,
    ) -> ObserverService {
        ObserverService {
            renderer,
            bridge,
            health,
        }
    }
}

impl Service for ObserverService {
    fn render(&self, format: Format) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>> {
        Box::pin(async move {
            let snapshot = self.bridge.fresh().await;
            self.renderer.render(&snapshot, format)
        })
    }

    fn healthy(&self) -> bool {
        self.health.is_alive()
    }
}
