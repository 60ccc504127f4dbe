//! The recovery decision state machine: safety gates, one child per agent,
//! debounce, restart-storm cap and backoff. Pure (no processes, no clock of
//! its own: every call takes `now_ns`), so it is unit- and property-tested
//! on its own and the runner thread only carries out its decisions.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use rustc_hash::FxHashMap;

use crate::events::{Origin, RefusedReason};

/// What set recovery off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TriggerKind {
    /// The agent went silent for the threshold.
    Stall,
    /// The agent sent its terminal frame (dying gasp).
    Exit,
}

impl TriggerKind {
    /// `VARTA_EVENT` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Stall => "stall",
            TriggerKind::Exit => "exit",
        }
    }
}

/// One stall or exit handed to recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Agent pid.
    pub pid: u32,
    /// Stall or exit.
    pub kind: TriggerKind,
    /// How the agent's beats arrive.
    pub origin: Origin,
    /// The agent is in another PID namespace.
    pub foreign_ns: bool,
}

/// Policy limits, in observer nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySettings {
    /// Least time between two spawns for one pid.
    pub debounce_ns: u64,
    /// Attempts allowed per agent within `window_ns`.
    pub max_attempts: u32,
    /// Sliding window of the attempt cap.
    pub window_ns: u64,
    /// First backoff; doubles per attempt in the window.
    pub backoff_ns: u64,
    /// Backoff ceiling.
    pub backoff_cap_ns: u64,
    /// Agents with state at once.
    pub table_capacity: u32,
    /// Children running at once.
    pub max_children: u32,
    /// A network origin the operator opted in to recover (UDP listener's
    /// recovery opt-in); None: only kernel-attested agents.
    pub trusted_network_origin: Option<Origin>,
}

/// What to do with a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a child now (the attempt is already recorded).
    Spawn,
    /// Not now: a child for this agent runs (dropped), or the debounce or
    /// backoff window holds it; `retry_at` is when it is tried again unless
    /// the agent beats first.
    Debounced {
        /// Observer ns of the deferred retry, if one was scheduled.
        retry_at: Option<u64>,
    },
    /// A safety gate said no; nothing was recorded.
    Refused(RefusedReason),
    /// The storm cap is reached; the agent is given up.
    GivenUp,
}

#[derive(Debug, Default)]
struct Entry {
    /// Spawn times still inside the window, oldest first (≤ max_attempts).
    attempts: VecDeque<u64>,
    /// A child for this agent runs.
    running: bool,
    /// The storm cap was hit and no beat has been seen since.
    given_up: bool,
    /// A deferred retry: when, and what it retries.
    deferred: Option<(u64, Trigger)>,
}

impl Entry {
    fn last_spawn(&self) -> Option<u64> {
        self.attempts.back().copied()
    }

    /// Observer time from which this entry holds nothing worth keeping,
    /// or None while a child runs or a retry is pending.
    fn expiry(&self, s: &PolicySettings) -> Option<u64> {
        if self.running || self.deferred.is_some() {
            return None;
        }
        let span = s.window_ns.max(s.debounce_ns);
        Some(self.last_spawn().map_or(0, |t| t.saturating_add(span)))
    }
}

/// The per-agent recovery table and the children count.
pub struct Policy {
    settings: PolicySettings,
    table: FxHashMap<u32, Entry>,
    /// Candidate reclaim times; stale items are skipped when popped.
    expiries: BinaryHeap<Reverse<(u64, u32)>>,
    /// Pending retries, earliest first.
    deferred: BTreeSet<(u64, u32)>,
    children: u32,
    /// Entries with `given_up` set.
    given_up: u32,
    /// Entries reclaimed to make room, ever.
    reclaims: u64,
}

impl Policy {
    /// An empty table.
    pub fn new(settings: PolicySettings) -> Policy {
        Policy {
            settings,
            table: FxHashMap::default(),
            expiries: BinaryHeap::new(),
            deferred: BTreeSet::new(),
            children: 0,
            given_up: 0,
            reclaims: 0,
        }
    }

    /// Applies new limits (reload). Capacities only ever bound new entries.
    pub fn reconfigure(&mut self, settings: PolicySettings) {
        self.settings = settings;
    }

    /// Agents with state.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no agent has state.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Children counted as running.
    pub fn children(&self) -> u32 {
        self.children
    }

    /// Expired entries reclaimed to make room for a new agent, ever.
    pub fn reclaims(&self) -> u64 {
        self.reclaims
    }

    /// Agents currently given up.
    pub fn given_up_count(&self) -> u32 {
        self.given_up
    }

    /// Whether `pid` is currently given up.
    pub fn is_given_up(&self, pid: u32) -> bool {
        self.table.get(&pid).is_some_and(|e| e.given_up)
    }

    /// Decides what `t` leads to at `now_ns`. Gates come first, in the
    /// documented order, and a refusal records nothing — it does not
    /// consume the debounce window or an attempt.
    pub fn decide(&mut self, now_ns: u64, t: Trigger) -> Decision {
        let s0 = self.settings;
        if t.foreign_ns {
            return Decision::Refused(RefusedReason::CrossNamespaceAgent);
        }
        if t.origin != Origin::KernelAttested && Some(t.origin) != s0.trusted_network_origin {
            return Decision::Refused(RefusedReason::UnauthenticatedTransport);
        }
        if !self.table.contains_key(&t.pid) && !self.make_room(now_ns) {
            return Decision::Refused(RefusedReason::DebounceCapacity);
        }
        let s = self.settings;
        let entry = self.table.entry(t.pid).or_default();
        if entry.running {
            // One child per agent, however long it runs.
            return Decision::Debounced { retry_at: None };
        }
        // Forget attempts that left the sliding window.
        while entry
            .attempts
            .front()
            .is_some_and(|&a| now_ns.saturating_sub(a) >= s.window_ns)
        {
            entry.attempts.pop_front();
        }
        let n = entry.attempts.len() as u32;
        if n >= s.max_attempts {
            if !entry.given_up {
                entry.given_up = true;
                self.given_up += 1;
            }
            if let Some((at, _)) = entry.deferred.take() {
                self.deferred.remove(&(at, t.pid));
            }
            self.note_expiry(t.pid);
            return Decision::GivenUp;
        }
        if let Some(last) = entry.last_spawn() {
            let backoff = if n == 0 {
                0
            } else {
                let doubling = 1u64.checked_shl(n - 1).unwrap_or(u64::MAX);
                s.backoff_ns.saturating_mul(doubling).min(s.backoff_cap_ns)
            };
            let ready = last.saturating_add(backoff.max(s.debounce_ns));
            if now_ns < ready {
                // Held, not dropped: the agent may stay silent and have no
                // further stall to trigger on, so retry when allowed.
                if let Some((at, _)) = entry.deferred.replace((ready, t)) {
                    self.deferred.remove(&(at, t.pid));
                }
                self.deferred.insert((ready, t.pid));
                return Decision::Debounced {
                    retry_at: Some(ready),
                };
            }
        }
        if self.children >= s.max_children {
            if entry.attempts.is_empty() && entry.deferred.is_none() {
                self.table.remove(&t.pid);
            } else {
                self.note_expiry(t.pid);
            }
            return Decision::Refused(RefusedReason::OutstandingCapacity);
        }
        if let Some((at, _)) = entry.deferred.take() {
            self.deferred.remove(&(at, t.pid));
        }
        entry.attempts.push_back(now_ns);
        entry.running = true;
        self.children += 1;
        Decision::Spawn
    }

    /// The child of `pid` ended (or never started).
    pub fn child_done(&mut self, pid: u32) {
        if let Some(e) = self.table.get_mut(&pid) {
            if e.running {
                e.running = false;
                self.children = self.children.saturating_sub(1);
            }
        }
        self.note_expiry(pid);
    }

    /// The agent beat again after a stall: a pending retry is moot and a
    /// given-up state is cleared. Returns whether it was given up.
    pub fn beat(&mut self, pid: u32) -> bool {
        let Some(e) = self.table.get_mut(&pid) else {
            return false;
        };
        if let Some((at, _)) = e.deferred.take() {
            self.deferred.remove(&(at, pid));
        }
        let was = std::mem::take(&mut e.given_up);
        if was {
            self.given_up -= 1;
        }
        self.note_expiry(pid);
        was
    }

    /// Earliest pending retry.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deferred.first().map(|&(at, _)| at)
    }

    /// Takes the retries due at `now_ns`; each should go through
    /// [`Policy::decide`] again.
    pub fn due(&mut self, now_ns: u64) -> Vec<Trigger> {
        let mut out = Vec::new();
        while let Some(&(at, pid)) = self.deferred.first() {
            if at > now_ns {
                break;
            }
            self.deferred.pop_first();
            if let Some(e) = self.table.get_mut(&pid) {
                if let Some((_, t)) = e.deferred.take() {
                    out.push(t);
                }
            }
        }
        out
    }

    fn note_expiry(&mut self, pid: u32) {
        if let Some(at) = self.table.get(&pid).and_then(|e| e.expiry(&self.settings)) {
            self.expiries.push(Reverse((at, pid)));
        }
        // Every state change queues a candidate and stale ones are only
        // skipped when popped: rebuild from the table so the heap stays
        // proportional to it however long agents keep flapping.
        if self.expiries.len() > 4 * self.table.len().max(16) {
            let s = self.settings;
            self.expiries = self
                .table
                .iter()
                .filter_map(|(&pid, e)| e.expiry(&s).map(|at| Reverse((at, pid))))
                .collect();
        }
    }

    /// Reclaims entries whose windows have all passed, oldest first, until
    /// one slot is free. Never evicts an entry still inside its window, with
    /// a running child or a pending retry: a full table refuses instead.
    fn make_room(&mut self, now_ns: u64) -> bool {
        let cap = self.settings.table_capacity as usize;
        while self.table.len() >= cap {
            let Some(&Reverse((at, pid))) = self.expiries.peek() else {
                return false;
            };
            if at > now_ns {
                return false;
            }
            self.expiries.pop();
            match self.table.get(&pid).map(|e| e.expiry(&self.settings)) {
                Some(Some(real)) if real <= now_ns => {
                    let was_given_up = self.table.remove(&pid).is_some_and(|e| e.given_up);
                    self.given_up -= u32::from(was_given_up);
                    self.reclaims += 1;
                }
                // Not reclaimable yet: its real expiry is queued again.
                Some(Some(real)) => self.expiries.push(Reverse((real, pid))),
                // Running or deferred: re-queued when that ends.
                _ => {}
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn settings() -> PolicySettings {
        PolicySettings {
            debounce_ns: 1000 * MS,
            max_attempts: 3,
            window_ns: 60_000 * MS,
            backoff_ns: 1000 * MS,
            backoff_cap_ns: 60_000 * MS,
            table_capacity: 4,
            max_children: 2,
            trusted_network_origin: None,
        }
    }

    fn stall(pid: u32) -> Trigger {
        Trigger {
            pid,
            kind: TriggerKind::Stall,
            origin: Origin::KernelAttested,
            foreign_ns: false,
        }
    }

    #[test]
    fn gates_in_order_and_refusals_record_nothing() {
        let mut p = Policy::new(settings());
        let mut t = stall(1);
        t.foreign_ns = true;
        t.origin = Origin::NetworkUnverified;
        assert_eq!(
            p.decide(0, t),
            Decision::Refused(RefusedReason::CrossNamespaceAgent)
        );
        t.foreign_ns = false;
        assert_eq!(
            p.decide(0, t),
            Decision::Refused(RefusedReason::UnauthenticatedTransport)
        );
        assert!(p.is_empty());
        assert_eq!(p.decide(0, stall(1)), Decision::Spawn);
    }

    #[test]
    fn a_network_origin_is_recovered_only_with_its_opt_in() {
        let mut p = Policy::new(PolicySettings {
            trusted_network_origin: Some(Origin::NetworkVerified),
            ..settings()
        });
        let mut t = stall(1);
        t.origin = Origin::NetworkUnverified;
        assert_eq!(
            p.decide(0, t),
            Decision::Refused(RefusedReason::UnauthenticatedTransport)
        );
        t.origin = Origin::NetworkVerified;
        assert_eq!(p.decide(0, t), Decision::Spawn);
    }

    #[test]
    fn one_child_per_agent_even_past_the_window() {
        let mut p = Policy::new(settings());
        assert_eq!(p.decide(0, stall(1)), Decision::Spawn);
        assert_eq!(
            p.decide(10_000 * MS, stall(1)),
            Decision::Debounced { retry_at: None }
        );
        p.child_done(1);
        assert_eq!(p.decide(10_001 * MS, stall(1)), Decision::Spawn);
    }

    #[test]
    fn debounce_and_backoff_defer_then_retry() {
        let mut p = Policy::new(settings());
        assert_eq!(p.decide(0, stall(1)), Decision::Spawn);
        p.child_done(1);
        // Within debounce (1 s): held until 1 s after the spawn.
        assert_eq!(
            p.decide(500 * MS, stall(1)),
            Decision::Debounced {
                retry_at: Some(1000 * MS)
            }
        );
        assert_eq!(p.next_deadline(), Some(1000 * MS));
        assert!(p.due(999 * MS).is_empty());
        let due = p.due(1000 * MS);
        assert_eq!(due, vec![stall(1)]);
        assert_eq!(p.decide(1000 * MS, due[0]), Decision::Spawn);
        p.child_done(1);
        // Two attempts in the window: backoff doubles to 2 s.
        assert_eq!(
            p.decide(2000 * MS, stall(1)),
            Decision::Debounced {
                retry_at: Some(3000 * MS)
            }
        );
        // A beat cancels the retry.
        assert!(!p.beat(1));
        assert!(p.due(10_000 * MS).is_empty());
    }

    #[test]
    fn storm_cap_gives_up_until_window_has_room() {
        let mut p = Policy::new(settings());
        let mut now = 0;
        for _ in 0..3 {
            assert_eq!(p.decide(now, stall(1)), Decision::Spawn);
            p.child_done(1);
            now += 10_000 * MS;
        }
        assert_eq!(p.decide(now, stall(1)), Decision::GivenUp);
        assert!(p.is_given_up(1));
        assert!(p.beat(1), "a beat clears given_up");
        assert!(!p.is_given_up(1));
        // Still three attempts in the window: given up again.
        assert_eq!(p.decide(now + MS, stall(1)), Decision::GivenUp);
        // The first attempt (t=0) leaves the 60 s window.
        assert_eq!(p.decide(60_000 * MS, stall(1)), Decision::Spawn);
    }

    #[test]
    fn full_table_refuses_and_never_evicts_in_window() {
        let mut p = Policy::new(PolicySettings {
            max_children: 100,
            ..settings()
        });
        for pid in 1..=4 {
            assert_eq!(p.decide(0, stall(pid)), Decision::Spawn);
            p.child_done(pid);
        }
        assert_eq!(
            p.decide(MS, stall(5)),
            Decision::Refused(RefusedReason::DebounceCapacity)
        );
        // Once the oldest entries' windows passed, they make room.
        assert_eq!(p.decide(60_000 * MS, stall(5)), Decision::Spawn);
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn outstanding_capacity_refuses() {
        let mut p = Policy::new(settings());
        assert_eq!(p.decide(0, stall(1)), Decision::Spawn);
        assert_eq!(p.decide(0, stall(2)), Decision::Spawn);
        assert_eq!(
            p.decide(0, stall(3)),
            Decision::Refused(RefusedReason::OutstandingCapacity)
        );
        p.child_done(1);
        assert_eq!(p.decide(0, stall(3)), Decision::Spawn);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Trigger(u32),
        Done(u32),
        Beat(u32),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..8).prop_map(Op::Trigger),
            (0u32..8).prop_map(Op::Done),
            (0u32..8).prop_map(Op::Beat),
            (0u64..20_000).prop_map(|ms| Op::Advance(ms * MS)),
        ]
    }

    proptest! {
        /// Invariants under any sequence: the table and children stay
        /// bounded, a pid never has two children, and no pid gets more than
        /// max_attempts spawns within any window.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..300)) {
            let s = settings();
            let mut p = Policy::new(s);
            let mut now = 0u64;
            let mut running = std::collections::HashSet::new();
            let mut spawns: std::collections::HashMap<u32, Vec<u64>> = Default::default();
            for o in ops {
                match o {
                    Op::Trigger(pid) => {
                        if p.decide(now, stall(pid)) == Decision::Spawn {
                            prop_assert!(running.insert(pid), "two children for {}", pid);
                            let v = spawns.entry(pid).or_default();
                            v.push(now);
                            let in_window = v.iter().filter(|&&t| now - t < s.window_ns).count();
                            prop_assert!(in_window as u32 <= s.max_attempts);
                        }
                    }
                    Op::Done(pid) => {
                        if running.remove(&pid) {
                            p.child_done(pid);
                        }
                    }
                    Op::Beat(pid) => {
                        p.beat(pid);
                    }
                    Op::Advance(d) => {
                        now += d;
                        for t in p.due(now) {
                            if p.decide(now, t) == Decision::Spawn {
                                prop_assert!(running.insert(t.pid));
                                spawns.entry(t.pid).or_default().push(now);
                            }
                        }
                    }
                }
                prop_assert!(p.len() <= s.table_capacity as usize);
                prop_assert_eq!(
                    p.given_up_count() as usize,
                    p.table.values().filter(|e| e.given_up).count()
                );
                prop_assert!(p.expiries.len() <= 4 * p.len().max(16) + 1);
                prop_assert!(p.children() <= s.max_children);
                prop_assert_eq!(p.children() as usize, running.len());
            }
            // Once every child ended, every retry is moot and every window
            // has passed, any full table makes room: nothing is stranded.
            for pid in running.drain() {
                p.child_done(pid);
            }
            for pid in 0..8 {
                p.beat(pid);
            }
            let later = now + s.window_ns + s.debounce_ns;
            prop_assert_eq!(p.decide(later, stall(1000)), Decision::Spawn);
        }
    }
}
