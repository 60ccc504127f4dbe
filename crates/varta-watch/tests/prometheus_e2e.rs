//! End to end with a real Prometheus (Debian's package, installed by
//! `.ci/run`): it scrapes the real observer with a bearer token, an agent
//! is killed, and `varta_stalls_total` comes back through Prometheus' HTTP
//! query API.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_agent, spawn_guarded, PATIENCE};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn http_get(addr: SocketAddr, path_and_query: &str) -> Option<String> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        c,
        "GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn prometheus() -> Option<&'static str> {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn prometheus_scrapes_with_the_token_and_sees_a_stall() {
    let Some(prom_bin) = prometheus() else {
        eprintln!("skipped: no prometheus binary (.ci/run installs Debian's `prometheus`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Prometheus scrapes every second: well inside the default rate limit.
    let common::MetricsObserver {
        child: mut obs,
        addr,
        socket,
    } = common::start_metrics_observer(
        dir.path(),
        TOKEN,
        &["--threshold-ms", "300", "--prom-rate-limit-per-sec", "20"],
    );
    let token = dir.path().join("prom.token");
    let target = addr.to_string();

    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: varta\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
            token.display()
        ),
    )
    .unwrap();
    let _prom = spawn_guarded(
        Command::new(prom_bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();

    let mut agent = spawn_agent("beat", &socket, 20);
    let pid = agent.id();
    let query = |q: &str| -> Option<f64> {
        let body = http_get(web, &format!("/api/v1/query?query={q}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    // Prometheus has scraped the agent's beats: the scrape works, token included.
    let start = Instant::now();
    while query(&format!("varta_beats_total%7Bpid%3D%22{pid}%22%7D")).unwrap_or(0.0) < 1.0 {
        assert!(
            start.elapsed() < PATIENCE * 2,
            "Prometheus never saw the agent's beats"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    let start = Instant::now();
    while query(&format!("varta_stalls_total%7Bpid%3D%22{pid}%22%7D")).unwrap_or(0.0) < 1.0 {
        assert!(
            start.elapsed() < PATIENCE * 2,
            "Prometheus never saw the stall"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The target is healthy from Prometheus' side (auth accepted).
    assert_eq!(query("up%7Bjob%3D%22varta%22%7D"), Some(1.0));
    obs.kill().unwrap();
}
