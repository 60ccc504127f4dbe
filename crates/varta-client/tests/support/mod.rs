//! Shared helpers for the client's integration tests: a real observer-side
//! socket to receive on, a fork wrapper, and a guard for spawned processes.
//!
//! Cleanup contract: a forked child never returns into the test harness and
//! is always reaped; a spawned process is owned by a [`ChildGuard`] that
//! kills and reaps it on drop (panics included); socket files live in
//! `tempfile` directories removed on drop.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;
use varta_vlp::Frame;

/// A spawned process that is killed (SIGKILL) and reaped when dropped.
/// Derefs to [`Child`], so `id()`, `wait()`, `stderr` work as usual.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Either may fail harmlessly: the child may already be reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` under a [`ChildGuard`]; the process also gets
/// `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the test even if the test
/// binary itself is killed before any destructor runs.
pub fn spawn_guarded(cmd: &mut Command) -> std::io::Result<ChildGuard> {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe prctl(2) and getppid(2) calls.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if nix::libc::getppid() != parent {
                return Err(std::io::Error::other("test process already gone"));
            }
            Ok(())
        });
    }
    cmd.spawn().map(ChildGuard)
}

/// A bound Unix datagram socket standing in for the observer.
pub struct FakeObserver {
    pub sock: UnixDatagram,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeObserver {
    pub fn bind() -> FakeObserver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obs.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeObserver {
            sock,
            path,
            _dir: dir,
        }
    }

    /// Replaces the socket with a new one at the same path (observer restart).
    pub fn restart(&mut self) {
        std::fs::remove_file(&self.path).unwrap();
        self.sock = UnixDatagram::bind(&self.path).unwrap();
        self.sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }

    /// Next datagram, decoded; panics after 10 s of silence.
    pub fn recv_frame(&self) -> Frame {
        let mut buf = [0u8; 64];
        let n = self.sock.recv(&mut buf).expect("no datagram within 10 s");
        assert_eq!(n, 32, "datagram of {n} bytes");
        Frame::decode(buf[..32].try_into().unwrap()).expect("frame decodes")
    }

    /// Whether a datagram is queued right now (consumes it).
    pub fn pending(&self) -> bool {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let r = self.sock.recv(&mut buf).is_ok();
        self.sock.set_nonblocking(false).unwrap();
        r
    }

    pub fn drain(&self) -> usize {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let mut n = 0;
        while self.sock.recv(&mut buf).is_ok() {
            n += 1;
        }
        self.sock.set_nonblocking(false).unwrap();
        n
    }
}

/// Runs `child` in a forked child process and returns its exit status code.
///
/// Each test binary that calls this holds a single test, so the process has
/// no other threads that could hold the allocator lock at fork time; the
/// child still only calls the client (allocation-free on this path) and
/// `_exit`.
pub fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    // SAFETY: see the function comment; the child never returns into the
    // test harness (it leaves through _exit).
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // A panic must not unwind into the copy of the test harness
            // (which would go on running tests and drop the parent's temp
            // directories): report it as exit code 101 instead.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            // SAFETY: _exit is async-signal-safe and skips atexit handlers
            // (and destructors) that belong to the parent's test harness.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        },
    }
}
