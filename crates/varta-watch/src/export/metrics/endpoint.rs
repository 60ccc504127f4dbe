//! Glue between the detection loop and the HTTP server: a scrape asks the
//! loop for a fresh per-agent snapshot, the loop copies at most
//! `--per-agent-metrics-limit` agents (O(limit), no lock the loop waits
//! on), and the HTTP thread renders from it — rendering a large body never
//! holds anything the loop needs. Scrapes arriving within
//! [`SHARE_WINDOW`] of a snapshot share it, so a scrape flood costs the
//! loop at most a few snapshots per second, however many scrapers there are.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::Waker;
use tokio::sync::watch;

use super::MetricsSources;
use super::{AgentCounts, AgentSample, MetricsRenderer, Snapshot, UNKNOWN_NAME};
use crate::health::LoopHealth;
use crate::http::{Format, HttpServer, HttpSettings, Service};
use crate::identity::NameId;
use crate::policy::Names;
use crate::tracker::{SlotState, Tracker};

/// How long a scrape waits for the loop's snapshot before rendering the
/// previous one (the loop is wedged: `/-/healthy` says so, and the counters
/// in the body still move).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// A snapshot younger than this serves a scrape as it is. Prometheus
/// scrapes every few seconds at most, so per-pid series lag by at most a
/// quarter second; the loop-wide counters are read at render time and do
/// not lag at all.
pub const SHARE_WINDOW: Duration = Duration::from_millis(250);

/// The hand-over point for snapshots.
pub struct SnapshotBridge {
    wanted: AtomicBool,
    waker: Arc<Waker>,
    /// The newest snapshot and when it was published (`None`: never).
    latest: Mutex<(Arc<Snapshot>, Option<Instant>)>,
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
            latest: Mutex::new((Arc::new(Snapshot::default()), None)),
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
    /// `names` (the policy engine's pid → identity table, readable only on
    /// this thread) labels the per-pid series: its strings are copied into
    /// the snapshot (shared `Arc<str>`s, no string copies). `required` is
    /// [`crate::policy::Policy::required_states`], resolved to names here.
    pub fn publish(
        &self,
        tracker: &Tracker,
        now_ns: u64,
        pid_max: u32,
        given_up: u64,
        names: Option<&Names>,
        required: &[(NameId, bool)],
    ) {
        let unknown: Arc<str> = Arc::from(UNKNOWN_NAME);
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
            let rec = names.and_then(|n| n.record(s.pid));
            let (name, unit, container) = match rec.as_deref() {
                Some(r) => (r.name.clone(), r.unit.clone(), r.container.clone()),
                None => (unknown.clone(), None, None),
            };
            agents.push(AgentSample {
                pid: s.pid,
                name,
                unit,
                container,
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
            required: match names {
                Some(n) => required
                    .iter()
                    .map(|&(id, present)| (n.registry().name_str(id), present))
                    .collect(),
                None => Vec::new(),
            },
        };
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) =
            (Arc::new(snapshot), Some(Instant::now()));
        self.published.send_modify(|g| *g += 1);
    }

    /// HTTP side: the newest snapshot if it is younger than
    /// [`SHARE_WINDOW`], else asks the loop for one and waits for it
    /// (bounded). Scrapes waiting at the same time share one request.
    async fn fresh(&self) -> Arc<Snapshot> {
        {
            let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            if latest.1.is_some_and(|at| at.elapsed() < SHARE_WINDOW) {
                return latest.0.clone();
            }
        }
        let mut rx = self.published.subscribe();
        let seen = *rx.borrow_and_update();
        self.wanted.store(true, Ordering::Release);
        let _ = self.waker.wake();
        let _ = tokio::time::timeout(SNAPSHOT_WAIT, rx.wait_for(|g| *g > seen)).await;
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

/// The observer's [`Service`]: renders `/metrics` from a fresh snapshot and
/// answers `/-/healthy` from the loop's liveness record. A body rendered
/// less than [`SHARE_WINDOW`] ago is served again as it is: under a scrape
/// flood the HTTP thread renders a few bodies per second instead of one
/// per scrape (a 10 k-series body takes tens of ms), so the flood costs
/// the machine little CPU that detection could need.
pub struct ObserverService {
    renderer: Arc<MetricsRenderer>,
    bridge: Arc<SnapshotBridge>,
    health: Arc<LoopHealth>,
    /// The newest body per format (index: [`format_slot`]) and when it was
    /// rendered.
    bodies: Mutex<[Option<CachedBody>; 2]>,
}

/// A rendered `/metrics` body and when it was rendered.
type CachedBody = (Instant, Vec<u8>);

/// Index of a format in [`ObserverService`]'s body cache.
const fn format_slot(format: Format) -> usize {
    match format {
        Format::Prometheus => 0,
        Format::OpenMetrics => 1,
    }
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
            bodies: Mutex::new([None, None]),
        }
    }
}

impl Service for ObserverService {
    fn render(&self, format: Format) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>> {
        Box::pin(async move {
            let slot = format_slot(format);
            if let Some((at, body)) = &self.bodies.lock().unwrap_or_else(|p| p.into_inner())[slot] {
                if at.elapsed() < SHARE_WINDOW {
                    return body.clone();
                }
            }
            let snapshot = self.bridge.fresh().await;
            let body = self.renderer.render(&snapshot, format);
            self.bodies.lock().unwrap_or_else(|p| p.into_inner())[slot] =
                Some((Instant::now(), body.clone()));
            body
        })
    }

    fn healthy(&self) -> bool {
        self.health.is_alive()
    }
}

/// Feeds `varta_detection_overshoot_seconds` from the event stream: for
/// every `stall`, how long after it was due (last beat + threshold) it was
/// raised.
pub struct OvershootSink {
    observations: Arc<super::Observations>,
    threshold_ns: Arc<std::sync::atomic::AtomicU64>,
}

impl OvershootSink {
    /// `threshold_ns` is shared with the daemon, which updates it on reload.
    pub fn new(
        observations: Arc<super::Observations>,
        threshold_ns: Arc<std::sync::atomic::AtomicU64>,
    ) -> OvershootSink {
        OvershootSink {
            observations,
            threshold_ns,
        }
    }
}

impl crate::events::Sink for OvershootSink {
    #[inline]
    fn on_event(&mut self, at_ns: u64, event: &crate::events::Event) {
        if let crate::events::Event::Stall { last_beat_ns, .. } = *event {
            let due = last_beat_ns.saturating_add(self.threshold_ns.load(Ordering::Relaxed));
            self.observations
                .detection_overshoot
                .observe(at_ns.saturating_sub(due) as f64 / 1_000_000_000.0);
        }
    }
}

/// The running Prometheus endpoint: the HTTP server and the snapshot
/// hand-over it scrapes through.
pub struct MetricsEndpoint {
    /// Where scrapes ask the loop for snapshots.
    pub bridge: Arc<SnapshotBridge>,
    /// The HTTP server.
    pub server: HttpServer,
}

impl MetricsEndpoint {
    /// Reads the token, starts the HTTP server and ties it to the loop.
    pub fn start(
        m: &crate::config::MetricsConfig,
        waker: Arc<mio::Waker>,
        sources: MetricsSources,
        health: Arc<LoopHealth>,
        control: Option<(Arc<dyn crate::http::Api>, std::os::unix::net::UnixListener)>,
    ) -> Result<MetricsEndpoint, String> {
        let token = crate::config::read_token(&m.token_file).map_err(|e| e.to_string())?;
        let renderer = Arc::new(MetricsRenderer::new(sources));
        let bridge = Arc::new(SnapshotBridge::new(waker, m.per_agent_limit));
        let service = ObserverService::new(renderer.clone(), bridge.clone(), health);
        let mut settings = HttpSettings::new(m.addr);
        settings.token = Some(token);
        settings.rate_per_sec = m.rate_per_sec;
        settings.burst = m.burst;
        // The control API, if on, shares this server (thread, runtime,
        // connection limits): its Unix socket and `/api/v1/…` here.
        let server = HttpServer::start_full(
            settings,
            true,
            Some(Arc::new(service)),
            control.map(|(api, unix)| (api, Some(unix))),
        )
        .map_err(|e| e.to_string())?;
        renderer.attach_http(server.counters());
        Ok(MetricsEndpoint { bridge, server })
    }
}
