//! Real observer, real agent processes: stall, recovery, kill, panic, and
//! the daemon's lifecycle.

mod common;

use common::{spawn_agent, Observer};
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

#[test]
fn stall_then_recovered_after_resume() {
    let obs = Observer::start(&["--threshold-ms", "300"]);
    // Guards (agent, observer) kill and reap their processes when the test
    // ends, panics included.
    let agent = spawn_agent("beat", &obs.socket, 50);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    // Freeze the agent: silence without death.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    let stall = obs.wait_for("stall", Some(pid));
    assert_eq!(stall[4], "stall");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    obs.wait_for("recovered", Some(pid));
    assert_eq!(
        obs.of_kind("stall", Some(pid)).len(),
        1,
        "one stall per silence run"
    );
}

#[test]
fn killed_agent_stalls_exactly_once() {
    let obs = Observer::start(&["--threshold-ms", "200"]);
    let mut agent = spawn_agent("beat", &obs.socket, 20);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    agent.kill().unwrap();
    agent.wait().unwrap();
    obs.wait_for("stall", Some(pid));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(obs.of_kind("stall", Some(pid)).len(), 1);
}

#[test]
fn panicking_agent_raises_exit_without_stall() {
    let obs = Observer::start(&["--threshold-ms", "300"]);
    let mut agent = spawn_agent("panic", &obs.socket, 20);
    let pid = agent.id();
    agent.wait().unwrap();
    let exit = obs.wait_for("exit", Some(pid));
    assert_eq!(exit[4], "critical");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        obs.of_kind("stall", Some(pid)).is_empty(),
        "exit must not also stall"
    );
}

#[test]
fn sigterm_exits_cleanly_and_removes_socket() {
    let mut obs = Observer::start(&[]);
    assert!(obs.socket.exists());
    obs.signal(Signal::SIGTERM);
    assert_eq!(obs.wait_exit(), Some(0));
    assert!(!obs.socket.exists(), "socket must be unlinked on exit");
}

#[test]
fn refuses_to_start_over_a_live_observer_and_replaces_a_stale_socket() {
    let first = Observer::start(&[]);
    let out = common::run(&["--socket", first.socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");
    // A stale socket file (nobody listening) is replaced silently.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("obs.sock");
    drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
    assert!(stale.exists());
    let obs = Observer::start_in(dir, &[]);
    let s = obs.raw();
    s.send(&[0u8; 3]).unwrap();
    obs.wait_for("decode", None);
}

#[test]
fn sighup_reloads_threshold_from_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("varta.toml");
    std::fs::write(&cfg, "threshold-ms = 60000\n").unwrap();
    let cfg_arg = cfg.to_str().unwrap().to_owned();
    let obs = Observer::start_in(dir, &["--config", &cfg_arg]);
    let mut agent = spawn_agent("beat", &obs.socket, 20);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    std::fs::write(&cfg, "threshold-ms = 200\n").unwrap();
    obs.signal(Signal::SIGHUP);
    obs.wait_until("reload logged", || obs.stderr().contains("reload applied"));
    agent.kill().unwrap();
    agent.wait().unwrap();
    // With the old 60 s threshold this would never appear within PATIENCE.
    obs.wait_for("stall", Some(pid));
    // A broken file keeps the running config and says why.
    std::fs::write(&cfg, "threshold-ms = 1\n").unwrap();
    obs.signal(Signal::SIGHUP);
    obs.wait_until("reload error", || obs.stderr().contains("reload failed"));
}

#[test]
fn no_flags_listens_on_the_default_path() {
    // Point the default (non-root) location at a private runtime dir; as
    // root the default is /run/varta/varta.sock.
    let runtime = tempfile::tempdir().unwrap();
    let mut child = common::spawn_guarded(
        std::process::Command::new(common::bin())
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env("VARTA_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    )
    .unwrap();
    let expected = if varta_vlp::effective_uid() == Some(0) {
        std::path::PathBuf::from("/run/varta/varta.sock")
    } else {
        runtime.path().join("varta.sock")
    };
    let start = std::time::Instant::now();
    while !expected.exists() {
        assert!(
            start.elapsed() < common::PATIENCE,
            "no socket at {}",
            expected.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(child.pid(), Signal::SIGTERM).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains(&format!("listening on {}", expected.display())),
        "{stderr}"
    );
    assert!(!expected.exists());
}

#[test]
fn paused_observer_gives_grace_instead_of_mass_stall() {
    // The observer is frozen (as by a VM pause) for longer than 5 s while
    // its agent keeps beating; on waking it must not stall the agent.
    let obs = Observer::start(&["--threshold-ms", "1000"]);
    let agent = spawn_agent("beat", &obs.socket, 50);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    obs.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(6500));
    obs.signal(Signal::SIGCONT);
    obs.wait_for("clock_jump", None);
    // Agent beats resume within the grace threshold; no stall.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        obs.of_kind("stall", Some(pid)).is_empty(),
        "{:?}",
        obs.lines()
    );
}

#[test]
fn dead_sender_with_a_queued_beat_is_normal_input() {
    // The original 0.2.0 observer panics here; for us a dying agent is
    // ordinary: the queued beat is accepted and the silence becomes a stall.
    let obs = Observer::start(&["--threshold-ms", "200"]);
    obs.signal(Signal::SIGSTOP);
    let mut agent = spawn_agent("once", &obs.socket, 10);
    let pid = agent.id();
    assert!(agent.wait().unwrap().success());
    obs.signal(Signal::SIGCONT);
    obs.wait_for("beat", Some(pid));
    obs.wait_for("stall", Some(pid));
    // Still serving.
    let s = obs.raw();
    s.send(&[1, 2, 3]).unwrap();
    obs.wait_for("decode", None);
}
