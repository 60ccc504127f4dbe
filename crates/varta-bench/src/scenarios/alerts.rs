//! `alerts`: latency of the Alertmanager push (ours only: the original has
//! none), from the stall event to the alert arriving.
//!
//! Agents beat every `interval` ms and fall silent (alive) at seeded random
//! instants; our observer pushes `VartaAgentStalled` to
//! - a fake Alertmanager (a `tiny_http` server in this process): latency =
//!   arrival of the POST − the alert's `startsAt` (the wall time our sink
//!   saw the stall, microseconds); this is the push path itself (queue,
//!   alert thread, sender thread, HTTP);
//! - and, when Debian's `prometheus-alertmanager` is installed, a real
//!   Alertmanager (group_wait 0s) whose webhook is served here: latency =
//!   webhook arrival − `startsAt`, the path to a notification.
//!
//! Same host, same wall clock: no clock offset to correct. Each alert
//! counts once (its first arrival); re-sends are ignored.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::{at_random_instants, Table};
use crate::procs::{
    bench_dir, spawn_stoppable_senders, Binaries, ChildGuard, Observer, ObserverSpec, Res,
    SenderSpec, Which, TRACKER_CAPACITY,
};
use crate::stats::{percentile, Cmp, Goal, Summary};
use crate::{AlertsArgs, Common, Outcome};

const AM_BIN: &str = "/usr/bin/prometheus-alertmanager";

/// pid → first arrival latency (ms) of its `VartaAgentStalled`.
type Seen = Arc<Mutex<HashMap<String, f64>>>;

/// An HTTP receiver on a free loopback port; stops when dropped.
struct Receiver {
    url: String,
    seen: Seen,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Res<Receiver> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or("receiver has no IP address")?;
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let arrived = SystemTime::now();
                let mut text = String::new();
                let _ = req.as_reader().read_to_string(&mut text);
                let _ = req.respond(tiny_http::Response::empty(200));
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Ours: an array of alerts; a webhook: {"alerts": [...]}.
                let alerts = v
                    .as_array()
                    .or_else(|| v["alerts"].as_array())
                    .cloned()
                    .unwrap_or_default();
                let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
                for a in alerts {
                    if a["labels"]["alertname"] != "VartaAgentStalled" || a["status"] == "resolved"
                    {
                        continue;
                    }
                    let (Some(pid), Some(starts)) =
                        (a["labels"]["pid"].as_str(), a["startsAt"].as_str())
                    else {
                        continue;
                    };
                    let Ok(t0) = humantime::parse_rfc3339(starts) else {
                        continue;
                    };
                    let ms = arrived
                        .duration_since(t0)
                        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                    seen.entry(pid.to_string()).or_insert(ms);
                }
            }
        });
        Ok(Receiver {
            url: format!("http://{addr}"),
            seen,
            stop,
            thread: Some(thread),
        })
    }

    fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn latencies(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .seen
            .lock()
            .map(|s| s.values().copied().collect())
            .unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A real Alertmanager routing everything to `hook` at once.
fn start_alertmanager(dir: &Path, hook: &Receiver) -> Res<(ChildGuard, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: ['alertname', 'pid']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{}/hook'\n",
            hook.url
        ),
    )?;
    let child = Command::new(AM_BIN)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let guard = ChildGuard { child };
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > until {
            return Err("Alertmanager did not listen within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Listening is not ready; the config is loaded by then in practice,
    // and the first stall comes a second later.
    Ok((guard, url))
}

/// Which latencies of a run a table row is about.
type Pick = fn(&Run) -> Option<&Vec<f64>>;

fn direct(r: &Run) -> Option<&Vec<f64>> {
    Some(&r.direct)
}

fn via(r: &Run) -> Option<&Vec<f64>> {
    r.via_am.as_ref()
}

struct Run {
    direct: Vec<f64>,
    via_am: Option<Vec<f64>>,
    stalls: usize,
}

fn one_run(a: &AlertsArgs, bins: &Binaries, agents: usize, span_ms: u64, seed: u64) -> Res<Run> {
    let dir = bench_dir()?;
    let direct = Receiver::start()?;
    let hook = Receiver::start()?;
    let am_used = Path::new(AM_BIN).exists() && !a.alerts_no_alertmanager;
    let am = if am_used {
        Some(start_alertmanager(dir.path(), &hook)?)
    } else {
        None
    };
    let mut extra: Vec<String> = vec![
        "--alertmanager-url".into(),
        direct.url.clone(),
        "--alertmanager-resend-ms".into(),
        "600000".into(),
    ];
    if let Some((_, url)) = &am {
        extra.extend(["--alertmanager-url".into(), url.clone()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let lifetime = Duration::from_millis(span_ms + a.alerts_threshold_ms) + Duration::from_secs(30);
    let obs = Observer::start(
        bins,
        &ObserverSpec {
            which: Which::Ours,
            dir: dir.path(),
            threshold_ms: a.alerts_threshold_ms,
            export: false,
            tracker_capacity: TRACKER_CAPACITY,
            extra: &extra,
            lifetime,
        },
    )?;
    let sockets = [obs.socket.as_path()];
    let mut agents_v = spawn_stoppable_senders(
        agents,
        &SenderSpec {
            sockets: &sockets,
            interval_ms: Some(a.alerts_interval_ms),
            report: false,
            lifetime,
        },
    )?;
    let earliest_ms = 5 * a.alerts_interval_ms + 500;
    at_random_instants(seed, agents, earliest_ms, span_ms, |i| {
        let stdin = agents_v[i].stdin.as_mut().ok_or("an agent has no stdin")?;
        stdin.write_all(b"S")?;
        Ok(())
    })?;
    let until =
        Instant::now() + Duration::from_millis(a.alerts_threshold_ms) + Duration::from_secs(10);
    while Instant::now() < until
        && (direct.count() < agents || (am.is_some() && hook.count() < agents))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(agents_v);
    obs.stop();
    drop(am);
    Ok(Run {
        direct: direct.latencies(),
        via_am: am_used.then(|| hook.latencies()),
        stalls: agents,
    })
}

pub fn run(a: &AlertsArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let agents = a.alerts_agents.unwrap_or(if c.quick { 10 } else { 50 });
    let secs = a.alerts_secs.unwrap_or(if c.quick { 3.0 } else { 5.0 });
    let span_ms = (secs * 1000.0) as u64;
    if agents == 0 || span_ms <= 5 * a.alerts_interval_ms + 600 {
        return Err("alerts needs --alerts-agents >= 1 and a longer --alerts-secs".into());
    }
    println!(
        "## alerts: {agents} agents beating every {} ms fall silent over {secs} s, threshold {} ms, {} reps{}",
        a.alerts_interval_ms,
        a.alerts_threshold_ms,
        c.reps,
        if Path::new(AM_BIN).exists() && !a.alerts_no_alertmanager {
            "; a fake Alertmanager and a real one (webhook) as targets"
        } else {
            "; a fake Alertmanager as target (no prometheus-alertmanager here)"
        }
    );
    let mut runs = Vec::new();
    for rep in 0..c.reps as usize {
        let r = one_run(
            a,
            bins,
            agents,
            span_ms,
            a.alerts_seed.wrapping_add(rep as u64),
        )?;
        eprintln!(
            "  rep {}: {}/{} alerts at the fake Alertmanager, p50 {:.2} ms, p99 {:.2} ms{}",
            rep + 1,
            r.direct.len(),
            r.stalls,
            percentile(&r.direct, 0.5),
            percentile(&r.direct, 0.99),
            r.via_am.as_ref().map_or(String::new(), |v| format!(
                "; webhook {}/{}, p50 {:.2} ms, p99 {:.2} ms",
                v.len(),
                r.stalls,
                percentile(v, 0.5),
                percentile(v, 0.99)
            ))
        );
        runs.push(r);
    }
    let pooled = |f: Pick| {
        let mut all: Vec<f64> = runs.iter().filter_map(f).flatten().copied().collect();
        all.sort_by(f64::total_cmp);
        all
    };
    let per_rep = |f: Pick, p: f64| {
        Summary::of(
            &runs
                .iter()
                .filter_map(f)
                .map(|v| percentile(v, p))
                .collect::<Vec<_>>(),
        )
    };
    let mut t = Table::new(&[
        "path",
        "alerts / stalls",
        "p50 ms",
        "p99 ms",
        "pooled p50 / p99 / max ms",
    ]);
    let total = runs.iter().map(|r| r.stalls).sum::<usize>();
    let mut results = json!({ "stalls": total });
    for (label, key, f) in [
        ("stall → fake Alertmanager (POST)", "direct", direct as Pick),
        (
            "stall → real Alertmanager → webhook",
            "via_alertmanager",
            via as Pick,
        ),
    ] {
        let all = pooled(f);
        if runs.iter().all(|r| f(r).is_none()) {
            continue;
        }
        t.row(vec![
            label.into(),
            format!("{} / {total}", all.len()),
            per_rep(f, 0.5).cell(2),
            per_rep(f, 0.99).cell(2),
            format!(
                "{:.2} / {:.2} / {:.2}",
                percentile(&all, 0.5),
                percentile(&all, 0.99),
                all.last().copied().unwrap_or(f64::NAN)
            ),
        ]);
        results[key] = json!({
            "count": all.len(),
            "p50_ms": percentile(&all, 0.5),
            "p99_ms": percentile(&all, 0.99),
            "max_ms": all.last().copied(),
        });
    }
    println!();
    t.print();
    println!(
        "\nlatency = arrival at the receiver − the alert's startsAt (wall time of the stall event in our sink); p50/p99 columns: median (min–max) of the per-rep percentiles"
    );
    let all = pooled(direct);
    let goals = vec![
        Goal::new(
            "alerts: every stall reaches the fake Alertmanager",
            all.len() as f64,
            Cmp::AtLeast,
            total as f64,
            "",
        ),
        Goal::new(
            "alerts: stall → Alertmanager p99",
            percentile(&all, 0.99),
            Cmp::AtMost,
            100.0,
            " ms",
        ),
    ];
    Ok(Outcome {
        scenario: "alerts",
        results,
        goals,
    })
}
