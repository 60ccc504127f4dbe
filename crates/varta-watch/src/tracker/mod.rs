//! Agent state: the one owner of every tracked pid.
//!
//! - O(1) per beat: a hash lookup, a nonce comparison, and moving the slot
//!   to the tail of the live list.
//! - Stall detection is O(stalls): agents of one policy class share one
//!   threshold (and startup grace), so a live list ordered by last beat *is*
//!   a deadline queue — its head is the next agent to stall. There is one
//!   such list per class and phase ([`live::LiveSet`]), at most 64, and a
//!   slot's class lives in spare bits of its flags.
//! - Memory is bounded by `--tracker-capacity`: slots (64 B each) and the
//!   index are reserved up front; hostile traffic can only fill them, and a
//!   full tracker evicts or refuses per `--tracker-eviction-policy`.

mod changes;
mod index;
mod lists;
mod live;
mod policy;
mod rate;
mod slot;
mod types;

use varta_vlp::Frame;

use crate::config::EvictionPolicy;
use crate::events::{Event, EventBus, Origin, RejectReason};
pub use changes::ChangeSet;
use index::PidIndex;
use lists::{List, NIL};
pub use live::ClassTimeouts;
use live::LiveSet;
pub use rate::{PidBucket, TokenBucket};
pub use slot::{Slot, SlotState, HAS_NONCE, HAS_TERMINAL, IN_GRACE, MAX_CLASSES, POLICY_BITS};
pub use types::{
    Admitted, AgentView, Incoming, NoProbe, ProcessProbe, Tally, TrackerSettings, Verdict,
};

/// Nonce wrap window of spec §4: `last ≥ u64::MAX − 2^20` and `new < 2^20`.
const WRAP_WINDOW: u64 = 1 << 20;

/// The agent table.
pub struct Tracker {
    settings: TrackerSettings,
    slots: Vec<Slot>,
    /// Per-slot counters for per-agent metrics, parallel to the first
    /// `tallies.len()` slots only: exactly the agents whose per-pid series
    /// are exported (`--per-agent-metrics-limit`), so the array stays
    /// cache-sized however many agents are tracked, and beats of other
    /// agents never touch it. Empty without metrics.
    tallies: Vec<Tally>,
    /// How many slots get a tally.
    tally_limit: u32,
    index: PidIndex,
    /// One list per [`SlotState`], indexed by the state's discriminant —
    /// except live agents, which are on `live`'s per-class lists.
    lists: [List; 4],
    /// Live agents by policy class: the deadline queues.
    live: LiveSet,
    /// Class of a newly admitted agent (its policy is not known yet).
    admit_class: u8,
    /// Agents admitted (or starting a new life) since the last
    /// [`Tracker::take_admitted`], for identity resolution; only recorded
    /// once [`Tracker::record_admissions`] turned it on (the owner then
    /// drains it after every batch, which bounds it by the batch size).
    admitted: Vec<Admitted>,
    record_admitted: bool,
    global: TokenBucket,
    /// Stalls are not raised before this observer time (clock-jump grace).
    grace_until: u64,
    /// Slots whose snapshot-visible fields changed since the last
    /// [`Tracker::drain_changes`] (control-API snapshots copy only those).
    changed: ChangeSet,
}

impl Tracker {
    /// Reserves room for `settings.capacity` agents up front.
    pub fn new(settings: TrackerSettings) -> Tracker {
        let cap = settings.capacity as usize;
        let threshold_ns = settings.threshold_ns;
        let index = PidIndex::new();
        Tracker {
            global: TokenBucket::new(settings.global_beat_rate, settings.global_beat_burst),
            settings,
            slots: Vec::with_capacity(cap),
            tallies: Vec::new(),
            tally_limit: 0,
            index,
            lists: [List::default(); 4],
            live: LiveSet::new(threshold_ns),
            admit_class: 0,
            admitted: Vec::new(),
            record_admitted: false,
            grace_until: 0,
            changed: ChangeSet::default(),
        }
    }

    /// Applies new settings without losing agent state. Capacity cannot
    /// change at runtime (memory is reserved at start); returns false if a
    /// different capacity was asked for and ignored.
    pub fn reconfigure(&mut self, mut settings: TrackerSettings) -> bool {
        let capacity_kept = settings.capacity == self.settings.capacity;
        settings.capacity = self.settings.capacity;
        if (settings.global_beat_rate, settings.global_beat_burst)
            != (
                self.settings.global_beat_rate,
                self.settings.global_beat_burst,
            )
        {
            self.global = TokenBucket::new(settings.global_beat_rate, settings.global_beat_burst);
        }
        // Class 0 is the global policy: the flags' threshold, no grace.
        let mut classes: Vec<ClassTimeouts> = (0..self.live.class_count())
            .map(|c| self.live.class(c as u8))
            .collect();
        classes[0].threshold_ns = settings.threshold_ns;
        self.live.set_classes(&classes);
        self.settings = settings;
        capacity_kept
    }

    fn list(&self, state: SlotState) -> &List {
        &self.lists[state as usize]
    }

    /// Current settings.
    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// Tracked agents (any state but free).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no agent is tracked.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// (live, stalled, exited) counts.
    pub fn counts(&self) -> (u32, u32, u32) {
        (
            self.live.len(),
            self.list(SlotState::Stalled).len(),
            self.list(SlotState::Exited).len(),
        )
    }

    /// Bytes reserved for slots and index (for capacity planning output).
    pub fn reserved_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.tallies.capacity() * std::mem::size_of::<Tally>()
            + self.index.reserved_bytes()
    }

    /// One agent's state.
    pub fn get(&self, pid: u32) -> Option<AgentView> {
        let s = &self.slots[self.index.get(pid)? as usize];
        Some(AgentView {
            pid: s.pid,
            state: s.state,
            last_nonce: (s.flags & HAS_NONCE != 0).then_some(s.last_nonce),
            last_beat_ns: s.last_beat_ns,
            status: s.status,
            payload: s.payload,
            origin: s.origin,
        })
    }

    /// Observer time at which the next stall is due, if any agent is live.
    pub fn next_deadline(&self) -> Option<u64> {
        let due = self.live.next_deadline(&self.slots)?;
        Some(due.max(self.grace_until))
    }

    /// After the observer itself was paused (suspend, VM stop), agents get
    /// one threshold from `now` before anyone is declared stalled.
    pub fn grant_grace(&mut self, now_ns: u64) {
        self.grace_until = now_ns.saturating_add(self.settings.threshold_ns);
    }

    /// Raises `stall` for every live agent silent for at least its
    /// timeout. Cost is O(classes + agents that stall).
    pub fn expire(&mut self, now_ns: u64, bus: &mut EventBus) -> u32 {
        if now_ns < self.grace_until {
            return 0;
        }
        let mut raised = 0;
        while let Some(head) = self.live.due(&self.slots, now_ns) {
            let s = self.slots[head as usize];
            self.relist(head, SlotState::Stalled);
            if let Some(t) = self.tallies.get_mut(head as usize) {
                t.stalls += 1;
            }
            bus.emit(
                now_ns,
                Event::Stall {
                    pid: s.pid,
                    last_nonce: s.last_nonce,
                    last_beat_ns: s.last_beat_ns,
                    origin: s.origin,
                    foreign_ns: self.settings.is_foreign(s.pidns),
                },
            );
            raised += 1;
        }
        raised
    }

    /// Applies [`Tracker::on_frame`] to a batch (one `recvmmsg` worth), in
    /// order, writing one verdict per frame into `verdicts`.
    ///
    /// Before the real work, the batch's index entries, slots and list
    /// neighbours are read in independent passes. With a million agents
    /// those are DRAM misses; issued back to back, the CPU overlaps them
    /// (memory-level parallelism) instead of paying each one in sequence
    /// inside the dependent per-frame logic. Safe code, no intrinsics.
    pub fn on_batch(
        &mut self,
        now_ns: u64,
        batch: &[Incoming],
        probe: &mut dyn ProcessProbe,
        bus: &mut EventBus,
        verdicts: &mut [Verdict],
    ) {
        const WARM: usize = 64;
        for (chunk, out) in batch.chunks(WARM).zip(verdicts.chunks_mut(WARM)) {
            let mut idx = [NIL; WARM];
            for (slot, inc) in idx.iter_mut().zip(chunk) {
                *slot = self.index.get(inc.pid).unwrap_or(NIL);
            }
            let mut sink = 0u32;
            let mut links = [(NIL, NIL); WARM];
            for (l, &i) in links.iter_mut().zip(&idx) {
                if let Some(s) = self.slots.get(i as usize) {
                    *l = (lists::Linked::prev(s), lists::Linked::next(s));
                }
            }
            for &(p, n) in &links {
                for j in [p, n] {
                    if let Some(s) = self.slots.get(j as usize) {
                        sink ^= s.pid;
                    }
                }
            }
            std::hint::black_box(sink);
            for (inc, v) in chunk.iter().zip(out.iter_mut()) {
                *v = self.on_frame(now_ns, *inc, probe, bus);
            }
        }
    }

    /// Applies spec §4 to one frame.
    pub fn on_frame(
        &mut self,
        now_ns: u64,
        inc: Incoming,
        probe: &mut dyn ProcessProbe,
        bus: &mut EventBus,
    ) -> Verdict {
        let pid = inc.pid;
        let reject = |bus: &mut EventBus, reason| {
            bus.emit(now_ns, Event::Rejected { pid, reason });
            Verdict::Dropped
        };
        if !self.global.take(now_ns) {
            return reject(bus, RejectReason::RateLimitedGlobal);
        }
        let now_ms = (now_ns / 1_000_000) as u32;
        let Some(idx) = self.index.get(pid) else {
            return self.admit(now_ns, inc, probe, bus);
        };
        let i = idx as usize;
        let slot = self.slots[i];
        if slot.origin != inc.origin {
            bus.emit(
                now_ns,
                Event::OriginConflict {
                    pid,
                    pinned: slot.origin,
                    got: inc.origin,
                },
            );
            return Verdict::Dropped;
        }
        if let Some(ns) = inc.pidns {
            if slot.pidns != 0 && ns != slot.pidns {
                bus.emit(
                    now_ns,
                    Event::NamespaceConflict {
                        pid,
                        pinned: u64::from(slot.pidns),
                        got: u64::from(ns),
                    },
                );
                return Verdict::Dropped;
            }
        }
        if !self.slots[i]
            .bucket
            .take(self.settings.max_beat_rate, now_ms)
        {
            return reject(bus, RejectReason::RateLimitedPid);
        }
        let f = inc.frame;
        if f.is_terminal() {
            let fresh = slot.flags & HAS_TERMINAL == 0 || f.timestamp > slot.last_terminal_ts;
            if !fresh && !self.new_life(now_ns, idx, inc, probe, bus) {
                return reject(bus, RejectReason::TerminalReplay);
            }
            self.accept_terminal(now_ns, idx, &f, bus);
            return Verdict::Accepted;
        }
        let wrapped = slot.flags & HAS_NONCE != 0
            && f.nonce <= slot.last_nonce
            && slot.last_nonce >= u64::MAX - WRAP_WINDOW
            && f.nonce < WRAP_WINDOW;
        let in_order = slot.flags & HAS_NONCE == 0 || f.nonce > slot.last_nonce || wrapped;
        let reborn = !in_order;
        if reborn && !self.new_life(now_ns, idx, inc, probe, bus) {
            return reject(bus, RejectReason::OutOfOrder);
        }
        if wrapped {
            bus.emit(now_ns, Event::NonceWrap { pid });
        }
        self.accept_beat(now_ns, idx, &f, bus);
        if reborn {
            self.enter_grace(idx);
        }
        Verdict::Accepted
    }

    /// A pid whose nonce went backwards may be a *different process* that
    /// inherited the pid. If its start time changed, reset the slot (a new
    /// life) and return true. Only reached on the rare out-of-order path,
    /// so the /proc read never costs the steady state.
    fn new_life(
        &mut self,
        now_ns: u64,
        idx: u32,
        inc: Incoming,
        probe: &mut dyn ProcessProbe,
        bus: &mut EventBus,
    ) -> bool {
        let s = &mut self.slots[idx as usize];
        let pidns = if inc.origin == Origin::KernelAttested {
            // A start time of 0 means the admitted process was already gone
            // when its first frame was read (a short-lived agent): any
            // process readable on this pid now is another one, and must not
            // be refused as out of order for ever.
            match probe.start_time(inc.pid) {
                Some(st) if st != s.start_time => {
                    s.start_time = st;
                    inc.pidns
                        .or_else(|| probe.pid_namespace(inc.pid))
                        .unwrap_or(0)
                }
                _ => return false,
            }
        } else {
            // No /proc for a network agent: a new session after at least a
            // threshold of silence is the only sign of a new process.
            let silent = now_ns.saturating_sub(s.last_beat_ns) >= self.settings.threshold_ns;
            if !(inc.new_session && silent) {
                return false;
            }
            0
        };
        if let Some(t) = self.tallies.get_mut(idx as usize) {
            *t = Tally::default();
        }
        // A new process: its policy is resolved again (it may be another
        // program), from the admission class; the caller's accept puts
        // it back in startup grace.
        s.flags &= !(HAS_NONCE | HAS_TERMINAL);
        let live = s.state == SlotState::Live;
        if live {
            self.live.remove(&mut self.slots, idx);
        }
        let s = &mut self.slots[idx as usize];
        s.set_class(self.admit_class);
        if live {
            self.live.insert_ordered(&mut self.slots, idx);
        }
        let s = &mut self.slots[idx as usize];
        s.last_nonce = 0;
        s.last_terminal_ts = 0;
        s.pidns = pidns;
        let (start_time, origin) = (s.start_time, s.origin);
        if self.record_admitted {
            self.admitted.push(Admitted {
                pid: inc.pid,
                start_time,
                origin,
                peer: inc.peer,
            });
        }
        self.changed.mark(idx);
        bus.emit(now_ns, Event::NewLife { pid: inc.pid });
        true
    }

    /// Moves `idx` from whatever list holds it to the tail of `target`'s.
    /// Any move ends the startup grace ([`Tracker::enter_grace`] starts it).
    fn relist(&mut self, idx: u32, target: SlotState) {
        let from = self.slots[idx as usize].state;
        if from == SlotState::Live {
            self.live.remove(&mut self.slots, idx);
        } else {
            self.lists[from as usize].remove(&mut self.slots, idx);
        }
        self.changed.mark(idx);
        let s = &mut self.slots[idx as usize];
        s.flags &= !IN_GRACE;
        s.state = target;
        if target == SlotState::Live {
            self.live.push_back(&mut self.slots, idx);
        } else {
            self.lists[target as usize].push_back(&mut self.slots, idx);
        }
    }

    /// The first beat of a life: its first deadline includes the class's
    /// startup grace (the slot was just appended, so it stays the newest).
    fn enter_grace(&mut self, idx: u32) {
        if self.slots[idx as usize].state == SlotState::Live {
            self.live.remove(&mut self.slots, idx);
            self.slots[idx as usize].flags |= IN_GRACE;
            self.live.push_back(&mut self.slots, idx);
        }
    }

    /// Records an accepted frame in slot `idx`, moves it to `target`'s
    /// list, and returns the slot as it was before.
    fn touch(&mut self, now_ns: u64, idx: u32, f: &Frame, target: SlotState) -> Slot {
        let before = self.slots[idx as usize];
        self.relist(idx, target);
        let s = &mut self.slots[idx as usize];
        s.last_beat_ns = now_ns;
        s.status = f.status;
        s.payload = f.payload;
        before
    }

    fn accept_beat(&mut self, now_ns: u64, idx: u32, f: &Frame, bus: &mut EventBus) {
        let prev = self.touch(now_ns, idx, f, SlotState::Live);
        if let Some(t) = self.tallies.get_mut(idx as usize) {
            t.beats += 1;
        }
        let s = &mut self.slots[idx as usize];
        s.last_nonce = f.nonce;
        s.flags |= HAS_NONCE;
        bus.emit(
            now_ns,
            Event::Beat {
                pid: s.pid,
                nonce: f.nonce,
                status: f.status,
                payload: f.payload,
                origin: s.origin,
            },
        );
        if matches!(prev.state, SlotState::Stalled | SlotState::Exited) {
            bus.emit(
                now_ns,
                Event::Recovered {
                    pid: prev.pid,
                    nonce: f.nonce,
                    status: f.status,
                    payload: f.payload,
                    silent_ns: now_ns.saturating_sub(prev.last_beat_ns),
                },
            );
        }
    }

    fn accept_terminal(&mut self, now_ns: u64, idx: u32, f: &Frame, bus: &mut EventBus) {
        self.touch(now_ns, idx, f, SlotState::Exited);
        let foreign_ns = self.settings.is_foreign(self.slots[idx as usize].pidns);
        let s = &mut self.slots[idx as usize];
        s.last_terminal_ts = f.timestamp;
        s.flags |= HAS_TERMINAL;
        bus.emit(
            now_ns,
            Event::Exit {
                pid: s.pid,
                timestamp: f.timestamp,
                payload: f.payload,
                origin: s.origin,
                foreign_ns,
            },
        );
    }

    /// First frame of an unknown pid: namespace policy, then a slot.
    fn admit(
        &mut self,
        now_ns: u64,
        inc: Incoming,
        probe: &mut dyn ProcessProbe,
        bus: &mut EventBus,
    ) -> Verdict {
        let pid = inc.pid;
        let (start_time, pidns) = if inc.origin == Origin::KernelAttested {
            (
                probe.start_time(pid).unwrap_or(0),
                inc.pidns.or_else(|| probe.pid_namespace(pid)).unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        let own = self.settings.own_pidns;
        if pidns != 0 && own != 0 && pidns != own && !self.settings.allow_cross_namespace {
            bus.emit(
                now_ns,
                Event::Rejected {
                    pid,
                    reason: RejectReason::CrossNamespace,
                },
            );
            return Verdict::CrossNamespace;
        }
        let Some(idx) = self.allocate(now_ns, pid, bus) else {
            return Verdict::Dropped;
        };
        let now_ms = (now_ns / 1_000_000) as u32;
        if let Some(t) = self.tallies.get_mut(idx as usize) {
            *t = Tally::default();
        }
        let s = &mut self.slots[idx as usize];
        *s = Slot {
            pid,
            start_time,
            pidns,
            origin: inc.origin,
            state: SlotState::Free,
            bucket: PidBucket::full(self.settings.max_beat_rate, now_ms),
            flags: self.admit_class << slot::CLASS_SHIFT,
            ..Slot::empty()
        };
        if self.record_admitted {
            self.admitted.push(Admitted {
                pid,
                start_time,
                origin: inc.origin,
                peer: inc.peer,
            });
        }
        self.lists[SlotState::Free as usize].push_back(&mut self.slots, idx);
        self.index.insert(pid, idx);
        // The admitting frame itself spends a token like any other.
        let _ = self.slots[idx as usize]
            .bucket
            .take(self.settings.max_beat_rate, now_ms);
        if inc.frame.is_terminal() {
            self.accept_terminal(now_ns, idx, &inc.frame, bus);
        } else {
            self.accept_beat(now_ns, idx, &inc.frame, bus);
            self.enter_grace(idx);
        }
        Verdict::Accepted
    }

    /// A slot for a new pid: a free one, a fresh one below capacity, or an
    /// evicted one. The returned slot is on no list.
    fn allocate(&mut self, now_ns: u64, pid: u32, bus: &mut EventBus) -> Option<u32> {
        if let Some(idx) = self.lists[SlotState::Free as usize].pop_front(&mut self.slots) {
            return Some(idx);
        }
        if self.slots.len() < self.settings.capacity as usize {
            self.slots.push(Slot::empty());
            if self.slots.len() <= self.tally_limit as usize {
                self.tallies.push(Tally::default());
            }
            return Some((self.slots.len() - 1) as u32);
        }
        // Full. Exited agents first (they said goodbye), then the longest
        // stalled; only the balanced policy touches a live agent.
        let (victim, was_live) = if let Some(h) = self.list(SlotState::Exited).head() {
            (h, false)
        } else if let Some(h) = self.list(SlotState::Stalled).head() {
            (h, false)
        } else if self.settings.eviction == EvictionPolicy::Balanced {
            (self.live.oldest(&self.slots)?, true)
        } else {
            bus.emit(now_ns, Event::CapacityExceeded { pid });
            return None;
        };
        let old = self.slots[victim as usize].pid;
        self.relist(victim, SlotState::Free);
        self.lists[SlotState::Free as usize].remove(&mut self.slots, victim);
        self.index.remove(old);
        bus.emit(now_ns, Event::Eviction { pid: old, was_live });
        Some(victim)
    }

    /// Keeps beat and stall tallies for the agents in the first `limit`
    /// slots (the ones per-agent metrics export). Call before the first
    /// frame; 0 (the default) keeps none.
    pub fn set_tally_limit(&mut self, limit: u32) {
        self.tally_limit = limit.min(self.settings.capacity);
        self.tallies.reserve_exact(self.tally_limit as usize);
    }

    /// Calls `f` with each tracked agent that has a tally (see
    /// [`Tracker::set_tally_limit`]), in slot order, until it returns false.
    /// O(tally limit): for metrics snapshots.
    pub fn for_each_agent(&self, mut f: impl FnMut(&Slot, &Tally) -> bool) {
        for (s, t) in self.slots.iter().zip(&self.tallies) {
            if s.state != SlotState::Free && !f(s, t) {
                break;
            }
        }
    }

    /// Slots in use or ever used (free ones included): the length of
    /// [`Tracker::slots`].
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every slot, free ones included, read-only: a control-API snapshot
    /// reads them in bounded chunks between ingest batches.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Number of policy classes ([`Tracker::class_timeouts`] is valid below it).
    pub fn class_count(&self) -> usize {
        self.live.class_count()
    }

    /// Every tracked pid with its state (tests, snapshots); O(agents).
    pub fn snapshot(&self) -> Vec<AgentView> {
        let mut out: Vec<AgentView> = self
            .slots
            .iter()
            .filter(|s| s.state != SlotState::Free)
            .filter_map(|s| self.get(s.pid))
            .collect();
        out.sort_by_key(|a| a.pid);
        out
    }

    /// Checks list/index consistency (tests and debug builds).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let live = self.live.check(&self.slots);
        let total = live
            + self.list(SlotState::Stalled).len()
            + self.list(SlotState::Exited).len()
            + self.list(SlotState::Free).len();
        assert_eq!(total as usize, self.slots.len(), "every slot on one list");
        assert_eq!(
            (live + self.list(SlotState::Stalled).len() + self.list(SlotState::Exited).len())
                as usize,
            self.index.len()
        );
        for idx in self.live.iter(&self.slots) {
            let s = &self.slots[idx as usize];
            assert_eq!(s.state, SlotState::Live);
            assert_eq!(self.index.get(s.pid), Some(idx));
        }
        for (list, state) in [
            (self.list(SlotState::Stalled), SlotState::Stalled),
            (self.list(SlotState::Exited), SlotState::Exited),
            (self.list(SlotState::Free), SlotState::Free),
        ] {
            for idx in list.iter(&self.slots) {
                let s = &self.slots[idx as usize];
                assert_eq!(s.state, state);
                if state != SlotState::Free {
                    assert_eq!(self.index.get(s.pid), Some(idx));
                }
            }
        }
        let _ = NIL;
    }
}

#[cfg(test)]
mod tests;
