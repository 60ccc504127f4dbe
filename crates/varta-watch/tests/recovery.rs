//! Recovery with real processes: the real observer runs real recovery
//! commands (small shell scripts written by the test — the observer itself
//! never uses a shell) for real agents, and the tests read the real audit
//! log and JSON event export.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{spawn_agent, Observer, PATIENCE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

/// Writes an executable script `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    p
}

/// Starts an observer whose export is JSON, in a fresh directory, with a
/// recovery script `body` and the audit log at DIR/audit.tsv.
fn observer_with(body: &str, exec_args: &str, extra: &[&str]) -> (Observer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "recover.sh", body);
    let audit = dir.path().join("audit.tsv");
    let exec = format!("{} {exec_args}", s.display());
    let mut args: Vec<String> = vec![
        "--export-format".into(),
        "json".into(),
        "--recovery-exec".into(),
        exec,
        "--recovery-audit-file".into(),
        audit.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (Observer::start_in(dir, &refs), audit)
}

fn dir(obs: &Observer) -> &Path {
    obs.dir.path()
}

/// Audit records (header skipped) split on tabs.
fn audit_records(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn records_of(path: &Path, kind: &str) -> Vec<Vec<String>> {
    audit_records(path)
        .into_iter()
        .filter(|r| r.len() > 3 && r[3] == kind)
        .collect()
}

/// Waits until the audit log holds at least `n` records of `kind` (the
/// writer thread commits them after the event is exported) and returns them.
fn wait_records(obs: &Observer, audit: &Path, kind: &str, n: usize) -> Vec<Vec<String>> {
    obs.wait_until(&format!("{n} audit {kind} record(s)"), || {
        records_of(audit, kind).len() >= n
    });
    records_of(audit, kind)
}

/// JSON export events of `kind`.
fn events(obs: &Observer, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&obs.export)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// Recovery events for `pid` whose detail starts with `outcome`.
fn outcomes(obs: &Observer, pid: u32, outcome: &str) -> usize {
    events(obs, "recovery")
        .iter()
        .filter(|v| v["pid"] == pid)
        .filter(|v| v["detail"].as_str().unwrap_or("").split(' ').next() == Some(outcome))
        .count()
}

fn wait_outcome(obs: &Observer, pid: u32, outcome: &str, n: usize) {
    obs.wait_until(&format!("{n}× recovery {outcome} for {pid}"), || {
        outcomes(obs, pid, outcome) >= n
    });
}

fn stop(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
}

fn cont(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie still counts, so also read state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn verify(audit: &Path) -> varta_audit::Summary {
    varta_audit::verify_files(&[audit.to_path_buf()], &varta_audit::ChainKey::Plain)
        .unwrap_or_else(|e| panic!("audit chain must verify: {e}"))
}

#[test]
fn stall_spawns_and_reaps_with_exit_code_duration_and_pid() {
    let (obs, audit) = observer_with(
        "echo \"$@\" > \"$(dirname \"$0\")/args.$VARTA_AGENT_PID\"; sleep 0.2; exit 3",
        "--agent {pid} x{pid}y",
        &["--threshold-ms", "300"],
    );
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "reaped_nonzero", 1);
    let args = std::fs::read_to_string(dir(&obs).join(format!("args.{pid}"))).unwrap();
    assert_eq!(args.trim(), format!("--agent {pid} x{pid}y"));
    let spawn = &wait_records(&obs, &audit, "spawn", 1)[0];
    assert_eq!(spawn[4], pid.to_string());
    assert_eq!(spawn[6], "exec");
    assert!(spawn[7].ends_with("recover.sh"), "{spawn:?}");
    assert_eq!(spawn[8], "inline");
    let complete = &wait_records(&obs, &audit, "complete", 1)[0];
    assert_eq!(complete[4], pid.to_string());
    assert_eq!(complete[5], spawn[5], "same child");
    assert_eq!(complete[6], "reaped");
    assert_eq!(complete[7], "3", "exit code");
    assert_eq!(complete[8], "-", "no signal");
    let dur: u64 = complete[9].parse().unwrap();
    assert!(
        dur >= 200_000_000,
        "duration {dur} ns covers the 0.2 s sleep"
    );
    cont(pid);
    verify(&audit);
}

#[test]
fn metacharacters_are_plain_bytes() {
    let (obs, audit) = observer_with(
        "for a in \"$@\"; do echo \"$a\"; done > \"$(dirname \"$0\")/args\"",
        "{pid} ;touch${IFS}pwned $(touch${IFS}pwned2) `id` |x &&y '*' >out",
        &["--threshold-ms", "300"],
    );
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "reaped_zero", 1);
    let args = std::fs::read_to_string(dir(&obs).join("args")).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(
        lines,
        vec![
            pid.to_string().as_str(),
            ";touch${IFS}pwned",
            "$(touch${IFS}pwned2)",
            "`id`",
            "|x",
            "&&y",
            "'*'",
            ">out"
        ]
    );
    for f in ["pwned", "pwned2", "out"] {
        assert!(!dir(&obs).join(f).exists(), "{f} must not exist");
    }
    cont(pid);
    verify(&audit);
}

#[test]
fn environment_is_isolated_unless_inherited() {
    for inherit in [false, true] {
        let mut extra = vec!["--threshold-ms", "300", "--recovery-env", "EXTRA=1 2"];
        if inherit {
            extra.push("--recovery-inherit-env");
        }
        std::env::set_var("VARTA_TEST_SECRET", "hunter2");
        let (obs, _audit) =
            observer_with("/usr/bin/env > \"$(dirname \"$0\")/env\"", "{pid}", &extra);
        let (_agent, pid) = beating(&obs);
        stop(pid);
        wait_outcome(&obs, pid, "reaped_zero", 1);
        let env = std::fs::read_to_string(dir(&obs).join("env")).unwrap();
        let vars: Vec<&str> = env
            .lines()
            .filter(|l| {
                // What sh itself exports.
                !["PWD=", "SHLVL=", "_=", "OLDPWD="]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        assert!(vars.contains(&"EXTRA=1 2"), "{vars:?}");
        assert!(vars.contains(&format!("VARTA_AGENT_PID={pid}").as_str()));
        assert!(vars.contains(&"VARTA_EVENT=stall"));
        if inherit {
            assert!(vars.contains(&"VARTA_TEST_SECRET=hunter2"), "{vars:?}");
            assert!(obs.stderr().contains("recovery-inherit-env"));
        } else {
            // Who the agent is (its name at least is always known).
            assert!(
                vars.iter().any(|v| v.starts_with("VARTA_AGENT_NAME=")),
                "{vars:?}"
            );
            let mut sorted: Vec<String> = vars
                .iter()
                .filter(|v| {
                    ![
                        "VARTA_AGENT_NAME=",
                        "VARTA_AGENT_UNIT=",
                        "VARTA_AGENT_CONTAINER=",
                        "VARTA_AGENT_COMM=",
                        "VARTA_AGENT_EXE=",
                    ]
                    .iter()
                    .any(|p| v.starts_with(p))
                })
                .map(|v| v.to_string())
                .collect();
            sorted.sort_unstable();
            let expected = vec![
                "EXTRA=1 2".to_string(),
                "PATH=/usr/bin:/bin".to_string(),
                format!("VARTA_AGENT_PID={pid}"),
                "VARTA_EVENT=stall".to_string(),
            ];
            assert_eq!(
                sorted, expected,
                "nothing of the observer's environment leaks"
            );
        }
        cont(pid);
    }
}

#[test]
fn capture_keeps_lengths_excerpt_and_truncation() {
    let (obs, audit) = observer_with(
        "echo 'restart failed: unit not found' >&2; head -c 20000 /dev/zero | tr '\\0' x; exit 1",
        "{pid}",
        &[
            "--threshold-ms",
            "300",
            "--recovery-capture-stdio",
            "--recovery-capture-bytes",
            "100",
        ],
    );
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "reaped_nonzero", 1);
    let complete = &wait_records(&obs, &audit, "complete", 1)[0];
    let out: u32 = complete[10].parse().unwrap();
    let err: u32 = complete[11].parse().unwrap();
    assert_eq!(out + err, 100, "one combined cap: {complete:?}");
    assert_eq!(complete[12], "true", "truncated");
    assert!(
        complete[13].contains("restart failed") || complete[13].contains("xxxx"),
        "excerpt column: {complete:?}"
    );
    cont(pid);
    verify(&audit);
}

#[test]
fn one_child_per_agent_then_debounce() {
    let (obs, audit) = observer_with(
        "sleep 1.5",
        "{pid}",
        &[
            "--threshold-ms",
            "300",
            "--recovery-debounce-ms",
            "0",
            "--recovery-backoff-ms",
            "0",
        ],
    );
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "spawned", 1);
    // While the first child still runs, the agent beats and stalls again.
    cont(pid);
    obs.wait_until("recovered", || !events(&obs, "recovered").is_empty());
    stop(pid);
    wait_outcome(&obs, pid, "debounced", 1);
    assert_eq!(outcomes(&obs, pid, "spawned"), 1, "one child per agent");
    wait_outcome(&obs, pid, "reaped_zero", 1);
    cont(pid);
    assert_eq!(wait_records(&obs, &audit, "spawn", 1).len(), 1);

    // Debounce window: a second stall right after a finished child is held.
    let (obs, audit) = observer_with(
        "exit 0",
        "{pid}",
        &[
            "--threshold-ms",
            "300",
            "--recovery-debounce-ms",
            "60000",
            "--recovery-backoff-ms",
            "0",
        ],
    );
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "reaped_zero", 1);
    cont(pid);
    obs.wait_until("recovered", || !events(&obs, "recovered").is_empty());
    stop(pid);
    wait_outcome(&obs, pid, "debounced", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(records_of(&audit, "spawn").len(), 1, "held by the debounce");
    cont(pid);
}

#[test]
fn storm_cap_gives_up_and_a_beat_clears_it() {
    let (obs, audit) = observer_with(
        "exit 0",
        "{pid}",
        &[
            "--threshold-ms",
            "300",
            "--recovery-debounce-ms",
            "0",
            "--recovery-backoff-ms",
            "100",
            "--recovery-max-attempts",
            "2",
            "--recovery-window-ms",
            "600000",
        ],
    );
    let (_agent, pid) = beating(&obs);
    // Flap: every silence is a stall, every resume a recovery.
    for attempt in 1..=2 {
        stop(pid);
        wait_outcome(&obs, pid, "reaped_zero", attempt);
        cont(pid);
        obs.wait_until("recovered", || events(&obs, "recovered").len() >= attempt);
    }
    stop(pid);
    wait_outcome(&obs, pid, "given_up", 1);
    assert_eq!(outcomes(&obs, pid, "spawned"), 2, "capped at 2 attempts");
    let refused = wait_records(&obs, &audit, "refused", 1);
    assert_eq!(refused.last().unwrap()[5], "given_up");
    assert!(obs.stderr().contains("given up"), "{}", obs.stderr());
    cont(pid);
    wait_outcome(&obs, pid, "given_up_cleared", 1);
    verify(&audit);
}

#[test]
fn timeout_ladder_kills_child_and_grandchild_that_ignore_sigterm() {
    let (obs, audit) = observer_with(
        "trap '' TERM; sleep 60 & echo $! > \"$(dirname \"$0\")/grandchild\"; sleep 60",
        "{pid}",
        &[
            "--threshold-ms",
            "300",
            // Long enough for sh to reach its `trap` on a loaded machine:
            // a SIGTERM before it would end the child without the ladder.
            "--recovery-timeout-ms",
            "1500",
            "--recovery-kill-grace-ms",
            "300",
        ],
    );
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "killed", 1);
    let complete = &wait_records(&obs, &audit, "complete", 1)[0];
    assert_eq!(complete[6], "killed");
    assert_eq!(complete[8], "9", "SIGKILL after SIGTERM was ignored");
    let gc: i32 = std::fs::read_to_string(dir(&obs).join("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    while alive(gc) && t0.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(gc), "grandchild {gc} must be killed with the group");
    cont(pid);
    verify(&audit);
}

#[test]
fn terminal_frame_recovers_without_waiting_for_threshold() {
    let (obs, audit) = observer_with(
        "echo \"$VARTA_EVENT $VARTA_AGENT_PID $1\" > \"$(dirname \"$0\")/event\"",
        "{pid}",
        &["--threshold-ms", "30000"],
    );
    let start = Instant::now();
    let mut agent = spawn_agent("panic", &obs.socket, 20);
    let pid = agent.id();
    agent.wait().unwrap();
    wait_outcome(&obs, pid, "reaped_zero", 1);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "exit recovery must not wait for the 30 s threshold"
    );
    let event = std::fs::read_to_string(dir(&obs).join("event")).unwrap();
    assert_eq!(event.trim(), format!("exit {pid} {pid}"));
    assert_eq!(
        wait_records(&obs, &audit, "spawn", 1)[0][4],
        pid.to_string()
    );
    assert!(
        events(&obs, "stall").is_empty(),
        "no stall after a dying gasp"
    );
}

#[test]
fn capacity_refusals_are_counted_and_audited() {
    // One child at a time: the second agent's stall is refused.
    let (obs, audit) = observer_with(
        "sleep 2",
        "{pid}",
        &["--threshold-ms", "300", "--recovery-max-children", "1"],
    );
    let (_a, pa) = beating(&obs);
    let (_b, pb) = beating(&obs);
    stop(pa);
    wait_outcome(&obs, pa, "spawned", 1);
    stop(pb);
    wait_outcome(&obs, pb, "refused_outstanding_capacity", 1);
    let refused = wait_records(&obs, &audit, "refused", 1);
    assert_eq!(refused[0][4], pb.to_string());
    assert_eq!(refused[0][5], "outstanding_capacity");
    cont(pa);
    cont(pb);

    // A one-entry table: the second agent's stall is refused.
    let (obs, audit) = observer_with(
        "exit 0",
        "{pid}",
        &["--threshold-ms", "300", "--recovery-table-capacity", "1"],
    );
    let (_a, pa) = beating(&obs);
    let (_b, pb) = beating(&obs);
    stop(pa);
    wait_outcome(&obs, pa, "reaped_zero", 1);
    stop(pb);
    wait_outcome(&obs, pb, "refused_debounce_capacity", 1);
    assert_eq!(
        wait_records(&obs, &audit, "refused", 1)[0][5],
        "debounce_capacity",
        "audited with the original's token"
    );
    cont(pa);
    cont(pb);
    verify(&audit);
}

#[test]
fn cross_namespace_agent_is_refused() {
    let (obs, audit) = observer_with(
        "exit 0",
        "{pid}",
        &["--threshold-ms", "300", "--allow-cross-namespace-agents"],
    );
    let Some(ns) = common::spawn_namespaced_agent(&obs.socket) else {
        eprintln!("skipped: needs root and unshare(1)");
        return;
    };
    obs.wait_until("a beat from the namespace", || {
        !events(&obs, "beat").is_empty()
    });
    drop(ns); // kills the whole namespace: its agent stalls
    obs.wait_until("refusal", || !records_of(&audit, "refused").is_empty());
    assert_eq!(records_of(&audit, "refused")[0][5], "cross_namespace_agent");
    assert!(records_of(&audit, "spawn").is_empty());
}

#[test]
fn shutdown_ladders_running_children_and_writes_their_records() {
    let (mut obs, audit) = observer_with(
        "trap '' TERM; sleep 60",
        "{pid}",
        &[
            "--threshold-ms",
            "300",
            "--shutdown-grace-ms",
            "600",
            "--recovery-kill-grace-ms",
            "200",
        ],
    );
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "spawned", 1);
    let child: i32 = wait_records(&obs, &audit, "spawn", 1)[0][5]
        .parse()
        .unwrap();
    let t0 = Instant::now();
    obs.signal(Signal::SIGTERM);
    assert_eq!(obs.wait_exit(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!alive(child), "child killed at shutdown");
    let complete = records_of(&audit, "complete");
    assert_eq!(complete.len(), 1, "complete record written before exit");
    assert_eq!(complete[0][6], "killed");
    cont(pid);
    verify(&audit);
}

/// An agent beating every 20 ms, seen by the observer.
fn beating(obs: &Observer) -> (common::ChildGuard, u32) {
    let agent = spawn_agent("beat", &obs.socket, 20);
    let pid = agent.id();
    obs.wait_for_json_beat(pid);
    (agent, pid)
}

trait JsonObserver {
    fn wait_for_json_beat(&self, pid: u32);
}

impl JsonObserver for Observer {
    fn wait_for_json_beat(&self, pid: u32) {
        self.wait_until(&format!("a beat from {pid}"), || {
            events(self, "beat").iter().any(|v| v["pid"] == pid)
        });
    }
}

#[test]
fn reload_applies_a_new_command_to_the_next_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let first = script(
        dir.path(),
        "first.sh",
        "touch \"$(dirname \"$0\")/first.ran\"",
    );
    let second = script(
        dir.path(),
        "second.sh",
        "touch \"$(dirname \"$0\")/second.ran\"",
    );
    let cfg = dir.path().join("varta.toml");
    let write_cfg = |prog: &Path| {
        std::fs::write(
            &cfg,
            format!(
                "threshold-ms = 300\nexport-format = \"json\"\nrecovery-exec = \"{} {{pid}}\"\n",
                prog.display()
            ),
        )
        .unwrap();
    };
    write_cfg(&first);
    let cfg_arg = cfg.display().to_string();
    let base = dir.path().to_path_buf();
    let obs = Observer::start_in(dir, &["--config", &cfg_arg]);
    write_cfg(&second);
    obs.signal(Signal::SIGHUP);
    obs.wait_until("reload applied", || obs.stderr().contains("reload applied"));
    let (_agent, pid) = beating(&obs);
    stop(pid);
    wait_outcome(&obs, pid, "reaped_zero", 1);
    assert!(base.join("second.ran").exists(), "the reloaded command ran");
    assert!(!base.join("first.ran").exists(), "the old one did not");
    cont(pid);
}
