//! A child process that panics sends one terminal frame, before the
//! previously installed hook runs.

mod support;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use support::{spawn_guarded, FakeObserver};
use varta_client::{Status, NONCE_TERMINAL};

const CHILD_ENV: &str = "VARTA_TEST_PANIC_CHILD_SOCKET";

/// Child mode: only does something when spawned by the test below.
#[test]
fn panicking_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    // The "previous" hook: proves ordering by sending a 1-byte marker after
    // the terminal frame went out.
    let marker_path = path.clone();
    std::panic::set_hook(Box::new(move |_| {
        let s = UnixDatagram::unbound().unwrap();
        let _ = s.send_to(b"P", &marker_path);
        eprintln!("previous hook ran");
    }));
    varta_client::install_panic_handler(&path).expect("install");
    panic!("deliberate test panic");
}

#[test]
fn terminal_frame_arrives_before_previous_hook() {
    let obs = FakeObserver::bind();
    // The guard kills and reaps the child however this test ends.
    let mut child = spawn_guarded(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panicking_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &obs.path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "child did not panic");
    assert!(stderr.contains("previous hook ran"), "{stderr}");

    let mut buf = [0u8; 64];
    let n = obs.sock.recv(&mut buf).unwrap();
    assert_eq!(n, 32, "first datagram must be the terminal frame");
    let f = varta_vlp::Frame::decode(buf[..32].try_into().unwrap()).unwrap();
    assert!(f.is_terminal());
    assert_eq!((f.status, f.nonce), (Status::Critical, NONCE_TERMINAL));
    assert_ne!(f.pid, std::process::id(), "frame carries the child's pid");
    let n = obs.sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"P");
}

#[test]
fn install_fails_cleanly_without_observer() {
    let dir = tempfile::tempdir().unwrap();
    let err = varta_client::install_panic_handler(dir.path().join("none.sock")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
