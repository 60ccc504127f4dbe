//! Kernel attestation and malformed input, against the real binary.

mod common;

use common::Observer;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use varta_vlp::{Frame, Status, FRAME_LEN};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

fn me() -> u32 {
    std::process::id()
}

#[test]
fn forged_pid_is_an_auth_failure_and_gets_no_slot() {
    let obs = Observer::start(&["--threshold-ms", "200"]);
    let s = obs.raw();
    // Claim to be a pid we are not (our parent, a real process).
    let victim = std::os::unix::process::parent_id();
    s.send(&Frame::new(Status::Ok, victim, 1, 1, 0).to_bytes())
        .unwrap();
    let line = obs.wait_for("mismatch", Some(victim));
    assert_eq!(line[5], "auth_failure");
    // No slot was created for the forged pid: it never stalls.
    std::thread::sleep(Duration::from_millis(500));
    assert!(obs.of_kind("beat", Some(victim)).is_empty());
    assert!(obs.of_kind("stall", Some(victim)).is_empty());
}

#[test]
fn replayed_and_out_of_order_nonces_are_ignored() {
    let obs = Observer::start(&["--threshold-ms", "60000"]);
    let s = obs.raw();
    for n in [1u64, 2, 3, 3, 2, 1, 4] {
        s.send(&Frame::new(Status::Ok, me(), n, n, n as u32).to_bytes())
            .unwrap();
    }
    obs.wait_until("nonce 4 accepted", || {
        obs.of_kind("beat", Some(me())).iter().any(|l| l[3] == "4")
    });
    let nonces: Vec<String> = obs
        .of_kind("beat", Some(me()))
        .iter()
        .map(|l| l[3].clone())
        .collect();
    assert_eq!(nonces, ["1", "2", "3", "4"]);
    let rejected = obs.of_kind("rejected", Some(me()));
    assert_eq!(rejected.len(), 3);
    assert!(rejected.iter().all(|l| l[5] == "out_of_order"));
}

#[test]
fn every_malformed_datagram_is_counted_by_kind() {
    let obs = Observer::start(&["--threshold-ms", "60000"]);
    let s = obs.raw();
    let good = Frame::new(Status::Ok, me(), 1, 1, 0).to_bytes();
    let with_crc = |mut b: [u8; FRAME_LEN]| {
        let crc = varta_vlp::crc32c(&b[..28]);
        b[28..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "Truncated(3)"),
        (vec![0u8; 40], "Truncated(40)"),
        (vec![], "Truncated(0)"),
    ];
    let mut b = good;
    b[0] = 0;
    cases.push((b.to_vec(), "BadMagic"));
    let mut b = good;
    b[2] = 1;
    cases.push((b.to_vec(), "BadVersion"));
    let mut b = good;
    b[31] ^= 0xff;
    cases.push((b.to_vec(), "BadCrc"));
    let mut b = good;
    b[3] = 9;
    cases.push((with_crc(b).to_vec(), "BadStatus"));
    let mut b = good;
    b[3] = 3;
    cases.push((with_crc(b).to_vec(), "StallOnWire"));
    let mut b = good;
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    cases.push((with_crc(b).to_vec(), "BadPid"));
    let mut b = good;
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push((with_crc(b).to_vec(), "BadTimestamp"));
    let mut b = good;
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push((with_crc(b).to_vec(), "BadNonce"));
    for (bytes, _) in &cases {
        s.send(bytes).unwrap();
    }
    obs.wait_until("all decode lines", || {
        obs.of_kind("decode", None).len() == cases.len()
    });
    let details: Vec<String> = obs
        .of_kind("decode", None)
        .iter()
        .map(|l| l[5].clone())
        .collect();
    for (_, want) in &cases {
        assert!(
            details.iter().any(|d| d.starts_with(want)),
            "no decode line for {want}: {details:?}"
        );
    }
    // Still healthy: a good frame is accepted afterwards.
    s.send(&good).unwrap();
    obs.wait_for("beat", Some(me()));
}

#[test]
fn foreign_uid_is_rejected() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to setuid a child");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The other uid must be able to reach the socket for the observer to
    // see (and reject) its datagram.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let obs = Observer::start_in(dir, &["--socket-mode", "0666", "--threshold-ms", "60000"]);
    let socket = obs.socket.clone();
    // Fork + setuid(nobody) + send a perfectly valid frame for itself.
    let status = {
        use nix::unistd::{fork, setuid, ForkResult, Uid};
        // SAFETY: the child only calls setuid, socket syscalls and _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = (|| -> Option<()> {
                    setuid(Uid::from_raw(65534)).ok()?;
                    let s = std::os::unix::net::UnixDatagram::unbound().ok()?;
                    let pid = std::process::id();
                    s.send_to(&Frame::new(Status::Ok, pid, 1, 1, 0).to_bytes(), &socket)
                        .ok()?;
                    Some(())
                })()
                .map_or(1, |_| 0);
                // SAFETY: async-signal-safe exit without running the parent's atexit hooks.
                unsafe { nix::libc::_exit(code) }
            }
            ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).unwrap(),
        }
    };
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    let line = obs.wait_for("rejected", None);
    assert_eq!(line[5], "foreign_uid");
    assert!(obs.of_kind("beat", None).is_empty());
}

#[test]
fn truncated_ancillary_data_is_a_counted_drop() {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let obs = Observer::start(&["--threshold-ms", "60000"]);
    let s = obs.raw();
    // Passing file descriptors overflows the observer's credentials-sized
    // control buffer: the kernel sets MSG_CTRUNC.
    let f = std::fs::File::open("/dev/null").unwrap();
    let fds = [f.as_raw_fd(); 4];
    let frame = Frame::new(Status::Ok, me(), 1, 1, 0).to_bytes();
    sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let line = obs.wait_for("ctrunc", None);
    assert_eq!(line[5], "MSG_CTRUNC");
    assert!(
        obs.of_kind("beat", Some(me())).is_empty(),
        "the frame must not be trusted"
    );
}

/// Starts a namespaced agent that beats three times and sends its exit
/// frame (`panic` mode) while `obs` is stopped, and waits until it is gone:
/// when the observer reads its frames, `/proc/<pid>` no longer exists.
/// None (observer resumed) without root or `unshare(1)`.
fn namespaced_agent_gone_before_read(obs: &Observer) -> Option<()> {
    use nix::sys::signal::Signal;
    obs.signal(Signal::SIGSTOP);
    let Some(mut agent) = common::spawn_namespaced_agent_mode(&obs.socket, "panic") else {
        obs.signal(Signal::SIGCONT);
        return None;
    };
    // unshare exits once the namespace's init (sh) has waited for the agent.
    let start = std::time::Instant::now();
    while agent.unshare.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < common::PATIENCE, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(agent);
    obs.signal(Signal::SIGCONT);
    Some(())
}

#[test]
fn namespaced_agent_that_exits_before_its_frames_are_read() {
    // Allowed: its beats and its exit are kept under the kernel's pid,
    // though its namespace can no longer be read.
    let obs = Observer::start(&["--threshold-ms", "60000", "--allow-cross-namespace-agents"]);
    if namespaced_agent_gone_before_read(&obs).is_none() {
        eprintln!("skipped: needs root and unshare(1)");
        return;
    }
    let exit = obs.wait_for("exit", None);
    assert_eq!(exit[4], "critical");
    let pid: u32 = exit[2].parse().unwrap();
    assert!(!common::alive(pid as i32), "the agent is gone");
    assert_eq!(obs.of_kind("beat", Some(pid)).len(), 3);
    assert!(
        obs.of_kind("mismatch", None).is_empty(),
        "a vanished sender is not a forgery"
    );
    drop(obs);

    // Not allowed (the default): refused as sender_gone, not an auth failure.
    let obs = Observer::start(&["--threshold-ms", "60000"]);
    namespaced_agent_gone_before_read(&obs).unwrap();
    obs.wait_until("four sender_gone rejections", || {
        obs.of_kind("rejected", None).len() == 4
    });
    for line in obs.of_kind("rejected", None) {
        assert_eq!(line[5], "sender_gone", "{line:?}");
    }
    assert!(obs.of_kind("beat", None).is_empty());
    assert!(obs.of_kind("exit", None).is_empty());
    assert!(obs.of_kind("mismatch", None).is_empty());
}

#[test]
fn cross_namespace_agents_are_dropped_allowed_or_fatal() {
    // Default: dropped and counted.
    let obs = Observer::start(&["--threshold-ms", "60000"]);
    let Some(agent) = common::spawn_namespaced_agent(&obs.socket) else {
        eprintln!("skipped: needs root and unshare(1)");
        return;
    };
    let line = obs.wait_for("rejected", None);
    assert_eq!(line[5], "cross_namespace");
    assert!(obs.of_kind("beat", None).is_empty());
    assert!(
        obs.of_kind("mismatch", None).is_empty(),
        "not an auth failure"
    );
    drop(agent);
    drop(obs);

    // Allowed: tracked under the kernel's (our namespace's) pid.
    let obs = Observer::start(&["--threshold-ms", "60000", "--allow-cross-namespace-agents"]);
    let agent = common::spawn_namespaced_agent(&obs.socket).unwrap();
    let beat = obs.wait_for("beat", None);
    let pid: i32 = beat[2].parse().unwrap();
    assert!(common::alive(pid));
    // Tearing the namespace down takes the agent with it: nothing is left
    // re-parented to init, beating forever.
    let init = common::children_of(agent.unshare.id());
    drop(agent);
    let start = std::time::Instant::now();
    while common::alive(pid) || init.iter().any(|&p| common::alive(p)) {
        assert!(
            start.elapsed() < common::PATIENCE,
            "namespaced agent {pid} (init {init:?}) survived its guard"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(obs);

    // Strict: the observer stops with exit code 1.
    let mut obs = Observer::start(&["--threshold-ms", "60000", "--strict-namespace-check"]);
    let _agent = common::spawn_namespaced_agent(&obs.socket).unwrap();
    assert_eq!(obs.wait_exit(), Some(1));
    assert!(
        obs.stderr().contains("another PID namespace"),
        "{}",
        obs.stderr()
    );
}
