//! Tests for flag parsing, the config file, validation, reload and diff.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::cli::{self, COMPAT, H_DETECTION, H_EXPORT, H_LATER, H_LIFECYCLE, H_LISTENER};
use super::cli::{H_NO_EFFECT, H_TRACKER};
use super::watchdog::H_WATCHDOG;
use super::*;

fn argv(list: &[&str]) -> Vec<OsString> {
    std::iter::once("varta-watch")
        .chain(list.iter().copied())
        .map(OsString::from)
        .collect()
}

fn run(list: &[&str]) -> Config {
    match load(argv(list)) {
        Ok(Loaded::Run(c)) => c,
        other => panic!("expected a runnable config for {list:?}, got {other:?}"),
    }
}

fn fail(list: &[&str]) -> ConfigError {
    match load(argv(list)) {
        Err(e) => e,
        Ok(other) => panic!("expected an error for {list:?}, got {other:?}"),
    }
}

fn help_text() -> String {
    match load(argv(&["--help"])) {
        Ok(Loaded::Help(text)) => text,
        other => panic!("expected help, got {other:?}"),
    }
}

/// A config file in a fresh temporary directory (kept alive by the guard).
fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("varta.toml");
    fs::write(&path, contents).expect("write config file");
    (dir, path)
}

fn with_file(path: &Path, list: &[&str]) -> Result<Loaded, ConfigError> {
    let mut args = argv(&["--config"]);
    args.push(path.as_os_str().to_owned());
    args.extend(list.iter().map(OsString::from));
    load(args)
}

fn run_with_file(path: &Path, list: &[&str]) -> Config {
    match with_file(path, list) {
        Ok(Loaded::Run(c)) => c,
        other => panic!("expected a runnable config, got {other:?}"),
    }
}

fn fail_with_file(path: &Path, list: &[&str]) -> ConfigError {
    match with_file(path, list) {
        Err(e) => e,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

/// Every flag `varta-watch 0.2.0 --help` prints, with a value its users
/// would plausibly pass (`None` for switches).
const ORIGINAL_FLAGS: &[(&str, Option<&str>)] = &[
    ("--socket", Some("/tmp/varta-test.sock")),
    ("--threshold-ms", Some("500")),
    ("--recovery-exec", Some("/bin/kill -HUP {pid}")),
    ("--recovery-exec-file", Some("/etc/varta/recovery.cmd")),
    ("--recovery-debounce-ms", Some("1000")),
    ("--recovery-env", Some("FOO=bar")),
    ("--recovery-inherit-env", None),
    ("--socket-mode", Some("0600")),
    ("--export-file", Some("/var/log/varta.tsv")),
    ("--export-file-max-bytes", Some("1048576")),
    ("--export-file-sync-every", Some("1")),
    ("--prom-addr", Some("127.0.0.1:9100")),
    ("--prom-token-file", Some("/etc/varta/prom.token")),
    ("--shutdown-grace-ms", Some("5000")),
    ("--recovery-timeout-ms", Some("30000")),
    ("--read-timeout-ms", Some("100")),
    ("--tracker-capacity", Some("256")),
    ("--eviction-scan-window", Some("256")),
    ("--tracker-eviction-policy", Some("balanced")),
    ("--clock-source", Some("boottime")),
    ("--signal-handler-mode", Some("direct")),
    ("--shutdown-after-secs", Some("60")),
    ("--udp-port", Some("9999")),
    ("--udp-bind-addr", Some("127.0.0.1")),
    ("--key-file", Some("/etc/varta/key")),
    ("--accepted-key-file", Some("/etc/varta/keys")),
    ("--master-key-file", Some("/etc/varta/master.key")),
    ("--max-beat-rate", Some("100")),
    ("--global-beat-rate", Some("5000")),
    ("--global-beat-burst", Some("10000")),
    ("--uds-rcvbuf-bytes", Some("1048576")),
    ("--heartbeat-file", Some("/run/varta/heartbeat")),
    ("--self-watchdog-secs", Some("4")),
    ("--hw-watchdog", Some("/dev/watchdog")),
    ("--prom-rate-limit-per-sec", Some("5")),
    ("--prom-rate-limit-burst", Some("10")),
    ("--i-accept-plaintext-udp", None),
    ("--i-accept-secure-udp-non-loopback", None),
    (
        "--secure-udp-i-accept-recovery-on-unauthenticated-transport",
        None,
    ),
    (
        "--plaintext-udp-i-accept-recovery-on-unauthenticated-transport",
        None,
    ),
    ("--allow-cross-namespace-agents", None),
    ("--strict-namespace-check", None),
    ("--recovery-audit-file", Some("/var/log/varta-audit.tsv")),
    ("--recovery-audit-max-bytes", Some("10485760")),
    ("--recovery-audit-sync-every", Some("1")),
    ("--audit-fsync-budget-ms", Some("50")),
    ("--audit-sync-interval-ms", Some("0")),
    ("--audit-rotation-budget-ms", Some("50")),
    ("--recovery-capture-stdio", None),
    ("--recovery-capture-bytes", Some("4096")),
    ("--iteration-budget-ms", Some("250")),
    ("--scrape-budget-ms", Some("250")),
];

/// Original flags that mean nothing in the event-driven design.
const NO_EFFECT_FLAGS: &[&str] = &[
    "--read-timeout-ms",
    "--eviction-scan-window",
    "--signal-handler-mode",
    "--iteration-budget-ms",
    "--scrape-budget-ms",
    "--audit-fsync-budget-ms",
    "--audit-rotation-budget-ms",
    "--audit-sync-interval-ms",
];

/// Original flags for features a later release implements (none left).
const LATER_FLAGS: &[&str] = &[];

fn original_args<'a>(flags: &[(&'a str, Option<&'a str>)]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for (flag, value) in flags {
        out.push(*flag);
        out.extend(value.iter().copied());
    }
    out
}

fn warnings_for(config: &Config, flag: &str) -> Vec<String> {
    let prefix = format!("{flag} ");
    config
        .warnings
        .iter()
        .filter(|w| w.starts_with(&prefix))
        .cloned()
        .collect()
}

#[test]
fn defaults_with_no_flags() {
    let config = run(&[]);
    let mut expected = Config::with_socket(varta_vlp::default_socket_path());
    expected.argv = argv(&[]);
    assert_eq!(config, expected);
    assert!(config.warnings.is_empty());
    assert_eq!(config.config_file, None);
}

#[test]
fn every_implemented_flag_maps_to_config() {
    let config = run(&[
        "--socket",
        "/tmp/v/obs.sock",
        "--socket-mode",
        "0640",
        "--threshold-ms",
        "2500",
        "--uds-rcvbuf-bytes",
        "0",
        "--tracker-capacity",
        "1024",
        "--tracker-eviction-policy",
        "balanced",
        "--max-beat-rate",
        "0",
        "--global-beat-rate",
        "700",
        "--global-beat-burst",
        "900",
        "--clock-source",
        "boottime",
        "--export-file",
        "/tmp/v/events.jsonl",
        "--export-format",
        "json",
        "--no-export-beats",
        "--export-file-max-bytes",
        "4096",
        "--export-file-sync-every",
        "10",
        "--shutdown-after-secs",
        "30",
        "--allow-cross-namespace-agents",
        "--strict-namespace-check",
        "--log-format",
        "json",
        "--heartbeat-file",
        "/tmp/v/hb",
        "--self-watchdog-secs",
        "7",
        "--hw-watchdog",
        "/dev/watchdog0",
    ]);
    assert_eq!(
        config.watchdog,
        WatchdogConfig {
            heartbeat_file: Some(PathBuf::from("/tmp/v/hb")),
            self_watchdog: Some(Duration::from_secs(7)),
            hw_watchdog: Some(PathBuf::from("/dev/watchdog0")),
        }
    );
    assert_eq!(config.socket, PathBuf::from("/tmp/v/obs.sock"));
    assert_eq!(config.socket_mode, 0o640);
    assert_eq!(config.threshold, Duration::from_millis(2500));
    assert_eq!(config.uds_rcvbuf_bytes, 0);
    assert_eq!(config.tracker_capacity, 1024);
    assert_eq!(config.eviction_policy, EvictionPolicy::Balanced);
    assert_eq!(config.max_beat_rate, 0);
    assert_eq!(config.global_beat_rate, 700);
    assert_eq!(config.global_beat_burst, 900);
    assert_eq!(config.clock_source, ClockSource::Boottime);
    assert_eq!(
        config.export,
        Some(ExportConfig {
            path: PathBuf::from("/tmp/v/events.jsonl"),
            format: ExportFormat::Json,
            beats: false,
            max_bytes: Some(4096),
            sync_every: 10,
        })
    );
    assert_eq!(config.shutdown_after, Some(Duration::from_secs(30)));
    assert!(config.allow_cross_namespace_agents);
    assert!(config.strict_namespace_check);
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn export_defaults_when_only_the_file_is_given() {
    let config = run(&["--export-file", "/tmp/v/events.tsv"]);
    assert_eq!(
        config.export,
        Some(ExportConfig {
            path: PathBuf::from("/tmp/v/events.tsv"),
            format: ExportFormat::Tsv,
            beats: true,
            max_bytes: None,
            sync_every: 0,
        })
    );
}

#[test]
fn socket_mode_accepts_every_octal_spelling() {
    for (spelling, mode) in [
        ("600", 0o600),
        ("0600", 0o600),
        ("0o600", 0o600),
        ("0O640", 0o640),
        ("0", 0),
        ("777", 0o777),
        ("0000777", 0o777),
    ] {
        assert_eq!(
            run(&["--socket-mode", spelling]).socket_mode,
            mode,
            "{spelling}"
        );
    }
}

#[test]
fn repeated_flag_takes_the_last_value_like_the_original() {
    let config = run(&["--threshold-ms", "100", "--threshold-ms", "200"]);
    assert_eq!(config.threshold, Duration::from_millis(200));
}

#[test]
fn recovery_env_is_repeatable_and_keeps_order() {
    let config = run(&[
        "--recovery-exec",
        "/bin/true",
        "--recovery-env",
        "A=1",
        "--recovery-env",
        "B=x=y",
    ]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(
        config.recovery.unwrap().env,
        vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
    );
}

#[test]
fn every_range_error_names_flag_value_and_range() {
    let cases: &[(&[&str], &str, &str, &str)] = &[
        (
            &["--threshold-ms", "5"],
            "--threshold-ms",
            "'5'",
            "between 10 and 86400000",
        ),
        (
            &["--threshold-ms", "86400001"],
            "--threshold-ms",
            "'86400001'",
            "between 10 and 86400000",
        ),
        (
            &["--uds-rcvbuf-bytes", "1073741825"],
            "--uds-rcvbuf-bytes",
            "'1073741825'",
            "between 0 and 1073741824",
        ),
        (
            &["--tracker-capacity", "0"],
            "--tracker-capacity",
            "'0'",
            "between 1 and 4194304",
        ),
        (
            &["--tracker-capacity", "4194305"],
            "--tracker-capacity",
            "'4194305'",
            "between 1 and 4194304",
        ),
        (
            &["--max-beat-rate", "1000001"],
            "--max-beat-rate",
            "'1000001'",
            "between 0 and 1000000",
        ),
        (
            &["--global-beat-rate", "4294967296"],
            "--global-beat-rate",
            "'4294967296'",
            "between 0 and 4294967295",
        ),
        (
            &["--global-beat-burst", "4294967296"],
            "--global-beat-burst",
            "'4294967296'",
            "between 0 and 4294967295",
        ),
        (
            &[
                "--export-file",
                "/tmp/e.tsv",
                "--export-file-max-bytes",
                "4095",
            ],
            "--export-file-max-bytes",
            "'4095'",
            "at least 4096",
        ),
        (
            &["--shutdown-after-secs", "0"],
            "--shutdown-after-secs",
            "'0'",
            "between 1 and 315360000",
        ),
        (
            &["--shutdown-after-secs", "315360001"],
            "--shutdown-after-secs",
            "'315360001'",
            "between 1 and 315360000",
        ),
        (
            &["--socket-mode", "1000"],
            "--socket-mode",
            "'1000'",
            "between 0 and 0777",
        ),
        (
            &["--socket-mode", "0o4755"],
            "--socket-mode",
            "'0o4755'",
            "between 0 and 0777",
        ),
        (&["--socket-mode", "689"], "--socket-mode", "'689'", "0777"),
        (&["--socket-mode", "rw"], "--socket-mode", "'rw'", "octal"),
        (&["--socket-mode", ""], "--socket-mode", "''", "octal"),
        (
            &["--clock-source", "monotonic-raw"],
            "--clock-source",
            "'monotonic-raw'",
            "boottime",
        ),
        (
            &["--self-watchdog-secs", "0"],
            "--self-watchdog-secs",
            "'0'",
            "between 1 and 3600",
        ),
        (
            &["--self-watchdog-secs", "3601"],
            "--self-watchdog-secs",
            "'3601'",
            "between 1 and 3600",
        ),
    ];
    for (args, flag, value, range) in cases {
        let e = fail(args);
        let msg = e.to_string();
        assert_eq!(e.exit_code(), 2, "{msg}");
        assert!(msg.contains(flag), "{args:?}: {msg}");
        assert!(msg.contains(value), "{args:?}: {msg}");
        assert!(msg.contains(range), "{args:?}: {msg}");
    }
    assert_eq!(
        fail(&["--threshold-ms", "5"]).to_string(),
        "invalid value '5' for --threshold-ms: must be between 10 and 86400000 milliseconds"
    );
}

#[test]
fn monotonic_raw_is_explained() {
    let msg = fail(&["--clock-source", "monotonic-raw"]).to_string();
    assert!(msg.contains("macOS"), "{msg}");
    assert!(msg.contains("boottime"), "{msg}");
}

#[test]
fn socket_path_longer_than_sun_path_is_rejected() {
    let long = format!("/tmp/{}", "s".repeat(120));
    let msg = fail(&["--socket", &long]).to_string();
    assert!(msg.contains("--socket") && msg.contains("107"), "{msg}");
}

#[test]
fn export_max_bytes_requires_export_file() {
    let e = fail(&["--export-file-max-bytes", "8192"]);
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("--export-file-max-bytes") && msg.contains("--export-file "),
        "{msg}"
    );
}

#[test]
fn export_only_settings_without_export_file_warn() {
    let config = run(&[
        "--export-format",
        "json",
        "--no-export-beats",
        "--export-file-sync-every",
        "3",
    ]);
    assert_eq!(config.export, None);
    for flag in [
        "--export-format",
        "--no-export-beats",
        "--export-file-sync-every",
    ] {
        assert_eq!(
            warnings_for(&config, flag).len(),
            1,
            "{flag}: {:?}",
            config.warnings
        );
    }
}

#[test]
fn burst_without_global_rate_warns() {
    let config = run(&["--global-beat-burst", "50"]);
    assert_eq!(config.global_beat_burst, 50);
    let w = warnings_for(&config, "--global-beat-burst");
    assert_eq!(w.len(), 1, "{:?}", config.warnings);
    assert!(w[0].contains("global beat rate is 0"), "{w:?}");
    assert!(
        run(&["--global-beat-rate", "10", "--global-beat-burst", "50"])
            .warnings
            .is_empty()
    );
}

#[test]
fn parser_errors_are_usage_errors_with_exit_code_2() {
    for args in [
        &["--no-such-flag"][..],
        &["--threshold-ms", "abc"],
        &["--threshold-ms", "-5"],
        &["--threshold-ms"],
        &["--tracker-capacity", "99999999999999999999999"],
        &["--clock-source", "sundial"],
        &["--udp-port", "70000"],
        &["--prom-addr", "localhost:9100"],
        &["--signal-handler-mode", "fancy"],
        &["stray-positional"],
    ] {
        let e = fail(args);
        assert!(matches!(e, ConfigError::Usage(_)), "{args:?}: {e:?}");
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(!msg.starts_with("error:"), "binary adds the prefix: {msg}");
        assert!(!msg.is_empty());
    }
    assert!(fail(&["--no-such-flag"])
        .to_string()
        .contains("--no-such-flag"));
}

#[test]
fn every_original_flag_parses() {
    let exec_dir = tempfile::tempdir().unwrap();
    let exec_file = exec_dir.path().join("recovery.cmd");
    let token = exec_dir.path().join("prom.token");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::write(&token, format!("{}\n", "ab".repeat(32))).unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key = exec_dir.path().join("udp.key");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::write(&key, format!("{}\n", "cd".repeat(32))).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key_str: &'static str = Box::leak(key.display().to_string().into_boxed_str());
    let token_str: &'static str = Box::leak(token.display().to_string().into_boxed_str());
    let exec_file_str: &'static str = Box::leak(exec_file.display().to_string().into_boxed_str());
    // One at a time, so each flag's own warning can be checked in isolation.
    for (flag, value) in ORIGINAL_FLAGS {
        let mut args = vec![*flag];
        args.extend(value.iter().copied());
        // Settings that only mean something alongside another one.
        match *flag {
            "--export-file-max-bytes" | "--export-file-sync-every" => {
                args.extend(["--export-file", "/tmp/e.tsv"])
            }
            "--global-beat-burst" => args.extend(["--global-beat-rate", "10"]),
            "--recovery-exec" => {}
            "--prom-addr" => args.extend(["--prom-token-file", token_str]),
            "--prom-token-file" => {
                args[1] = token_str;
                args.extend(["--prom-addr", "127.0.0.1:9100"]);
            }
            f if f.starts_with("--prom-") => args.extend([
                "--prom-addr",
                "127.0.0.1:9100",
                "--prom-token-file",
                token_str,
            ]),
            "--recovery-exec-file" => {
                use std::os::unix::fs::PermissionsExt;
                fs::write(&exec_file, "/bin/true {pid}\n").unwrap();
                fs::set_permissions(&exec_file, fs::Permissions::from_mode(0o600)).unwrap();
                args[1] = exec_file_str;
            }
            f if f.starts_with("--recovery-audit-") && f != "--recovery-audit-file" => {
                args.extend([
                    "--recovery-audit-file",
                    "/tmp/a.tsv",
                    "--recovery-exec",
                    "/bin/true",
                ])
            }
            "--recovery-capture-bytes" => {
                args.extend(["--recovery-exec", "/bin/true", "--recovery-capture-stdio"])
            }
            // UDP: a listener needs a port plus keys or the plaintext
            // acknowledgement; each flag in the context it is meant for.
            "--udp-port" | "--udp-bind-addr" => {
                args.extend(["--udp-port", "0", "--key-file", key_str])
            }
            "--key-file" | "--accepted-key-file" | "--master-key-file" => {
                args[1] = key_str;
                args.extend(["--udp-port", "0"]);
            }
            "--i-accept-secure-udp-non-loopback" => args.extend([
                "--udp-port",
                "0",
                "--key-file",
                key_str,
                "--udp-bind-addr",
                "0.0.0.0",
            ]),
            "--secure-udp-i-accept-recovery-on-unauthenticated-transport" => args.extend([
                "--udp-port",
                "0",
                "--key-file",
                key_str,
                "--recovery-exec",
                "/bin/true",
            ]),
            "--i-accept-plaintext-udp" => args.extend(["--udp-port", "0"]),
            "--plaintext-udp-i-accept-recovery-on-unauthenticated-transport" => args.extend([
                "--udp-port",
                "0",
                "--i-accept-plaintext-udp",
                "--recovery-exec",
                "/bin/true",
            ]),
            f if f.starts_with("--recovery-") || f == "--shutdown-grace-ms" => {
                args.extend(["--recovery-exec", "/bin/true"])
            }
            _ => {}
        }
        let config = run(&args);
        if *flag == "--recovery-inherit-env" {
            // Passing every secret to children is worth a warning.
            assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
            continue;
        }
        if args.contains(&"--i-accept-plaintext-udp") {
            // The one warning is the loud plaintext one.
            assert_eq!(config.warnings.len(), 1, "{flag}: {:?}", config.warnings);
            assert!(config.warnings[0].starts_with("PLAINTEXT UDP listener"));
            continue;
        }
        let is_compat = NO_EFFECT_FLAGS.contains(flag) || LATER_FLAGS.contains(flag);
        let own = warnings_for(&config, flag);
        if is_compat {
            assert_eq!(own.len(), 1, "{flag}: {:?}", config.warnings);
            assert_eq!(config.warnings.len(), 1, "{flag}: {:?}", config.warnings);
        } else {
            assert!(config.warnings.is_empty(), "{flag}: {:?}", config.warnings);
        }
        if NO_EFFECT_FLAGS.contains(flag) {
            assert!(own[0].contains("has no effect"), "{own:?}");
        }
        if LATER_FLAGS.contains(flag) {
            assert!(
                own[0].contains("not implemented in this build yet"),
                "{own:?}"
            );
        }
    }

    // All together, the way a 0.2.0 unit file with everything set would
    // (less --recovery-exec-file: the original, too, refuses it together
    // with --recovery-exec).
    let all: Vec<(&str, Option<&str>)> = ORIGINAL_FLAGS
        .iter()
        .copied()
        .filter(|(f, _)| *f != "--recovery-exec-file")
        .map(|(f, v)| {
            if f == "--prom-token-file" {
                (f, Some(token_str))
            } else if f.ends_with("key-file") {
                (f, Some(key_str))
            } else {
                (f, v)
            }
        })
        .collect();
    let config = run(&original_args(&all));
    for flag in NO_EFFECT_FLAGS.iter().chain(LATER_FLAGS) {
        assert_eq!(
            warnings_for(&config, flag).len(),
            1,
            "{flag}: {:?}",
            config.warnings
        );
    }
    // Plus the one for --recovery-inherit-env, and two for the plaintext
    // UDP flags that keys make pointless.
    for flag in [
        "--i-accept-plaintext-udp",
        "--plaintext-udp-i-accept-recovery-on-unauthenticated-transport",
    ] {
        assert_eq!(
            warnings_for(&config, flag).len(),
            1,
            "{flag}: {:?}",
            config.warnings
        );
    }
    assert_eq!(
        config.warnings.len(),
        NO_EFFECT_FLAGS.len() + LATER_FLAGS.len() + 3
    );
    let udp = config.udp.expect("udp listener");
    assert!(matches!(udp.security, UdpSecurity::Secure(_)));
    assert_eq!(
        config.recovery.and_then(|r| r.trusted_network_origin),
        Some(crate::AgentOrigin::NetworkVerified)
    );
}

#[test]
fn recovery_exec_builds_a_recovery_config_with_defaults() {
    let config = run(&["--recovery-exec", "/bin/true {pid} ;x"]);
    let r = config.recovery.expect("recovery configured");
    assert_eq!(r.template, "/bin/true {pid} ;x");
    assert_eq!(r.source, CommandSource::Inline);
    assert_eq!(r.debounce, Duration::from_millis(1000));
    assert_eq!(r.timeout, None);
    assert_eq!(r.kill_grace, Duration::from_millis(2000));
    assert_eq!(r.max_attempts, 5);
    assert_eq!(r.window, Duration::from_millis(300_000));
    assert_eq!(r.backoff, Duration::from_millis(1000));
    assert!(!r.capture && !r.inherit_env);
    assert_eq!(r.capture_bytes, 4096);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.shutdown_grace, Duration::from_millis(5000));
    let config = run(&["--read-timeout-ms", "100"]);
    assert_eq!(
        config.warnings,
        ["--read-timeout-ms has no effect: the observer is event-driven and never polls with a read timeout"]
    );
}

#[test]
fn recovery_and_audit_from_the_config_file_and_reload_diff() {
    let (_dir, path) = config_file(
        "recovery-exec = \"/bin/kill -HUP {pid}\"\nrecovery_env = [\"A=1\", \"B=2\"]\nrecovery-max-attempts = 3\nrecovery-audit-file = \"/tmp/x/audit.tsv\"\nshutdown-grace-ms = 1000\n",
    );
    let config = run_with_file(&path, &["--recovery-max-attempts", "4"]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let r = config.recovery.clone().unwrap();
    assert_eq!(r.template, "/bin/kill -HUP {pid}");
    assert_eq!(r.env.len(), 2);
    assert_eq!(r.max_attempts, 4, "the flag wins over the file");
    assert_eq!(config.shutdown_grace, Duration::from_millis(1000));
    assert_eq!(config.audit.as_ref().unwrap().sync_every, 1);
    let (_dir2, path2) = config_file("recovery-exec = \"/bin/kill -TERM {pid}\"\n");
    let other = run_with_file(&path2, &[]);
    let changes = diff(&config, &other);
    assert!(
        changes.iter().any(|c| c.starts_with("recovery: ")),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|c| c.starts_with("recovery-audit: ")),
        "{changes:?}"
    );
    let e = fail_with_file(&path2, &["--recovery-env", "=x"]).to_string();
    assert!(e.contains("--recovery-env"), "{e}");
    let (_dir3, path3) = config_file("recovery-timeout-ms = 5\nrecovery-exec = \"/bin/true\"\n");
    let e = fail_with_file(&path3, &[]).to_string();
    assert!(
        e.contains("recovery-timeout-ms") && e.contains(&path3.display().to_string()),
        "{e}"
    );
}

#[test]
fn missing_recovery_program_is_warned_at_startup() {
    let config = run(&["--recovery-exec", "/nonexistent/restart {pid}"]);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("does not exist"));
    let config = run(&["--recovery-exec", "no-such-program-anywhere {pid}"]);
    assert!(
        config.warnings[0].contains("absolute path"),
        "{:?}",
        config.warnings
    );
    // Found in the children's PATH: fine.
    assert!(run(&["--recovery-exec", "true {pid}"]).warnings.is_empty());
}

#[test]
fn recovery_settings_are_validated_with_the_fix_named() {
    let e = fail(&["--recovery-exec", "/bin/true", "--recovery-exec-file", "/x"]).to_string();
    assert!(e.contains("mutually exclusive"), "{e}");
    let e = fail(&[
        "--recovery-exec",
        "/bin/true",
        "--recovery-timeout-ms",
        "50",
    ])
    .to_string();
    assert!(
        e.contains("--recovery-timeout-ms") && e.contains("between 100"),
        "{e}"
    );
    let e = fail(&["--recovery-exec", "   "]).to_string();
    assert!(e.contains("must name a program"), "{e}");
    let e = fail(&["--recovery-exec", "/bin/true", "--recovery-env", "NOEQUALS"]).to_string();
    assert!(e.contains("KEY=VALUE"), "{e}");
    let e = fail(&[
        "--recovery-exec",
        "/bin/true",
        "--recovery-env",
        "VARTA_EVENT=x",
    ])
    .to_string();
    assert!(e.contains("reserved"), "{e}");
    let e = fail(&["--recovery-exec", "/bin/true", "--shutdown-grace-ms", "99"]).to_string();
    assert!(e.contains("--shutdown-grace-ms"), "{e}");
    let e = fail(&[
        "--recovery-exec",
        "/bin/true",
        "--recovery-capture-bytes",
        "2000000",
    ])
    .to_string();
    assert!(e.contains("1048576"), "{e}");
}

#[test]
fn recovery_exec_file_follows_the_secret_file_rules() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("recovery.cmd");
    std::fs::write(
        &p,
        "# restart the unit\n/usr/bin/systemctl restart app@{pid}\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let arg = p.to_str().unwrap();
    let e = fail(&["--recovery-exec-file", arg]);
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("chmod"), "{e}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(&["--recovery-exec-file", arg]).recovery.unwrap();
    assert_eq!(r.template, "/usr/bin/systemctl restart app@{pid}");
    assert_eq!(r.source, CommandSource::File(p.clone()));
    let link = dir.path().join("link.cmd");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    let e = fail(&["--recovery-exec-file", link.to_str().unwrap()]).to_string();
    assert!(e.contains("symlink"), "{e}");
    std::fs::write(&p, "/bin/a\n/bin/b\n").unwrap();
    let e = fail(&["--recovery-exec-file", arg]).to_string();
    assert!(e.contains("exactly one"), "{e}");
}

#[test]
fn recovery_and_audit_options_without_their_feature_warn() {
    let config = run(&[
        "--recovery-debounce-ms",
        "10",
        "--recovery-audit-sync-every",
        "4",
    ]);
    assert!(config.recovery.is_none());
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("without a recovery command"));
    assert!(config.warnings[1].contains("without an audit file"));
    let config = run(&[
        "--recovery-exec",
        "/bin/true",
        "--recovery-audit-file",
        "/tmp/a.tsv",
        "--recovery-audit-sync-every",
        "4",
        "--recovery-inherit-env",
    ]);
    let a = config.audit.unwrap();
    assert_eq!(a.sync_every, 4);
    assert!(config.warnings.iter().any(|w| w.contains("power cut")));
    assert!(config
        .warnings
        .iter()
        .any(|w| w.contains("whole environment")));
}

#[test]
fn compat_table_covers_exactly_the_compat_flags() {
    let mut table: Vec<String> = COMPAT.iter().map(|f| format!("--{}", f.name)).collect();
    let mut expected: Vec<String> = NO_EFFECT_FLAGS
        .iter()
        .chain(LATER_FLAGS)
        .map(|s| s.to_string())
        .collect();
    table.sort();
    expected.sort();
    assert_eq!(table, expected);
    for f in COMPAT {
        assert_eq!(
            f.later,
            LATER_FLAGS.contains(&format!("--{}", f.name).as_str()),
            "{}",
            f.name
        );
    }
}

#[test]
fn clap_definition_is_consistent() {
    cli::command().debug_assert();
}

#[test]
fn help_is_grouped_and_complete() {
    let help = help_text();
    let headings = [
        H_LISTENER,
        H_DETECTION,
        H_TRACKER,
        H_EXPORT,
        H_WATCHDOG,
        H_LIFECYCLE,
        H_NO_EFFECT,
    ];
    let mut last = 0;
    for heading in headings {
        let at = help
            .find(&format!("{heading}:"))
            .unwrap_or_else(|| panic!("missing heading {heading}:\n{help}"));
        assert!(at >= last, "heading {heading} out of order");
        last = at;
    }
    assert!(help.contains("Listener"));
    assert!(help.contains("Compatibility (no effect in this design)"));
    assert!(!help.contains("Compatibility (accepted, not yet active)"));
    for (flag, _) in ORIGINAL_FLAGS {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{flag} missing from --help"
        );
    }
    for flag in [
        "--config",
        "--export-format",
        "--no-export-beats",
        "--log-format",
        "--help",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(matches!(load(argv(&["-h"])), Ok(Loaded::Help(_))));
}

#[test]
fn implemented_flags_document_default_and_range() {
    let compat_heading = |h: Option<&str>| h == Some(H_NO_EFFECT) || h == Some(H_LATER);
    for arg in cli::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if compat_heading(arg.get_help_heading()) || long == "help" || long == "version" {
            continue;
        }
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        assert!(help.contains("Default"), "--{long}: {help}");
        let numeric = arg.get_value_names().is_some_and(|names| {
            names
                .iter()
                .any(|n| ["MS", "N", "SECS", "OCTAL"].contains(&n.as_str()))
        });
        if numeric {
            assert!(help.contains("Range"), "--{long}: {help}");
        }
    }
}

#[test]
fn version_is_reported() {
    for flag in ["--version", "-V"] {
        match load(argv(&[flag])) {
            Ok(Loaded::Version(text)) => {
                assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}")
            }
            other => panic!("{flag}: {other:?}"),
        }
    }
}

#[test]
fn file_values_apply_and_flags_override_them() {
    let (_dir, path) = config_file(
        r#"
socket = "/tmp/v/file.sock"
socket-mode = "0660"
threshold-ms = 2000
max-beat-rate = 7
tracker-eviction-policy = "balanced"
export-file = "/tmp/v/file.tsv"
no-export-beats = true
allow-cross-namespace-agents = true
log-format = "json"
"#,
    );
    let config = run_with_file(&path, &[]);
    assert_eq!(config.socket, PathBuf::from("/tmp/v/file.sock"));
    assert_eq!(config.socket_mode, 0o660);
    assert_eq!(config.threshold, Duration::from_millis(2000));
    assert_eq!(config.max_beat_rate, 7);
    assert_eq!(config.eviction_policy, EvictionPolicy::Balanced);
    let export = config.export.clone().expect("export from file");
    assert_eq!(export.path, PathBuf::from("/tmp/v/file.tsv"));
    assert!(!export.beats);
    assert!(config.allow_cross_namespace_agents);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.config_file.as_deref(), Some(path.as_path()));

    let config = run_with_file(
        &path,
        &["--threshold-ms", "300", "--socket", "/tmp/v/flag.sock"],
    );
    assert_eq!(config.threshold, Duration::from_millis(300));
    assert_eq!(config.socket, PathBuf::from("/tmp/v/flag.sock"));
    // Not given as flags: still from the file.
    assert_eq!(config.max_beat_rate, 7);
    assert!(config.allow_cross_namespace_agents);
}

#[test]
fn snake_case_keys_are_accepted() {
    let (_dir, path) = config_file(
        "threshold_ms = 1500\nexport_file = \"/tmp/v/x.tsv\"\nexport_file_max_bytes = 8192\nno_export_beats = true\n",
    );
    let config = run_with_file(&path, &[]);
    assert_eq!(config.threshold, Duration::from_millis(1500));
    let export = config.export.expect("export");
    assert_eq!(export.max_bytes, Some(8192));
    assert!(!export.beats);
}

#[test]
fn both_spellings_of_one_key_are_rejected() {
    let (_dir, path) = config_file("threshold_ms = 1500\nthreshold-ms = 1600\n");
    let msg = fail_with_file(&path, &[]).to_string();
    assert!(
        msg.contains("threshold_ms") || msg.contains("threshold-ms"),
        "{msg}"
    );
}

#[test]
fn every_implemented_flag_is_a_file_key() {
    let (_dir, path) = config_file(
        r#"
socket = "/tmp/v/k.sock"
socket-mode = "600"
uds-rcvbuf-bytes = 65536
allow-cross-namespace-agents = false
strict-namespace-check = true
threshold-ms = 1000
clock-source = "boottime"
tracker-capacity = 10
tracker-eviction-policy = "strict"
max-beat-rate = 5
global-beat-rate = 6
global-beat-burst = 7
export-file = "/tmp/v/k.tsv"
export-format = "json"
no-export-beats = false
export-file-max-bytes = 5000
export-file-sync-every = 2
log-format = "text"
shutdown-after-secs = 9
heartbeat-file = "/tmp/v/k.hb"
self-watchdog-secs = 3
hw-watchdog = "/dev/watchdog1"
"#,
    );
    let config = run_with_file(&path, &[]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(
        config.watchdog.heartbeat_file,
        Some(PathBuf::from("/tmp/v/k.hb"))
    );
    assert_eq!(config.watchdog.self_watchdog, Some(Duration::from_secs(3)));
    assert_eq!(
        config.watchdog.hw_watchdog,
        Some(PathBuf::from("/dev/watchdog1"))
    );
    assert_eq!(config.tracker_capacity, 10);
    assert_eq!(config.clock_source, ClockSource::Boottime);
    assert!(config.strict_namespace_check);
    assert_eq!(config.shutdown_after, Some(Duration::from_secs(9)));
    assert_eq!(config.export.map(|e| e.sync_every), Some(2));
}

#[test]
fn compat_keys_in_file_warn_and_name_the_file() {
    let (_dir, path) = config_file(
        "read-timeout-ms = 100\neviction_scan_window = 256\nudp-port = 9999\ni-accept-plaintext-udp = true\n",
    );
    let config = run_with_file(&path, &[]);
    // Two compatibility keys, and the loud plaintext-UDP warning.
    assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
    let file = path.display().to_string();
    assert!(
        config.warnings.iter().all(|w| w.contains(&file)),
        "{:?}",
        config.warnings
    );
    assert!(config
        .warnings
        .iter()
        .any(|w| w.starts_with("read-timeout-ms ")));
    assert!(config
        .warnings
        .iter()
        .any(|w| w.starts_with("eviction-scan-window ")));

    // Given both ways, the setting is reported once, as the flag.
    let config = run_with_file(&path, &["--read-timeout-ms", "200"]);
    assert_eq!(config.warnings.len(), 3);
    assert_eq!(warnings_for(&config, "--read-timeout-ms").len(), 1);
}

#[test]
fn unknown_file_key_is_rejected_naming_file_and_key() {
    let (_dir, path) = config_file("threshold-ms = 1000\nthreshhold-ms = 2000\n");
    let e = fail_with_file(&path, &[]);
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("threshhold-ms"), "{msg}");

    for text in [
        "config = \"/etc/other.toml\"\n",
        "[export]\nfile = \"/x\"\n",
        "help = true\n",
    ] {
        let (_dir, path) = config_file(text);
        let msg = fail_with_file(&path, &[]).to_string();
        assert!(msg.contains("unknown key"), "{text}: {msg}");
    }
}

#[test]
fn file_range_errors_name_file_key_and_value() {
    let (_dir, path) = config_file("threshold-ms = 5\n");
    let e = fail_with_file(&path, &[]);
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        e.to_string(),
        format!(
            "config file {}: threshold-ms = 5: must be between 10 and 86400000 milliseconds",
            path.display()
        )
    );

    let cases = [
        (
            "tracker-capacity = 0\n",
            "tracker-capacity = 0",
            "between 1 and 4194304",
        ),
        (
            "clock-source = \"monotonic-raw\"\n",
            "clock-source = \"monotonic-raw\"",
            "boottime",
        ),
        (
            "clock-source = \"sundial\"\n",
            "clock-source = \"sundial\"",
            "monotonic, boottime",
        ),
        ("socket-mode = \"1777\"\n", "socket-mode = \"1777\"", "0777"),
        (
            "socket-mode = 384\n",
            "socket-mode = 384",
            "quoted octal string",
        ),
        (
            "log-format = \"xml\"\n",
            "log-format = \"xml\"",
            "text, json",
        ),
        (
            "threshold-ms = \"fast\"\n",
            "threshold-ms = \"fast\"",
            "invalid type",
        ),
        ("threshold-ms = -1\n", "threshold-ms = -1", "u64"),
        ("no-export-beats = 1\n", "no-export-beats = 1", "boolean"),
        ("socket = \"\"\n", "socket = \"\"", "empty"),
    ];
    for (text, key_value, reason) in cases {
        let (_dir, path) = config_file(text);
        let msg = fail_with_file(&path, &[]).to_string();
        assert!(
            msg.starts_with(&format!("config file {}: ", path.display())),
            "{msg}"
        );
        assert!(msg.contains(key_value), "{text}: {msg}");
        assert!(msg.contains(reason), "{text}: {msg}");
    }
}

#[test]
fn a_bad_file_value_is_reported_even_when_a_flag_overrides_it() {
    let (_dir, path) = config_file("threshold-ms = 5\n");
    let msg = fail_with_file(&path, &["--threshold-ms", "500"]).to_string();
    assert!(msg.contains("threshold-ms = 5"), "{msg}");
}

#[test]
fn file_max_bytes_without_export_file_names_the_file() {
    let (_dir, path) = config_file("export-file-max-bytes = 8192\n");
    let msg = fail_with_file(&path, &[]).to_string();
    assert!(
        msg.contains("export-file-max-bytes") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    // The export file may come from a flag while the limit is in the file.
    let config = run_with_file(&path, &["--export-file", "/tmp/v/y.tsv"]);
    assert_eq!(config.export.and_then(|e| e.max_bytes), Some(8192));
}

#[test]
fn missing_file_names_path_and_os_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let e = fail_with_file(&path, &[]);
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");

    // A directory is unreadable as a file.
    let msg = fail_with_file(dir.path(), &[]).to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn toml_syntax_error_names_the_file() {
    let (_dir, path) = config_file("threshold-ms = \n");
    let e = fail_with_file(&path, &[]);
    assert!(matches!(e, ConfigError::File { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("config file {}: ", path.display())),
        "{msg}"
    );
    assert!(msg.contains("line 1"), "{msg}");
}

#[test]
fn reload_picks_up_a_changed_file_and_keeps_flags() {
    let (_dir, path) = config_file("threshold-ms = 2000\nmax-beat-rate = 10\n");
    let first = run_with_file(&path, &["--max-beat-rate", "50"]);
    assert_eq!(first.threshold, Duration::from_millis(2000));
    assert_eq!(first.max_beat_rate, 50);

    fs::write(
        &path,
        "threshold-ms = 3000\nmax-beat-rate = 20\nexport-file = \"/tmp/v/r.tsv\"\n",
    )
    .expect("rewrite");
    let second = reload(&first).expect("reload");
    assert_eq!(second.threshold, Duration::from_millis(3000));
    assert_eq!(second.max_beat_rate, 50, "the flag still wins");
    assert!(second.export.is_some());
    assert_eq!(second.argv, first.argv);
    assert_eq!(second.config_file, first.config_file);

    fs::write(&path, "threshold-ms = 1\n").expect("rewrite");
    assert!(reload(&second).is_err());
    fs::remove_file(&path).expect("remove");
    assert!(matches!(reload(&second), Err(ConfigError::Read { .. })));
}

#[test]
fn reload_of_a_config_built_in_code_uses_its_file() {
    let (_dir, path) = config_file("threshold-ms = 4000\n");
    let mut config = Config::with_socket(PathBuf::from("/tmp/v/code.sock"));
    config.config_file = Some(path);
    let reloaded = reload(&config).expect("reload");
    assert_eq!(reloaded.threshold, Duration::from_millis(4000));
}

#[test]
fn diff_reports_changed_settings() {
    let old = run(&[]);
    assert!(diff(&old, &old).is_empty());

    let mut new = old.clone();
    new.threshold = Duration::from_millis(2000);
    assert_eq!(diff(&old, &new), ["threshold-ms: 5000 -> 2000"]);

    new.warnings.push("ignored".into());
    new.argv.push("ignored".into());
    assert_eq!(diff(&old, &new), ["threshold-ms: 5000 -> 2000"]);

    let with_export = run(&["--export-file", "/tmp/v/d.tsv", "--socket-mode", "0640"]);
    let lines = diff(&old, &with_export);
    assert!(
        lines.contains(&"export-file: none -> /tmp/v/d.tsv".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"socket-mode: 0600 -> 0640".to_string()),
        "{lines:?}"
    );

    let json = run(&[
        "--export-file",
        "/tmp/v/d.tsv",
        "--socket-mode",
        "0640",
        "--export-format",
        "json",
    ]);
    assert_eq!(diff(&with_export, &json), ["export-format: tsv -> json"]);
}

#[test]
fn watchdog_settings_from_the_file_are_validated_and_diffed() {
    let (_dir, path) = config_file("self-watchdog-secs = 0\n");
    let msg = fail_with_file(&path, &[]).to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("self-watchdog-secs = 0")
            && msg.contains("between 1 and 3600"),
        "{msg}"
    );
    let (_dir, path) = config_file("hw-watchdog = \"\"\n");
    let msg = fail_with_file(&path, &[]).to_string();
    assert!(
        msg.contains("hw-watchdog = \"\"") && msg.contains("empty"),
        "{msg}"
    );
    let (_dir, path) = config_file("self_watchdog_secs = 5\nheartbeat_file = \"/run/varta/hb\"\n");
    let old = run_with_file(&path, &[]);
    // The flag wins over the file, as everywhere.
    let new = run_with_file(
        &path,
        &[
            "--self-watchdog-secs",
            "9",
            "--hw-watchdog",
            "/dev/watchdog",
        ],
    );
    assert_eq!(old.watchdog.self_watchdog, Some(Duration::from_secs(5)));
    assert_eq!(
        diff(&old, &new),
        [
            "self-watchdog-secs: 5 -> 9",
            "hw-watchdog: none -> /dev/watchdog"
        ]
    );
}

#[test]
fn non_utf8_arguments_are_errors_or_paths_never_panics() {
    use std::os::unix::ffi::OsStringExt;
    let bad = OsString::from_vec(vec![b'/', b't', 0xff, b'x']);
    let mut args = argv(&["--socket"]);
    args.push(bad.clone());
    assert!(
        matches!(load(args), Ok(Loaded::Run(_))),
        "a path may be any bytes"
    );
    let mut args = argv(&["--threshold-ms"]);
    args.push(bad);
    assert!(matches!(load(args), Err(ConfigError::Usage(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any mix of real flag names and hostile values yields a config or an
    /// error, never a panic.
    #[test]
    fn load_never_panics(words in proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(
                ORIGINAL_FLAGS.iter().map(|(f, _)| f.to_string()).collect::<Vec<_>>()
            ),
            Just("--config".to_string()),
            Just("--export-format".to_string()),
            "[0-9]{0,25}",
            "-?[0-9a-zA-Z=:/._-]{0,12}",
            ".{0,8}",
        ],
        0..12,
    )) {
        let args = std::iter::once("varta-watch".to_string()).chain(words).map(OsString::from);
        let _ = load(args);
    }

    /// Any file text yields settings or an error, never a panic.
    #[test]
    fn file_parse_never_panics(text in "(([a-z_-]{1,30}) = (-?[0-9]{1,22}|\"[^\"]{0,10}\"|true|\\[1\\])\n){0,6}|.{0,64}") {
        let _ = super::file::parse(Path::new("/tmp/p.toml"), &text);
    }
}

#[test]
fn prometheus_endpoint_needs_a_valid_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let e = fail(&["--prom-addr", "127.0.0.1:0"]).to_string();
    assert!(
        e.contains("--prom-token-file") && e.contains("openssl rand -hex 32"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("prom.token");
    fs::write(&token, "not hex\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let t = token.to_str().unwrap();
    let e = fail(&["--prom-addr", "127.0.0.1:0", "--prom-token-file", t]).to_string();
    assert!(e.contains("64 hex characters"), "{e}");
    fs::write(&token, "ab".repeat(32)).unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    let e = fail(&["--prom-addr", "127.0.0.1:0", "--prom-token-file", t]).to_string();
    assert!(e.contains("chmod"), "{e}");
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let c = run(&["--prom-addr", "[::1]:0", "--prom-token-file", t]);
    let m = c.metrics.unwrap();
    assert_eq!(
        (m.rate_per_sec, m.burst, m.per_agent_limit),
        (5, 10, 10_000)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = run(&["--prom-addr", "0.0.0.0:9464", "--prom-token-file", t]);
    assert!(
        c.warnings[0].contains("beyond this host"),
        "{:?}",
        c.warnings
    );
    let c = run(&["--prom-rate-limit-burst", "0"]);
    assert!(
        c.warnings[0].contains("without --prom-addr"),
        "{:?}",
        c.warnings
    );
}

/// A 0600 key file with `text` in a fresh directory.
fn key_file(text: &str) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let s = p.display().to_string();
    (dir, s)
}

#[test]
fn udp_needs_keys_or_the_plaintext_acknowledgement() {
    let e = fail(&["--udp-port", "9999"]).to_string();
    assert!(e.contains("--key-file"), "{e}");
    assert!(e.contains("--i-accept-plaintext-udp"), "{e}");
    assert!(e.contains("varta keygen"), "{e}");

    let c = run(&["--udp-port", "9999", "--i-accept-plaintext-udp"]);
    let u = c.udp.unwrap();
    assert_eq!(u.security, UdpSecurity::Plaintext);
    assert_eq!(u.addr, "0.0.0.0:9999".parse().unwrap());
    assert!(c.warnings[0].starts_with("PLAINTEXT UDP listener"));

    let (_d, k) = key_file(&format!("# rotated 2026-11\n{}\n", "0a".repeat(32)));
    let c = run(&["--udp-port", "9999", "--key-file", &k]);
    let u = c.udp.unwrap();
    assert_eq!(u.addr, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(u.sender_capacity, DEFAULT_UDP_SENDER_CAPACITY);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = run(&[
        "--udp-port",
        "0",
        "--udp-bind-addr",
        "::1",
        "--master-key-file",
        &k,
    ]);
    assert_eq!(c.udp.unwrap().addr, "[::1]:0".parse().unwrap());
}

#[test]
fn secure_udp_beyond_loopback_needs_its_acknowledgement() {
    let (_d, k) = key_file(&"0a".repeat(32));
    let e = fail(&[
        "--udp-port",
        "1",
        "--key-file",
        &k,
        "--udp-bind-addr",
        "10.0.0.1",
    ])
    .to_string();
    assert!(e.contains("--i-accept-secure-udp-non-loopback"), "{e}");
    let c = run(&[
        "--udp-port",
        "1",
        "--key-file",
        &k,
        "--udp-bind-addr",
        "::",
        "--i-accept-secure-udp-non-loopback",
    ]);
    assert_eq!(c.udp.unwrap().addr, "[::]:1".parse().unwrap());
}

#[test]
fn recovery_with_a_udp_listener_needs_the_listeners_opt_in() {
    let (_d, k) = key_file(&"0a".repeat(32));
    let e = fail(&[
        "--udp-port",
        "1",
        "--key-file",
        &k,
        "--recovery-exec",
        "/bin/true",
    ])
    .to_string();
    assert!(
        e.contains("--secure-udp-i-accept-recovery-on-unauthenticated-transport"),
        "{e}"
    );
    assert!(e.contains("--udp-port"), "{e}");
    let e = fail(&[
        "--udp-port",
        "1",
        "--i-accept-plaintext-udp",
        "--recovery-exec",
        "/bin/true",
        // The other listener's opt-in does not count.
        "--secure-udp-i-accept-recovery-on-unauthenticated-transport",
    ])
    .to_string();
    assert!(
        e.contains("--plaintext-udp-i-accept-recovery-on-unauthenticated-transport"),
        "{e}"
    );
    // Without the opt-in nothing network-borne is trusted.
    let c = run(&["--recovery-exec", "/bin/true"]);
    assert_eq!(c.recovery.unwrap().trusted_network_origin, None);
}

#[test]
fn bad_key_files_stop_the_start_without_showing_the_key() {
    let secret = "0a".repeat(31);
    let (_d, k) = key_file(&format!("{secret}zz\n"));
    let e = fail(&["--udp-port", "1", "--key-file", &k]);
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.contains(&format!("key-file {k}")), "{msg}");
    assert!(!msg.contains(&secret), "key material in {msg}");
    // Two keys where one is expected.
    let (_d2, k2) = key_file(&format!("{}\n{}\n", "0a".repeat(32), "0b".repeat(32)));
    assert!(fail(&["--udp-port", "1", "--key-file", &k2])
        .to_string()
        .contains(&format!("key-file {k2}")));
    // ... but fine as an accepted-key list.
    let c = run(&[
        "--udp-port",
        "1",
        "--accepted-key-file",
        &k2,
        "--accepted-key-file",
        &k2,
    ]);
    match c.udp.unwrap().security {
        UdpSecurity::Secure(files) => assert_eq!(files.accepted.len(), 2),
        other => panic!("{other:?}"),
    }
    // Group-readable: the secret-file rules apply.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&k2, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(fail(&["--udp-port", "1", "--accepted-key-file", &k2])
        .to_string()
        .contains("chmod 600"));
}

#[test]
fn udp_settings_without_a_port_warn() {
    let c = run(&["--udp-sender-capacity", "10", "--i-accept-plaintext-udp"]);
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings.iter().all(|w| w.contains("without --udp-port")));
    assert!(fail(&["--udp-sender-capacity", "0"])
        .to_string()
        .contains("between 1 and"));
}

#[test]
fn recovery_placeholders_are_validated_and_the_audit_schema_parsed() {
    let r = run(&[
        "--recovery-exec",
        "/bin/x {pid} {name} {unit} {container} {comm} {exe}",
    ]);
    assert!(r.recovery.is_some());
    let e = fail(&["--recovery-exec", "/bin/x {nmae}"]).to_string();
    assert!(
        e.contains("recovery-exec") && e.contains("unknown placeholder {nmae}"),
        "{e}"
    );
    let (_dir, path) = config_file(
        "[[agent]]\nmatch = { uid = 0 }\nrecovery-exec = \"/usr/bin/systemctl restart {service}\"\n",
    );
    let e = fail_with_file(&path, &[]).to_string();
    assert!(
        e.contains("[[agent]] #1") && e.contains("unknown placeholder {service}"),
        "{e}"
    );
    // Only rules switching recovery off: no recovery at all.
    let (_dir, path) = config_file("[[agent]]\nmatch = { uid = 0 }\nrecovery = false\n");
    assert!(run_with_file(&path, &[]).recovery.is_none());

    let c = run(&["--recovery-audit-file", "/tmp/a.tsv"]);
    assert_eq!(c.audit.unwrap().schema, varta_audit::Schema::V2);
    let c = run(&[
        "--recovery-audit-file",
        "/tmp/a.tsv",
        "--recovery-audit-schema",
        "v3",
    ]);
    assert_eq!(c.audit.unwrap().schema, varta_audit::Schema::V3);
    let e = fail(&[
        "--recovery-audit-file",
        "/tmp/a.tsv",
        "--recovery-audit-schema",
        "v4",
    ])
    .to_string();
    assert!(
        e.contains("recovery-audit-schema") && e.contains("v4"),
        "{e}"
    );
}
