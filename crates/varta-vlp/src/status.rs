//! The status byte (frame offset 3).

/// Health a beat reports. `Stall` is synthesised by the observer and is never
/// legal on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Status {
    /// Healthy.
    Ok = 0,
    /// Working, but impaired (the payload usually says how).
    Degraded = 1,
    /// Failing; with nonce `NONCE_TERMINAL` it is the dying-gasp frame.
    Critical = 2,
    /// Observer-only: the agent went silent.
    Stall = 3,
}

impl Status {
    /// Maps a status byte to a status, `None` above 3.
    pub const fn from_u8(byte: u8) -> Option<Status> {
        match byte {
            0 => Some(Status::Ok),
            1 => Some(Status::Degraded),
            2 => Some(Status::Critical),
            3 => Some(Status::Stall),
            _ => None,
        }
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Lower-case name used in exports and metrics labels (`ok`, `degraded`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Critical => "critical",
            Status::Stall => "stall",
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
