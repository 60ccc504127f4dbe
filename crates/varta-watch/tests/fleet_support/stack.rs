//! The processes of the fleet: Alertmanager peers, Prometheus, observers
//! and their agents. Each is owned by a [`ChildGuard`] (killed and reaped on
//! drop, and with the test process) and logs into the test's TempDir, so a
//! failure can show what each of them said.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, spawn_guarded, ChildGuard, PATIENCE};

pub const AM_BIN: &str = "/usr/bin/prometheus-alertmanager";
pub const PROM_BIN: &str = "/usr/bin/prometheus";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url` (with `query` parameters) and parse the JSON answer.
pub fn get_json(url: &str, query: &[(&str, &str)]) -> Option<Value> {
    let mut req = ureq::get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req.call().ok()?;
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `cond` every 100 ms for at most `bound`; on timeout panics with
/// `what` and the state `dump` describes.
pub fn wait(
    what: &str,
    bound: Duration,
    mut cond: impl FnMut() -> bool,
    dump: impl Fn() -> String,
) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > bound {
            panic!("timed out after {bound:?} waiting for {what}\n{}", dump());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One Alertmanager peer of the two-member cluster.
pub struct Alertmanager {
    pub child: ChildGuard,
    /// Its API and `--web.external-url` (the `externalURL` of its webhook
    /// notifications, which tells the peers apart).
    pub url: String,
}

impl Alertmanager {
    /// Starts peer `id` gossiping on `cluster_port` with `peer_port`.
    /// `peer-timeout` 5 s: the second peer in the cluster's order waits that
    /// long for the first one's notification to reach it through the
    /// notification log before sending itself (15 s by default).
    /// `settle-timeout` 5 s: notifications wait for the cluster to settle,
    /// one minute by default.
    pub fn start(dir: &Path, id: &str, config: &Path, cluster_port: u16, peer_port: u16) -> Self {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        // The fleet's dump reads it by this name, also once the peer is gone.
        let log = dir.join(format!("{id}.log"));
        let child = spawn_guarded(
            Command::new(AM_BIN)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.join(id).display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url={url}"))
                .arg(format!("--cluster.listen-address=127.0.0.1:{cluster_port}"))
                .arg(format!(
                    "--cluster.advertise-address=127.0.0.1:{cluster_port}"
                ))
                .arg(format!("--cluster.peer=127.0.0.1:{peer_port}"))
                .arg("--cluster.peer-timeout=5s")
                .arg("--cluster.settle-timeout=5s")
                .arg("--cluster.reconnect-timeout=10s")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
        .expect("spawn prometheus-alertmanager");
        Alertmanager { child, url }
    }

    /// `/api/v2/status`: the cluster's status and how many peers it has.
    pub fn cluster(&self) -> Option<(String, usize)> {
        let v = get_json(&format!("{}/api/v2/status", self.url), &[])?;
        let peers = v["cluster"]["peers"].as_array()?.len();
        Some((v["cluster"]["status"].as_str()?.to_string(), peers))
    }

    /// The active alerts named `alertname` it holds, as (instance, name).
    pub fn alerts(&self, alertname: &str) -> Vec<(String, String)> {
        let filter = format!("alertname=\"{alertname}\"");
        let v = get_json(
            &format!("{}/api/v2/alerts", self.url),
            &[("filter", &filter)],
        );
        let mut out: Vec<_> = v
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|a| {
                let s = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
                (s("instance"), s("name"))
            })
            .collect();
        out.sort();
        out
    }
}

pub struct Prometheus {
    /// Held so Prometheus lives as long as this value.
    _child: ChildGuard,
    pub url: String,
    pub log: PathBuf,
}

impl Prometheus {
    /// Scrapes every 2 s (timeout 2 s: the observer's HTTP thread runs at
    /// nice +10 and a loaded machine slows it) the targets in `targets_json`
    /// (file-based service discovery) with the bearer token in `token`,
    /// evaluates `rules` every second (a group's own `interval:` wins: the bundle's
    /// recording rules run every 30 s) and sends alerts to `alertmanagers`.
    pub fn start(
        dir: &Path,
        targets_json: &Path,
        token: &Path,
        rules: &[PathBuf],
        alertmanagers: &[&str],
    ) -> Prometheus {
        let quoted = |v: Vec<String>| v.join(", ");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 1s\n\
                 rule_files: [{}]\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n\
                 scrape_configs:\n  - job_name: varta\n    authorization:\n      type: Bearer\n      credentials_file: '{}'\n\
                 \x20   file_sd_configs:\n      - files: ['{}']\n",
                quoted(rules.iter().map(|r| format!("'{}'", r.display())).collect()),
                quoted(alertmanagers
                    .iter()
                    .map(|a| format!("'{}'", a.trim_start_matches("http://")))
                    .collect()),
                token.display(),
                targets_json.display(),
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = spawn_guarded(
            Command::new(PROM_BIN)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
        .expect("spawn prometheus");
        Prometheus {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// An instant query's result vector.
    pub fn query(&self, q: &str) -> Vec<Value> {
        get_json(&format!("{}/api/v1/query", self.url), &[("query", q)])
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The value of a query that returns one sample.
    pub fn scalar(&self, q: &str) -> Option<f64> {
        match self.query(q).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// `/api/v1/alerts`: (alertname, instance, state) of every alert.
    pub fn alerts(&self) -> Vec<(String, String, String)> {
        let v = get_json(&format!("{}/api/v1/alerts", self.url), &[]);
        let mut out: Vec<_> = v
            .as_ref()
            .and_then(|v| v["data"]["alerts"].as_array())
            .into_iter()
            .flatten()
            .map(|a| {
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                (
                    s(&a["labels"]["alertname"]),
                    s(&a["labels"]["instance"]),
                    s(&a["state"]),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// One observer standing for one host.
pub struct Host {
    pub child: ChildGuard,
    /// Its `--alert-instance`, also its target's `instance` label.
    pub instance: String,
    /// Its `/metrics` address (`--prom-addr 127.0.0.1:0`).
    pub metrics: String,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Held open: the observer's stdout is a pipe, and a write to a closed
    /// one would fail.
    _stdout: BufReader<ChildStdout>,
}

/// The `[[agent]]` rules every host runs with: agents are named by their
/// `comm` (the symlink they were started through), as a fleet names the
/// same service the same on every host.
pub const AGENT_RULES: &str = "[[agent]]\nmatch = { comm = \"fleet-api\" }\nname = \"api\"\n\n\
                               [[agent]]\nmatch = { comm = \"fleet-worker\" }\nname = \"worker\"\n";

impl Host {
    /// Starts `varta-watch` in `dir` (created) as `instance`, pushing to
    /// every URL in `alertmanagers`.
    pub fn start(dir: &Path, instance: &str, token: &Path, alertmanagers: &[&str]) -> Host {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("varta-watch.toml");
        std::fs::write(&config, AGENT_RULES).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = dir.join("obs.sock");
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(common::bin());
        cmd.arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .args(["--prom-addr", "127.0.0.1:0", "--prom-token-file"])
            .arg(token)
            .args(["--alert-instance", instance])
            // 2 s: far above the agents' 100 ms beat, so a loaded machine
            // does not make a beating agent stall.
            .args(["--threshold-ms", "2000", "--tracker-capacity", "256"]);
        for am in alertmanagers {
            cmd.args(["--alertmanager-url", am]);
        }
        let mut child = spawn_guarded(
            cmd.env("VARTA_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
        .expect("spawn varta-watch");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let metrics = line
            .trim()
            .strip_prefix("metrics: http://")
            .and_then(|s| s.strip_suffix("/metrics"))
            .unwrap_or_else(|| {
                panic!(
                    "{instance}: address line {line:?}; stderr:\n{}",
                    tail(&log, 20)
                )
            })
            .to_string();
        // The observer turns SO_PASSCRED on after bind(2) and logs this line
        // once the listener is complete (see common::Observer::start).
        wait(
            &format!("{instance} listening"),
            PATIENCE,
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("listening on")
            },
            || tail(&log, 20),
        );
        Host {
            child,
            instance: instance.to_string(),
            metrics,
            socket,
            log,
            _stdout: stdout,
        }
    }

    /// Starts an agent beating every 100 ms, executed through the symlink
    /// `links/fleet-NAME` so its `comm` (and so its name) is `fleet-NAME`.
    pub fn agent(&self, links: &Path, name: &str) -> ChildGuard {
        let link = links.join(format!("fleet-{name}"));
        if !link.exists() {
            std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &link).unwrap();
        }
        spawn_guarded(
            Command::new(&link)
                .args(["--exact", "agent_entry", "--nocapture", "--test-threads=1"])
                .env(common::AGENT_ENV, "beat")
                .env(common::SOCKET_ENV, &self.socket)
                .env(common::INTERVAL_ENV, "100")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("spawn agent")
    }
}

/// Waits (bounded by [`PATIENCE`]) until `child` has exited.
pub fn wait_gone(child: &mut ChildGuard, what: &str) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < PATIENCE, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}
