//! Why a 32-byte datagram is not a legal frame.

use crate::Status;

/// Decode failure. Variants are listed in the spec's check order: the first
/// failing check wins, and which one fails is part of conformance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Bytes 0..2 are not `56 41` ("VA").
    BadMagic,
    /// Byte 2 is not `0x02` (legacy `0x01` included).
    BadVersion,
    /// CRC-32C mismatch: `expected` is computed over bytes 0..28, `actual` is
    /// what bytes 28..32 carried.
    BadCrc {
        /// CRC computed by the receiver.
        expected: u32,
        /// CRC found on the wire.
        actual: u32,
    },
    /// Status byte above 3.
    BadStatus(u8),
    /// Status byte 3 (`Stall`), which only the observer may produce.
    StallOnWire,
    /// pid 0 or 1.
    BadPid(u32),
    /// Timestamp `u64::MAX`.
    BadTimestamp(u64),
    /// Nonce `NONCE_TERMINAL` with a status other than Critical.
    BadNonce {
        /// The offending nonce (always `NONCE_TERMINAL` today).
        nonce: u64,
        /// The status it came with.
        status: Status,
    },
}

impl DecodeError {
    /// Every kind, in check order; handy for pre-registering metric labels.
    pub const KINDS: [&'static str; 8] = [
        "bad_magic",
        "bad_version",
        "bad_crc",
        "bad_status",
        "stall_on_wire",
        "bad_pid",
        "bad_timestamp",
        "bad_nonce",
    ];

    /// snake_case name used as the `kind` label in metrics and exports.
    pub const fn kind(&self) -> &'static str {
        Self::KINDS[self.index()]
    }

    /// Position of this variant in [`DecodeError::KINDS`]: lets counters live
    /// in a fixed array instead of a map.
    pub const fn index(&self) -> usize {
        match self {
            DecodeError::BadMagic => 0,
            DecodeError::BadVersion => 1,
            DecodeError::BadCrc { .. } => 2,
            DecodeError::BadStatus(_) => 3,
            DecodeError::StallOnWire => 4,
            DecodeError::BadPid(_) => 5,
            DecodeError::BadTimestamp(_) => 6,
            DecodeError::BadNonce { .. } => 7,
        }
    }

    /// The variant's Rust name (`BadMagic`, …), as the conformance vectors
    /// spell it.
    pub const fn variant_name(&self) -> &'static str {
        match self {
            DecodeError::BadMagic => "BadMagic",
            DecodeError::BadVersion => "BadVersion",
            DecodeError::BadCrc { .. } => "BadCrc",
            DecodeError::BadStatus(_) => "BadStatus",
            DecodeError::StallOnWire => "StallOnWire",
            DecodeError::BadPid(_) => "BadPid",
            DecodeError::BadTimestamp(_) => "BadTimestamp",
            DecodeError::BadNonce { .. } => "BadNonce",
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::BadMagic => f.write_str("bad magic (expected \"VA\" = 56 41)"),
            DecodeError::BadVersion => f.write_str("unsupported VLP version (expected 0x02)"),
            DecodeError::BadCrc { expected, actual } => write!(
                f,
                "CRC-32C mismatch: computed {expected:#010x}, frame carries {actual:#010x}"
            ),
            DecodeError::BadStatus(s) => write!(f, "unknown status byte {s} (0..=2 allowed)"),
            DecodeError::StallOnWire => {
                f.write_str("status Stall (3) is observer-only and illegal on the wire")
            }
            DecodeError::BadPid(p) => write!(f, "pid {p} is reserved (0 and 1 are illegal)"),
            DecodeError::BadTimestamp(t) => write!(f, "timestamp {t:#x} is the reserved u64::MAX"),
            DecodeError::BadNonce { nonce, status } => write!(
                f,
                "terminal nonce {nonce:#x} is only legal with status critical, got {status}"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}
