//! The safety-profile binary (`--no-default-features --features
//! baked-config`, docs/safety-profile.md) run for real. It cannot be built
//! by this test (its configuration is fixed at build time), so `.ci/run`
//! builds it from packaging/safety/varta-watch.toml with every path moved
//! under a scratch root, then runs this with
//! `VARTA_SAFETY_BIN=<binary> VARTA_SAFETY_ROOT=<root> cargo test -p
//! varta-watch --test safety_profile -- --ignored --test-threads 1` (the
//! builds share their baked socket). The baked layout: ROOT/run/varta.sock,
//! ROOT/run/heartbeat, ROOT/log/events.tsv, ROOT/lib/recovery-audit.log,
//! recovery `/usr/bin/touch ROOT/recovered-{pid}`, self-watchdog 4 s, a
//! secure UDP listener on 127.0.0.1 (port 0) with the key in ROOT/udp.key
//! and recovery opted in for it, and `[[agent]]` rules: agents whose comm
//! is `safety_profile*` are named `pump` with a 900 ms threshold, network
//! agents from 127.0.0.0/8 (named `peer:127.0.0.1`) get 700 ms, and both
//! names are required (startup grace 500 ms); the global threshold is 2 s.
//! `VARTA_SAFETY_FAULT_BIN` is the same configuration built with feature
//! `fault-injection` (a debug build that never ships).

mod common;
mod systemd_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{spawn_agent, spawn_guarded, Observer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use systemd_support::{
    assert_self_watchdog_abort, read_heartbeat, start_binary, wait_for_wedge, NotifySocket,
    WEDGE_ENV,
};
use varta_client::{Key, Varta};

const WHY: &str = "needs the safety-profile binary: .ci/run builds it and sets VARTA_SAFETY_BIN";

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

fn bin_and_root() -> (PathBuf, PathBuf) {
    let var = |name: &str| {
        PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} is not set ({WHY})")))
    };
    (var("VARTA_SAFETY_BIN"), var("VARTA_SAFETY_ROOT"))
}

/// Waits for the export's `missing` line naming `name` (a required agent
/// not seen within its startup grace).
fn wait_missing(obs: &Observer, name: &str) {
    obs.wait_until(&format!("missing {name}"), || {
        obs.lines()
            .iter()
            .any(|l| l.len() == 6 && l[1] == "missing" && l[5] == name)
    });
}

/// The stall of `agent` (`name[pid]`) was logged after at least its
/// rule's `threshold_ms` of silence and before the global 2 s: the rule's
/// threshold, not the global one, was in force.
fn assert_rule_threshold(obs: &Observer, agent: &str, threshold_ms: u64) {
    let log = obs.stderr();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("agent {agent} stalled after")))
        .unwrap_or_else(|| panic!("no stall line for {agent}:\n{log}"));
    let silent: u64 = line
        .split("silent_ms=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no silent_ms in {line}"));
    assert!(
        (threshold_ms..2000).contains(&silent),
        "{agent} stalled after {silent} ms, its rule says {threshold_ms}: {line}"
    );
}

/// The key in a `key-file` (the protocol crate's own key-file parser).
fn read_key(path: &Path) -> Key {
    let text = std::fs::read_to_string(path).unwrap();
    varta_vlp::parse_key_file(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
#[ignore = "needs the safety-profile binary: .ci/run builds it and sets VARTA_SAFETY_BIN"]
fn any_argument_is_refused_with_one_line_and_status_2() {
    let (bin, _) = bin_and_root();
    for args in [
        &["--threshold-ms", "100"][..],
        &["--help"],
        &["--config", "/etc/varta/varta-watch.toml"],
        &[""],
    ] {
        let out = common::die_with_parent(Command::new(&bin).args(args))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "varta-watch: error: this build has its configuration compiled in and takes no arguments\n",
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// One life from the baked configuration alone: systemd notify and
/// pings, the `[[agent]]` rules (names, required agents missing then
/// present), beats over the Unix socket and secure UDP, stalls, the
/// recovery command run without a shell, its audit record, the export,
/// the heartbeat file, and exit 0 on SIGTERM.
#[test]
#[ignore = "needs the safety-profile binary: .ci/run builds it and sets VARTA_SAFETY_BIN"]
fn runs_detects_a_stall_recovers_and_stops_cleanly() {
    let (bin, root) = bin_and_root();
    let socket = root.join("run/varta.sock");
    let heartbeat = root.join("run/heartbeat");
    let audit = root.join("lib/recovery-audit.log");
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::path(dir.path());
    let stderr_path = dir.path().join("stderr.log");
    let child = spawn_guarded(
        Command::new(&bin)
            .env("VARTA_LOG", "info")
            .env("NOTIFY_SOCKET", &notify.env)
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap()),
    )
    .unwrap();
    let mut obs = Observer {
        child,
        dir,
        socket: socket.clone(),
        export: root.join("log/events.tsv"),
        stderr_path,
    };
    notify.wait_until("READY=1", |m| {
        m.iter().any(|(_, s)| s.lines().any(|l| l == "READY=1"))
    });
    obs.wait_until("listening", || obs.stderr().contains("listening on"));
    // It says which file it was built from, with a digest `sha256sum` agrees with.
    let file = root.join("varta-watch.toml");
    let out = Command::new("sha256sum").arg(&file).output().unwrap();
    let digest = String::from_utf8(out.stdout).unwrap();
    let digest = digest.split(' ').next().unwrap();
    assert_eq!(digest.len(), 64, "{digest}");
    let said = format!(
        "configuration compiled in from {} (sha256 {digest})",
        file.display()
    );
    assert!(obs.stderr().contains(&said), "{said}\n{}", obs.stderr());

    // Both required names are missing until their agents come.
    wait_missing(&obs, "pump");
    wait_missing(&obs, "peer:127.0.0.1");
    assert!(obs.stderr().contains("required agent pump is missing"));

    // The test binary's comm is `safety_profile-`: the rule names it pump.
    let agent = spawn_agent("beat", &socket, 50);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    let present = obs.wait_for("present", Some(pid));
    assert_eq!(present[5], "pump", "{present:?}");
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    obs.wait_for("stall", Some(pid));
    assert_rule_threshold(&obs, &format!("pump[{pid}]"), 900);
    let marker = root.join(format!("recovered-{pid}"));
    obs.wait_until("the recovery command's file", || marker.exists());
    obs.wait_until("an audit spawn record", || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split('\t').nth(3) == Some("spawn") && l.contains(&pid.to_string()))
    });
    drop(agent);

    // A network agent on the baked secure UDP listener, with the baked key
    // file's key: present under its required name, stalls after its rule's
    // threshold, and is recovered (the listener's opt-in is baked too).
    let udp = obs.udp_addr();
    assert!(udp.ip().is_loopback() && udp.port() != 0, "{udp}");
    let me = std::process::id();
    let mut remote = Varta::connect_secure_udp(udp, read_key(&root.join("udp.key"))).unwrap();
    assert_eq!(
        remote.beat(varta_client::Status::Ok, 0),
        varta_client::BeatOutcome::Sent
    );
    let present = obs.wait_for("present", Some(me));
    assert_eq!(present[5], "peer:127.0.0.1", "{present:?}");
    obs.wait_for("stall", Some(me));
    assert_rule_threshold(&obs, &format!("peer:127.0.0.1[{me}]"), 700);
    let marker = root.join(format!("recovered-{me}"));
    obs.wait_until("the network agent's recovery", || marker.exists());

    let read = || read_heartbeat(&heartbeat);
    obs.wait_until("heartbeat file", || read().is_some());
    let first = read().unwrap();
    obs.wait_until("heartbeat to advance", || {
        read().is_some_and(|(n, _)| n > first.0)
    });
    notify.wait_until("WATCHDOG=1", |_| !notify.times_of("WATCHDOG=1").is_empty());

    obs.signal(Signal::SIGTERM);
    assert_eq!(obs.wait_exit(), Some(0), "{}", obs.stderr());
    notify.wait_until("STOPPING=1", |_| !notify.times_of("STOPPING=1").is_empty());
    assert!(!socket.exists(), "the socket is removed on a clean exit");
}

/// The profile's own watchdogs, from the baked configuration
/// (self-watchdog-secs = 4, heartbeat-file): a loop wedged by fault
/// injection stops systemd's `WATCHDOG=1` pings, freezes the heartbeat
/// file at the wedged iteration, and the self-watchdog aborts the process
/// within 4 s + 1 s.
#[test]
#[ignore = "needs the safety-profile binary: .ci/run builds it and sets VARTA_SAFETY_FAULT_BIN"]
fn wedged_loop_is_aborted_by_the_baked_self_watchdog() {
    let (_, root) = bin_and_root();
    let bin = PathBuf::from(
        std::env::var_os("VARTA_SAFETY_FAULT_BIN")
            .unwrap_or_else(|| panic!("VARTA_SAFETY_FAULT_BIN is not set ({WHY})")),
    );
    let heartbeat = root.join("run/heartbeat");
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::path(dir.path());
    // 50 ms liveness ticks (WatchdogSec 0.4 s / 8): about 2 s of health.
    let mut obs = start_binary(
        &bin,
        dir,
        &[],
        &[
            ("NOTIFY_SOCKET", notify.env.as_str()),
            ("WATCHDOG_USEC", "400000"),
            (WEDGE_ENV, "40"),
        ],
        root.join("run/varta.sock"),
        root.join("log/events.tsv"),
    );
    notify.wait_until("WATCHDOG=1 while healthy", |_| {
        notify.times_of("WATCHDOG=1").len() >= 3
    });
    let wedged_at = wait_for_wedge(&obs);
    // Let the last write made before the watchdog thread saw the wedge
    // land; from then on the file must not change.
    std::thread::sleep(Duration::from_millis(1200));
    let read = || read_heartbeat(&heartbeat).expect("the heartbeat file");
    let frozen = read();
    assert_self_watchdog_abort(&mut obs, &notify, wedged_at, Duration::from_secs(4));
    assert_eq!(
        read(),
        frozen,
        "the heartbeat moved while the loop was wedged"
    );
    assert_eq!(frozen.0, 40, "the last count is the wedged iteration");
}
