//! The real `varta` binary: error lines and exit codes when the observer
//! cannot be reached, `frame decode` for every decode error kind and for
//! legal plaintext and sealed frames, completions and man pages.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use varta_vlp::{crc32c, seal_master, seal_shared, Frame, Key, Status, FRAME_LEN};

fn varta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(args)
        .env_remove("VARTA_CONTROL_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status_with(socket: &Path) -> Output {
    varta(&["--control-socket", socket.to_str().unwrap(), "status"])
}

// ---- reaching the observer ------------------------------------------------

#[test]
fn missing_socket_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("varta.ctl");
    for cmd in [
        vec!["status"],
        vec!["agents"],
        vec!["agent", "42"],
        vec!["events"],
        vec!["reload"],
    ] {
        let mut args = vec!["--control-socket", path.to_str().unwrap()];
        args.extend(cmd.iter());
        let out = varta(&args);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "varta: cannot reach the observer at {}: no such file (is varta-watch running? set --control-socket or VARTA_CONTROL_SOCKET)\n",
                path.display()
            ),
            "{cmd:?}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn stale_socket_and_plain_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.ctl");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let file = dir.path().join("file.ctl");
    std::fs::write(&file, "").unwrap();
    for path in [stale, file] {
        let out = status_with(&path);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            text(&out.stderr),
            format!(
                "varta: cannot reach the observer at {}: connection refused, nobody is listening (a stale socket or not a socket: is varta-watch running?)\n",
                path.display()
            )
        );
    }
}

#[test]
fn permission_denied_is_one_line() {
    // As root every permission check passes, so the CLI runs as `nobody`
    // (setpriv) against a socket inside a root-only directory. Skipped when
    // not root or without setpriv.
    let is_root = varta_vlp::effective_uid() == Some(0);
    let setpriv = Command::new("setpriv").arg("--version").output();
    if !is_root || setpriv.map_or(true, |o| !o.status.success()) {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The tempdir itself must be searchable by nobody.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = private.join("varta.ctl");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_varta"))
        .args(["--control-socket", sock.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "varta: cannot reach the observer at {}: permission denied (the control socket is mode 0600: run as the observer's user, e.g. with sudo)\n",
            sock.display()
        )
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(varta(&["status", "--bogus"]).status.code(), Some(2));
    assert_eq!(varta(&["agent", "notapid"]).status.code(), Some(2));
    assert_eq!(varta(&["--color", "pink", "status"]).status.code(), Some(2));
    assert_eq!(
        varta(&["--timeout-ms", "0", "status"]).status.code(),
        Some(2)
    );
}

#[test]
fn default_socket_is_varta_ctl_beside_the_beat_socket() {
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("status")
        .env_remove("VARTA_CONTROL_SOCKET")
        .env("XDG_RUNTIME_DIR", "/nonexistent-varta-test")
        .output()
        .unwrap();
    let expected = varta_vlp::default_socket_path().with_file_name("varta.ctl");
    // As root the observer's default ignores XDG_RUNTIME_DIR (/run/varta).
    let expected = if varta_vlp::effective_uid() == Some(0) {
        expected
    } else {
        Path::new("/nonexistent-varta-test/varta.ctl").to_path_buf()
    };
    assert!(
        text(&out.stderr).contains(&format!("observer at {}:", expected.display())),
        "{}",
        text(&out.stderr)
    );
}

// ---- frame decode -------------------------------------------------------

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../varta-vlp/tests/data/vlp-vectors-public.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode(args: &[&str]) -> Output {
    let mut all = vec!["frame", "decode"];
    all.extend(args);
    varta(&all)
}

/// A frame with its CRC recomputed after editing.
fn with_crc(mut b: [u8; FRAME_LEN]) -> [u8; FRAME_LEN] {
    let crc = crc32c(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn conformance_vectors_decode_as_pinned() {
    let v = vectors();
    for fv in v["frame_vectors"].as_array().unwrap() {
        let id = fv["id"].as_str().unwrap();
        let wire = fv["expected_wire_hex"]
            .as_str()
            .or(fv["wire_hex"].as_str())
            .unwrap();
        let out = decode(&[wire]);
        match fv["expected_decode_error"].as_str() {
            None => {
                assert_eq!(out.status.code(), Some(0), "{id}: {}", text(&out.stderr));
                assert!(text(&out.stdout).contains("legal"), "{id}");
            }
            Some(variant) => {
                assert_eq!(out.status.code(), Some(1), "{id}");
                let err = text(&out.stderr);
                assert!(err.contains(&format!("({variant}) at ")), "{id}: {err}");
                assert_eq!(err.lines().count(), 1, "{id}: {err}");
            }
        }
    }
}

#[test]
fn every_decode_error_kind_names_its_bytes() {
    let ok = Frame::new(Status::Ok, 4242, 10, 1, 7).to_bytes();
    let mut bad_magic = ok;
    bad_magic[0] = 0;
    let mut bad_version = ok;
    bad_version[2] = 1;
    let mut bad_crc = ok;
    bad_crc[28] ^= 0xff;
    let mut bad_status = ok;
    bad_status[3] = 9;
    let mut stall = ok;
    stall[3] = 3;
    let cases: [(&str, [u8; FRAME_LEN], &str); 8] = [
        ("bad_magic (BadMagic)", bad_magic, "byte 0"),
        ("bad_version (BadVersion)", bad_version, "byte 2"),
        ("bad_crc (BadCrc)", bad_crc, "bytes 28..32"),
        ("bad_status (BadStatus)", with_crc(bad_status), "byte 3"),
        ("stall_on_wire (StallOnWire)", with_crc(stall), "byte 3"),
        (
            "bad_pid (BadPid)",
            Frame::new(Status::Ok, 1, 10, 1, 7).to_bytes(),
            "bytes 4..8",
        ),
        (
            "bad_timestamp (BadTimestamp)",
            Frame::new(Status::Ok, 5, u64::MAX, 1, 7).to_bytes(),
            "bytes 8..16",
        ),
        (
            "bad_nonce (BadNonce)",
            Frame::new(Status::Degraded, 5, 10, u64::MAX, 7).to_bytes(),
            "bytes 16..24 and byte 3",
        ),
    ];
    for (kind, frame, at) in cases {
        let out = decode(&[&hex(&frame)]);
        assert_eq!(out.status.code(), Some(1), "{kind}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("varta: frame decode failed: {kind} at {at}: ")),
            "{kind}: {err}"
        );
        assert!(
            text(&out.stdout).contains("<- here"),
            "{kind} marks the field"
        );
    }
}

#[test]
fn legal_frames_with_separators_and_stdin() {
    let term = "56 41 02 02:02 00 00 00 e7 03 00 00 00 00 00 00 ff ff ff ff ff ff ff ff 00 00 00 00 a2 99 ee ed";
    let out = decode(&[term]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("legal terminal (dying-gasp) frame"), "{s}");
    assert!(s.contains("u64::MAX (terminal)"), "{s}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(["frame", "decode", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"0x5641020139300000d2029649000000006400000000000000efbeadde7bbc775f\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(
        s.contains("1 = degraded") && s.contains("12345") && s.contains("0xdeadbeef"),
        "{s}"
    );
}

#[test]
fn bad_hex_and_wrong_length() {
    let out = decode(&["5641zz"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "varta: frame decode failed: bad_hex at input character 4: 'z' is not a hex digit\n"
    );
    let out = decode(&["564"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("bad_hex at hex digit 3: odd number"));
    let out = decode(&["5641020002"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("varta: frame decode failed: wrong_length at byte 5"));
}

fn key_file(dir: &Path, name: &str, hex_key: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{hex_key}\n")).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn sealed_frames_open_with_their_key() {
    let v = vectors();
    let sv = &v["secure_frame_vectors"][0];
    let dir = tempfile::tempdir().unwrap();
    let shared = key_file(dir.path(), "shared.key", sv["key_hex"].as_str().unwrap());
    let wire = sv["expected_wire_hex"].as_str().unwrap();

    let out = decode(&["--key-file", &shared, wire]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "60-byte shared-key sealed frame",
        "0..8    iv_random   1122334455667788",
        "tag verified; decrypted inner frame:",
        "  4..8    pid        02000000          2",
        "legal frame",
    ] {
        assert!(s.contains(needle), "{needle:?} not in\n{s}");
    }

    // Without a key: the layout, and a request for one.
    let out = decode(&[wire]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no_key"),
        "{}",
        text(&out.stderr)
    );

    // A flipped ciphertext bit fails the tag.
    let mut bytes: Vec<u8> = (0..wire.len() / 2)
        .map(|i| u8::from_str_radix(&wire[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    bytes[20] ^= 1;
    let out = decode(&["--key-file", &shared, &hex(&bytes)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(
            "varta: frame decode failed: aead_bad_tag (AuthError::BadTag) at bytes 44..60: "
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn master_sealed_frames_and_inner_decode_errors() {
    let dir = tempfile::tempdir().unwrap();
    let master_hex = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
    let master = key_file(dir.path(), "master.key", master_hex);
    let key = Key::from_hex(master_hex).unwrap();
    let plain = Frame::new(Status::Ok, 4242, 10, 1, 7).to_bytes();
    let sealed = seal_master(&key, 4242, [9; 8], 3, &plain);

    let out = decode(&["--master-key-file", &master, &hex(&sealed)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("64-byte master-key sealed frame"), "{s}");
    assert!(s.contains("0..4    agent_pid   92100000"), "{s}");
    assert!(s.contains("12..16  iv_counter  03000000"), "{s}");
    assert!(s.contains("4242"), "{s}");

    // A master-layout frame opened with a shared key file is refused.
    let out = decode(&["--key-file", &master, &hex(&sealed)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("give --master-key-file"));

    // Sealed pid 4242 inside, 4243 in clear: the tag fails (pid is the AD).
    let mut tampered = sealed;
    tampered[0] = 0x93;
    let out = decode(&["--master-key-file", &master, &hex(&tampered)]);
    assert!(
        text(&out.stderr).contains("aead_bad_tag"),
        "{}",
        text(&out.stderr)
    );

    // A sealed illegal frame: the tag holds, the inner decode names the error.
    let inner = Frame::new(Status::Ok, 4242, u64::MAX, 1, 7).to_bytes();
    let shared_key = Key::from_hex(master_hex).unwrap();
    let sealed = seal_shared(&shared_key, [1; 8], 0, &inner);
    let out = decode(&["--key-file", &master, &hex(&sealed)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad_timestamp (BadTimestamp) at inner frame bytes 8..16"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unreadable_key_file_exits_2() {
    let out = decode(&["--key-file", "/nonexistent/key", "00"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("varta: cannot read the key file /nonexistent/key"));
}

// ---- completions and man --------------------------------------------------

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = varta(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let s = text(&out.stdout);
        assert!(s.contains("status") && s.contains("frame"), "{shell}");
    }
    assert_eq!(varta(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn man_page_on_stdout_and_per_subcommand() {
    let out = varta(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.starts_with(".ie") || s.contains(".TH varta 1"), "{s}");
    assert!(s.contains(".TH varta 1"), "{s}");
    let dir = tempfile::tempdir().unwrap();
    let out = varta(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in [
        "varta.1",
        "varta-status.1",
        "varta-agents.1",
        "varta-agent.1",
        "varta-events.1",
        "varta-reload.1",
        "varta-frame-decode.1",
        "varta-audit-verify.1",
        "varta-keygen.1",
    ] {
        let body = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(body.contains(".TH"), "{page}");
    }
}

#[test]
fn socket_option_derives_the_control_socket() {
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(["--socket", "/nonexistent-varta/beat.sock", "status"])
        .env("VARTA_CONTROL_SOCKET", "/elsewhere/varta.ctl")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("observer at /nonexistent-varta/beat.ctl:"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args([
            "status",
            "--control-socket",
            "/x/a.ctl",
            "--socket",
            "/y/b.sock",
        ])
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains("observer at /x/a.ctl:"));
}
