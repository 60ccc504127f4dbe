//! The recovery decision state machine: safety gates, one child per agent,
//! debounce, restart-storm cap and backoff. Pure (no processes, no clock of
//! its own: every call takes `now_ns`), so it is unit- and property-tested
//! on its own and the runner thread only carries out its decisions.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use rustc_hash::FxHashMap;

use crate::events::{Origin, RefusedReason};
use crate::identity::{IdentityId, NameId};

/// What set recovery off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TriggerKind {
    /// The agent went silent for the threshold.
    Stall,
    /// The agent sent its terminal frame (dying gasp).
    Exit,
    /// No live agent of a required name (pid 0, keyed by the name).
    Missing,
}

impl TriggerKind {
    /// `VARTA_EVENT` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Stall => "stall",
            TriggerKind::Exit => "exit",
            TriggerKind::Missing => "missing",
        }
    }
}

/// Whose recovery state a trigger uses: an agent's pid, or a required
/// name (`missing` has no pid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// An agent, by pid.
    Pid(u32),
    /// A required name.
    Name(NameId),
}

/// A per-agent restart-storm cap overriding [`PolicySettings`] (an
/// `[[agent]]` rule's `recovery-max-attempts` / `recovery-window-ms`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cap {
    /// Attempts within the window; None: the global setting.
    pub max_attempts: Option<u32>,
    /// The window; None: the global setting.
    pub window_ns: Option<u64>,
}

/// One stall, exit or missing name handed to recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Agent pid (0 for `missing`).
    pub pid: u32,
    /// Stall, exit or missing.
    pub kind: TriggerKind,
    /// How the agent's beats arrive (kernel-attested for `missing`: the
    /// observer raised it, no transport is involved).
    pub origin: Origin,
    /// The agent is in another PID namespace.
    pub foreign_ns: bool,
    /// Who the agent is, when known when the trigger was raised.
    pub identity: Option<IdentityId>,
    /// The `[[agent]]` rule that applies (0-based), if any.
    pub rule: Option<u16>,
    /// The required name, for `missing`.
    pub name: Option<NameId>,
    /// The storm cap for this agent, when its rule overrides it.
    pub cap: Cap,
}

impl Trigger {
    /// A stall or exit of `pid`, nothing else known.
    pub fn agent(pid: u32, kind: TriggerKind, origin: Origin, foreign_ns: bool) -> Trigger {
        Trigger {
            pid,
            kind,
            origin,
            foreign_ns,
            identity: None,
            rule: None,
            name: None,
            cap: Cap::default(),
        }
    }

    /// `missing` of the required name `name` (pid 0).
    pub fn missing(name: NameId) -> Trigger {
        Trigger {
            kind: TriggerKind::Missing,
            name: Some(name),
            ..Trigger::agent(0, TriggerKind::Missing, Origin::KernelAttested, false)
        }
    }

    /// The policy table key: the name for `missing`, else the pid.
    pub fn key(&self) -> Key {
        match (self.kind, self.name) {
            (TriggerKind::Missing, Some(n)) => Key::Name(n),
            _ => Key::Pid(self.pid),
        }
    }
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
    /// The storm cap's window of the last trigger (its rule's, or None for
    /// the global one): attempts are kept that long.
    window_ns: Option<u64>,
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
        let span = self.window_ns.unwrap_or(s.window_ns).max(s.debounce_ns);
        Some(self.last_spawn().map_or(0, |t| t.saturating_add(span)))
    }
}

/// The per-agent recovery table and the children count.
pub struct Policy {
    settings: PolicySettings,
    table: FxHashMap<Key, Entry>,
    /// Candidate reclaim times; stale items are skipped when popped.
    expiries: BinaryHeap<Reverse<(u64, Key)>>,
    /// Pending retries, earliest first.
    deferred: BTreeSet<(u64, Key)>,
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

    /// Commands started for `key` inside its current window.
    pub fn attempts(&self, key: Key) -> u32 {
        self.table.get(&key).map_or(0, |e| e.attempts.len() as u32)
    }

    /// Whether the table has state for `key`.
    pub fn has(&self, key: Key) -> bool {
        self.table.contains_key(&key)
    }

    /// Whether `key` is currently given up.
    pub fn is_given_up(&self, key: Key) -> bool {
        self.table.get(&key).is_some_and(|e| e.given_up)
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
        let key = t.key();
        if !self.table.contains_key(&key) && !self.make_room(now_ns) {
            return Decision::Refused(RefusedReason::DebounceCapacity);
        }
        let s = self.settings;
        let max_attempts = t.cap.max_attempts.unwrap_or(s.max_attempts);
        let window_ns = t.cap.window_ns.unwrap_or(s.window_ns);
        let entry = self.table.entry(key).or_default();
        entry.window_ns = t.cap.window_ns;
        if entry.running {
            // One child per agent, however long it runs.
            return Decision::Debounced { retry_at: None };
        }
        // Forget attempts that left the sliding window.
        while entry
            .attempts
            .front()
            .is_some_and(|&a| now_ns.saturating_sub(a) >= window_ns)
        {
            entry.attempts.pop_front();
        }
        let n = entry.attempts.len() as u32;
        if n >= max_attempts {
            if !entry.given_up {
                entry.given_up = true;
                self.given_up += 1;
            }
            if let Some((at, _)) = entry.deferred.take() {
                self.deferred.remove(&(at, key));
            }
            self.note_expiry(key);
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
                    self.deferred.remove(&(at, key));
                }
                self.deferred.insert((ready, key));
                return Decision::Debounced {
                    retry_at: Some(ready),
                };
            }
        }
        if self.children >= s.max_children {
            if entry.attempts.is_empty() && entry.deferred.is_none() {
                // Its attempts all left the window: nothing worth keeping,
                // but a given-up mark goes with it.
                if entry.given_up {
                    self.given_up -= 1;
                }
                self.table.remove(&key);
            } else {
                self.note_expiry(key);
            }
            return Decision::Refused(RefusedReason::OutstandingCapacity);
        }
        if let Some((at, _)) = entry.deferred.take() {
            self.deferred.remove(&(at, key));
        }
        entry.attempts.push_back(now_ns);
        entry.running = true;
        self.children += 1;
        Decision::Spawn
    }

    /// The child for `key` ended (or never started).
    pub fn child_done(&mut self, key: Key) {
        if let Some(e) = self.table.get_mut(&key) {
            if e.running {
                e.running = false;
                self.children = self.children.saturating_sub(1);
            }
        }
        self.note_expiry(key);
    }

    /// The agent beat again after a stall: a pending retry is moot and a
    /// given-up state is cleared (for a required name: an agent of it
    /// became present). Returns whether it was given up.
    pub fn beat(&mut self, key: Key) -> bool {
        let Some(e) = self.table.get_mut(&key) else {
            return false;
        };
        if let Some((at, _)) = e.deferred.take() {
            self.deferred.remove(&(at, key));
        }
        let was = std::mem::take(&mut e.given_up);
        if was {
            self.given_up -= 1;
        }
        self.note_expiry(key);
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
        while let Some(&(at, key)) = self.deferred.first() {
            if at > now_ns {
                break;
            }
            self.deferred.pop_first();
            if let Some(e) = self.table.get_mut(&key) {
                if let Some((_, t)) = e.deferred.take() {
                    out.push(t);
                }
            }
        }
        out
    }

    fn note_expiry(&mut self, key: Key) {
        if let Some(at) = self.table.get(&key).and_then(|e| e.expiry(&self.settings)) {
            self.expiries.push(Reverse((at, key)));
        }
        // Every state change queues a candidate and stale ones are only
        // skipped when popped: rebuild from the table so the heap stays
        // proportional to it however long agents keep flapping.
        if self.expiries.len() > 4 * self.table.len().max(16) {
            let s = self.settings;
            self.expiries = self
                .table
                .iter()
                .filter_map(|(&key, e)| e.expiry(&s).map(|at| Reverse((at, key))))
                .collect();
        }
    }

    /// Reclaims entries whose windows have all passed, oldest first, until
    /// one slot is free. Never evicts an entry still inside its window, with
    /// a running child or a pending retry: a full table refuses instead.
    fn make_room(&mut self, now_ns: u64) -> bool {
        let cap = self.settings.table_capacity as usize;
        while self.table.len() >= cap {
            let Some(&Reverse((at, key))) = self.expiries.peek() else {
                return false;
            };
            if at > now_ns {
                return false;
            }
            self.expiries.pop();
            match self.table.get(&key).map(|e| e.expiry(&self.settings)) {
                Some(Some(real)) if real <= now_ns => {
                    let was_given_up = self.table.remove(&key).is_some_and(|e| e.given_up);
                    self.given_up -= u32::from(was_given_up);
                    self.reclaims += 1;
                }
                // Not reclaimable yet: its real expiry is queued again.
                Some(Some(real)) => self.expiries.push(Reverse((real, key))),
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
        Trigger::agent(pid, TriggerKind::Stall, Origin::KernelAttested, false)
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
        p.child_done(Key::Pid(1));
        assert_eq!(p.decide(10_001 * MS, stall(1)), Decision::Spawn);
    }

    #[test]
    fn debounce_and_backoff_defer_then_retry() {
        let mut p = Policy::new(settings());
        assert_eq!(p.decide(0, stall(1)), Decision::Spawn);
        p.child_done(Key::Pid(1));
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
        p.child_done(Key::Pid(1));
        // Two attempts in the window: backoff doubles to 2 s.
        assert_eq!(
            p.decide(2000 * MS, stall(1)),
            Decision::Debounced {
                retry_at: Some(3000 * MS)
            }
        );
        // A beat cancels the retry.
        assert!(!p.beat(Key::Pid(1)));
        assert!(p.due(10_000 * MS).is_empty());
    }

    #[test]
    fn storm_cap_gives_up_until_window_has_room() {
        let mut p = Policy::new(settings());
        let mut now = 0;
        for _ in 0..3 {
            assert_eq!(p.decide(now, stall(1)), Decision::Spawn);
            p.child_done(Key::Pid(1));
            now += 10_000 * MS;
        }
        assert_eq!(p.decide(now, stall(1)), Decision::GivenUp);
        assert!(p.is_given_up(Key::Pid(1)));
        assert!(p.beat(Key::Pid(1)), "a beat clears given_up");
        assert!(!p.is_given_up(Key::Pid(1)));
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
            p.child_done(Key::Pid(pid));
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
        p.child_done(Key::Pid(1));
        assert_eq!(p.decide(0, stall(3)), Decision::Spawn);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Trigger(u32),
        Done(u32),
        Beat(u32),
        Advance(u64),
    }

    use crate::identity::NameId;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..8).prop_map(Op::Trigger),
            (0u32..8).prop_map(Op::Done),
            (0u32..8).prop_map(Op::Beat),
            (0u64..20_000).prop_map(|ms| Op::Advance(ms * MS)),
        ]
    }

    /// Agent `k` of the property test: 0..4 stall with the global cap,
    /// 4..6 stall with a rule's tighter cap over a longer window, 6..8 a
    /// missing required name (keyed by name, pid 0).
    fn trigger_of(k: u32) -> Trigger {
        match k {
            0..=3 => stall(k),
            4 | 5 => Trigger {
                cap: rule_cap(),
                ..stall(k)
            },
            _ => Trigger::missing(NameId(k)),
        }
    }

    fn rule_cap() -> Cap {
        Cap {
            max_attempts: Some(1),
            window_ns: Some(120_000 * MS),
        }
    }

    proptest! {
        /// Invariants under any sequence: the table and children stay
        /// bounded, a key (pid or required name) never has two children,
        /// and no key gets more spawns within its window than its cap (the
        /// rule's where it overrides the global one).
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..300)) {
            let s = settings();
            let mut p = Policy::new(s);
            let mut now = 0u64;
            let mut running = std::collections::HashSet::new();
            let mut spawns: std::collections::HashMap<Key, Vec<u64>> = Default::default();
            let mut spawned = |t: Trigger, now: u64, running: &mut std::collections::HashSet<Key>| {
                let key = t.key();
                if !running.insert(key) {
                    return Err(format!("two children for {key:?}"));
                }
                let v = spawns.entry(key).or_default();
                v.push(now);
                let window = t.cap.window_ns.unwrap_or(s.window_ns);
                let cap = t.cap.max_attempts.unwrap_or(s.max_attempts);
                let in_window = v.iter().filter(|&&a| now - a < window).count();
                if in_window as u32 > cap {
                    return Err(format!("{in_window} spawns of {key:?} in its window"));
                }
                Ok(())
            };
            for o in ops {
                match o {
                    Op::Trigger(k) => {
                        let t = trigger_of(k);
                        if p.decide(now, t) == Decision::Spawn {
                            if let Err(e) = spawned(t, now, &mut running) {
                                prop_assert!(false, "{}", e);
                            }
                        }
                    }
                    Op::Done(k) => {
                        let key = trigger_of(k).key();
                        if running.remove(&key) {
                            p.child_done(key);
                        }
                    }
                    Op::Beat(k) => {
                        p.beat(trigger_of(k).key());
                    }
                    Op::Advance(d) => {
                        now += d;
                        for t in p.due(now) {
                            if p.decide(now, t) == Decision::Spawn {
                                if let Err(e) = spawned(t, now, &mut running) {
                                    prop_assert!(false, "{}", e);
                                }
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
            // (the longest, a rule's) has passed, any full table makes
            // room: nothing is stranded.
            for key in running.drain() {
                p.child_done(key);
            }
            for k in 0..8 {
                p.beat(trigger_of(k).key());
            }
            let later = now + rule_cap().window_ns.unwrap_or(0).max(s.window_ns) + s.debounce_ns;
            prop_assert_eq!(p.decide(later, stall(1000)), Decision::Spawn);
        }
    }

    #[test]
    fn a_rule_cap_overrides_the_global_one_and_keeps_its_entry_for_its_window() {
        let mut p = Policy::new(PolicySettings {
            table_capacity: 1,
            ..settings()
        });
        let t = Trigger {
            cap: rule_cap(),
            ..stall(1)
        };
        assert_eq!(p.decide(0, t), Decision::Spawn);
        p.child_done(Key::Pid(1));
        // One attempt allowed: the second, past debounce, gives up.
        assert_eq!(p.decide(5_000 * MS, t), Decision::GivenUp);
        p.beat(Key::Pid(1));
        // The global window (60 s) has passed but the rule's (120 s) has
        // not: the entry is not reclaimed for another agent.
        assert_eq!(
            p.decide(90_000 * MS, stall(2)),
            Decision::Refused(RefusedReason::DebounceCapacity)
        );
        assert_eq!(p.decide(90_000 * MS, t), Decision::GivenUp);
        assert_eq!(p.decide(120_000 * MS, t), Decision::Spawn);
    }

    #[test]
    fn missing_is_keyed_by_name_apart_from_pid_0() {
        let mut p = Policy::new(settings());
        let a = Trigger::missing(NameId(1));
        let b = Trigger::missing(NameId(2));
        assert_eq!(
            (a.pid, a.kind, a.key()),
            (0, TriggerKind::Missing, Key::Name(NameId(1)))
        );
        assert_eq!(p.decide(0, a), Decision::Spawn);
        // Another name is another entry; pid 0 of a stall is a third.
        assert_eq!(p.decide(0, b), Decision::Spawn);
        assert_eq!(p.decide(0, a), Decision::Debounced { retry_at: None });
        p.child_done(Key::Name(NameId(1)));
        // Within debounce: retried later, unless the name becomes present.
        assert!(matches!(
            p.decide(MS, a),
            Decision::Debounced { retry_at: Some(_) }
        ));
        assert!(!p.beat(Key::Name(NameId(1))));
        assert!(p.due(u64::MAX).is_empty());
    }
}
