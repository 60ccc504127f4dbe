//! A wedged event loop, for real: the binary built with feature
//! `fault-injection` stops its loop for good after `VARTA_FAULT_WEDGE_AFTER`
//! iterations while its other threads run on (SIGSTOP cannot do that: it
//! stops every thread). Then systemd pings stop, the heartbeat file
//! freezes, and the self-watchdog aborts the process. And the opposite
//! fault, `VARTA_FAULT_WATCHDOG_STOP_AFTER`: the watchdog thread hangs
//! while the loop runs on — systemd's pings and the heartbeat file stop,
//! which is what the layers outside the process (WatchdogSec, a remote
//! heartbeat reader) act on.
//!
//! `cargo test -p varta-watch --features fault-injection --test watchdog_faults`

mod common;
mod systemd_support;

use std::time::{Duration, Instant};

use common::PATIENCE;
use systemd_support::{
    assert_self_watchdog_abort, read_heartbeat, start_observer, wait_for_wedge, wait_signal,
    NotifySocket, WATCHDOG_STOP_ENV, WEDGE_ENV,
};

const WATCHDOG_STOPPED: &str = "fault injection: stopping the watchdog thread";

#[test]
fn wedged_loop_stops_systemd_pings_and_the_self_watchdog_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::path(dir.path());
    let mut obs = start_observer(
        dir,
        &["--self-watchdog-secs", "2"],
        &[
            ("NOTIFY_SOCKET", notify.env.as_str()),
            ("WATCHDOG_USEC", "400000"),
            // The 50 ms liveness tick (WatchdogSec 0.4 s / 8): about 2 s
            // of healthy life first.
            (WEDGE_ENV, "40"),
        ],
    );
    notify.wait_until("WATCHDOG=1 while healthy", |_| {
        notify.times_of("WATCHDOG=1").len() >= 3
    });
    let wedged_at = wait_for_wedge(&obs);
    assert_self_watchdog_abort(&mut obs, &notify, wedged_at, Duration::from_secs(2));
}

#[test]
fn heartbeat_file_freezes_when_the_loop_wedges() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("heartbeat");
    let hb_arg = hb.to_str().unwrap().to_string();
    // 250 ms ticks: about 3 s alive, then wedged (no self-watchdog, so it
    // stays wedged until the guard kills it).
    let obs = start_observer(dir, &["--heartbeat-file", &hb_arg], &[(WEDGE_ENV, "12")]);
    let read = || read_heartbeat(&hb);
    obs.wait_until("heartbeat file", || read().is_some());
    let first = read().unwrap();
    obs.wait_until("heartbeat to advance", || {
        read().is_some_and(|(n, _)| n > first.0)
    });
    let wedged_at = wait_for_wedge(&obs);
    // Let the last write (made before the watchdog thread saw the wedge)
    // land, then the file must not change again.
    std::thread::sleep(Duration::from_millis(1200));
    let frozen = read().unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(read().unwrap(), frozen, "heartbeat moved while wedged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(frozen.0, 12, "the last count is the wedge's iteration");
    assert!(wedged_at.elapsed() < PATIENCE);
    // Still running: a wedged loop without a self-watchdog stays wedged.
    let mut obs = obs;
    assert!(obs.child.try_wait().unwrap().is_none());
}

/// `/-/healthy` answers 200 while the loop ticks and 503 once it is wedged
/// (the HTTP thread keeps serving), before the self-watchdog aborts;
/// `/metrics` is still served, from the last snapshot, after its bounded
/// wait.
#[test]
fn healthy_turns_503_when_the_loop_wedges_before_the_abort() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("prom.token");
    let hex = "ab".repeat(32);
    std::fs::write(&token, &hex).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr_arg = addr.to_string();
    let token_arg = token.to_str().unwrap().to_string();
    let mut obs = start_observer(
        dir,
        &[
            "--prom-addr",
            &addr_arg,
            "--prom-token-file",
            &token_arg,
            "--self-watchdog-secs",
            "4",
        ],
        &[(WEDGE_ENV, "20")],
    );
    let get = |path: &str| common::http_get(addr, path, Some(&hex)).0;
    obs.wait_until("healthy", || get("/-/healthy") == 200);
    let _ = wait_for_wedge(&obs);
    obs.wait_until("503 once wedged", || get("/-/healthy") == 503);
    assert_eq!(get("/metrics"), 200, "served from the last snapshot");
    assert_eq!(get("/-/ready"), 200);
    // Every answer above came before the abort, which then follows.
    assert!(obs.child.try_wait().unwrap().is_none(), "{}", obs.stderr());
    assert_eq!(
        wait_signal(&mut obs),
        Some(nix::libc::SIGABRT),
        "{}",
        obs.stderr()
    );
}

/// The watchdog thread hangs while the loop is healthy: `WATCHDOG=1` and
/// the heartbeat file stop (systemd's WatchdogSec and a heartbeat reader
/// on another host act on exactly that), though the loop still detects
/// stalls — the self-watchdog cannot catch its own thread's death, which
/// is why the outer layers exist.
#[test]
fn stopped_watchdog_thread_stops_systemd_pings_and_the_heartbeat() {
    use varta_vlp::{Frame, Status};
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::path(dir.path());
    let hb = dir.path().join("heartbeat");
    let hb_arg = hb.to_str().unwrap().to_string();
    // 50 ms rounds (WatchdogSec 0.4 s / 8): about 1.5 s of pings first.
    let obs = start_observer(
        dir,
        &[
            "--self-watchdog-secs",
            "2",
            "--heartbeat-file",
            &hb_arg,
            "--threshold-ms",
            "300",
        ],
        &[
            ("NOTIFY_SOCKET", notify.env.as_str()),
            ("WATCHDOG_USEC", "400000"),
            (WATCHDOG_STOP_ENV, "30"),
        ],
    );
    let read = || read_heartbeat(&hb);
    notify.wait_until("WATCHDOG=1 while healthy", |_| {
        notify.times_of("WATCHDOG=1").len() >= 3
    });
    obs.wait_until("heartbeat file", || read().is_some());
    obs.wait_until("the watchdog thread to stop", || {
        obs.stderr().contains(WATCHDOG_STOPPED)
    });
    let stopped_at = Instant::now();
    let frozen = read().unwrap();

    // The loop is alive: a beat is taken and its silence becomes a stall,
    // after the watchdog thread stopped.
    let me = std::process::id();
    obs.raw()
        .send(&Frame::new(Status::Ok, me, 1, 1, 0).to_bytes())
        .unwrap();
    obs.wait_for("stall", Some(me));

    // Twice the self-watchdog limit with a live loop and a dead watchdog
    // thread: no ping, no heartbeat write, no abort.
    let until = stopped_at + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(read().unwrap(), frozen, "heartbeat moved after the stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pings = notify.times_of("WATCHDOG=1");
    let last = *pings.last().unwrap();
    assert!(
        last < stopped_at,
        "a ping {:?} after the watchdog thread stopped",
        last - stopped_at
    );
    let mut obs = obs;
    assert!(
        obs.child.try_wait().unwrap().is_none(),
        "the loop is fine: nothing in the process aborts it\n{}",
        obs.stderr()
    );
    assert!(!obs.stderr().contains("self-watchdog: the event loop"));
}
