//! The agents snapshot of the control API, as the HTTP thread sees it: an
//! immutable buffer of 32-byte [`AgentRecord`]s indexed by tracker slot
//! (free slots hold free records), with counts taken at the same moment.
//! Sorting by pid, filters, names and JSON happen on the HTTP thread. A
//! dropped snapshot hands its buffer back through the [`Pool`], so the loop
//! ([`super::mirror`]) only has to bring it up to date.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::record::AgentRecord;
use crate::identity::{IdentityId, NameId};
use crate::tracker::SlotState;

/// Records by slot index (free slots hold a free record) and the snapshot
/// generation they show. A fresh 32 MiB allocation per snapshot at 1 M
/// agents would cost the loop page faults on every copy, and a reused one
/// only needs the slots changed since.
pub(super) struct Buffer {
    pub(super) generation: u64,
    pub(super) records: Vec<AgentRecord>,
}

/// Where dropped snapshots leave their buffers.
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Option<Buffer>>>);

impl Pool {
    pub(super) fn take(&self) -> Option<Buffer> {
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

impl AgentsSnapshot {
    /// A published snapshot (the loop's [`super::mirror::Copier`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn published(
        buffer: Buffer,
        extras: Extras,
        now_ns: u64,
        loop_time: Duration,
        longest_chunk: Duration,
        copied: usize,
        full: bool,
        pool: Pool,
    ) -> AgentsSnapshot {
        let wall_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        AgentsSnapshot {
            records: buffer.records,
            generation: buffer.generation,
            extras,
            now_ns,
            wall_unix_ms,
            taken: Instant::now(),
            loop_time,
            longest_chunk,
            copied,
            full,
            order: OnceLock::new(),
            pool: Some(pool),
        }
    }
}
