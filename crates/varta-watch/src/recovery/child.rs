//! One running recovery child: its process, the pidfd that wakes the runner
//! when it exits, and the optional stdout/stderr capture.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::{Child, ChildStderr, ChildStdout, ExitStatus};
use std::time::Instant;

use rustix::process::{Pid, PidfdFlags};

use super::policy::{Key, TriggerKind};

/// Reads per pipe per wake-up before yielding to other work; the runner
/// comes back to a pipe that hit the budget on its next turn.
const READ_BUDGET: usize = 64;

/// Which stream a capture pipe carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Out,
    /// stderr.
    Err,
}

/// A started recovery child.
pub struct Running {
    /// The agent it recovers (0 for `missing`).
    pub agent: u32,
    /// Its policy table key (the pid, or the required name).
    pub key: Key,
    /// Name and unit for the audit `complete` record (schema v3).
    pub who: Option<varta_audit::Agent>,
    /// Stall or exit.
    pub kind: TriggerKind,
    /// The process (reaped with `try_wait` once the pidfd is readable).
    pub child: Child,
    /// Readable when the child exits: the exit wakes the runner, nothing polls.
    pub pidfd: OwnedFd,
    /// When it started.
    pub started: Instant,
    /// Observer ns when it started.
    pub started_ns: u64,
    /// The timeout ladder has been started (SIGTERM sent to the group).
    pub killed: bool,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out: Vec<u8>,
    err: Vec<u8>,
    cap: usize,
    /// More output arrived than the cap kept.
    pub truncated: bool,
}

/// How a pipe read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Drained for now (EAGAIN).
    Drained,
    /// The writer side closed (or the pipe failed): pipe dropped.
    Closed,
    /// The read budget ran out with data left: come back.
    Budget,
}

impl Running {
    /// Wraps a freshly spawned child: opens its pidfd and makes the
    /// capture pipes non-blocking.
    pub fn new(
        key: Key,
        agent: u32,
        kind: TriggerKind,
        mut child: Child,
        started_ns: u64,
        cap: usize,
    ) -> std::io::Result<Running> {
        // A child we cannot watch must not run unwatched (or linger as a
        // zombie): kill and reap it before reporting the failure.
        let abandon = |child: &mut Child, e: std::io::Error| {
            let _ = child.kill();
            let _ = child.wait();
            e
        };
        let pid = match Pid::from_raw(child.id() as i32) {
            Some(p) => p,
            None => {
                return Err(abandon(
                    &mut child,
                    std::io::Error::other("child has pid 0"),
                ))
            }
        };
        // A child that already exited is a zombie until reaped, so the
        // pidfd still opens and is immediately readable.
        let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(e) => return Err(abandon(&mut child, e.into())),
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        for fd in [
            stdout.as_ref().map(|s| s.as_fd()),
            stderr.as_ref().map(|s| s.as_fd()),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(e) = rustix::io::ioctl_fionbio(fd, true) {
                return Err(abandon(&mut child, e.into()));
            }
        }
        Ok(Running {
            agent,
            key,
            who: None,
            kind,
            child,
            pidfd,
            started: Instant::now(),
            started_ns,
            killed: false,
            stdout,
            stderr,
            out: Vec::new(),
            err: Vec::new(),
            cap,
            truncated: false,
        })
    }

    /// The child's pid (and process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Raw fds of the open capture pipes.
    pub fn pipe_fds(&self) -> [Option<RawFd>; 2] {
        [
            self.stdout.as_ref().map(|s| s.as_raw_fd()),
            self.stderr.as_ref().map(|s| s.as_raw_fd()),
        ]
    }

    /// Reads what the pipe has, keeping bytes up to the combined cap and
    /// discarding the rest (the child must never block on a full pipe).
    pub fn read(&mut self, which: Stream) -> ReadEnd {
        let mut scratch = [0u8; 8192];
        for _ in 0..READ_BUDGET {
            let kept = self.out.len() + self.err.len();
            let res = match which {
                Stream::Out => self.stdout.as_mut().map(|p| p.read(&mut scratch)),
                Stream::Err => self.stderr.as_mut().map(|p| p.read(&mut scratch)),
            };
            match res {
                None => return ReadEnd::Closed,
                Some(Ok(0)) => {
                    self.close(which);
                    return ReadEnd::Closed;
                }
                Some(Ok(n)) => {
                    let room = self.cap.saturating_sub(kept);
                    let keep = n.min(room);
                    let buf = match which {
                        Stream::Out => &mut self.out,
                        Stream::Err => &mut self.err,
                    };
                    buf.extend_from_slice(&scratch[..keep]);
                    if keep < n {
                        self.truncated = true;
                    }
                }
                Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => return ReadEnd::Drained,
                Some(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Some(Err(_)) => {
                    self.close(which);
                    return ReadEnd::Closed;
                }
            }
        }
        ReadEnd::Budget
    }

    fn close(&mut self, which: Stream) {
        match which {
            Stream::Out => self.stdout = None,
            Stream::Err => self.stderr = None,
        }
    }

    /// Closes both pipes (after the final drain): a grandchild that keeps
    /// them open must not keep the record from being written.
    pub fn close_pipes(&mut self) {
        self.stdout = None;
        self.stderr = None;
    }

    /// Reaps the child if it has exited.
    pub fn try_reap(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Captured bytes: (stdout, stderr).
    pub fn captured(&self) -> (&[u8], &[u8]) {
        (&self.out, &self.err)
    }
}

/// Up to `max` bytes of what explains a failure best: the end of stderr
/// when there is any, else the end of stdout.
pub fn excerpt_source<'a>(out: &'a [u8], err: &'a [u8], max: usize) -> &'a [u8] {
    let src = if err.iter().any(|b| !b.is_ascii_whitespace()) {
        err
    } else {
        out
    };
    let src = src.trim_ascii_end();
    &src[src.len().saturating_sub(max)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_prefers_stderr_tail() {
        assert_eq!(excerpt_source(b"out", b"err\n", 10), b"err");
        assert_eq!(excerpt_source(b"out\n", b"  \n", 10), b"out");
        assert_eq!(excerpt_source(b"", b"0123456789abc", 4), b"9abc");
    }
}
