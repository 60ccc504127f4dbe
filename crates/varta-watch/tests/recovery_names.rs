//! Recovery that knows who the agent is: a real observer, a config file
//! with `[[agent]]` rules, real agent processes. A rule's `recovery-exec`
//! (with no global command) runs with `{name}`, `{pid}`, `{comm}`
//! substituted and `VARTA_AGENT_*` set; `recovery = false` keeps a matched
//! agent from being recovered while others are; the v3 audit log carries
//! the agent's name and verifies.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{spawn_guarded, ChildGuard, Observer, AGENT_ENV, INTERVAL_ENV, SOCKET_ENV};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

/// A quiet agent (one beat, then silence: a stall) run through `exe`, so
/// its `comm` is `exe`'s file name.
fn quiet_agent(exe: &Path, socket: &Path) -> ChildGuard {
    spawn_guarded(
        Command::new(exe)
            .args(["--exact", "agent_entry", "--nocapture", "--test-threads=1"])
            .env(AGENT_ENV, "quiet")
            .env(SOCKET_ENV, socket)
            .env(INTERVAL_ENV, "20")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("spawn agent")
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn rule_command_gets_the_agent_name_and_recovery_false_suppresses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let script = d.join("recover.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nd=$(dirname \"$0\")\nprintf '%s\\n' \"$@\" > \"$d/args.$VARTA_AGENT_PID.tmp\"\nenv | grep '^VARTA_' > \"$d/env.$VARTA_AGENT_PID\"\nmv \"$d/args.$VARTA_AGENT_PID.tmp\" \"$d/args.$VARTA_AGENT_PID\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The same test binary under another name: its comm is `quietagent`.
    let other = d.join("quietagent");
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &other).unwrap();
    let audit = d.join("audit.tsv");
    let cfg = d.join("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            "threshold-ms = 300\nrecovery-audit-schema = \"v3\"\n\n\
             [[agent]]\nmatch = {{ comm = \"quietagent\" }}\nrecovery = false\n\n\
             [[agent]]\nmatch = {{ comm = \"recovery_names*\" }}\n\
             recovery-exec = \"{} {{name}} {{pid}} n={{name}}.{{pid}} {{comm}} {{container}}\"\n",
            script.display()
        ),
    )
    .unwrap();
    let cfg_arg = cfg.display().to_string();
    let audit_arg = audit.display().to_string();
    let obs = Observer::start_in(
        dir,
        &[
            "--config",
            &cfg_arg,
            "--export-format",
            "json",
            "--recovery-audit-file",
            &audit_arg,
        ],
    );
    let me = std::env::current_exe().unwrap();
    let recovered = quiet_agent(&me, &obs.socket);
    let suppressed = quiet_agent(&other, &obs.socket);
    let (rp, sp) = (recovered.id(), suppressed.id());

    let args_path = d.join(format!("args.{rp}"));
    obs.wait_until("the rule's command ran for the matched agent", || {
        args_path.exists()
    });
    let args: Vec<String> = std::fs::read_to_string(&args_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let env = env_file(&d.join(format!("env.{rp}")));
    let name = env
        .get("VARTA_AGENT_NAME")
        .cloned()
        .expect("VARTA_AGENT_NAME set");
    let comm = env
        .get("VARTA_AGENT_COMM")
        .cloned()
        .expect("VARTA_AGENT_COMM");
    assert!(comm.starts_with("recovery_names"), "{comm}");
    assert_ne!(name, "unknown");
    assert_eq!(
        args,
        vec![
            name.clone(),
            rp.to_string(),
            format!("n={name}.{rp}"),
            comm,
            // Not in a container: an unknown field renders `unknown`.
            "unknown".to_string(),
        ]
    );
    assert_eq!(env["VARTA_AGENT_PID"], rp.to_string());
    assert_eq!(env["VARTA_EVENT"], "stall");
    assert!(env.contains_key("VARTA_AGENT_EXE"));
    assert!(!env.contains_key("VARTA_AGENT_CONTAINER"));

    // The other agent stalled too, and was not recovered.
    obs.wait_until("the suppressed agent's stall", || {
        std::fs::read_to_string(&obs.export)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["kind"] == "stall" && v["pid"] == sp)
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!d.join(format!("args.{sp}")).exists());
    let export = std::fs::read_to_string(&obs.export).unwrap();
    assert!(
        !export
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["kind"] == "recovery" && v["pid"] == sp),
        "no recovery event for the recovery = false agent"
    );

    // The v3 audit log names the agent, and verifies.
    obs.wait_until("spawn and complete audited", || {
        let t = std::fs::read_to_string(&audit).unwrap_or_default();
        t.contains("\tspawn\t") && t.contains("\tcomplete\t")
    });
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.starts_with(varta_audit::HEADER_V3), "{text}");
    let spawn: Vec<&str> = text
        .lines()
        .find(|l| l.contains("\tspawn\t"))
        .unwrap()
        .split('\t')
        .collect();
    assert_eq!(spawn[4], rp.to_string());
    assert_eq!(spawn[8], "[[agent]] #2", "source names the rule");
    assert_eq!(spawn[spawn.len() - 3], name);
    assert!(
        !text.contains(&format!("\t{sp}\t")),
        "nothing audited for the suppressed agent"
    );
    let sum =
        varta_audit::verify_files(std::slice::from_ref(&audit), &varta_audit::ChainKey::Plain)
            .unwrap_or_else(|e| panic!("v3 audit must verify: {e}"));
    assert_eq!(sum.v3_files, 1);
    drop(recovered);
    drop(suppressed);
}
