//! The Unix datagram listener: safe bind, kernel attestation of every
//! datagram (`SCM_CREDENTIALS`), and batch draining into the tracker.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders};
use varta_vlp::{Frame, FRAME_LEN};

use super::batch::{recv_batch, BATCH};
use super::procfs::ProcFs;
use super::sockfile::{check_parent, clear_stale, io_err, BoundPath, Kind};
use crate::events::{Event, EventBus, Origin, RejectReason};
use crate::tracker::{Incoming, ProcessProbe, Tracker, Verdict};

/// Why the listener could not start. Each message names the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket's directory does not exist.
    #[error("socket directory {0} does not exist; create it or choose another socket path")]
    ParentMissing(PathBuf),
    /// The socket's directory is a symlink (could be redirected).
    #[error("socket directory {0} is a symlink; use the real directory path for socket")]
    ParentSymlink(PathBuf),
    /// World-writable directory without the sticky bit: anyone could replace our socket.
    #[error("socket directory {0} is world-writable without the sticky bit; anyone could replace the socket — use a private directory (e.g. $XDG_RUNTIME_DIR or /run/varta)")]
    ParentWorldWritable(PathBuf),
    /// Something that is not a socket sits at the path.
    #[error("{0} exists and is not a socket; refusing to replace it — remove it or choose another socket path")]
    NotASocket(PathBuf),
    /// Another observer answers at the path.
    #[error(
        "another observer is already listening on {0}; stop it first or choose another socket path"
    )]
    LiveObserver(PathBuf),
    /// A syscall failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Path involved.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

/// Result of one drain call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Datagrams read.
    pub datagrams: u32,
    /// The budget ran out before the socket was empty: call again without
    /// waiting for readiness (the poller is edge-triggered).
    pub more: bool,
    /// Kernel pid of a cross-namespace sender that was refused (fatal under
    /// `--strict-namespace-check`).
    pub cross_namespace: Option<u32>,
}

/// Listener policy that can change at runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdsPolicy {
    /// Accept senders from other PID namespaces (keyed by their kernel pid).
    pub allow_cross_namespace: bool,
}

/// A bound, attested Unix datagram socket.
pub struct UdsListener {
    sock: UnixDatagram,
    /// The socket file, removed on drop if it is still ours.
    bound_path: BoundPath,
    own_uid: u32,
    own_pidns: u32,
    pid_max: u32,
    pid_max_read_ns: u64,
    procfs: ProcFs,
    /// Preallocated `mmsghdr`s and control buffers for `recvmmsg`.
    headers: MultiHeaders<()>,
    bufs: Box<[[u8; 64]; BATCH]>,
    granted_rcvbuf: usize,
    policy: UdsPolicy,
}

/// Placeholder for unused batch entries.
const EMPTY_INCOMING: Incoming = Incoming {
    pid: 0,
    frame: Frame::new(varta_vlp::Status::Ok, 0, 0, 0, 0),
    origin: Origin::KernelAttested,
    pidns: None,
    new_session: false,
    peer: None,
};

/// What one received datagram carried besides its bytes.
#[derive(Clone, Copy, Default)]
struct Meta {
    len: usize,
    ctrunc: bool,
    cred: Option<(i32, u32)>,
}

impl Meta {
    fn of(msg: &nix::sys::socket::RecvMsg<'_, '_, ()>) -> Meta {
        let mut cred = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmCredentials(uc) = c {
                    cred = Some((uc.pid(), uc.uid()));
                }
            }
        }
        Meta {
            len: msg.bytes,
            ctrunc: msg.flags.contains(MsgFlags::MSG_CTRUNC),
            cred,
        }
    }
}

/// How often `/proc/sys/kernel/pid_max` is re-read (a `sysctl` change
/// applies without restart).
const PID_MAX_REFRESH_NS: u64 = 60_000_000_000;

impl UdsListener {
    /// Binds `path` with file mode `mode`, enables `SO_PASSCRED` and asks for
    /// `rcvbuf` bytes of receive buffer (0 = kernel default).
    pub fn bind(path: &Path, mode: u32, rcvbuf: usize) -> Result<UdsListener, BindError> {
        check_parent(path)?;
        clear_stale(path, Kind::Datagram)?;
        // Create the socket file owner-only, then widen to the requested mode:
        // no window in which it is more open than asked.
        //
        // SO_PASSCRED and the receive buffer are set before bind: once the
        // path exists agents may send, and a datagram queued before
        // SO_PASSCRED carries no credentials and would be dropped.
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| io_err("cannot create a socket for", path)(e.into()))?;
        setsockopt(&fd, sockopt::PassCred, &true)
            .map_err(|e| io_err("cannot enable SO_PASSCRED on", path)(e.into()))?;
        let granted_rcvbuf = set_rcvbuf(&fd, rcvbuf);
        let addr = UnixAddr::new(path).map_err(|e| io_err("cannot bind", path)(e.into()))?;
        let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
        nix::sys::stat::umask(old_umask);
        bound.map_err(|e| io_err("cannot bind", path)(e.into()))?;
        let sock = UnixDatagram::from(fd);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set mode on", path))?;
        let bound_path = BoundPath::new(path)?;
        let mut procfs = ProcFs::default();
        Ok(UdsListener {
            own_uid: nix::unistd::geteuid().as_raw(),
            own_pidns: procfs.own_pid_namespace().unwrap_or(0),
            pid_max: procfs.pid_max().unwrap_or(4_194_304),
            pid_max_read_ns: 0,
            procfs,
            headers: MultiHeaders::preallocate(
                BATCH,
                Some(nix::cmsg_space!(nix::sys::socket::UnixCredentials)),
            ),
            bufs: Box::new([[0u8; 64]; BATCH]),
            granted_rcvbuf,
            sock,
            bound_path,
            policy: UdsPolicy {
                allow_cross_namespace: false,
            },
        })
    }

    /// The bound path.
    pub fn path(&self) -> &Path {
        self.bound_path.path()
    }

    /// Receive buffer the kernel granted (bytes).
    pub fn granted_rcvbuf(&self) -> usize {
        self.granted_rcvbuf
    }

    /// The observer's PID-namespace inode (0 if unknown).
    pub fn own_pidns(&self) -> u32 {
        self.own_pidns
    }

    /// Current `pid_max`.
    pub fn pid_max(&self) -> u32 {
        self.pid_max
    }

    /// Applies runtime policy (reload).
    pub fn set_policy(&mut self, policy: UdsPolicy) {
        self.policy = policy;
    }

    /// Raw fd for registering with the poller.
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Reads up to `budget` datagrams and feeds them through attestation
    /// and the tracker.
    pub fn drain(
        &mut self,
        now_ns: u64,
        budget: u32,
        tracker: &mut Tracker,
        bus: &mut EventBus,
    ) -> Drained {
        if now_ns.saturating_sub(self.pid_max_read_ns) >= PID_MAX_REFRESH_NS {
            self.pid_max_read_ns = now_ns;
            if let Some(m) = self.procfs.pid_max() {
                self.pid_max = m;
            }
        }
        let mut out = Drained::default();
        let fd = self.sock.as_raw_fd();
        while out.datagrams < budget {
            let mut meta = [Meta::default(); BATCH];
            let received =
                match recv_batch(fd, &mut self.headers, &mut self.bufs, &mut meta, Meta::of) {
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
            for (i, m) in meta[..received].iter().enumerate() {
                if m.ctrunc {
                    bus.emit(now_ns, Event::Ctrunc);
                    continue;
                }
                let buf = self.bufs[i];
                match self.attest(now_ns, m.len, &buf, m.cred, bus) {
                    Ok(inc) => {
                        batch[n] = inc;
                        n += 1;
                    }
                    Err(Verdict::CrossNamespace) => {
                        out.cross_namespace = m.cred.map(|(pid, _)| pid.unsigned_abs());
                    }
                    Err(_) => {}
                }
            }
            let mut verdicts = [Verdict::Dropped; BATCH];
            tracker.on_batch(
                now_ns,
                &batch[..n],
                &mut self.procfs,
                bus,
                &mut verdicts[..n],
            );
            if let Some(i) = verdicts[..n]
                .iter()
                .position(|v| *v == Verdict::CrossNamespace)
            {
                out.cross_namespace = Some(batch[i].pid);
            }
            // Fewer than a full batch means the queue was empty when the
            // kernel looked; a datagram arriving later raises a new
            // (edge-triggered) readiness event, so no extra EAGAIN read.
            if received < BATCH {
                return out;
            }
        }
        out.more = true;
        out
    }

    /// Spec §3 checks for one datagram: the frame ready for the tracker,
    /// or why it was dropped (already reported on the bus).
    fn attest(
        &mut self,
        now_ns: u64,
        len: usize,
        buf: &[u8; 64],
        cred: Option<(i32, u32)>,
        bus: &mut EventBus,
    ) -> Result<Incoming, Verdict> {
        let reject = |bus: &mut EventBus, pid: u32, reason| {
            bus.emit(now_ns, Event::Rejected { pid, reason });
            Err(Verdict::Dropped)
        };
        let Some((kpid, uid)) = cred else {
            return reject(bus, 0, RejectReason::NoCredentials);
        };
        let kpid = u32::try_from(kpid).unwrap_or(0);
        if uid != self.own_uid {
            return reject(bus, kpid, RejectReason::ForeignUid);
        }
        if len != FRAME_LEN {
            bus.emit(
                now_ns,
                Event::Truncated {
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                },
            );
            return Err(Verdict::Dropped);
        }
        let mut wire = [0u8; FRAME_LEN];
        wire.copy_from_slice(&buf[..FRAME_LEN]);
        let frame = match Frame::decode(&wire) {
            Ok(f) => f,
            Err(e) => {
                bus.emit(now_ns, Event::DecodeError(e));
                return Err(Verdict::Dropped);
            }
        };
        if kpid == 0 {
            return reject(bus, 0, RejectReason::PidNotVisible);
        }
        if kpid > self.pid_max {
            return reject(bus, kpid, RejectReason::PidAboveMax);
        }
        let mut pidns = None;
        if frame.pid != kpid {
            // Either a forgery, or a sender in another PID namespace whose
            // own pid differs from the kernel's view. Only the namespace
            // tells them apart; reading it here keeps /proc off the hot path.
            let ns = self.procfs.pid_namespace(kpid);
            match ns {
                Some(ns) if self.own_pidns != 0 && ns != self.own_pidns => {
                    if !self.policy.allow_cross_namespace {
                        bus.emit(
                            now_ns,
                            Event::Rejected {
                                pid: kpid,
                                reason: RejectReason::CrossNamespace,
                            },
                        );
                        return Err(Verdict::CrossNamespace);
                    }
                    pidns = Some(ns);
                }
                // The sender exited before its datagram was read (an agent
                // sends its exit frame and is gone): /proc no longer tells
                // its namespace, so neither a cross-namespace agent nor a
                // liar can be proven. Where such agents are allowed the
                // frame is kept — under the kernel's pid, the only pid it can
                // speak for — so a containerised agent's last beats and its
                // exit are not lost; otherwise it is refused as what it is,
                // not reported as a forgery.
                None if self.policy.allow_cross_namespace => {}
                None => return reject(bus, kpid, RejectReason::SenderGone),
                Some(_) => {
                    bus.emit(
                        now_ns,
                        Event::AuthFailure {
                            claimed_pid: frame.pid,
                            kernel_pid: kpid,
                        },
                    );
                    return Err(Verdict::Dropped);
                }
            }
        }
        Ok(Incoming {
            pid: kpid,
            frame,
            origin: Origin::KernelAttested,
            pidns,
            new_session: false,
            peer: None,
        })
    }

    /// Removes the socket file if it is still the one we bound (same device
    /// and inode): a successor observer's socket is left alone.
    pub fn unlink_if_ours(&self) {
        self.bound_path.unlink_if_ours();
    }
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        self.unlink_if_ours();
    }
}

/// Asks for `want` bytes of SO_RCVBUF (root may exceed rmem_max with
/// SO_RCVBUFFORCE) and returns what the kernel granted.
pub(crate) fn set_rcvbuf<F: std::os::fd::AsFd>(sock: &F, want: usize) -> usize {
    if want > 0 && setsockopt(sock, sockopt::RcvBufForce, &want).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &want);
    }
    nix::sys::socket::getsockopt(sock, sockopt::RcvBuf).unwrap_or(0)
}
