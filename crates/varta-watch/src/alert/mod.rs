//! Alertmanager push (`--alertmanager-url`): `VartaAgentStalled`,
//! `VartaAgentGivenUp` and `VartaAgentMissing` sent to every configured
//! Alertmanager's `/api/v2/alerts`, without waiting for a Prometheus rule
//! evaluation (docs/alerting.md).
//!
//! Three parts, three kinds of thread:
//! - [`AlertSink`] on the event bus, on the **detection thread**: it only
//!   copies the event and the agent's identity (`Arc` clones) into a
//!   bounded queue with `try_send`; a full queue drops and counts, it never
//!   blocks, allocates much or does I/O.
//! - the **alert thread** ([`service`]): owns the firing table
//!   ([`table`]), drains the queue in batches, renders alerts
//!   ([`model`]) and runs the resend timer.
//! - one **sender thread per target** ([`sender`]): batches, chunked
//!   POSTs with `ureq` (rustls), retries with bounded exponential backoff;
//!   a dead target never delays another.
//!
//! Alert and sender threads run at nice +10, like the HTTP thread.
//! Counters: [`AlertStats`] (`varta_alertmanager_*` on `/metrics`).

pub mod model;
pub mod sender;
mod service;
pub mod stats;
pub mod table;

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap;

use crate::config::{AlertmanagerConfig, ConfigError};
use crate::events::{Event, RecoveryOutcome, Sink};
use crate::identity::UNKNOWN as UNKNOWN_NAME;
use crate::policy::Names;
pub use model::{Agent, Alert, AlertName, Key};
pub use stats::{AlertStats, DropReason, TargetStats};
pub use table::Msg;

/// Events the queue from the detection thread holds: a mass stall of
/// 65,536 agents fits without a drop.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Longest the shutdown flush may take.
pub const FLUSH_BOUND: Duration = Duration::from_millis(1500);

/// Why the push could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The credentials file became unreadable since the configuration was
    /// checked.
    #[error("alertmanager: {0}")]
    Auth(#[from] ConfigError),
    /// A thread could not be started.
    #[error("cannot start the alert threads: {0}")]
    Thread(#[from] std::io::Error),
}

/// Nice +10 for this thread only (Linux applies `setpriority` with a
/// thread id to that thread): alerting yields the CPU to detection.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
        tracing::debug!(error = %e, "cannot lower the alert thread's priority");
    }
}

/// Starts the alert thread and one sender per target; returns the sink to
/// put on the event bus (its `shutdown` flushes within [`FLUSH_BOUND`]).
pub fn start(cfg: &AlertmanagerConfig, names: Names) -> Result<AlertSink, AlertError> {
    let auth = crate::config::read_alert_auth(&cfg.auth)?;
    let posts = cfg
        .targets
        .iter()
        .map(|t| sender::ureq_post(t, auth.clone(), cfg.timeout))
        .collect();
    start_with(cfg, names, posts)
}

/// [`start`] with the POST of each target given (tests count requests
/// without a network).
pub fn start_with(
    cfg: &AlertmanagerConfig,
    names: Names,
    posts: Vec<sender::Post>,
) -> Result<AlertSink, AlertError> {
    let stats = Arc::new(AlertStats::new(&cfg.targets));
    let outlets = posts
        .into_iter()
        .enumerate()
        .map(|(i, p)| sender::start(i, p, cfg.timeout, stats.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let (tx, rx): (SyncSender<Msg>, Receiver<Msg>) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let svc = service::Service {
        rx,
        table: table::Table::new(Arc::from(cfg.instance.as_str()), cfg.resend),
        outlets,
        stats: stats.clone(),
        resend: cfg.resend,
        flush_bound: FLUSH_BOUND,
    };
    std::thread::Builder::new()
        .name("varta-alerts".into())
        .spawn(move || {
            svc.run();
            let _ = done_tx.send(());
        })?;
    tracing::info!(
        targets = %cfg.targets.join(" "),
        instance = %cfg.instance,
        resend_ms = cfg.resend.as_millis() as u64,
        "pushing alerts to Alertmanager"
    );
    Ok(AlertSink {
        tx: Some(tx),
        done: done_rx,
        names,
        stats,
        open: FxHashMap::default(),
    })
}

/// Bits of [`AlertSink::open`].
const STALLED: u8 = 1;
const GIVEN_UP: u8 = 2;

/// The detection thread's side: events in, [`Msg`]s out.
pub struct AlertSink {
    tx: Option<SyncSender<Msg>>,
    done: Receiver<()>,
    names: Names,
    stats: Arc<AlertStats>,
    /// pid → alerts that may fire for it, so the resolving kinds (exit,
    /// new life, eviction), frequent under churn, are only queued for
    /// agents that have something to resolve. At most one entry per
    /// stalled or given-up agent.
    open: FxHashMap<u32, u8>,
}

impl AlertSink {
    /// The push's counters.
    pub fn stats(&self) -> Arc<AlertStats> {
        self.stats.clone()
    }

    /// What is known of `pid`: three `Arc` clones, no string copied.
    fn agent(&self, pid: u32) -> Agent {
        match self.names.record(pid) {
            Some(r) => Agent {
                pid: Some(pid),
                name: (&*r.name != UNKNOWN_NAME).then(|| r.name.clone()),
                unit: r.unit.clone(),
                container: r.container.clone(),
            },
            None => Agent {
                pid: Some(pid),
                ..Agent::default()
            },
        }
    }

    fn send(&mut self, msg: Msg) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(msg) {
            Ok(()) => self.stats.on_enqueued(),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.on_queue_full();
            }
        }
    }

    /// Queues `msg` for `pid` if one of its alerts in `bits` may fire.
    fn resolve(&mut self, pid: u32, bits: u8, msg: fn(u32, SystemTime) -> Msg) {
        if self.close(pid, bits) {
            self.send(msg(pid, SystemTime::now()));
        }
    }

    /// Clears `bits` of `pid`; whether any of them was set.
    fn close(&mut self, pid: u32, bits: u8) -> bool {
        let Some(b) = self.open.get_mut(&pid) else {
            return false;
        };
        let had = *b & bits != 0;
        *b &= !bits;
        if *b == 0 {
            self.open.remove(&pid);
        }
        had
    }
}

/// Wall time `ago_ns` before `now`.
fn before(now: SystemTime, ago_ns: u64) -> SystemTime {
    now.checked_sub(Duration::from_nanos(ago_ns)).unwrap_or(now)
}

impl Sink for AlertSink {
    fn on_event(&mut self, at_ns: u64, event: &Event) {
        match *event {
            Event::Stall {
                pid, last_beat_ns, ..
            } => {
                let at = SystemTime::now();
                *self.open.entry(pid).or_default() |= STALLED;
                let agent = self.agent(pid);
                self.send(Msg::Stalled {
                    agent,
                    last_beat: before(at, at_ns.saturating_sub(last_beat_ns)),
                    at,
                });
            }
            Event::Recovery {
                pid,
                outcome: RecoveryOutcome::GivenUp,
                ..
            } => {
                *self.open.entry(pid).or_default() |= GIVEN_UP;
                let agent = self.agent(pid);
                self.send(Msg::GivenUp {
                    agent,
                    at: SystemTime::now(),
                });
            }
            Event::Recovered { pid, .. }
            | Event::Recovery {
                pid,
                outcome: RecoveryOutcome::GivenUpCleared,
                ..
            } => self.resolve(pid, STALLED | GIVEN_UP, |pid, at| Msg::Beats { pid, at }),
            Event::Exit { pid, .. } => {
                self.resolve(pid, STALLED, |pid, at| Msg::Exited { pid, at })
            }
            Event::NewLife { pid } | Event::Eviction { pid, .. } => {
                self.resolve(pid, STALLED | GIVEN_UP, |pid, at| Msg::Gone { pid, at })
            }
            Event::Missing { name } => {
                let name = self.names.registry().name_str(name);
                self.send(Msg::Missing {
                    name,
                    at: SystemTime::now(),
                });
            }
            Event::Present { name, .. } => {
                let name = self.names.registry().name_str(name);
                self.send(Msg::Present {
                    name,
                    at: SystemTime::now(),
                });
            }
            _ => {}
        }
    }

    /// Closes the queue; the alert thread applies what is in it and
    /// flushes to every target within [`FLUSH_BOUND`].
    fn shutdown(&mut self) {
        if self.tx.take().is_none() {
            return;
        }
        if self
            .done
            .recv_timeout(FLUSH_BOUND + Duration::from_millis(500))
            .is_err()
        {
            tracing::warn!(
                "alert flush did not finish in time; some alerts may not have been delivered"
            );
        }
    }
}

impl Drop for AlertSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Origin;
    use crate::identity::{IdentityRecord, Registry};
    use std::sync::Mutex;
    use std::time::Instant;

    type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

    fn capture() -> (sender::Post, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let post: sender::Post = Box::new(move |body: &[u8], _| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            s.lock()
                .unwrap()
                .extend(v.as_array().unwrap().iter().cloned());
            Ok(())
        });
        (post, seen)
    }

    /// Waits for the `n`-th alert and returns (alertname, key label, firing).
    fn nth(seen: &Seen, n: usize) -> (String, String, bool) {
        let start = Instant::now();
        loop {
            if let Some(a) = seen.lock().unwrap().get(n) {
                let l = &a["labels"];
                let key = l["pid"].as_str().or(l["name"].as_str()).unwrap_or("");
                let starts = humantime::parse_rfc3339(a["startsAt"].as_str().unwrap()).unwrap();
                let ends = humantime::parse_rfc3339(a["endsAt"].as_str().unwrap()).unwrap();
                let firing = ends > SystemTime::now() && ends > starts + Duration::from_secs(60);
                return (l["alertname"].as_str().unwrap().into(), key.into(), firing);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no alert #{n}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stall(pid: u32) -> Event {
        Event::Stall {
            pid,
            last_nonce: 1,
            last_beat_ns: 1_000_000_000,
            origin: Origin::KernelAttested,
            foreign_ns: false,
        }
    }

    fn recovery(pid: u32, outcome: RecoveryOutcome) -> Event {
        Event::Recovery {
            pid,
            child: 0,
            outcome,
        }
    }

    /// An event and the alert it must send: (alertname, pid or name, firing).
    type Step = (Event, Option<(&'static str, &'static str, bool)>);

    #[test]
    fn events_become_alerts_and_resolutions() {
        let registry = Arc::new(Registry::new(64));
        let db = registry.name_id(registry.intern(IdentityRecord {
            name: "db".into(),
            ..IdentityRecord::unknown()
        }));
        let cfg = AlertmanagerConfig {
            targets: vec!["t".into()],
            instance: "h".into(),
            resend: Duration::from_secs(600),
            timeout: Duration::from_secs(1),
            auth: crate::config::AlertAuth::None,
        };
        let (post, seen) = capture();
        let mut sink = start_with(&cfg, Names::new(registry), vec![post]).unwrap();
        let steps: Vec<Step> = vec![
            // Agents that never stalled: nothing to resolve, nothing sent.
            (
                Event::Exit {
                    pid: 77,
                    timestamp: 1,
                    payload: 0,
                    origin: Origin::KernelAttested,
                    foreign_ns: false,
                },
                None,
            ),
            (Event::NewLife { pid: 78 }, None),
            (stall(5), Some(("VartaAgentStalled", "5", true))),
            (
                recovery(5, RecoveryOutcome::GivenUp),
                Some(("VartaAgentGivenUp", "5", true)),
            ),
            // Exit resolves the stall, not the given-up alert.
            (
                Event::Exit {
                    pid: 5,
                    timestamp: 2,
                    payload: 0,
                    origin: Origin::KernelAttested,
                    foreign_ns: false,
                },
                Some(("VartaAgentStalled", "5", false)),
            ),
            (
                recovery(5, RecoveryOutcome::GivenUpCleared),
                Some(("VartaAgentGivenUp", "5", false)),
            ),
            (
                Event::Missing { name: db },
                Some(("VartaAgentMissing", "db", true)),
            ),
            (
                Event::Present { name: db, pid: 9 },
                Some(("VartaAgentMissing", "db", false)),
            ),
            (stall(6), Some(("VartaAgentStalled", "6", true))),
            (
                Event::Recovered {
                    pid: 6,
                    nonce: 2,
                    status: varta_vlp::Status::Ok,
                    payload: 0,
                    silent_ns: 1,
                },
                Some(("VartaAgentStalled", "6", false)),
            ),
            (stall(7), Some(("VartaAgentStalled", "7", true))),
            (
                Event::Eviction {
                    pid: 7,
                    was_live: false,
                },
                Some(("VartaAgentStalled", "7", false)),
            ),
        ];
        let mut n = 0;
        for (event, want) in steps {
            sink.on_event(5_000_000_000, &event);
            if let Some((name, key, firing)) = want {
                assert_eq!(
                    nth(&seen, n),
                    (name.into(), key.into(), firing),
                    "after {event:?}"
                );
                n += 1;
            }
        }
        sink.shutdown();
        assert_eq!(seen.lock().unwrap().len(), n, "nothing else was sent");
        assert_eq!(sink.stats().queue_depth(), 0);
    }
}
