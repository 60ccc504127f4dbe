//! The `varta` CLI against the real observer: `target/debug/varta-watch`
//! with its control socket, and real agent processes (this test binary
//! re-executed in agent mode, beating through varta-client).
//!
//! The observer binary is the one `cargo test --workspace` builds next to
//! `varta`; when it is absent (`cargo test -p varta-cli` alone, before any
//! workspace build) the test says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const AGENT_ENV: &str = "VARTA_CLI_TEST_AGENT";
const SOCKET_ENV: &str = "VARTA_CLI_TEST_SOCKET";
const PATIENCE: Duration = Duration::from_secs(20);

/// Kills and reaps its process on drop (panics included).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// In agent mode (environment set by `spawn_agent`): beat, forever
/// (`beat`) or twice and then stay silent (`quiet`).
#[test]
fn agent_entry() {
    let Ok(mode) = std::env::var(AGENT_ENV) else {
        return;
    };
    let socket = std::env::var(SOCKET_ENV).unwrap();
    let mut agent = varta_client::Varta::connect(&socket).expect("connect");
    let beats = if mode == "quiet" { 2 } else { u32::MAX };
    for _ in 0..beats {
        let _ = agent.beat(varta_client::Status::Ok, 7);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3600));
}

fn spawn_agent(mode: &str, socket: &Path) -> Guard {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "agent_entry",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(AGENT_ENV, mode)
        .env(SOCKET_ENV, socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Guard(child)
}

fn observer_bin() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_varta")).with_file_name("varta-watch");
    p.exists().then_some(p)
}

fn varta(ctl: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("--control-socket")
        .arg(ctl)
        .args(args)
        .env_remove("VARTA_CONTROL_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it returns `Some`, or panics after [`PATIENCE`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cli_against_a_running_observer() {
    if std::env::var(AGENT_ENV).is_ok() {
        return;
    }
    let Some(bin) = observer_bin() else {
        eprintln!("skipped: no varta-watch binary beside varta (run cargo test --workspace)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("varta.sock");
    let ctl = dir.path().join("varta.ctl");
    let config = dir.path().join("varta-watch.toml");
    std::fs::write(&config, "threshold_ms = 500\n").unwrap();
    let _observer = Guard(
        Command::new(bin)
            .arg("--socket")
            .arg(&sock)
            .arg("--control-socket")
            .arg(&ctl)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the control socket", || {
        (varta(&ctl, &["status"]).status.code() == Some(0)).then_some(())
    });

    let beating = spawn_agent("beat", &sock);
    let quiet = spawn_agent("quiet", &sock);
    let (alive_pid, stalled_pid) = (beating.0.id(), quiet.0.id());

    // agents --json: both agents, one alive, one stalled.
    eventually("one alive and one stalled agent", || {
        let out = varta(&ctl, &["agents", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let agents: Vec<Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let state = |pid: u32| {
            agents
                .iter()
                .find(|a| a["pid"] == pid)
                .map(|a| a["state"].as_str().unwrap().to_owned())
        };
        (state(alive_pid).as_deref() == Some("alive")
            && state(stalled_pid).as_deref() == Some("stalled"))
        .then_some(())
    });

    // status: summary and the stalled agent in the table; --json.
    let out = varta(&ctl, &["status"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.contains("1 alive, 1 stalled"), "{s}");
    assert!(s.contains(&format!("control {}", ctl.display())), "{s}");
    let row = s
        .lines()
        .find(|l| l.starts_with(&format!("{stalled_pid} ")))
        .unwrap_or_else(|| panic!("no row for {stalled_pid}:\n{s}"));
    assert!(row.contains("stalled"), "{row}");
    let out = varta(&ctl, &["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["counts"]["stalled"], 1);
    assert_eq!(v["agents_total"], 1);
    assert_eq!(v["agents"][0]["pid"], stalled_pid);

    // agents (table) with a state filter, agent PID, an unknown pid.
    let out = varta(&ctl, &["agents", "--state", "alive"]);
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 2, "{s}");
    assert!(
        s.contains(&alive_pid.to_string()) && s.contains("kernel_attested"),
        "{s}"
    );
    let out = varta(&ctl, &["agent", &stalled_pid.to_string()]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.contains("state      stalled"), "{s}");
    assert!(s.contains("payload    7 (0x00000007)"), "{s}");
    assert!(s.contains("threshold  500ms"), "{s}");
    let out = varta(&ctl, &["agent", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("varta: the observer refused the request: ")
            && text(&out.stderr).ends_with("(HTTP 404)\n"),
        "{}",
        text(&out.stderr)
    );

    // events: the recent stall, then a live one followed.
    let out = varta(&ctl, &["events", "--kind", "stall", "--limit", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.lines()
            .any(|l| l.contains(" stall ") && l.contains(&stalled_pid.to_string())),
        "{s}"
    );
    let follow = Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("--control-socket")
        .arg(&ctl)
        .args([
            "events",
            "--follow",
            "--kind",
            "stall,exit",
            "--limit",
            "1",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(beating); // killed: its exit (or stall) is the next event
    let out = follow.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ev: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(ev["pid"], alive_pid, "{ev}");

    // reload: a change is applied, a broken file is refused.
    std::fs::write(&config, "threshold_ms = 700\n").unwrap();
    let out = varta(&ctl, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("applied: ") && s.contains("700"), "{s}");
    let out = varta(&ctl, &["reload"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).starts_with("unchanged"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(&config, "treshold_ms = 700\n").unwrap();
    let out = varta(&ctl, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.starts_with("varta: reload failed, the observer keeps its configuration: ")
            && e.contains("treshold_ms")
            && e.lines().count() == 1,
        "{e}"
    );
    let out = varta(&ctl, &["status"]);
    assert!(
        text(&out.stdout).contains("reload     failed"),
        "{}",
        text(&out.stdout)
    );
}
