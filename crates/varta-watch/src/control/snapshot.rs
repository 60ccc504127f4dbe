//! The agents snapshot of the control API: the loop keeps a buffer of
//! 32-byte [`AgentRecord`]s indexed by tracker slot, and brings it up to
//! date in bounded chunks (between ingest batches) by re-copying only the
//! slots that changed since the buffer was last filled (the tracker and
//! the policy engine mark them: [`ChangeSet`]). A buffer nobody held since
//! then — there are two, alternating, recycled through a [`Pool`] — needs
//! the changes of the last two snapshot intervals; any other buffer (the
//! first two snapshots, or one a slow request kept) is filled from every
//! slot. Identity and rule come from the policy engine's slot-parallel
//! array ([`Names::by_slot`]). Everything else (sorting by pid, filters,
//! names, JSON) happens on the HTTP thread, from an immutable
//! [`AgentsSnapshot`].
//!
//! The loop's cost is memory bandwidth: a full copy reads every slot's
//! cache line (1 M slots: 64 MiB), a copy of changes reads the 128 KiB
//! bitmap and the changed slots only (BENCHMARKS.md "snapshot").

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::record::AgentRecord;
use crate::identity::{IdentityId, NameId};
use crate::policy::{Names, SlotName};
use crate::tracker::{ChangeSet, Slot, SlotState, Tracker};

/// Slots copied per loop wake-up: 2 MiB of slots, a few hundred µs, so a
/// full 1 M-agent snapshot is ~30 short steps with ingest batches between.
pub const CHUNK: usize = 32_768;

/// A copy of changes scans at most this many chunks' worth of bitmap per
/// wake-up (the bitmap costs ~1/500 of the slots it stands for).
const SCAN_CHUNKS: usize = 8;

/// Records by slot index (free slots hold a free record) and the snapshot
/// generation they show. A fresh 32 MiB allocation per snapshot at 1 M
/// agents would cost the loop page faults on every copy, and a reused one
/// only needs the slots changed since.
struct Buffer {
    generation: u64,
    records: Vec<AgentRecord>,
}

/// Where dropped snapshots leave their buffers.
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Option<Buffer>>>);

impl Pool {
    fn take(&self) -> Option<Buffer> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Keeps the newer of two returned buffers (fewer changes to copy).
    fn give(&self, b: Buffer) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_none_or(|h| h.generation < b.generation) {
            *held = Some(b);
        }
    }
}

/// The loop's record of what changed between recent snapshots.
#[derive(Default)]
pub struct Changes {
    /// Snapshots started so far: the generation of the newest.
    generation: u64,
    /// Slots changed between the previous snapshot's start and the newest's.
    latest: ChangeSet,
    /// Slots changed in the interval before that.
    before: ChangeSet,
}

impl Changes {
    /// A snapshot starts: takes the tracker's and the names' marks and
    /// returns the new snapshot's generation.
    pub fn begin(&mut self, tracker: &mut Tracker, names: &Names) -> u64 {
        std::mem::swap(&mut self.latest, &mut self.before);
        self.latest.clear();
        tracker.drain_changes(&mut self.latest);
        names.drain_changes(&mut self.latest);
        self.generation += 1;
        self.generation
    }

    /// The slots a buffer showing generation `held` must copy again to show
    /// the newest one; None: every slot (too old, or never filled).
    fn since(&self, held: Option<u64>) -> Option<ChangeSet> {
        match self.generation.checked_sub(held?) {
            Some(1) => Some(self.latest.clone()),
            Some(2) => {
                let mut s = self.latest.clone();
                s.union_with(&self.before);
                Some(s)
            }
            _ => None,
        }
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
    /// Records by slot index; free slots hold free records.
    records: Vec<AgentRecord>,
    /// Which snapshot this is (1, 2, …; 0 for one made from parts).
    generation: u64,
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
    /// Slots copied from the tracker (all of them, or the changed ones).
    pub copied: usize,
    /// Whether every slot was copied (no reusable buffer).
    pub full: bool,
    /// (pid, record index) of every tracked agent, sorted by pid, built
    /// on first use by the HTTP thread and shared by every page served
    /// from this snapshot.
    order: OnceLock<Vec<(u32, u32)>>,
    pool: Option<Pool>,
}

impl Drop for AgentsSnapshot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(Buffer {
                generation: self.generation,
                records: std::mem::take(&mut self.records),
            });
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
            copied: records.len(),
            records,
            generation: 0,
            extras,
            now_ns,
            wall_unix_ms,
            taken: Instant::now(),
            loop_time: Duration::ZERO,
            longest_chunk: Duration::ZERO,
            full: true,
            order: OnceLock::new(),
            pool: None,
        }
    }

    /// Tracked agents in pid order as (pid, record index); a pid copied
    /// twice (evicted from one slot and re-admitted in another while the
    /// copy ran) appears once.
    pub fn order(&self) -> &[(u32, u32)] {
        self.order.get_or_init(|| {
            let mut v: Vec<(u32, u32)> = self
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.state() != SlotState::Free)
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

    /// Every tracked agent's record, in slot order (tests, checks).
    pub fn records(&self) -> impl Iterator<Item = &AgentRecord> {
        self.records.iter().filter(|r| r.state() != SlotState::Free)
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

/// The record of a free slot.
const FREE: AgentRecord = AgentRecord::free();

/// A snapshot being copied by the loop, one chunk per wake-up.
pub struct Copier {
    records: Vec<AgentRecord>,
    generation: u64,
    /// The slots to copy; None: all of them.
    todo: Option<ChangeSet>,
    /// Slots per step and thread ([`CHUNK`]; smaller in tests).
    chunk: usize,
    /// Threads a full copy's step uses ([`lanes`]).
    lanes: usize,
    /// The first slot not yet considered.
    next: usize,
    copied: usize,
    spent: Duration,
    longest: Duration,
    last: Duration,
    /// start()'s cost, charged to the first step.
    started: Duration,
    pool: Pool,
}

/// Writes the record of every slot of `slots` into `out` (the same
/// length), named from `names` (the policy engine's slot-parallel array
/// from the same index; shorter is fine). All three are walked front to
/// back, so the hardware prefetcher streams them; no branch per slot.
fn copy_all(slots: &[Slot], names: &[SlotName], out: &mut [AgentRecord]) {
    let named = names.len().min(slots.len());
    let (with, without) = slots.split_at(named);
    let (out_with, out_without) = out.split_at_mut(named);
    for ((s, n), r) in with.iter().zip(&names[..named]).zip(out_with) {
        *r = AgentRecord::of(s, *n);
    }
    for (s, r) in without.iter().zip(out_without) {
        *r = AgentRecord::of(s, SlotName::UNKNOWN);
    }
}

/// [`copy_all`] over `slots` in pieces of `per` slots, one per thread, the
/// loop's own thread taking the last (a full copy is memory-bound: a
/// second core reading the other half roughly halves the loop's wait;
/// the threads are scoped, so the slots are only borrowed while the loop
/// waits for them, and nothing else runs on agent state meanwhile).
fn copy_lanes(slots: &[Slot], names: &[SlotName], out: &mut [AgentRecord], per: usize) {
    if slots.len() <= per {
        return copy_all(slots, names, out);
    }
    std::thread::scope(|sc| {
        let mut rest_slots = slots;
        let mut rest_out = out;
        let mut from = 0;
        while rest_slots.len() > per {
            let (s, s_rest) = rest_slots.split_at(per);
            let (o, o_rest) = std::mem::take(&mut rest_out).split_at_mut(per);
            let n = names.get(from..).unwrap_or(&[]);
            let n = &n[..n.len().min(per)];
            sc.spawn(move || copy_all(s, n, o));
            rest_slots = s_rest;
            rest_out = o_rest;
            from += per;
        }
        copy_all(rest_slots, names.get(from..).unwrap_or(&[]), rest_out);
    });
}

/// Threads a full copy uses: two where a second core exists (see
/// [`copy_lanes`]), else one.
fn lanes() -> usize {
    static LANES: OnceLock<usize> = OnceLock::new();
    *LANES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(2)))
}

impl Copier {
    /// Starts the next snapshot: takes the slots changed since the last
    /// one from `tracker` and `names` into `changes`, then copies into the
    /// pool's buffer (or a new one) only the slots changed since that
    /// buffer was filled. Its cost counts as the first chunk's.
    pub fn start(
        pool: &Pool,
        changes: &mut Changes,
        tracker: &mut Tracker,
        names: &Names,
    ) -> Copier {
        Copier::with_chunk(pool, changes, tracker, names, CHUNK)
    }

    /// As [`Copier::start`], `chunk` slots per step.
    pub fn with_chunk(
        pool: &Pool,
        changes: &mut Changes,
        tracker: &mut Tracker,
        names: &Names,
        chunk: usize,
    ) -> Copier {
        let t = Instant::now();
        let generation = changes.begin(tracker, names);
        let (records, held) = pool
            .take()
            .map_or((Vec::new(), None), |b| (b.records, Some(b.generation)));
        Copier {
            records,
            generation,
            // Past half the slots, reading every slot in order is cheaper
            // than picking the changed ones.
            todo: changes
                .since(held)
                .filter(|t| t.len() * 2 < tracker.slot_count()),
            chunk: chunk.max(1),
            lanes: lanes(),
            next: 0,
            copied: 0,
            spent: Duration::ZERO,
            longest: Duration::ZERO,
            last: Duration::ZERO,
            started: t.elapsed(),
            pool: pool.clone(),
        }
    }

    /// Whether this copy reads every slot (no buffer to update).
    pub fn is_full(&self) -> bool {
        self.todo.is_none()
    }

    /// Copies the next chunk of slots (and their names); true when every
    /// slot has been considered. The range grows with the tracker: agents
    /// admitted meanwhile are included in a full copy, and marked for the
    /// next one otherwise.
    pub fn step(&mut self, tracker: &Tracker, names: &Names) -> bool {
        let t = Instant::now();
        let slots = tracker.slots();
        let end = slots.len();
        if self.records.len() < end {
            // Once to the tracker's size (grown slots are free until
            // copied): later chunks never reallocate.
            self.records.resize(end, FREE);
        }
        let by_slot = names.by_slot();
        match &self.todo {
            None => {
                let per = self.chunk;
                let stop = (self.next + per * self.lanes).min(end);
                let names = by_slot.get(self.next..).unwrap_or(&[]);
                copy_lanes(
                    &slots[self.next..stop],
                    names,
                    &mut self.records[self.next..stop],
                    per,
                );
                self.copied += stop - self.next;
                self.next = stop;
            }
            Some(todo) => {
                let scan_end = (self.next + self.chunk * SCAN_CHUNKS).min(end);
                let mut budget = self.chunk;
                let mut i = self.next;
                while i < scan_end && budget > 0 {
                    // Slots i.. to the end of i's word; `resume` is where
                    // the next word (or the next step) starts.
                    let mut bits = todo.word(i / 64) >> (i % 64);
                    let mut resume = (i / 64 + 1) * 64;
                    if bits == u64::MAX && i % 64 == 0 && resume <= end && budget >= 64 {
                        // 64 changed slots in a row: the streaming copy.
                        let names = by_slot.get(i..).unwrap_or(&[]);
                        copy_all(&slots[i..resume], names, &mut self.records[i..resume]);
                        budget -= 64;
                        i = resume;
                        continue;
                    }
                    while bits != 0 {
                        let at = i + bits.trailing_zeros() as usize;
                        if at >= end {
                            break;
                        }
                        if budget == 0 {
                            resume = at;
                            break;
                        }
                        let n = by_slot.get(at).copied().unwrap_or(SlotName::UNKNOWN);
                        self.records[at] = AgentRecord::of(&slots[at], n);
                        budget -= 1;
                        bits &= bits - 1;
                    }
                    i = resume;
                }
                self.copied += self.chunk - budget;
                self.next = i.min(end);
            }
        }
        drop(by_slot);
        self.account(t.elapsed());
        self.next >= end
    }

    fn account(&mut self, d: Duration) {
        // The first step's wake-up also ran start().
        let d = d + std::mem::take(&mut self.started);
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
            generation: self.generation,
            copied: self.copied,
            full: self.todo.is_none(),
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
