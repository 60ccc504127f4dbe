//! The real binary under a real `NOTIFY_SOCKET` (filesystem path and
//! abstract name): `READY=1`, `STATUS=`, `WATCHDOG=1` at half of
//! `$WATCHDOG_USEC`, `STOPPING=1` on SIGTERM; `$WATCHDOG_PID`; the
//! heartbeat file of a live loop; refusal of paths that are not watchdogs.
//! The wedged-loop half is in `watchdog_faults.rs` (feature
//! `fault-injection`).

mod common;
mod systemd_support;

use std::time::{Duration, Instant};

use common::{spawn_agent, PATIENCE};
use nix::sys::signal::Signal;
use systemd_support::{read_heartbeat, start_observer, NotifySocket};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

/// One full life under systemd with `WatchdogSec=` 0.4 s.
fn notify_lifecycle(notify: &NotifySocket, dir: tempfile::TempDir) {
    let mut obs = start_observer(
        dir,
        &["--threshold-ms", "300"],
        &[
            ("NOTIFY_SOCKET", notify.env.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    notify.wait_until("READY=1", |m| {
        m.iter().any(|(_, s)| s.lines().any(|l| l == "READY=1"))
    });
    let first = &notify.messages()[0].1;
    assert!(
        first.starts_with("READY=1\nSTATUS=tracking 0 agents"),
        "READY=1 comes first, with a status line: {first:?}"
    );
    // The auto self-watchdog is announced.
    assert!(
        obs.stderr().contains("self-watchdog set to 4 s"),
        "{}",
        obs.stderr()
    );

    // Pings every 200 ms (half of 400 ms), from the watchdog thread.
    notify.wait_until("repeated WATCHDOG=1", |_| {
        notify.times_of("WATCHDOG=1").len() >= 5
    });
    let pings = notify.times_of("WATCHDOG=1");
    let span = *pings.last().unwrap() - pings[0];
    assert!(
        span >= Duration::from_millis(4 * 150),
        "5 pings should take about 800 ms, took {span:?}"
    );

    // STATUS follows the agents (published at most once a second).
    let agent = spawn_agent("beat", &obs.socket, 50);
    notify.wait_until("STATUS with one live agent", |m| {
        m.iter()
            .any(|(_, s)| s == "STATUS=tracking 1 agents: 1 alive, 0 stalled, 0 exited")
    });
    drop(agent);
    notify.wait_until("STATUS with the stalled agent", |m| {
        m.iter()
            .any(|(_, s)| s == "STATUS=tracking 1 agents: 0 alive, 1 stalled, 0 exited")
    });

    obs.signal(Signal::SIGTERM);
    assert_eq!(obs.wait_exit(), Some(0), "{}", obs.stderr());
    notify.wait_until("STOPPING=1", |m| {
        m.iter().any(|(_, s)| s.lines().any(|l| l == "STOPPING=1"))
    });
    let msgs = notify.messages();
    let stopping = msgs
        .iter()
        .position(|(_, s)| s.lines().any(|l| l == "STOPPING=1"))
        .unwrap();
    assert_eq!(
        stopping,
        msgs.len() - 1,
        "nothing after STOPPING=1: {msgs:?}"
    );
}

#[test]
fn notify_socket_at_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::path(dir.path());
    notify_lifecycle(&notify, dir);
}

#[test]
fn notify_socket_in_the_abstract_namespace() {
    let notify = NotifySocket::abstract_name();
    assert!(notify.env.starts_with('@'));
    notify_lifecycle(&notify, tempfile::tempdir().unwrap());
}

#[test]
fn watchdog_pid_of_another_process_means_no_pings() {
    let notify = NotifySocket::abstract_name();
    let obs = start_observer(
        tempfile::tempdir().unwrap(),
        &[],
        &[
            ("NOTIFY_SOCKET", notify.env.as_str()),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    notify.wait_until("READY=1", |m| !m.is_empty());
    std::thread::sleep(Duration::from_millis(800));
    assert!(notify.times_of("WATCHDOG=1").is_empty());
    assert!(obs.stderr().contains("WATCHDOG_PID"), "{}", obs.stderr());
    assert!(!obs.stderr().contains("self-watchdog set to"));
}

#[test]
fn heartbeat_file_advances_while_the_loop_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("heartbeat");
    let hb_arg = hb.to_str().unwrap().to_string();
    let obs = start_observer(dir, &["--heartbeat-file", &hb_arg], &[]);
    let read = || read_heartbeat(&hb);
    obs.wait_until("heartbeat file", || read().is_some());
    let (n0, t0) = read().unwrap();
    // An idle loop still ticks (250 ms) and the file follows it.
    let start = Instant::now();
    let mut last = (n0, t0);
    let mut advances = 0;
    while advances < 3 {
        assert!(start.elapsed() < PATIENCE, "heartbeat stuck at {last:?}");
        std::thread::sleep(Duration::from_millis(50));
        let now = read().unwrap();
        if now != last {
            // The count must move on; the time may repeat: a reading after
            // a tiny clock regression (VM TSC drift, counted as
            // clock_regression) is clamped to the previous one.
            assert!(now.0 > last.0 && now.1 >= last.1, "{last:?} -> {now:?}");
            last = now;
            advances += 1;
        }
    }
    // Observer ns since start, not an absolute clock reading.
    assert!(last.1 < 600_000_000_000, "{last:?}");
    // Only the file itself: temporaries are renamed over it.
    let stray: Vec<_> = std::fs::read_dir(obs.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn startup_refuses_what_is_not_a_watchdog_or_a_heartbeat_place() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("obs.sock");
    let regular = dir.path().join("regular");
    std::fs::write(&regular, "").unwrap();
    let missing_dir = dir.path().join("nowhere/heartbeat");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--hw-watchdog", regular.to_str().unwrap()],
            "is a regular file, not a character device",
        ),
        // A character device, but its driver answers no watchdog ioctl.
        (
            &["--hw-watchdog", "/dev/null"],
            "/dev/null: not a watchdog device (WDIOC_GETSUPPORT failed",
        ),
        (
            &["--heartbeat-file", missing_dir.to_str().unwrap()],
            "does not exist",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--socket", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = common::run(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!sock.exists(), "a refused start leaves no socket behind");
    }
}
