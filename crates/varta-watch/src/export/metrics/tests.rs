use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use varta_vlp::DecodeError;

use super::*;
use crate::events::{Event, Origin, RecoveryOutcome, RefusedReason, RejectReason, Sink};
use crate::export::counters::CountingSink;
use crate::http::RefusalReason;
use crate::identity::{IdentityId, IdentityRecord, NameId, Registry};

/// The original 0.2.0's scrape (see tests/data/README.md).
const ORIGINAL: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/original-0.2.0-metrics.txt"
));

/// promtool 2.42's lint warnings for the original's own output (its
/// `varta_recovery_duration_ns_sum` naming); nothing else is tolerated.
const ORIGINAL_LINT: [&str; 3] = [
    "varta_recovery_duration_ns_sum counter metrics should have \"_total\" suffix",
    "varta_recovery_duration_ns_sum metric names should not contain abbreviated units",
    "varta_recovery_duration_ns_sum non-histogram and non-summary metrics should not have \"_sum\" suffix",
];

struct Fixture {
    renderer: MetricsRenderer,
    counters: Arc<Counters>,
    obs: Arc<Observations>,
    recovery: Arc<RecoveryStats>,
    by_name: ByNameSink,
    registry: Arc<Registry>,
}

/// An identity record named `name` (with `exe` to tell records apart).
fn record(name: &str, exe: &str) -> IdentityRecord {
    IdentityRecord {
        name: Arc::from(name),
        exe: Some(Arc::from(exe)),
        ..IdentityRecord::unknown()
    }
}

fn identified(pid: u32, identity: IdentityId) -> Event {
    Event::Identified {
        pid,
        identity,
        rule: None,
    }
}

fn stall(pid: u32) -> Event {
    Event::Stall {
        pid,
        last_nonce: 1,
        last_beat_ns: 0,
        origin: Origin::KernelAttested,
        foreign_ns: false,
    }
}

fn recovered(pid: u32) -> Event {
    Event::Recovered {
        pid,
        nonce: 2,
        status: varta_vlp::Status::Ok,
        payload: 0,
        silent_ns: 1,
    }
}

fn exit(pid: u32) -> Event {
    Event::Exit {
        pid,
        timestamp: 0,
        payload: 0,
        origin: Origin::KernelAttested,
        foreign_ns: false,
    }
}

fn fixture() -> Fixture {
    // Per-name families with samples in every render: nginx.service with
    // two agents (one stalled, a restart), and a name that needs escaping.
    let registry = Arc::new(Registry::new(64));
    let mut by_name = ByNameSink::new(registry.clone());
    let nginx = registry.intern(record("nginx.service", "/usr/sbin/nginx"));
    let weird = registry.intern(record("we\"ird\\name", "/x"));
    for (pid, id) in [(9867, nginx), (9900, nginx), (9901, weird)] {
        by_name.on_event(0, &identified(pid, id));
    }
    by_name.on_event(0, &stall(9867));
    let counters = Arc::new(Counters::default());
    let obs = Arc::new(Observations::new());
    let recovery = Arc::new(RecoveryStats::default());
    let renderer = MetricsRenderer::new(MetricsSources {
        counters: counters.clone(),
        audit: Arc::new(AuditCounters::default()),
        recovery: Some(recovery.clone()),
        http: None,
        export: None,
        observations: obs.clone(),
        started: Instant::now(),
        tracker_capacity: 256,
        granted_rcvbuf: 2_097_152,
        per_agent_limit: 10_000,
        udp_sender_capacity: 0,
        by_name: Some(by_name.shared()),
    });
    Fixture {
        renderer,
        counters,
        obs,
        recovery,
        by_name,
        registry,
    }
}

/// Like the original's scrape: one agent that beat 20 times, then stalled;
/// plus two more.
fn representative() -> Arc<Snapshot> {
    let agent = |pid, beats, stalls, status| AgentSample {
        pid,
        name: Arc::from("nginx.service"),
        unit: Some(Arc::from("nginx.service")),
        beats,
        stalls,
        status,
        last_beat_unix_s: 1_796_047_505.002,
        ..AgentSample::default()
    };
    Arc::new(Snapshot {
        agents: vec![
            agent(9867, 20, 1, 3),
            agent(9900, 5, 0, 0),
            agent(9901, 7, 2, 1),
        ],
        overflow: 2,
        counts: AgentCounts {
            alive: 2,
            stalled: 1,
            exited: 2,
            given_up: 1,
        },
        pid_max: 32768,
        last_loop_unix_s: 1_796_047_505.25,
        required: vec![(Arc::from("billing"), true), (Arc::from("ghost"), false)],
    })
}

fn text(r: &MetricsRenderer, snap: &Arc<Snapshot>, f: Format) -> String {
    String::from_utf8(r.render(snap, f)).expect("UTF-8 body")
}

/// `# <kind> <name> <rest>` lines: name → rest, asserting each name once.
fn descriptors(body: &str, kind: &str) -> BTreeMap<String, String> {
    let prefix = format!("# {kind} ");
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let (name, value) = rest.split_once(' ').expect("name and value");
            let dup = out.insert(name.to_string(), value.to_string());
            assert!(dup.is_none(), "{kind} line for {name} twice");
        }
    }
    out
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: String,
}

/// Sample lines (no escapes in our label values).
fn samples(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let inner = rest.strip_suffix('}').expect("closing brace");
                    let labels = inner
                        .split("\",")
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n, labels)
                }
                None => (series, Vec::new()),
            };
            Sample {
                name: name.to_string(),
                labels,
                value: value.to_string(),
            }
        })
        .collect()
}

fn value_of(body: &str, name: &str, label: Option<(&str, &str)>) -> Option<String> {
    samples(body)
        .into_iter()
        .find(|s| {
            s.name == name
                && match label {
                    None => s.labels.is_empty(),
                    Some((k, v)) => s.labels.iter().any(|(a, b)| a == k && b == v),
                }
        })
        .map(|s| s.value)
}

#[test]
fn renderer_can_back_the_http_service() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<MetricsRenderer>();
    send_sync::<Observations>();
}

#[test]
fn type_lines_are_the_originals() {
    let f = fixture();
    let ours = descriptors(
        &text(&f.renderer, &representative(), Format::Prometheus),
        "TYPE",
    );
    let original = descriptors(ORIGINAL, "TYPE");
    assert_eq!(original.len(), 58);
    for (name, ty) in &original {
        assert_eq!(ours.get(name), Some(ty), "# TYPE {name} {ty}");
    }
    let extra: Vec<_> = ours.keys().filter(|n| !original.contains_key(*n)).collect();
    assert!(extra.contains(&&"varta_agents".to_string()), "{extra:?}");
}

#[test]
fn help_texts_are_the_originals_unless_retired() {
    let f = fixture();
    let ours = descriptors(
        &text(&f.renderer, &representative(), Format::Prometheus),
        "HELP",
    );
    let retired: BTreeSet<&str> = RETIRED.iter().map(|(n, _)| *n).collect();
    for (name, help) in descriptors(ORIGINAL, "HELP") {
        let got = &ours[&name];
        if retired.contains(name.as_str()) {
            assert!(
                got.starts_with("Retired in varta-watch 0.3: "),
                "{name}: {got}"
            );
        } else if !AMENDED_HELP.contains(&name.as_str()) {
            assert_eq!(got, &help, "HELP of {name}");
        }
    }
    // Every retired or UDP-only name is a family of the original.
    let original = descriptors(ORIGINAL, "TYPE");
    for n in retired.iter().chain(AMENDED_HELP) {
        assert!(original.contains_key(*n), "{n}");
    }
}

/// Label value for comparison: 0.0.4 writes `le="1"`, OpenMetrics `le="1.0"`.
fn norm(label: &str, v: &str) -> String {
    match label {
        "le" => v.parse::<f64>().expect("le").to_string(),
        _ => v.to_string(),
    }
}

fn labelled(body: &str, name: &str, label: &str) -> BTreeMap<String, String> {
    samples(body)
        .into_iter()
        .filter(|s| s.name == name)
        .filter_map(|s| {
            let v = s.labels.iter().find(|(k, _)| k == label)?.1.clone();
            Some((norm(label, &v), s.value))
        })
        .collect()
}

fn assert_all_zero(body: &str, name: &str, label: &str, values: &[&str]) {
    let got = labelled(body, name, label);
    for v in values {
        assert_eq!(
            got.get(*v).map(String::as_str),
            Some("0"),
            "{name}{{{label}=\"{v}\"}}"
        );
    }
}

#[test]
fn fixed_label_values_present_at_zero_from_the_first_render() {
    let f = fixture();
    let empty = Arc::new(Snapshot::default());
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let body = text(&f.renderer, &empty, format);
        // Every labelled sample of the original (bar pid; stages below), at
        // zero here (the original's histograms had observations).
        for s in samples(ORIGINAL) {
            let Some((k, v)) = s.labels.first() else {
                continue;
            };
            if k == "pid" || s.name.starts_with("varta_observer_stage_seconds") {
                continue;
            }
            let want = if s.name == "varta_signal_handler_install_total" {
                "1"
            } else {
                "0"
            };
            let got = labelled(&body, &s.name, k);
            assert_eq!(
                got.get(&norm(k, v)).map(String::as_str),
                Some(want),
                "{}{{{k}=\"{v}\"}} ({format:?})",
                s.name
            );
        }
        // Every value of our enums, mapped.
        assert_all_zero(
            &body,
            "varta_decode_errors_total",
            "kind",
            &DecodeError::KINDS,
        );
        assert_all_zero(
            &body,
            "varta_recovery_outcomes_total",
            "outcome",
            &RecoveryOutcome::LABELS,
        );
        let refused: Vec<&str> = RefusedReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_all_zero(&body, "varta_recovery_refused_total", "reason", &refused);
        let rejected: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_all_zero(&body, "varta_rejected_total", "reason", &rejected);
        assert_all_zero(&body, "varta_events_total", "kind", &Event::KINDS);
        let http: Vec<&str> = RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_all_zero(&body, "varta_http_refused_total", "reason", &http);
        assert_all_zero(
            &body,
            "varta_agents",
            "state",
            &["alive", "stalled", "exited", "given_up"],
        );
        let logs: Vec<&str> = LogKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_all_zero(&body, "varta_log_suppressed_total", "kind", &logs);
        for st in Stage::ALL {
            let count = labelled(&body, "varta_observer_stage_seconds_count", "stage");
            assert_eq!(
                count.get(st.as_str()).map(String::as_str),
                Some("0"),
                "{st:?}"
            );
        }
        assert_eq!(
            value_of(
                &body,
                "varta_build_info",
                Some(("version", env!("CARGO_PKG_VERSION")))
            )
            .as_deref(),
            Some("1")
        );
    }
}

#[test]
fn values_flow_from_the_sources() {
    let f = fixture();
    let mut sink = CountingSink::new(f.counters.clone());
    sink.on_event(0, &Event::DecodeError(DecodeError::BadMagic));
    sink.on_event(
        0,
        &Event::Rejected {
            pid: 4,
            reason: RejectReason::RateLimitedGlobal,
        },
    );
    sink.on_event(
        0,
        &Event::Rejected {
            pid: 4,
            reason: RejectReason::PidAboveMax,
        },
    );
    let refused = RecoveryOutcome::Refused(RefusedReason::CrossNamespaceAgent);
    sink.on_event(
        0,
        &Event::Recovery {
            pid: 4,
            child: 0,
            outcome: refused,
        },
    );
    sink.on_event(0, &Event::Ctrunc);
    f.obs.record_recovery_duration(1500);
    f.obs.loop_iteration.observe(0.00002);
    f.obs.stage(Stage::Poll).observe(0.2);
    f.obs.record_log_suppressed(LogKind::AuditIo, 3);
    f.recovery.triggers_dropped.store(9, Ordering::Relaxed);
    let http = Arc::new(HttpCounters::default());
    http.refused[RefusalReason::Unauthorized as usize].store(4, Ordering::Relaxed);
    http.refused[RefusalReason::ConnectionLimit as usize].store(5, Ordering::Relaxed);
    f.renderer.attach_http(http);

    let snap = representative();
    let body = text(&f.renderer, &snap, Format::Prometheus);
    let v = |n: &str, l: Option<(&str, &str)>| {
        value_of(&body, n, l).unwrap_or_else(|| panic!("{n} {l:?}"))
    };
    assert_eq!(v("varta_beats_total", Some(("pid", "9867"))), "20");
    assert_eq!(v("varta_stalls_total", Some(("pid", "9867"))), "1");
    assert_eq!(v("varta_status", Some(("pid", "9867"))), "3");
    assert_eq!(
        v("varta_last_beat_timestamp_seconds", Some(("pid", "9867"))),
        "1796047505.002"
    );
    assert_eq!(
        v("varta_decode_errors_total", Some(("kind", "bad_magic"))),
        "1"
    );
    assert_eq!(
        v("varta_rate_limited_total", Some(("reason", "global"))),
        "1"
    );
    assert_eq!(v("varta_frame_rejected_pid_above_max_total", None), "1");
    assert_eq!(
        v(
            "varta_recovery_refused_total",
            Some(("reason", "cross_namespace_agent"))
        ),
        "1"
    );
    assert_eq!(
        v(
            "varta_recovery_outcomes_total",
            Some(("outcome", "refused_cross_namespace"))
        ),
        "1"
    );
    assert_eq!(v("varta_ctrl_truncated_total", None), "1");
    assert_eq!(v("varta_events_total", Some(("kind", "ctrunc"))), "1");
    assert_eq!(v("varta_recovery_duration_count_total", None), "1");
    assert_eq!(v("varta_observer_iteration_seconds_count", None), "1");
    assert_eq!(
        v(
            "varta_observer_iteration_seconds_bucket",
            Some(("le", "5e-05"))
        ),
        "1"
    );
    assert_eq!(
        v(
            "varta_observer_stage_seconds_count",
            Some(("stage", "poll"))
        ),
        "1"
    );
    assert_eq!(
        v("varta_log_suppressed_total", Some(("kind", "audit_io"))),
        "3"
    );
    assert_eq!(v("varta_recovery_trigger_queue_dropped_total", None), "9");
    assert_eq!(v("varta_prom_auth_failures_total", None), "4");
    assert_eq!(
        v(
            "varta_prom_connections_dropped_total",
            Some(("reason", "drain"))
        ),
        "5"
    );
    assert_eq!(
        v(
            "varta_http_refused_total",
            Some(("reason", "connection_limit"))
        ),
        "5"
    );
    assert_eq!(v("varta_tracker_capacity", None), "256");
    assert_eq!(v("varta_tracker_eviction_scan_window_max", None), "256");
    assert_eq!(v("varta_observer_uds_rcvbuf_bytes", None), "2097152");
    assert_eq!(v("varta_pid_max_current", None), "32768");
    assert_eq!(v("varta_watch_pids_tracked", None), "5");
    assert_eq!(v("varta_agents", Some(("state", "given_up"))), "1");
    assert_eq!(v("varta_per_agent_metrics_omitted_agents", None), "2");
    assert_eq!(v("varta_per_agent_metrics_overflow_total", None), "2");
    assert_eq!(
        v("varta_watch_last_poll_loop_timestamp_seconds", None),
        "1796047505.25"
    );

    // The original's `_ns_sum` counter without `_total`, in 0.0.4 only.
    assert!(body.contains(
        "# TYPE varta_recovery_duration_ns_sum counter\nvarta_recovery_duration_ns_sum 1500\n"
    ));
    assert!(!body.contains("varta_recovery_duration_ns_sum_total"));
    let om = text(&f.renderer, &snap, Format::OpenMetrics);
    assert!(om.contains("# TYPE varta_recovery_duration_ns_sum counter\nvarta_recovery_duration_ns_sum_total 1500\n"));
    // Two rendered bodies, each leaving two agents out.
    assert_eq!(
        value_of(&om, "varta_per_agent_metrics_overflow_total", None).as_deref(),
        Some("4")
    );

    // Swapping the export counters keeps rendering.
    f.renderer
        .set_export(Some(Arc::new(FileExportCounters::default())));
    f.renderer.set_export(None);
    let body = text(&f.renderer, &snap, Format::Prometheus);
    assert_eq!(
        value_of(&body, "varta_export_write_errors_total", None).as_deref(),
        Some("0")
    );
}

/// Runs promtool on a 0.0.4 body: None when promtool is not installed,
/// else its lint lines (asserting it parsed).
fn promtool(body: &str) -> Option<Vec<String>> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // 0: clean; 3: lint problems only; anything else: did not parse.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool {:?}: {stderr}",
        out.status
    );
    Some(
        stderr
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn promtool_accepts_the_004_output() {
    let Some(original) = promtool(ORIGINAL) else {
        eprintln!("SKIP: promtool not installed (apt-get install -y prometheus)");
        return;
    };
    assert_eq!(
        original, ORIGINAL_LINT,
        "promtool's verdict on the original changed"
    );
    let f = fixture();
    f.obs.detection_overshoot.observe(0.003);
    for snap in [Arc::new(Snapshot::default()), representative()] {
        let lint = promtool(&text(&f.renderer, &snap, Format::Prometheus)).expect("promtool");
        for l in &lint {
            assert!(
                ORIGINAL_LINT.contains(&l.as_str()),
                "new promtool warning: {l}"
            );
        }
    }
}

/// OpenMetrics 1.0 structure: families not interleaved or repeated, sample
/// names match their family's type, counters end in `_total`, histograms
/// end with `+Inf`, `_sum`, `_count`, `# EOF` once, last.
fn check_openmetrics(body: &str) {
    assert!(body.ends_with("# EOF\n"), "no trailing # EOF");
    assert_eq!(body.matches("# EOF").count(), 1);
    let mut seen = BTreeSet::new();
    let mut family: Option<(String, String)> = None;
    let mut helped = None;
    for line in body.lines() {
        if line == "# EOF" {
            break;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped = Some(rest.split_once(' ').expect("help").0.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("type");
            assert_eq!(helped.as_deref(), Some(name), "HELP before TYPE for {name}");
            assert!(seen.insert(name.to_string()), "family {name} twice");
            if ty == "counter" {
                assert!(
                    !name.ends_with("_total"),
                    "counter family {name} keeps _total"
                );
            }
            assert!(matches!(ty, "counter" | "gauge" | "histogram"), "{ty}");
            family = Some((name.to_string(), ty.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line}");
        let (name, ty) = family.as_ref().expect("sample before any TYPE");
        let s = &samples(line)[0];
        let ok = match ty.as_str() {
            "counter" => s.name == format!("{name}_total") || s.name == format!("{name}_created"),
            "gauge" => &s.name == name,
            _ => [
                format!("{name}_bucket"),
                format!("{name}_sum"),
                format!("{name}_count"),
            ]
            .contains(&s.name),
        };
        assert!(ok, "sample {} in {ty} family {name}", s.name);
        if s.name.ends_with("_bucket") {
            assert!(s.labels.iter().any(|(k, _)| k == "le"), "{line}");
        }
        s.value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("value in {line}"));
    }
    assert!(body.contains("le=\"+Inf\""));
}

#[test]
fn openmetrics_output_is_well_formed() {
    let f = fixture();
    f.obs.ingest_batch.observe(32.0);
    for snap in [Arc::new(Snapshot::default()), representative()] {
        let body = text(&f.renderer, &snap, Format::OpenMetrics);
        check_openmetrics(&body);
        // Same families as 0.0.4, named the OpenMetrics way.
        let om = descriptors(&body, "TYPE");
        for (name, ty) in descriptors(ORIGINAL, "TYPE") {
            let base = match ty.as_str() {
                "counter" if name != "varta_recovery_duration_ns_sum" => name
                    .strip_suffix("_total")
                    .expect("counter name")
                    .to_string(),
                _ => name.clone(),
            };
            assert_eq!(om.get(&base), Some(&ty), "{name}");
        }
    }
}

/// A real OpenMetrics parser where one is installed (Debian
/// `python3-prometheus-client`); skipped otherwise.
#[test]
fn openmetrics_parser_accepts_the_output() {
    const PARSE: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        print(len(list(p(sys.stdin.read()))))";
    let f = fixture();
    let body = text(&f.renderer, &representative(), Format::OpenMetrics);
    for python in ["/usr/bin/python3", "python3"] {
        let Ok(mut child) = Command::new(python)
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            continue;
        };
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("python");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named") {
            continue;
        }
        assert!(out.status.success(), "OpenMetrics parser: {stderr}");
        let families: usize = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("count");
        assert_eq!(families, descriptors(&body, "TYPE").len());
        return;
    }
    eprintln!("SKIP: no OpenMetrics parser (apt-get install -y python3-prometheus-client)");
}

fn many_agents(n: u32) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        agents: (0..n)
            .map(|i| AgentSample {
                pid: 100_000 + i,
                name: Arc::from(format!("worker-{}", i % 50)),
                container: (i % 2 == 0).then(|| Arc::from("0123456789ab")),
                beats: u64::from(i) * 1000 + 7,
                stalls: u64::from(i % 3),
                status: (i % 4) as u8,
                last_beat_unix_s: 1_796_047_505.0 + f64::from(i) / 1000.0,
                ..AgentSample::default()
            })
            .collect(),
        overflow: 0,
        counts: AgentCounts {
            alive: u64::from(n),
            ..AgentCounts::default()
        },
        pid_max: 4_194_304,
        last_loop_unix_s: 1_796_047_600.0,
        required: Vec::new(),
    })
}

#[test]
fn renders_ten_thousand_agents() {
    let f = fixture();
    let body = text(&f.renderer, &many_agents(10_000), Format::Prometheus);
    assert_eq!(
        samples(&body)
            .iter()
            .filter(|s| s.name == "varta_beats_total")
            .count(),
        10_000
    );
    check_openmetrics(&text(
        &f.renderer,
        &many_agents(10_000),
        Format::OpenMetrics,
    ));
}

/// `cargo test -p varta-watch --release --lib export::metrics -- --ignored --nocapture`
#[test]
#[ignore = "timing, prints only"]
fn render_time_10k_agents() {
    let f = fixture();
    let snap = many_agents(10_000);
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..50 {
            let t = Instant::now();
            bytes = f.renderer.render(&snap, format).len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{format:?}: 10,000 agents, {bytes} bytes: median {:?}, p90 {:?}, min {:?}",
            times[25], times[45], times[0]
        );
    }
}

#[test]
fn per_pid_series_carry_name_unit_and_container() {
    let f = fixture();
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let body = text(&f.renderer, &representative(), format);
        // pid first (the original's queries keep matching), then name, unit.
        for line in [
            "varta_beats_total{pid=\"9867\",name=\"nginx.service\",unit=\"nginx.service\"} 20",
            "varta_stalls_total{pid=\"9867\",name=\"nginx.service\",unit=\"nginx.service\"} 1",
            "varta_status{pid=\"9867\",name=\"nginx.service\",unit=\"nginx.service\"} 3",
        ] {
            assert!(body.contains(line), "{line} ({format:?})\n{body}");
        }
        assert!(body.contains(
            "varta_last_beat_timestamp_seconds{pid=\"9867\",name=\"nginx.service\",unit=\"nginx.service\"} 1796047505.002"
        ));
        // Container only when known; no unit label when there is none.
        let many = text(&f.renderer, &many_agents(3), format);
        assert!(many.contains(
            "varta_beats_total{pid=\"100000\",name=\"worker-0\",container=\"0123456789ab\"} 7"
        ));
        assert!(many.contains("varta_beats_total{pid=\"100001\",name=\"worker-1\"} 1007"));
    }
    // An agent without a known identity is named unknown.
    let unnamed = Arc::new(Snapshot {
        agents: vec![AgentSample {
            pid: 5,
            beats: 1,
            ..AgentSample::default()
        }],
        ..Snapshot::default()
    });
    let body = text(&f.renderer, &unnamed, Format::Prometheus);
    assert!(body.contains("varta_beats_total{pid=\"5\",name=\"unknown\"} 1"));
}

#[test]
fn label_values_from_processes_are_escaped() {
    let f = fixture();
    let snap = Arc::new(Snapshot {
        agents: vec![AgentSample {
            pid: 7,
            name: Arc::from("a\"b\\c\nd} x=\"y"),
            unit: Some(Arc::from("u\"nit")),
            container: Some(Arc::from("c\\")),
            beats: 3,
            ..AgentSample::default()
        }],
        required: vec![(Arc::from("r\"q"), false)],
        ..Snapshot::default()
    });
    let want = "varta_beats_total{pid=\"7\",name=\"a\\\"b\\\\c\\nd} x=\\\"y\",unit=\"u\\\"nit\",container=\"c\\\\\"} 3";
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let body = text(&f.renderer, &snap, format);
        assert!(body.contains(want), "{format:?}\n{body}");
        assert!(body.contains("varta_required_agents{name=\"r\\\"q\",state=\"missing\"} 1"));
        // Registry names too (the fixture's `we"ird\name`).
        assert!(body.contains("varta_agent_restarts_total{name=\"we\\\"ird\\\\name\"} 0"));
        // No raw newline inside a sample line.
        assert!(
            body.lines()
                .all(|l| l.is_empty() || l.starts_with('#') || l.starts_with("varta_")),
            "{body}"
        );
    }
    if let Some(lint) = promtool(&text(&f.renderer, &snap, Format::Prometheus)) {
        for l in lint {
            assert!(ORIGINAL_LINT.contains(&l.as_str()), "promtool: {l}");
        }
    }
}

#[test]
fn per_name_families_follow_the_events() {
    let reg = Arc::new(Registry::new(64));
    let mut sink = ByNameSink::new(reg.clone());
    let api = reg.intern(record("api", "/bin/api"));
    let api2 = reg.intern(record("api", "/opt/api")); // another record, same name
    let db = reg.intern(record("db", "/bin/db"));
    let name = |id| reg.name_id(id);
    let mut ev = |e: Event| sink.on_event(0, &e);
    ev(Event::Beat {
        pid: 10,
        nonce: 1,
        status: varta_vlp::Status::Ok,
        payload: 0,
        origin: Origin::KernelAttested,
    });
    ev(identified(10, api)); // first life of api: no restart
    ev(identified(11, api2)); // another pid under api: a restart
    ev(Event::Identified {
        pid: 11,
        identity: api2,
        rule: Some(0),
    }); // reload re-identified it: same life
    ev(stall(10));
    ev(recovered(10));
    ev(stall(10));
    ev(Event::Eviction {
        pid: 10,
        was_live: false,
    });
    ev(exit(12)); // dying gasp before the identity was known
    ev(identified(12, db));
    ev(Event::NewLife { pid: 11 }); // pid reused
    ev(identified(11, api)); // earlier life of the same pid: a restart
    ev(stall(13)); // stalled before its identity was known: no named stall
    ev(identified(13, IdentityId::UNKNOWN));
    ev(identified(14, IdentityId::UNKNOWN)); // unknown never restarts
    let got: BTreeMap<String, NameStats> = sink
        .shared()
        .snapshot()
        .into_iter()
        .map(|(n, s)| (reg.name_str(n).to_string(), s))
        .collect();
    let st = |alive, stalled, exited, restarts, stalls| NameStats {
        alive,
        stalled,
        exited,
        restarts,
        stalls,
    };
    assert_eq!(got["api"], st(1, 0, 0, 2, 2));
    assert_eq!(got["db"], st(0, 0, 1, 0, 0));
    assert_eq!(got["unknown"], st(1, 1, 0, 0, 0));
    assert_eq!(got.len(), 3);
    assert_eq!(name(api), name(api2));

    // Rendered from those counts, and required names from the snapshot.
    let f = fixture();
    let r = MetricsRenderer::new(MetricsSources {
        by_name: Some(sink.shared()),
        ..sources(&f)
    });
    let snap = Arc::new(Snapshot {
        required: vec![(Arc::from("api"), true), (Arc::from("ghost"), false)],
        ..Snapshot::default()
    });
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let body = text(&r, &snap, format);
        for line in [
            "varta_agents_by_name{name=\"api\",state=\"alive\"} 1",
            "varta_agents_by_name{name=\"api\",state=\"stalled\"} 0",
            "varta_agents_by_name{name=\"db\",state=\"exited\"} 1",
            "varta_agents_by_name{name=\"unknown\",state=\"stalled\"} 1",
            "varta_agent_restarts_total{name=\"api\"} 2",
            "varta_agent_restarts_total{name=\"unknown\"} 0",
            "varta_agent_stalls_total{name=\"api\"} 2",
            "varta_agent_stalls_total{name=\"db\"} 0",
            "varta_required_agents{name=\"api\",state=\"present\"} 1",
            "varta_required_agents{name=\"api\",state=\"missing\"} 0",
            "varta_required_agents{name=\"ghost\",state=\"present\"} 0",
            "varta_required_agents{name=\"ghost\",state=\"missing\"} 1",
        ] {
            assert!(body.contains(line), "{line} ({format:?})\n{body}");
        }
        // Cardinality: names × 3 states, not pids.
        assert_eq!(
            samples(&body)
                .iter()
                .filter(|s| s.name == "varta_agents_by_name")
                .count(),
            9
        );
    }
    // Without a sink the families are there, with no samples.
    let body = text(&fixture_without_names(), &snap, Format::Prometheus);
    assert!(body.contains("# TYPE varta_agents_by_name gauge"));
    assert!(!body.contains("varta_agents_by_name{"));
    assert!(body.contains("varta_required_agents{name=\"ghost\",state=\"missing\"} 1"));
}

fn sources(f: &Fixture) -> MetricsSources {
    MetricsSources {
        counters: f.counters.clone(),
        audit: Arc::new(AuditCounters::default()),
        recovery: Some(f.recovery.clone()),
        http: None,
        export: None,
        observations: f.obs.clone(),
        started: Instant::now(),
        tracker_capacity: 256,
        granted_rcvbuf: 2_097_152,
        per_agent_limit: 10_000,
        udp_sender_capacity: 0,
        by_name: None,
    }
}

fn fixture_without_names() -> MetricsRenderer {
    MetricsRenderer::new(sources(&fixture()))
}

#[test]
fn fixture_names_render() {
    let f = fixture();
    let body = text(&f.renderer, &representative(), Format::Prometheus);
    assert!(body.contains("varta_agents_by_name{name=\"nginx.service\",state=\"alive\"} 1"));
    assert!(body.contains("varta_agents_by_name{name=\"nginx.service\",state=\"stalled\"} 1"));
    assert!(body.contains("varta_agent_restarts_total{name=\"nginx.service\"} 1"));
    assert!(body.contains("varta_agent_stalls_total{name=\"nginx.service\"} 1"));
    assert_eq!(f.registry.name_count(), 3); // unknown, nginx.service, we"ird\name
    let _ = &f.by_name;
}

proptest::proptest! {
    /// Any event sequence keeps the per-name state counts equal to what a
    /// recount from scratch gives: every identified, tracked pid in exactly
    /// one name and state, nothing negative, nothing leaked.
    #[test]
    fn per_name_counts_stay_consistent(
        ops in proptest::collection::vec((0u8..7, 0u32..6, 0usize..3), 0..200)
    ) {
        let reg = Arc::new(Registry::new(16));
        let ids = [
            reg.intern(record("a", "/a")),
            reg.intern(record("b", "/b")),
            IdentityId::UNKNOWN,
        ];
        let mut sink = ByNameSink::new(reg.clone());
        // The model: pid → (name, state) for tracked pids.
        let mut model: BTreeMap<u32, (Option<NameId>, u8)> = BTreeMap::new();
        let mut stalls: BTreeMap<NameId, u64> = BTreeMap::new();
        for (op, pid, n) in ops {
            let e = match op {
                0 => identified(pid, ids[n]),
                1 => stall(pid),
                2 => recovered(pid),
                3 => exit(pid),
                4 => Event::NewLife { pid },
                5 => Event::Eviction { pid, was_live: false },
                _ => Event::Ctrunc,
            };
            sink.on_event(0, &e);
            let m = model.entry(pid).or_insert((None, 0));
            match op {
                0 => m.0 = Some(reg.name_id(ids[n])),
                1 => {
                    m.1 = 1;
                    if let Some(name) = m.0 {
                        *stalls.entry(name).or_default() += 1;
                    }
                }
                2 => m.1 = 0,
                3 => m.1 = 2,
                4 => *m = (None, 0),
                5 => {
                    model.remove(&pid);
                }
                _ => {}
            }
        }
        let mut want: BTreeMap<NameId, [u64; 3]> = BTreeMap::new();
        for (name, state) in model.values() {
            if let Some(name) = name {
                want.entry(*name).or_default()[*state as usize] += 1;
            }
        }
        for (name, s) in sink.shared().snapshot() {
            let w = want.get(&name).copied().unwrap_or_default();
            proptest::prop_assert_eq!([s.alive, s.stalled, s.exited], w);
            proptest::prop_assert_eq!(s.stalls, stalls.get(&name).copied().unwrap_or(0));
        }
        for name in want.keys() {
            proptest::prop_assert!(sink.shared().snapshot().iter().any(|(n, _)| n == name));
        }
    }
}
