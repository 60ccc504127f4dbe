//! The loop side of agents snapshots: a mirror of every tracker slot as a
//! 32-byte [`AgentRecord`], kept current from the tracker's and the policy
//! engine's change marks ([`ChangeSet`]), and the chunked copy of that
//! mirror into a snapshot buffer.
//!
//! Why a mirror: a snapshot must not cost the loop more than a few ms even
//! when every one of 1 M agents changed since the last one. Reading the
//! tracker's slots for that is 64 MiB of cache lines (~8 ms of memory
//! bandwidth alone on a small VM); the mirror is kept current as changes
//! pile up — a sync applies the marks once [`SYNC_AT`] distinct slots are
//! pending, so its cost follows the beat rate, never a scan — and a
//! snapshot then copies records from it: only the slots changed since the
//! reused buffer was filled, or, when more than half changed, the whole
//! 32 MiB mirror with `memcpy`, in chunks between ingest batches.
//!
//! Two buffers alternate (one published, one in the [`Pool`]); a buffer
//! that comes back too old (kept by a slow request) is filled whole.

use std::time::{Duration, Instant};

use super::record::AgentRecord;
use super::snapshot::{AgentsSnapshot, Buffer, Extras, Pool};
use crate::policy::{Names, SlotName};
use crate::tracker::{ChangeSet, Tracker};

/// Distinct changed slots that make the loop apply them to the mirror:
/// a sync of this many costs well under a millisecond, and a snapshot
/// then never has more than this many (plus one batch) to apply first.
pub const SYNC_AT: usize = 32_768;

/// Records copied per loop wake-up when a snapshot copies changed records
/// one by one (scattered: about a cache line each).
pub const CHUNK: usize = 32_768;

/// Records per wake-up of a whole-buffer copy (`memcpy`, 4 MiB: well
/// under a millisecond).
const COPY_CHUNK: usize = 131_072;

/// The record of a free slot.
const FREE: AgentRecord = AgentRecord::free();

/// Every tracker slot as a record, current up to the last sync.
#[derive(Default)]
pub struct Mirror {
    records: Vec<AgentRecord>,
    /// Marks taken by the sync under way (memory kept between syncs).
    scratch: ChangeSet,
}

impl Mirror {
    /// Applies every slot marked since the last sync (tracker and names)
    /// and adds them to `synced`; returns how many were applied.
    pub fn sync(&mut self, tracker: &mut Tracker, names: &Names, synced: &mut ChangeSet) -> usize {
        self.scratch.clear();
        tracker.drain_changes(&mut self.scratch);
        names.drain_changes(&mut self.scratch);
        let slots = tracker.slots();
        if self.records.len() < slots.len() {
            self.records.resize(slots.len(), FREE);
        }
        let by_slot = names.by_slot();
        let mut applied = 0;
        for i in self.scratch.iter() {
            let Some(s) = slots.get(i) else {
                break;
            };
            let n = by_slot.get(i).copied().unwrap_or(SlotName::UNKNOWN);
            self.records[i] = AgentRecord::of(s, n);
            applied += 1;
        }
        synced.union_with(&self.scratch);
        applied
    }

    /// The records (tests, checks).
    pub fn records(&self) -> &[AgentRecord] {
        &self.records
    }
}

/// What changed between recent snapshots, in slots applied to the mirror.
#[derive(Default)]
pub struct Changes {
    /// Snapshots started so far: the generation of the newest.
    generation: u64,
    /// Slots synced since the newest snapshot started.
    pub current: ChangeSet,
    /// Slots synced between the previous snapshot's start and the newest's.
    latest: ChangeSet,
    /// Slots synced in the interval before that.
    before: ChangeSet,
}

impl Changes {
    /// A snapshot starts (after a sync): returns its generation.
    pub fn begin(&mut self) -> u64 {
        std::mem::swap(&mut self.latest, &mut self.before);
        self.latest.clear();
        self.current.drain_into(&mut self.latest);
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

/// A snapshot being copied from the mirror, one chunk per wake-up. The
/// mirror must not be synced until it finished.
pub struct Copier {
    records: Vec<AgentRecord>,
    generation: u64,
    /// The slots to copy; None: all of them.
    todo: Option<ChangeSet>,
    /// Records per step of a copy of changes ([`CHUNK`]; smaller in tests).
    chunk: usize,
    /// The first slot not yet considered.
    next: usize,
    copied: usize,
    spent: Duration,
    longest: Duration,
    last: Duration,
    /// The sync and set-up before the first step, charged to it.
    started: Duration,
    pool: Pool,
}

impl Copier {
    /// Starts the next snapshot: syncs the mirror, then prepares to copy
    /// into the pool's buffer (or a new one) the records changed since
    /// that buffer was filled.
    pub fn start(
        mirror: &mut Mirror,
        changes: &mut Changes,
        pool: &Pool,
        tracker: &mut Tracker,
        names: &Names,
    ) -> Copier {
        Copier::with_chunk(mirror, changes, pool, tracker, names, CHUNK)
    }

    /// As [`Copier::start`], `chunk` records per step.
    pub fn with_chunk(
        mirror: &mut Mirror,
        changes: &mut Changes,
        pool: &Pool,
        tracker: &mut Tracker,
        names: &Names,
        chunk: usize,
    ) -> Copier {
        let t = Instant::now();
        mirror.sync(tracker, names, &mut changes.current);
        let generation = changes.begin();
        let (mut records, held) = pool
            .take()
            .map_or((Vec::new(), None), |b| (b.records, Some(b.generation)));
        let total = mirror.records.len();
        // Past half the slots, one memcpy of the mirror beats picking the
        // changed records one by one.
        let todo = changes.since(held).filter(|t| t.len() * 2 < total);
        if records.len() < total {
            records.resize(total, FREE);
        }
        Copier {
            records,
            generation,
            todo,
            chunk: chunk.max(1),
            next: 0,
            copied: 0,
            spent: Duration::ZERO,
            longest: Duration::ZERO,
            last: Duration::ZERO,
            started: t.elapsed(),
            pool: pool.clone(),
        }
    }

    /// Whether this copy takes every record (no buffer to update).
    pub fn is_full(&self) -> bool {
        self.todo.is_none()
    }

    /// Copies the next chunk; true when done.
    pub fn step(&mut self, mirror: &Mirror) -> bool {
        let t = Instant::now();
        let src = &mirror.records;
        let end = src.len().min(self.records.len());
        match &self.todo {
            None => {
                let stop = (self.next + COPY_CHUNK.min(self.chunk * 4)).min(end);
                self.records[self.next..stop].copy_from_slice(&src[self.next..stop]);
                self.copied += stop - self.next;
                self.next = stop;
            }
            Some(todo) => {
                // The bitmap costs ~1/500 of what it stands for: scan up to
                // 8 chunks' worth of slots, copy at most one chunk.
                let scan_end = (self.next + self.chunk * 8).min(end);
                let mut budget = self.chunk;
                let mut i = self.next;
                while i < scan_end && budget > 0 {
                    let mut bits = todo.word(i / 64) >> (i % 64);
                    let mut resume = (i / 64 + 1) * 64;
                    if bits == u64::MAX && i % 64 == 0 && resume <= end && budget >= 64 {
                        self.records[i..resume].copy_from_slice(&src[i..resume]);
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
                        self.records[at] = src[at];
                        budget -= 1;
                        bits &= bits - 1;
                    }
                    i = resume;
                }
                self.copied += self.chunk - budget;
                self.next = i.min(end);
            }
        }
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
        let d = t.elapsed() + std::mem::take(&mut self.started);
        // Counts belong to the last chunk's loop wake-up.
        self.spent += d;
        self.longest = self.longest.max(self.last + d);
        let full = self.todo.is_none();
        AgentsSnapshot::published(
            Buffer {
                generation: self.generation,
                records: std::mem::take(&mut self.records),
            },
            extras,
            now_ns,
            self.spent,
            self.longest,
            self.copied,
            full,
            self.pool.clone(),
        )
    }
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
