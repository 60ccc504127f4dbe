//! A real fork(2): the child restarts its session (new pid, nonce 1, new
//! clock) before its first frame, and the parent's session is untouched.
//! One test per binary: fork from a single-threaded harness.

mod support;

use support::{in_forked_child, FakeObserver};
use varta_client::{BeatOutcome, Status, Varta};

#[test]
fn child_after_fork_starts_a_fresh_session() {
    let obs = FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    for _ in 0..5 {
        assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    }
    let parent = std::process::id();
    let code = in_forked_child(|| {
        let ok = agent.beat(Status::Degraded, 7) == BeatOutcome::Sent
            && agent.beat(Status::Degraded, 8) == BeatOutcome::Sent
            && agent.fork_recoveries() == 1;
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(code, 0, "child beats failed");
    let frames: Vec<_> = (0..7).map(|_| obs.recv_frame()).collect();
    let (from_parent, from_child): (Vec<&varta_client::Frame>, Vec<_>) =
        frames.iter().partition(|f| f.pid == parent);
    assert_eq!(
        from_parent.iter().map(|f| f.nonce).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        from_child
            .iter()
            .map(|f| (f.nonce, f.payload))
            .collect::<Vec<_>>(),
        [(1, 7), (2, 8)]
    );
    // The parent carries on where it was.
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    assert_eq!(obs.recv_frame().nonce, 6);
    assert_eq!(agent.fork_recoveries(), 0);
}
