//! ChaCha20-Poly1305 UDP (spec §2), shared-key or master-key layout.
//!
//! Nonce discipline: a session salt from OS entropy, `iv_random =
//! derive_iv_prefix(salt, index)`, a counter that advances only after a
//! successful send, prefix rotation when the counter is exhausted, and a new
//! salt on every (re)connect. Fork safety does not depend on the caller:
//! every frame carries the sender's current pid, and a frame whose pid is not
//! the pid this session was salted for (a forked child) forces a re-salt —
//! and, in master-key mode, a re-derived agent key — before anything is
//! sealed. No two datagrams of one key can share an AEAD nonce.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use varta_vlp::{derive_agent_key, derive_iv_prefix, seal_master_with_agent_key, seal_shared, Key};

use super::{udp_connect, BeatTransport};

/// Counter value that triggers prefix rotation (spec: "when the counter
/// reaches 0xFFFF_FFFF the index increments").
const COUNTER_LIMIT: u32 = u32::MAX;

enum Mode {
    /// One key for every agent; 60-byte datagrams.
    Shared(Key),
    /// Per-agent key derived from the master for `pid`; 64-byte datagrams.
    Master { master: Key, agent: Key },
}

/// Secure UDP transport.
pub struct SecureUdpTransport {
    sock: UdpSocket,
    addr: SocketAddr,
    mode: Mode,
    /// pid the salt (and, for master mode, the agent key) belongs to.
    session_pid: u32,
    salt: [u8; 16],
    prefix_index: u32,
    iv_random: [u8; 8],
    iv_counter: u32,
}

impl std::fmt::Debug for SecureUdpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureUdpTransport")
            .field("addr", &self.addr)
            .field(
                "mode",
                &match self.mode {
                    Mode::Shared(_) => "shared",
                    Mode::Master { .. } => "master",
                },
            )
            .field("prefix_index", &self.prefix_index)
            .field("iv_counter", &self.iv_counter)
            .finish_non_exhaustive()
    }
}

fn fresh_salt() -> io::Result<[u8; 16]> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| {
        io::Error::other(format!(
            "OS entropy unavailable for the secure-UDP session salt: {e}"
        ))
    })?;
    Ok(salt)
}

impl SecureUdpTransport {
    /// Shared-key mode: every agent holds the same key.
    pub fn connect(addr: SocketAddr, key: Key) -> io::Result<SecureUdpTransport> {
        Self::open(addr, Mode::Shared(key))
    }

    /// Master-key mode: the agent key is derived from `master` and the
    /// sender's pid (re-derived after a fork).
    pub fn connect_with_master(addr: SocketAddr, master: Key) -> io::Result<SecureUdpTransport> {
        let pid = std::process::id();
        let agent = derive_agent_key(&master, pid);
        Self::open(addr, Mode::Master { master, agent })
    }

    fn open(addr: SocketAddr, mode: Mode) -> io::Result<SecureUdpTransport> {
        let salt = fresh_salt()?;
        let mut t = SecureUdpTransport {
            sock: udp_connect(addr)?,
            addr,
            mode,
            session_pid: 0,
            salt,
            prefix_index: 0,
            iv_random: [0; 8],
            iv_counter: 0,
        };
        t.start_session(std::process::id(), salt);
        Ok(t)
    }

    /// Begins a nonce session for `pid` with `salt`: prefix 0, counter 0.
    fn start_session(&mut self, pid: u32, salt: [u8; 16]) {
        if let Mode::Master { master, agent } = &mut self.mode {
            if self.session_pid != pid {
                *agent = derive_agent_key(master, pid);
            }
        }
        self.session_pid = pid;
        self.salt = salt;
        self.prefix_index = 0;
        self.iv_random = derive_iv_prefix(&self.salt, 0);
        self.iv_counter = 0;
    }

    /// Moves to the next `(iv_random, counter)` after a successful send.
    fn advance(&mut self) -> io::Result<()> {
        self.iv_counter += 1;
        if self.iv_counter < COUNTER_LIMIT {
            return Ok(());
        }
        match self.prefix_index.checked_add(1) {
            Some(next) => {
                self.prefix_index = next;
                self.iv_random = derive_iv_prefix(&self.salt, next);
                self.iv_counter = 0;
            }
            // Every prefix of this salt is spent: a new salt is a new session.
            None => self.start_session(self.session_pid, fresh_salt()?),
        }
        Ok(())
    }

    /// Current prefix index (for tests and diagnostics).
    pub fn iv_prefix_index(&self) -> u32 {
        self.prefix_index
    }

    /// Current counter (for tests and diagnostics).
    pub fn iv_counter(&self) -> u32 {
        self.iv_counter
    }

    /// Current 8-byte `iv_random` (for tests and diagnostics).
    pub fn iv_prefix(&self) -> [u8; 8] {
        self.iv_random
    }

    /// Test hook: jumps the counter (e.g. to just below exhaustion) so
    /// rotation can be exercised without 4 billion sends.
    #[doc(hidden)]
    pub fn set_iv_counter_for_test(&mut self, counter: u32) {
        self.iv_counter = counter;
    }

    /// Test hook: jumps the prefix index (to exercise re-salting).
    #[doc(hidden)]
    pub fn set_iv_prefix_index_for_test(&mut self, index: u32) {
        self.prefix_index = index;
        self.iv_random = derive_iv_prefix(&self.salt, index);
    }
}

impl BeatTransport for SecureUdpTransport {
    fn send(&mut self, frame: &[u8; 32]) -> io::Result<usize> {
        let frame_pid = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if frame_pid != self.session_pid {
            // A forked child: never reuse the parent's (key, nonce) stream.
            self.start_session(frame_pid, fresh_salt()?);
        }
        let sent = match &self.mode {
            Mode::Shared(key) => {
                let wire = seal_shared(key, self.iv_random, self.iv_counter, frame);
                self.sock.send(&wire)?
            }
            Mode::Master { agent, .. } => {
                let wire = seal_master_with_agent_key(
                    agent,
                    frame_pid,
                    self.iv_random,
                    self.iv_counter,
                    frame,
                );
                self.sock.send(&wire)?
            }
        };
        self.advance()?;
        Ok(sent)
    }

    fn reconnect(&mut self) -> io::Result<()> {
        let sock = udp_connect(self.addr)?;
        let salt = fresh_salt()?;
        self.sock = sock;
        self.start_session(std::process::id(), salt);
        Ok(())
    }
}
