//! The UDP listener end to end: the real observer binary, real UDP sockets
//! on loopback, our client and hand-sealed datagrams (for what a client
//! would never send: replays, wrong keys, forged pids).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Observer;
use varta_client::{BeatOutcome, Status, Varta};
use varta_vlp::{Frame, Key};

/// Agent mode for [`common::spawn_agent`] (a no-op as a test).
#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

const KEY_A: [u8; 32] = [0xa1; 32];
const KEY_B: [u8; 32] = [0xb2; 32];

fn hex(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `keys` (one per line) to `dir/name`, mode 0600.
fn write_keys(dir: &Path, name: &str, keys: &[[u8; 32]]) -> PathBuf {
    let p = dir.join(name);
    let text: String = keys.iter().map(|k| format!("{}\n", hex(k))).collect();
    // Replace, not truncate: a reader never sees a half-written file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

/// An observer with a UDP listener; `udp_flags` beyond `--udp-port 0`.
fn observer(threshold_ms: u64, udp_flags: &[&str]) -> (Observer, SocketAddr) {
    let t = threshold_ms.to_string();
    let mut args = vec!["--threshold-ms", &t, "--udp-port", "0"];
    args.extend_from_slice(udp_flags);
    let obs = Observer::start(&args);
    let addr = obs.udp_addr();
    (obs, addr)
}

/// An observer whose secure listener uses `keys` in `--key-file`-style
/// files created in its own directory.
fn secure_observer(threshold_ms: u64, option: &str, keys: &[[u8; 32]]) -> (Observer, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_keys(dir.path(), "udp.key", keys);
    let t = threshold_ms.to_string();
    let obs = Observer::start_in(
        dir,
        &[
            "--threshold-ms",
            &t,
            "--udp-port",
            "0",
            option,
            file.to_str().unwrap(),
        ],
    );
    let addr = obs.udp_addr();
    (obs, addr)
}

fn sender(to: SocketAddr) -> UdpSocket {
    let bind: SocketAddr = if to.is_ipv6() {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.connect(to).unwrap();
    s
}

fn plain(pid: u32, nonce: u64) -> [u8; 32] {
    Frame::new(Status::Ok, pid, nonce * 1000, nonce, 0).to_bytes()
}

fn shared(key: &[u8; 32], pid: u32, iv: u8, ctr: u32, nonce: u64) -> [u8; 60] {
    varta_vlp::seal_shared(&Key::from_bytes(*key), [iv; 8], ctr, &plain(pid, nonce))
}

fn master(key: &[u8; 32], pid: u32, iv: u8, ctr: u32, nonce: u64) -> [u8; 64] {
    varta_vlp::seal_master(
        &Key::from_bytes(*key),
        pid,
        [iv; 8],
        ctr,
        &plain(pid, nonce),
    )
}

/// Beats `n` times with our client, 20 ms apart.
fn beat_with<T: varta_client::BeatTransport>(agent: &mut Varta<T>, n: usize) {
    for _ in 0..n {
        assert_eq!(agent.beat(Status::Ok, 7), BeatOutcome::Sent);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn own_pid() -> u32 {
    std::process::id()
}

/// Waits until the export has `kind` lines for `pid` (or any pid) and
/// returns how many.
fn wait_count(obs: &Observer, kind: &str, pid: Option<u32>, at_least: usize) -> usize {
    let mut n = 0;
    obs.wait_until(&format!("{at_least} {kind} lines for {pid:?}"), || {
        n = obs.of_kind(kind, pid).len();
        n >= at_least
    });
    n
}

/// Sends a marker beat for a fresh pid and waits for it: everything sent
/// before it has been handled (one socket, in order).
fn sync(obs: &Observer, s: &UdpSocket, datagram: &[u8], pid: u32) {
    s.send(datagram).unwrap();
    obs.wait_for("beat", Some(pid));
}

#[test]
fn our_client_over_plaintext_udp_is_tracked_and_stalls() {
    let (obs, addr) = observer(
        300,
        &["--i-accept-plaintext-udp", "--udp-bind-addr", "127.0.0.1"],
    );
    let mut agent = Varta::connect_udp(addr).unwrap();
    beat_with(&mut agent, 5);
    assert!(wait_count(&obs, "beat", Some(own_pid()), 5) >= 5);
    let stall = obs.wait_for("stall", Some(own_pid()));
    assert_eq!(stall[3], "5", "stall names the last nonce: {stall:?}");
    assert!(obs.stderr().contains("PLAINTEXT UDP listener"));
    // Beating again revives it.
    beat_with(&mut agent, 1);
    obs.wait_for("recovered", Some(own_pid()));
}

#[test]
fn our_client_over_secure_udp_shared_key_is_tracked_and_stalls() {
    let (obs, addr) = secure_observer(300, "--key-file", &[KEY_A]);
    let mut agent = Varta::connect_secure_udp(addr, Key::from_bytes(KEY_A)).unwrap();
    beat_with(&mut agent, 5);
    wait_count(&obs, "beat", Some(own_pid()), 5);
    obs.wait_for("stall", Some(own_pid()));
}

#[test]
fn our_client_over_secure_udp_master_key_is_tracked_and_stalls() {
    let (obs, addr) = secure_observer(300, "--master-key-file", &[KEY_B]);
    let mut agent = Varta::connect_secure_udp_with_master(addr, Key::from_bytes(KEY_B)).unwrap();
    beat_with(&mut agent, 5);
    wait_count(&obs, "beat", Some(own_pid()), 5);
    obs.wait_for("stall", Some(own_pid()));
}

#[test]
fn ipv6_loopback_secure_listener() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_keys(dir.path(), "udp.key", &[KEY_A]);
    let obs = Observer::start_in(
        dir,
        &[
            "--udp-port",
            "0",
            "--udp-bind-addr",
            "::1",
            "--key-file",
            file.to_str().unwrap(),
        ],
    );
    let addr = obs.udp_addr();
    assert!(addr.is_ipv6() && addr.ip().is_loopback(), "{addr}");
    let mut agent = Varta::connect_secure_udp(addr, Key::from_bytes(KEY_A)).unwrap();
    beat_with(&mut agent, 3);
    wait_count(&obs, "beat", Some(own_pid()), 3);
}

#[test]
fn a_thousand_pids_from_one_process_in_master_key_mode() {
    let (obs, addr) = secure_observer(60_000, "--master-key-file", &[KEY_B]);
    let s = sender(addr);
    for pid in 10_000..11_000u32 {
        // A few at a time: the receive buffer is large, but loopback UDP
        // drops without back-pressure if a burst outruns it.
        s.send(&master(&KEY_B, pid, (pid % 251) as u8, 0, 1))
            .unwrap();
        if pid % 100 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let n = wait_count(&obs, "beat", None, 1000);
    assert_eq!(n, 1000);
    let mut pids: Vec<String> = obs
        .of_kind("beat", None)
        .into_iter()
        .map(|l| l[2].clone())
        .collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 1000);
}

#[test]
fn wrong_key_is_counted_and_changes_nothing() {
    let (obs, addr) = secure_observer(60_000, "--key-file", &[KEY_A]);
    let s = sender(addr);
    s.send(&shared(&KEY_B, 4242, 1, 0, 1)).unwrap();
    s.send(&master(&KEY_A, 4243, 1, 0, 1)).unwrap(); // no master key configured
    let _ = s.send(&[0u8; 45]);
    sync(&obs, &s, &shared(&KEY_A, 777, 9, 0, 1), 777);
    let fails = obs.of_kind("decrypt_failure", None);
    assert_eq!(fails.len(), 2, "{fails:?}");
    assert!(
        fails[0][5].starts_with("shared from=127.0.0.1:"),
        "{fails:?}"
    );
    assert_eq!(fails[1][2], "4243");
    assert!(obs.of_kind("beat", Some(4242)).is_empty());
    assert!(obs.of_kind("beat", Some(4243)).is_empty());
    let truncated: Vec<_> = obs.of_kind("decode", None);
    assert_eq!(truncated.len(), 1);
    assert_eq!(truncated[0][5], "Truncated(45)");
}

#[test]
fn a_captured_datagram_resent_is_refused_from_any_source_port() {
    let (obs, addr) = secure_observer(60_000, "--key-file", &[KEY_A]);
    let first = sender(addr);
    let captured = shared(&KEY_A, 5151, 3, 0, 1);
    first.send(&captured).unwrap();
    obs.wait_for("beat", Some(5151));
    first.send(&captured).unwrap();
    let other = sender(addr);
    assert_ne!(first.local_addr().unwrap(), other.local_addr().unwrap());
    other.send(&captured).unwrap();
    // A fresh prefix reusing an old nonce is a replay too.
    other.send(&shared(&KEY_A, 5151, 4, 0, 1)).unwrap();
    sync(&obs, &other, &shared(&KEY_A, 5152, 1, 0, 1), 5152);
    assert_eq!(obs.of_kind("beat", Some(5151)).len(), 1);
    let replays: Vec<_> = obs
        .of_kind("rejected", Some(5151))
        .into_iter()
        .filter(|l| l[5] == "replay")
        .collect();
    assert_eq!(replays.len(), 3, "{:?}", obs.lines());
    // The sender's next datagram is fine.
    first.send(&shared(&KEY_A, 5151, 3, 1, 2)).unwrap();
    wait_count(&obs, "beat", Some(5151), 2);
}

#[test]
fn master_frame_with_another_pid_inside_is_refused() {
    let (obs, addr) = secure_observer(60_000, "--master-key-file", &[KEY_B]);
    let s = sender(addr);
    let agent_key = varta_vlp::derive_agent_key(&Key::from_bytes(KEY_B), 600);
    // Holder of pid 600's key seals a frame claiming pid 601.
    let forged = varta_vlp::seal_master_with_agent_key(&agent_key, 600, [1; 8], 0, &plain(601, 1));
    s.send(&forged).unwrap();
    sync(&obs, &s, &master(&KEY_B, 602, 1, 0, 1), 602);
    let mismatch = obs.of_kind("mismatch", Some(601));
    assert_eq!(mismatch.len(), 1, "{:?}", obs.lines());
    assert_eq!(mismatch[0][5], "auth_failure");
    assert!(obs.of_kind("beat", Some(600)).is_empty());
    assert!(obs.of_kind("beat", Some(601)).is_empty());
}

#[test]
fn a_recycled_pid_starting_a_new_session_after_silence_is_accepted() {
    let (obs, addr) = secure_observer(300, "--key-file", &[KEY_A]);
    let s = sender(addr);
    for n in 1..=5 {
        s.send(&shared(&KEY_A, 8080, 1, n as u32, n)).unwrap();
    }
    wait_count(&obs, "beat", Some(8080), 5);
    // Too soon: a new prefix with nonce 1 is a replay.
    s.send(&shared(&KEY_A, 8080, 2, 0, 1)).unwrap();
    obs.wait_until("early restart refused", || {
        obs.of_kind("rejected", Some(8080))
            .iter()
            .any(|l| l[5] == "replay")
    });
    obs.wait_for("stall", Some(8080));
    // A new process on the same pid: fresh prefix, nonce from 1.
    s.send(&shared(&KEY_A, 8080, 3, 0, 1)).unwrap();
    obs.wait_for("new_life", Some(8080));
    obs.wait_for("recovered", Some(8080));
    s.send(&shared(&KEY_A, 8080, 3, 1, 2)).unwrap();
    wait_count(&obs, "beat", Some(8080), 7);
    // The old session's datagrams stay refused.
    s.send(&shared(&KEY_A, 8080, 1, 5, 5)).unwrap();
    obs.wait_until("old session refused", || {
        obs.of_kind("rejected", Some(8080))
            .iter()
            .filter(|l| l[5] == "replay")
            .count()
            == 2
    });
}

#[test]
fn key_rotation_by_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_keys(dir.path(), "udp.key", &[KEY_A]);
    let accepted = write_keys(dir.path(), "accepted.keys", &[KEY_A]);
    let file_s = file.display().to_string();
    let accepted_s = accepted.display().to_string();
    let obs = Observer::start_in(
        dir,
        &[
            "--udp-port",
            "0",
            "--key-file",
            &file_s,
            "--accepted-key-file",
            &accepted_s,
        ],
    );
    let addr = obs.udp_addr();
    let s = sender(addr);
    sync(&obs, &s, &shared(&KEY_A, 100, 1, 0, 1), 100);
    assert!(obs.of_kind("decrypt_failure", None).is_empty());
    let dir = obs.dir.path();
    let reloads = |obs: &Observer| obs.stderr().matches("UDP keys re-read").count();

    // Step 1: both keys accepted during the rotation.
    write_keys(dir, "accepted.keys", &[KEY_A, KEY_B]);
    obs.signal(nix::sys::signal::Signal::SIGHUP);
    obs.wait_until("first reload", || reloads(&obs) == 1);
    sync(&obs, &s, &shared(&KEY_B, 101, 1, 0, 1), 101);
    sync(&obs, &s, &shared(&KEY_A, 102, 1, 0, 1), 102);

    // Step 2: the old key is removed everywhere.
    write_keys(dir, "udp.key", &[KEY_B]);
    write_keys(dir, "accepted.keys", &[KEY_B]);
    obs.signal(nix::sys::signal::Signal::SIGHUP);
    obs.wait_until("second reload", || reloads(&obs) == 2);
    s.send(&shared(&KEY_A, 103, 1, 0, 1)).unwrap();
    sync(&obs, &s, &shared(&KEY_B, 104, 1, 0, 1), 104);
    assert!(obs.of_kind("beat", Some(103)).is_empty());
    assert_eq!(obs.of_kind("decrypt_failure", None).len(), 1);

    // Step 3: a malformed key file keeps the current keys, and the log
    // shows no key material.
    std::fs::write(dir.join("udp.key"), format!("{}zz\n", &hex(&KEY_A)[..62])).unwrap();
    obs.signal(nix::sys::signal::Signal::SIGHUP);
    obs.wait_until("failed reload logged", || {
        obs.stderr().contains("reload failed")
    });
    sync(&obs, &s, &shared(&KEY_B, 105, 1, 0, 1), 105);
    let log = obs.stderr();
    assert!(!log.contains(&hex(&KEY_A)[..62]), "key material in the log");
    assert!(!log.contains(&hex(&KEY_B)), "key material in the log");
}

#[test]
fn a_full_sender_table_refuses_new_senders_and_keeps_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_keys(dir.path(), "udp.key", &[KEY_A]);
    let obs = Observer::start_in(
        dir,
        &[
            "--udp-port",
            "0",
            "--key-file",
            file.to_str().unwrap(),
            "--udp-sender-capacity",
            "2",
        ],
    );
    let s = sender(obs.udp_addr());
    sync(&obs, &s, &shared(&KEY_A, 201, 1, 0, 1), 201);
    sync(&obs, &s, &shared(&KEY_A, 202, 1, 0, 1), 202);
    s.send(&shared(&KEY_A, 203, 1, 0, 1)).unwrap();
    obs.wait_for("sender_state_full", Some(203));
    // The two known senders keep beating.
    s.send(&shared(&KEY_A, 201, 1, 1, 2)).unwrap();
    s.send(&shared(&KEY_A, 202, 1, 1, 2)).unwrap();
    wait_count(&obs, "beat", Some(201), 2);
    wait_count(&obs, "beat", Some(202), 2);
    assert!(obs.of_kind("beat", Some(203)).is_empty());
}

#[test]
fn a_udp_sender_cannot_take_over_a_pid_tracked_over_the_unix_socket() {
    let (obs, addr) = observer(
        60_000,
        &["--i-accept-plaintext-udp", "--udp-bind-addr", "127.0.0.1"],
    );
    let agent = common::spawn_agent("beat", &obs.socket, 20);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    let s = sender(addr);
    s.send(&plain(pid, 1 << 40)).unwrap();
    obs.wait_until("origin conflict", || {
        obs.of_kind("mismatch", Some(pid))
            .iter()
            .any(|l| l[5] == "origin_conflict")
    });
}

#[test]
fn secure_udp_agent_is_recovered_only_with_the_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_keys(dir.path(), "udp.key", &[KEY_A]);
    let marker = dir.path().join("recovered");
    let cmd = format!("/usr/bin/touch {}.{{pid}}", marker.display());
    let obs = Observer::start_in(
        dir,
        &[
            "--threshold-ms",
            "200",
            "--udp-port",
            "0",
            "--key-file",
            file.to_str().unwrap(),
            "--recovery-exec",
            &cmd,
            "--secure-udp-i-accept-recovery-on-unauthenticated-transport",
        ],
    );
    let s = sender(obs.udp_addr());
    s.send(&shared(&KEY_A, 3131, 1, 0, 1)).unwrap();
    obs.wait_for("stall", Some(3131));
    let done = obs.dir.path().join("recovered.3131");
    obs.wait_until("recovery command ran", || done.exists());

    // Without the opt-in the same setup does not start.
    let dir = tempfile::tempdir().unwrap();
    let file = write_keys(dir.path(), "udp.key", &[KEY_A]);
    let out = common::run(&[
        "--socket",
        dir.path().join("s.sock").to_str().unwrap(),
        "--udp-port",
        "0",
        "--key-file",
        file.to_str().unwrap(),
        "--recovery-exec",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--secure-udp-i-accept-recovery-on-unauthenticated-transport"),
        "{err}"
    );
}

#[test]
fn udp_without_keys_or_acknowledgement_is_a_clear_startup_error() {
    let out = common::run(&["--udp-port", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--key-file") && err.contains("--i-accept-plaintext-udp"));
}
