//! Secure UDP sender nonce discipline, checked by decrypting what the client
//! put on the wire with the VLP crate's `open_*`.

mod support;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::Duration;
use varta_client::{BeatOutcome, Key, Status, Varta};
use varta_vlp::{open_master, open_shared, Frame, MASTER_LEN, SHARED_LEN};

const KEY: [u8; 32] = [0x11; 32];

fn receiver() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// (AEAD nonce, frame) of one shared-key datagram.
fn recv_shared(rx: &UdpSocket) -> ([u8; 12], Frame) {
    let mut buf = [0u8; 128];
    let n = rx.recv(&mut buf).expect("datagram");
    assert_eq!(n, SHARED_LEN);
    let wire: [u8; SHARED_LEN] = buf[..n].try_into().unwrap();
    let plain = open_shared(&Key::from_bytes(KEY), &wire).expect("opens");
    (
        wire[..12].try_into().unwrap(),
        Frame::decode(&plain).unwrap(),
    )
}

fn recv_master(rx: &UdpSocket) -> ([u8; 12], Frame) {
    let mut buf = [0u8; 128];
    let n = rx.recv(&mut buf).expect("datagram");
    assert_eq!(n, MASTER_LEN);
    let wire: [u8; MASTER_LEN] = buf[..n].try_into().unwrap();
    let (pid, plain) = open_master(&Key::from_bytes(KEY), &wire).expect("opens");
    let f = Frame::decode(&plain).unwrap();
    assert_eq!(f.pid, pid);
    (wire[4..16].try_into().unwrap(), f)
}

#[test]
fn shared_key_frames_open_and_never_repeat_a_nonce() {
    let rx = receiver();
    let mut agent =
        Varta::connect_secure_udp(rx.local_addr().unwrap(), Key::from_bytes(KEY)).unwrap();
    let mut seen = HashSet::new();
    for i in 1..=200u64 {
        assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
        let (nonce, f) = recv_shared(&rx);
        assert_eq!(f.nonce, i);
        assert!(seen.insert(nonce), "AEAD nonce reused");
    }
    // Counter is at 200 and starts from 0 of prefix 0.
    assert_eq!(agent.transport().iv_counter(), 200);
    assert_eq!(agent.transport().iv_prefix_index(), 0);
}

#[test]
fn counter_exhaustion_rotates_the_prefix() {
    let rx = receiver();
    let mut agent =
        Varta::connect_secure_udp(rx.local_addr().unwrap(), Key::from_bytes(KEY)).unwrap();
    let first_prefix = agent.transport().iv_prefix();
    agent.transport_mut().set_iv_counter_for_test(u32::MAX - 2);
    let mut nonces = Vec::new();
    for _ in 0..3 {
        assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
        nonces.push(recv_shared(&rx).0);
    }
    // Counters MAX-2 and MAX-1 under prefix 0, then prefix 1 from counter 0.
    assert_eq!(&nonces[0][..8], &first_prefix);
    assert_eq!(nonces[0][8..], (u32::MAX - 2).to_le_bytes());
    assert_eq!(nonces[1][8..], (u32::MAX - 1).to_le_bytes());
    assert_ne!(&nonces[2][..8], &first_prefix);
    assert_eq!(nonces[2][8..], 0u32.to_le_bytes());
    assert_eq!(agent.transport().iv_prefix_index(), 1);
    assert_eq!(agent.transport().iv_counter(), 1);
}

#[test]
fn prefix_index_exhaustion_resalts() {
    let rx = receiver();
    let mut agent =
        Varta::connect_secure_udp(rx.local_addr().unwrap(), Key::from_bytes(KEY)).unwrap();
    agent.transport_mut().set_iv_prefix_index_for_test(u32::MAX);
    agent.transport_mut().set_iv_counter_for_test(u32::MAX - 1);
    let last = agent.transport().iv_prefix();
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    recv_shared(&rx);
    assert_eq!(agent.transport().iv_prefix_index(), 0);
    assert_eq!(agent.transport().iv_counter(), 0);
    assert_ne!(agent.transport().iv_prefix(), last);
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    recv_shared(&rx);
}

#[test]
fn dropped_send_reuses_the_counter() {
    // Nothing listens on a closed port: the send fails (ECONNREFUSED after
    // the ICMP error) or succeeds into the void; either way the counter only
    // moves on success.
    let rx = receiver();
    let addr = rx.local_addr().unwrap();
    drop(rx);
    let mut agent = Varta::connect_secure_udp(addr, Key::from_bytes(KEY)).unwrap();
    let mut sent = 0;
    for _ in 0..20 {
        if agent.beat(Status::Ok, 0) == BeatOutcome::Sent {
            sent += 1;
        }
    }
    assert_eq!(agent.transport().iv_counter(), sent);
    assert_eq!(agent.next_nonce(), u64::from(sent) + 1);
}

#[test]
fn master_key_frames_use_the_pid_derived_key() {
    let rx = receiver();
    let mut agent =
        Varta::connect_secure_udp_with_master(rx.local_addr().unwrap(), Key::from_bytes(KEY))
            .unwrap();
    let mut seen = HashSet::new();
    for i in 1..=20u64 {
        assert_eq!(agent.beat(Status::Degraded, 5), BeatOutcome::Sent);
        let (nonce, f) = recv_master(&rx);
        assert_eq!((f.nonce, f.pid), (i, std::process::id()));
        assert!(seen.insert(nonce));
    }
}

#[test]
fn reconnect_resalts() {
    let rx = receiver();
    let mut agent =
        Varta::connect_secure_udp(rx.local_addr().unwrap(), Key::from_bytes(KEY)).unwrap();
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    let (a, _) = recv_shared(&rx);
    agent.reconnect().unwrap();
    assert_eq!(agent.beat(Status::Ok, 0), BeatOutcome::Sent);
    let (b, f) = recv_shared(&rx);
    assert_ne!(a[..8], b[..8], "new salt, new prefix");
    assert_eq!(f.nonce, 2, "reconnect keeps the beat nonce");
}

#[test]
fn plaintext_udp_sends_bare_frames() {
    let rx = receiver();
    let mut agent = Varta::connect_udp(rx.local_addr().unwrap()).unwrap();
    assert_eq!(agent.beat(Status::Ok, 9), BeatOutcome::Sent);
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(n, 32);
    let f = Frame::decode(buf[..32].try_into().unwrap()).unwrap();
    assert_eq!((f.nonce, f.payload), (1, 9));
}
