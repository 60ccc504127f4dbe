//! The event loop: one thread, one owner of agent state, woken only by
//! socket readiness, signals and a timerfd armed at the next deadline (a
//! stall, a sink's flush, `--shutdown-after-secs`, or — only while something
//! watches the loop's liveness — the next liveness tick). No fixed sleeps,
//! no periodic scans.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::audit::{AuditCounters, AuditLog, AuditSettings};
use crate::clock::ObserverClock;
use crate::config::{ClockSource, Config};
use crate::events::{Event, EventBus, Sink};
use crate::export::counters::{Counters, CountingSink};
use crate::export::log::LogSink;
#[cfg(feature = "http")]
use crate::export::metrics::endpoint::{MetricsEndpoint, OvershootSink};
use crate::export::metrics::Observations;
#[cfg(feature = "http")]
use crate::export::metrics::{ByNameSink, MetricsSources, Stage};
use crate::health::notify::SystemdEnv;
use crate::health::{self, hw, LoopHealth, Pulse};
use crate::identity::Registry;
use crate::ingest::{BindError, UdpBindError, UdpListener, UdsListener, UdsPolicy};
use crate::policy::{Names, Policy};
use crate::recovery::{Recovery, RecoveryStats};
use crate::tracker::{Tracker, TrackerSettings};

#[cfg(feature = "http")]
mod control;
#[cfg(feature = "runtime-config")]
mod reload;
mod setup;
mod watching;

#[cfg(feature = "runtime-config")]
pub use reload::ReloadOutcome;

const UDS: Token = Token(0);
const TIMER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// One waker for everything another thread needs the loop for: recovery
/// reports and metrics snapshots (mio allows one waker per poll).
const WAKE: Token = Token(3);
const UDP: Token = Token(4);

/// Datagrams handled per wake-up before stalls are checked again: bounds
/// detection latency under a flood while keeping batches large.
const DRAIN_BUDGET: u32 = 4096;

/// Waking this much later than the armed deadline means the observer itself
/// was paused (suspend with boottime, VM stop, SIGSTOP).
const JUMP_NS: u64 = 5_000_000_000;

/// Why the daemon could not start or had to stop (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The UDP listener could not start.
    #[error(transparent)]
    Udp(#[from] UdpBindError),
    /// A sink (export file) could not be opened.
    #[error("{0}")]
    Sink(String),
    /// The Prometheus endpoint could not start.
    #[error("{0}")]
    Metrics(String),
    /// The audit log could not be opened.
    #[error("{0}")]
    Audit(String),
    /// The recovery thread could not start.
    #[error(transparent)]
    Recovery(#[from] crate::recovery::RecoveryError),
    /// The Alertmanager push could not start.
    #[cfg(feature = "alerting")]
    #[error(transparent)]
    Alert(#[from] crate::alert::AlertError),
    /// The configuration asks for something this build leaves out.
    #[error("{0}")]
    NotBuilt(String),
    /// `--hw-watchdog` could not be set up.
    #[error(transparent)]
    HwWatchdog(#[from] hw::HwWatchdogError),
    /// `--heartbeat-file` names an impossible place.
    #[error("{0}")]
    Heartbeat(String),
    /// The control API could not start.
    #[error("{0}")]
    Control(String),
    /// `--strict-namespace-check` tripped.
    #[error("agent pid {0} is in another PID namespace and strict-namespace-check is set; run the agent in the observer's PID namespace or set allow-cross-namespace-agents")]
    CrossNamespace(u32),
    /// epoll, timerfd or signal setup failed.
    #[error("{what}: {source}")]
    Os {
        /// What failed.
        what: &'static str,
        /// OS error.
        source: std::io::Error,
    },
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Os { what, source }
}

/// Opens the configured export sinks (file export). Kept separate so a
/// reload can reopen them.
pub type SinkFactory = fn(&Config, &Names) -> Result<Vec<Box<dyn Sink>>, String>;

#[cfg(not(feature = "http"))]
impl Daemon {
    /// No control API in this build: nothing to announce.
    fn with_listeners(self) -> Daemon {
        self
    }

    /// Where the control API listens: nowhere, in a build without it.
    pub fn control_path(&self) -> Option<&Path> {
        None
    }
}

fn recovery_event(r: crate::recovery::Report) -> Event {
    Event::Recovery {
        pid: r.pid,
        child: r.child,
        outcome: r.outcome,
    }
}

/// The observer.
pub struct Daemon {
    config: Config,
    clock: ObserverClock,
    listener: UdsListener,
    /// The UDP listener for network agents, if configured.
    udp: Option<UdpListener>,
    tracker: Tracker,
    bus: EventBus,
    /// Sinks before this index survive a reload; the rest are reopened.
    #[cfg_attr(not(feature = "runtime-config"), allow(dead_code))]
    base_sinks: usize,
    #[cfg_attr(not(feature = "runtime-config"), allow(dead_code))]
    sink_factory: SinkFactory,
    /// Agent identities, rules and required names.
    policy: Policy,
    counters: Arc<Counters>,
    poll: Poll,
    timer: TimerFd,
    signals: Signals,
    armed: Option<u64>,
    shutdown_at: Option<u64>,
    recovery: Option<Recovery>,
    audit_counters: Arc<AuditCounters>,
    health: Arc<LoopHealth>,
    /// Loop side of liveness: health ticks, hardware watchdog kicks.
    pulse: Pulse,
    systemd: SystemdEnv,
    /// Someone outside (the HTTP server) judges liveness: tick when idle.
    want_liveness: bool,
    /// The Prometheus endpoint, if configured.
    #[cfg(feature = "http")]
    metrics: Option<MetricsEndpoint>,
    /// Loop measurements for /metrics (only when it is served).
    observations: Option<Arc<Observations>>,
    /// The stall threshold as the overshoot sink sees it (reload updates).
    #[cfg_attr(not(feature = "runtime-config"), allow(dead_code))]
    threshold_ns: Arc<std::sync::atomic::AtomicU64>,
    /// The control API's loop side (`--control-socket`).
    #[cfg(feature = "http")]
    control: Option<crate::control::ControlLoop>,
    /// The HTTP server when only the control socket is served.
    #[cfg(feature = "http")]
    http: Option<crate::http::HttpServer>,
}

/// Self-watchdog when systemd's watchdog is on and `--self-watchdog-secs`
/// is not given: well inside a typical `WatchdogSec=10`, so the process
/// aborts with a core dump before systemd kills it blind.
pub const AUTO_SELF_WATCHDOG: Duration = Duration::from_secs(4);

impl Daemon {
    /// The loop's liveness record (iteration count, last tick time, agent
    /// counts), shared with whoever reports health.
    pub fn health(&self) -> Arc<LoopHealth> {
        self.health.clone()
    }

    /// Makes the loop wake on a liveness tick even when idle, so that
    /// [`LoopHealth::is_alive`] means something to a reader outside the
    /// loop. Call before [`Daemon::run`].
    pub fn need_liveness(&mut self) {
        self.want_liveness = true;
    }

    /// Talks to systemd as `env` says (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`):
    /// `READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`. Without this call
    /// the daemon sends nothing. Call before [`Daemon::run`].
    pub fn set_systemd(&mut self, env: SystemdEnv) {
        self.systemd = env;
    }

    /// Shared event counters (for metrics and tests).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Counters of the recovery machinery (None without recovery).
    pub fn recovery_stats(&self) -> Option<Arc<RecoveryStats>> {
        self.recovery.as_ref().map(Recovery::stats)
    }

    /// Counters of the audit log.
    pub fn audit_counters(&self) -> Arc<AuditCounters> {
        self.audit_counters.clone()
    }

    /// The bound socket path.
    pub fn socket_path(&self) -> &Path {
        self.listener.path()
    }

    /// The UDP listener's bound address (the real port when 0 was asked
    /// for) and mode, if there is one.
    pub fn udp_addr(&self) -> Option<(std::net::SocketAddr, &'static str)> {
        self.udp.as_ref().map(|u| (u.local_addr(), u.mode()))
    }

    /// The UDP listener's key set in words (no key material).
    pub fn udp_keys(&self) -> Option<String> {
        self.udp.as_ref().map(UdpListener::describe_keys)
    }

    /// Kernel-granted receive buffer.
    pub fn granted_rcvbuf(&self) -> usize {
        self.listener.granted_rcvbuf()
    }

    /// The tracker (read-only).
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Runs until SIGINT/SIGTERM or `--shutdown-after-secs`; flushes sinks
    /// and removes the socket on the way out.
    // Stage timings feed /metrics alone: without the HTTP server they are
    // taken (as None) and never read.
    #[cfg_attr(not(feature = "http"), allow(unused_variables, unused_assignments))]
    pub fn run(&mut self) -> Result<(), DaemonError> {
        let mut events = Events::with_capacity(16);
        let mut more = false;
        let mut more_udp = false;
        let (watchdog, notifier) = self.start_watching()?;
        // The first wait must already honour --shutdown-after-secs.
        self.rearm();
        let result = loop {
            let timeout = (more || more_udp).then_some(Duration::ZERO);
            // Stage timings only when /metrics is served: no clock reads on
            // the hot path otherwise.
            let clock = |on: bool| on.then(std::time::Instant::now);
            let timed = self.observations.is_some();
            let waiting = clock(timed);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(os("epoll_wait failed")(e));
            }
            let woke = clock(timed);
            let now = self.now();
            let mut readable = more;
            let mut readable_udp = more_udp;
            let mut stop = false;
            for ev in events.iter() {
                match ev.token() {
                    UDS => readable = true,
                    UDP => readable_udp = true,
                    TIMER => {
                        // Clear the expiration count; the deadline itself is
                        // re-derived from state below.
                        let _ = self.timer.wait();
                        self.armed = None;
                    }
                    SIGNALS => stop |= self.handle_signals(now),
                    WAKE => {
                        self.policy.on_wake(now, &mut self.tracker, &mut self.bus);
                        self.emit_recovery_reports(now);
                        #[cfg(feature = "http")]
                        self.serve_snapshot(now);
                        #[cfg(feature = "http")]
                        self.serve_control(now);
                    }
                    _ => {}
                }
            }
            let mut drained_at = None;
            if readable {
                let d = self
                    .listener
                    .drain(now, DRAIN_BUDGET, &mut self.tracker, &mut self.bus);
                more = d.more;
                #[cfg(feature = "http")]
                if let (Some(o), true) = (&self.observations, d.datagrams > 0) {
                    o.ingest_batch.observe(f64::from(d.datagrams));
                }
                if let Some(pid) = d.cross_namespace {
                    if self.config.strict_namespace_check {
                        self.bus.end_of_batch(now);
                        break Err(DaemonError::CrossNamespace(pid));
                    }
                }
                drained_at = clock(timed);
            }
            if let (true, Some(udp)) = (readable_udp, &mut self.udp) {
                let d = udp.drain(now, DRAIN_BUDGET, &mut self.tracker, &mut self.bus);
                more_udp = d.more;
                #[cfg(feature = "http")]
                if let (Some(o), true) = (&self.observations, d.datagrams > 0) {
                    o.ingest_batch.observe(f64::from(d.datagrams));
                }
                drained_at = clock(timed);
            }
            let expire_start = clock(timed);
            self.tracker.expire(now, &mut self.bus);
            self.policy
                .after_batch(now, &mut self.tracker, &mut self.bus);
            self.policy.tick(now, &mut self.bus);
            let expired_at = clock(timed);
            self.bus.end_of_batch(now);
            #[cfg(feature = "http")]
            self.maintain_control();
            self.pulse.on_iteration(now, &self.tracker);
            #[cfg(feature = "http")]
            if let (Some(o), Some(waiting), Some(woke), Some(expire_start), Some(expired_at)) =
                (&self.observations, waiting, woke, expire_start, expired_at)
            {
                let secs = |a: std::time::Instant, b: std::time::Instant| {
                    b.saturating_duration_since(a).as_secs_f64()
                };
                let done = std::time::Instant::now();
                o.stage(Stage::Poll).observe(secs(waiting, woke));
                if let Some(t) = drained_at {
                    o.stage(Stage::DrainPending).observe(secs(woke, t));
                }
                o.stage(Stage::Maintenance)
                    .observe(secs(expire_start, expired_at));
                o.stage(Stage::Housekeeping).observe(secs(expired_at, done));
                o.loop_iteration.observe(secs(woke, done));
            }
            #[cfg(feature = "fault-injection")]
            health::fault::maybe_wedge(self.health.iterations());
            if stop || self.shutdown_at.is_some_and(|t| now >= t) {
                break Ok(());
            }
            self.rearm();
        };
        // The watchdog thread first, so no WATCHDOG=1 follows STOPPING=1;
        // the shutdown below (recovery grace) no longer ticks the loop.
        if let Some(w) = watchdog {
            w.stop();
        }
        if let Some(n) = &notifier {
            if let Err(e) = n.send("STOPPING=1\nSTATUS=shutting down") {
                tracing::warn!(error = %e, "cannot notify systemd of the shutdown");
            }
        }
        if let Some(r) = self.recovery.take() {
            let stats = r.stats();
            let last = r.shutdown(self.config.shutdown_grace);
            let a = &self.audit_counters;
            tracing::info!(
                triggers_dropped = stats
                    .triggers_dropped
                    .load(std::sync::atomic::Ordering::Relaxed),
                reports_dropped = stats
                    .reports_dropped
                    .load(std::sync::atomic::Ordering::Relaxed),
                audit_committed = a.records_committed(),
                audit_dropped = a.dropped_queue_full(),
                audit_write_errors = a.write_errors(),
                audit_rotations = a.rotations(),
                "recovery stopped"
            );
            let now = self.now();
            for rep in last {
                self.bus.emit(now, recovery_event(rep));
            }
        }
        self.bus.shutdown();
        self.listener.unlink_if_ours();
        #[cfg(feature = "http")]
        {
            if let Some(m) = self.metrics.take() {
                m.server.stop();
            }
            if let Some(h) = self.http.take() {
                h.stop();
            }
            self.control = None;
        }
        let totals: Vec<String> = self
            .counters
            .snapshot()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        tracing::info!(totals = %totals.join(" "), "observer stopped");
        if result.is_ok() {
            self.pulse.disarm_hw();
        }
        result
    }

    /// The address `/metrics` is served on, if any (the real port when 0
    /// was asked for).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        #[cfg(feature = "http")]
        return self.metrics.as_ref().map(|m| m.server.local_addr());
        #[cfg(not(feature = "http"))]
        None
    }

    /// A scrape is waiting: copy what it needs out of the tracker.
    #[cfg(feature = "http")]
    fn serve_snapshot(&mut self, now: u64) {
        if let Some(m) = &self.metrics {
            if m.bridge.take_wanted() {
                let given_up = self.recovery.as_ref().map_or(0, |r| {
                    r.stats()
                        .given_up
                        .load(std::sync::atomic::Ordering::Relaxed)
                });
                let names = self.policy.names();
                m.bridge.publish(
                    &self.tracker,
                    now,
                    self.listener.pid_max(),
                    given_up,
                    Some(&names),
                    &self.policy.required_states(),
                );
            }
        }
    }

    /// Puts what the recovery thread did on the event stream.
    fn emit_recovery_reports(&mut self, now: u64) {
        if let Some(r) = &self.recovery {
            for rep in r.drain() {
                self.bus.emit(now, recovery_event(rep));
            }
        }
    }

    /// Observer time, with clock guards: a backwards step is clamped and
    /// reported; waking far past the armed deadline means we were paused,
    /// so agents get a threshold of grace instead of a mass stall.
    fn now(&mut self) -> u64 {
        let (now, back) = self.clock.now();
        if let Some(back_ns) = back {
            self.bus.emit(now, Event::ClockRegression { back_ns });
        }
        if let Some(armed) = self.armed {
            if now > armed.saturating_add(JUMP_NS) {
                self.bus.emit(
                    now,
                    Event::ClockJump {
                        forward_ns: now - armed,
                    },
                );
                self.tracker.grant_grace(now);
                self.armed = None;
            }
        }
        now
    }

    /// Arms the timerfd for the earliest deadline. A later deadline than
    /// the armed one is left alone: the timer fires early, finds nothing
    /// due, and is re-armed — one cheap wake-up instead of a `timerfd_settime`
    /// per batch.
    fn rearm(&mut self) {
        let next = [
            self.tracker.next_deadline(),
            self.policy.next_deadline(),
            self.bus.next_deadline(),
            self.shutdown_at,
            self.pulse.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return;
        };
        if self.armed.is_some_and(|a| a <= next) {
            return;
        }
        let abs = self.clock.to_kernel_ns(next);
        let ts = TimeSpec::new((abs / 1_000_000_000) as i64, (abs % 1_000_000_000) as i64);
        if self
            .timer
            .set(
                Expiration::OneShot(ts),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )
            .is_ok()
        {
            self.armed = Some(next);
        }
    }

    #[cfg_attr(not(feature = "runtime-config"), allow(unused_variables))]
    fn handle_signals(&mut self, now: u64) -> bool {
        let mut stop = false;
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGHUP => {
                    #[cfg(feature = "runtime-config")]
                    self.reload(now);
                    #[cfg(not(feature = "runtime-config"))]
                    tracing::info!(
                        "SIGHUP: the configuration is compiled into this build; nothing to reload"
                    );
                }
                _ => {
                    tracing::info!(signal = sig, "shutting down");
                    stop = true;
                }
            }
        }
        stop
    }
}
