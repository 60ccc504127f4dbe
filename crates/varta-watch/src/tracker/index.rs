//! pid → slot index.
//!
//! Kernel pids are dense small integers (≤ `PID_MAX_LIMIT` = 2^22 on 64-bit
//! Linux), so they index a flat table directly: one predictable memory
//! access per beat instead of a hash probe, and agents with nearby pids
//! share cache lines. The table is zero-initialised by the allocator
//! (`calloc` → untouched pages cost no RSS), so its 16 MiB are virtual until
//! pids are seen. Pids above the limit (network agents may claim any u32)
//! go to a hash map bounded by the tracker capacity.

use rustc_hash::FxHashMap;

/// Pids below this are indexed directly.
pub const DIRECT_LIMIT: u32 = 1 << 22;

/// The index. Stores `slot + 1` so that zero (the allocator's fill) means
/// "absent".
pub struct PidIndex {
    direct: Vec<u32>,
    spill: FxHashMap<u32, u32>,
    len: usize,
}

impl PidIndex {
    /// An empty index.
    pub fn new() -> PidIndex {
        PidIndex {
            direct: vec![0; DIRECT_LIMIT as usize],
            spill: FxHashMap::default(),
            len: 0,
        }
    }

    /// Slot of `pid`.
    #[inline]
    pub fn get(&self, pid: u32) -> Option<u32> {
        if pid < DIRECT_LIMIT {
            self.direct[pid as usize].checked_sub(1)
        } else {
            self.spill.get(&pid).copied()
        }
    }

    /// Maps `pid` to `slot` (pid must be absent).
    #[inline]
    pub fn insert(&mut self, pid: u32, slot: u32) {
        if pid < DIRECT_LIMIT {
            debug_assert_eq!(self.direct[pid as usize], 0);
            self.direct[pid as usize] = slot + 1;
        } else {
            self.spill.insert(pid, slot);
        }
        self.len += 1;
    }

    /// Forgets `pid` (must be present).
    #[inline]
    pub fn remove(&mut self, pid: u32) {
        if pid < DIRECT_LIMIT {
            self.direct[pid as usize] = 0;
        } else {
            self.spill.remove(&pid);
        }
        self.len -= 1;
    }

    /// Mapped pids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no pid is mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes reserved (virtual for the direct table).
    pub fn reserved_bytes(&self) -> usize {
        self.direct.len() * 4 + self.spill.capacity() * 9
    }
}

impl Default for PidIndex {
    fn default() -> Self {
        PidIndex::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_and_spilled_pids() {
        let mut ix = PidIndex::new();
        for (pid, slot) in [
            (2u32, 0u32),
            (DIRECT_LIMIT - 1, 1),
            (DIRECT_LIMIT, 2),
            (u32::MAX, 3),
        ] {
            assert_eq!(ix.get(pid), None);
            ix.insert(pid, slot);
            assert_eq!(ix.get(pid), Some(slot));
        }
        assert_eq!(ix.len(), 4);
        ix.remove(DIRECT_LIMIT);
        ix.remove(2);
        assert_eq!((ix.get(2), ix.get(DIRECT_LIMIT)), (None, None));
        assert_eq!(ix.get(u32::MAX), Some(3));
        assert_eq!(ix.len(), 2);
    }
}
