//! Which slots changed: one bit per tracker slot, set where a slot's
//! snapshot-visible fields change (state, beat, nonce, status, payload,
//! class; identity and rule on the policy side) and drained when a
//! control-API snapshot starts. A snapshot then copies only the slots
//! changed since the buffer it reuses was filled, instead of reading all
//! of them (1 M slots are 64 MiB, ~8 ms of memory bandwidth on a small
//! VM; the bitmap is 128 KiB).
//!
//! Marking is one OR into a word that is almost always in cache: the
//! beat path pays a few instructions for it.

impl super::Tracker {
    /// Adds the slots changed since the last call to `out` and forgets
    /// them (a control-API snapshot starting). Admission, beats, exits,
    /// stalls, evictions, new lives and class changes all mark their slot.
    pub fn drain_changes(&mut self, out: &mut ChangeSet) {
        self.changed.drain_into(out);
    }

    /// Slots marked since the last [`Tracker::drain_changes`].
    pub fn pending_changes(&self) -> usize {
        self.changed.len()
    }
}

/// A set of slot indices, as a bitmap that grows with the highest index
/// marked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    words: Vec<u64>,
    /// Bits set (kept as marks arrive, so the owner can tell cheaply when
    /// enough changes are pending to be worth applying).
    count: usize,
}

impl ChangeSet {
    /// Adds slot `idx`.
    #[inline]
    pub fn mark(&mut self, idx: u32) {
        let w = (idx >> 6) as usize;
        if w >= self.words.len() {
            self.grow(w);
        }
        let bit = 1 << (idx & 63);
        self.count += usize::from(self.words[w] & bit == 0);
        self.words[w] |= bit;
    }

    /// Cold path of [`ChangeSet::mark`]: the tracker grew past the bitmap.
    #[cold]
    fn grow(&mut self, w: usize) {
        self.words.resize(w + 1, 0);
    }

    /// Whether slot `idx` is in the set.
    pub fn contains(&self, idx: u32) -> bool {
        self.word((idx >> 6) as usize) & (1 << (idx & 63)) != 0
    }

    /// Bits of slots `64 * w .. 64 * w + 63` (0 beyond the end).
    #[inline]
    pub fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }

    /// Adds every slot of `other`.
    pub fn union_with(&mut self, other: &ChangeSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        let mut count = 0;
        for (i, a) in self.words.iter_mut().enumerate() {
            *a |= other.words.get(i).copied().unwrap_or(0);
            count += a.count_ones() as usize;
        }
        self.count = count;
    }

    /// Adds every slot of `self` to `out` and empties `self` (its memory
    /// is kept for the marks to come).
    pub fn drain_into(&mut self, out: &mut ChangeSet) {
        if self.count == 0 {
            return;
        }
        if out.count == 0 && out.words.len() <= self.words.len() {
            // Nothing to merge: hand the bits over; out's old (all-zero)
            // words become ours, and marks grow them as needed.
            std::mem::swap(&mut self.words, &mut out.words);
            out.count = self.count;
        } else {
            out.union_with(self);
            self.words.fill(0);
        }
        self.count = 0;
    }

    /// Empties the set, keeping its memory.
    pub fn clear(&mut self) {
        if self.count > 0 {
            self.words.fill(0);
            self.count = 0;
        }
    }

    /// Slots in the set.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no slot is in the set.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The slots in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + i
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_contains_union_drain() {
        let mut a = ChangeSet::default();
        assert!(a.is_empty());
        for i in [0, 63, 64, 1_000_000] {
            a.mark(i);
            assert!(a.contains(i));
        }
        a.mark(64);
        assert_eq!(a.len(), 4);
        assert!(!a.contains(1) && !a.contains(999_999) && !a.contains(u32::MAX));
        assert_eq!(a.word(1), 1);
        assert_eq!(a.word(1 << 30), 0);
        let mut b = ChangeSet::default();
        b.mark(5);
        b.union_with(&a);
        assert_eq!(b.len(), 5);
        let mut c = ChangeSet::default();
        b.drain_into(&mut c);
        assert!(b.is_empty());
        assert_eq!(c.len(), 5);
        assert!(c.contains(5) && c.contains(1_000_000));
        assert_eq!(c.iter().collect::<Vec<_>>(), [0, 5, 63, 64, 1_000_000]);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.iter().count(), 0);
        // Draining into a set that already holds bits merges them.
        let mut d = ChangeSet::default();
        d.mark(1);
        let mut e = ChangeSet::default();
        e.mark(2);
        e.mark(200);
        d.drain_into(&mut e);
        assert_eq!(e.iter().collect::<Vec<_>>(), [1, 2, 200]);
        assert_eq!((d.len(), e.len()), (0, 3));
        d.mark(3);
        assert_eq!(d.iter().collect::<Vec<_>>(), [3]);
    }
}
