//! Across a real fork, no two datagrams of one key share an AEAD nonce: the
//! child re-salts (shared key) and re-derives its agent key (master key)
//! before its first send. One test per binary: fork from a single thread.

mod support;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::Duration;
use support::in_forked_child;
use varta_client::{BeatOutcome, Key, Status, Varta};
use varta_vlp::{open_master, open_shared, Frame};

const KEY: [u8; 32] = [0x22; 32];

#[test]
fn no_aead_nonce_shared_across_fork() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let addr = rx.local_addr().unwrap();
    let mut shared = Varta::connect_secure_udp(addr, Key::from_bytes(KEY)).unwrap();
    let mut master = Varta::connect_secure_udp_with_master(addr, Key::from_bytes(KEY)).unwrap();
    for _ in 0..3 {
        assert_eq!(shared.beat(Status::Ok, 0), BeatOutcome::Sent);
        assert_eq!(master.beat(Status::Ok, 0), BeatOutcome::Sent);
    }
    let code = in_forked_child(|| {
        let mut ok = true;
        for _ in 0..3 {
            ok &= shared.beat(Status::Ok, 1) == BeatOutcome::Sent;
            ok &= master.beat(Status::Ok, 1) == BeatOutcome::Sent;
        }
        i32::from(!ok)
    });
    assert_eq!(code, 0);
    for _ in 0..3 {
        assert_eq!(shared.beat(Status::Ok, 2), BeatOutcome::Sent);
        assert_eq!(master.beat(Status::Ok, 2), BeatOutcome::Sent);
    }

    let key = Key::from_bytes(KEY);
    let (mut shared_nonces, mut master_nonces) = (HashSet::new(), HashSet::new());
    let mut child_frames = 0;
    let parent = std::process::id();
    for _ in 0..18 {
        let mut buf = [0u8; 128];
        let n = rx.recv(&mut buf).expect("datagram");
        let frame = match n {
            60 => {
                let wire: [u8; 60] = buf[..60].try_into().unwrap();
                assert!(
                    shared_nonces.insert(wire[..12].to_vec()),
                    "shared nonce reused"
                );
                Frame::decode(&open_shared(&key, &wire).unwrap()).unwrap()
            }
            64 => {
                let wire: [u8; 64] = buf[..64].try_into().unwrap();
                // Keys differ per pid, so nonce uniqueness is per (pid, nonce).
                assert!(
                    master_nonces.insert(wire[..16].to_vec()),
                    "master nonce reused"
                );
                Frame::decode(&open_master(&key, &wire).unwrap().1).unwrap()
            }
            other => panic!("unexpected {other}-byte datagram"),
        };
        if frame.pid != parent {
            child_frames += 1;
            assert_eq!(frame.payload, 1);
        }
    }
    assert_eq!(child_frames, 6);
    // Even across pids, the shared key never saw a repeated nonce (checked
    // above), and the child's frames started a fresh beat session.
}
