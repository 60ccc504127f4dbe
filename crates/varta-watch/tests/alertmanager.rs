//! Alertmanager push end to end: the real `varta-watch` binary pushes to a
//! real Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! `.ci/run`) on loopback, which routes to a webhook receiver served by
//! this test; `amtool` queries it while the alert fires. Plus a dead
//! target beside a live one, and a mass stall of 10,000 agents through
//! the library (requests counted at a fake Alertmanager).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{spawn_agent, spawn_guarded, ChildGuard, Observer, PATIENCE};
use serde_json::Value;

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

const AM_BIN: &str = "/usr/bin/prometheus-alertmanager";
const AMTOOL: &str = "/usr/bin/amtool";

/// The Alertmanager binaries, or None to skip (only outside CI: in CI a
/// missing package is a broken `.ci/run`, not a reason to pass).
fn alertmanager() -> Option<(&'static str, &'static str)> {
    if Path::new(AM_BIN).exists() && Path::new(AMTOOL).exists() {
        return Some((AM_BIN, AMTOOL));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{AM_BIN} or {AMTOOL} missing in CI: .ci/run installs Debian's prometheus-alertmanager"
    );
    eprintln!("skipped: no {AM_BIN} (apt-get install prometheus-alertmanager; .ci/run does)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP server on a free loopback port (tiny_http) that answers 200 and
/// keeps every request body as JSON. Stops when dropped.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<(Instant, Value)>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, r, s) = (bodies.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                r.fetch_add(1, Ordering::Relaxed);
                let mut text = String::new();
                let _ = req.as_reader().read_to_string(&mut text);
                if let Ok(v) = serde_json::from_str(&text) {
                    b.lock().unwrap().push((Instant::now(), v));
                }
                let _ = req.respond(tiny_http::Response::empty(200));
            }
        });
        Receiver {
            addr,
            bodies,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Waits for a body `pick` accepts and returns what it picked.
    fn wait_for<T>(&self, what: &str, mut pick: impl FnMut(&Value) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(t) = self.bodies().iter().find_map(&mut pick) {
                return t;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; got {:#?}",
                self.bodies()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// In a webhook body (Alertmanager's notification) or an
/// `/api/v2/alerts` body (ours), the alerts.
fn alerts_of(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        _ => v["alerts"].as_array().cloned().unwrap_or_default(),
    }
}

/// Whether alert `a` has the `pid` label `pid`.
fn pid_is(a: &Value, pid: u32) -> bool {
    a["labels"]["pid"].as_str().and_then(|p| p.parse().ok()) == Some(pid)
}

/// A webhook alert of `alertname` for `pid` with `status`.
fn webhook_alert(v: &Value, alertname: &str, pid: u32, status: &str) -> Option<Value> {
    alerts_of(v)
        .into_iter()
        .find(|a| a["status"] == status && a["labels"]["alertname"] == alertname && pid_is(a, pid))
}

/// Starts Alertmanager routing everything to `hook` at once
/// (group_wait 0s, group_interval 1s), with clustering off.
fn start_alertmanager(bin: &str, dir: &Path, hook: &Receiver) -> (ChildGuard, String) {
    let port = free_port();
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: ['alertname', 'pid', 'name']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{}/hook'\n        send_resolved: true\n",
            hook.url()
        ),
    )
    .unwrap();
    let am = spawn_guarded(
        Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while ureq::get(format!("{url}/-/ready")).call().is_err() {
        assert!(
            start.elapsed() < PATIENCE,
            "Alertmanager never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (am, url)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn stall_fires_through_a_real_alertmanager_and_resolves_on_resume() {
    let Some((am_bin, amtool)) = alertmanager() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start();
    let (_am, am_url) = start_alertmanager(am_bin, dir.path(), &hook);
    let obs = Observer::start(&[
        "--threshold-ms",
        "400",
        "--alertmanager-url",
        &am_url,
        "--alertmanager-resend-ms",
        "1000",
        "--alert-instance",
        "test-host",
    ]);
    let agent = spawn_agent("beat", &obs.socket, 50);
    let pid = agent.id();
    obs.wait_for("beat", Some(pid));
    // The agent stops beating (SIGSTOP keeps the process and its pid).
    nix::sys::signal::kill(agent.pid(), nix::sys::signal::Signal::SIGSTOP).unwrap();
    obs.wait_for("stall", Some(pid));
    let firing = hook.wait_for("VartaAgentStalled firing at the webhook", |v| {
        webhook_alert(v, "VartaAgentStalled", pid, "firing")
    });
    let labels = &firing["labels"];
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["instance"], "test-host");
    let name = labels["name"].as_str().expect("name label").to_string();
    assert!(!name.is_empty());
    if labels.get("unit").is_none() {
        assert_eq!(name, comm(pid), "the agent's name is its comm");
    }
    let summary = firing["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains(&name) && summary.contains(&pid.to_string()),
        "{summary}"
    );
    assert!(firing["annotations"]["description"]
        .as_str()
        .unwrap()
        .contains("no heartbeat for"));

    // amtool sees it while it fires.
    let out = Command::new(amtool)
        .args(["alert", "query", "-o", "extended"])
        .arg(format!("--alertmanager.url={am_url}"))
        .arg("alertname=VartaAgentStalled")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "amtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("VartaAgentStalled") && text.contains(&format!("pid=\"{pid}\"")),
        "amtool output: {text}"
    );

    // Resume: the next beat resolves it.
    nix::sys::signal::kill(agent.pid(), nix::sys::signal::Signal::SIGCONT).unwrap();
    obs.wait_for("recovered", Some(pid));
    let resolved = hook.wait_for("VartaAgentStalled resolved at the webhook", |v| {
        webhook_alert(v, "VartaAgentStalled", pid, "resolved")
    });
    assert_eq!(resolved["labels"]["name"], name.as_str());
    let out = Command::new(amtool)
        .args(["alert", "query", "-o", "simple"])
        .arg(format!("--alertmanager.url={am_url}"))
        .arg("alertname=VartaAgentStalled")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("VartaAgentStalled"),
        "resolved alerts are no longer active"
    );
    drop(agent);
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn metric(addr: SocketAddr, line_start: &str) -> Option<f64> {
    let mut resp = ureq::get(format!("http://{addr}/metrics"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .ok()?;
    let body = resp.body_mut().read_to_string().ok()?;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_dead_target_neither_delays_another_nor_detection() {
    let dir = tempfile::tempdir().unwrap();
    let live = Receiver::start();
    // Accepts connections into its backlog and never answers: every POST
    // to it runs into the timeout.
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", blackhole.local_addr().unwrap());
    let refused = format!("http://127.0.0.1:{}", free_port());
    let obs = common::start_metrics_observer(
        dir.path(),
        TOKEN,
        &[
            "--threshold-ms",
            "300",
            "--alertmanager-url",
            &dead,
            "--alertmanager-url",
            &refused,
            "--alertmanager-url",
            &live.url(),
            "--alertmanager-timeout-ms",
            "10000",
            "--prom-rate-limit-per-sec",
            "100",
            "--prom-rate-limit-burst",
            "100",
        ],
    );
    let mut first = spawn_agent("beat", &obs.socket, 50);
    let pid1 = first.id();
    std::thread::sleep(Duration::from_millis(300));
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = Instant::now();
    live.wait_for("the first stall at the live target", |v| {
        webhook_alert(v, "VartaAgentStalled", pid1, "firing")
            .or_else(|| alerts_of(v).into_iter().find(|a| pid_is(a, pid1)))
    });
    // Threshold 300 ms; the dead target's 10 s timeout must not be in the
    // way (the bound leaves room for a loaded CI machine).
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "live target got it after {took:?}"
    );

    // Detection goes on while the dead targets fail.
    let mut second = spawn_agent("beat", &obs.socket, 50);
    let pid2 = second.id();
    std::thread::sleep(Duration::from_millis(300));
    second.kill().unwrap();
    second.wait().unwrap();
    live.wait_for("the second stall at the live target", |v| {
        alerts_of(v).into_iter().find(|a| pid_is(a, pid2))
    });
    let start = Instant::now();
    loop {
        let refused_failed = metric(
            obs.addr,
            &format!("varta_alertmanager_alerts_failed_total{{target=\"{refused}\"}}"),
        );
        let live_sent = metric(
            obs.addr,
            &format!(
                "varta_alertmanager_alerts_sent_total{{target=\"{}\"}}",
                live.url()
            ),
        );
        let stalls = metric(obs.addr, "varta_stalls_total{pid=\"");
        if refused_failed.unwrap_or(0.0) >= 1.0
            && live_sent.unwrap_or(0.0) >= 2.0
            && stalls.is_some()
        {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "counters: refused failed {refused_failed:?}, live sent {live_sent:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(obs.addr, "varta_alertmanager_queue_depth").is_some());
    assert!(metric(
        obs.addr,
        &format!(
            "varta_alertmanager_alerts_dropped_total{{target=\"{dead}\",reason=\"queue_full\"}}"
        )
    )
    .is_some());
    // SIGTERM with one target timing out and one refusing: the flush is
    // bounded (1.5 s, ≤ 2 s in all), the observer exits cleanly.
    let mut child = obs.child;
    let t = Instant::now();
    nix::sys::signal::kill(child.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < PATIENCE,
            "observer did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_millis(4500), "shutdown took {took:?}");
    drop(blackhole);
}

#[test]
fn a_mass_stall_is_a_few_requests_and_costs_detection_little() {
    use varta_watch::events::{Event, Origin, Sink};
    let receiver = Receiver::start();
    let cfg = varta_watch::config::AlertmanagerConfig {
        targets: vec![receiver.url()],
        instance: "mass".into(),
        resend: Duration::from_secs(600),
        timeout: Duration::from_secs(5),
        auth: varta_watch::config::AlertAuth::None,
    };
    let registry = Arc::new(varta_watch::identity::Registry::new(1024));
    let names = varta_watch::policy::Names::new(registry);
    let mut sink = varta_watch::alert::start(&cfg, names).unwrap();
    let stats = sink.stats();
    const N: u32 = 10_000;
    let t0 = Instant::now();
    for pid in 1..=N {
        sink.on_event(
            5_000_000_000,
            &Event::Stall {
                pid,
                last_nonce: 1,
                last_beat_ns: 0,
                origin: Origin::KernelAttested,
                foreign_ns: false,
            },
        );
    }
    let on_detection_thread = t0.elapsed();
    let start = Instant::now();
    while stats.targets[0].sent() < u64::from(N) {
        assert!(
            start.elapsed() < PATIENCE,
            "sent {}",
            stats.targets[0].sent()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let requests = receiver.requests.load(Ordering::Relaxed);
    let delivered: usize = receiver.bodies().iter().map(|b| alerts_of(b).len()).sum();
    eprintln!(
        "mass stall: {N} stalls cost the detection thread {on_detection_thread:?} in total; {requests} requests, {delivered} alerts, all delivered {:?} after the first",
        start.elapsed()
    );
    assert_eq!(delivered, N as usize);
    assert!(requests <= 30, "{requests} requests for {N} stalls");
    assert_eq!(stats.queue_dropped(), 0);
    // Generous: a debug build on a loaded 2-core machine; the point is
    // "no I/O, no blocking" (≈ 1 µs per event), not a benchmark.
    assert!(
        on_detection_thread < Duration::from_secs(1),
        "{on_detection_thread:?}"
    );
    sink.shutdown();
}

#[test]
fn a_missing_required_agent_fires_from_settings_in_the_config_file() {
    let target = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("varta.toml");
    std::fs::write(
        &file,
        format!(
            "alertmanager-url = \"{}\"\nalert-instance = \"cfg-host\"\n\
             [[agent]]\nmatch = {{ comm = \"ghost\" }}\nname = \"ghost\"\n\
             [[agent]]\nmatch = {{ name = \"ghost\" }}\nrequired = true\nstartup-grace-ms = 300\n",
            target.url()
        ),
    )
    .unwrap();
    let obs = Observer::start_in(dir, &["--config", file.to_str().unwrap()]);
    let missing = target.wait_for("VartaAgentMissing for ghost", |v| {
        alerts_of(v)
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "VartaAgentMissing")
    });
    let labels = &missing["labels"];
    assert_eq!(labels["name"], "ghost");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["instance"], "cfg-host");
    assert!(labels.get("pid").is_none(), "{labels}");
    assert!(missing["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("Required agent ghost is missing"));
    drop(obs);
}
