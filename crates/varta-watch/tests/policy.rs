//! Per-agent policy end to end: real agent processes (this test binary
//! re-executed under other names through symlinks, so `/proc/<pid>/comm`
//! differs), a config file with `[[agent]]` rules, the real observer.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{spawn_guarded, ChildGuard, Observer};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

/// This test binary under another name: `/proc/<pid>/comm` is the name the
/// program was executed by.
fn named_agent(dir: &Path, comm: &str, mode: &str, socket: &Path, beats: u32) -> ChildGuard {
    let link = dir.join(comm);
    if !link.exists() {
        std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &link).unwrap();
    }
    spawn_guarded(
        Command::new(&link)
            .args(["--exact", "agent_entry", "--nocapture", "--test-threads=1"])
            .env(common::AGENT_ENV, mode)
            .env(common::SOCKET_ENV, socket)
            .env(common::INTERVAL_ENV, "50")
            .env("VARTA_TEST_BEATS", beats.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("spawn agent")
}

/// Starts an observer with `config` as its config file (JSON export).
fn observer(config: &str, extra: &[&str]) -> (Observer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("varta.toml");
    std::fs::write(&file, config).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut args = vec!["--config", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let obs = Observer::start_in(dir, &refs);
    (obs, file)
}

/// JSON export lines of `kind` for `pid`.
fn json_lines(obs: &Observer, kind: &str, pid: Option<u32>) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(&obs.export).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .filter(|v| pid.is_none_or(|p| v["pid"] == p))
        .collect()
}

fn wait_json(obs: &Observer, kind: &str, pid: Option<u32>) -> serde_json::Value {
    let mut found = None;
    obs.wait_until(&format!("{kind} for {pid:?}"), || {
        found = json_lines(obs, kind, pid).into_iter().next();
        found.is_some()
    });
    found.unwrap()
}

fn ns(v: &serde_json::Value) -> u64 {
    v["observer_ns"].as_u64().unwrap()
}

/// Observer time of the last beat of `pid` before `before_ns`.
fn last_beat(obs: &Observer, pid: u32, before_ns: u64) -> u64 {
    json_lines(obs, "beat", Some(pid))
        .iter()
        .map(ns)
        .filter(|&t| t <= before_ns)
        .max()
        .expect("a beat before the stall")
}

#[test]
fn rules_set_threshold_grace_and_name_per_agent() {
    let (obs, _) = observer(
        r#"
threshold-ms = 5000
export-format = "json"
[[agent]]
match = { comm = "slowstart" }
name = "{comm}-svc"
threshold-ms = 300
startup-grace-ms = 1500
[[agent]]
match = { comm = "fastone" }
name = "{comm}-svc"
threshold-ms = 300
"#,
        &[],
    );
    let dir = obs.dir.path().to_path_buf();
    let slow = named_agent(&dir, "slowstart", "quiet", &obs.socket, 1);
    let fast = named_agent(&dir, "fastone", "quiet", &obs.socket, 2);
    let (slow_pid, fast_pid) = (slow.id(), fast.id());

    let id = wait_json(&obs, "identified", Some(fast_pid));
    assert_eq!(id["name"], "fastone-svc");
    assert_eq!(id["comm"], "fastone");
    assert_eq!(id["detail"], "rule=#2");
    // The fast one stalls at its own 300 ms, far from the global 5 s.
    let stall = wait_json(&obs, "stall", Some(fast_pid));
    let silent = ns(&stall) - last_beat(&obs, fast_pid, ns(&stall));
    assert!(
        (300_000_000..1_500_000_000).contains(&silent),
        "{silent} ns"
    );
    assert_eq!(stall["name"], "fastone-svc");

    // The slow starter beat once: grace + threshold = 1.8 s before its stall.
    let stall = wait_json(&obs, "stall", Some(slow_pid));
    let silent = ns(&stall) - last_beat(&obs, slow_pid, ns(&stall));
    assert!(
        (1_800_000_000..3_000_000_000).contains(&silent),
        "{silent} ns"
    );
    assert!(obs
        .stderr()
        .contains(&format!("agent slowstart-svc[{slow_pid}] stalled after")));
}

#[test]
fn a_process_gone_before_its_identity_is_read_is_unknown() {
    let (obs, _) = observer("export-format = \"json\"\n", &[]);
    // Beats once and exits at once.
    let mut once = common::spawn_agent("once", &obs.socket, 10);
    let pid = once.id();
    let _ = once.wait();
    let id = wait_json(&obs, "identified", Some(pid));
    // Either the read won the race (named after the test binary) or the
    // process was gone: then `unknown`, never an error.
    let name = id["name"].as_str().unwrap().to_string();
    assert!(!name.is_empty());
    assert!(!obs.stderr().contains("ERROR"), "{}", obs.stderr());
}

#[test]
fn a_required_agent_is_missing_then_present() {
    let (obs, _) = observer(
        r#"
threshold-ms = 500
[[agent]]
match = { comm = "ghost" }
name = "ghost"
[[agent]]
match = { name = "ghost" }
required = true
startup-grace-ms = 300
"#,
        &[],
    );
    // TSV export: `missing` then `present` lines name it.
    obs.wait_until("missing ghost", || {
        obs.lines()
            .iter()
            .any(|l| l.len() == 6 && l[1] == "missing" && l[5] == "ghost")
    });
    assert!(obs.stderr().contains("required agent ghost is missing"));
    let dir = obs.dir.path().to_path_buf();
    let ghost = named_agent(&dir, "ghost", "beat", &obs.socket, 0);
    let present = obs.wait_for("present", Some(ghost.id()));
    assert_eq!(present[5], "ghost");
    // It goes away: missing again after the grace.
    drop(ghost);
    obs.wait_until("missing again", || {
        obs.lines()
            .iter()
            .filter(|l| l.len() == 6 && l[1] == "missing")
            .count()
            == 2
    });
}

#[test]
fn reload_changes_a_live_agents_threshold_without_a_spurious_stall() {
    let rules = |ms: u64| {
        format!(
            "export-format = \"json\"\n[[agent]]\nmatch = {{ comm = \"relo*\" }}\nthreshold-ms = {ms}\n"
        )
    };
    let (obs, file) = observer(&rules(3000), &[]);
    let dir = obs.dir.path().to_path_buf();
    let steady = named_agent(&dir, "relosteady", "beat", &obs.socket, 0);
    let quiet = named_agent(&dir, "reloquiet", "quiet", &obs.socket, 3);
    wait_json(&obs, "identified", Some(quiet.id()));
    wait_json(&obs, "identified", Some(steady.id()));
    // Let the quiet one be silent for a while, then shorten its threshold.
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&file, rules(600)).unwrap();
    obs.signal(nix::sys::signal::Signal::SIGHUP);
    // Its silence so far counts: it stalls about 600 ms after its last
    // beat, not 600 ms after the reload.
    let stall = wait_json(&obs, "stall", Some(quiet.id()));
    let silent = ns(&stall) - last_beat(&obs, quiet.id(), ns(&stall));
    assert!(
        (600_000_000..1_600_000_000).contains(&silent),
        "{silent} ns"
    );
    // The agent beating every 50 ms never stalls.
    std::thread::sleep(Duration::from_millis(800));
    assert!(json_lines(&obs, "stall", Some(steady.id())).is_empty());
    assert!(obs.stderr().contains("reload applied"), "{}", obs.stderr());
}
