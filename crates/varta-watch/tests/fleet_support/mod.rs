//! The fleet of `tests/fleet.rs`: N observers with their agents, one
//! Prometheus, two clustered Alertmanagers and the webhook receiver, all on
//! loopback inside one TempDir.

pub mod bundle;
pub mod stack;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::ChildGuard;
use stack::{tail, Alertmanager, Host, Prometheus};
use webhook::{AlertKey, Webhook};

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Fields drop in order: processes first, the directory they write in last.
pub struct Fleet {
    pub t0: Instant,
    /// `agents[h]`: host h's agents by name.
    pub agents: Vec<BTreeMap<String, ChildGuard>>,
    pub hosts: Vec<Host>,
    pub prometheus: Prometheus,
    /// A peer is taken out (`None`) when the test stops it.
    pub alertmanagers: Vec<Option<Alertmanager>>,
    pub webhook: Webhook,
    pub dir: tempfile::TempDir,
}

/// `host-01`, `host-02`, ...
pub fn instance(h: usize) -> String {
    format!("host-{:02}", h + 1)
}

impl Fleet {
    pub fn start(hosts: usize, agent_names: &[&str]) -> Fleet {
        use std::os::unix::fs::PermissionsExt;
        let t0 = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let token = root.join("prom.token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

        let webhook = Webhook::start();
        let am_config = bundle::alertmanager_copy(root, &webhook.url());
        let (c0, c1) = (stack::free_port(), stack::free_port());
        let alertmanagers = vec![
            Some(Alertmanager::start(root, "am0", &am_config, c0, c1)),
            Some(Alertmanager::start(root, "am1", &am_config, c1, c0)),
        ];
        let am_urls: Vec<String> = alertmanagers
            .iter()
            .flatten()
            .map(|a| a.url.clone())
            .collect();
        let am_refs: Vec<&str> = am_urls.iter().map(String::as_str).collect();

        let links = root.join("bin");
        std::fs::create_dir(&links).unwrap();
        let mut started = Vec::new();
        let mut agents = Vec::new();
        for h in 0..hosts {
            let host = Host::start(&root.join(instance(h)), &instance(h), &token, &am_refs);
            agents.push(
                agent_names
                    .iter()
                    .map(|n| (n.to_string(), host.agent(&links, n)))
                    .collect(),
            );
            started.push(host);
        }

        // File-based service discovery: each target's `instance` label is
        // its observer's --alert-instance, so Prometheus' alerts and the
        // observers' own carry the same instance (as docs/alerting.md asks).
        let targets: Vec<_> = started
            .iter()
            .map(
                |h| serde_json::json!({"targets": [h.metrics], "labels": {"instance": h.instance}}),
            )
            .collect();
        let targets_json = root.join("targets.json");
        std::fs::write(&targets_json, serde_json::to_string(&targets).unwrap()).unwrap();
        let rules = bundle::rule_copies(root);
        let prometheus = Prometheus::start(root, &targets_json, &token, &rules, &am_refs);
        Fleet {
            t0,
            agents,
            hosts: started,
            prometheus,
            alertmanagers,
            webhook,
            dir,
        }
    }

    pub fn am(&self, i: usize) -> &Alertmanager {
        self.alertmanagers[i]
            .as_ref()
            .expect("a running Alertmanager")
    }

    pub fn elapsed(&self) -> String {
        format!("+{:.1}s", self.t0.elapsed().as_secs_f64())
    }

    /// SIGSTOP: the agent stops beating and keeps its pid, a hung process.
    pub fn hang_agent(&self, h: usize, name: &str) {
        let agent = &self.agents[h][name];
        nix::sys::signal::kill(agent.pid(), nix::sys::signal::Signal::SIGSTOP).unwrap();
    }

    /// Polls `cond` for at most `bound`; a timeout dumps the fleet's state.
    pub fn wait(&self, what: &str, bound: Duration, cond: impl FnMut() -> bool) {
        stack::wait(what, bound, cond, || self.dump());
    }

    /// Waits until every key in `keys` has been notified firing.
    pub fn wait_notified(&self, keys: &[AlertKey], bound: Duration) {
        let what = format!(
            "notifications of {}",
            keys.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.wait(&what, bound, || {
            keys.iter().all(|k| !self.webhook.firing(k).is_empty())
        });
    }

    /// Lets `window` pass after the last notification so far: a duplicate
    /// (the second peer not seeing the first one's notification log, a
    /// repeat at the next group interval) would arrive within it. Absence
    /// can only be observed over a window, so this one sleep is the test.
    pub fn settle(&self, window: Duration) {
        let last = self
            .webhook
            .notifications()
            .iter()
            .map(|n| n.at)
            .max()
            .unwrap_or_else(Instant::now);
        let until = last + window;
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }

    /// Instances of which Prometheus failed a scrape during the run (on a
    /// loaded machine an observer can miss the scrape timeout), for the
    /// failure messages.
    pub fn failed_scrapes(&self) -> BTreeSet<String> {
        self.prometheus
            .query("min_over_time(up{job=\"varta\"}[10m]) == 0")
            .iter()
            .filter_map(|r| r["metric"]["instance"].as_str().map(str::to_owned))
            .collect()
    }

    /// How often Prometheus activated its alert `key` anew during the run
    /// (resolved, then pending again: its series went stale after a failed
    /// scrape, say). `ALERTS_FOR_STATE` holds the activation time of each
    /// pending or firing alert, so every new activation changes it.
    pub fn reactivations(&self, key: &AlertKey) -> usize {
        let q = format!(
            "changes(ALERTS_FOR_STATE{{alertname=\"{}\",instance=\"{}\",name=\"{}\"}}[10m])",
            key.alertname, key.instance, key.name
        );
        self.prometheus.scalar(&q).unwrap_or(0.0) as usize
    }

    /// What each process said last, and every notification: the message
    /// of any failed wait or assertion.
    pub fn dump(&self) -> String {
        let mut out = format!("--- at {}\n--- webhook notifications:\n", self.elapsed());
        out += &self.webhook.dump(self.t0);
        out += &format!("--- Prometheus alerts: {:?}\n", self.prometheus.alerts());
        out += &format!(
            "--- scrapes failed on {:?}, slowest {:?} s\n",
            self.failed_scrapes(),
            self.prometheus
                .scalar("max(max_over_time(scrape_duration_seconds{job=\"varta\"}[10m]))"),
        );
        out += &format!("--- Prometheus log:\n{}\n", tail(&self.prometheus.log, 15));
        for (i, am) in self.alertmanagers.iter().enumerate() {
            let log: PathBuf = self.dir.path().join(format!("am{i}.log"));
            out += &format!(
                "--- am{i} ({}) log:\n{}\n",
                am.as_ref().map_or("stopped", |a| &a.url),
                tail(&log, 15)
            );
        }
        for host in self.hosts.iter().take(6) {
            out += &format!("--- {} log:\n{}\n", host.instance, tail(&host.log, 5));
        }
        out
    }
}
