//! The one internal event stream. Everything the observer notices — a beat,
//! a stall, a rejected datagram, a clock jump — becomes an [`Event`] handed
//! to every [`Sink`] in order. Sinks (file export, counters, later recovery,
//! audit and metrics) never see the tracker or the sockets, only events.
//!
//! Events are small `Copy` values: emitting one allocates nothing.

use varta_vlp::{DecodeError, Status};

/// How a beat reached the observer; pinned per pid by its first beat
/// (defined with the configuration, whose `[[agent]]` rules match on it).
pub use varta_config::AgentOrigin as Origin;

/// Why a well-formed datagram was not accepted as a beat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Sender's uid differs from the observer's.
    ForeignUid,
    /// Sender lives in another PID namespace (and that is not allowed).
    CrossNamespace,
    /// Kernel could not map the sender's pid into our namespace (pid 0).
    PidNotVisible,
    /// pid above `/proc/sys/kernel/pid_max`.
    PidAboveMax,
    /// Nonce not newer than the last accepted one (replay / reordering).
    OutOfOrder,
    /// Terminal frame whose timestamp is not newer than the last one.
    TerminalReplay,
    /// Per-pid token bucket empty.
    RateLimitedPid,
    /// Global token bucket empty.
    RateLimitedGlobal,
    /// Datagram arrived without credentials (should not happen with SO_PASSCRED).
    NoCredentials,
    /// Secure UDP: a sealed datagram whose AEAD nonce (IV prefix and
    /// counter) or, for a new IV prefix, whose nonce or terminal timestamp
    /// was already seen for this pid (protocol replay rules).
    Replay,
    /// Unix socket: the frame's pid differs from the kernel's and the
    /// sender exited before its datagram was read (or, rarely, its
    /// `/proc/<pid>/ns/pid` is unreadable), so its PID namespace could not
    /// be checked; cross-namespace agents are not allowed.
    SenderGone,
}

impl RejectReason {
    /// All reasons, for pre-registering counters.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::ForeignUid,
        RejectReason::CrossNamespace,
        RejectReason::PidNotVisible,
        RejectReason::PidAboveMax,
        RejectReason::OutOfOrder,
        RejectReason::TerminalReplay,
        RejectReason::RateLimitedPid,
        RejectReason::RateLimitedGlobal,
        RejectReason::NoCredentials,
        RejectReason::Replay,
        RejectReason::SenderGone,
    ];

    /// snake_case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::ForeignUid => "foreign_uid",
            RejectReason::CrossNamespace => "cross_namespace",
            RejectReason::PidNotVisible => "pid_not_visible",
            RejectReason::PidAboveMax => "pid_above_max",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::TerminalReplay => "terminal_replay",
            RejectReason::RateLimitedPid => "rate_limited_pid",
            RejectReason::RateLimitedGlobal => "rate_limited_global",
            RejectReason::NoCredentials => "no_credentials",
            RejectReason::Replay => "replay",
            RejectReason::SenderGone => "sender_gone",
        }
    }

    /// Index into [`RejectReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Something the observer noticed. `pid` is always the pid as the observer
/// tracks it (kernel view for UDS agents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An accepted regular beat.
    Beat {
        /// Agent pid.
        pid: u32,
        /// Beat nonce.
        nonce: u64,
        /// Reported status.
        status: Status,
        /// Application payload.
        payload: u32,
        /// Transport origin.
        origin: Origin,
    },
    /// No accepted beat for at least the threshold; once per silence run.
    Stall {
        /// Agent pid.
        pid: u32,
        /// Last accepted nonce.
        last_nonce: u64,
        /// Observer time of the last accepted beat.
        last_beat_ns: u64,
        /// Pinned origin (recovery consults it).
        origin: Origin,
        /// The agent lives in another PID namespace than the observer
        /// (admitted under `--allow-cross-namespace-agents`); its pid means
        /// nothing to a recovery command here.
        foreign_ns: bool,
    },
    /// First accepted beat after a stall or exit.
    Recovered {
        /// Agent pid.
        pid: u32,
        /// Nonce of the reviving beat.
        nonce: u64,
        /// Its status.
        status: Status,
        /// Its payload.
        payload: u32,
        /// How long the agent was silent.
        silent_ns: u64,
    },
    /// Accepted terminal (dying-gasp) frame.
    Exit {
        /// Agent pid.
        pid: u32,
        /// Sender timestamp of the terminal frame.
        timestamp: u64,
        /// Payload of the terminal frame.
        payload: u32,
        /// Pinned origin.
        origin: Origin,
        /// As for [`Event::Stall`].
        foreign_ns: bool,
    },
    /// Frame pid differs from the kernel-attested sender pid.
    AuthFailure {
        /// pid the frame claimed.
        claimed_pid: u32,
        /// pid the kernel reported.
        kernel_pid: u32,
    },
    /// Beat for a pid whose pinned origin differs.
    OriginConflict {
        /// Agent pid.
        pid: u32,
        /// Origin pinned by the first beat.
        pinned: Origin,
        /// Origin of this beat.
        got: Origin,
    },
    /// Beat for a pid pinned to another PID namespace.
    NamespaceConflict {
        /// Agent pid.
        pid: u32,
        /// Namespace inode pinned by the slot.
        pinned: u64,
        /// Namespace inode of this sender.
        got: u64,
    },
    /// 32-byte datagram that is not a legal frame.
    DecodeError(DecodeError),
    /// Datagram of the wrong length (counted as truncated, spec §1).
    Truncated {
        /// Bytes received (capped at the receive buffer).
        len: u32,
    },
    /// Datagram refused before tracking.
    Rejected {
        /// pid involved (0 when unknown).
        pid: u32,
        /// Why.
        reason: RejectReason,
    },
    /// A slot was reclaimed to make room for a new pid.
    Eviction {
        /// Evicted pid.
        pid: u32,
        /// Whether the evicted agent was still live (balanced policy).
        was_live: bool,
    },
    /// New pid refused because the tracker is full.
    CapacityExceeded {
        /// Refused pid.
        pid: u32,
    },
    /// The pid now belongs to a different process (start time changed): the
    /// slot starts a new life.
    NewLife {
        /// Agent pid.
        pid: u32,
    },
    /// A nonce wrapped from near `u64::MAX` to a small value (accepted).
    NonceWrap {
        /// Agent pid.
        pid: u32,
    },
    /// Ancillary data truncated (`MSG_CTRUNC`): datagram dropped.
    Ctrunc,
    /// Socket receive error.
    Io {
        /// errno.
        errno: i32,
    },
    /// Observer clock went backwards; clamped.
    ClockRegression {
        /// How far back.
        back_ns: u64,
    },
    /// Observer woke more than 5 s late (suspend, VM pause); agents get one
    /// threshold of grace.
    ClockJump {
        /// How late.
        forward_ns: u64,
    },
    /// Secure UDP: no configured key opened a sealed datagram (wrong key,
    /// tampering, corruption, or a layout no key is configured for).
    DecryptFailure {
        /// 64-byte master-key layout (else the 60-byte shared-key one).
        master: bool,
        /// Cleartext pid of a master-key datagram (unauthenticated: only a
        /// hint for the log); 0 for the shared-key layout.
        wire_pid: u32,
        /// AEAD opens tried on it.
        attempts: u32,
        /// Source address.
        from: std::net::SocketAddr,
    },
    /// Secure UDP: a new sender was refused because the replay table is
    /// full of senders that are still live.
    SenderStateFull {
        /// The refused (authenticated) pid.
        pid: u32,
    },
    /// The agent's identity and policy rule are known (once per life;
    /// again after a reload changed its rule).
    Identified {
        /// Agent pid.
        pid: u32,
        /// Its interned identity (name, unit, comm, …).
        identity: crate::identity::IdentityId,
        /// The `[[agent]]` rule that applies (0-based), if any.
        rule: Option<u16>,
    },
    /// A required agent name has no live agent (after its startup grace).
    Missing {
        /// The required name.
        name: crate::identity::NameId,
    },
    /// A live agent of a missing (or not yet seen) required name appeared.
    Present {
        /// The required name.
        name: crate::identity::NameId,
        /// The agent that made it present.
        pid: u32,
    },
    /// Something the recovery runner did for an agent.
    Recovery {
        /// Agent pid.
        pid: u32,
        /// Recovery child pid (0 when no child is involved).
        child: u32,
        /// What happened.
        outcome: RecoveryOutcome,
    },
}

/// Why recovery was refused (the original's reason tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusedReason {
    /// The agent lives in another PID namespace.
    CrossNamespaceAgent,
    /// The agent's beats are not kernel-attested.
    UnauthenticatedTransport,
    /// The per-agent recovery table is full of entries still in their window.
    DebounceCapacity,
    /// Too many recovery children are running.
    OutstandingCapacity,
}

impl RefusedReason {
    /// Every reason, in [`RefusedReason::index`] order.
    pub const ALL: [RefusedReason; 4] = [
        RefusedReason::CrossNamespaceAgent,
        RefusedReason::UnauthenticatedTransport,
        RefusedReason::DebounceCapacity,
        RefusedReason::OutstandingCapacity,
    ];

    /// The audit-log and metric token.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusedReason::CrossNamespaceAgent => "cross_namespace_agent",
            RefusedReason::UnauthenticatedTransport => "unauthenticated_transport",
            RefusedReason::DebounceCapacity => "debounce_capacity",
            RefusedReason::OutstandingCapacity => "outstanding_capacity",
        }
    }

    /// Position in [`RefusedReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What one recovery trigger or child came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// A child was started.
    Spawned,
    /// Not started: a child for this agent still runs, the debounce window
    /// has not passed, or the storm backoff holds it (then it is retried
    /// when the backoff ends, unless the agent beats first).
    Debounced,
    /// The child exited with status 0.
    ReapedZero,
    /// The child exited non-zero or died of a signal we did not send.
    ReapedNonzero {
        /// Exit code, or 128 + signal number.
        code: i32,
    },
    /// The child overran `--recovery-timeout-ms` (or shutdown) and was
    /// killed with its process group.
    Killed,
    /// The command could not be started.
    SpawnFailed {
        /// errno (0 when unknown).
        errno: i32,
    },
    /// A safety gate refused it.
    Refused(RefusedReason),
    /// Restart-storm cap reached: no more attempts until the agent beats
    /// again and the window has room.
    GivenUp,
    /// A given-up agent beat again; its given_up state is cleared.
    GivenUpCleared,
}

impl RecoveryOutcome {
    /// Every outcome label, in [`RecoveryOutcome::index`] order: the
    /// original's `varta_recovery_outcomes_total` labels plus ours.
    pub const LABELS: [&'static str; 13] = [
        "spawned",
        "debounced",
        "reaped_zero",
        "reaped_nonzero",
        "killed",
        "spawn_failed",
        "refused_cross_namespace",
        "refused_unauthenticated_transport",
        "refused_debounce_capacity",
        "refused_outstanding_capacity",
        "given_up",
        "given_up_cleared",
        // Reserved for the UDP listeners' socket-mode-only origin (the
        // original's label), so label indices stay stable.
        "refused_socket_mode_only",
    ];

    /// Position of this outcome's label in [`RecoveryOutcome::LABELS`].
    pub const fn index(&self) -> usize {
        match self {
            RecoveryOutcome::Spawned => 0,
            RecoveryOutcome::Debounced => 1,
            RecoveryOutcome::ReapedZero => 2,
            RecoveryOutcome::ReapedNonzero { .. } => 3,
            RecoveryOutcome::Killed => 4,
            RecoveryOutcome::SpawnFailed { .. } => 5,
            RecoveryOutcome::Refused(r) => 6 + r.index(),
            RecoveryOutcome::GivenUp => 10,
            RecoveryOutcome::GivenUpCleared => 11,
        }
    }

    /// The outcome label.
    pub const fn as_str(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

impl Event {
    /// Every kind, in [`Event::index`] order: lets counters and limiters
    /// keep one array slot per kind instead of a map.
    pub const KINDS: [&'static str; 24] = [
        "beat",
        "stall",
        "recovered",
        "exit",
        "auth_failure",
        "origin_conflict",
        "namespace_conflict",
        "decode_error",
        "truncated",
        "rejected",
        "eviction",
        "capacity_exceeded",
        "new_life",
        "nonce_wrap",
        "ctrunc",
        "io",
        "clock_regression",
        "clock_jump",
        "recovery",
        "decrypt_failure",
        "sender_state_full",
        "identified",
        "missing",
        "present",
    ];

    /// Position of this event's kind in [`Event::KINDS`].
    pub const fn index(&self) -> usize {
        match self {
            Event::Beat { .. } => 0,
            Event::Stall { .. } => 1,
            Event::Recovered { .. } => 2,
            Event::Exit { .. } => 3,
            Event::AuthFailure { .. } => 4,
            Event::OriginConflict { .. } => 5,
            Event::NamespaceConflict { .. } => 6,
            Event::DecodeError(_) => 7,
            Event::Truncated { .. } => 8,
            Event::Rejected { .. } => 9,
            Event::Eviction { .. } => 10,
            Event::CapacityExceeded { .. } => 11,
            Event::NewLife { .. } => 12,
            Event::NonceWrap { .. } => 13,
            Event::Ctrunc => 14,
            Event::Io { .. } => 15,
            Event::ClockRegression { .. } => 16,
            Event::ClockJump { .. } => 17,
            Event::Recovery { .. } => 18,
            Event::DecryptFailure { .. } => 19,
            Event::SenderStateFull { .. } => 20,
            Event::Identified { .. } => 21,
            Event::Missing { .. } => 22,
            Event::Present { .. } => 23,
        }
    }

    /// Stable snake_case kind used by exports and counters.
    pub const fn kind(&self) -> &'static str {
        Self::KINDS[self.index()]
    }

    /// True for the high-volume `beat` kind (exports may batch or skip it).
    pub const fn is_beat(&self) -> bool {
        matches!(self, Event::Beat { .. })
    }

    /// The agent pid the event is about, if any.
    pub const fn pid(&self) -> Option<u32> {
        match *self {
            Event::Beat { pid, .. }
            | Event::Stall { pid, .. }
            | Event::Recovered { pid, .. }
            | Event::Exit { pid, .. }
            | Event::OriginConflict { pid, .. }
            | Event::NamespaceConflict { pid, .. }
            | Event::Eviction { pid, .. }
            | Event::CapacityExceeded { pid }
            | Event::NewLife { pid }
            | Event::NonceWrap { pid }
            | Event::SenderStateFull { pid }
            | Event::Identified { pid, .. }
            | Event::Present { pid, .. }
            | Event::Recovery { pid, .. } => Some(pid),
            Event::DecryptFailure {
                master: true,
                wire_pid,
                ..
            } => Some(wire_pid),
            Event::AuthFailure { claimed_pid, .. } => Some(claimed_pid),
            Event::Rejected { pid, .. } if pid != 0 => Some(pid),
            _ => None,
        }
    }
}

/// A consumer of the event stream. Called synchronously on the observer
/// thread, so implementations must not block for long; a sink that needs
/// slow I/O buffers and asks for a wake-up through [`Sink::next_deadline`].
pub trait Sink {
    /// One event, stamped with observer time (ns since start).
    fn on_event(&mut self, at_ns: u64, event: &Event);

    /// End of a loop iteration: push out what must be visible now.
    fn end_of_batch(&mut self, _now_ns: u64) {}

    /// Observer time at which the sink wants `end_of_batch` called even if
    /// nothing else happens (e.g. a beat-flush deadline).
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// Graceful shutdown: flush everything.
    fn shutdown(&mut self) {}
}

/// Fans events out to every sink, in registration order.
#[derive(Default)]
pub struct EventBus {
    sinks: Vec<Box<dyn Sink>>,
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> EventBus {
        EventBus::default()
    }

    /// Adds a sink; it sees every event emitted from now on.
    pub fn add(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// Replaces all sinks after `keep` (used when a reload reopens exports).
    pub fn truncate(&mut self, keep: usize) {
        for mut s in self.sinks.drain(keep.min(self.sinks.len())..) {
            s.shutdown();
        }
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether there are no sinks.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Delivers one event to every sink.
    #[inline]
    pub fn emit(&mut self, at_ns: u64, event: Event) {
        for s in &mut self.sinks {
            s.on_event(at_ns, &event);
        }
    }

    /// Lets every sink push out what must be visible now.
    pub fn end_of_batch(&mut self, now_ns: u64) {
        for s in &mut self.sinks {
            s.end_of_batch(now_ns);
        }
    }

    /// Earliest wake-up any sink asked for.
    pub fn next_deadline(&self) -> Option<u64> {
        self.sinks.iter().filter_map(|s| s.next_deadline()).min()
    }

    /// Flushes and closes every sink.
    pub fn shutdown(&mut self) {
        for s in &mut self.sinks {
            s.shutdown();
        }
    }
}

/// A sink that keeps every event in memory: for tests and for embedding the
/// observer in-process. Clones share one buffer.
#[derive(Clone, Default)]
pub struct Recorder {
    events: std::rc::Rc<std::cell::RefCell<Vec<(u64, Event)>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Takes the recorded events, leaving the buffer empty.
    pub fn take(&self) -> Vec<(u64, Event)> {
        std::mem::take(&mut self.events.borrow_mut())
    }

    /// Kinds of the recorded events (keeps them recorded).
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events.borrow().iter().map(|(_, e)| e.kind()).collect()
    }
}

impl Sink for Recorder {
    fn on_event(&mut self, at_ns: u64, event: &Event) {
        self.events.borrow_mut().push((at_ns, *event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinct() {
        let mut kinds = Event::KINDS.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), Event::KINDS.len());
        assert_eq!(Event::Ctrunc.kind(), "ctrunc");
        assert_eq!(Event::ClockJump { forward_ns: 1 }.index(), 17);
    }
}
