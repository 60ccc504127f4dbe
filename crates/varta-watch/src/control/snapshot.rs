//! The agents snapshot of the control API: the loop turns tracker slots
//! into 32-byte [`AgentRecord`]s in bounded chunks (between ingest
//! batches), into a buffer recycled from the previous snapshot, reading
//! each slot's (identity, rule) from the policy engine's slot-parallel
//! array ([`Names::by_slot`]) in the same sequential pass, and takes a few
//! counts with the last chunk. Everything else (sorting by pid, filters,
//! names, JSON) happens on the HTTP thread, from an immutable
//! [`AgentsSnapshot`].
//!
//! The loop's cost is memory bandwidth: every slot's cache line is read
//! once, each tracked agent's record written once, free slots skipped, and
//! no hash table cloned (BENCHMARKS.md "snapshot").

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::record::AgentRecord;
use crate::identity::{IdentityId, NameId};
use crate::policy::{Names, SlotName};
use crate::tracker::{Slot, SlotState, Tracker};

/// Slots read per loop wake-up: 2 MiB of slots, a few hundred µs, so a
/// 1 M-agent snapshot is ~30 short steps with ingest batches between.
pub const CHUNK: usize = 32_768;

/// The buffer a dropped snapshot hands back for the next one: a fresh
/// 32 MiB allocation per snapshot at 1 M agents would cost the loop page
/// faults on every copy.
type Buffers = Vec<AgentRecord>;

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

/// What the loop knew at the end of a snapshot besides the agents.
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
    /// Tracked agents in slot order (free slots skipped).
    records: Vec<AgentRecord>,
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
    /// (pid, record index) of every tracked agent, sorted by pid, built
    /// on first use by the HTTP thread and shared by every page served
    /// from this snapshot.
    order: OnceLock<Vec<(u32, u32)>>,
    pool: Option<Pool>,
}

impl Drop for AgentsSnapshot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut records = std::mem::take(&mut self.records);
            records.clear();
            pool.give(records);
        }
    }
}

impl AgentsSnapshot {
    /// A snapshot of nothing (before the first one is published).
    pub fn empty() -> AgentsSnapshot {
        AgentsSnapshot::from_parts(Vec::new(), Extras::default(), 0, 0)
    }

    /// A snapshot from already-made records (tests).
    pub fn from_parts(
        records: Vec<AgentRecord>,
        extras: Extras,
        now_ns: u64,
        wall_unix_ms: u64,
    ) -> AgentsSnapshot {
        AgentsSnapshot {
            records,
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

    /// Tracked agents in pid order as (pid, record index); a pid copied
    /// twice (evicted and re-admitted between two chunks) appears once.
    pub fn order(&self) -> &[(u32, u32)] {
        self.order.get_or_init(|| {
            let mut v: Vec<(u32, u32)> = self
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| (r.pid, i as u32))
                .collect();
            v.sort_unstable();
            v.dedup_by_key(|e| e.0);
            v
        })
    }

    /// The record at `idx` (from [`AgentsSnapshot::order`]).
    pub fn record(&self, idx: u32) -> &AgentRecord {
        &self.records[idx as usize]
    }

    /// Every record, in slot order (tests, checks).
    pub fn records(&self) -> &[AgentRecord] {
        &self.records
    }

    /// The agent `pid`, if tracked.
    pub fn find(&self, pid: u32) -> Option<&AgentRecord> {
        let order = self.order();
        order
            .binary_search_by_key(&pid, |e| e.0)
            .ok()
            .map(|i| self.record(order[i].1))
    }

    /// (identity, rule) of `pid`, if tracked and its identity is known.
    pub fn name_entry(&self, pid: u32) -> Option<(IdentityId, Option<u16>)> {
        let r = self.find(pid)?;
        Some((r.identity()?, r.rule()))
    }

    /// Threshold of `r`'s policy class, ms.
    pub fn threshold_ms(&self, r: &AgentRecord) -> Option<u64> {
        self.extras
            .class_threshold_ns
            .get(usize::from(r.class()))
            .map(|ns| ns / 1_000_000)
    }

    /// Age of the snapshot now, ms.
    pub fn age_ms(&self) -> u64 {
        self.taken.elapsed().as_millis() as u64
    }
}

/// A snapshot being copied by the loop, one chunk per wake-up.
pub struct Copier {
    records: Vec<AgentRecord>,
    /// Slots per step ([`CHUNK`]; smaller in tests).
    chunk: usize,
    next: usize,
    spent: Duration,
    longest: Duration,
    last: Duration,
    pool: Pool,
}

/// Appends a record for every tracked slot of `slots` (the tracker's
/// slots from index `start`), named from `names` (the policy engine's
/// slot-parallel array, starting at the same index; shorter is fine).
/// Both are read front to back, so the hardware prefetcher streams them;
/// the only branch is the free-slot skip.
fn copy_chunk(slots: &[Slot], names: &[SlotName], out: &mut Vec<AgentRecord>) {
    let named = names.len().min(slots.len());
    let (with, without) = slots.split_at(named);
    for (s, n) in with.iter().zip(&names[..named]) {
        if s.state != SlotState::Free {
            out.push(AgentRecord::of(s, *n));
        }
    }
    for s in without {
        if s.state != SlotState::Free {
            out.push(AgentRecord::of(s, SlotName::UNKNOWN));
        }
    }
}

impl Copier {
    /// Starts a copy with the pool's buffer (or a new one).
    pub fn start(pool: &Pool) -> Copier {
        Copier::with_chunk(pool, CHUNK)
    }

    /// As [`Copier::start`], `chunk` slots per step.
    pub fn with_chunk(pool: &Pool, chunk: usize) -> Copier {
        Copier {
            records: pool.take().unwrap_or_default(),
            chunk: chunk.max(1),
            next: 0,
            spent: Duration::ZERO,
            longest: Duration::ZERO,
            last: Duration::ZERO,
            pool: pool.clone(),
        }
    }

    /// Copies the next chunk of slots (and their names); true when every
    /// slot has been read. The range grows with the tracker: agents
    /// admitted meanwhile are included.
    pub fn step(&mut self, tracker: &Tracker, names: &Names) -> bool {
        let t = Instant::now();
        let slots = tracker.slots();
        let end = slots.len();
        if self.records.capacity() < end {
            // Once, to the tracker's size: later chunks never reallocate.
            self.records.reserve_exact(end - self.records.len());
        }
        let stop = (self.next + self.chunk).min(end);
        let by_slot = names.by_slot();
        let names = by_slot.get(self.next..).unwrap_or(&[]);
        copy_chunk(&slots[self.next..stop], names, &mut self.records);
        self.next = stop;
        self.account(t.elapsed());
        stop >= end
    }

    fn account(&mut self, d: Duration) {
        self.spent += d;
        self.longest = self.longest.max(d);
        self.last = d;
    }

    /// After the last [`Copier::step`]: takes the counts (timed as part of
    /// the last chunk) and builds the snapshot.
    pub fn finish(
        mut self,
        tracker: &Tracker,
        extras: impl FnOnce(&Tracker) -> Extras,
        now_ns: u64,
    ) -> AgentsSnapshot {
        let t = Instant::now();
        let extras = extras(tracker);
        let d = t.elapsed();
        // Counts belong to the last chunk's loop wake-up.
        self.spent += d;
        self.longest = self.longest.max(self.last + d);
        let wall_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        AgentsSnapshot {
            records: std::mem::take(&mut self.records),
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

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
