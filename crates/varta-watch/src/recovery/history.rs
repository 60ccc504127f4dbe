//! A read-only per-pid view of what recovery did, for the control API.
//!
//! The recovery thread owns the truth (its policy table); after each
//! report it publishes the agent's summary here. The HTTP thread reads it
//! under a short lock; the detection loop never touches it. Bounded by the
//! recovery table's capacity: when full, entries of agents the policy no
//! longer tracks are dropped first, and a new agent that still does not
//! fit is simply not shown (its history is `null`-equivalent zeros).

use std::sync::Mutex;

use rustc_hash::FxHashMap;

/// One agent's recovery summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Commands started inside the storm cap's current window.
    pub attempts: u32,
    /// Label of the last outcome (`varta_recovery_outcomes_total`'s
    /// `outcome` values), None before the first.
    pub last_outcome: Option<&'static str>,
    /// The storm cap was hit and the agent has not beaten since.
    pub given_up: bool,
}

/// pid → [`History`], written by the recovery thread.
#[derive(Debug)]
pub struct RecoveryHistory {
    map: Mutex<FxHashMap<u32, History>>,
    capacity: usize,
}

impl RecoveryHistory {
    /// An empty view holding at most `capacity` agents.
    pub fn new(capacity: usize) -> RecoveryHistory {
        RecoveryHistory {
            map: Mutex::new(FxHashMap::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<u32, History>> {
        // Nothing panics while holding it; a poisoned map is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The summary of `pid`, if recovery ever acted on it.
    pub fn get(&self, pid: u32) -> Option<History> {
        self.lock().get(&pid).copied()
    }

    /// Pids currently given up (for `state=given_up` filters).
    pub fn given_up(&self) -> rustc_hash::FxHashSet<u32> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.given_up)
            .map(|(&p, _)| p)
            .collect()
    }

    /// Recovery thread: publishes `pid`'s summary. `tracked` tells whether
    /// the policy still has state for a pid (used to make room).
    pub(crate) fn record(&self, pid: u32, h: History, tracked: impl Fn(u32) -> bool) {
        let mut map = self.lock();
        if !map.contains_key(&pid) && map.len() >= self.capacity {
            map.retain(|&p, _| tracked(p));
            if map.len() >= self.capacity {
                return;
            }
        }
        map.insert(pid, h);
    }

    /// Recovery thread: `pid` beat again (given-up state cleared).
    pub(crate) fn cleared(&self, pid: u32) {
        if let Some(h) = self.lock().get_mut(&pid) {
            h.given_up = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_makes_room_from_untracked() {
        let h = RecoveryHistory::new(2);
        let e = History {
            attempts: 1,
            last_outcome: Some("spawned"),
            given_up: false,
        };
        h.record(1, e, |_| true);
        h.record(2, e, |_| true);
        h.record(3, e, |_| true);
        assert!(h.get(3).is_none(), "full of tracked agents: not shown");
        h.record(3, e, |p| p != 1);
        assert!(h.get(3).is_some() && h.get(1).is_none());
        h.record(
            2,
            History {
                given_up: true,
                ..e
            },
            |_| true,
        );
        assert_eq!(h.given_up().into_iter().collect::<Vec<_>>(), vec![2]);
        h.cleared(2);
        assert!(h.given_up().is_empty());
    }
}
