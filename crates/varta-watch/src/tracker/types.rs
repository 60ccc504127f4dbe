//! The tracker's vocabulary: its settings, what it is fed ([`Incoming`]),
//! what it answers ([`Verdict`], [`Admitted`], [`AgentView`], [`Tally`]) and
//! the `/proc` reads it needs ([`ProcessProbe`]).

use varta_vlp::{Frame, Status};

use super::SlotState;
use crate::config::EvictionPolicy;
use crate::events::Origin;

/// Settings the tracker runs with (re-appliable on reload, except capacity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerSettings {
    /// Maximum tracked pids.
    pub capacity: u32,
    /// Silence before a stall, ns.
    pub threshold_ns: u64,
    /// Full-tracker behaviour.
    pub eviction: EvictionPolicy,
    /// Per-pid beats/s (0 = off).
    pub max_beat_rate: u32,
    /// Global beats/s (0 = off).
    pub global_beat_rate: u32,
    /// Global burst (0 = one second of rate).
    pub global_beat_burst: u32,
    /// The observer's own PID-namespace inode (0 = unknown: no check).
    pub own_pidns: u32,
    /// Accept agents from other PID namespaces.
    pub allow_cross_namespace: bool,
}

impl TrackerSettings {
    /// Whether an agent pinned to PID namespace `pidns` lives in another
    /// namespace than the observer (unknown on either side counts as ours,
    /// as admission does).
    pub fn is_foreign(&self, pidns: u32) -> bool {
        pidns != 0 && self.own_pidns != 0 && pidns != self.own_pidns
    }
}

/// Reads facts about a process that the kernel does not put in the
/// datagram. The Linux implementation reads `/proc`; tests fake it.
pub trait ProcessProbe {
    /// Start time of `pid` (clock ticks since boot), None if unreadable.
    fn start_time(&mut self, pid: u32) -> Option<u64>;
    /// PID-namespace inode of `pid`, None if unreadable.
    fn pid_namespace(&mut self, pid: u32) -> Option<u32>;
    /// What `pid` is (comm, executable, uid, systemd unit, container), for
    /// naming it; None if it is gone (the caller names it `unknown`). No
    /// default: a probe that can read `/proc` must not silently name every
    /// agent `unknown`. See [`crate::identity`].
    fn identity(&mut self, pid: u32) -> Option<crate::identity::RawIdentity>;
}

/// A probe that knows nothing (network origins, tests).
pub struct NoProbe;

impl ProcessProbe for NoProbe {
    fn start_time(&mut self, _pid: u32) -> Option<u64> {
        None
    }
    fn pid_namespace(&mut self, _pid: u32) -> Option<u32> {
        None
    }
    fn identity(&mut self, _pid: u32) -> Option<crate::identity::RawIdentity> {
        None
    }
}

/// A frame ready for tracking: decoded, attested, keyed by `pid`.
#[derive(Clone, Copy, Debug)]
pub struct Incoming {
    /// Tracked pid (kernel view for UDS agents).
    pub pid: u32,
    /// The decoded frame.
    pub frame: Frame,
    /// Transport origin.
    pub origin: Origin,
    /// Sender's PID-namespace inode when ingest already read it.
    pub pidns: Option<u32>,
    /// Network origins only: the sender started a new session (new
    /// secure-UDP IV prefix; every plaintext-UDP frame). A nonce that went
    /// backwards after at least a threshold of silence is then a new
    /// process on that pid rather than a replay. Ignored for the Unix
    /// socket, where /proc start times decide.
    pub new_session: bool,
    /// Network origins: the sender's address (its identity).
    pub peer: Option<std::net::SocketAddr>,
}

/// An agent whose life just began (admission or new life): its identity
/// and policy are to be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Agent pid.
    pub pid: u32,
    /// Process start time (0 for network agents): tells a late identity
    /// answer for an earlier process on the same pid from a current one.
    pub start_time: u64,
    /// Transport origin.
    pub origin: Origin,
    /// Network agents: the sender's address.
    pub peer: Option<std::net::SocketAddr>,
}

/// What happened to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (beat or terminal).
    Accepted,
    /// Dropped and counted (the event says why).
    Dropped,
    /// Dropped because the sender is in another PID namespace; the daemon
    /// makes this fatal under `--strict-namespace-check`.
    CrossNamespace,
}

/// Read-only view of one agent (snapshots, tests, a later status API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentView {
    /// pid.
    pub pid: u32,
    /// Lifecycle state.
    pub state: SlotState,
    /// Last accepted regular nonce (None before the first one).
    pub last_nonce: Option<u64>,
    /// Observer ns of the last accepted beat.
    pub last_beat_ns: u64,
    /// Last status.
    pub status: Status,
    /// Last payload.
    pub payload: u32,
    /// Pinned origin.
    pub origin: Origin,
}

/// Counters of one agent life (reset when the slot gets a new pid or the
/// pid a new process).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Accepted regular beats.
    pub beats: u64,
    /// Stalls raised.
    pub stalls: u64,
}
