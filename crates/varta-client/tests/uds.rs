//! Beat semantics over a real Unix datagram socket.

mod support;

use std::io;
use support::FakeObserver;
use varta_client::{BeatOutcome, DropReason, Status, Varta, NONCE_TERMINAL};

#[test]
fn nonces_start_at_one_and_timestamps_never_decrease() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    let mut last_ts = 0;
    for expected in 1..=50u64 {
        assert_eq!(agent.beat(Status::Ok, expected as u32), BeatOutcome::Sent);
        let f = obs.recv_frame();
        assert_eq!(f.nonce, expected);
        assert_eq!(f.payload, expected as u32);
        assert_eq!(f.pid, std::process::id());
        assert!(f.timestamp >= last_ts);
        last_ts = f.timestamp;
    }
}

#[test]
fn stall_is_refused_without_sending() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    match agent.beat(Status::Stall, 0) {
        BeatOutcome::Failed(e) => assert_eq!(e.kind, io::ErrorKind::InvalidInput),
        other => panic!("expected Failed(InvalidInput), got {other:?}"),
    }
    assert!(!obs.pending());
    // And the refused beat consumed no nonce.
    assert_eq!(agent.beat(Status::Critical, 0), BeatOutcome::Sent);
    let f = obs.recv_frame();
    assert_eq!((f.nonce, f.status), (1, Status::Critical));
}

#[test]
fn full_queue_drops_promptly_and_leaves_no_nonce_gap() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    // Nobody reads: the kernel queue fills (max_dgram_qlen / rcvbuf) and
    // beat() must come back with KernelQueueFull instead of blocking.
    let mut sent = 0u64;
    let mut dropped = 0u64;
    for _ in 0..5_000 {
        match agent.beat(Status::Ok, 0) {
            BeatOutcome::Sent => sent += 1,
            BeatOutcome::Dropped(DropReason::KernelQueueFull) => dropped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(dropped > 0, "queue never filled ({sent} sent)");
    assert_eq!(agent.next_nonce(), sent + 1);
    assert_eq!(obs.drain() as u64, sent);
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(obs.recv_frame().nonce, sent + 1, "dropped beats left a gap");
}

#[test]
fn observer_gone_is_no_observer_then_reconnect_keeps_nonce() {
    let mut obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(obs.recv_frame().nonce, 1);
    obs.restart();
    // The old peer is gone: the connected socket reports it.
    match agent.beat(Status::Ok, 0) {
        BeatOutcome::Dropped(DropReason::NoObserver | DropReason::PeerGone) => {}
        other => panic!("expected a peer drop, got {other:?}"),
    }
    agent.reconnect().unwrap();
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(obs.recv_frame().nonce, 2, "reconnect must keep the nonce");
}

#[test]
fn reconnect_after_resends_within_the_same_call() {
    let mut obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    agent.set_reconnect_after(3);
    assert_eq!(agent.beat(Status::Ok, 10), BeatOutcome::Sent);
    obs.recv_frame();
    obs.restart();
    // Drops 1 and 2 are reported; the third reaches the threshold,
    // reconnects and resends the same frame in the same call.
    assert!(matches!(
        agent.beat(Status::Ok, 11),
        BeatOutcome::Dropped(_)
    ));
    assert!(matches!(
        agent.beat(Status::Ok, 12),
        BeatOutcome::Dropped(_)
    ));
    assert_eq!(agent.beat(Status::Ok, 13), BeatOutcome::Sent);
    let f = obs.recv_frame();
    assert_eq!((f.nonce, f.payload), (2, 13));
    assert!(!obs.pending(), "the retry must send exactly once");
}

#[test]
fn reconnect_after_zero_never_reconnects_and_setting_resets_count() {
    let mut obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    obs.recv_frame();
    obs.restart();
    for _ in 0..5 {
        assert!(matches!(agent.beat(Status::Ok, 0), BeatOutcome::Dropped(_)));
    }
    // Five drops already counted, but setting n resets the count: two more
    // drops, then the reconnect on the third.
    agent.set_reconnect_after(3);
    assert!(matches!(agent.beat(Status::Ok, 0), BeatOutcome::Dropped(_)));
    assert!(matches!(agent.beat(Status::Ok, 0), BeatOutcome::Dropped(_)));
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(obs.recv_frame().nonce, 2);
}

#[test]
fn failed_reconnect_reports_no_observer() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    agent.set_reconnect_after(1);
    std::fs::remove_file(&obs.path).unwrap();
    drop(obs);
    assert_eq!(
        agent.beat(Status::Ok, 0),
        BeatOutcome::Dropped(DropReason::NoObserver)
    );
    assert_eq!(agent.next_nonce(), 1);
}

#[test]
fn connect_without_observer_fails() {
    let dir = tempfile::tempdir().unwrap();
    let err = Varta::connect(dir.path().join("nobody.sock")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn clock_regression_is_clamped_and_counted() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    let first = obs.recv_frame().timestamp;
    agent.shift_clock_for_test(std::time::Duration::from_secs(3600));
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(obs.recv_frame().timestamp, first);
    assert_eq!(agent.clock_regressions(), 1);
}

#[test]
fn nonce_wraps_to_zero_after_last_regular_value() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    agent.set_next_nonce_for_test(NONCE_TERMINAL - 1);
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(obs.recv_frame().nonce, NONCE_TERMINAL - 1);
    assert_eq!(obs.recv_frame().nonce, 0);
    assert_eq!(obs.recv_frame().nonce, 1);
}

#[test]
fn pid_change_restarts_the_session_before_sending() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    for _ in 0..3 {
        assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
        obs.recv_frame();
    }
    agent.set_session_pid_for_test(1);
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    let f = obs.recv_frame();
    assert_eq!(f.nonce, 1);
    assert_eq!(agent.fork_recoveries(), 1);
}

#[test]
fn failed_fork_reconnect_sends_nothing() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    std::fs::remove_file(&obs.path).unwrap();
    agent.set_session_pid_for_test(1);
    assert!(matches!(agent.beat(Status::Ok, 0), BeatOutcome::Failed(_)));
    assert_eq!(agent.fork_recoveries(), 0);
    assert!(!obs.pending());
}

/// `Varta` moves between threads.
#[test]
fn varta_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Varta>();
}
