//! The agent handle: nonce, clock, fork detection and reconnect policy on top
//! of a [`BeatTransport`].

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Instant;

use varta_vlp::{Frame, Status, FRAME_LEN, NONCE_TERMINAL};

use crate::fork_guard;
use crate::outcome::{classify_send_error, BeatError, BeatOutcome};
use crate::transport::{BeatTransport, UdsTransport};

/// Largest regular nonce; the one after it is 0 (spec §1).
const LAST_REGULAR_NONCE: u64 = NONCE_TERMINAL - 1;

/// One agent session: sends frames with a strictly increasing nonce and a
/// never-decreasing timestamp (ns since connect).
///
/// - Nonce and timestamp advance only when a send succeeded, so a dropped
///   beat leaves no gap the observer could mistake for loss.
/// - Fork safe: the first beat after a `fork(2)` reads the new pid (a
///   `pthread_atfork` hook flags the child, so steady-state beats skip the
///   `getpid` syscall), reconnects the transport (re-salting secure UDP),
///   and restarts the nonce at 1 and the clock at 0 before any frame leaves
///   the child.
/// - `Send` but not `Sync`: move it to the thread that beats; sharing one
///   nonce sequence between threads would need a lock on the hot path.
pub struct Varta<T: BeatTransport = UdsTransport> {
    transport: T,
    /// pid the session belongs to (changes only through fork recovery).
    pid: u32,
    /// Fork generation the pid was read in (see `fork_guard`).
    fork_generation: u64,
    start: Instant,
    last_timestamp: u64,
    next_nonce: u64,
    reconnect_after: u32,
    consecutive_drops: u32,
    clock_regressions: u64,
    fork_recoveries: u64,
    nonce_wrap_reported: bool,
    buf: [u8; FRAME_LEN],
    _not_sync: PhantomData<Cell<()>>,
}

impl<T: BeatTransport + std::fmt::Debug> std::fmt::Debug for Varta<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Varta")
            .field("transport", &self.transport)
            .field("pid", &self.pid)
            .field("next_nonce", &self.next_nonce)
            .field("fork_recoveries", &self.fork_recoveries)
            .finish_non_exhaustive()
    }
}

impl Varta<UdsTransport> {
    /// Connects to an observer's Unix datagram socket (non-blocking). Fails
    /// when nothing is bound at `path`.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<Self> {
        Ok(Self::with_transport(UdsTransport::connect(path)?))
    }
}

#[cfg(feature = "udp")]
impl Varta<crate::transport::UdpTransport> {
    /// Plaintext UDP to `addr` (feature `udp`).
    pub fn connect_udp(addr: std::net::SocketAddr) -> io::Result<Self> {
        Ok(Self::with_transport(
            crate::transport::UdpTransport::connect(addr)?,
        ))
    }
}

#[cfg(feature = "secure-udp")]
impl Varta<crate::transport::SecureUdpTransport> {
    /// ChaCha20-Poly1305 UDP with a key shared by all agents (feature
    /// `secure-udp`).
    pub fn connect_secure_udp(addr: std::net::SocketAddr, key: varta_vlp::Key) -> io::Result<Self> {
        Ok(Self::with_transport(
            crate::transport::SecureUdpTransport::connect(addr, key)?,
        ))
    }

    /// ChaCha20-Poly1305 UDP with a per-agent key derived from `master` and
    /// this process's pid (feature `secure-udp`).
    pub fn connect_secure_udp_with_master(
        addr: std::net::SocketAddr,
        master: varta_vlp::Key,
    ) -> io::Result<Self> {
        Ok(Self::with_transport(
            crate::transport::SecureUdpTransport::connect_with_master(addr, master)?,
        ))
    }
}

impl<T: BeatTransport> Varta<T> {
    /// Wraps any transport (a test double, a custom channel). The session
    /// starts now: first nonce 1, timestamps counted from this call.
    pub fn with_transport(transport: T) -> Self {
        Varta {
            transport,
            fork_generation: fork_guard::generation(),
            pid: std::process::id(),
            start: Instant::now(),
            last_timestamp: 0,
            next_nonce: 1,
            reconnect_after: 0,
            consecutive_drops: 0,
            clock_regressions: 0,
            fork_recoveries: 0,
            nonce_wrap_reported: false,
            buf: [0; FRAME_LEN],
            _not_sync: PhantomData,
        }
    }

    /// Sends one beat. Never blocks; allocation-free except on the cold
    /// reconnect paths. `Status::Stall` is observer-only and returns
    /// `Failed(InvalidInput)` without sending.
    pub fn beat(&mut self, status: Status, payload: u32) -> BeatOutcome {
        if status == Status::Stall {
            return BeatOutcome::Failed(BeatError::invalid_input());
        }
        let generation = fork_guard::generation();
        if generation != self.fork_generation || generation == fork_guard::ALWAYS_CHECK {
            let pid = std::process::id();
            if pid != self.pid {
                if let Err(e) = self.recover_from_fork(pid) {
                    return BeatOutcome::Failed(BeatError::from_io(&e));
                }
            }
            self.fork_generation = generation;
        }
        let pid = self.pid;
        let timestamp = self.timestamp();
        Frame::new(status, pid, timestamp, self.next_nonce, payload).encode(&mut self.buf);
        let mut outcome = self.send_buf();
        if let BeatOutcome::Dropped(_) = outcome {
            self.consecutive_drops = self.consecutive_drops.saturating_add(1);
            if self.reconnect_after > 0 && self.consecutive_drops >= self.reconnect_after {
                // Same frame, same nonce: the observer never saw the first try.
                outcome = match self.transport.reconnect() {
                    Ok(()) => self.send_buf(),
                    Err(e) => classify_send_error(&e),
                };
            }
        }
        match outcome {
            BeatOutcome::Sent => {
                self.consecutive_drops = 0;
                self.last_timestamp = timestamp;
                self.advance_nonce();
            }
            BeatOutcome::Failed(_) => self.consecutive_drops = 0,
            BeatOutcome::Dropped(_) => {}
        }
        outcome
    }

    #[inline]
    fn send_buf(&mut self) -> BeatOutcome {
        match self.transport.send(&self.buf) {
            Ok(_) => BeatOutcome::Sent,
            Err(e) => classify_send_error(&e),
        }
    }

    /// ns since connect, clamped so it never goes below the last sent
    /// timestamp and never reaches the illegal `u64::MAX`.
    #[inline]
    fn timestamp(&mut self) -> u64 {
        let raw = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        let raw = raw.min(u64::MAX - 1);
        if raw < self.last_timestamp {
            self.clock_regressions += 1;
            self.last_timestamp
        } else {
            raw
        }
    }

    #[inline]
    fn advance_nonce(&mut self) {
        if self.next_nonce < LAST_REGULAR_NONCE {
            self.next_nonce += 1;
        } else {
            self.next_nonce = 0;
            if !self.nonce_wrap_reported {
                self.nonce_wrap_reported = true;
                eprintln!(
                    "varta-client: beat nonce exhausted 2^64-2 values and wrapped to 0 (pid {})",
                    self.pid
                );
            }
        }
    }

    #[cold]
    fn recover_from_fork(&mut self, pid: u32) -> io::Result<()> {
        self.transport.reconnect()?;
        self.pid = pid;
        self.start = Instant::now();
        self.last_timestamp = 0;
        self.next_nonce = 1;
        self.consecutive_drops = 0;
        self.fork_recoveries += 1;
        Ok(())
    }

    /// Replaces the transport's connection (after an observer restart).
    /// Keeps the nonce and start clock, so the observer never sees a nonce go
    /// backwards.
    pub fn reconnect(&mut self) -> io::Result<()> {
        self.transport.reconnect()
    }

    /// After `n` consecutive `Dropped` outcomes, `beat()` reconnects and
    /// resends the same frame once within the same call. 0 (default) turns
    /// it off. Resets the drop count.
    pub fn set_reconnect_after(&mut self, n: u32) {
        self.reconnect_after = n;
        self.consecutive_drops = 0;
    }

    /// Times the clock read earlier than the last sent timestamp (clamped).
    pub fn clock_regressions(&self) -> u64 {
        self.clock_regressions
    }

    /// Times a fork was detected and the session restarted in the child.
    pub fn fork_recoveries(&self) -> u64 {
        self.fork_recoveries
    }

    /// Nonce the next successful beat will carry.
    pub fn next_nonce(&self) -> u64 {
        self.next_nonce
    }

    /// The transport (for diagnostics).
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (for test hooks and custom transports).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Test hook: moves the session's start instant forward so the next
    /// clock read is earlier than the last sent timestamp.
    #[doc(hidden)]
    pub fn shift_clock_for_test(&mut self, forward: std::time::Duration) {
        self.start += forward;
    }

    /// Test hook: sets the next nonce (to exercise the wrap).
    #[doc(hidden)]
    pub fn set_next_nonce_for_test(&mut self, nonce: u64) {
        self.next_nonce = nonce;
    }

    /// Test hook: pretends the session belongs to another pid, so the next
    /// beat takes the fork-recovery path.
    #[doc(hidden)]
    pub fn set_session_pid_for_test(&mut self, pid: u32) {
        self.pid = pid;
        self.fork_generation = fork_guard::ALWAYS_CHECK;
    }
}
