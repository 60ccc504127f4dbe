//! Per-name families: their cardinality is the number of distinct agent
//! names, not pids.
//!
//! - `varta_agents_by_name{name,state="alive|stalled|exited"}`: agents of
//!   each name by state, now.
//! - `varta_agent_restarts_total{name}`: pid lives identified under a name
//!   an earlier life had already been identified under (see below).
//! - `varta_agent_stalls_total{name}`: stalls of agents whose name was
//!   known when they stalled.
//! - `varta_required_agents{name,state="present|missing"}`: for every
//!   required name, 1 for its current state and 0 for the other (from the
//!   snapshot; the policy engine's view).
//!
//! [`ByNameSink`] keeps the counts on the detection thread, incrementally
//! from events — `identified`, `stall`, `recovered`, `exit`, `new_life`,
//! `eviction` — never by scanning the tracker. Beats are not looked at: an
//! agent is alive until an event says otherwise. The counts live in a
//! [`ByNameShared`] behind a mutex the sink takes once per such event; a
//! render copies them out under that lock (O(names) integers) and formats
//! after releasing it.
//!
//! **Which agents count.** An agent counts under a name from its
//! `identified` event until its life ends (`eviction`, or `new_life` when
//! the pid is reused: the new life counts again once identified). Agents
//! whose identity is still being resolved (kernel-attested agents, for the
//! few milliseconds the identity thread takes) are in `varta_agents` but in
//! no name yet. Agents whose identity could not be resolved count under
//! `unknown`, like their per-pid series.
//!
//! **Restarts, precisely.** When a pid life is identified for the first
//! time (not a reload re-identifying it), and its name had already been
//! identified for another life since the observer started — another pid,
//! or the same pid before a `new_life` or an eviction — that name's
//! restart counter goes up by one. The first life of a name does not
//! count; nor does `unknown` (unrelated processes share it). A name served
//! by k processes at once therefore counts k − 1 when they first appear;
//! `increase(varta_agent_restarts_total[1h])` is meant for spotting names
//! that keep getting new processes.
//!
//! **Bounded.** Names come from the identity registry, which holds at most
//! its capacity of records (hence of names); a name seen once keeps its
//! series (at zero when it has no agents) for the observer's lifetime.
//! The pid map holds only tracked pids (an `eviction` removes one).

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::DescriptorEncoder;
use rustc_hash::FxHashMap;

use super::enc::{counters_by, gauges_by2, Res};
use super::{lock, Snapshot};
use crate::events::{Event, Sink};
use crate::identity::{NameId, Registry};

/// One name's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameStats {
    /// Agents of this name alive now.
    pub alive: u64,
    /// Stalled now.
    pub stalled: u64,
    /// Exited (dying gasp) and still tracked.
    pub exited: u64,
    /// `varta_agent_restarts_total`.
    pub restarts: u64,
    /// `varta_agent_stalls_total`.
    pub stalls: u64,
}

impl NameStats {
    fn state(&mut self, s: State) -> &mut u64 {
        match s {
            State::Alive => &mut self.alive,
            State::Stalled => &mut self.stalled,
            State::Exited => &mut self.exited,
        }
    }
}

/// The counts the sink keeps and the renderer reads.
pub struct ByNameShared {
    /// Indexed by `NameId`; `Some` once a life was identified under it.
    table: Mutex<Vec<Option<NameStats>>>,
    registry: Arc<Registry>,
}

impl ByNameShared {
    /// Every name seen so far with its counts, in `NameId` order (a copy:
    /// the lock is held only while copying).
    pub fn snapshot(&self) -> Vec<(NameId, NameStats)> {
        lock(&self.table)
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((NameId(i as u32), (*s)?)))
            .collect()
    }

    /// The registry names are resolved in.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Alive,
    Stalled,
    Exited,
}

/// What the sink knows of one tracked pid's current life.
#[derive(Clone, Copy, Debug)]
struct Life {
    name: Option<NameId>,
    state: State,
}

/// Keeps [`ByNameShared`] in step with the event stream (detection
/// thread). Register it on the bus; it survives reloads.
pub struct ByNameSink {
    shared: Arc<ByNameShared>,
    /// Tracked pids that were identified or left the alive state; a pid
    /// that only ever beat has no entry (alive, no name).
    pids: FxHashMap<u32, Life>,
    /// Largest `NameId` index kept; larger ids (impossible with a bounded
    /// registry) are counted as `unknown`.
    max_names: usize,
}

impl ByNameSink {
    /// A sink resolving identities in `registry`.
    pub fn new(registry: Arc<Registry>) -> ByNameSink {
        let max_names = registry.capacity().max(1);
        ByNameSink {
            shared: Arc::new(ByNameShared {
                table: Mutex::new(Vec::new()),
                registry,
            }),
            pids: FxHashMap::default(),
            max_names,
        }
    }

    /// The counts, for the renderer.
    pub fn shared(&self) -> Arc<ByNameShared> {
        self.shared.clone()
    }

    fn slot(table: &mut Vec<Option<NameStats>>, name: NameId) -> &mut NameStats {
        let i = name.0 as usize;
        if table.len() <= i {
            table.resize(i + 1, None);
        }
        table[i].get_or_insert_with(NameStats::default)
    }

    /// Moves `pid` to `to`; `stall` also counts a stall for its name.
    fn transition(&mut self, pid: u32, to: State, stall: bool) {
        let life = self.pids.entry(pid).or_insert(Life {
            name: None,
            state: State::Alive,
        });
        let from = std::mem::replace(&mut life.state, to);
        let Some(name) = life.name else {
            return;
        };
        let mut t = lock(&self.shared.table);
        let s = Self::slot(&mut t, name);
        if from != to {
            let f = s.state(from);
            *f = f.saturating_sub(1);
            *s.state(to) += 1;
        }
        if stall {
            s.stalls += 1;
        }
    }

    /// `pid`'s life ended: it no longer counts under its name. With
    /// `forget`, the pid is gone from the tracker; otherwise a new life
    /// starts (alive, not yet identified).
    fn end_life(&mut self, pid: u32, forget: bool) {
        let old = if forget {
            self.pids.remove(&pid)
        } else {
            self.pids.get_mut(&pid).map(|l| {
                std::mem::replace(
                    l,
                    Life {
                        name: None,
                        state: State::Alive,
                    },
                )
            })
        };
        if let Some(Life {
            name: Some(name),
            state,
        }) = old
        {
            let mut t = lock(&self.shared.table);
            let c = Self::slot(&mut t, name).state(state);
            *c = c.saturating_sub(1);
        }
    }

    fn identified(&mut self, pid: u32, identity: crate::identity::IdentityId) {
        let mut name = self.shared.registry.name_id(identity);
        if name.0 as usize >= self.max_names {
            name = NameId::UNKNOWN;
        }
        let life = self.pids.entry(pid).or_insert(Life {
            name: None,
            state: State::Alive,
        });
        let old = life.name.replace(name);
        let state = life.state;
        if old == Some(name) {
            // A reload re-identified it (its rule changed): same life.
            return;
        }
        let mut t = lock(&self.shared.table);
        if let Some(old) = old {
            let c = Self::slot(&mut t, old).state(state);
            *c = c.saturating_sub(1);
        }
        let seen = t.get(name.0 as usize).is_some_and(Option::is_some);
        let s = Self::slot(&mut t, name);
        if old.is_none() && seen && name != NameId::UNKNOWN {
            s.restarts += 1;
        }
        *s.state(state) += 1;
    }
}

impl Sink for ByNameSink {
    #[inline]
    fn on_event(&mut self, _at_ns: u64, event: &Event) {
        match *event {
            Event::Beat { .. } => {}
            Event::Identified { pid, identity, .. } => self.identified(pid, identity),
            Event::Stall { pid, .. } => self.transition(pid, State::Stalled, true),
            Event::Exit { pid, .. } => self.transition(pid, State::Exited, false),
            Event::Recovered { pid, .. } => self.transition(pid, State::Alive, false),
            // The reused pid's next frame (accepted right after) is a beat
            // (alive; `recovered` follows if the slot was stalled) or a
            // dying gasp (`exit` follows).
            Event::NewLife { pid } => self.end_life(pid, false),
            Event::Eviction { pid, .. } => self.end_life(pid, true),
            _ => {}
        }
    }
}

/// The per-name families. `shared` None (no sink): no samples.
pub(super) fn encode(
    e: &mut DescriptorEncoder,
    shared: Option<&ByNameShared>,
    snap: &Snapshot,
) -> Res {
    let rows: Vec<(Arc<str>, NameStats)> = match shared {
        Some(s) => s
            .snapshot()
            .into_iter()
            .map(|(id, st)| (s.registry.name_str(id), st))
            .collect(),
        None => Vec::new(),
    };
    gauges_by2(
        e,
        "varta_agents_by_name",
        "Agents by name and state (alive, stalled, exited); agents whose identity is still being resolved are in no name yet.",
        ("name", "state"),
        rows.iter().flat_map(|(n, s)| {
            [
                (&**n, "alive", s.alive),
                (&**n, "stalled", s.stalled),
                (&**n, "exited", s.exited),
            ]
        }),
    )?;
    counters_by(
        e,
        "varta_agent_restarts",
        "New pid lives identified under a name an earlier life already had (another pid, or this pid before reuse or eviction); a name's first life and the name unknown never count.",
        "name",
        rows.iter().map(|(n, s)| (&**n, s.restarts)),
    )?;
    counters_by(
        e,
        "varta_agent_stalls",
        "Stalls of agents whose name was known when they stalled, by name.",
        "name",
        rows.iter().map(|(n, s)| (&**n, s.stalls)),
    )?;
    gauges_by2(
        e,
        "varta_required_agents",
        "Required agent names ([[agent]] required = true): 1 for the current state (present: a live agent of that name now; missing: none now, also during the startup grace before the missing event), 0 for the other.",
        ("name", "state"),
        snap.required.iter().flat_map(|(n, present)| {
            [
                (&**n, "present", u32::from(*present)),
                (&**n, "missing", u32::from(!*present)),
            ]
        }),
    )
}
