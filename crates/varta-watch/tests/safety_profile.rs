//! The safety-profile binary (`--no-default-features --features
//! baked-config`, docs/safety-profile.md) run for real. It cannot be built
//! by this test (its configuration is fixed at build time), so `.ci/run`
//! builds it from packaging/safety/varta-watch.toml with every path moved
//! under a scratch root, then runs this with
//! `VARTA_SAFETY_BIN=<binary> VARTA_SAFETY_ROOT=<root> cargo test -p
//! varta-watch --test safety_profile -- --ignored`. The baked layout:
//! ROOT/run/varta.sock, ROOT/run/heartbeat, ROOT/log/events.tsv,
//! ROOT/lib/recovery-audit.log, recovery `/usr/bin/touch ROOT/recovered-{pid}`.

mod common;
mod systemd_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{spawn_agent, spawn_guarded, Observer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use systemd_support::{parse_heartbeat, NotifySocket};

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
/// pings, beats, a stall, the recovery command run without a shell, its
/// audit record, the export, the heartbeat file, and exit 0 on SIGTERM.
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

    let agent = spawn_agent("beat", &socket, 50);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    obs.wait_for("stall", Some(pid));
    let marker = root.join(format!("recovered-{pid}"));
    obs.wait_until("the recovery command's file", || marker.exists());
    obs.wait_until("an audit spawn record", || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split('\t').nth(3) == Some("spawn") && l.contains(&pid.to_string()))
    });
    drop(agent);

    let read = || {
        std::fs::read_to_string(&heartbeat)
            .ok()
            .map(|t| parse_heartbeat(&t))
    };
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
