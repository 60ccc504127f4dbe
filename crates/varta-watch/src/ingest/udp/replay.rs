//! Secure-UDP replay protection (docs/protocol.md, "Replay protection on
//! the receiver"), keyed by the authenticated pid.
//!
//! Per pid: the current and previous IV prefix, each with the highest
//! counter accepted under it; the highest regular nonce; the newest
//! terminal timestamp; the time of the last accepted datagram. Beyond the
//! protocol's minimum it also remembers the two prefixes before those
//! (retired sessions) and refuses them outright: the rules let a frame
//! with an unknown prefix in after a threshold of silence (how a recycled
//! pid starts over), and without this memory a datagram captured two
//! reconnects ago could be replayed once the agent fell silent. A capture
//! from more than four sessions back is the bounded memory's residual
//! risk (docs/protocol.md). Entries sit
//! on one list ordered by that time (a touch moves an entry to the tail in
//! O(1)), so the oldest sender is always the head.
//!
//! Bounded: at most `capacity` entries, allocated in chunks as senders
//! arrive. A full table evicts only the oldest entry, and only if that
//! sender has been silent for at least the stall threshold; otherwise the
//! new sender is refused. A live sender is never evicted, and a stalled
//! one keeps its state — so a datagram captured before its silence cannot
//! be replayed after it — until the room is needed.

use rustc_hash::FxHashMap;

/// Entries added to the table's storage at a time (64 B each: 512 KiB).
const CHUNK: usize = 8192;
const NIL: u32 = u32::MAX;

const HAS_NONCE: u8 = 1;
const HAS_TERMINAL: u8 = 2;
/// Prefixes remembered per sender: current, previous, two retired.
const PREFIXES: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Entry {
    pid: u32,
    /// Highest counter under `ivs[0]` (current) and `ivs[1]` (previous).
    ctrs: [u32; 2],
    /// Newest first; only the first `n_ivs` are meaningful.
    ivs: [[u8; 8]; PREFIXES],
    n_ivs: u8,
    flags: u8,
    max_nonce: u64,
    terminal_ts: u64,
    last_ns: u64,
    prev: u32,
    next: u32,
}

/// The replay-relevant facts of one verified, decoded datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Authenticated pid.
    pub pid: u32,
    /// IV prefix (`iv_random`).
    pub iv: [u8; 8],
    /// IV counter.
    pub ctr: u32,
    /// Terminal (dying-gasp) frame.
    pub terminal: bool,
    /// Frame nonce (regular frames).
    pub nonce: u64,
    /// Frame timestamp (terminal frames).
    pub timestamp: u64,
}

/// The table's verdict; an accepted datagram is already recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Fresh. `new_session`: the sender had no state, or started a new IV
    /// prefix after at least a threshold of silence — the tracker may then
    /// treat a restarted nonce as a new process on that pid.
    Accept {
        /// See above.
        new_session: bool,
    },
    /// Seen before (or older than what was seen): refuse.
    Replay,
    /// No state for this pid and no room: refuse.
    Full,
}

/// Replay state for up to `capacity` secure-UDP senders.
pub struct ReplayTable {
    capacity: u32,
    entries: Vec<Entry>,
    index: FxHashMap<u32, u32>,
    head: u32,
    tail: u32,
    evictions: u64,
}

impl ReplayTable {
    /// An empty table for at most `capacity` senders (≥ 1).
    pub fn new(capacity: u32) -> ReplayTable {
        let capacity = capacity.max(1);
        let first = (capacity as usize).min(CHUNK);
        let mut index = FxHashMap::default();
        index.reserve(first);
        ReplayTable {
            capacity,
            entries: Vec::with_capacity(first),
            index,
            head: NIL,
            tail: NIL,
            evictions: 0,
        }
    }

    /// Senders with state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no sender has state.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Most senders the table holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Stalled senders whose state was dropped to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Applies the replay rules to `s` at `now_ns` and, if it is fresh,
    /// records it. `threshold_ns` is the stall threshold.
    pub fn check(&mut self, now_ns: u64, threshold_ns: u64, s: &Sealed) -> Check {
        let Some(&i) = self.index.get(&s.pid) else {
            return match self.allocate(now_ns, threshold_ns) {
                Some(i) => {
                    let e = &mut self.entries[i as usize];
                    *e = Entry {
                        pid: s.pid,
                        ctrs: [s.ctr, 0],
                        ivs: [s.iv, [0; 8], [0; 8], [0; 8]],
                        n_ivs: 1,
                        last_ns: now_ns,
                        ..Entry::EMPTY
                    };
                    record_frame(e, s);
                    self.index.insert(s.pid, i);
                    self.push_back(i);
                    Check::Accept { new_session: true }
                }
                None => Check::Full,
            };
        };
        let e = &mut self.entries[i as usize];
        let silent = now_ns.saturating_sub(e.last_ns) >= threshold_ns;
        let known = e.ivs[..e.n_ivs as usize].iter().position(|iv| *iv == s.iv);
        let new_session = match known {
            // Current or previous prefix: the counter must move forward.
            Some(k @ (0 | 1)) => {
                if s.ctr <= e.ctrs[k] {
                    return Check::Replay;
                }
                e.ctrs[k] = s.ctr;
                false
            }
            // A retired prefix: no honest sender goes back two sessions,
            // and its frames predate the sender's current nonce range.
            Some(_) => return Check::Replay,
            None => {
                // A new session or a rotated prefix.
                let fresh = if s.terminal {
                    e.flags & HAS_TERMINAL == 0 || s.timestamp > e.terminal_ts
                } else {
                    e.flags & HAS_NONCE == 0 || s.nonce > e.max_nonce || silent
                };
                if !fresh {
                    return Check::Replay;
                }
                e.ivs.copy_within(0..PREFIXES - 1, 1);
                e.ivs[0] = s.iv;
                e.n_ivs = (e.n_ivs + 1).min(PREFIXES as u8);
                e.ctrs = [s.ctr, e.ctrs[0]];
                silent
            }
        };
        if new_session && !s.terminal {
            // A new process on a recycled pid restarts its nonce: the old
            // high-water mark must not lock it out of the next rotation.
            e.max_nonce = s.nonce;
        }
        record_frame(e, s);
        e.last_ns = now_ns;
        self.unlink(i);
        self.push_back(i);
        Check::Accept { new_session }
    }

    /// A slot for a new sender: fresh storage below capacity, else the
    /// oldest sender if it is silent for the threshold.
    fn allocate(&mut self, now_ns: u64, threshold_ns: u64) -> Option<u32> {
        if self.entries.len() < self.capacity as usize {
            if self.entries.len() == self.entries.capacity() {
                let room = self.capacity as usize - self.entries.len();
                self.entries.reserve_exact(room.min(CHUNK));
                self.index.reserve(room.min(CHUNK));
            }
            self.entries.push(Entry::EMPTY);
            return Some((self.entries.len() - 1) as u32);
        }
        let oldest = self.head;
        let e = self.entries.get(oldest as usize)?;
        if now_ns.saturating_sub(e.last_ns) < threshold_ns {
            return None;
        }
        let pid = e.pid;
        self.unlink(oldest);
        self.index.remove(&pid);
        self.evictions += 1;
        Some(oldest)
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next)
        };
        match p {
            NIL => self.head = n,
            p => self.entries[p as usize].next = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.entries[n as usize].prev = p,
        }
        let e = &mut self.entries[i as usize];
        e.prev = NIL;
        e.next = NIL;
    }

    fn push_back(&mut self, i: u32) {
        let t = self.tail;
        {
            let e = &mut self.entries[i as usize];
            e.prev = t;
            e.next = NIL;
        }
        match t {
            NIL => self.head = i,
            t => self.entries[t as usize].next = i,
        }
        self.tail = i;
    }
}

impl Entry {
    const EMPTY: Entry = Entry {
        pid: 0,
        ctrs: [0; 2],
        ivs: [[0; 8]; PREFIXES],
        n_ivs: 0,
        flags: 0,
        max_nonce: 0,
        terminal_ts: 0,
        last_ns: 0,
        prev: NIL,
        next: NIL,
    };
}

fn record_frame(e: &mut Entry, s: &Sealed) {
    if s.terminal {
        e.terminal_ts = e.terminal_ts.max(s.timestamp);
        e.flags |= HAS_TERMINAL;
    } else if e.flags & HAS_NONCE == 0 || s.nonce > e.max_nonce {
        e.max_nonce = s.nonce;
        e.flags |= HAS_NONCE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: u64 = 1_000;

    fn beat(pid: u32, iv: u8, ctr: u32, nonce: u64) -> Sealed {
        Sealed {
            pid,
            iv: [iv; 8],
            ctr,
            terminal: false,
            nonce,
            timestamp: 0,
        }
    }

    fn gasp(pid: u32, iv: u8, ctr: u32, ts: u64) -> Sealed {
        Sealed {
            terminal: true,
            nonce: u64::MAX,
            timestamp: ts,
            ..beat(pid, iv, ctr, 0)
        }
    }

    const OK: Check = Check::Accept { new_session: false };
    const NEW: Check = Check::Accept { new_session: true };

    #[test]
    fn known_prefix_needs_a_higher_counter() {
        let mut t = ReplayTable::new(4);
        assert_eq!(t.check(0, T, &beat(7, 1, 0, 1)), NEW);
        assert_eq!(t.check(1, T, &beat(7, 1, 1, 2)), OK);
        assert_eq!(t.check(2, T, &beat(7, 1, 1, 2)), Check::Replay);
        assert_eq!(t.check(3, T, &beat(7, 1, 0, 1)), Check::Replay);
        assert_eq!(t.check(4, T, &beat(7, 1, 9, 3)), OK);
    }

    #[test]
    fn prefix_rotation_keeps_the_previous_prefix() {
        let mut t = ReplayTable::new(4);
        t.check(0, T, &beat(7, 1, 5, 5));
        // New prefix, nonce moving on: a rotation.
        assert_eq!(t.check(1, T, &beat(7, 2, 0, 6)), OK);
        // The previous prefix still works above its counter (reordering).
        assert_eq!(t.check(2, T, &beat(7, 1, 6, 7)), OK);
        assert_eq!(t.check(3, T, &beat(7, 1, 6, 8)), Check::Replay);
        assert_eq!(t.check(4, T, &beat(7, 2, 0, 9)), Check::Replay);
    }

    #[test]
    fn unknown_prefix_with_an_old_nonce_is_refused_until_silence() {
        let mut t = ReplayTable::new(4);
        t.check(0, T, &beat(7, 1, 0, 50));
        // Fresh IV prefix but a nonce already passed: replay of a frame
        // from a forgotten session, or a new process too soon.
        assert_eq!(t.check(10, T, &beat(7, 3, 0, 1)), Check::Replay);
        // After a threshold of silence a new session restarting at 1 is a
        // new life on that pid.
        assert_eq!(t.check(T, T, &beat(7, 3, 0, 1)), NEW);
        assert_eq!(t.check(T + 1, T, &beat(7, 3, 1, 2)), OK);
    }

    #[test]
    fn captured_datagram_is_refused_after_the_silence_too() {
        let mut t = ReplayTable::new(4);
        let captured = beat(7, 1, 3, 3);
        assert_eq!(t.check(0, T, &captured), NEW);
        // Silence, then the attacker resends it: same prefix, same counter.
        assert_eq!(t.check(10 * T, T, &captured), Check::Replay);
    }

    #[test]
    fn a_retired_session_cannot_come_back_after_silence() {
        let mut t = ReplayTable::new(4);
        let captured = beat(7, 1, 0, 1);
        t.check(0, T, &captured);
        // Two reconnects: prefix 1 is now retired (neither current nor
        // previous).
        t.check(1, T, &beat(7, 2, 0, 2));
        t.check(2, T, &beat(7, 3, 0, 3));
        // The agent falls silent; the old datagram is resent.
        assert_eq!(t.check(10 * T, T, &captured), Check::Replay);
        // A genuinely new session still gets in.
        assert_eq!(t.check(10 * T, T, &beat(7, 9, 0, 1)), NEW);
    }

    #[test]
    fn terminal_frames_under_a_new_prefix_need_a_newer_timestamp() {
        let mut t = ReplayTable::new(4);
        assert_eq!(t.check(0, T, &gasp(7, 1, 0, 100)), NEW);
        assert_eq!(t.check(1, T, &gasp(7, 2, 0, 100)), Check::Replay);
        assert_eq!(t.check(2, T, &gasp(7, 2, 0, 101)), OK);
    }

    #[test]
    fn full_table_refuses_new_senders_and_keeps_live_ones() {
        let mut t = ReplayTable::new(2);
        assert_eq!(t.check(0, T, &beat(1, 1, 0, 1)), NEW);
        assert_eq!(t.check(1, T, &beat(2, 2, 0, 1)), NEW);
        assert_eq!(t.check(2, T, &beat(3, 3, 0, 1)), Check::Full);
        // Old senders keep working.
        assert_eq!(t.check(3, T, &beat(1, 1, 1, 2)), OK);
        assert_eq!(t.check(4, T, &beat(2, 2, 1, 2)), OK);
        // Sender 1 goes silent; sender 2 keeps beating.
        assert_eq!(t.check(T + 2, T, &beat(2, 2, 2, 3)), OK);
        // Now the oldest (1, silent for T) makes room.
        assert_eq!(t.check(T + 3, T, &beat(3, 3, 0, 1)), NEW);
        assert_eq!(t.evictions(), 1);
        assert_eq!(t.check(T + 4, T, &beat(2, 2, 3, 4)), OK);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn storage_grows_in_chunks_up_to_capacity() {
        let cap = (CHUNK + 10) as u32;
        let mut t = ReplayTable::new(cap);
        assert!(t.entries.capacity() <= CHUNK);
        for pid in 1..=cap {
            assert_eq!(t.check(0, T, &beat(pid, 1, 0, 1)), NEW);
        }
        assert_eq!(t.len(), cap as usize);
        assert!(t.entries.capacity() <= cap as usize);
        assert_eq!(t.check(1, T, &beat(cap + 1, 1, 0, 1)), Check::Full);
    }

    proptest! {
        /// Whatever the interleaving: a datagram (the same AEAD nonce means
        /// the same sealed bytes, so its frame nonce is a function of it) is
        /// accepted at most once while its sender has state, the table
        /// never exceeds its capacity, and a sender seen within the
        /// threshold is never evicted.
        #[test]
        fn no_datagram_is_accepted_twice(
            ops in proptest::collection::vec((1u32..6, 0u8..3, 0u32..6, 0u64..300), 1..200),
            cap in 1u32..5,
        ) {
            let mut t = ReplayTable::new(cap);
            let mut seen = std::collections::HashSet::new();
            let mut now = 0u64;
            let mut last_ok: std::collections::HashMap<u32, u64> = Default::default();
            for (pid, iv, ctr, dt) in ops {
                now += dt;
                let nonce = u64::from(iv) * 10 + u64::from(ctr) + 1;
                let before: Vec<u32> = t.index.keys().copied().collect();
                let r = t.check(now, 100, &beat(pid, iv, ctr, nonce));
                prop_assert!(t.len() <= cap as usize);
                for p in before {
                    if !t.index.contains_key(&p) {
                        prop_assert!(now - last_ok[&p] >= 100, "evicted a live sender");
                        // Forgotten state is the documented limit of a
                        // bounded table: start counting afresh.
                        seen.retain(|&(q, _, _)| q != p);
                    }
                }
                if let Check::Accept { .. } = r {
                    prop_assert!(seen.insert((pid, iv, ctr)), "accepted twice: {pid} {iv} {ctr}");
                    last_ok.insert(pid, now);
                }
            }
        }
    }
}
