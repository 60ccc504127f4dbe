//! Per-agent policy in the tracker: the class table (threshold and startup
//! grace per class), moving agents between classes when their rule becomes
//! known or changes, and the admission records identity resolution feeds
//! on.

use super::live::ClassTimeouts;
use super::slot::SlotState;
use super::{Admitted, Tracker};
use crate::events::Origin;

impl Tracker {
    /// Sets the policy classes: index 0 is the global one (its threshold
    /// is [`TrackerSettings::threshold_ns`] whatever is passed), the rest
    /// come from per-agent rules; at most [`MAX_CLASSES`]. Lists keep their
    /// order, so deadlines follow at once: silence so far counts against
    /// the new timeouts. Slots whose class index no longer exists must be
    /// reassigned ([`Tracker::reclassify`]).
    pub fn set_classes(&mut self, classes: &[ClassTimeouts]) {
        let mut v: Vec<ClassTimeouts> = classes.to_vec();
        if v.is_empty() {
            v.push(ClassTimeouts {
                threshold_ns: 0,
                grace_ns: 0,
            });
        }
        v[0] = ClassTimeouts {
            threshold_ns: self.settings.threshold_ns,
            grace_ns: 0,
        };
        self.live.set_classes(&v);
        if usize::from(self.admit_class) >= self.live.class_count() {
            self.admit_class = 0;
        }
    }

    /// The class new agents start in until their policy is known (e.g. one
    /// with the longest timeouts of all rules, so nothing stalls before its
    /// rule applies).
    pub fn set_admit_class(&mut self, class: u8) {
        self.admit_class = if usize::from(class) < self.live.class_count() {
            class
        } else {
            0
        };
    }

    /// Timeouts of `class`.
    pub fn class_timeouts(&self, class: u8) -> ClassTimeouts {
        self.live.class(class)
    }

    /// Moves `pid` to policy class `class` (its rule is now known). A live
    /// agent is re-filed at its place by last beat, so its silence so far
    /// counts against the new timeouts; an agent still at its first beat
    /// keeps its startup grace. Returns false for an unknown pid or class.
    pub fn assign_class(&mut self, pid: u32, class: u8) -> bool {
        if usize::from(class) >= self.live.class_count() {
            return false;
        }
        let Some(idx) = self.index.get(pid) else {
            return false;
        };
        let s = &self.slots[idx as usize];
        if s.class() == class {
            return true;
        }
        self.changed.mark(idx);
        if s.state == SlotState::Live {
            self.live.remove(&mut self.slots, idx);
            self.slots[idx as usize].set_class(class);
            self.live.insert_ordered(&mut self.slots, idx);
        } else {
            self.slots[idx as usize].set_class(class);
        }
        true
    }

    /// Re-evaluates every tracked agent's class with `f(pid, current
    /// class, origin)` (reload), then re-files the live lists in one merge pass.
    /// Returns the pids whose class changed.
    pub fn reclassify(&mut self, mut f: impl FnMut(u32, u8, Origin) -> u8) -> Vec<u32> {
        let classes = self.live.class_count();
        let mut changed = Vec::new();
        for (idx, s) in self.slots.iter_mut().enumerate() {
            if s.state == SlotState::Free {
                continue;
            }
            let mut c = f(s.pid, s.class(), s.origin);
            if usize::from(c) >= classes {
                c = 0;
            }
            if c != s.class() {
                changed.push(s.pid);
                s.set_class(c);
                self.changed.mark(idx as u32);
            }
        }
        // Lists are per class: re-file live slots even if only the class
        // table shrank under them.
        self.live.rebuild(&mut self.slots);
        changed
    }

    /// Starts recording admissions for [`Tracker::take_admitted`]; the
    /// caller must drain them after every batch.
    pub fn record_admissions(&mut self) {
        self.record_admitted = true;
    }

    /// Agents admitted or starting a new life since the last call: their
    /// identity and policy are to be resolved.
    pub fn take_admitted(&mut self) -> Vec<Admitted> {
        std::mem::take(&mut self.admitted)
    }

    /// The slot index of `pid`, if tracked: where the policy engine files
    /// its name for the control API's snapshot (parallel to
    /// [`Tracker::slots`]).
    pub fn slot_of(&self, pid: u32) -> Option<u32> {
        self.index.get(pid)
    }

    /// Whether `pid` is tracked with the given process start time (still
    /// the life an identity was resolved for).
    pub fn is_life(&self, pid: u32, start_time: u64) -> bool {
        self.index
            .get(pid)
            .is_some_and(|i| self.slots[i as usize].start_time == start_time)
    }
}
