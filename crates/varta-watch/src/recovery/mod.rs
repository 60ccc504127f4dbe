//! Recovery: run the operator's command when an agent stalls or exits, or
//! a required name goes missing.
//!
//! The detection thread only hands triggers over: [`RecoveryTap`] is a sink
//! of the event stream that forwards `stall`, `exit`, `missing`,
//! `recovered` and `present` events into a bounded queue and wakes the
//! recovery thread once per loop iteration. With the agents' names
//! ([`RecoveryTap::with_names`]) each trigger carries the agent's identity
//! and `[[agent]]` rule; the recovery thread turns the identity into the
//! strings of the command's placeholders and `VARTA_AGENT_*` variables, and
//! the rule into its command, storm cap or `recovery = false`. The recovery thread ([`runner`]) decides ([`policy`]: safety
//! gates, one child per agent, debounce, restart-storm cap with backoff),
//! spawns without a shell ([`command`]), learns of each exit through a
//! pidfd (no polling, no SIGCHLD handler), enforces the timeout ladder,
//! captures output, and writes the audit log. What it did comes back as
//! [`Report`]s through a second bounded queue; the daemon turns them into
//! [`Event::Recovery`] on the one event stream, where counters, logs and
//! exports see them like any other event.

pub mod child;
pub mod command;
pub mod history;
pub mod policy;
mod runner;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};
use rustc_hash::FxHashMap;

use crate::audit::AuditLog;
use crate::clock::ObserverClock;
use crate::config::{RecoveryConfig, RECOVERY_BACKOFF_CAP_MS};
use crate::events::{Event, RecoveryOutcome, Sink};
use crate::identity::Registry;
use crate::policy::Names;
use command::CommandTemplate;
use policy::{Key, Policy, PolicySettings, Trigger, TriggerKind};

/// Triggers queued for the recovery thread at most; beyond it a trigger is
/// dropped and counted (`trigger_queue_full`).
pub const REQUEST_QUEUE: usize = 65_536;
/// Reports queued for the detection thread at most.
pub const REPORT_QUEUE: usize = 65_536;

/// A message to the recovery thread.
#[derive(Debug)]
pub(crate) enum Request {
    /// A stall, exit or missing name.
    Trigger(Trigger),
    /// The agent beat again after a stall (or a required name is present).
    Beat(Key),
    /// The identity registry, to turn trigger identities into strings.
    Registry(SharedRegistry),
    /// New command and policy (reload); running children keep theirs.
    Reconfigure(Box<RecoveryConfig>),
    /// Stop: children get the kill ladder within this grace.
    Shutdown(Duration),
}

/// The identity registry handed to the recovery thread.
pub(crate) struct SharedRegistry(pub Arc<Registry>);

impl std::fmt::Debug for SharedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({} records)", self.0.len())
    }
}

/// What the recovery thread did, for the event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// Agent pid.
    pub pid: u32,
    /// Child pid, 0 when none.
    pub child: u32,
    /// Outcome.
    pub outcome: RecoveryOutcome,
}

/// Counters of the recovery machinery itself (outcomes are counted from the
/// event stream like every other event).
#[derive(Debug, Default)]
pub struct RecoveryStats {
    /// Triggers dropped because the queue to the recovery thread was full.
    pub triggers_dropped: AtomicU64,
    /// Reports dropped because the queue back to the loop was full.
    pub reports_dropped: AtomicU64,
    /// Children running now.
    pub running: AtomicU64,
    /// Agents given up now (restart-storm cap reached, no beat since).
    pub given_up: AtomicU64,
    /// Triggers of agents whose `[[agent]]` rule says `recovery = false`
    /// (not recovered, not audited).
    pub suppressed: AtomicU64,
}

/// Why recovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// epoll or the thread could not be created.
    #[error("cannot start the recovery thread: {0}")]
    Start(#[from] std::io::Error),
}

/// The detection thread's handle on the recovery thread.
pub struct Recovery {
    requests: SyncSender<Request>,
    waker: Arc<Waker>,
    reports: Receiver<Report>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<RecoveryStats>,
    history: Arc<history::RecoveryHistory>,
}

pub(crate) fn policy_settings(cfg: &RecoveryConfig) -> PolicySettings {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    PolicySettings {
        debounce_ns: ns(cfg.debounce),
        max_attempts: cfg.max_attempts,
        window_ns: ns(cfg.window),
        backoff_ns: ns(cfg.backoff),
        backoff_cap_ns: RECOVERY_BACKOFF_CAP_MS * 1_000_000,
        table_capacity: cfg.table_capacity,
        max_children: cfg.max_children,
        trusted_network_origin: cfg.trusted_network_origin,
    }
}

impl Recovery {
    /// Starts the recovery thread. `cfg` None with an audit log still runs
    /// the thread so the log has one owner (it then only holds boot
    /// records). `main_waker` wakes the detection loop when reports wait.
    pub fn start(
        cfg: Option<&RecoveryConfig>,
        audit: Option<AuditLog>,
        clock: ObserverClock,
        main_waker: Arc<Waker>,
        observations: Option<Arc<crate::export::metrics::Observations>>,
    ) -> Result<Recovery, RecoveryError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), runner::WAKER)?);
        let (req_tx, req_rx) = mpsc::sync_channel(REQUEST_QUEUE);
        let (rep_tx, rep_rx) = mpsc::sync_channel(REPORT_QUEUE);
        let stats = Arc::new(RecoveryStats::default());
        let history = Arc::new(history::RecoveryHistory::new(
            cfg.map_or(1, |c| c.table_capacity as usize),
        ));
        let placeholder = PolicySettings {
            debounce_ns: 0,
            max_attempts: 1,
            window_ns: 1,
            backoff_ns: 0,
            backoff_cap_ns: 0,
            table_capacity: 1,
            max_children: 1,
            trusted_network_origin: None,
        };
        let r = runner::Runner {
            poll,
            requests: req_rx,
            reports: rep_tx,
            main_waker,
            policy: Policy::new(cfg.map_or(placeholder, policy_settings)),
            template: cfg.and_then(CommandTemplate::new),
            rules: cfg.map(runner::rule_commands).unwrap_or_default(),
            registry: None,
            timeout: cfg.and_then(|c| c.timeout),
            kill_grace: cfg.map_or(Duration::from_secs(2), |c| c.kill_grace),
            capture_cap: cfg
                .filter(|c| c.capture)
                .map_or(0, |c| c.capture_bytes as usize),
            audit,
            clock,
            stats: stats.clone(),
            history: history.clone(),
            children: FxHashMap::default(),
            timeouts: BTreeSet::new(),
            group_kills: BTreeSet::new(),
            pending_reads: Vec::new(),
            wake_main: false,
            observations,
            reclaims_seen: 0,
        };
        let thread = std::thread::Builder::new()
            .name("varta-recovery".into())
            .spawn(move || r.run())?;
        Ok(Recovery {
            requests: req_tx,
            waker,
            reports: rep_rx,
            thread: Some(thread),
            stats,
            history,
        })
    }

    /// The sink that forwards triggers from the event stream.
    pub fn tap(&self) -> RecoveryTap {
        RecoveryTap {
            requests: self.requests.clone(),
            waker: self.waker.clone(),
            stats: self.stats.clone(),
            wake: false,
            names: None,
        }
    }

    /// Counters of the recovery machinery.
    pub fn stats(&self) -> Arc<RecoveryStats> {
        self.stats.clone()
    }

    /// What recovery did per agent (read by the control API).
    pub fn history(&self) -> Arc<history::RecoveryHistory> {
        self.history.clone()
    }

    /// Reports waiting for the event stream (non-blocking).
    pub fn drain(&self) -> impl Iterator<Item = Report> + '_ {
        self.reports.try_iter()
    }

    /// Applies a reloaded command and policy. Returns false if the queue
    /// is full (the reload then reports that it was not applied).
    pub fn reconfigure(&self, cfg: &RecoveryConfig) -> bool {
        let ok = self
            .requests
            .try_send(Request::Reconfigure(Box::new(cfg.clone())))
            .is_ok();
        let _ = self.waker.wake();
        ok
    }

    /// Stops the thread: running children get the kill ladder within
    /// `grace`, their `complete` records and everything queued are written,
    /// then the audit log is closed. Returns the last reports.
    pub fn shutdown(mut self, grace: Duration) -> Vec<Report> {
        // A full queue must not lose the shutdown request: this blocking
        // send is on the way out, when detection is over.
        let _ = self.requests.send(Request::Shutdown(grace));
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("recovery thread panicked");
            }
        }
        self.reports.try_iter().collect()
    }
}

/// Event-stream sink feeding the recovery thread. Bounded: a full queue
/// drops the trigger and counts it, never blocks detection.
pub struct RecoveryTap {
    requests: SyncSender<Request>,
    waker: Arc<Waker>,
    stats: Arc<RecoveryStats>,
    wake: bool,
    names: Option<Names>,
}

impl RecoveryTap {
    /// Attaches each trigger's agent identity and `[[agent]]` rule from
    /// `names`, and hands its registry to the recovery thread (which turns
    /// identities into the command's placeholders and environment). Without
    /// it triggers carry only the pid: the global command runs with every
    /// field but `{pid}` rendered `unknown`.
    pub fn with_names(mut self, names: Names) -> RecoveryTap {
        // At startup the queue is empty: this cannot be refused unless the
        // recovery thread is already gone.
        if self
            .requests
            .try_send(Request::Registry(SharedRegistry(names.registry().clone())))
            .is_err()
        {
            tracing::error!("cannot hand the identity registry to the recovery thread; recovery commands will not know agent names");
        }
        let _ = self.waker.wake();
        self.names = Some(names);
        self
    }

    fn trigger(
        &self,
        pid: u32,
        kind: TriggerKind,
        origin: crate::events::Origin,
        foreign_ns: bool,
    ) -> Trigger {
        let mut t = Trigger::agent(pid, kind, origin, foreign_ns);
        if let Some(n) = &self.names {
            t.identity = n.identity(pid);
            t.rule = n.rule(pid);
        }
        t
    }

    fn send(&mut self, r: Request) {
        match self.requests.try_send(r) {
            Ok(()) => self.wake = true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.stats.triggers_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // The 1st, 2nd, 4th, 8th… drop: visible, never a flood.
                if n.is_power_of_two() {
                    tracing::error!(
                        dropped_total = n,
                        "recovery trigger queue full (the recovery thread is not keeping up); a stall or exit was not handed to recovery"
                    );
                }
            }
        }
    }
}

impl Sink for RecoveryTap {
    #[inline]
    fn on_event(&mut self, _at_ns: u64, event: &Event) {
        match *event {
            Event::Stall {
                pid,
                origin,
                foreign_ns,
                ..
            } => {
                let t = self.trigger(pid, TriggerKind::Stall, origin, foreign_ns);
                self.send(Request::Trigger(t))
            }
            Event::Exit {
                pid,
                origin,
                foreign_ns,
                ..
            } => {
                let t = self.trigger(pid, TriggerKind::Exit, origin, foreign_ns);
                self.send(Request::Trigger(t))
            }
            Event::Recovered { pid, .. } => self.send(Request::Beat(Key::Pid(pid))),
            Event::Missing { name } => self.send(Request::Trigger(Trigger::missing(name))),
            Event::Present { name, .. } => self.send(Request::Beat(Key::Name(name))),
            _ => {}
        }
    }

    /// One wake-up per loop iteration, however many triggers were queued.
    fn end_of_batch(&mut self, _now_ns: u64) {
        if std::mem::take(&mut self.wake) {
            let _ = self.waker.wake();
        }
    }
}
