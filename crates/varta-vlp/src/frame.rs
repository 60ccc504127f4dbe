//! The 32-byte plaintext frame (spec §1).

use crate::{crc32c, DecodeError, Status};

/// Length of every plaintext frame on the wire.
pub const FRAME_LEN: usize = 32;
/// Bytes 0..2: "VA".
pub const MAGIC: [u8; 2] = [0x56, 0x41];
/// Byte 2.
pub const VERSION: u8 = 0x02;
/// Nonce that marks a terminal (dying-gasp) frame; legal only with Critical.
pub const NONCE_TERMINAL: u64 = u64::MAX;

/// One heartbeat. Field meaning is normative in spec §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Health reported by the agent.
    pub status: Status,
    /// Sender pid in its own PID namespace (0 and 1 illegal).
    pub pid: u32,
    /// Sender-chosen monotonic value, ns since connect by convention.
    pub timestamp: u64,
    /// Per-session counter, 1 for the first beat after connect.
    pub nonce: u64,
    /// Opaque application word.
    pub payload: u32,
}

#[inline]
fn le_u32(b: &[u8; FRAME_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn le_u64(b: &[u8; FRAME_LEN], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Frame {
    /// Builds a frame; no validation (encode writes whatever it is given so
    /// tests can produce illegal frames on purpose).
    pub const fn new(status: Status, pid: u32, timestamp: u64, nonce: u64, payload: u32) -> Frame {
        Frame {
            status,
            pid,
            timestamp,
            nonce,
            payload,
        }
    }

    /// True for the dying-gasp frame: Critical with `NONCE_TERMINAL`.
    pub const fn is_terminal(&self) -> bool {
        matches!(self.status, Status::Critical) && self.nonce == NONCE_TERMINAL
    }

    /// Writes the frame, CRC included, into `out`.
    #[inline]
    pub fn encode(&self, out: &mut [u8; FRAME_LEN]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.status as u8;
        out[4..8].copy_from_slice(&self.pid.to_le_bytes());
        out[8..16].copy_from_slice(&self.timestamp.to_le_bytes());
        out[16..24].copy_from_slice(&self.nonce.to_le_bytes());
        out[24..28].copy_from_slice(&self.payload.to_le_bytes());
        let crc = crc32c(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
    }

    /// Convenience wrapper over [`Frame::encode`].
    #[inline]
    pub fn to_bytes(&self) -> [u8; FRAME_LEN] {
        let mut out = [0u8; FRAME_LEN];
        self.encode(&mut out);
        out
    }

    /// Parses and validates a frame in the spec's check order.
    #[inline]
    pub fn decode(bytes: &[u8; FRAME_LEN]) -> Result<Frame, DecodeError> {
        if bytes[0..2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[2] != VERSION {
            return Err(DecodeError::BadVersion);
        }
        let expected = crc32c(&bytes[0..28]);
        let actual = le_u32(bytes, 28);
        if expected != actual {
            return Err(DecodeError::BadCrc { expected, actual });
        }
        let status = match Status::from_u8(bytes[3]) {
            None => return Err(DecodeError::BadStatus(bytes[3])),
            Some(Status::Stall) => return Err(DecodeError::StallOnWire),
            Some(s) => s,
        };
        let pid = le_u32(bytes, 4);
        if pid <= 1 {
            return Err(DecodeError::BadPid(pid));
        }
        let timestamp = le_u64(bytes, 8);
        if timestamp == u64::MAX {
            return Err(DecodeError::BadTimestamp(timestamp));
        }
        let nonce = le_u64(bytes, 16);
        if nonce == NONCE_TERMINAL && status != Status::Critical {
            return Err(DecodeError::BadNonce { nonce, status });
        }
        Ok(Frame {
            status,
            pid,
            timestamp,
            nonce,
            payload: le_u32(bytes, 24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn spec_worked_examples() {
        let ok = Frame::new(Status::Ok, 2, 0, 1, 0);
        assert_eq!(
            ok.to_bytes(),
            hex("56410200020000000000000000000000010000000000000000000000e4116baa")
        );
        let term = Frame::new(Status::Critical, 2, 999, NONCE_TERMINAL, 0);
        assert!(term.is_terminal());
        assert_eq!(
            term.to_bytes(),
            hex("5641020202000000e703000000000000ffffffffffffffff00000000a299eeed")
        );
    }

    #[test]
    fn crc_is_checked_before_field_ranges() {
        // A frame with a bad pid *and* a bad CRC reports the CRC.
        let mut b = Frame::new(Status::Ok, 0, 0, 1, 0).to_bytes();
        b[31] ^= 1;
        assert!(matches!(Frame::decode(&b), Err(DecodeError::BadCrc { .. })));
    }

    #[test]
    fn terminal_nonce_needs_critical() {
        let b = Frame::new(Status::Degraded, 5, 0, NONCE_TERMINAL, 0).to_bytes();
        assert_eq!(
            Frame::decode(&b),
            Err(DecodeError::BadNonce {
                nonce: NONCE_TERMINAL,
                status: Status::Degraded
            })
        );
    }

    #[test]
    fn kinds_match_index() {
        assert_eq!(DecodeError::StallOnWire.kind(), "stall_on_wire");
        assert_eq!(
            DecodeError::BadNonce {
                nonce: 0,
                status: Status::Ok
            }
            .kind(),
            "bad_nonce"
        );
    }
}
