//! The observer subcommands (`status`, `agents`, `agent`, `events`,
//! `reload`) of the real `varta` binary against a fake control server
//! that answers as docs/api.md describes.

mod fake_server;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake_server::{Fake, AGENTS};
use serde_json::Value;

fn varta(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("--control-socket")
        .arg(socket)
        .args(args)
        .env_remove("VARTA_CONTROL_SOCKET")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn status_shows_summary_and_capped_problem_table() {
    let fake = Fake::start();
    let out = varta(&fake.path, &["status", "--max-rows", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(!s.contains('\x1b'), "no colour when piped:\n{s}");
    for needle in [
        "varta-watch 0.3.0 (pid 4242), up 1h00m",
        "2250 alive, 250 stalled, 2 given up, 0 exited, 1 missing",
        "applied at 2025-11-30T19:13:20.000Z: threshold-ms 5000 -> 3000",
        "PID  NAME             STATE    SILENT FOR  UNIT/CONTAINER   RECOVERY",
        "110  svc-110.service  stalled  7.5s        svc-110.service  none yet",
        "-    nginx.service    missing",
        "… and 245 more (varta agents --state stalled)",
    ] {
        assert!(s.contains(needle), "{needle:?} not in\n{s}");
    }
    assert!(fake
        .requests()
        .contains(&"GET /v1/agents?state=stalled,given_up&limit=5".to_owned()));
}

#[test]
fn status_color_always_and_json() {
    let fake = Fake::start();
    let out = varta(&fake.path, &["--color", "always", "status"]);
    assert!(text(&out.stdout).contains("\x1b["), "colour forced");
    let out = varta(&fake.path, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["version"], "0.3.0");
    assert_eq!(v["agents"].as_array().unwrap().len(), 50);
    assert_eq!(v["agents_total"], 250);
    assert_eq!(v["agents"][0]["pid"], 100);
}

#[test]
fn agents_streams_every_page() {
    let fake = Fake::start();
    let out = varta(&fake.path, &["agents", "--page-size", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), AGENTS as usize + 1, "header + every agent");
    assert!(
        lines[0].starts_with("PID   NAME              STATE     LAST BEAT  STATUS  ORIGIN"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("100   svc-100.service   stalled   7.5s ago"),
        "{}",
        lines[1]
    );
    assert!(lines[AGENTS as usize].starts_with("2599"));
    let reqs = fake.requests();
    assert_eq!(
        reqs,
        [
            "GET /v1/agents?limit=1000",
            "GET /v1/agents?limit=1000&cursor=c1099",
            "GET /v1/agents?limit=1000&cursor=c2099",
        ]
    );
}

#[test]
fn agents_filters_limit_and_json_lines() {
    let fake = Fake::start();
    let out = varta(
        &fake.path,
        &["agents", "--state", "stalled", "--name", "svc-1*", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        110,
        "stalled: pids 100..190 and 1000..1990 ending in 0"
    );
    assert!(lines.iter().all(|a| a["state"] == "stalled"));
    assert_eq!(
        fake.requests()[0],
        "GET /v1/agents?state=stalled&name=svc-1*&limit=1000"
    );

    let out = varta(&fake.path, &["agents", "--limit", "3"]);
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 5, "{s}");
    assert!(s.ends_with("… 3 of 2500 shown (--limit)\n"), "{s}");

    let out = varta(&fake.path, &["agents", "--state", "exited"]);
    assert_eq!(text(&out.stdout), "No agents match.\n");
    let out = varta(&fake.path, &["agents", "--state", "bogus"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn agents_output_closed_early_is_not_an_error() {
    let fake = Fake::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("--control-socket")
        .arg(&fake.path)
        .args(["agents", "--page-size", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn agent_shows_fields_or_404_line() {
    let fake = Fake::start();
    let out = varta(&fake.path, &["agent", "1000"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    for needle in [
        "pid        1000",
        "state      given_up",
        "exe        /usr/bin/svc",
        "recovery   3 attempts, last outcome nonzero_exit, given up: yes",
    ] {
        assert!(s.contains(needle), "{needle:?} not in\n{s}");
    }
    let out = varta(&fake.path, &["agent", "1000", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recovery"]["given_up"], true);

    let out = varta(&fake.path, &["agent", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "varta: the observer refused the request: pid 7 is not tracked (HTTP 404)\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn events_recent_and_follow_until_dropped() {
    let fake = Fake::start();
    let out = varta(
        &fake.path,
        &["events", "--limit", "5", "--kind", "stall,recovered"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 2, "{s}");
    assert!(s.starts_with("2025-11-30T19:13:20.123Z  stall           110  svc-110.service"));
    assert_eq!(
        fake.requests()[0],
        "GET /v1/events?kind=stall,recovered&limit=5"
    );

    let out = varta(&fake.path, &["events", "--follow", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 4, "{s}");
    assert!(s.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert_eq!(
        text(&out.stderr),
        "varta: the observer dropped this event stream: reader too slow: 4100 events not delivered\n"
    );
    assert_eq!(fake.requests()[1], "GET /v1/events?follow=1");

    let out = varta(&fake.path, &["events", "--follow", "--limit", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).lines().count(), 2);
}

#[test]
fn events_follow_ends_cleanly_on_ctrl_c() {
    let fake = Fake::start();
    fake.state.follow_forever.store(true, Ordering::SeqCst);
    let child = Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("--control-socket")
        .arg(&fake.path)
        .args(["events", "--follow", "--timeout-ms", "200"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the 200 ms request deadline: a followed stream must not time out.
    std::thread::sleep(Duration::from_millis(800));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn reload_applied_and_failed() {
    let fake = Fake::start();
    let out = varta(&fake.path, &["reload"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "applied: 1 change\n  threshold-ms 5000 -> 3000\n"
    );
    fake.state.reload_fails.store(true, Ordering::SeqCst);
    let out = varta(&fake.path, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "varta: reload failed, the observer keeps its configuration: config file /etc/varta/varta-watch.toml: unknown key `treshold-ms`\n"
    );
    let out = varta(&fake.path, &["reload", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "failed");
    assert!(fake.requests().iter().all(|r| r == "POST /v1/reload"));
}

#[test]
fn a_silent_observer_times_out_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake_server::silent_socket(dir.path());
    let start = Instant::now();
    let out = varta(&path, &["status", "--timeout-ms", "300"]);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "varta: the observer at {} did not answer within 300 ms (raise --timeout-ms if it is busy)\n",
            path.display()
        )
    );
}

#[test]
fn the_environment_names_the_socket() {
    let fake = Fake::start();
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .arg("status")
        .env("VARTA_CONTROL_SOCKET", &fake.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
