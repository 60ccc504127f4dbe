//! The live agents, as deadline queues: one list per (policy class,
//! phase). Every member of a list has the same timeout — its class's
//! threshold, or threshold + startup grace while in grace — so a list
//! ordered by last beat is ordered by deadline and its head is the next to
//! stall. A beat is O(1) (unlink, push to the tail); detection is
//! O(lists + stalls). With one class (no rules) this is the single live
//! list of the original design.

use super::lists::{List, NIL};
use super::slot::{Slot, IN_GRACE, MAX_CLASSES};

/// Timeouts of one policy class, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassTimeouts {
    /// Silence before a stall.
    pub threshold_ns: u64,
    /// Extra silence allowed after the first beat of a life.
    pub grace_ns: u64,
}

/// Live lists by class and phase.
pub struct LiveSet {
    /// Index `class * 2 + in_grace`.
    lists: Vec<List>,
    /// Bit `l` set while list `l` is not empty: the per-call scans
    /// (`next_deadline`, `due`, `oldest`) visit only lists with members.
    nonempty: u64,
    classes: Vec<ClassTimeouts>,
    len: u32,
}

const _: () = assert!(MAX_CLASSES * 2 <= 64, "nonempty is a u64 bitmask");

#[inline]
fn list_of(s: &Slot) -> usize {
    s.class() as usize * 2 + usize::from(s.flags & IN_GRACE != 0)
}

impl LiveSet {
    /// One class (index 0) with `threshold_ns` and no grace.
    pub fn new(threshold_ns: u64) -> LiveSet {
        LiveSet {
            lists: vec![List::default(); MAX_CLASSES * 2],
            nonempty: 0,
            classes: vec![ClassTimeouts {
                threshold_ns,
                grace_ns: 0,
            }],
            len: 0,
        }
    }

    /// Live agents.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Timeouts of `class` (class 0 when unknown).
    pub fn class(&self, class: u8) -> ClassTimeouts {
        self.classes
            .get(class as usize)
            .copied()
            .unwrap_or(self.classes[0])
    }

    /// Number of classes.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// Replaces the class table (at most [`MAX_CLASSES`]; extra entries are
    /// ignored). Deadlines follow at once: lists stay ordered by last beat,
    /// only their timeouts change. Slots of classes that no longer exist
    /// must be moved by the caller ([`LiveSet::rebuild`]).
    pub fn set_classes(&mut self, classes: &[ClassTimeouts]) {
        self.classes = classes.iter().take(MAX_CLASSES).copied().collect();
        if self.classes.is_empty() {
            self.classes.push(ClassTimeouts {
                threshold_ns: 0,
                grace_ns: 0,
            });
        }
    }

    fn timeout(&self, list: usize) -> u64 {
        let c = self.class((list / 2) as u8);
        if list % 2 == 1 {
            c.threshold_ns.saturating_add(c.grace_ns)
        } else {
            c.threshold_ns
        }
    }

    /// Appends `idx` to the tail of its list (it must be the newest beat
    /// of that list, which every just-touched slot is).
    #[inline]
    pub fn push_back(&mut self, slots: &mut [Slot], idx: u32) {
        let l = list_of(&slots[idx as usize]);
        self.lists[l].push_back(slots, idx);
        self.nonempty |= 1 << l;
        self.len += 1;
    }

    /// Unlinks `idx` from its list.
    #[inline]
    pub fn remove(&mut self, slots: &mut [Slot], idx: u32) {
        let l = list_of(&slots[idx as usize]);
        self.lists[l].remove(slots, idx);
        if self.lists[l].len() == 0 {
            self.nonempty &= !(1 << l);
        }
        self.len -= 1;
    }

    /// Puts `idx` (on no list) into its list at its place by last beat,
    /// walking from the tail: a slot whose class changed shortly after it
    /// beat lands within a few steps of the tail.
    pub fn insert_ordered(&mut self, slots: &mut [Slot], idx: u32) {
        let l = list_of(&slots[idx as usize]);
        let t = slots[idx as usize].last_beat_ns;
        let mut after = self.lists[l].tail().unwrap_or(NIL);
        while after != NIL && slots[after as usize].last_beat_ns > t {
            after = slots[after as usize].prev;
        }
        self.lists[l].insert_after(slots, after, idx);
        self.nonempty |= 1 << l;
        self.len += 1;
    }

    /// The earliest deadline of any live agent.
    pub fn next_deadline(&self, slots: &[Slot]) -> Option<u64> {
        self.heads()
            .map(|(l, h)| {
                slots[h as usize]
                    .last_beat_ns
                    .saturating_add(self.timeout(l))
            })
            .min()
    }

    /// (list, head) of every non-empty list, from the bitmask: idle ticks
    /// cost one step per populated list, not one per possible list.
    fn heads(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut bits = self.nonempty;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let l = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some((l, self.lists[l].head().unwrap_or(NIL)))
        })
        .filter(|&(_, h)| h != NIL)
    }

    /// A live agent whose deadline is at or before `now_ns`, if any (the
    /// head of some list); the caller moves it off the live set.
    pub fn due(&self, slots: &[Slot], now_ns: u64) -> Option<u32> {
        self.heads().find_map(|(l, h)| {
            let silent = now_ns.saturating_sub(slots[h as usize].last_beat_ns);
            (silent >= self.timeout(l)).then_some(h)
        })
    }

    /// The live agent that beat least recently (balanced eviction).
    pub fn oldest(&self, slots: &[Slot]) -> Option<u32> {
        self.heads()
            .map(|(_, h)| h)
            .min_by_key(|&h| slots[h as usize].last_beat_ns)
    }

    /// Every live agent, list by list (snapshots, tests).
    pub fn iter<'a>(&'a self, slots: &'a [Slot]) -> impl Iterator<Item = u32> + 'a {
        self.lists.iter().flat_map(move |l| l.iter(slots))
    }

    /// Re-files every live slot after their classes changed (reload): the
    /// lists are merged in last-beat order and each slot appended to its
    /// new list, so every list stays ordered. O(n log lists).
    pub fn rebuild(&mut self, slots: &mut [Slot]) {
        let mut heads: Vec<u32> = self.lists.iter().map(|l| l.head().unwrap_or(NIL)).collect();
        let mut order = Vec::with_capacity(self.len as usize);
        // A binary heap of (last beat, list) would be O(n log k); with at
        // most 64 lists a linear pick per element is as fast in practice.
        loop {
            let mut best: Option<(u64, usize)> = None;
            for (l, &h) in heads.iter().enumerate() {
                if h == NIL {
                    continue;
                }
                let t = slots[h as usize].last_beat_ns;
                if best.is_none_or(|(bt, _)| t < bt) {
                    best = Some((t, l));
                }
            }
            let Some((_, l)) = best else { break };
            let h = heads[l];
            heads[l] = slots[h as usize].next;
            order.push(h);
        }
        for l in &mut self.lists {
            *l = List::default();
        }
        self.nonempty = 0;
        self.len = 0;
        for idx in order {
            slots[idx as usize].prev = NIL;
            slots[idx as usize].next = NIL;
            self.push_back(slots, idx);
        }
    }

    /// Checks that every list is ordered by last beat and holds only slots
    /// of its class and phase (tests).
    pub fn check(&self, slots: &[Slot]) -> u32 {
        let mut n = 0;
        for (l, list) in self.lists.iter().enumerate() {
            assert_eq!(
                self.nonempty & (1 << l) != 0,
                list.len() > 0,
                "nonempty bit of list {l}"
            );
            let mut last = 0;
            for idx in list.iter(slots) {
                let s = &slots[idx as usize];
                assert_eq!(list_of(s), l, "slot on its class list");
                assert!(s.last_beat_ns >= last, "list ordered by last beat");
                last = s.last_beat_ns;
                n += 1;
            }
        }
        assert_eq!(n, self.len);
        n
    }
}
