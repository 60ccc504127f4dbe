//! Invalid configuration: exit code 2 and a message naming the flag.

mod common;

use common::run;

fn fails_naming(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: {err}");
    assert!(
        err.contains(needle),
        "args {args:?}: stderr lacks {needle:?}: {err}"
    );
}

#[test]
fn invalid_values_exit_2_naming_the_flag() {
    fails_naming(&["--threshold-ms", "5"], "--threshold-ms");
    fails_naming(&["--threshold-ms", "abc"], "--threshold-ms");
    fails_naming(&["--tracker-capacity", "0"], "--tracker-capacity");
    fails_naming(&["--tracker-capacity", "4194305"], "--tracker-capacity");
    fails_naming(
        &["--tracker-eviction-policy", "random"],
        "--tracker-eviction-policy",
    );
    fails_naming(&["--socket-mode", "999"], "--socket-mode");
    fails_naming(&["--clock-source", "sundial"], "--clock-source");
    fails_naming(&["--export-format", "xml"], "--export-format");
    fails_naming(&["--no-such-flag"], "--no-such-flag");
}

#[test]
fn bad_config_file_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("v.toml");
    std::fs::write(&f, "threshold-ms = 3\n").unwrap();
    fails_naming(&["--config", f.to_str().unwrap()], "threshold-ms");
    std::fs::write(&f, "bogus-key = 1\n").unwrap();
    fails_naming(&["--config", f.to_str().unwrap()], "bogus-key");
    fails_naming(
        &["--config", "/nonexistent/varta.toml"],
        "/nonexistent/varta.toml",
    );
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--socket",
        "--threshold-ms",
        "--tracker-capacity",
        "--export-file",
        "--read-timeout-ms",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn original_flags_are_accepted_with_warnings() {
    // Meaningless here but accepted: the daemon starts (and we stop it).
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let out = run(&[
        "--socket",
        sock.to_str().unwrap(),
        "--threshold-ms",
        "1000",
        "--read-timeout-ms",
        "100",
        "--eviction-scan-window",
        "64",
        "--shutdown-after-secs",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("--read-timeout-ms"), "{err}");
}

#[test]
fn bind_failure_exits_1() {
    let out = run(&["--socket", "/nonexistent-dir/x/obs.sock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
