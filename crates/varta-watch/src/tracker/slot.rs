//! One tracked agent, packed into 64 bytes.

use super::lists::{Linked, NIL};
use super::rate::PidBucket;
use crate::events::Origin;
use varta_vlp::Status;

/// Lifecycle of a slot; each state has its own list in the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// Beating; on the live list ordered by last beat (= deadline order).
    Live = 0,
    /// Silent for at least the threshold; stall already raised.
    Stalled = 1,
    /// Sent a terminal frame; no stall for the silence that follows.
    Exited = 2,
    /// Unused.
    Free = 3,
}

/// Slot flag: a regular nonce has been accepted (`last_nonce` is valid).
pub const HAS_NONCE: u8 = 1;
/// Slot flag: a terminal frame has been accepted (`last_terminal_ts` valid).
pub const HAS_TERMINAL: u8 = 2;
/// Slot flag: the agent has beaten once since admission (or a new life) and
/// is inside its startup grace: its first deadline is grace + threshold.
pub const IN_GRACE: u8 = 4;
/// The slot's policy class (threshold and startup grace) lives in the top
/// five bits of `flags`, so per-agent thresholds cost no extra cache line.
pub const CLASS_SHIFT: u8 = 3;
/// Distinct policy classes (threshold, startup grace) the tracker holds,
/// the global one included.
pub const MAX_CLASSES: usize = 32;
/// Bits of `flags` that describe the agent's policy, kept across new lives.
pub const POLICY_BITS: u8 = !(HAS_NONCE | HAS_TERMINAL | IN_GRACE);

/// Per-agent state. Exactly 64 bytes and 64-byte aligned: one cache line,
/// so a cold slot costs one miss, never two (asserted below).
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
pub struct Slot {
    /// Highest regular nonce accepted.
    pub last_nonce: u64,
    /// Observer ns of the last accepted beat (or terminal frame).
    pub last_beat_ns: u64,
    /// Sender timestamp of the newest accepted terminal frame.
    pub last_terminal_ts: u64,
    /// Process start time (`/proc/<pid>/stat` field 22); 0 = unknown.
    pub start_time: u64,
    /// Tracked pid.
    pub pid: u32,
    /// PID-namespace inode pinned by the first beat; 0 = unknown.
    pub pidns: u32,
    /// Last payload.
    pub payload: u32,
    /// Per-pid rate bucket.
    pub bucket: PidBucket,
    pub(super) prev: u32,
    pub(super) next: u32,
    /// Lifecycle state.
    pub state: SlotState,
    /// Origin pinned by the first beat.
    pub origin: Origin,
    /// Last status.
    pub status: Status,
    /// `HAS_*` flags.
    pub flags: u8,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Slot {
    /// The slot's policy class.
    #[inline]
    pub const fn class(&self) -> u8 {
        self.flags >> CLASS_SHIFT
    }

    /// Sets the policy class (must be below [`MAX_CLASSES`]); the caller
    /// moves the slot to the class's list.
    #[inline]
    pub fn set_class(&mut self, class: u8) {
        self.flags = (self.flags & !POLICY_BITS) | (class << CLASS_SHIFT);
    }

    /// A free slot.
    pub const fn empty() -> Slot {
        Slot {
            last_nonce: 0,
            last_beat_ns: 0,
            last_terminal_ts: 0,
            start_time: 0,
            pid: 0,
            pidns: 0,
            payload: 0,
            bucket: PidBucket {
                tokens: 0,
                refill_ms: 0,
            },
            prev: NIL,
            next: NIL,
            state: SlotState::Free,
            origin: Origin::KernelAttested,
            status: Status::Ok,
            flags: 0,
        }
    }
}

impl Linked for Slot {
    #[inline]
    fn prev(&self) -> u32 {
        self.prev
    }
    #[inline]
    fn next(&self) -> u32 {
        self.next
    }
    #[inline]
    fn set_links(&mut self, prev: u32, next: u32) {
        self.prev = prev;
        self.next = next;
    }
    #[inline]
    fn set_prev(&mut self, prev: u32) {
        self.prev = prev;
    }
    #[inline]
    fn set_next(&mut self, next: u32) {
        self.next = next;
    }
}
