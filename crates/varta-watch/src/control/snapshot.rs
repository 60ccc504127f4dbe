//! The agents snapshot of the control API: the loop copies raw tracker
//! slots in bounded chunks (a `memcpy` each, between ingest batches) into
//! buffers recycled from the previous snapshot, plus — in the last chunk —
//! the policy engine's pid → (identity, rule) table and a few counts.
//! Everything else (sorting by pid, filters, names, JSON) happens on the
//! HTTP thread, from an immutable [`AgentsSnapshot`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::identity::NameId;
use crate::policy::{Names, Table};
use crate::tracker::{Slot, SlotState, Tracker};

/// Slots copied per loop wake-up: 2 MiB, a fraction of a millisecond, so
/// a 1 M-agent snapshot is ~30 short steps with ingest batches between.
pub const CHUNK: usize = 32_768;

/// Buffers handed back by a dropped snapshot for the next one: a fresh
/// 64 MiB allocation per snapshot at 1 M agents would cost the loop page
/// faults on every copy.
type Buffers = (Vec<Slot>, Table);

/// Where dropped snapshots leave their buffers.
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Option<Buffers>>>);

impl Pool {
    fn take(&self) -> Option<Buffers> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn give(&self, b: Buffers) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
    }
}

/// What the loop knew at the end of a snapshot besides the slots.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Threshold (ns) per tracker policy class.
    pub class_threshold_ns: Vec<u64>,
    /// (alive, stalled, exited).
    pub counts: (u32, u32, u32),
    /// Agents recovery has given up on.
    pub given_up: u64,
    /// Required names without a live agent.
    pub missing: Vec<NameId>,
}

/// Every tracked agent at (about) one moment, read-only.
pub struct AgentsSnapshot {
    slots: Vec<Slot>,
    names: Table,
    /// Counts and classes, taken with the last chunk.
    pub extras: Extras,
    /// Observer ns when the last chunk was copied.
    pub now_ns: u64,
    /// Wall clock (Unix ms) at `now_ns`.
    pub wall_unix_ms: u64,
    /// When it was published.
    pub taken: Instant,
    /// Loop time the copy took, all chunks together.
    pub loop_time: Duration,
    /// The longest single chunk.
    pub longest_chunk: Duration,
    /// (pid, slot index) of every tracked agent, sorted by pid, built on
    /// first use by the HTTP thread and shared by every page served from
    /// this snapshot.
    order: OnceLock<Vec<(u32, u32)>>,
    pool: Option<Pool>,
}

impl Drop for AgentsSnapshot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut slots = std::mem::take(&mut self.slots);
            slots.clear();
            pool.give((slots, std::mem::take(&mut self.names)));
        }
    }
}

impl AgentsSnapshot {
    /// A snapshot of nothing (before the first one is published).
    pub fn empty() -> AgentsSnapshot {
        AgentsSnapshot::from_parts(Vec::new(), Table::default(), Extras::default(), 0, 0)
    }

    /// A snapshot from already-copied parts (tests).
    pub fn from_parts(
        slots: Vec<Slot>,
        names: Table,
        extras: Extras,
        now_ns: u64,
        wall_unix_ms: u64,
    ) -> AgentsSnapshot {
        AgentsSnapshot {
            slots,
            names,
            extras,
            now_ns,
            wall_unix_ms,
            taken: Instant::now(),
            loop_time: Duration::ZERO,
            longest_chunk: Duration::ZERO,
            order: OnceLock::new(),
            pool: None,
        }
    }

    /// Tracked agents in pid order as (pid, slot index); a pid copied
    /// twice (evicted and re-admitted between two chunks) appears once.
    pub fn order(&self) -> &[(u32, u32)] {
        self.order.get_or_init(|| {
            let mut v: Vec<(u32, u32)> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state != SlotState::Free)
                .map(|(i, s)| (s.pid, i as u32))
                .collect();
            v.sort_unstable();
            v.dedup_by_key(|e| e.0);
            v
        })
    }

    /// The slot at `idx` (from [`AgentsSnapshot::order`]).
    pub fn slot(&self, idx: u32) -> &Slot {
        &self.slots[idx as usize]
    }

    /// The agent `pid`, if tracked.
    pub fn find(&self, pid: u32) -> Option<&Slot> {
        let order = self.order();
        order
            .binary_search_by_key(&pid, |e| e.0)
            .ok()
            .map(|i| self.slot(order[i].1))
    }

    /// (identity, rule) of `pid`, if its identity is known.
    pub fn name_entry(&self, pid: u32) -> Option<(crate::identity::IdentityId, Option<u16>)> {
        self.names.get(&pid).copied()
    }

    /// Threshold of `slot`'s policy class, ms.
    pub fn threshold_ms(&self, slot: &Slot) -> Option<u64> {
        self.extras
            .class_threshold_ns
            .get(usize::from(slot.class()))
            .map(|ns| ns / 1_000_000)
    }

    /// Age of the snapshot now, ms.
    pub fn age_ms(&self) -> u64 {
        self.taken.elapsed().as_millis() as u64
    }
}

/// A snapshot being copied by the loop, one chunk per wake-up.
pub struct Copier {
    slots: Vec<Slot>,
    names: Table,
    next: usize,
    spent: Duration,
    longest: Duration,
    last: Duration,
    pool: Pool,
}

impl Copier {
    /// Starts a copy with the pool's buffers (or new ones).
    pub fn start(pool: &Pool) -> Copier {
        let (slots, names) = pool.take().unwrap_or_default();
        Copier {
            slots,
            names,
            next: 0,
            spent: Duration::ZERO,
            longest: Duration::ZERO,
            last: Duration::ZERO,
            pool: pool.clone(),
        }
    }

    /// Copies the next chunk; true when every slot has been copied. The
    /// range grows with the tracker: agents admitted meanwhile are
    /// included.
    pub fn step(&mut self, tracker: &Tracker) -> bool {
        let t = Instant::now();
        let end = tracker.slot_count();
        if self.slots.capacity() < end {
            // Once, to the tracker's size: later chunks never reallocate.
            self.slots.reserve_exact(end - self.slots.len());
        }
        let stop = (self.next + CHUNK).min(end);
        tracker.copy_slots(self.next..stop, &mut self.slots);
        self.next = stop;
        self.account(t.elapsed());
        stop >= end
    }

    fn account(&mut self, d: Duration) {
        self.spent += d;
        self.longest = self.longest.max(d);
        self.last = d;
    }

    /// After the last [`Copier::step`]: takes names and counts (timed as
    /// part of the last chunk) and builds the snapshot.
    pub fn finish(
        mut self,
        tracker: &Tracker,
        names: &Names,
        extras: impl FnOnce(&Tracker) -> Extras,
        now_ns: u64,
    ) -> AgentsSnapshot {
        let t = Instant::now();
        names.copy_table_into(&mut self.names);
        let extras = extras(tracker);
        let d = t.elapsed();
        // Names belong to the last chunk's loop wake-up.
        self.spent += d;
        self.longest = self.longest.max(self.last + d);
        let wall_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        AgentsSnapshot {
            slots: std::mem::take(&mut self.slots),
            names: std::mem::take(&mut self.names),
            extras,
            now_ns,
            wall_unix_ms,
            taken: Instant::now(),
            loop_time: self.spent,
            longest_chunk: self.longest,
            order: OnceLock::new(),
            pool: Some(self.pool.clone()),
        }
    }
}
