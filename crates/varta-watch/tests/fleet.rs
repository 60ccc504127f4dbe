//! Fleet end to end (issue 13, item 3): the way a fleet runs Varta, with
//! real binaries on loopback and nothing faked.
//!
//! - **20 observers** (`varta-watch`, this build) stand for 20 hosts
//!   `host-01` … `host-20`: each has its own directory, beat socket,
//!   `/metrics` port (`--prom-addr 127.0.0.1:0`, bearer token) and
//!   `--alert-instance`, and pushes its agent alerts to **both**
//!   Alertmanagers (`--alertmanager-url` twice).
//! - **Two agents per host**, real processes linking varta-client (this
//!   test binary re-executed, as in tests/common), started through symlinks
//!   `fleet-api` and `fleet-worker` so that their `comm` differs; the
//!   observers' `[[agent]]` rules name them `api` and `worker` (the `name`
//!   label).
//! - **One Prometheus** (Debian's `prometheus`) scrapes all 20 every 2 s
//!   through file-based service discovery, the target's `instance` label
//!   set to the observer's `--alert-instance`, with the bundle's rules
//!   (`observability/prometheus/varta-alerts.yml`, `varta-recording.yml`)
//!   loaded, and sends its alerts to both Alertmanagers.
//! - **Two Alertmanagers** (Debian's `prometheus-alertmanager`) form one
//!   cluster, gossiping on loopback ports, and run the bundle's
//!   `observability/alertmanager/alertmanager.yml` (routing by severity,
//!   inhibitions) with its receivers pointed at a webhook served here.
//!
//! What is checked, in order:
//! 1. The fleet is up: Prometheus has every target up under its instance
//!    name, sees all 40 agents alive under their names, and has loaded
//!    every rule of the bundle; both Alertmanager peers report a ready
//!    cluster of two.
//! 2. Five agents hang (SIGSTOP) on five hosts. The webhook is notified of
//!    each one's `VartaAgentStalled` (pushed by its observer) firing
//!    **exactly once**, on the warning route, with the right `instance` and
//!    `name` — though both peers hold the alert (checked through their
//!    APIs): the cluster deduplicated the two copies. The fleet recording
//!    rule `varta:agents_stalled:sum` reaches 5; Prometheus' own
//!    `VartaAgentsStalled` (per instance and name) reaches both peers and
//!    the webhook once each too.
//! 3. The peer that sent those notifications is killed mid-run. A sixth
//!    agent hangs on another host: its notification comes, once, from the
//!    surviving peer.
//! 4. One observer is killed. `VartaObserverDown` fires for that instance
//!    only — in Prometheus' `/api/v1/alerts` and at the webhook (critical
//!    route, through the surviving peer); `varta:observers_up:sum` drops to
//!    19 and `varta:agents_stalled:sum` shows 6.
//! 5. Over the whole run, nothing else was notified (no alert of the
//!    bundle fired falsely on a healthy fleet), nothing twice, nothing
//!    resolved.
//!
//! "Notified exactly once": a webhook notification carries the alerts of
//! one group, and the bundle groups by `[alertname, instance, name]`, so
//! each alert here is its own group. An alert is counted once per
//! notification that carries it with status `firing`; the count must be 1.
//! A duplicate would come from the second peer (it waits its position ×
//! `--cluster.peer-timeout`, 5 s here, then sends unless the first peer's
//! notification log has reached it) or from a repeat at a group interval
//! (2 s here); each check therefore waits a window of 10 s after the last
//! notification before counting. `repeat_interval` stays as shipped (1 h,
//! 4 h), so any repeat within the run is a duplicate.
//!
//! **Shortened waiting times.** The bundle's rules wait `for: 1m`/`2m`/`5m`
//! and its Alertmanager routes `group_wait: 10s`/`group_interval: 1m`; a
//! bounded test cannot. The test therefore loads copies written into its
//! TempDir in which only those lines differ: every `for:` is 5 s, group
//! wait 1 s, group interval 2 s, and the receivers' URLs point here (path
//! kept). `fleet_support/bundle.rs` asserts, line by line, that the copies
//! differ from the bundle in nothing else, so a renamed metric, a changed
//! expression, label, route or inhibition in the bundle is what runs here.
//! The recording rules keep their group's `interval: 30s`, so waits for
//! them are bounded at 65 s. Prometheus evaluates every second.
//!
//! **One allowance.** A scrape that misses its 2 s timeout (a loaded CI
//! machine; the observer's HTTP thread runs at nice +10) makes that
//! observer's series stale, so a *rule-based* alert on it (Prometheus'
//! `VartaAgentsStalled`) resolves and is activated anew — a new alert, by
//! Prometheus' design, not a duplicate of the cluster. Such an alert may be
//! notified once more per re-activation, counted from Prometheus'
//! `ALERTS_FOR_STATE`, and the test says so. The pushed `VartaAgentStalled`
//! must be notified exactly once, always.
//!
//! Bounds: every wait is a poll with a bound that fails with the webhook
//! log, Prometheus' alerts and the tails of the Prometheus, Alertmanager
//! and observer logs; the whole test takes about 1.5 minutes (see the
//! timings it prints with `--nocapture`).
//!
//! Outside CI a missing Debian tool skips the test (saying so); under `CI`
//! (`.ci/run` installs `prometheus` and `prometheus-alertmanager`) it fails.

mod common;
mod fleet_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use fleet_support::stack::{wait_gone, AM_BIN, PROM_BIN};
use fleet_support::webhook::AlertKey;
use fleet_support::{instance, Fleet};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

const HOSTS: usize = 20;
const NAMES: [&str; 2] = ["api", "worker"];
/// Notifications arrive within threshold (2 s) + group wait (1 s) + the
/// second peer's wait (5 s) when all goes well; the bound allows for a
/// loaded CI machine.
const NOTIFY: Duration = Duration::from_secs(30);
/// The recording rules are evaluated every 30 s (the bundle's interval).
const RECORDED: Duration = Duration::from_secs(65);
/// The window after the last notification in which a duplicate would show.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(10);

/// Debian's Prometheus and Alertmanager, or false to skip (outside CI only).
fn tools_present() -> bool {
    let missing: Vec<_> = [PROM_BIN, AM_BIN]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} missing in CI: .ci/run installs Debian's prometheus and prometheus-alertmanager"
    );
    eprintln!("skipped: no {missing:?} (apt-get install prometheus prometheus-alertmanager; .ci/run does)");
    false
}

fn stalled(h: usize, name: &str) -> AlertKey {
    AlertKey::new("VartaAgentStalled", &instance(h), name)
}

/// Prometheus' per-name rule alert for the same agent.
fn rule_stalled(h: usize, name: &str) -> AlertKey {
    AlertKey::new("VartaAgentsStalled", &instance(h), name)
}

#[test]
fn a_fleet_on_prometheus_and_an_alertmanager_cluster() {
    if !tools_present() {
        return;
    }
    let mut fleet = Fleet::start(HOSTS, &NAMES);
    eprintln!(
        "{} {HOSTS} observers, Prometheus, 2 Alertmanagers started",
        fleet.elapsed()
    );

    // 1. The fleet is up.
    let instances: BTreeSet<String> = (0..HOSTS).map(instance).collect();
    let prom = &fleet.prometheus;
    fleet.wait("every target up under its instance name", NOTIFY, || {
        let up: BTreeSet<String> = prom
            .query("up{job=\"varta\"} == 1")
            .iter()
            .filter_map(|r| r["metric"]["instance"].as_str().map(str::to_owned))
            .collect();
        up == instances
    });
    let agents = (HOSTS * NAMES.len()) as f64;
    fleet.wait("every agent alive under its name", NOTIFY, || {
        prom.scalar("sum(varta_agents_by_name{job=\"varta\",state=\"alive\",name=~\"api|worker\"})")
            == Some(agents)
    });
    let rules = fleet_support::stack::get_json(&format!("{}/api/v1/rules", prom.url), &[]).unwrap();
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    let in_bundle: usize = ["varta-alerts.yml", "varta-recording.yml"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(
                fleet_support::bundle::bundle_dir()
                    .join("prometheus")
                    .join(f),
            )
            .unwrap()
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("- alert:") || l.trim_start().starts_with("- record:")
            })
            .count()
        })
        .sum();
    assert_eq!(loaded, in_bundle, "Prometheus loaded {rules}");
    fleet.wait("a ready cluster of two Alertmanagers", NOTIFY, || {
        (0..2).all(|i| fleet.am(i).cluster() == Some(("ready".into(), 2)))
    });
    eprintln!(
        "{} fleet up: {HOSTS} targets, {agents} agents, {loaded} rules, cluster ready",
        fleet.elapsed()
    );

    // 2. Five agents hang on five hosts.
    let first: Vec<(usize, &str)> = vec![
        (0, "api"),
        (1, "worker"),
        (2, "api"),
        (3, "worker"),
        (4, "api"),
    ];
    for &(h, name) in &first {
        fleet.hang_agent(h, name);
    }
    let pushed: Vec<AlertKey> = first.iter().map(|&(h, n)| stalled(h, n)).collect();
    fleet.wait_notified(&pushed, NOTIFY);
    eprintln!("{} 5 stalls notified", fleet.elapsed());
    // Each names the very process that hung (the pid label).
    for (key, &(h, name)) in pushed.iter().zip(&first) {
        let pid = fleet.agents[h][name].id().to_string();
        for labels in fleet.webhook.firing_labels(key) {
            assert_eq!(labels["pid"], pid.as_str(), "{key}: {labels}");
            assert_eq!(labels["severity"], "warning", "{key}: {labels}");
        }
    }
    // Both peers hold every pushed alert: the observers sent both copies.
    let want: Vec<(String, String)> = first
        .iter()
        .map(|&(h, n)| (instance(h), n.to_string()))
        .collect();
    fleet.wait("both peers holding the 5 pushed stalls", NOTIFY, || {
        (0..2).all(|i| fleet.am(i).alerts("VartaAgentStalled") == want)
    });
    fleet.wait("varta:agents_stalled:sum = 5", RECORDED, || {
        prom.scalar("varta:agents_stalled:sum") == Some(5.0)
    });
    let from_rules: Vec<AlertKey> = first.iter().map(|&(h, n)| rule_stalled(h, n)).collect();
    fleet.wait_notified(&from_rules, NOTIFY);
    // Prometheus sent its alerts to both peers as well.
    fleet.wait("both peers holding VartaAgentsStalled", NOTIFY, || {
        (0..2).all(|i| fleet.am(i).alerts("VartaAgentsStalled") == want)
    });
    fleet.settle(DUPLICATE_WINDOW);
    let mut expected: Vec<AlertKey> = pushed.iter().chain(&from_rules).cloned().collect();
    assert_each_notified_once(&fleet, &expected);
    eprintln!(
        "{} 5 stalls notified once each, fleet total 5",
        fleet.elapsed()
    );

    // 3. Stop the peer that has been sending: the other one takes over.
    let mut senders: BTreeMap<String, usize> = BTreeMap::new();
    for n in fleet.webhook.notifications() {
        *senders.entry(n.sender().to_string()).or_default() += 1;
    }
    let busiest = senders.iter().max_by_key(|(_, c)| **c).unwrap().0.clone();
    let dead = (0..2)
        .find(|&i| fleet.am(i).url == busiest)
        .expect("a sender is a peer");
    let live_url = fleet.am(1 - dead).url.clone();
    let mut gone = fleet.alertmanagers[dead].take().unwrap();
    gone.child.kill().unwrap();
    wait_gone(&mut gone.child, "the stopped Alertmanager");
    eprintln!("{} stopped {busiest} (sent {senders:?})", fleet.elapsed());
    fleet.hang_agent(5, "worker");
    let sixth = [stalled(5, "worker"), rule_stalled(5, "worker")];
    fleet.wait_notified(&sixth, NOTIFY);
    for key in &sixth {
        let n = fleet.webhook.firing(key);
        assert!(
            n.iter().all(|n| n.sender() == live_url),
            "{key} after the stop came from {:?}\n{}",
            n.iter().map(|n| n.sender().to_string()).collect::<Vec<_>>(),
            fleet.dump()
        );
    }
    expected.extend(sixth.iter().cloned());
    eprintln!(
        "{} sixth stall notified through the surviving peer",
        fleet.elapsed()
    );

    // 4. One observer stops: observer-down fires for it alone.
    let down = 11;
    let killed = fleet.hosts[down].child.0.id();
    fleet.hosts[down].child.kill().unwrap();
    wait_gone(&mut fleet.hosts[down].child, "the stopped observer");
    let down_key = AlertKey::new("VartaObserverDown", &instance(down), "");
    fleet.wait_notified(std::slice::from_ref(&down_key), NOTIFY);
    let prom = &fleet.prometheus;
    let observer_down = |state: &str| -> Vec<String> {
        prom.alerts()
            .into_iter()
            .filter(|(a, _, s)| a == "VartaObserverDown" && s == state)
            .map(|(_, i, _)| i)
            .collect()
    };
    assert_eq!(
        observer_down("firing"),
        [instance(down)],
        "{}",
        fleet.dump()
    );
    expected.push(down_key.clone());
    fleet.wait(
        "varta:observers_up:sum = 19 and varta:agents_stalled:sum = 6",
        RECORDED,
        || {
            prom.scalar("varta:observers_up:sum") == Some(19.0)
                && prom.scalar("varta:agents_stalled:sum") == Some(6.0)
        },
    );
    eprintln!(
        "{} observer {} (pid {killed}) down, alone",
        fleet.elapsed(),
        instance(down)
    );

    // 5. Over the whole run: each once, nothing else, nothing resolved.
    fleet.settle(DUPLICATE_WINDOW);
    // The series the re-activation allowance reads exist (a wrong query
    // would silently read none).
    let for_state = prom.query("ALERTS_FOR_STATE{alertname=\"VartaAgentsStalled\"}");
    assert_eq!(for_state.len(), 6, "{for_state:?}");
    assert_each_notified_once(&fleet, &expected);
    assert_eq!(
        observer_down("firing"),
        [instance(down)],
        "{}",
        fleet.dump()
    );
    let notifications = fleet.webhook.notifications();
    for n in &notifications {
        for key in n.alerts("firing") {
            let route = match key.alertname.as_str() {
                "VartaObserverDown" => "/varta/pager",
                _ => "/varta/chat",
            };
            assert_eq!(n.path, route, "{key} routed by severity\n{}", fleet.dump());
        }
    }
    let down_from = fleet.webhook.firing(&down_key)[0].sender().to_string();
    assert_eq!(down_from, live_url, "{}", fleet.dump());
    eprintln!(
        "scrapes: slowest {:?} s, failed on {:?}",
        fleet
            .prometheus
            .scalar("max(max_over_time(scrape_duration_seconds{job=\"varta\"}[5m]))"),
        fleet
            .prometheus
            .query("min_over_time(up{job=\"varta\"}[5m]) == 0")
            .iter()
            .map(|r| r["metric"]["instance"].to_string())
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{} done: {} notifications, {} alerts, each once",
        fleet.elapsed(),
        notifications.len(),
        expected.len()
    );
}

/// Every key in `expected` was notified firing in exactly one notification
/// and never resolved, and no other alert was notified at all. The one
/// allowance: a rule-based alert that Prometheus itself resolved and
/// activated again during the run (see [`Fleet::reactivations`]) is a new
/// alert each time, and may be notified once more per activation; the
/// pushed `VartaAgentStalled` never has an allowance.
fn assert_each_notified_once(fleet: &Fleet, expected: &[AlertKey]) {
    let mut firing: BTreeMap<AlertKey, usize> = BTreeMap::new();
    let mut resolved: BTreeSet<AlertKey> = BTreeSet::new();
    for n in fleet.webhook.notifications() {
        for key in n.alerts("firing") {
            *firing.entry(key).or_default() += 1;
        }
        resolved.extend(n.alerts("resolved"));
    }
    for key in firing.keys().chain(&resolved) {
        assert!(
            expected.contains(key),
            "{key} was notified, unexpected\n{}",
            fleet.dump()
        );
    }
    for key in expected {
        let n = firing.get(key).copied().unwrap_or(0);
        let again = match key.alertname.as_str() {
            "VartaAgentStalled" => 0,
            _ => fleet.reactivations(key),
        };
        if again > 0 {
            eprintln!(
                "note: Prometheus activated {key} {again} more time(s); notified {n} time(s)"
            );
            assert!(
                (1..=1 + again).contains(&n),
                "{key} notified firing {n} times\n{}",
                fleet.dump()
            );
            continue;
        }
        assert_eq!(n, 1, "{key} notified firing {n} times\n{}", fleet.dump());
        assert!(
            !resolved.contains(key),
            "{key} was resolved\n{}",
            fleet.dump()
        );
    }
}
