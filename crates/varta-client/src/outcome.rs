//! What happened to a beat: the outcome taxonomy and errno classification.

use std::fmt;
use std::io;

/// Why the kernel did not take a beat. Every variant is an expected,
/// transient-or-operational condition; none is a bug in the agent.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Socket queue full (EAGAIN/EWOULDBLOCK, ENOBUFS): the observer is
    /// alive but behind. Nothing to do; the next beat will likely pass.
    KernelQueueFull,
    /// Nobody listens (ENOENT, ECONNREFUSED): observer not started yet or
    /// restarting.
    NoObserver,
    /// The peer went away (ECONNRESET, ENOTCONN, EPIPE): the observer
    /// restarted; [`crate::Varta::reconnect`] or `set_reconnect_after` fixes it.
    PeerGone,
    /// ENOSPC: the host is out of space; an operator must act.
    StorageFull,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::KernelQueueFull => "kernel queue full",
            DropReason::NoObserver => "no observer",
            DropReason::PeerGone => "peer gone",
            DropReason::StorageFull => "storage full",
        })
    }
}

/// An unexpected send failure, kept `Copy` so the failure path cannot
/// allocate either.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BeatError {
    /// Raw errno, or [`BeatError::UNKNOWN_ERRNO`] when the error did not come
    /// from the OS.
    pub errno: i32,
    /// std's classification of the error.
    pub kind: io::ErrorKind,
}

impl BeatError {
    /// errno value meaning "not an OS error" (errno is never 0 on failure).
    pub const UNKNOWN_ERRNO: i32 = 0;

    /// Captures an `io::Error` without cloning it.
    pub fn from_io(e: &io::Error) -> BeatError {
        BeatError {
            errno: e.raw_os_error().unwrap_or(Self::UNKNOWN_ERRNO),
            kind: e.kind(),
        }
    }

    /// Rebuilds an `io::Error` (OS error when the errno is known).
    pub fn to_io_error(self) -> io::Error {
        if self.errno == Self::UNKNOWN_ERRNO {
            io::Error::from(self.kind)
        } else {
            io::Error::from_raw_os_error(self.errno)
        }
    }

    pub(crate) fn invalid_input() -> BeatError {
        BeatError {
            errno: Self::UNKNOWN_ERRNO,
            kind: io::ErrorKind::InvalidInput,
        }
    }
}

impl fmt::Display for BeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errno == Self::UNKNOWN_ERRNO {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{} (os error {})", self.kind, self.errno)
        }
    }
}

impl std::error::Error for BeatError {}

/// Result of one [`crate::Varta::beat`].
#[must_use = "a beat can be dropped or fail; look at the outcome (or `let _ =` it on purpose)"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BeatOutcome {
    /// The kernel accepted the datagram.
    Sent,
    /// The kernel did not take it; the reason says whether anyone should care.
    Dropped(DropReason),
    /// Something unexpected; nothing was sent.
    Failed(BeatError),
}

impl fmt::Display for BeatOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeatOutcome::Sent => f.write_str("sent"),
            BeatOutcome::Dropped(r) => write!(f, "dropped: {r}"),
            BeatOutcome::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

// errno values for Linux (all architectures share these).
const EAGAIN: i32 = 11;
const ENOBUFS: i32 = 105;
const ENOENT: i32 = 2;
const ECONNREFUSED: i32 = 111;
const ECONNRESET: i32 = 104;
const ENOTCONN: i32 = 107;
const EPIPE: i32 = 32;
const ENOSPC: i32 = 28;

/// Maps a `send(2)` error to an outcome: errno first (std maps ENOBUFS to
/// `Other`), then `ErrorKind` for errors that did not come from the OS.
pub fn classify_send_error(e: &io::Error) -> BeatOutcome {
    let reason = match e.raw_os_error() {
        Some(EAGAIN | ENOBUFS) => Some(DropReason::KernelQueueFull),
        Some(ENOENT | ECONNREFUSED) => Some(DropReason::NoObserver),
        Some(ECONNRESET | ENOTCONN | EPIPE) => Some(DropReason::PeerGone),
        Some(ENOSPC) => Some(DropReason::StorageFull),
        Some(_) => None,
        None => match e.kind() {
            io::ErrorKind::WouldBlock => Some(DropReason::KernelQueueFull),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                Some(DropReason::NoObserver)
            }
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe => Some(DropReason::PeerGone),
            io::ErrorKind::StorageFull => Some(DropReason::StorageFull),
            _ => None,
        },
    };
    match reason {
        Some(r) => BeatOutcome::Dropped(r),
        None => BeatOutcome::Failed(BeatError::from_io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        let os = |n| classify_send_error(&io::Error::from_raw_os_error(n));
        assert_eq!(
            os(EAGAIN),
            BeatOutcome::Dropped(DropReason::KernelQueueFull)
        );
        assert_eq!(
            os(ENOBUFS),
            BeatOutcome::Dropped(DropReason::KernelQueueFull)
        );
        assert_eq!(os(ENOENT), BeatOutcome::Dropped(DropReason::NoObserver));
        assert_eq!(
            os(ECONNREFUSED),
            BeatOutcome::Dropped(DropReason::NoObserver)
        );
        assert_eq!(os(ECONNRESET), BeatOutcome::Dropped(DropReason::PeerGone));
        assert_eq!(os(ENOTCONN), BeatOutcome::Dropped(DropReason::PeerGone));
        assert_eq!(os(EPIPE), BeatOutcome::Dropped(DropReason::PeerGone));
        assert_eq!(os(ENOSPC), BeatOutcome::Dropped(DropReason::StorageFull));
        let eperm = os(1);
        assert_eq!(
            eperm,
            BeatOutcome::Failed(BeatError {
                errno: 1,
                kind: io::ErrorKind::PermissionDenied
            })
        );
        let kind_only = classify_send_error(&io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(kind_only, BeatOutcome::Dropped(DropReason::KernelQueueFull));
    }

    #[test]
    fn beat_error_roundtrip_and_display() {
        let e = BeatError::from_io(&io::Error::from_raw_os_error(EPIPE));
        assert_eq!(e.to_io_error().raw_os_error(), Some(EPIPE));
        assert!(e.to_string().contains("os error 32"), "{e}");
        let k = BeatError::invalid_input();
        assert_eq!(k.to_io_error().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            BeatOutcome::Dropped(DropReason::NoObserver).to_string(),
            "dropped: no observer"
        );
        assert_eq!(BeatOutcome::Sent.to_string(), "sent");
    }
}
