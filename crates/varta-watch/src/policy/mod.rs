//! What each agent is and which `[[agent]]` rule governs it.
//!
//! When the tracker admits an agent (or a pid starts a new life), the
//! engine resolves its identity — from the peer address for network
//! agents at once, from `/proc` on the identity thread for kernel-attested
//! ones ([`resolver`]) — interns it ([`crate::identity::Registry`]), finds
//! the first matching rule and moves the agent to that rule's policy class
//! in the tracker (threshold, startup grace). Until then an agent sits in
//! a *pending* class with the longest timeouts of all, so nothing stalls
//! before its rule applies. [`Names`] lets sinks print names, and
//! [`required`] watches required names.

pub mod required;
pub mod resolver;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::config::{AgentFacts, Config, Rules};
use crate::events::{Event, EventBus, Origin};
use crate::identity::{
    attested_record, IdentityId, IdentityRecord, NameTemplate, RawIdentity, Registry,
};
use crate::tracker::{Admitted, ChangeSet, ClassTimeouts, Tracker};

/// pid → (identity, rule).
pub type Table = FxHashMap<u32, (IdentityId, Option<u16>)>;

/// (identity, rule) of the agent in one tracker slot, in 8 bytes: the
/// control API's snapshot reads these sequentially beside the slots
/// instead of cloning the pid-keyed [`Table`] (tens of MB at 1 M agents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotName {
    /// `u32::MAX`: unknown (the registry never holds 2^32 records).
    identity: u32,
    /// `u16::MAX`: no rule.
    rule: u16,
}

impl SlotName {
    /// Identity not resolved (yet).
    pub const UNKNOWN: SlotName = SlotName {
        identity: u32::MAX,
        rule: u16::MAX,
    };

    /// A resolved identity and its rule.
    pub fn new(identity: IdentityId, rule: Option<u16>) -> SlotName {
        SlotName {
            identity: identity.0,
            rule: rule.unwrap_or(u16::MAX),
        }
    }

    /// From [`SlotName::identity_raw`] and [`SlotName::rule_raw`].
    pub const fn from_raw(identity: u32, rule: u16) -> SlotName {
        SlotName { identity, rule }
    }

    /// The identity, if resolved.
    pub fn identity(self) -> Option<IdentityId> {
        (self.identity != u32::MAX).then_some(IdentityId(self.identity))
    }

    /// The rule, if one matched (and the identity is known).
    pub fn rule(self) -> Option<u16> {
        self.identity()?;
        (self.rule != u16::MAX).then_some(self.rule)
    }

    /// The packed identity (`u32::MAX`: unknown).
    #[inline]
    pub const fn identity_raw(self) -> u32 {
        self.identity
    }

    /// The packed rule (`u16::MAX`: none).
    #[inline]
    pub const fn rule_raw(self) -> u16 {
        self.rule
    }
}

/// pid → (identity, rule) for the agents whose identity is known; shared
/// by the sinks on the detection thread (log lines, JSON export, recovery
/// triggers) with the registry that turns ids into strings. The same
/// entries are also kept by tracker slot index ([`Names::by_slot`]).
#[derive(Clone)]
pub struct Names {
    table: Rc<RefCell<Table>>,
    /// Parallel to the tracker's slots: written where identities are
    /// assigned, reset when a slot's agent starts a life (admission, slot
    /// reuse, new life — all reported by `Tracker::take_admitted`), never
    /// on the beat path.
    by_slot: Rc<RefCell<Vec<SlotName>>>,
    /// Slots whose entry in `by_slot` changed since the last
    /// [`Names::drain_changes`] (control-API snapshots copy only those).
    changed: Rc<RefCell<ChangeSet>>,
    registry: Arc<Registry>,
}

impl Names {
    /// An empty table over `registry`.
    pub fn new(registry: Arc<Registry>) -> Names {
        Names {
            table: Rc::default(),
            by_slot: Rc::default(),
            changed: Rc::default(),
            registry,
        }
    }

    /// The registry of identity records.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The identity of `pid`, if known.
    pub fn identity(&self, pid: u32) -> Option<IdentityId> {
        self.table.borrow().get(&pid).map(|e| e.0)
    }

    /// The identity record of `pid`, if known.
    pub fn record(&self, pid: u32) -> Option<Arc<IdentityRecord>> {
        self.identity(pid).map(|id| self.registry.get(id))
    }

    /// The rule of `pid`, if one matched.
    pub fn rule(&self, pid: u32) -> Option<u16> {
        self.table.borrow().get(&pid).and_then(|e| e.1)
    }

    /// The string of a name id for output: the registered name, or `#N`
    /// when no names are at hand (a sink built without them).
    pub fn show(names: Option<&Names>, name: crate::identity::NameId) -> String {
        names.map_or_else(
            || format!("#{}", name.0),
            |n| n.registry.name_str(name).to_string(),
        )
    }

    /// (identity, rule) by tracker slot index, for the slots that ever had
    /// an identity (shorter than the tracker's slots: the rest are
    /// [`SlotName::UNKNOWN`]). Only meaningful for slots in use.
    pub fn by_slot(&self) -> std::cell::Ref<'_, [SlotName]> {
        std::cell::Ref::map(self.by_slot.borrow(), |v| v.as_slice())
    }

    /// Agents with a known identity.
    pub fn len(&self) -> usize {
        self.table.borrow().len()
    }

    /// Whether no agent has a known identity.
    pub fn is_empty(&self) -> bool {
        self.table.borrow().is_empty()
    }

    /// Names `pid`, held in tracker slot `slot` (None: no longer tracked).
    fn set(&self, pid: u32, slot: Option<u32>, id: IdentityId, rule: Option<u16>) {
        self.table.borrow_mut().insert(pid, (id, rule));
        if let Some(i) = slot {
            let i = i as usize;
            let mut v = self.by_slot.borrow_mut();
            if v.len() <= i {
                v.resize(i + 1, SlotName::UNKNOWN);
            }
            v[i] = SlotName::new(id, rule);
            self.changed.borrow_mut().mark(i as u32);
        }
    }

    /// Adds the slots whose (identity, rule) changed since the last call to
    /// `out` and forgets them (a control-API snapshot starting).
    pub fn drain_changes(&self, out: &mut ChangeSet) {
        self.changed.borrow_mut().drain_into(out);
    }

    fn remove(&self, pid: u32) {
        self.table.borrow_mut().remove(&pid);
    }

    /// Slot `slot` got a new agent or life: unnamed until resolved.
    fn clear_slot(&self, slot: u32) {
        if let Some(n) = self.by_slot.borrow_mut().get_mut(slot as usize) {
            *n = SlotName::UNKNOWN;
            self.changed.borrow_mut().mark(slot);
        }
    }
}

/// Counters of identity resolution.
#[derive(Default, Debug)]
pub struct PolicyStats {
    /// Lookups queued for the identity thread.
    pub requested: AtomicU64,
    /// New agents named `unknown` because the identity queue was full.
    pub queue_full: AtomicU64,
    /// Answers for a life that had already ended (pid gone or reused).
    pub stale: AtomicU64,
    /// Processes gone before `/proc` could be read (named `unknown`).
    pub gone: AtomicU64,
}

/// The identity and rule engine (owned by the detection loop).
pub struct Policy {
    rules: Rules,
    templates: Vec<Option<NameTemplate>>,
    /// Tracker class of each rule, by rule index.
    rule_class: Vec<u8>,
    classes: Vec<ClassTimeouts>,
    pending_class: u8,
    global_threshold: Duration,
    names: Names,
    resolver: Option<resolver::Resolver>,
    stats: Arc<PolicyStats>,
    required: required::Required,
    /// Agents entering (true) or leaving (false) the live set, reported by
    /// [`NamesSink`]; drained every iteration for required names.
    transitions: Rc<RefCell<Vec<(u32, bool)>>>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The tracker classes for `rules`: 0 the global policy, one per distinct
/// (threshold, grace) of the rules, and last the pending class (longest
/// threshold and longest grace of all). Returns (classes, class of each
/// rule, pending class).
fn classes_for(rules: &Rules, global: Duration) -> (Vec<ClassTimeouts>, Vec<u8>, u8) {
    let mut pairs: BTreeMap<(Duration, Duration), u8> = BTreeMap::new();
    let mut classes = vec![ClassTimeouts {
        threshold_ns: ns(global),
        grace_ns: 0,
    }];
    pairs.insert((global, Duration::ZERO), 0);
    let mut rule_class = Vec::with_capacity(rules.rules.len());
    for r in &rules.rules {
        let key = r.timeouts(global);
        let next = classes.len() as u8;
        let c = *pairs.entry(key).or_insert(next);
        if c == next {
            classes.push(ClassTimeouts {
                threshold_ns: ns(key.0),
                grace_ns: ns(key.1),
            });
        }
        rule_class.push(c);
    }
    if rules.rules.is_empty() {
        return (classes, rule_class, 0);
    }
    let pending = ClassTimeouts {
        threshold_ns: classes.iter().map(|c| c.threshold_ns).max().unwrap_or(0),
        grace_ns: classes.iter().map(|c| c.grace_ns).max().unwrap_or(0),
    };
    let p = classes.len() as u8;
    classes.push(pending);
    (classes, rule_class, p)
}

impl Policy {
    /// The engine for `cfg`; `waker` wakes the loop when identity answers
    /// wait. Starts the identity thread.
    pub fn new(
        cfg: &Config,
        registry: Arc<Registry>,
        waker: Arc<mio::Waker>,
        now_ns: u64,
    ) -> std::io::Result<Policy> {
        let resolver = resolver::Resolver::start("/proc".into(), waker)?;
        let required = required::Required::new(&cfg.rules, &registry, now_ns);
        let mut p = Policy {
            rules: Rules::default(),
            templates: Vec::new(),
            rule_class: Vec::new(),
            classes: Vec::new(),
            pending_class: 0,
            global_threshold: cfg.threshold,
            names: Names::new(registry),
            resolver: Some(resolver),
            stats: Arc::default(),
            required,
            transitions: Rc::default(),
        };
        p.load_rules(cfg);
        Ok(p)
    }

    /// The sink that keeps names and required names in step with the
    /// tracker; register it on the bus.
    pub fn sink(&self) -> NamesSink {
        NamesSink {
            names: self.names.clone(),
            transitions: self.transitions.clone(),
        }
    }

    /// Required names and whether each has a live agent.
    pub fn required_states(&self) -> Vec<(crate::identity::NameId, bool)> {
        self.required.states()
    }

    /// When the next `missing` is due, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.required.next_deadline()
    }

    /// Every loop iteration, after expiry: account agents that entered or
    /// left the live set, raise due `missing` events.
    pub fn tick(&mut self, now_ns: u64, bus: &mut EventBus) {
        if self.required.is_empty() {
            self.transitions.borrow_mut().clear();
            return;
        }
        let moves: Vec<(u32, bool)> = std::mem::take(&mut *self.transitions.borrow_mut());
        for (pid, live) in moves {
            if live {
                if let Some(rec) = self.names.record(pid) {
                    self.required.live(now_ns, pid, &rec.name, bus);
                }
            } else {
                self.required.gone(now_ns, pid);
            }
        }
        self.required.tick(now_ns, bus);
    }

    fn load_rules(&mut self, cfg: &Config) {
        self.rules = cfg.rules.clone();
        self.global_threshold = cfg.threshold;
        self.templates = self
            .rules
            .rules
            .iter()
            .map(|r| {
                r.name_template
                    .as_deref()
                    .and_then(|t| NameTemplate::parse(t).ok())
            })
            .collect();
        let (classes, rule_class, pending) = classes_for(&self.rules, cfg.threshold);
        self.classes = classes;
        self.rule_class = rule_class;
        self.pending_class = pending;
    }

    /// The sinks' view of agent names.
    pub fn names(&self) -> Names {
        self.names.clone()
    }

    /// Resolution counters.
    pub fn stats(&self) -> Arc<PolicyStats> {
        self.stats.clone()
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Gives the tracker the policy classes and starts admission records.
    pub fn setup(&self, tracker: &mut Tracker) {
        tracker.set_classes(&self.classes);
        tracker.set_admit_class(self.pending_class);
        tracker.record_admissions();
    }

    /// After every ingest batch: resolve the agents the tracker admitted.
    pub fn after_batch(&mut self, now_ns: u64, tracker: &mut Tracker, bus: &mut EventBus) {
        for a in tracker.take_admitted() {
            self.names.remove(a.pid);
            // Its slot may have named another agent (reuse) or life.
            if let Some(i) = tracker.slot_of(a.pid) {
                self.names.clear_slot(i);
            }
            self.admitted(now_ns, a, tracker, bus);
        }
    }

    fn admitted(&mut self, now_ns: u64, a: Admitted, tracker: &mut Tracker, bus: &mut EventBus) {
        if a.origin != Origin::KernelAttested {
            let rec = match a.peer {
                Some(peer) => IdentityRecord::for_peer(peer),
                None => IdentityRecord::unknown(),
            };
            self.apply(now_ns, a.pid, a.origin, rec, None, tracker, bus);
            return;
        }
        let queued = self
            .resolver
            .as_ref()
            .is_some_and(|r| r.request(a.pid, a.start_time));
        if queued {
            self.stats.requested.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            self.resolved(now_ns, a.pid, a.origin, None, tracker, bus);
        }
    }

    /// On a loop wake-up: apply the identity thread's answers.
    pub fn on_wake(&mut self, now_ns: u64, tracker: &mut Tracker, bus: &mut EventBus) {
        let Some(r) = &self.resolver else {
            return;
        };
        let replies: Vec<resolver::Reply> = r.drain().collect();
        for (pid, start, raw) in replies {
            if !tracker.is_life(pid, start) {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if raw.is_none() {
                self.stats.gone.fetch_add(1, Ordering::Relaxed);
            }
            self.resolved(now_ns, pid, Origin::KernelAttested, raw, tracker, bus);
        }
    }

    fn resolved(
        &mut self,
        now_ns: u64,
        pid: u32,
        origin: Origin,
        raw: Option<RawIdentity>,
        tracker: &mut Tracker,
        bus: &mut EventBus,
    ) {
        let rec = attested_record(raw.as_ref(), None, pid);
        self.apply(now_ns, pid, origin, rec, raw, tracker, bus);
    }

    /// Matches `rec` against the rules, renames it if the rule says so,
    /// interns it, moves the agent to its class and announces it.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        now_ns: u64,
        pid: u32,
        origin: Origin,
        rec: IdentityRecord,
        raw: Option<RawIdentity>,
        tracker: &mut Tracker,
        bus: &mut EventBus,
    ) {
        let rule = self.match_rule(&rec, origin);
        let rec = match (rule, raw.as_ref()) {
            (Some(i), Some(raw)) => match &self.templates[i] {
                Some(t) => attested_record(Some(raw), Some(t), pid),
                None => rec,
            },
            _ => rec,
        };
        let name = rec.name.clone();
        let id = self.names.registry.intern(rec);
        let class = rule.map_or(0, |i| self.rule_class[i]);
        tracker.assign_class(pid, class);
        let rule = rule.map(|i| i as u16);
        self.names.set(pid, tracker.slot_of(pid), id, rule);
        if tracker
            .get(pid)
            .is_some_and(|a| a.state == crate::tracker::SlotState::Live)
        {
            self.required.live(now_ns, pid, &name, bus);
        }
        bus.emit(
            now_ns,
            Event::Identified {
                pid,
                identity: id,
                rule,
            },
        );
    }

    fn match_rule(&self, rec: &IdentityRecord, origin: Origin) -> Option<usize> {
        if self.rules.rules.is_empty() {
            return None;
        }
        let facts = AgentFacts {
            name: Some(&rec.name),
            unit: rec.unit.as_deref(),
            comm: rec.comm.as_deref(),
            exe: rec.exe.as_deref(),
            container: rec.container.as_deref(),
            uid: rec.uid,
            origin: origin.as_str(),
            peer: rec.peer.map(|p| p.ip()),
        };
        self.rules.first_match(&facts).map(|r| r.index)
    }

    /// SIGHUP with new rules or threshold: new classes, every tracked
    /// agent's rule re-evaluated from its known identity (silence so far
    /// counts against the new timeouts). Returns one line per agent whose
    /// rule changed.
    pub fn reload(
        &mut self,
        now_ns: u64,
        cfg: &Config,
        tracker: &mut Tracker,
        bus: &mut EventBus,
    ) -> Vec<String> {
        if cfg.rules == self.rules && cfg.threshold == self.global_threshold {
            return Vec::new();
        }
        self.load_rules(cfg);
        let mut required = required::Required::new(&cfg.rules, &self.names.registry, now_ns);
        required.carry_over(std::mem::take(&mut self.required));
        self.required = required;
        tracker.set_classes(&self.classes);
        tracker.set_admit_class(self.pending_class);
        let mut moved = Vec::new();
        let names = self.names.clone();
        let mut new_rules: FxHashMap<u32, Option<u16>> = FxHashMap::default();
        tracker.reclassify(|pid, current, origin| {
            let Some(id) = names.identity(pid) else {
                // Not resolved yet: stays pending (or global without rules).
                return if current == 0 { 0 } else { self.pending_class };
            };
            let rec = names.registry.get(id);
            let rule = self.match_rule(&rec, origin);
            let old = names.rule(pid);
            if old != rule.map(|i| i as u16) {
                moved.push(format!(
                    "agent {}[{pid}]: rule {} -> {}",
                    rec.name,
                    old.map_or("none".to_string(), |i| format!("#{}", i + 1)),
                    rule.map_or("none".to_string(), |i| format!("#{}", i + 1)),
                ));
            }
            new_rules.insert(pid, rule.map(|i| i as u16));
            rule.map_or(0, |i| self.rule_class[i])
        });
        for (pid, rule) in new_rules {
            if let Some(id) = self.names.identity(pid) {
                if self.names.rule(pid) != rule {
                    self.names.set(pid, tracker.slot_of(pid), id, rule);
                    bus.emit(
                        now_ns,
                        Event::Identified {
                            pid,
                            identity: id,
                            rule,
                        },
                    );
                }
            }
        }
        moved
    }
}

/// The sink that keeps [`Names`] in step with the tracker (an evicted pid
/// forgets its identity) and reports agents entering and leaving the live
/// set for required names.
pub struct NamesSink {
    names: Names,
    transitions: Rc<RefCell<Vec<(u32, bool)>>>,
}

impl crate::events::Sink for NamesSink {
    fn on_event(&mut self, _at_ns: u64, event: &Event) {
        let moved = match *event {
            Event::Eviction { pid, .. } => {
                self.names.remove(pid);
                Some((pid, false))
            }
            Event::Stall { pid, .. } | Event::Exit { pid, .. } | Event::NewLife { pid } => {
                Some((pid, false))
            }
            Event::Recovered { pid, .. } => Some((pid, true)),
            _ => None,
        };
        if let Some(m) = moved {
            self.transitions.borrow_mut().push(m);
        }
    }
}

#[cfg(test)]
mod names_tests {
    use super::*;

    /// Naming a slot (an identity answer, long after the slot's last
    /// change) and un-naming it (a new agent in the slot) both mark it for
    /// the next control-API snapshot.
    #[test]
    fn naming_marks_the_slot() {
        let names = Names::new(Arc::new(Registry::new(16)));
        let mut c = ChangeSet::default();
        names.set(7, Some(3), IdentityId(1), Some(0));
        names.set(8, None, IdentityId(1), None);
        names.drain_changes(&mut c);
        assert_eq!((c.len(), c.contains(3)), (1, true));
        let mut c = ChangeSet::default();
        names.drain_changes(&mut c);
        assert!(c.is_empty(), "drained");
        names.clear_slot(3);
        names.clear_slot(100);
        names.drain_changes(&mut c);
        assert_eq!(
            (c.len(), c.contains(3)),
            (1, true),
            "slot 100 was never named"
        );
    }
}
