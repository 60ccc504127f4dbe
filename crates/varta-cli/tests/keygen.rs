//! `varta keygen` end to end: the real binary writes key files that the
//! observer's secret-file rules accept, never overwrites or follows a
//! symlink by accident, and fails with one clear line.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use varta_audit::secret_file::{decode_hex_32, read_secret_file, strip_line_end};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn keygen(args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("keygen")
        .args(args)
        .output()
        .expect("run varta");
    Run {
        code: o.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_lower_hex_key(line: &str) -> bool {
    line.len() == 65
        && line.ends_with('\n')
        && line[..64]
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Asserts a failure: exit 1, nothing on stdout, exactly one stderr line
/// starting `varta: error:` and containing `needle`.
fn assert_one_line_error(r: &Run, needle: &str) {
    assert_eq!(r.code, 1, "stderr: {}", r.stderr);
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "stderr: {}", r.stderr);
    assert!(r.stderr.starts_with("varta: error: "), "{}", r.stderr);
    assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn writes_a_0600_hex_key_the_secret_file_rules_accept() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.key");
    let r = keygen(&[s(&p)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The key goes to the file only.
    assert!(
        r.stdout.is_empty() && r.stderr.is_empty(),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(mode(&p), 0o600);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(is_lower_hex_key(&text), "{text:?}");
    let content = read_secret_file(&p).expect("observer rules accept the file");
    let key = decode_hex_32(strip_line_end(&content)).expect("64 hex characters");
    assert_ne!(key, [0u8; 32]);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn two_runs_give_different_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert_eq!(keygen(&[s(&a)]).code, 0);
    assert_eq!(keygen(&[s(&b)]).code, 0);
    assert_ne!(
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap()
    );
}

#[test]
fn existing_file_is_kept_without_force_and_replaced_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prom.token");
    std::fs::write(&p, "old\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();

    let r = keygen(&[s(&p)]);
    assert_one_line_error(&r, "--force");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");

    let r = keygen(&["--force", s(&p)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.is_empty() && r.stderr.is_empty());
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(is_lower_hex_key(&text), "{text:?}");
    // The replacement is a new 0600 file, not the old 0644 one rewritten.
    assert_eq!(mode(&p), 0o600);
    read_secret_file(&p).expect("observer rules accept the replacement");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // --force also just creates a file that is not there yet.
    let fresh = dir.path().join("fresh");
    assert_eq!(keygen(&["--force", s(&fresh)]).code, 0);
    assert_eq!(mode(&fresh), 0o600);
}

#[test]
fn symlink_is_refused_even_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::write(&real, "old\n").unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    let dangling = dir.path().join("dangling");
    symlink(dir.path().join("nowhere"), &dangling).unwrap();

    for args in [
        vec![s(&link)],
        vec!["--force", s(&link)],
        vec![s(&dangling)],
        vec!["--force", s(&dangling)],
    ] {
        let r = keygen(&args);
        assert_one_line_error(&r, "symlink");
    }
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "old\n");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn missing_directory_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-dir").join("k");
    for args in [vec![s(&p)], vec!["--force", s(&p)]] {
        let r = keygen(&args);
        assert_one_line_error(&r, "does not exist");
        assert!(r.stderr.contains("no-such-dir"), "{}", r.stderr);
    }
}

#[test]
fn dash_prints_the_key_to_stdout_only() {
    let r = keygen(&["-"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert!(is_lower_hex_key(&r.stdout), "{:?}", r.stdout);
    assert!(decode_hex_32(strip_line_end(r.stdout.as_bytes())).is_some());
    assert_ne!(keygen(&["-"]).stdout, r.stdout);
}

#[test]
fn help_names_every_option_the_key_is_for() {
    let o = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(["keygen", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    // clap may wrap lines; compare with whitespace collapsed.
    let help = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for opt in [
        "--key-file",
        "--accepted-key-file",
        "--master-key-file",
        "--prom-token-file",
        "--recovery-audit-key-file",
        "varta keygen - >>",
        "0600",
    ] {
        assert!(help.contains(opt), "{opt} missing from help: {help}");
    }
}
