//! Intrusive doubly-linked lists over the slot array, addressed by `u32`
//! slot index. Every slot is on exactly one list (live, stalled, exited,
//! free), so moving between states, finding the oldest member and removing
//! an arbitrary member are all O(1) with no allocation.

/// "No slot" link value.
pub const NIL: u32 = u32::MAX;

/// Links embedded in each slot.
pub trait Linked {
    /// Previous slot on the same list.
    fn prev(&self) -> u32;
    /// Next slot on the same list.
    fn next(&self) -> u32;
    /// Sets both links.
    fn set_links(&mut self, prev: u32, next: u32);
    /// Sets the previous link.
    fn set_prev(&mut self, prev: u32);
    /// Sets the next link.
    fn set_next(&mut self, next: u32);
}

/// Head/tail/length of one list; the links live in the slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl List {
    /// Oldest member (first pushed and not moved since).
    #[inline]
    pub fn head(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Number of members.
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Appends `idx` (which must not be on any list).
    #[inline]
    pub fn push_back<S: Linked>(&mut self, slots: &mut [S], idx: u32) {
        slots[idx as usize].set_links(self.tail, NIL);
        if self.tail == NIL {
            self.head = idx;
        } else {
            slots[self.tail as usize].set_next(idx);
        }
        self.tail = idx;
        self.len += 1;
    }

    /// Unlinks `idx`, which must be on this list.
    #[inline]
    pub fn remove<S: Linked>(&mut self, slots: &mut [S], idx: u32) {
        let (prev, next) = {
            let s = &slots[idx as usize];
            (s.prev(), s.next())
        };
        if prev == NIL {
            self.head = next;
        } else {
            slots[prev as usize].set_next(next);
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slots[next as usize].set_prev(prev);
        }
        slots[idx as usize].set_links(NIL, NIL);
        self.len -= 1;
    }

    /// Inserts `idx` (on no list) right after `after`, a member of this
    /// list, or at the head when `after` is `NIL`.
    #[inline]
    pub fn insert_after<S: Linked>(&mut self, slots: &mut [S], after: u32, idx: u32) {
        let next = if after == NIL {
            self.head
        } else {
            slots[after as usize].next()
        };
        slots[idx as usize].set_links(after, next);
        if after == NIL {
            self.head = idx;
        } else {
            slots[after as usize].set_next(idx);
        }
        if next == NIL {
            self.tail = idx;
        } else {
            slots[next as usize].set_prev(idx);
        }
        self.len += 1;
    }

    /// Youngest member.
    #[inline]
    pub fn tail(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Removes and returns the head.
    #[inline]
    pub fn pop_front<S: Linked>(&mut self, slots: &mut [S]) -> Option<u32> {
        let h = self.head()?;
        self.remove(slots, h);
        Some(h)
    }

    /// Members from head to tail (for tests and snapshots).
    pub fn iter<'a, S: Linked>(&self, slots: &'a [S]) -> impl Iterator<Item = u32> + 'a {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let out = cur;
            cur = slots[cur as usize].next();
            Some(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Default)]
    struct N {
        p: u32,
        n: u32,
    }
    impl Linked for N {
        fn prev(&self) -> u32 {
            self.p
        }
        fn next(&self) -> u32 {
            self.n
        }
        fn set_links(&mut self, p: u32, n: u32) {
            self.p = p;
            self.n = n;
        }
        fn set_prev(&mut self, p: u32) {
            self.p = p;
        }
        fn set_next(&mut self, n: u32) {
            self.n = n;
        }
    }

    proptest! {
        /// The list behaves like a VecDeque model under random push/remove/pop.
        #[test]
        fn matches_model(ops in proptest::collection::vec((0u8..4, 0u32..16), 0..200)) {
            let mut slots = vec![N::default(); 16];
            let mut list = List::default();
            let mut model: std::collections::VecDeque<u32> = Default::default();
            for (op, idx) in ops {
                match op {
                    0 if !model.contains(&idx) => {
                        list.push_back(&mut slots, idx);
                        model.push_back(idx);
                    }
                    1 if model.contains(&idx) => {
                        list.remove(&mut slots, idx);
                        model.retain(|&x| x != idx);
                    }
                    2 => prop_assert_eq!(list.pop_front(&mut slots), model.pop_front()),
                    3 if !model.contains(&idx) => {
                        // After the member at position idx % len, or at the head.
                        let at = if model.is_empty() { 0 } else { idx as usize % (model.len() + 1) };
                        let after = if at == 0 { NIL } else { model[at - 1] };
                        list.insert_after(&mut slots, after, idx);
                        model.insert(at, idx);
                    }
                    _ => {}
                }
                prop_assert_eq!(list.iter(&slots).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(list.len() as usize, model.len());
            }
        }
    }
}
