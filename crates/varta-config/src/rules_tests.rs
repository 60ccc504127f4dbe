//! Tests for the `[[agent]]` rules: parsing, validation messages, matching,
//! load-time checks, reload and diff.

use std::ffi::OsString;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::rules::{self, AgentFacts, Cidr, Pattern, MAX_TIMEOUT_CLASSES};
use super::*;

/// A config file in a fresh temporary directory (kept alive by the guard).
fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("varta.toml");
    fs::write(&path, contents).expect("write config file");
    (dir, path)
}

fn load_file(path: &Path, flags: &[&str]) -> Result<Config, ConfigError> {
    let mut args = vec![OsString::from("varta-watch"), OsString::from("--config")];
    args.push(path.as_os_str().to_owned());
    args.extend(flags.iter().map(OsString::from));
    match load(args)? {
        Loaded::Run(c) => Ok(c),
        other => panic!("expected a runnable config, got {other:?}"),
    }
}

fn run_text(text: &str) -> Config {
    let (_dir, path) = config_file(text);
    load_file(&path, &[]).unwrap_or_else(|e| panic!("{text}\n=> {e}"))
}

/// The error for `text`, with the file's path replaced by `FILE`.
fn fail_text(text: &str) -> String {
    fail_text_with(text, &[])
}

fn fail_text_with(text: &str, flags: &[&str]) -> String {
    let (_dir, path) = config_file(text);
    match load_file(&path, flags) {
        Err(e) => {
            assert_eq!(e.exit_code(), 2);
            e.to_string().replace(&path.display().to_string(), "FILE")
        }
        Ok(c) => panic!("expected an error for\n{text}\ngot {:?}", c.rules),
    }
}

fn facts(origin: &str) -> AgentFacts<'_> {
    AgentFacts {
        name: None,
        unit: None,
        comm: None,
        exe: None,
        container: None,
        uid: None,
        origin,
        peer: None,
    }
}

const KA: &str = "kernel_attested";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn no_rules_without_a_file_or_without_agent_tables() {
    let c = match load([OsString::from("varta-watch")]) {
        Ok(Loaded::Run(c)) => c,
        other => panic!("{other:?}"),
    };
    assert!(c.rules.is_empty());
    assert!(run_text("threshold-ms = 1000\n").rules.is_empty());
    assert!(run_text("agent = []\n").rules.is_empty());
}

#[test]
fn a_full_rule_is_parsed() {
    let c = run_text(
        r#"
threshold-ms = 1000

[[agent]]
match = { unit = "nginx.service", uid = [0, 33], origin = "kernel_attested" }
name = "{unit}"
threshold-ms = 2000
startup-grace-ms = 10000
recovery-exec = "/bin/true restart {unit}"
recovery-max-attempts = 3
recovery-window-ms = 600000

[[agent]]
match = { name = "billing" }
recovery = false
required = true
startup-grace-ms = 0
"#,
    );
    assert_eq!(
        c.threshold,
        Duration::from_millis(1000),
        "flags stay global"
    );
    let [a, b] = c.rules.rules.as_slice() else {
        panic!("{:?}", c.rules)
    };
    assert_eq!(a.index, 0);
    assert_eq!(b.index, 1);
    assert_eq!(
        a.matcher.unit.as_ref().map(Pattern::as_str),
        Some("nginx.service")
    );
    assert_eq!(a.matcher.uid, Some(vec![0, 33]));
    assert_eq!(a.matcher.origin, Some(crate::AgentOrigin::KernelAttested));
    assert_eq!(a.name_template.as_deref(), Some("{unit}"));
    assert_eq!(a.threshold, Some(Duration::from_millis(2000)));
    assert_eq!(a.startup_grace, Some(Duration::from_secs(10)));
    assert_eq!(a.recovery_exec.as_deref(), Some("/bin/true restart {unit}"));
    assert_eq!(a.recovery_max_attempts, Some(3));
    assert_eq!(a.recovery_window, Some(Duration::from_secs(600)));
    assert_eq!(a.recovery, None);
    assert!(!a.required);
    assert_eq!(a.first_deadline(c.threshold), Duration::from_secs(12));
    assert!(
        a.recovery_enabled(false),
        "a rule's command enables recovery"
    );

    assert_eq!(b.recovery, Some(false));
    assert!(!b.recovery_enabled(true));
    assert_eq!(b.required_name(), Some("billing"));
    assert_eq!(b.threshold_or(c.threshold), c.threshold);
    assert_eq!(b.first_deadline(c.threshold), c.threshold);
    assert_eq!(c.rules.required().count(), 1);
    assert!(c.config_file.is_some());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn first_matching_rule_wins_and_unmatched_agents_get_none() {
    let c = run_text(
        r#"
[[agent]]
match = { unit = "nginx.service", comm = "nginx" }
threshold-ms = 100
[[agent]]
match = { unit = "nginx.service" }
threshold-ms = 200
[[agent]]
match = { unit = "*.service" }
threshold-ms = 300
"#,
    );
    let rules = &c.rules;
    let mut f = facts(KA);
    f.unit = Some("nginx.service");
    f.comm = Some("nginx");
    assert_eq!(rules.first_match(&f).map(|r| r.index), Some(0));
    f.comm = Some("worker");
    assert_eq!(rules.first_match(&f).map(|r| r.index), Some(1));
    f.comm = None;
    assert_eq!(rules.first_match(&f).map(|r| r.index), Some(1));
    f.unit = Some("cron.service");
    assert_eq!(rules.first_match(&f).map(|r| r.index), Some(2));
    f.unit = Some("user.slice");
    assert!(rules.first_match(&f).is_none());
    assert!(rules.first_match(&facts(KA)).is_none(), "no unit known");
}

#[test]
fn catch_all_matches_everything_and_warns_unless_last() {
    let c = run_text("[[agent]]\nmatch = { uid = 0 }\n[[agent]]\nmatch = {}\nthreshold-ms = 900\n");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.rules.rules[1].matcher.is_catch_all());
    assert_eq!(
        c.rules
            .first_match(&facts("network_unverified"))
            .map(|r| r.index),
        Some(1)
    );

    let c = run_text(
        "[[agent]]\nmatch = {}\n[[agent]]\nmatch = { uid = 0 }\n[[agent]]\nmatch = { uid = 1 }\n",
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(w.starts_with("[[agent]] #1 (config file "), "{w}");
    assert!(w.contains("[[agent]] #2 to #3 never apply"), "{w}");

    let c = run_text("[[agent]]\nmatch = {}\n[[agent]]\nmatch = { uid = 0 }\n");
    assert!(
        c.warnings[0].contains("so [[agent]] #2 never applies ("),
        "{:?}",
        c.warnings
    );
}

#[test]
fn globs_cross_slashes_are_case_sensitive_and_never_match_unknown_facts() {
    let p = |s: &str| Pattern::new(s).expect(s);
    assert!(p("/usr/*").is_match("/usr/sbin/nginx"), "* crosses /");
    assert!(p("/usr/**/nginx").is_match("/usr/local/sbin/nginx"));
    assert!(p("nginx*").is_match("nginx: worker"));
    assert!(p("web-?").is_match("web-1"));
    assert!(!p("web-?").is_match("web-10"));
    assert!(p("{nginx,apache2}.service").is_match("apache2.service"));
    assert!(p("db[0-9]").is_match("db7"));
    assert!(!p("db[!0-9]").is_match("db7"));
    assert!(!p("Nginx").is_match("nginx"), "case-sensitive");
    assert!(!p("nginx").is_match("nginx.service"), "a literal is exact");
    assert!(p("\\*").is_match("*") && !p("\\*").is_match("x"));
    assert_eq!(p("billing").literal(), Some("billing"));
    assert_eq!(p("bill*").literal(), None);
    assert_eq!(p("a\\*").literal(), None);

    let c = run_text("[[agent]]\nmatch = { container = \"*\" }\n");
    let mut f = facts(KA);
    assert!(c.rules.first_match(&f).is_none(), "unknown never matches *");
    f.container = Some("");
    assert!(c.rules.first_match(&f).is_some(), "known-but-empty does");
    f.container = Some("0123abcd");
    assert!(c.rules.first_match(&f).is_some());
}

#[test]
fn every_string_key_is_a_glob() {
    let c = run_text(
        r#"
[[agent]]
match = { name = "api-*", unit = "api@*.service", comm = "api?", exe = "/opt/*/bin/api", container = "k8s_api_*" }
"#,
    );
    let mut f = facts(KA);
    f.name = Some("api-7");
    f.unit = Some("api@7.service");
    f.comm = Some("api7");
    f.exe = Some("/opt/api/v2/bin/api");
    f.container = Some("k8s_api_pod");
    assert!(c.rules.first_match(&f).is_some());
    for broken in 0..5 {
        let mut g = f;
        match broken {
            0 => g.name = Some("web-7"),
            1 => g.unit = Some("api.service"),
            2 => g.comm = Some("api77"),
            3 => g.exe = Some("/usr/bin/api"),
            _ => g.container = None,
        }
        assert!(c.rules.first_match(&g).is_none(), "key {broken}");
    }
}

#[test]
fn uid_is_one_uid_or_a_list() {
    let c = run_text("[[agent]]\nmatch = { uid = 0 }\n[[agent]]\nmatch = { uid = [1000, 1001] }\n");
    let at = |uid: Option<u32>| {
        let mut f = facts(KA);
        f.uid = uid;
        c.rules.first_match(&f).map(|r| r.index)
    };
    assert_eq!(at(Some(0)), Some(0));
    assert_eq!(at(Some(1001)), Some(1));
    assert_eq!(at(Some(1002)), None);
    assert_eq!(at(None), None);
    assert_eq!(c.rules.rules[0].matcher.uid, Some(vec![0]));
    assert_eq!(
        run_text("[[agent]]\nmatch = { uid = 4294967295 }\n")
            .rules
            .rules[0]
            .matcher
            .uid,
        Some(vec![u32::MAX])
    );
}

#[test]
fn origin_matches_its_literal_label() {
    let c = run_text(
        "[[agent]]\nmatch = { origin = \"network_verified\" }\n[[agent]]\nmatch = { origin = \"kernel_attested\" }\n",
    );
    let at = |o: &str| c.rules.first_match(&facts(o)).map(|r| r.index);
    assert_eq!(at("network_verified"), Some(0));
    assert_eq!(at("kernel_attested"), Some(1));
    assert_eq!(at("network_unverified"), None);
}

#[test]
fn peer_is_an_address_or_a_network() {
    let c = run_text(
        r#"
[[agent]]
match = { peer = "10.0.0.0/8" }
[[agent]]
match = { peer = "fd00::/8" }
[[agent]]
match = { peer = "192.0.2.7" }
[[agent]]
match = { peer = "0.0.0.0/0" }
"#,
    );
    let at = |peer: Option<&str>| {
        let mut f = facts("network_verified");
        f.peer = peer.map(ip);
        c.rules.first_match(&f).map(|r| r.index)
    };
    assert_eq!(at(Some("10.200.3.4")), Some(0));
    assert_eq!(at(Some("::ffff:10.1.2.3")), Some(0), "IPv4-mapped peer");
    assert_eq!(at(Some("fd12::1")), Some(1));
    assert_eq!(at(Some("192.0.2.7")), Some(2));
    assert_eq!(at(Some("192.0.2.8")), Some(3));
    assert_eq!(at(Some("2001:db8::1")), None, "0.0.0.0/0 is IPv4 only");
    assert_eq!(at(None), None, "Unix-socket agents have no peer");

    let net = |s: &str| Cidr::parse(s).expect(s);
    assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
    assert!(net("::/0").contains(ip("2001:db8::1")));
    assert!(net("2001:db8::1").contains(ip("2001:db8::1")));
    assert!(!net("2001:db8::1").contains(ip("2001:db8::2")));
    assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(net("10.0.0.1/32").to_string(), "10.0.0.1");
    for bad in [
        "",
        "10.0.0.0/",
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0/+8",
        "x/8",
        "10.0.0.0/08x",
    ] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn name_templates_are_validated() {
    for good in [
        "{unit}",
        "{comm}@{container}",
        "web-{pid}",
        "{exe}:{uid}",
        "fixed-name",
    ] {
        assert_eq!(rules::parse_name_template(good).as_deref(), Ok(good));
    }
    for (bad, why) in [
        ("", "must not be empty"),
        ("{host}", "unknown placeholder {host}"),
        ("{}", "unknown placeholder {}"),
        ("{unit", "unbalanced '{' at byte 0"),
        ("a{unit{pid}}", "unbalanced '{' at byte 1"),
        ("unit}", "unbalanced '}' at byte 4"),
        ("{unit}}", "unbalanced '}' at byte 6"),
        ("a\nb", "control characters"),
    ] {
        let e = rules::parse_name_template(bad).expect_err(bad);
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn every_key_error_names_the_file_the_rule_and_the_key() {
    // The broken rule is the second one: messages count from 1.
    let cases: &[(&str, &str)] = &[
        (
            "threshold-ms = 5",
            "[[agent]] #2: threshold-ms = 5: must be between 10 and 86400000 milliseconds",
        ),
        (
            "threshold-ms = 86400001",
            "[[agent]] #2: threshold-ms = 86400001: must be between 10 and 86400000 milliseconds",
        ),
        ("threshold-ms = -1", "[[agent]] #2: threshold-ms = -1: "),
        ("threshold-ms = \"2000\"", "[[agent]] #2: threshold-ms = \"2000\": "),
        (
            "startup-grace-ms = 86400001",
            "[[agent]] #2: startup-grace-ms = 86400001: must be between 0 and 86400000 milliseconds",
        ),
        (
            "recovery-exec = \"  \"",
            "[[agent]] #2: recovery-exec = \"  \": must name a program",
        ),
        (
            "recovery-exec = 3",
            "[[agent]] #2: recovery-exec = 3: ",
        ),
        (
            "recovery-max-attempts = 0",
            "[[agent]] #2: recovery-max-attempts = 0: must be between 1 and 1000 attempts",
        ),
        (
            "recovery-window-ms = 999",
            "[[agent]] #2: recovery-window-ms = 999: must be between 1000 and 604800000 milliseconds",
        ),
        ("recovery = \"no\"", "[[agent]] #2: recovery = \"no\": "),
        ("required = 1", "[[agent]] #2: required = 1: "),
        ("name = \"{host}\"", "[[agent]] #2: name = \"{host}\": unknown placeholder {host}"),
        ("name = \"{unit\"", "[[agent]] #2: name = \"{unit\": unbalanced '{'"),
        ("name = \"\"", "[[agent]] #2: name = \"\": must not be empty"),
        ("thresold-ms = 5", "[[agent]] #2: unknown key 'thresold-ms' (expected one of: match, name, threshold-ms,"),
    ];
    for (line, want) in cases {
        let text = format!("[[agent]]\nmatch = {{}}\n\n[[agent]]\nmatch = {{ uid = 1 }}\n{line}\n");
        let msg = fail_text(&text);
        assert!(
            msg.starts_with(&format!("config file FILE: {want}")),
            "{line}\n got: {msg}\nwant: {want}"
        );
    }
}

#[test]
fn every_match_key_error_names_the_rule_and_the_key() {
    let cases: &[(&str, &str)] = &[
        ("unit = \"[\"", "match.unit = \"[\": not a valid glob pattern"),
        ("name = \"\"", "match.name = \"\": must not be empty"),
        ("comm = \"{a\"", "match.comm = \"{a\": not a valid glob pattern"),
        ("exe = \"[z-a]\"", "match.exe = \"[z-a]\": not a valid glob pattern"),
        ("container = 5", "match.container = 5: "),
        ("uid = -1", "match.uid = -1: -1 is not a uid: must be between 0 and 4294967295"),
        ("uid = [0, 4294967296]", "match.uid = [0, 4294967296]: 4294967296 is not a uid"),
        ("uid = \"root\"", "match.uid = \"root\": expected a uid (integer) or a list of uids"),
        ("uid = [0, \"x\"]", "match.uid = [0, \"x\"]: expected a uid"),
        ("uid = []", "match.uid = []: list at least one uid"),
        (
            "origin = \"local\"",
            "match.origin = \"local\": expected one of: kernel_attested, network_unverified, network_verified",
        ),
        ("origin = \"kernel-attested\"", "match.origin = \"kernel-attested\": expected one of"),
        ("peer = \"10.1.0.0/8\"", "match.peer = \"10.1.0.0/8\": has host bits set below the /8 prefix; write 10.0.0.0/8"),
        ("peer = \"10.0.0.0/33\"", "match.peer = \"10.0.0.0/33\": the prefix length must be between 0 and 32"),
        ("peer = \"host.example\"", "match.peer = \"host.example\": expected an IP address or network"),
        ("hostname = \"x\"", "unknown key 'hostname' in match (expected one of: name, unit"),
    ];
    for (inner, want) in cases {
        let text = format!(
            "[[agent]]\nmatch = {{}}\n[[agent]]\nmatch = {{}}\n[[agent]]\nmatch = {{ {inner} }}\n"
        );
        let msg = fail_text(&text);
        assert!(
            msg.starts_with(&format!("config file FILE: [[agent]] #3: {want}")),
            "{inner}\n got: {msg}\nwant: [[agent]] #3: {want}"
        );
    }
}

#[test]
fn rule_shape_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[agent]\nmatch = {}\n",
            "[agent] is a single table: write each per-agent rule as an [[agent]] section",
        ),
        (
            "agent = 1\n",
            "agent = 1: each per-agent rule is a table written [[agent]]",
        ),
        ("agent = [1]\n", "[[agent]] #1: must be a table"),
        (
            "[[agent]]\nthreshold-ms = 2000\n",
            "[[agent]] #1: has no 'match' key",
        ),
        (
            "[[agent]]\nmatch = \"nginx\"\n",
            "[[agent]] #1: match = \"nginx\": ",
        ),
        (
            "[[agent]]\nmatch = {}\nthreshold_ms = 2000\nthreshold-ms = 2000\n",
            "[[agent]] #1: key 'threshold",
        ),
        (
            "[[agent]]\nmatch = { origin = \"kernel_attested\", Origin = \"x\" }\n",
            "[[agent]] #1: unknown key 'Origin'",
        ),
        (
            "[[agents]]\nmatch = {}\n",
            "unknown key 'agents': per-agent rules are written as [[agent]] tables",
        ),
        (
            "[[agent]]\n[[agent.match]]\nunit = \"x\"\n",
            "[[agent]] #1: match = ",
        ),
    ];
    for (text, want) in cases {
        let msg = fail_text(text);
        assert!(
            msg.starts_with(&format!("config file FILE: {want}")),
            "{text}\n got: {msg}\nwant: {want}"
        );
    }
}

#[test]
fn snake_case_rule_keys_are_accepted() {
    let c = run_text(
        "[[agent]]\nmatch = { unit = \"a.service\" }\nthreshold_ms = 1500\nstartup_grace_ms = 10\nrecovery_max_attempts = 2\nrecovery_window_ms = 5000\nrecovery_exec = \"/bin/true\"\n",
    );
    let r = &c.rules.rules[0];
    assert_eq!(r.threshold, Some(Duration::from_millis(1500)));
    assert_eq!(r.startup_grace, Some(Duration::from_millis(10)));
    assert_eq!(r.recovery_max_attempts, Some(2));
    assert_eq!(r.recovery_window, Some(Duration::from_secs(5)));
}

#[test]
fn required_needs_a_literal_name_and_a_startup_grace() {
    let ok = run_text(
        "[[agent]]\nmatch = { name = \"billing\", uid = 1000 }\nrequired = true\nstartup-grace-ms = 30000\n",
    );
    assert_eq!(ok.rules.rules[0].required_name(), Some("billing"));

    let cases: &[(&str, &str)] = &[
        (
            "match = { unit = \"billing.service\" }\nrequired = true\nstartup-grace-ms = 1",
            "[[agent]] #1: required = true needs a name to look for",
        ),
        (
            "match = { name = \"billing-*\" }\nrequired = true\nstartup-grace-ms = 1",
            "[[agent]] #1: required = true needs a literal match.name, but \"billing-*\" is a glob pattern",
        ),
        (
            "match = { name = \"b[i]lling\" }\nrequired = true\nstartup-grace-ms = 1",
            "needs a literal match.name",
        ),
        (
            "match = { name = \"billing\" }\nrequired = true",
            "[[agent]] #1: required = true needs startup-grace-ms",
        ),
    ];
    for (body, want) in cases {
        let msg = fail_text(&format!("[[agent]]\n{body}\n"));
        assert!(msg.contains(want), "{body}\n got: {msg}");
    }
    // `required = false` needs nothing.
    run_text("[[agent]]\nmatch = { name = \"b*\" }\nrequired = false\n");

    let msg = fail_text(
        "[[agent]]\nmatch = { name = \"db\" }\nrequired = true\nstartup-grace-ms = 1\n[[agent]]\nmatch = { name = \"db\", uid = 0 }\nrequired = true\nstartup-grace-ms = 1\n",
    );
    assert!(
        msg.contains(
            "[[agent]] #2: required = true: the name \"db\" is already required by [[agent]] #1"
        ),
        "{msg}"
    );

    let c = run_text(
        "[[agent]]\nmatch = { name = \"db\" }\nname = \"{unit}\"\nrequired = true\nstartup-grace-ms = 1\n",
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("renames the agents")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn too_many_distinct_timeouts_are_refused() {
    // The global (5000 ms, no grace), then each rule adds its pair.
    let rule = |i: u64| {
        format!(
            "[[agent]]\nmatch = {{ uid = {i} }}\nthreshold-ms = {}\nstartup-grace-ms = 1\n",
            100 + 2 * i
        )
    };
    let text = |n: u64| (0..n).map(rule).collect::<String>();
    // 1 + 30 = 31 classes, then 32.
    let c = run_text(&text(30));
    assert_eq!(c.rules.distinct_timeouts(c.threshold).len(), 31);
    let msg = fail_text(&text(31));
    assert_eq!(
        msg,
        format!("config file FILE: the [[agent]] rules give 32 distinct (threshold-ms, startup-grace-ms) pairs, the global threshold-ms included; the tracker supports at most {MAX_TIMEOUT_CLASSES}: give rules the same values where you can")
    );
    // Shared pairs count once.
    let c = run_text(&format!(
        "{}{}",
        text(30),
        rule(0).replace("uid = 0", "uid = 99")
    ));
    assert_eq!(c.rules.distinct_timeouts(c.threshold).len(), 31);
    // A rule equal to the global policy adds nothing.
    let c = run_text("[[agent]]\nmatch = { uid = 1 }\nthreshold-ms = 5000\n");
    assert_eq!(c.rules.distinct_timeouts(c.threshold).len(), 1);
}

#[test]
fn rule_recovery_settings_warn_when_they_cannot_apply() {
    // A rule's command without a global one is fine: it enables recovery.
    let c = run_text("[[agent]]\nmatch = { uid = 0 }\nrecovery-exec = \"/bin/true\"\nrecovery-max-attempts = 2\n");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A base recovery configuration (the global settings, no global
    // command) carries the rule's command.
    let r = c.recovery.as_ref().expect("base recovery config");
    assert!(!r.has_global_command());
    assert_eq!(r.rules[0].exec.as_deref(), Some("/bin/true"));
    assert_eq!(r.rules[0].max_attempts, Some(2));
    assert!(c.rules.rules[0].recovery_enabled(false));

    let c =
        run_text("[[agent]]\nmatch = { uid = 0 }\nrecovery-max-attempts = 2\nrecovery = true\n");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("[[agent]] #1 (config file ")
            && c.warnings[0].contains(
                "recovery-max-attempts, recovery = true have no effect without a recovery command"
            ),
        "{:?}",
        c.warnings
    );
    // ... unless a global command exists.
    let (_dir, path) = config_file("[[agent]]\nmatch = { uid = 0 }\nrecovery-max-attempts = 2\n");
    let c = load_file(&path, &["--recovery-exec", "/bin/true"]).expect("load");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.rules.rules[0].recovery_enabled(true));

    let c = run_text(
        "[[agent]]\nmatch = { uid = 0 }\nrecovery = false\nrecovery-exec = \"/bin/true\"\nrecovery-window-ms = 5000\n",
    );
    assert!(
        c.warnings.iter().any(|w| w
            .contains("recovery-exec, recovery-window-ms have no effect with recovery = false")),
        "{:?}",
        c.warnings
    );

    let c = run_text(
        "[[agent]]\nmatch = { uid = 0 }\nrecovery-exec = \"/nonexistent/varta-restart\"\n",
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("[[agent]] #1 (config file ") && w.contains("does not exist")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn a_rule_command_for_network_agents_needs_the_udp_opt_in() {
    let text = "[[agent]]\nmatch = { uid = 0 }\nrecovery-exec = \"/bin/true\"\n";
    let udp = ["--udp-port", "1", "--i-accept-plaintext-udp"];
    let msg = fail_text_with(text, &udp);
    assert!(
        msg.contains("--plaintext-udp-i-accept-recovery-on-unauthenticated-transport"),
        "{msg}"
    );
    // Kernel-attested agents only: no network agent can be recovered.
    let (_dir, path) = config_file(
        "[[agent]]\nmatch = { origin = \"kernel_attested\" }\nrecovery-exec = \"/bin/true\"\n[[agent]]\nmatch = {}\nrecovery = false\nrecovery-exec = \"/bin/true\"\n",
    );
    let c = load_file(&path, &udp).expect("load");
    assert!(!c.rules.may_recover_network_agents());
    // With the opt-in, the opt-in is not "without a recovery command".
    let (_dir, path) = config_file(text);
    let mut flags = udp.to_vec();
    flags.push("--plaintext-udp-i-accept-recovery-on-unauthenticated-transport");
    let c = load_file(&path, &flags).expect("load");
    assert!(
        !c.warnings
            .iter()
            .any(|w| w.contains("has no effect without a recovery command")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn reload_revalidates_rules_and_diff_names_the_changed_ones() {
    let (_dir, path) = config_file(
        "[[agent]]\nmatch = { unit = \"a.service\" }\nthreshold-ms = 1000\n[[agent]]\nmatch = { uid = 0 }\n",
    );
    let first = load_file(&path, &[]).expect("load");
    assert_eq!(first.rules.rules.len(), 2);
    assert!(diff(&first, &first).is_empty());

    fs::write(
        &path,
        "[[agent]]\nmatch = { unit = \"a.service\" }\nthreshold-ms = 1000\n[[agent]]\nmatch = { uid = [0, 1] }\n[[agent]]\nmatch = {}\nrecovery = false\n",
    )
    .expect("rewrite");
    let second = reload(&first).expect("reload");
    assert_eq!(second.rules.rules.len(), 3);
    assert_eq!(
        diff(&first, &second),
        [
            "agent rules: 2 -> 3 rules (changed: #2, #3)",
            "[[agent]] #2: match = { uid = 0 } -> match = { uid = [0, 1] }",
            "[[agent]] #3: none -> match = {} recovery = false",
        ]
    );

    fs::write(
        &path,
        "[[agent]]\nmatch = { unit = \"a.service\" }\nthreshold-ms = 1\n",
    )
    .expect("rewrite");
    let e = reload(&second).expect_err("bad rule");
    assert!(
        e.to_string()
            .contains("[[agent]] #1: threshold-ms = 1: must be between"),
        "{e}"
    );

    fs::write(&path, "threshold-ms = 2000\n").expect("rewrite");
    let third = reload(&second).expect("reload");
    let lines = diff(&second, &third);
    assert!(
        lines.contains(&"agent rules: 3 -> 0 rules (changed: #1, #2, #3)".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"[[agent]] #1: match = { unit = \"a.service\" } threshold-ms = 1000 -> none"
                .to_string()
        ),
        "{lines:?}"
    );
}

#[test]
fn rule_display_is_toml_spelling() {
    let c = run_text(
        r#"
[[agent]]
match = { name = "db", unit = "db.service", comm = "postgres", exe = "/usr/*", container = "c*", uid = 5, origin = "network_verified", peer = "10.0.0.0/8" }
name = "{comm}@{container}"
threshold-ms = 2000
startup-grace-ms = 0
recovery-exec = "/bin/true \"x\""
recovery-max-attempts = 3
recovery-window-ms = 60000
recovery = true
required = true
"#,
    );
    assert_eq!(
        c.rules.rules[0].to_string(),
        r#"match = { name = "db", unit = "db.service", comm = "postgres", exe = "/usr/*", container = "c*", uid = 5, origin = "network_verified", peer = "10.0.0.0/8" } name = "{comm}@{container}" threshold-ms = 2000 startup-grace-ms = 0 recovery-exec = '/bin/true "x"' recovery-max-attempts = 3 recovery-window-ms = 60000 recovery = true required = true"#
    );
    assert_eq!(c.rules.rules[0].label(), "[[agent]] #1");
}

proptest! {
    #[test]
    fn rule_parsing_never_panics(
        key in "(match|name|threshold-ms|startup_grace_ms|recovery-exec|recovery-max-attempts|recovery-window-ms|recovery|required|x)",
        value in "(-?[0-9]{1,22}|\"[^\"\\\\]{0,12}\"|true|\\[1, ?\"a\"\\]|\\{ ?(uid|peer|name|origin) = (\"[^\"\\\\]{0,12}\"|-?[0-9]{1,12}) ?\\})",
    ) {
        let text = format!("[[agent]]\nmatch = {{}}\n[[agent]]\n{key} = {value}\n");
        let path = Path::new("/nonexistent/varta.toml");
        let _ = super::file::parse(path, &text);
    }

    #[test]
    fn templates_and_networks_never_panic(s in ".{0,40}") {
        let _ = rules::parse_name_template(&s);
        let _ = Cidr::parse(&s);
        let _ = Pattern::new(&s);
    }
}
