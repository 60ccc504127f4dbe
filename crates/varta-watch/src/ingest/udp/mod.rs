//! The UDP listener for network agents: plaintext (explicitly
//! acknowledged, origin `network_unverified`) or ChaCha20-Poly1305 secure
//! UDP (origin `network_verified`), read in `recvmmsg` batches on the
//! detection loop like the Unix socket.
//!
//! The datagram's length picks the format: 32 bytes is a plaintext frame
//! (plaintext listener only), 60 the shared-key layout, 64 the master-key
//! layout (secure listener only); anything else is counted as truncated.
//! A sealed datagram is opened with every configured key ([`keys`]), then
//! the plaintext goes through the full VLP decode, then the replay rules
//! ([`replay`]), then the tracker — where origin pinning keeps a UDP
//! sender from taking over a pid tracked over the Unix socket.

pub mod keys;
pub mod replay;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{MultiHeaders, SockaddrStorage};
use varta_vlp::{Frame, FRAME_LEN};
use varta_vlp::{MASTER_LEN, SHARED_LEN};

pub use keys::{KeySet, MasterOpen};
pub use replay::{Check, ReplayTable, Sealed};

use super::batch::{recv_batch, BATCH};
use crate::config::{UdpConfig, UdpSecurity};
use crate::events::{Event, EventBus, Origin, RejectReason};
use crate::export::counters::Counters;
use crate::tracker::{Incoming, NoProbe, Tracker, Verdict};

/// Why the UDP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum UdpBindError {
    /// bind(2) or socket setup failed.
    #[error("cannot bind the UDP listener on {addr}: {source}{hint}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
        /// How to fix the common cases.
        hint: &'static str,
    },
    /// The key files could not be read.
    #[error("{0}")]
    Keys(String),
}

/// Plaintext or secure, with the keys.
enum Mode {
    Plaintext,
    Secure(KeySet),
}

/// Result of one drain call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpDrained {
    /// Datagrams read.
    pub datagrams: u32,
    /// The budget ran out before the socket was empty: call again without
    /// waiting for readiness (the poller is edge-triggered).
    pub more: bool,
}

/// A bound UDP listener.
pub struct UdpListener {
    sock: UdpSocket,
    local: SocketAddr,
    mode: Mode,
    replay: ReplayTable,
    threshold_ns: u64,
    headers: MultiHeaders<SockaddrStorage>,
    bufs: Box<[[u8; 64]; BATCH]>,
    granted_rcvbuf: usize,
    counters: Arc<Counters>,
}

/// Placeholder for unused batch entries.
const EMPTY_INCOMING: Incoming = Incoming {
    pid: 0,
    frame: Frame::new(varta_vlp::Status::Ok, 0, 0, 0, 0),
    origin: Origin::NetworkUnverified,
    pidns: None,
    new_session: false,
    peer: None,
};

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process (another observer?) uses that port: stop it or choose another udp-port"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; no interface has that address: fix udp-bind-addr"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a higher udp-port"
        }
        _ => "",
    }
}

impl UdpListener {
    /// Binds `cfg.addr` and loads the keys of a secure listener.
    /// `threshold_ns` is the stall threshold (the replay rules' silence).
    pub fn bind(
        cfg: &UdpConfig,
        threshold_ns: u64,
        counters: Arc<Counters>,
    ) -> Result<UdpListener, UdpBindError> {
        let mode = match &cfg.security {
            UdpSecurity::Plaintext => Mode::Plaintext,
            UdpSecurity::Secure(files) => {
                Mode::Secure(KeySet::load(files).map_err(UdpBindError::Keys)?)
            }
        };
        let err = |source: std::io::Error| UdpBindError::Bind {
            addr: cfg.addr,
            hint: bind_hint(&source),
            source,
        };
        let sock = UdpSocket::bind(cfg.addr).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        let granted_rcvbuf = super::uds::set_rcvbuf(&sock, cfg.rcvbuf_bytes);
        let local = sock.local_addr().map_err(err)?;
        Ok(UdpListener {
            sock,
            local,
            mode,
            replay: ReplayTable::new(cfg.sender_capacity),
            threshold_ns,
            headers: MultiHeaders::preallocate(BATCH, None),
            bufs: Box::new([[0u8; 64]; BATCH]),
            granted_rcvbuf,
            counters,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `plaintext` or `secure`.
    pub fn mode(&self) -> &'static str {
        match self.mode {
            Mode::Plaintext => "plaintext",
            Mode::Secure(_) => "secure",
        }
    }

    /// The key set in words (no key material); empty for plaintext.
    pub fn describe_keys(&self) -> String {
        match &self.mode {
            Mode::Plaintext => String::new(),
            Mode::Secure(k) => k.describe(),
        }
    }

    /// Receive buffer the kernel granted (bytes).
    pub fn granted_rcvbuf(&self) -> usize {
        self.granted_rcvbuf
    }

    /// Senders with replay state.
    pub fn senders(&self) -> usize {
        self.replay.len()
    }

    /// Raw fd for registering with the poller.
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Applies a new stall threshold (reload).
    pub fn set_threshold(&mut self, threshold_ns: u64) {
        self.threshold_ns = threshold_ns;
    }

    /// Replaces the key set (SIGHUP): new keys are accepted at once, keys
    /// no longer in the files stop being accepted. On error the old keys
    /// stay and the error (which never contains key material) is returned.
    pub fn reload_keys(&mut self, security: &UdpSecurity) -> Result<Option<String>, String> {
        match (&mut self.mode, security) {
            (Mode::Secure(current), UdpSecurity::Secure(files)) => {
                *current = KeySet::load(files)?;
                Ok(Some(current.describe()))
            }
            (Mode::Plaintext, UdpSecurity::Plaintext) => Ok(None),
            _ => Err("switching the UDP listener between plaintext and secure needs a restart; the listener keeps its current mode".into()),
        }
    }

    /// Reads up to `budget` datagrams and feeds them through the secure
    /// path (if any), the replay rules and the tracker.
    pub fn drain(
        &mut self,
        now_ns: u64,
        budget: u32,
        tracker: &mut Tracker,
        bus: &mut EventBus,
    ) -> UdpDrained {
        let mut out = UdpDrained::default();
        let fd = self.sock.as_raw_fd();
        while out.datagrams < budget {
            let mut meta = [(0usize, None::<SocketAddr>); BATCH];
            let received =
                match recv_batch(fd, &mut self.headers, &mut self.bufs, &mut meta, |msg| {
                    (msg.bytes, msg.address.and_then(|a| to_std(&a)))
                }) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => return out,
                    Err(e) => {
                        // Report and yield: a persistent error must not spin.
                        bus.emit(now_ns, Event::Io { errno: e as i32 });
                        return out;
                    }
                };
            out.datagrams += received as u32;
            let mut batch = [EMPTY_INCOMING; BATCH];
            let mut n = 0;
            let mut attempts = 0u64;
            for (i, &(len, from)) in meta[..received].iter().enumerate() {
                let buf = self.bufs[i];
                if let Some(inc) = self.admit(now_ns, len, &buf, from, &mut attempts, bus) {
                    batch[n] = inc;
                    n += 1;
                }
            }
            if attempts > 0 {
                self.counters.add_aead_attempts(attempts);
                self.counters.set_udp_senders(self.replay.len() as u64);
            }
            let mut verdicts = [Verdict::Dropped; BATCH];
            tracker.on_batch(now_ns, &batch[..n], &mut NoProbe, bus, &mut verdicts[..n]);
            if received < BATCH {
                return out;
            }
        }
        out.more = true;
        out
    }

    /// One datagram: the frame ready for the tracker, or None (the reason
    /// is already on the bus).
    fn admit(
        &mut self,
        now_ns: u64,
        len: usize,
        buf: &[u8; 64],
        from: Option<SocketAddr>,
        attempts: &mut u64,
        bus: &mut EventBus,
    ) -> Option<Incoming> {
        let truncated = |bus: &mut EventBus| {
            bus.emit(
                now_ns,
                Event::Truncated {
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                },
            );
            None
        };
        let keys = match (&self.mode, len) {
            (Mode::Plaintext, FRAME_LEN) => {
                let frame = decode(now_ns, &buf[..FRAME_LEN], bus)?;
                // Nothing is verified; a restarted nonce after a threshold
                // of silence is as good as anything else on this transport.
                return Some(Incoming {
                    pid: frame.pid,
                    frame,
                    origin: Origin::NetworkUnverified,
                    pidns: None,
                    new_session: true,
                    peer: from,
                });
            }
            (Mode::Secure(keys), SHARED_LEN | MASTER_LEN) => keys,
            _ => return truncated(bus),
        };
        let from = from.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let (plain, iv_at) = if len == SHARED_LEN {
            let mut sealed = [0u8; SHARED_LEN];
            sealed.copy_from_slice(&buf[..SHARED_LEN]);
            let (plain, tried) = keys.open_shared(&sealed);
            *attempts += u64::from(tried);
            let Some(plain) = plain else {
                bus.emit(
                    now_ns,
                    Event::DecryptFailure {
                        master: false,
                        wire_pid: 0,
                        attempts: tried,
                        from,
                    },
                );
                return None;
            };
            (plain, 0)
        } else {
            let mut sealed = [0u8; MASTER_LEN];
            sealed.copy_from_slice(&buf[..MASTER_LEN]);
            let (outcome, tried) = keys.open_master(&sealed);
            *attempts += u64::from(tried);
            match outcome {
                MasterOpen::Ok { plain, .. } => (plain, 4),
                MasterOpen::Failed => {
                    let wire_pid = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    bus.emit(
                        now_ns,
                        Event::DecryptFailure {
                            master: true,
                            wire_pid,
                            attempts: tried,
                            from,
                        },
                    );
                    return None;
                }
                MasterOpen::PidMismatch {
                    wire_pid,
                    frame_pid,
                } => {
                    // Sealed by the holder of wire_pid's key, claiming
                    // another pid inside: the same forgery as a Unix-socket
                    // frame whose pid is not the kernel's.
                    bus.emit(
                        now_ns,
                        Event::AuthFailure {
                            claimed_pid: frame_pid,
                            kernel_pid: wire_pid,
                        },
                    );
                    return None;
                }
            }
        };
        let frame = decode(now_ns, &plain, bus)?;
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&buf[iv_at..iv_at + 8]);
        let ctr = u32::from_le_bytes([
            buf[iv_at + 8],
            buf[iv_at + 9],
            buf[iv_at + 10],
            buf[iv_at + 11],
        ]);
        let sealed = Sealed {
            pid: frame.pid,
            iv,
            ctr,
            terminal: frame.is_terminal(),
            nonce: frame.nonce,
            timestamp: frame.timestamp,
        };
        match self.replay.check(now_ns, self.threshold_ns, &sealed) {
            Check::Accept { new_session } => Some(Incoming {
                pid: frame.pid,
                frame,
                origin: Origin::NetworkVerified,
                pidns: None,
                new_session,
                peer: Some(from),
            }),
            Check::Replay => {
                bus.emit(
                    now_ns,
                    Event::Rejected {
                        pid: frame.pid,
                        reason: RejectReason::Replay,
                    },
                );
                None
            }
            Check::Full => {
                bus.emit(now_ns, Event::SenderStateFull { pid: frame.pid });
                None
            }
        }
    }
}

/// Full VLP decode of 32 bytes; a failure is reported and yields None.
fn decode(now_ns: u64, bytes: &[u8], bus: &mut EventBus) -> Option<Frame> {
    let mut wire = [0u8; FRAME_LEN];
    wire.copy_from_slice(&bytes[..FRAME_LEN]);
    match Frame::decode(&wire) {
        Ok(f) => Some(f),
        Err(e) => {
            bus.emit(now_ns, Event::DecodeError(e));
            None
        }
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    let v6 = a.as_sockaddr_in6()?;
    Some(SocketAddr::from((v6.ip(), v6.port())))
}
