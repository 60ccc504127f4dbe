//! The 32-byte per-agent record an agents snapshot holds: exactly what the
//! control API renders of a tracker slot, plus the agent's identity and
//! rule. Half a 64-byte slot, so a snapshot writes half the bytes a slot
//! copy would (the loop's cost is memory bandwidth: see BENCHMARKS.md
//! "snapshot").

use varta_vlp::Status;

use crate::events::Origin;
use crate::identity::IdentityId;
use crate::policy::SlotName;
use crate::tracker::{Slot, SlotState, HAS_NONCE};

/// `bits`: the state's two bits, above `HAS_NONCE` (bit 0).
const STATE_SHIFT: u8 = 1;
/// `bits`: the policy class's five bits, above the state.
const CLASS_SHIFT: u8 = 3;
/// `tags`: the origin's two bits, above the status's two.
const ORIGIN_SHIFT: u8 = 2;

/// One tracked agent in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    /// Observer ns of the last accepted beat (or terminal frame).
    pub last_beat_ns: u64,
    /// Highest regular nonce accepted (see [`AgentRecord::nonce`]).
    last_nonce: u64,
    /// Tracked pid.
    pub pid: u32,
    /// Last payload.
    pub payload: u32,
    /// [`SlotName`]'s identity (`u32::MAX`: unknown).
    identity: u32,
    /// [`SlotName`]'s rule (`u16::MAX`: none).
    rule: u16,
    /// `HAS_NONCE` | state << 1 | class << 3.
    bits: u8,
    /// status | origin << 2.
    tags: u8,
}

const _: () = assert!(std::mem::size_of::<AgentRecord>() == 32);

impl AgentRecord {
    /// The record of slot `s` named `n`. Branch-free field packing: it
    /// runs once per tracked agent inside the loop's snapshot chunks.
    #[inline]
    pub fn of(s: &Slot, n: SlotName) -> AgentRecord {
        AgentRecord {
            last_beat_ns: s.last_beat_ns,
            last_nonce: s.last_nonce,
            pid: s.pid,
            payload: s.payload,
            identity: n.identity_raw(),
            rule: n.rule_raw(),
            bits: (s.flags & HAS_NONCE)
                | ((s.state as u8) << STATE_SHIFT)
                | (s.class() << CLASS_SHIFT),
            tags: (s.status as u8) | (origin_bits(s.origin) << ORIGIN_SHIFT),
        }
    }

    /// The record of a free slot (state free, everything else zero or
    /// unknown).
    pub const fn free() -> AgentRecord {
        AgentRecord {
            last_beat_ns: 0,
            last_nonce: 0,
            pid: 0,
            payload: 0,
            identity: SlotName::UNKNOWN.identity_raw(),
            rule: SlotName::UNKNOWN.rule_raw(),
            bits: (SlotState::Free as u8) << STATE_SHIFT,
            tags: 0,
        }
    }

    /// Lifecycle state.
    pub fn state(&self) -> SlotState {
        match (self.bits >> STATE_SHIFT) & 3 {
            0 => SlotState::Live,
            1 => SlotState::Stalled,
            2 => SlotState::Exited,
            _ => SlotState::Free,
        }
    }

    /// The last regular nonce, if one was accepted.
    pub fn nonce(&self) -> Option<u64> {
        (self.bits & HAS_NONCE != 0).then_some(self.last_nonce)
    }

    /// Policy class (index of the snapshot's class thresholds).
    pub fn class(&self) -> u8 {
        self.bits >> CLASS_SHIFT
    }

    /// Last status the agent sent.
    pub fn status(&self) -> Status {
        Status::from_u8(self.tags & 3).unwrap_or(Status::Ok)
    }

    /// Origin pinned by the first beat.
    pub fn origin(&self) -> Origin {
        match (self.tags >> ORIGIN_SHIFT) & 3 {
            0 => Origin::KernelAttested,
            1 => Origin::NetworkUnverified,
            _ => Origin::NetworkVerified,
        }
    }

    /// The agent's identity, once resolved.
    pub fn identity(&self) -> Option<IdentityId> {
        SlotName::from_raw(self.identity, self.rule).identity()
    }

    /// The `[[agent]]` rule (index) that governs it, if one matched.
    pub fn rule(&self) -> Option<u16> {
        SlotName::from_raw(self.identity, self.rule).rule()
    }
}

#[inline]
const fn origin_bits(o: Origin) -> u8 {
    match o {
        Origin::KernelAttested => 0,
        Origin::NetworkUnverified => 1,
        Origin::NetworkVerified => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_every_field() {
        for (state, status, origin, class, nonce) in [
            (SlotState::Live, Status::Ok, Origin::KernelAttested, 0, true),
            (
                SlotState::Stalled,
                Status::Degraded,
                Origin::NetworkUnverified,
                31,
                false,
            ),
            (
                SlotState::Exited,
                Status::Critical,
                Origin::NetworkVerified,
                7,
                true,
            ),
        ] {
            let mut s = Slot::empty();
            s.pid = 4_000_000;
            s.payload = u32::MAX;
            s.last_beat_ns = u64::MAX - 1;
            s.last_nonce = 77;
            s.state = state;
            s.status = status;
            s.origin = origin;
            s.set_class(class);
            // Flags the record must not leak into its state bits.
            s.flags |= crate::tracker::HAS_TERMINAL | crate::tracker::IN_GRACE;
            if nonce {
                s.flags |= HAS_NONCE;
            }
            let n = SlotName::new(IdentityId(9), Some(3));
            let r = AgentRecord::of(&s, n);
            assert_eq!(r.state(), state);
            assert_eq!(r.status(), status);
            assert_eq!(r.origin(), origin);
            assert_eq!(r.class(), class);
            assert_eq!(r.nonce(), nonce.then_some(77));
            assert_eq!(
                (r.pid, r.payload, r.last_beat_ns),
                (s.pid, s.payload, s.last_beat_ns)
            );
            assert_eq!((r.identity(), r.rule()), (Some(IdentityId(9)), Some(3)));
            let r = AgentRecord::of(&s, SlotName::UNKNOWN);
            assert_eq!((r.identity(), r.rule()), (None, None));
        }
    }
}
