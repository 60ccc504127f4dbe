//! Required agents: a name from a `required = true` rule must have a live
//! agent. `missing` is raised when none has beaten within the rule's
//! startup grace after observer start, or after the last live one of that
//! name stalled, exited or went away and none replaced it; `present` when
//! one appears. Event-driven: the loop reports agents entering and leaving
//! the live set, and one deadline per name is armed on the loop's timer.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::Rules;
use crate::events::{Event, EventBus};
use crate::identity::{IdentityRecord, NameId, Registry};

struct Name {
    id: NameId,
    grace_ns: u64,
    live: FxHashSet<u32>,
    /// Since when the name has no live agent (None while it has one).
    empty_since: Option<u64>,
    missing: bool,
}

/// The required names and their live agents.
#[derive(Default)]
pub struct Required {
    names: Vec<Name>,
    by_name: FxHashMap<Arc<str>, usize>,
    /// pid → index of the required name it counts for.
    pids: FxHashMap<u32, usize>,
}

impl Required {
    /// The required names of `rules`, all empty since `now_ns`; their names
    /// are interned in `registry` so events can carry a [`NameId`].
    pub fn new(rules: &Rules, registry: &Registry, now_ns: u64) -> Required {
        let mut r = Required::default();
        for rule in rules.required() {
            let Some(name) = rule.required_name() else {
                continue;
            };
            let rec = IdentityRecord {
                name: Arc::from(name),
                ..IdentityRecord::unknown()
            };
            let id = registry.name_id(registry.intern(rec));
            let grace_ns = rule
                .startup_grace
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            r.by_name.insert(Arc::from(name), r.names.len());
            r.names.push(Name {
                id,
                grace_ns,
                live: FxHashSet::default(),
                empty_since: Some(now_ns),
                missing: false,
            });
        }
        r
    }

    /// Whether any name is required.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// (name, present) for every required name (metrics, status).
    pub fn states(&self) -> Vec<(NameId, bool)> {
        self.names
            .iter()
            .map(|n| (n.id, !n.live.is_empty()))
            .collect()
    }

    /// Carries live agents over from `old` (reload): names still required
    /// keep their agents and state.
    pub fn carry_over(&mut self, old: Required) {
        for (name, oi) in old.by_name {
            if let Some(&ni) = self.by_name.get(&name) {
                let o = &old.names[oi];
                let n = &mut self.names[ni];
                n.live = o.live.clone();
                n.empty_since = o.empty_since;
                n.missing = o.missing;
                for pid in &n.live {
                    self.pids.insert(*pid, ni);
                }
            }
        }
    }

    /// `pid`, named `name`, is live.
    pub fn live(&mut self, now_ns: u64, pid: u32, name: &str, bus: &mut EventBus) {
        let Some(&i) = self.by_name.get(name) else {
            return;
        };
        self.pids.insert(pid, i);
        let n = &mut self.names[i];
        if n.live.insert(pid) && n.live.len() == 1 {
            n.empty_since = None;
            n.missing = false;
            bus.emit(now_ns, Event::Present { name: n.id, pid });
        }
    }

    /// `pid` stalled, exited or went away.
    pub fn gone(&mut self, now_ns: u64, pid: u32) {
        let Some(i) = self.pids.remove(&pid) else {
            return;
        };
        let n = &mut self.names[i];
        if n.live.remove(&pid) && n.live.is_empty() {
            n.empty_since = Some(now_ns);
        }
    }

    /// When the next `missing` is due.
    pub fn next_deadline(&self) -> Option<u64> {
        self.names
            .iter()
            .filter(|n| !n.missing)
            .filter_map(|n| n.empty_since.map(|t| t.saturating_add(n.grace_ns)))
            .min()
    }

    /// Raises `missing` for every name empty for its grace.
    pub fn tick(&mut self, now_ns: u64, bus: &mut EventBus) {
        for n in &mut self.names {
            if n.missing {
                continue;
            }
            if let Some(t) = n.empty_since {
                if now_ns >= t.saturating_add(n.grace_ns) {
                    n.missing = true;
                    bus.emit(now_ns, Event::Missing { name: n.id });
                }
            }
        }
    }
}
