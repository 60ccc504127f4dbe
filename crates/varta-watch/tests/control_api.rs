//! The control API (docs/api.md) against the real observer binary: a hyper
//! client over the control Unix socket (and TCP for `/api/v1/…`), agents
//! over the Unix socket (a real varta-client process) and plaintext UDP
//! (hand-built frames from this process: exact control over beats, exits
//! and silences, and 100 k pids from one socket).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use varta_vlp::{Frame, Status, NONCE_TERMINAL};

use common::{ChildGuard, PATIENCE};

/// Agent mode for [`common::spawn_agent`] (a no-op as a test).
#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// Fake pids for UDP agents: above any real pid_max, like the benchmarks.
const PID0: u32 = 1 << 23;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn send_unix(sock: &Path, method: Method, path: &str) -> Response<Incoming> {
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "varta")
        .body(Empty::<Bytes>::new())
        .unwrap();
    tx.send_request(req).await.unwrap()
}

/// One request over the control socket: status and body.
fn call(sock: &Path, method: Method, path: &str) -> (u16, String) {
    rt().block_on(async {
        let r = send_unix(sock, method, path).await;
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    })
}

fn get(sock: &Path, path: &str) -> Value {
    let (code, body) = call(sock, Method::GET, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// One request over TCP with an optional bearer token.
fn call_tcp(addr: SocketAddr, method: Method, path: &str, token: Option<&str>) -> (u16, String) {
    rt().block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "x");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let r = tx
            .send_request(b.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    })
}

/// A running observer with its printed listener lines.
struct Obs {
    _child: ChildGuard,
    dir: tempfile::TempDir,
    control: PathBuf,
    udp: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    socket: PathBuf,
}

fn start(args: &[&str]) -> Obs {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, args)
}

fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Obs {
    use std::io::BufRead;
    let socket = dir.path().join("w.sock");
    let token = dir.path().join("prom.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("TOKEN_FILE", token.to_str().unwrap()))
        .collect();
    let mut child = common::spawn_guarded(
        Command::new(common::bin())
            .arg("--socket")
            .arg(&socket)
            .args(&args)
            .env("VARTA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap()),
    )
    .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut control, mut udp, mut metrics) = (None, None, None);
    let mut line = String::new();
    // The listener lines come in a fixed order; UDP is the last when on.
    let want_udp = args.iter().any(|a| a == "--udp-port");
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "observer exited early"
        );
        let l = line.trim();
        if let Some(p) = l.strip_prefix("control: ") {
            control = Some(PathBuf::from(p));
        } else if let Some(a) = l.strip_prefix("udp: ") {
            udp = Some(a.parse().unwrap());
        } else if let Some(a) = l.strip_prefix("metrics: http://") {
            metrics = Some(a.trim_end_matches("/metrics").parse().unwrap());
        }
        if control.is_some() && (udp.is_some() || !want_udp) {
            break;
        }
    }
    Obs {
        _child: child,
        dir,
        control: control.unwrap(),
        udp,
        metrics,
        socket,
    }
}

impl Obs {
    fn sender(&self) -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut to = self.udp.unwrap();
        to.set_ip([127, 0, 0, 1].into());
        s.connect(to).unwrap();
        s
    }

    fn wait(&self, what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < PATIENCE,
                "timed out waiting for {what}; stderr:\n{}",
                std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn agent(&self, pid: u32) -> Option<Value> {
        let (code, body) = call(&self.control, Method::GET, &format!("/v1/agents/{pid}"));
        match code {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            c => panic!("GET /v1/agents/{pid}: {c} {body}"),
        }
    }
}

fn beat(s: &UdpSocket, pid: u32, nonce: u64) {
    s.send(&Frame::new(Status::Ok, pid, nonce * 1000, nonce, 7).to_bytes())
        .unwrap();
}

fn exit(s: &UdpSocket, pid: u32) {
    s.send(&Frame::new(Status::Critical, pid, 999_999, NONCE_TERMINAL, 9).to_bytes())
        .unwrap();
}

#[test]
fn agents_in_every_state_one_agent_filters_and_errors() {
    let o = start(&[
        "--threshold-ms",
        "300",
        "--udp-port",
        "0",
        "--i-accept-plaintext-udp",
        "--plaintext-udp-i-accept-recovery-on-unauthenticated-transport",
        "--recovery-exec",
        "/bin/false {pid}",
        "--recovery-max-attempts",
        "1",
        "--recovery-debounce-ms",
        "10",
        "--recovery-backoff-ms",
        "10",
    ]);
    let mode = std::fs::metadata(&o.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    let s = o.sender();
    let (alive, stalled, exited, given_up) = (PID0 + 1, PID0 + 2, PID0 + 3, PID0 + 4);
    // A real agent process over the Unix socket (kernel-attested identity).
    let real = common::spawn_agent("beat", &o.socket, 50);
    let real_pid = real.id();
    // given_up: stall (attempt 1 fails), beat again, stall again → given up.
    beat(&s, given_up, 1);
    beat(&s, stalled, 1);
    exit(&s, exited);
    let keep_alive = |n: u64| beat(&s, alive, n);
    let mut n = 1;
    o.wait("first recovery attempt of the given-up candidate", || {
        keep_alive(n);
        n += 1;
        o.agent(given_up)
            .is_some_and(|a| a["recovery"]["last_outcome"] == "reaped_nonzero")
    });
    beat(&s, given_up, 2);
    o.wait("given up", || {
        keep_alive(n);
        n += 1;
        o.agent(given_up)
            .is_some_and(|a| a["recovery"]["given_up"] == true && a["state"] == "stalled")
    });
    keep_alive(n);
    let a = o.agent(alive).unwrap();
    assert_eq!(a["state"], "alive");
    assert_eq!(a["origin"], "network_unverified");
    assert_eq!(a["payload"], 7);
    assert!(a["last_beat_age_ms"].as_u64().unwrap() < 1000);
    assert_eq!(a["threshold_ms"], 300);
    assert!(a["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(a["rule"], Value::Null);
    let st = o.agent(stalled).unwrap();
    assert_eq!(
        (&st["state"], &st["status"]),
        (&"stalled".into(), &"stall".into())
    );
    assert_eq!(st["recovery"]["attempts"], 1);
    assert_eq!(o.agent(exited).unwrap()["state"], "exited");
    o.wait("the real agent's identity", || {
        o.agent(real_pid)
            .is_some_and(|a| a["comm"].is_string() && a["uid"].is_number())
    });
    let r = o.agent(real_pid).unwrap();
    assert_eq!(r["origin"], "kernel_attested");
    assert_eq!(r["state"], "alive");
    assert!(r["exe"].as_str().unwrap().contains("control_api"));

    // Filters.
    let pids = |q: &str| -> Vec<u64> {
        get(&o.control, &format!("/v1/agents?{q}"))["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["pid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(pids("state=given_up"), vec![u64::from(given_up)]);
    assert_eq!(pids("state=exited"), vec![u64::from(exited)]);
    let st = pids("state=stalled");
    assert!(st.contains(&u64::from(stalled)) && st.contains(&u64::from(given_up)));
    assert_eq!(pids("state=exited,given_up").len(), 2);
    let peers = pids("name=peer:127.0.0.1*");
    assert!(peers.len() == 4, "{peers:?}");
    assert!(!pids("state=alive").contains(&u64::from(stalled)));
    let all = get(&o.control, "/v1/agents?limit=2");
    assert_eq!(all["total"], 5);
    assert_eq!(all["agents"].as_array().unwrap().len(), 2);
    assert!(all["next_cursor"].is_string());

    // Status.
    let st = get(&o.control, "/v1/status");
    assert_eq!(st["counts"]["exited"], 1);
    assert_eq!(st["counts"]["given_up"], 1);
    assert_eq!(st["threshold_ms"], 300);
    assert_eq!(st["listeners"]["control"], o.control.to_str().unwrap());
    assert_eq!(st["listeners"]["metrics"], Value::Null);
    assert_eq!(st["pid"].as_u64().unwrap(), u64::from(o._child.id()));

    // Errors are JSON with a message.
    let err = |m: Method, p: &str, code: u16| {
        let (c, body) = call(&o.control, m, p);
        assert_eq!(c, code, "{p}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
        v["error"].as_str().unwrap().to_string()
    };
    assert!(err(Method::GET, "/v1/agents/1", 404).contains("pid 1 is not tracked"));
    err(Method::GET, "/v1/nothing", 404);
    assert!(err(Method::GET, "/v1/agents?sate=alive", 400).contains("sate"));
    err(Method::GET, "/v1/agents?state=dead", 400);
    err(Method::GET, "/v1/agents?limit=0", 400);
    err(Method::GET, "/v1/events?kind=nope", 400);
    err(Method::GET, "/v1/agents/abc", 400);
    err(Method::GET, "/v1/reload", 405);
    err(Method::POST, "/v1/status", 405);
    let r = rt().block_on(async { send_unix(&o.control, Method::GET, "/v1/reload").await });
    assert_eq!(r.headers()["allow"], "POST");

    // Recent events: the stall and the exit are in the ring.
    let (code, body) = call(
        &o.control,
        Method::GET,
        "/v1/events?kind=stall,exit&limit=1000",
    );
    assert_eq!(code, 200);
    let kinds: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    assert!(kinds
        .iter()
        .any(|e| e["kind"] == "exit" && e["pid"] == exited));
    assert!(kinds
        .iter()
        .any(|e| e["kind"] == "stall" && e["pid"] == stalled && e["name"].is_string()));
    drop(real);
}

#[test]
fn paging_over_100k_agents_sees_every_pid_once() {
    const N: u32 = 100_000;
    let o = start(&[
        "--threshold-ms",
        "600000",
        "--tracker-capacity",
        "131072",
        "--udp-port",
        "0",
        "--i-accept-plaintext-udp",
        "--udp-rcvbuf-bytes",
        "33554432",
    ]);
    let s = o.sender();
    let mut round = 1;
    o.wait("100 k agents tracked", || {
        // Paced sends; any datagram the kernel dropped is sent again
        // with the next round's nonce.
        for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
            for &i in chunk {
                beat(&s, PID0 + i, round);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        round += 1;
        get(&o.control, "/v1/status")["counts"]["alive"] == N
    });
    let mut seen = Vec::with_capacity(N as usize);
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/agents?limit=7000&cursor={c}"),
            None => "/v1/agents?limit=7000".to_string(),
        };
        let page = get(&o.control, &q);
        assert_eq!(page["total"], N);
        let agents = page["agents"].as_array().unwrap();
        assert!(agents.len() <= 7000);
        seen.extend(agents.iter().map(|a| a["pid"].as_u64().unwrap() as u32));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, N.div_ceil(7000));
    let want: Vec<u32> = (0..N).map(|i| PID0 + i).collect();
    assert_eq!(seen, want, "every pid exactly once, in pid order");
}

/// Reads lines from a streaming body until `pred` matches one (bounded).
async fn read_until(body: &mut Incoming, mut pred: impl FnMut(&Value) -> bool) -> Value {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            if pred(&v) {
                return v;
            }
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("line in time")
            .expect("stream open")
            .unwrap();
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
        }
    }
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (code, body) = call_tcp(addr, Method::GET, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn event_stream_follows_and_drops_a_reader_that_stops_reading() {
    let o = start(&[
        "--threshold-ms",
        "300",
        "--udp-port",
        "0",
        "--i-accept-plaintext-udp",
        "--max-beat-rate",
        "0",
        "--prom-addr",
        "127.0.0.1:0",
        "--prom-token-file",
        "TOKEN_FILE",
        "--prom-rate-limit-burst",
        "0",
    ]);
    let s = o.sender();
    let addr = o.metrics.unwrap();
    // TCP: read-only routes under /api/v1 behind the token; no reload.
    assert_eq!(call_tcp(addr, Method::GET, "/api/v1/status", None).0, 401);
    let (code, body) = call_tcp(addr, Method::GET, "/api/v1/status", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["listeners"]["metrics"], addr.to_string());
    assert_eq!(
        call_tcp(addr, Method::POST, "/api/v1/reload", Some(TOKEN)).0,
        405
    );
    assert_eq!(
        call_tcp(addr, Method::GET, "/v1/status", Some(TOKEN)).0,
        404
    );

    rt().block_on(async {
        // A live stall reaches a follower.
        let r = send_unix(&o.control, Method::GET, "/v1/events?follow=1&kind=stall").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        let mut body = r.into_body();
        let sock = o.sender();
        beat(&sock, PID0 + 77, 1);
        let v = read_until(&mut body, |v| v["pid"] == PID0 + 77).await;
        assert_eq!(v["kind"], "stall");
        assert!(v["time"].is_string() && v["observer_ns"].is_number());

        // A beat follower that never reads: cut once far enough behind.
        let slow = send_unix(&o.control, Method::GET, "/v1/events?follow=1&kind=beat").await;
        assert_eq!(slow.status(), 200);
        let readers =
            tokio::task::spawn_blocking(move || metric(addr, "varta_control_event_readers"))
                .await
                .unwrap();
        assert_eq!(readers, 2.0);
        let mut nonce = 1;
        let t = Instant::now();
        loop {
            let dropped = tokio::task::spawn_blocking(move || {
                metric(addr, "varta_control_event_readers_dropped_total")
            })
            .await
            .unwrap();
            if dropped >= 1.0 {
                break;
            }
            assert!(t.elapsed() < PATIENCE, "slow reader never dropped");
            // Few pids, many beats: their stalls afterwards stay well
            // below the fast follower's lag limit.
            for _ in 0..10 {
                for p in 0..200 {
                    beat(&s, PID0 + 1000 + p, nonce);
                }
                nonce += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        // The fast follower is still served.
        beat(&sock, PID0 + 78, 1);
        read_until(&mut body, |v| v["pid"] == PID0 + 78).await;
        // The slow reader's stream ends; its last line says why.
        let all = tokio::time::timeout(PATIENCE, slow.into_body().collect())
            .await
            .expect("cut stream ends")
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&all);
        if let Some(last) = text.lines().last().filter(|l| l.contains("dropped")) {
            let v: Value = serde_json::from_str(last).unwrap();
            assert!(v["detail"].as_str().unwrap().contains("reader too slow"));
        }
    });
    o.wait("reader gauge back to one", || {
        metric(addr, "varta_control_event_readers") == 1.0
    });
    let m = call_tcp(addr, Method::GET, "/metrics", Some(TOKEN)).1;
    assert!(m.contains("varta_control_requests_total{route=\"events\",code=\"200\"}"));
    assert!(m.contains("varta_control_snapshot_seconds_count"));
}

#[test]
fn reload_applies_or_refuses_and_status_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(&cfg, "threshold-ms = 1000\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let o = start_in(dir, &["--config", &cfg_s]);
    let st = get(&o.control, "/v1/status");
    assert_eq!(st["threshold_ms"], 1000);
    assert_eq!(st["config_file"], cfg_s.as_str());
    assert_eq!(st["last_reload"], Value::Null);
    let (code, body) = call(&o.control, Method::POST, "/v1/reload");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"],
        "unchanged"
    );

    std::fs::write(
        &cfg,
        "threshold-ms = 2000\n[[agent]]\nmatch = { name = \"web*\" }\nthreshold-ms = 500\n",
    )
    .unwrap();
    let (code, body) = call(&o.control, Method::POST, "/v1/reload");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], "applied");
    let changes: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changes.contains(&"threshold-ms: 1000 -> 2000"),
        "{changes:?}"
    );
    assert_eq!(v["restart_needed"].as_array().unwrap().len(), 0);
    let st = get(&o.control, "/v1/status");
    assert_eq!(st["threshold_ms"], 2000);
    assert_eq!(st["last_reload"]["result"], "applied");
    assert_eq!(st["rules"][0]["index"], 1);
    assert_eq!(st["rules"][0]["threshold_ms"], 500);
    assert_eq!(st["rules"][0]["recovery"], "off");

    std::fs::write(&cfg, "treshold-ms = 3000\n").unwrap();
    let (code, body) = call(&o.control, Method::POST, "/v1/reload");
    assert_eq!(code, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], "failed");
    assert!(v["error"].as_str().unwrap().contains("treshold-ms"));
    let st = get(&o.control, "/v1/status");
    assert_eq!(st["threshold_ms"], 2000, "the old configuration stays");
    assert_eq!(st["last_reload"]["result"], "failed");

    // SIGHUP is recorded the same way.
    std::fs::write(&cfg, "threshold-ms = 2500\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(o._child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    o.wait("SIGHUP reload in last_reload", || {
        get(&o.control, "/v1/status")["threshold_ms"] == 2500
    });
    assert_eq!(
        get(&o.control, "/v1/status")["last_reload"]["result"],
        "applied"
    );
}

#[test]
fn control_socket_rules_live_refused_none_off() {
    let o = start(&[]);
    // Default: beside the beat socket, `.ctl`.
    assert_eq!(o.control, o.socket.with_extension("ctl"));
    // A second observer on the same control socket is refused at start.
    let out = Command::new(common::bin())
        .arg("--socket")
        .arg(o.dir.path().join("other.sock"))
        .arg("--control-socket")
        .arg(&o.control)
        .arg("--shutdown-after-secs")
        .arg("5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--control-socket") && err.contains("already listening"),
        "{err}"
    );
    // `none`: no control line, no file.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .arg("--socket")
        .arg(dir.path().join("n.sock"))
        .args(["--control-socket", "none", "--shutdown-after-secs", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("control:"));
    assert!(!dir.path().join("n.ctl").exists());
}
