//! Reads what a process is from `/proc/<pid>`: `comm`, `exe`, uid and
//! cgroup (→ systemd unit, container).
//!
//! **One process, start to end.** `/proc/<pid>` is opened once as a
//! directory and every file is read relative to that descriptor
//! (`openat`, `readlinkat`). The descriptor is bound to the process, not
//! to the number: once the process is reaped, reads through it fail with
//! `ENOENT`/`ESRCH` even if the pid has been reused meanwhile, so a record
//! never mixes two processes.
//!
//! **Exited means None.** A process that is gone at any step — directory
//! missing, a file vanishing, or a zombie (exited, not yet reaped: its
//! `exe` link is gone, or, where reading the link is refused, `status`
//! says `State: Z`/`X`) — yields `None`: the caller names it
//! `unknown`. That is the expected outcome of a race with exit, not an
//! error. Any other failure (`EACCES` on another user's `exe`, an
//! oversized or unparsable file) only leaves that field `None`.
//!
//! **Bounded.** Every read has a fixed cap (see the constants); nothing a
//! process controls (its name, its cgroup path) can make the observer read
//! or keep more.
//!
//! **Cost.** One call is three `open`s (the directory, `comm`, `cgroup`),
//! one read and close each, an `fstat` and a `readlinkat`; a fourth file,
//! `status`, only for processes owned by root (see [`RawIdentity::uid`])
//! or whose `exe` link is refused.
//! Tens of microseconds, mostly the kernel generating `cgroup` and
//! `status`. It is meant for admission of a new agent life, never per
//! beat. The `cost_per_read` test measures it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::cgroup::{self, Container};

/// Cap on `comm`, newline included. The kernel's `TASK_COMM_LEN` is 16
/// (15 bytes + NUL) for user processes; kernel threads may show up to 64
/// bytes since 6.x, so allow that much rather than refuse a real name.
pub const COMM_MAX: usize = 64 + 1;

/// Cap on `/proc/<pid>/status` (about 1.5 KiB in practice; the `Uid:` and
/// `State:` lines are in the first few hundred bytes).
pub const STATUS_MAX: usize = 8 * 1024;

/// Cap on `/proc/<pid>/cgroup`: one line per hierarchy, each path at most
/// `PATH_MAX`; 64 KiB is far beyond any real file. A file that does not fit
/// is treated as unreadable (no unit, no container) rather than parsed
/// truncated, where a cut path could name the wrong unit.
pub const CGROUP_MAX: usize = 64 * 1024;

/// What `/proc/<pid>` says a process is. Fields that could not be read
/// (permission, odd content) are `None`; the whole value is absent when
/// the process is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawIdentity {
    /// `/proc/<pid>/comm` without its newline (the thread-group leader's
    /// name, at most 15 bytes for user processes; invalid UTF-8 replaced
    /// with U+FFFD).
    pub comm: Option<String>,
    /// The `/proc/<pid>/exe` link target: the executable's path as the
    /// kernel resolves it in the observer's mount namespace, with a
    /// deleted binary's ` (deleted)` suffix kept. None when not permitted
    /// (another user's process without `CAP_SYS_PTRACE`).
    pub exe: Option<String>,
    /// The uid the process runs as, as seen from the observer's user
    /// namespace (unmapped ids read as the overflow uid, 65534).
    ///
    /// Read as the owner of `/proc/<pid>` (one `fstat`) when that is not
    /// root, else as the real uid of the `Uid:` line of
    /// `/proc/<pid>/status`. Why: `status` is the costliest file to
    /// generate (about half of a whole read without this), while the owner
    /// is free once the directory is open — but the kernel reports the
    /// owner as the *effective* uid, and as root for every non-dumpable
    /// process (setuid programs, daemons that call
    /// `prctl(PR_SET_DUMPABLE, 0)`), which would misname exactly the
    /// hardened services one watches. Root is therefore confirmed from
    /// `status`, and there the *real* uid is taken: the account that runs
    /// the process (systemd's `User=`, the login user), stable while a
    /// program temporarily switches its effective uid. A non-root owner is
    /// the real uid in practice: the kernel makes a process non-dumpable
    /// on every effective-uid change, so a dumpable one has euid = ruid
    /// unless it re-enabled dumping itself or `fs.suid_dumpable` is set,
    /// and then it is still a uid the process holds.
    pub uid: Option<u32>,
    /// The systemd unit, from the cgroup (see [`cgroup::parse`]).
    pub unit: Option<String>,
    /// The container, from the cgroup (see [`cgroup::parse`]).
    pub container: Option<Container>,
}

/// Why a field read stopped.
enum Miss {
    /// The process is gone: give up on the whole identity.
    Gone,
    /// This field is unavailable; keep the others.
    Field,
}

fn miss(e: Errno) -> Miss {
    if e == Errno::NOENT || e == Errno::SRCH {
        Miss::Gone
    } else {
        Miss::Field
    }
}

/// Reads the identity of `pid` under `proc_root` (`/proc`, or a fake tree
/// in tests). None when the process does not exist or exits (or is a
/// zombie) while being read; never an error, never a panic.
pub fn read(proc_root: &Path, pid: u32) -> Option<RawIdentity> {
    let dir = match rustix::fs::open(
        proc_root.join(pid.to_string()),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Absent, or unreadable as a whole (hidepid): nothing to name.
        Err(_) => return None,
    };
    // The directory's owner: the effective uid of a dumpable process, root
    // for a non-dumpable one (see `RawIdentity::uid`).
    let owner = match rustix::fs::fstat(&dir) {
        Ok(st) => Some(st.st_uid),
        Err(e) => match miss(e) {
            Miss::Gone => return None,
            Miss::Field => None,
        },
    };
    let mut buf = Vec::new();

    let comm = match read_file(&dir, "comm", COMM_MAX, COMM_MAX + 1, &mut buf) {
        Ok(()) => {
            let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
            Some(String::from_utf8_lossy(text).into_owned())
        }
        Err(Miss::Gone) => return None,
        Err(Miss::Field) => None,
    };

    // The kernel bounds the target to PATH_MAX (it fails with ENAMETOOLONG
    // beyond a page), so the growing read is bounded too.
    let (exe, exe_denied) = match rustix::fs::readlinkat(&dir, "exe", Vec::new()) {
        Ok(target) => (
            Some(String::from_utf8_lossy(target.as_bytes()).into_owned()),
            false,
        ),
        // The link is gone once the process has released its memory map:
        // it exited, and is at most a zombie now. (Kernel threads have no
        // map either, and cannot be agents.)
        Err(e) => match miss(e) {
            Miss::Gone => return None,
            Miss::Field => (None, true),
        },
    };

    // `status` only when needed, as it is the most expensive file to
    // generate: for the real uid when the owner reads as root, and to
    // tell a zombie apart when `exe` was refused (the permission check
    // comes before the kernel notices the map is gone).
    let uid = match owner {
        Some(uid) if uid != 0 && !exe_denied => Some(uid),
        _ => match read_file(&dir, "status", STATUS_MAX, 2048, &mut buf) {
            Ok(()) => {
                let status = String::from_utf8_lossy(&buf);
                if is_dead(&status) {
                    return None;
                }
                match owner {
                    Some(uid) if uid != 0 => Some(uid),
                    _ => real_uid(&status),
                }
            }
            Err(Miss::Gone) => return None,
            Err(Miss::Field) => owner.filter(|&uid| uid != 0),
        },
    };

    let info = match read_file(&dir, "cgroup", CGROUP_MAX, 1024, &mut buf) {
        Ok(()) => cgroup::parse(&String::from_utf8_lossy(&buf)),
        Err(Miss::Gone) => return None,
        Err(Miss::Field) => cgroup::CgroupInfo::default(),
    };

    Some(RawIdentity {
        comm,
        exe,
        uid,
        unit: info.unit,
        container: info.container,
    })
}

/// Reads `dir/name` into `buf` (cleared first), starting with a `first`
/// byte read. A file longer than `max` is a field miss: a truncated read
/// would be parsed as something it is not.
///
/// A short read ends the file: the `/proc/<pid>` files read here are
/// single-record seq_files, which hand over their whole content in the
/// first read that has room for it, and regular files (test trees) do the
/// same. Not issuing the confirming zero-length read saves a syscall per
/// file (about 4 µs each on a VM with costly syscalls).
fn read_file(
    dir: &OwnedFd,
    name: &str,
    max: usize,
    first: usize,
    buf: &mut Vec<u8>,
) -> Result<(), Miss> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(miss)?;
    buf.clear();
    let mut len = 0;
    // One byte of headroom beyond `max` tells "exactly max" from "more".
    let mut want = first.clamp(1, max + 1);
    loop {
        buf.resize(len + want, 0);
        match rustix::io::read(fd.as_fd(), &mut buf[len..]) {
            Ok(n) => {
                len += n;
                if len > max {
                    buf.clear();
                    return Err(Miss::Field);
                }
                if n < want {
                    break;
                }
                want = len.max(want).min(max + 1 - len);
            }
            Err(Errno::INTR) => {}
            Err(e) => {
                buf.clear();
                return Err(miss(e));
            }
        }
    }
    buf.truncate(len);
    Ok(())
}

/// `State:` Z (zombie) or X (dead): exited, only not yet reaped.
fn is_dead(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|rest| rest.trim_start().chars().next())
        .is_some_and(|c| c == 'Z' || c == 'X')
}

/// First field (real uid) of the `Uid:` line.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Runtime;

    const ID: &str = "4c01db0b339c3d1bd6c4f3e8e5e8ba2c7b1e9f0a0d3c1b2a39485766554433ff";

    fn status(state: &str, uid: u32) -> String {
        format!(
            "Name:\tfake\nUmask:\t0022\nState:\t{state}\nTgid:\t42\nPid:\t42\nPPid:\t1\n\
             Uid:\t{uid}\t{}\t{uid}\t{uid}\nGid:\t100\t100\t100\t100\n",
            uid + 1
        )
    }

    /// A fake `/proc/42`, with the files given.
    fn fake(files: &[(&str, &str)], exe: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("42");
        std::fs::create_dir(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        if let Some(target) = exe {
            std::os::unix::fs::symlink(target, dir.join("exe")).unwrap();
        }
        root
    }

    #[test]
    fn reads_a_fake_process() {
        let cg = format!("0::/system.slice/docker.service/docker-{ID}.scope\n");
        let st = status("S (sleeping)", 1000);
        let root = fake(
            &[("status", &st), ("comm", "nginx\n"), ("cgroup", &cg)],
            Some("/usr/sbin/nginx (deleted)"),
        );
        let id = read(root.path(), 42).unwrap();
        assert_eq!(id.comm.as_deref(), Some("nginx"));
        assert_eq!(id.exe.as_deref(), Some("/usr/sbin/nginx (deleted)"));
        // Real uid, not the effective one next to it.
        assert_eq!(id.uid, Some(1000));
        assert_eq!(id.unit.as_deref(), Some("docker.service"));
        let c = id.container.unwrap();
        assert_eq!((c.runtime, c.id.as_str()), (Runtime::Docker, ID));
    }

    #[test]
    fn non_root_owner_is_the_uid() {
        use std::os::unix::fs::chown;
        let st = status("S (sleeping)", 1000);
        let root = fake(
            &[("status", &st), ("comm", "app\n"), ("cgroup", "0::/\n")],
            Some("/bin/app"),
        );
        let dir = root.path().join("42");
        if chown(&dir, Some(1234), None).is_err() {
            eprintln!("skipped: cannot chown (not root)");
            return;
        }
        // The owner, without reading `status` (whose uid says otherwise).
        assert_eq!(read(root.path(), 42).unwrap().uid, Some(1234));
        // Refused `exe` (a non-link stands in): `status` is read for the
        // state; a zombie is None, a live process keeps the owner.
        std::fs::remove_file(dir.join("exe")).unwrap();
        std::fs::write(dir.join("exe"), "").unwrap();
        assert_eq!(read(root.path(), 42).unwrap().uid, Some(1234));
        std::fs::write(dir.join("status"), status("Z (zombie)", 1000)).unwrap();
        assert_eq!(read(root.path(), 42), None);
    }

    #[test]
    fn gone_processes_are_none() {
        let root = fake(&[], None);
        // No such pid.
        assert_eq!(read(root.path(), 7), None);
        // Files vanish mid-read (the process exited): `exe` missing.
        let st = status("R (running)", 0);
        let root = fake(
            &[("status", &st), ("comm", "x\n"), ("cgroup", "0::/\n")],
            None,
        );
        assert_eq!(read(root.path(), 42), None);
        // `cgroup` missing.
        let root = fake(&[("status", &st), ("comm", "x\n")], Some("/bin/x"));
        assert_eq!(read(root.path(), 42), None);
        // A zombie.
        for state in ["Z (zombie)", "X (dead)"] {
            let st = status(state, 0);
            let root = fake(
                &[("status", &st), ("comm", "x\n"), ("cgroup", "0::/\n")],
                Some("/bin/x"),
            );
            assert_eq!(read(root.path(), 42), None, "{state}");
        }
    }

    #[test]
    fn unreadable_fields_keep_the_rest() {
        // `exe` that is not a link (EINVAL, as a stand-in for EACCES, which
        // root cannot be made to see), a comm with invalid UTF-8 and no
        // newline, a status without a Uid line, an oversized cgroup file.
        let big = format!("0::/{}.service\n", "a".repeat(CGROUP_MAX));
        let root = fake(
            &[
                ("status", "State:\tS (sleeping)\n"),
                ("comm", "ab\u{7f}"),
                ("cgroup", &big),
                ("exe", "not a link"),
            ],
            None,
        );
        std::fs::write(root.path().join("42/comm"), b"a\xffb").unwrap();
        let id = read(root.path(), 42).unwrap();
        assert_eq!(id.comm.as_deref(), Some("a\u{fffd}b"));
        assert_eq!(id.exe, None);
        assert_eq!(id.uid, None);
        assert_eq!(id.unit, None);
        assert_eq!(id.container, None);
        // A comm longer than the cap is a field miss, not a truncation.
        std::fs::write(root.path().join("42/comm"), "c".repeat(COMM_MAX + 1)).unwrap();
        assert_eq!(read(root.path(), 42).unwrap().comm, None);
        std::fs::write(root.path().join("42/comm"), "c".repeat(COMM_MAX)).unwrap();
        assert_eq!(
            read(root.path(), 42).unwrap().comm.map(|c| c.len()),
            Some(COMM_MAX)
        );
    }

    #[test]
    fn reads_itself() {
        let me = std::process::id();
        let id = read(Path::new("/proc"), me).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(id.exe.as_deref(), exe.to_str());
        assert_eq!(id.uid, Some(rustix::process::getuid().as_raw()));
        // The test harness names its threads, but `comm` of the pid is the
        // main thread's: the binary name, cut at 15 bytes.
        let comm = id.comm.unwrap();
        assert!(!comm.is_empty() && comm.len() <= 15, "{comm:?}");
        assert!(
            exe.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&comm),
            "{comm:?}"
        );
        assert_eq!(read(Path::new("/proc"), u32::MAX), None);
    }

    /// Cost of one `read` of a live process on this machine. Not a timed
    /// assertion: run with
    /// `cargo test --release -p varta-watch --lib cost_per_read -- --ignored --nocapture`.
    /// Measures this process (owned by whoever runs the test: `status` is
    /// read too when that is root), a child running as `nobody` when we
    /// can start one (root), and an absent pid.
    #[test]
    #[ignore = "measurement, prints ns/call"]
    fn cost_per_read() {
        use std::os::unix::process::CommandExt;
        const N: u32 = 10_000;
        let proc_root = Path::new("/proc");
        let per_call = |pid: u32| {
            for _ in 0..100 {
                std::hint::black_box(read(proc_root, pid));
            }
            let start = std::time::Instant::now();
            for _ in 0..N {
                std::hint::black_box(read(proc_root, std::hint::black_box(pid)));
            }
            start.elapsed().as_nanos() / u128::from(N)
        };
        let me = std::process::id();
        let uid = rustix::process::getuid().as_raw();
        println!(
            "identity::procread::read, {N} calls each: this process (uid {uid}): {} ns/call",
            per_call(me)
        );
        if uid == 0 {
            for (as_uid, what) in [(0, "status read too"), (65534, "no status read")] {
                let mut child = std::process::Command::new("sleep")
                    .arg("30")
                    .uid(as_uid)
                    .spawn()
                    .unwrap();
                // Past exec (until then it is a copy of us).
                while read(proc_root, child.id()).and_then(|i| i.comm).as_deref() != Some("sleep") {
                    std::thread::yield_now();
                }
                let ns = per_call(child.id());
                let _ = child.kill();
                let _ = child.wait();
                println!("  sleep as uid {as_uid} ({what}): {ns} ns/call");
            }
        }
        println!("  absent pid: {} ns/call", per_call(u32::MAX - 1));
    }
}
