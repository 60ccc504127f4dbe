//! Agents built with the original varta-client 0.2.0 beat into this
//! observer unchanged (VLP v0.2 is byte-compatible).

mod common;

use common::{spawn_agent, KillOnDrop, Observer};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

#[test]
fn original_client_agents_are_tracked_and_stall() {
    let obs = Observer::start(&["--threshold-ms", "300"]);
    let mut agent = KillOnDrop(spawn_agent("upstream", &obs.socket, 30));
    let pid = agent.0.id();
    obs.wait_until("three beats", || obs.of_kind("beat", Some(pid)).len() >= 3);
    let beats = obs.of_kind("beat", Some(pid));
    assert_eq!(beats[0][3], "1", "first nonce of a session is 1");
    assert_eq!(
        (beats[0][4].as_str(), beats[0][5].as_str()),
        ("degraded", "7")
    );
    assert!(obs.of_kind("decode", None).is_empty());
    assert!(obs.of_kind("mismatch", None).is_empty());
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    obs.wait_for("stall", Some(pid));
}
