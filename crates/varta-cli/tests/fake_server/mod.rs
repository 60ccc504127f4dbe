//! A fake control API server on a Unix socket, serving canned JSON shaped
//! as docs/api.md describes, so the CLI's client side is tested without
//! the observer. It records every request line it receives.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Number of agents the fake tracks: pids 100..100+AGENTS; every 10th is
/// stalled, every 100th of those has given up.
pub const AGENTS: u32 = 2500;

/// Shared knobs and the request log.
#[derive(Default)]
pub struct State {
    /// `METHOD path?query` of every request, in order.
    pub requests: Mutex<Vec<String>>,
    /// The next reload fails with 422.
    pub reload_fails: AtomicBool,
    /// `/v1/events?follow=1` stays open (no `dropped` line, no end).
    pub follow_forever: AtomicBool,
}

/// A running fake; the thread ends with the test process.
pub struct Fake {
    /// The socket path.
    pub path: PathBuf,
    /// Knobs and log.
    pub state: Arc<State>,
    _dir: tempfile::TempDir,
}

impl Fake {
    /// Starts the fake in a new temporary directory.
    pub fn start() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("varta.ctl");
        let state = Arc::new(State::default());
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, st));
        });
        Fake {
            path,
            state,
            _dir: dir,
        }
    }

    /// The request log so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

/// A socket that accepts connections and never answers (for timeouts).
pub fn silent_socket(dir: &Path) -> PathBuf {
    let path = dir.join("silent.ctl");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    path
}

async fn serve(listener: std::os::unix::net::UnixListener, state: Arc<State>) {
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let st = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, Infallible>(route(req, &st)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A body fed line by line from a channel (the event stream).
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Lines {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type Resp = Response<http_body_util::Either<http_body_util::Full<Bytes>, Lines>>;

fn json_resp(code: StatusCode, v: Value) -> Resp {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(http_body_util::Either::Left(http_body_util::Full::new(
            Bytes::from(v.to_string()),
        )))
        .unwrap()
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.replace("%2A", "*"))
        })
        .collect()
}

/// The canned agent with this pid.
pub fn agent(pid: u32) -> Value {
    let stalled = pid % 10 == 0;
    let given_up = pid % 1000 == 0;
    json!({
        "pid": pid,
        "state": if stalled { "stalled" } else { "alive" },
        "name": format!("svc-{pid}.service"),
        "unit": format!("svc-{pid}.service"),
        "container": null,
        "comm": "svc",
        "exe": "/usr/bin/svc",
        "uid": 0,
        "peer": null,
        "origin": "kernel_attested",
        "last_beat_unix_ms": 1_764_530_000_123u64,
        "last_beat_age_ms": if stalled { 7_500 } else { 120 },
        "nonce": 77,
        "status": "ok",
        "payload": 0,
        "rule": 1,
        "threshold_ms": 2000,
        "recovery": {"attempts": if given_up { 3 } else { 0 },
                     "last_outcome": if given_up { json!("nonzero_exit") } else { Value::Null },
                     "given_up": given_up}
    })
}

fn status() -> Value {
    json!({
        "version": "0.3.0", "pid": 4242, "uptime_s": 3600.5,
        "config_file": "/etc/varta/varta-watch.toml",
        "listeners": {"socket": "/run/varta/varta.sock", "control": "/run/varta/varta.ctl",
                      "udp": null, "metrics": "127.0.0.1:9101"},
        "threshold_ms": 5000, "tracker_capacity": 4096,
        "rules": [{"index": 1, "match": "unit=nginx.service", "threshold_ms": 2000,
                   "startup_grace_ms": 10000, "required": true, "recovery": "rule"}],
        "counts": {"alive": AGENTS - AGENTS / 10, "stalled": AGENTS / 10, "exited": 0,
                   "given_up": 2, "missing": 1},
        "missing": ["nginx.service"],
        "last_reload": {"at_unix_ms": 1_764_530_000_000u64, "result": "applied",
                        "changes": ["threshold-ms 5000 -> 3000"], "error": null},
        "snapshot_age_ms": 12
    })
}

fn agents_page(q: &[(String, String)]) -> Resp {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some((k, _)) = q
        .iter()
        .find(|(k, _)| !["state", "name", "limit", "cursor"].contains(&k.as_str()))
    {
        return json_resp(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("unknown query parameter `{k}`")}),
        );
    }
    let limit: usize = get("limit").map_or(1000, |l| l.parse().unwrap());
    let after: u32 = get("cursor").map_or(0, |c| c.trim_start_matches('c').parse().unwrap());
    let states: Vec<&str> = get("state").map_or(vec![], |s| s.split(',').collect());
    let name = get("name");
    let matching: Vec<Value> = (100..100 + AGENTS)
        .map(agent)
        .filter(|a| {
            states.is_empty()
                || states.contains(&a["state"].as_str().unwrap())
                || (states.contains(&"given_up") && a["recovery"]["given_up"] == true)
        })
        .filter(|a| match name {
            Some(g) => {
                let prefix = g.trim_end_matches('*');
                a["name"].as_str().unwrap().starts_with(prefix)
            }
            None => true,
        })
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .filter(|a| a["pid"].as_u64().unwrap() > u64::from(after))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let page: Vec<Value> = page.into_iter().take(limit).collect();
    let next = if more {
        json!(format!("c{}", page.last().unwrap()["pid"]))
    } else {
        Value::Null
    };
    json_resp(
        StatusCode::OK,
        json!({"agents": page, "total": total, "next_cursor": next, "snapshot_age_ms": 40}),
    )
}

fn event(kind: &str, pid: u32, detail: &str) -> String {
    format!(
        "{}\n",
        json!({"time": "2025-11-30T19:13:20.123456789Z", "observer_ns": 1, "kind": kind,
               "pid": pid, "nonce": 7, "status": null, "payload": null, "detail": detail,
               "name": format!("svc-{pid}.service"), "unit": null, "container": null,
               "comm": null, "exe": null})
    )
}

fn events(q: &[(String, String)], st: &State) -> Resp {
    let follow = q.iter().any(|(k, v)| k == "follow" && v == "1");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let forever = st.follow_forever.load(Ordering::SeqCst);
    tokio::spawn(async move {
        let _ = tx
            .send(event("stall", 110, "silent_ns=7500000000").into())
            .await;
        let _ = tx
            .send(event("recovered", 110, "silent_ns=8000000000").into())
            .await;
        if follow {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(event("exit", 120, "kernel_attested").into()).await;
            if forever {
                tx.closed().await;
                return;
            }
            let dropped =
                json!({"kind": "dropped", "detail": "reader too slow: 4100 events not delivered"});
            let _ = tx.send(format!("{dropped}\n").into()).await;
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(http_body_util::Either::Right(Lines(rx)))
        .unwrap()
}

fn route(req: Request<Incoming>, st: &State) -> Resp {
    let line = format!("{} {}", req.method(), req.uri());
    st.requests.lock().unwrap().push(line);
    let q = query(&req);
    let path = req.uri().path().to_owned();
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/v1/status") => json_resp(StatusCode::OK, status()),
        ("GET", "/v1/agents") => agents_page(&q),
        ("GET", "/v1/events") => events(&q, st),
        ("POST", "/v1/reload") => {
            if st.reload_fails.load(Ordering::SeqCst) {
                json_resp(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"result": "failed", "error": "config file /etc/varta/varta-watch.toml: unknown key `treshold-ms`"}),
                )
            } else {
                json_resp(
                    StatusCode::OK,
                    json!({"result": "applied", "changes": ["threshold-ms 5000 -> 3000"], "restart_needed": []}),
                )
            }
        }
        ("GET", p) if p.starts_with("/v1/agents/") => {
            let pid: u32 = p["/v1/agents/".len()..].parse().unwrap_or(0);
            if (100..100 + AGENTS).contains(&pid) {
                json_resp(StatusCode::OK, agent(pid))
            } else {
                json_resp(
                    StatusCode::NOT_FOUND,
                    json!({"error": format!("pid {pid} is not tracked")}),
                )
            }
        }
        _ => json_resp(StatusCode::NOT_FOUND, json!({"error": "no such route"})),
    }
}
