//! The observability bundle under `observability/` (alert and recording
//! rules, their promtool unit tests, the Alertmanager example, the Grafana
//! dashboard) and its runbooks in `docs/operations.md`:
//!
//! - `promtool check rules` accepts both rule files and `promtool test rules`
//!   passes (Debian's `prometheus`, installed by `.ci/run`);
//! - every alert has a severity, summary, description and a runbook section
//!   that exists, and is unit tested both firing and not firing;
//! - `amtool check-config` accepts the Alertmanager example, whose inhibition
//!   covers every agent alert (pushed and rule-based);
//! - the dashboard is valid JSON of the expected shape;
//! - every metric name used by the rules and the dashboard exists in a real
//!   scrape of the observer, so renaming a metric breaks the build.
//!
//! Outside CI a missing promtool/amtool skips that part (saying so); under
//! `CI` it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{spawn_agent, PATIENCE};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

const TOKEN: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// The alerts the observer pushes itself (docs/alerting.md).
const PUSHED_AGENT_ALERTS: [&str; 3] = [
    "VartaAgentStalled",
    "VartaAgentGivenUp",
    "VartaAgentMissing",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bundle(rel: &str) -> PathBuf {
    workspace().join("observability").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tool from Debian's packages, or None to skip (only outside CI: in CI a
/// missing package is a broken `.ci/run`, not a reason to pass).
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} missing in CI: .ci/run installs Debian's {package}"
        );
        eprintln!("skipped: no {name} (apt-get install {package}; .ci/run does)");
    }
    found
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let alerts = bundle("prometheus/varta-alerts.yml");
    let recording = bundle("prometheus/varta-recording.yml");
    let out = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .args([&alerts, &recording]),
    );
    assert_eq!(out.matches("SUCCESS").count(), 2, "{out}");
    let expected_alerts = alert_blocks(&read(&alerts)).len();
    assert!(
        out.contains(&format!("SUCCESS: {expected_alerts} rules found")),
        "promtool saw a different number of alert rules than the file has:\n{out}"
    );

    let tests = bundle("prometheus/tests/varta-alerts.test.yml");
    let out = run_ok(
        Command::new(&promtool)
            .args(["test", "rules"])
            .arg(&tests)
            .current_dir(tests.parent().unwrap()),
    );
    assert!(out.contains("SUCCESS"), "{out}");

    // The unit tests can fail: claim that the stall alert does not fire when
    // it does, and promtool must reject it.
    let dir = tempfile::tempdir().unwrap();
    let text = read(&tests)
        .replace("../varta-alerts.yml", alerts.to_str().unwrap())
        .replace("../varta-recording.yml", recording.to_str().unwrap());
    let firing =
        "      - eval_time: 5m\n        alertname: VartaAgentsStalled\n        exp_alerts:\n";
    assert!(text.contains(firing), "firing case of VartaAgentsStalled");
    let broken = text.replacen(
        firing,
        "      - eval_time: 5m\n        alertname: VartaAgentsStalled\n        exp_alerts: []\n      - eval_time: 6m\n        alertname: VartaAgentsStalled\n        exp_alerts:\n",
        1,
    );
    let broken_file = dir.path().join("broken.test.yml");
    std::fs::write(&broken_file, broken).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&broken_file)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "promtool accepted a wrong expectation:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `- alert: NAME` blocks of a rule file: name -> block text.
fn alert_blocks(text: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            if let Some((n, b)) = current.take() {
                blocks.insert(n, b);
            }
            current = Some((name.trim().to_string(), String::new()));
        } else if t.starts_with("- record:") || t.starts_with("- name:") {
            if let Some((n, b)) = current.take() {
                blocks.insert(n, b);
            }
        } else if let Some((_, b)) = current.as_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    if let Some((n, b)) = current {
        blocks.insert(n, b);
    }
    blocks
}

/// GitHub's anchor of a Markdown heading (enough for our headings).
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_labels_annotations_runbook_and_unit_tests() {
    let alerts = alert_blocks(&read(&bundle("prometheus/varta-alerts.yml")));
    let wanted = [
        "VartaAgentsStalled",
        "VartaAgentsGivenUp",
        "VartaRequiredAgentMissing",
        "VartaObserverDown",
        "VartaObserverLoopStalled",
        "VartaTrackerNearCapacity",
        "VartaMetricsAuthFailures",
        "VartaFrameAuthFailures",
        "VartaDecodeErrors",
        "VartaAuditWriteErrors",
        "VartaClockRegression",
        "VartaClockJump",
    ];
    for w in wanted {
        assert!(alerts.contains_key(w), "alert {w} missing from the rules");
    }

    let ops = read(&workspace().join("docs/operations.md"));
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
        .map(anchor)
        .collect();
    let readme = read(&workspace().join("README.md"));
    assert!(
        readme.contains("(docs/operations.md)"),
        "README links docs/operations.md"
    );

    // alertname -> (has a firing case, has a not-firing case)
    let tests = read(&bundle("prometheus/tests/varta-alerts.test.yml"));
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("alertname:") else {
            continue;
        };
        let next = lines[i + 1..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let entry = cases.entry(name.trim().to_string()).or_default();
        match next {
            "exp_alerts: []" => entry.1 = true,
            "exp_alerts:" => entry.0 = true,
            other => panic!("alertname {name} followed by {other:?}"),
        }
    }

    for (name, block) in &alerts {
        let severity = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("severity:"))
            .unwrap_or_else(|| panic!("{name}: no severity label"))
            .trim();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity}"
        );
        for key in ["summary:", "description:", "runbook_url:"] {
            assert!(
                block.lines().any(|l| l.trim().starts_with(key)),
                "{name}: no {key} annotation"
            );
        }
        let url = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook_url:"))
            .unwrap()
            .trim()
            .trim_matches('"');
        let (page, frag) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url without a section: {url}"));
        assert!(page.ends_with("docs/operations.md"), "{name}: {url}");
        assert_eq!(
            frag,
            anchor(name),
            "{name}: runbook section named after the alert"
        );
        assert!(
            anchors.contains(frag),
            "{name}: docs/operations.md has no section #{frag}"
        );
        assert_eq!(
            cases.get(name),
            Some(&(true, true)),
            "{name}: needs a firing and a not-firing promtool test case"
        );
    }
    for name in cases.keys() {
        assert!(
            alerts.contains_key(name),
            "test case for unknown alert {name}"
        );
    }
}

#[test]
fn alertmanager_example_is_valid_and_inhibits_every_agent_alert() {
    let path = bundle("alertmanager/alertmanager.yml");
    let text = read(&path);
    // Routing by severity.
    assert!(text.contains("severity = \"critical\""), "critical route");
    assert!(text.contains("severity = \"warning\""), "warning route");
    // The inhibition when the observer itself is down covers the pushed agent
    // alerts and the rule-based ones.
    let inhibit = text
        .split("inhibit_rules:")
        .nth(1)
        .expect("inhibit_rules")
        .split("\n  - ")
        .find(|r| r.contains("VartaObserverDown"))
        .expect("an inhibit rule sourced by VartaObserverDown");
    let target = inhibit
        .lines()
        .skip_while(|l| !l.contains("target_matchers"))
        .nth(1)
        .expect("target matcher");
    let rule_agent_alerts: Vec<String> =
        alert_blocks(&read(&bundle("prometheus/varta-alerts.yml")))
            .into_keys()
            .filter(|n| n.starts_with("VartaAgent") || n.starts_with("VartaRequired"))
            .collect();
    assert!(rule_agent_alerts.len() >= 3, "{rule_agent_alerts:?}");
    let alternatives: BTreeSet<&str> = target
        .split('"')
        .nth(1)
        .expect("quoted regex")
        .split('|')
        .collect();
    for name in PUSHED_AGENT_ALERTS
        .iter()
        .copied()
        .chain(rule_agent_alerts.iter().map(String::as_str))
    {
        assert!(
            alternatives.contains(name),
            "{name} is not inhibited when the observer is down: {target}"
        );
    }
    assert!(inhibit.contains("equal: ['instance']"), "{inhibit}");

    let Some(amtool) = tool("amtool", "prometheus-alertmanager") else {
        return;
    };
    let out = run_ok(Command::new(amtool).arg("check-config").arg(&path));
    assert!(out.contains("SUCCESS"), "{out}");
    assert!(out.contains("2 inhibit rules"), "{out}");
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(&bundle("grafana/varta-dashboard.json")))
        .expect("dashboard is valid JSON")
}

#[test]
fn dashboard_has_the_expected_shape() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in ["DS_PROMETHEUS", "instance", "name"] {
        assert!(vars.contains(&v), "template variable {v}: {vars:?}");
    }
    let panels = d["panels"].as_array().expect("panels");
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for r in [
        "Fleet overview",
        "Detection overshoot",
        "Ingest",
        "Recovery",
        "Security",
    ] {
        assert!(rows.contains(&r), "row {r}: {rows:?}");
    }
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            assert!(
                e.contains("$instance"),
                "{}: {e} ignores $instance",
                p["title"]
            );
            exprs.push(e.to_string());
        }
    }
    let all = exprs.join("\n");
    assert!(all.contains("histogram_quantile(0.99, sum by (instance, le) (rate(varta_detection_overshoot_seconds_bucket"));
    assert!(all.contains("name=~\"$name\""), "the name variable is used");
}

/// Metric names (`varta_…`) used in `text`, as whole words.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find("varta_") {
        let start = i + pos;
        let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
        let mut end = start + "varta_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if start == 0 || !word_char(bytes[start - 1]) {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn metric_name_extraction() {
    let names = metric_names(
        "sum(varta_agents{x=\"1\"}) / varta:agents_stalled:sum + rate(varta_detection_overshoot_seconds_bucket[5m]) xvarta_nope",
    );
    let want: BTreeSet<String> = ["varta_agents", "varta_detection_overshoot_seconds_bucket"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, want);
}

/// A scrape: the sample names present and the families with their types.
struct Scrape {
    samples: BTreeSet<String>,
    families: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(body: &str) -> Scrape {
        let mut samples = BTreeSet::new();
        let mut families = BTreeMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(n), Some(t)) = (it.next(), it.next()) {
                    families.insert(n.to_string(), t.to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_string());
            }
        }
        Scrape { samples, families }
    }

    /// Whether `name` is in the scrape: a sample name, or a family, or a
    /// suffix variant of a family of the matching type (`x_bucket` of a
    /// histogram `x`, `x_total` of an OpenMetrics-style counter `x`).
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) || self.families.contains_key(name) {
            return true;
        }
        let variants: [(&str, &[&str]); 4] = [
            ("_bucket", &["histogram"]),
            ("_sum", &["histogram", "summary"]),
            ("_count", &["histogram", "summary"]),
            ("_total", &["counter"]),
        ];
        variants.iter().any(|(suffix, types)| {
            name.strip_suffix(suffix)
                .and_then(|base| self.families.get(base))
                .is_some_and(|t| types.contains(&t.as_str()))
        })
    }
}

#[test]
fn scrape_parsing_knows_suffix_variants() {
    let s = Scrape::parse(
        "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_count 0\n# TYPE c counter\n# TYPE g gauge\ng 1\n",
    );
    assert!(s.has("h_bucket") && s.has("h_count") && s.has("h_sum") && s.has("h"));
    assert!(s.has("c_total") && s.has("c") && s.has("g"));
    assert!(!s.has("g_total") && !s.has("g_bucket") && !s.has("nope"));
}

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[test]
fn every_metric_in_the_rules_and_dashboard_is_in_a_real_scrape() {
    use std::os::unix::fs::PermissionsExt;
    let mut used = BTreeMap::<String, &str>::new();
    let sources = [
        (
            "prometheus/varta-alerts.yml",
            read(&bundle("prometheus/varta-alerts.yml")),
        ),
        (
            "prometheus/varta-recording.yml",
            read(&bundle("prometheus/varta-recording.yml")),
        ),
        ("grafana/varta-dashboard.json", dashboard().to_string()),
    ];
    for (file, text) in &sources {
        let names = metric_names(text);
        assert!(names.len() >= 5, "{file}: only {names:?}");
        for n in names {
            used.entry(n).or_insert(file);
        }
    }

    // An observer with most features on, so most families appear: a
    // required name (varta_required_agents), secure UDP, recovery with an
    // audit log, an Alertmanager target (refused: nothing listens there).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("varta-watch.toml");
    std::fs::write(
        &config,
        "[[agent]]\nmatch = { name = \"db\" }\nrequired = true\nstartup-grace-ms = 100\n",
    )
    .unwrap();
    let key = dir.path().join("udp.key");
    std::fs::write(&key, format!("{}\n", "7".repeat(64))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let audit = dir.path().join("audit.tsv");
    let export = dir.path().join("events.tsv");
    let obs = common::start_metrics_observer(
        dir.path(),
        TOKEN,
        &[
            "--config",
            config.to_str().unwrap(),
            "--threshold-ms",
            "300",
            "--prom-rate-limit-per-sec",
            "100",
            "--udp-port",
            "0",
            "--key-file",
            key.to_str().unwrap(),
            "--secure-udp-i-accept-recovery-on-unauthenticated-transport",
            "--recovery-exec",
            "/bin/true {pid}",
            "--recovery-audit-file",
            audit.to_str().unwrap(),
            "--export-file",
            export.to_str().unwrap(),
            "--alertmanager-url",
            "http://127.0.0.1:9",
        ],
    );
    // A beating agent and one that stalls: per-name families, the stall
    // counters and the overshoot histogram get samples.
    let _beating = spawn_agent("beat", &obs.socket, 20);
    let _stalling = spawn_agent("quiet", &obs.socket, 20);

    let start = Instant::now();
    let body = loop {
        let body = scrape(obs.addr).unwrap_or_default();
        let s = Scrape::parse(&body);
        if [
            "varta_agent_stalls_total",
            "varta_agents_by_name",
            "varta_required_agents",
        ]
        .iter()
        .all(|n| s.samples.contains(*n))
            && body.contains("varta_events_total{kind=\"stall\"} 1")
        {
            break body;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the scrape never showed the per-name series and the stall:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let scrape = Scrape::parse(&body);
    assert!(scrape.families.len() > 50, "a thin scrape:\n{body}");

    let missing: Vec<String> = used
        .iter()
        .filter(|(n, _)| !scrape.has(n))
        .map(|(n, f)| format!("{n} (used in observability/{f})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metric names not in a real scrape of varta-watch:\n  {}",
        missing.join("\n  ")
    );
    // The core families of the alerts are really there.
    for n in [
        "varta_agents_by_name",
        "varta_agents",
        "varta_required_agents",
        "varta_observer_iteration_seconds_count",
        "varta_tracker_capacity",
        "varta_watch_pids_tracked",
        "varta_prom_auth_failures_total",
        "varta_decode_errors_total",
        "varta_audit_write_errors_total",
        "varta_observer_clock_jump_forward_total",
        "varta_detection_overshoot_seconds_bucket",
    ] {
        assert!(used.contains_key(n), "{n} is not used by the bundle");
        assert!(scrape.samples.contains(n), "{n} has no sample");
    }
}
