//! The safety profile's build step (`varta-watch --features baked-config`):
//! the config file is loaded by [`load_file`] — the very code path of
//! `varta-watch --config FILE` — then checked against what the profile
//! can carry ([`check_profile`]) and written out as Rust source that
//! builds the same [`Config`] from literals ([`to_rust`]). The binary
//! that includes that source has no TOML parser and no argv parser.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::types::*;
use crate::{
    load, AgentOrigin, ConfigError, Loaded, Matcher, Pattern, Rules, UdpConfig, UdpSecurity,
};

/// Loads `path` exactly as `varta-watch --config PATH` does at run time:
/// the same parser, validation and messages.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let argv = [
        OsString::from("varta-watch"),
        OsString::from("--config"),
        path.as_os_str().to_owned(),
    ];
    match load(argv)? {
        Loaded::Run(c) => Ok(c),
        // `--config FILE` alone never asks for help or the version.
        Loaded::Help(_) | Loaded::Version(_) => unreachable!("--config never prints help"),
    }
}

/// Settings the profile leaves out, with the reason: each needs code the
/// profile removes (an HTTP server or client). Everything else of the
/// schema — `[[agent]]` rules and the UDP listener included — is carried.
pub fn check_profile(c: &Config) -> Result<(), String> {
    let mut refused = Vec::new();
    if c.control_socket.is_some() {
        refused.push("the control API (set control-socket = \"none\"): it is an HTTP server");
    }
    if c.metrics.is_some() {
        refused.push("prom-addr: the /metrics endpoint is an HTTP server");
    }
    if c.alertmanager.is_some() {
        refused.push("alertmanager-url: the Alertmanager push is an HTTP client");
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the safety profile (feature baked-config) cannot carry {}",
            refused.join("; ")
        ))
    }
}

/// `use secure UDP (--key-file)` → `use secure UDP (key-file)`: the runtime's
/// warnings give advice in flag spelling, but the profile has no flags
/// (and its binary must not contain their names); the setting names are
/// the config file's keys.
fn without_flag_dashes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let before = rest[..i].chars().next_back();
        let after = rest[i + 2..].chars().next();
        let boundary = before.is_none_or(|c| matches!(c, ' ' | '(' | '`' | '"' | '\''));
        out.push_str(&rest[..i]);
        if !(boundary && after.is_some_and(|c| c.is_ascii_lowercase())) {
            out.push_str("--");
        }
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

fn path(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", p.display()))?;
    Ok(format!("::std::path::PathBuf::from({s:?})"))
}

fn opt_path(p: &Option<PathBuf>) -> Result<String, String> {
    Ok(match p {
        Some(p) => format!("Some({})", path(p)?),
        None => "None".into(),
    })
}

fn dur(d: Duration) -> String {
    format!(
        "::std::time::Duration::new({}, {})",
        d.as_secs(),
        d.subsec_nanos()
    )
}

fn opt_dur(d: Option<Duration>) -> String {
    d.map_or("None".into(), |d| format!("Some({})", dur(d)))
}

/// `Some(7)` / `Some(true)` / `None`: a number's or bool's `Display` is
/// its Rust literal.
fn opt_lit<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("None".into(), |v| format!("Some({v})"))
}

fn opt_string(s: &Option<String>) -> String {
    s.as_ref()
        .map_or("None".into(), |s| format!("Some({s:?}.to_string())"))
}

fn ip(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("::std::net::IpAddr::from({:?})", a.octets()),
        IpAddr::V6(a) => format!("::std::net::IpAddr::from({:?})", a.octets()),
    }
}

fn opt_origin(o: Option<AgentOrigin>) -> String {
    o.map_or("None".into(), |o| format!("Some({T}::AgentOrigin::{o:?})"))
}

const T: &str = "::varta_config";

fn export(e: &Option<ExportConfig>) -> Result<String, String> {
    let Some(e) = e else { return Ok("None".into()) };
    let format = match e.format {
        ExportFormat::Tsv => "Tsv",
        ExportFormat::Json => "Json",
    };
    Ok(format!(
        "Some({T}::ExportConfig {{ path: {}, format: {T}::ExportFormat::{format}, beats: {}, max_bytes: {}, sync_every: {} }})",
        path(&e.path)?,
        e.beats,
        opt_lit(e.max_bytes),
        e.sync_every
    ))
}

fn recovery(r: &Option<RecoveryConfig>) -> Result<String, String> {
    let Some(r) = r else { return Ok("None".into()) };
    let source = match &r.source {
        CommandSource::Inline => format!("{T}::CommandSource::Inline"),
        CommandSource::File(p) => format!("{T}::CommandSource::File({})", path(p)?),
    };
    let env: Vec<String> = r
        .env
        .iter()
        .map(|(k, v)| format!("({k:?}.to_string(), {v:?}.to_string())"))
        .collect();
    Ok(format!(
        "Some({T}::RecoveryConfig {{ template: {:?}.to_string(), source: {source}, debounce: {}, timeout: {}, kill_grace: {}, max_attempts: {}, window: {}, backoff: {}, env: vec![{}], inherit_env: {}, capture: {}, capture_bytes: {}, table_capacity: {}, max_children: {}, trusted_network_origin: {}, rules: vec![{}] }})",
        r.template,
        dur(r.debounce),
        opt_dur(r.timeout),
        dur(r.kill_grace),
        r.max_attempts,
        dur(r.window),
        dur(r.backoff),
        env.join(", "),
        r.inherit_env,
        r.capture,
        r.capture_bytes,
        r.table_capacity,
        r.max_children,
        opt_origin(r.trusted_network_origin),
        r.rules
            .iter()
            .map(rule_recovery)
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

fn rule_recovery(r: &RuleRecovery) -> String {
    format!(
        "{T}::RuleRecovery {{ exec: {}, disabled: {}, max_attempts: {}, window: {}, required_name: {} }}",
        opt_string(&r.exec),
        r.disabled,
        opt_lit(r.max_attempts),
        opt_dur(r.window),
        opt_string(&r.required_name),
    )
}

/// A glob is compiled when the binary starts, by the code that compiled it
/// at build time (so it cannot fail then; the `?` is for form's sake).
fn pattern(p: &Option<Pattern>) -> String {
    p.as_ref().map_or("None".into(), |p| {
        format!("Some({T}::Pattern::new({:?})?)", p.as_str())
    })
}

fn matcher(m: &Matcher) -> String {
    let uid = m
        .uid
        .as_ref()
        .map_or("None".into(), |u| format!("Some(vec!{u:?})"));
    format!(
        "{T}::Matcher {{ name: {}, unit: {}, comm: {}, exe: {}, container: {}, uid: {uid}, origin: {}, peer: {} }}",
        pattern(&m.name),
        pattern(&m.unit),
        pattern(&m.comm),
        pattern(&m.exe),
        pattern(&m.container),
        opt_origin(m.origin),
        m.peer
            .map_or("None".into(), |c| format!("Some({T}::Cidr::parse({:?})?)", c.to_string())),
    )
}

fn rules(r: &Rules) -> String {
    let rules: Vec<String> = r
        .rules
        .iter()
        .map(|r| {
            format!(
                "{T}::Rule {{ index: {}, matcher: {}, name_template: {}, threshold: {}, startup_grace: {}, recovery_exec: {}, recovery_max_attempts: {}, recovery_window: {}, recovery: {}, required: {} }}",
                r.index,
                matcher(&r.matcher),
                opt_string(&r.name_template),
                opt_dur(r.threshold),
                opt_dur(r.startup_grace),
                opt_string(&r.recovery_exec),
                opt_lit(r.recovery_max_attempts),
                opt_dur(r.recovery_window),
                opt_lit(r.recovery),
                r.required,
            )
        })
        .collect();
    format!("{T}::Rules {{ rules: vec![{}] }}", rules.join(",\n"))
}

/// The UDP listener: its address and key-file paths. The keys themselves
/// are read when the binary starts (and were read at build time to
/// validate the file, as `--config` does): key material is never baked.
fn udp(u: &Option<UdpConfig>) -> Result<String, String> {
    let Some(u) = u else { return Ok("None".into()) };
    let security = match &u.security {
        UdpSecurity::Plaintext => format!("{T}::UdpSecurity::Plaintext"),
        UdpSecurity::Secure(k) => {
            let accepted = k
                .accepted
                .iter()
                .map(|p| path(p))
                .collect::<Result<Vec<_>, _>>()?;
            format!(
                "{T}::UdpSecurity::Secure({T}::KeyFiles {{ key_file: {}, accepted: vec![{}], master: {} }})",
                opt_path(&k.key_file)?,
                accepted.join(", "),
                opt_path(&k.master)?,
            )
        }
    };
    Ok(format!(
        "Some({T}::UdpConfig {{ addr: ::std::net::SocketAddr::new({}, {}), security: {security}, recovery_opt_in: {}, sender_capacity: {}, rcvbuf_bytes: {} }})",
        ip(u.addr.ip()),
        u.addr.port(),
        u.recovery_opt_in,
        u.sender_capacity,
        u.rcvbuf_bytes,
    ))
}

fn audit(a: &Option<AuditConfig>) -> Result<String, String> {
    let Some(a) = a else { return Ok("None".into()) };
    let schema = match a.schema {
        varta_audit::Schema::V2 => "V2",
        varta_audit::Schema::V3 => "V3",
    };
    Ok(format!(
        "Some({T}::AuditConfig {{ path: {}, max_bytes: {}, sync_every: {}, key_file: {}, schema: ::varta_audit::Schema::{schema} }})",
        path(&a.path)?,
        opt_lit(a.max_bytes),
        a.sync_every,
        opt_path(&a.key_file)?,
    ))
}

/// The configuration a binary baked from `c` runs on: `c` without the
/// file path and argv (there is nothing to reload), its warnings naming
/// settings as config keys. [`to_rust`] writes exactly this; a
/// fault-injection build of the profile compares it with what its
/// literals build (`VARTA_FAULT_CHECK_BAKED`).
pub fn baked_view(c: &Config) -> Config {
    Config {
        config_file: None,
        argv: Vec::new(),
        warnings: c.warnings.iter().map(|w| without_flag_dashes(w)).collect(),
        ..c.clone()
    }
}

/// Rust source of `pub fn baked_config() -> Result<varta_config::Config,
/// String>` returning `c` (after [`check_profile`]), built from literals
/// only; `Err` is unreachable in practice (it would be a glob or network
/// that compiled at build time and not at start). Paths must be UTF-8.
/// The startup warnings are kept; the file path and argv are not (there
/// is nothing to reload).
pub fn to_rust(c: &Config) -> Result<String, String> {
    check_profile(c)?;
    let c = &baked_view(c);
    let clock = match c.clock_source {
        ClockSource::Monotonic => "Monotonic",
        ClockSource::Boottime => "Boottime",
    };
    let eviction = match c.eviction_policy {
        EvictionPolicy::Strict => "Strict",
        EvictionPolicy::Balanced => "Balanced",
    };
    let log = match c.log_format {
        LogFormat::Text => "Text",
        LogFormat::Json => "Json",
    };
    let warnings: Vec<String> = c
        .warnings
        .iter()
        .map(|w| format!("{w:?}.to_string()"))
        .collect();
    let mut out = String::new();
    let w = &c.watchdog;
    // `write!` to a String cannot fail.
    let _ = write!(
        out,
        "/// The configuration baked in at build time (generated by varta-config's bake step).\n\
         pub fn baked_config() -> ::std::result::Result<{T}::Config, ::std::string::String> {{\n    Ok({T}::Config {{\n\
         socket: {socket},\n socket_mode: {mode:#o},\n control_socket: None,\n\
         threshold: {threshold},\n uds_rcvbuf_bytes: {rcvbuf},\n tracker_capacity: {cap},\n\
         eviction_policy: {T}::EvictionPolicy::{eviction},\n max_beat_rate: {rate},\n\
         global_beat_rate: {grate},\n global_beat_burst: {gburst},\n\
         clock_source: {T}::ClockSource::{clock},\n export: {export},\n\
         shutdown_after: {shutdown_after},\n allow_cross_namespace_agents: {cross},\n\
         strict_namespace_check: {strict},\n log_format: {T}::LogFormat::{log},\n\
         recovery: {recovery},\n audit: {audit},\n shutdown_grace: {grace},\n\
         watchdog: {T}::WatchdogConfig {{ heartbeat_file: {hb}, self_watchdog: {sw}, hw_watchdog: {hw} }},\n\
         metrics: None,\n udp: {udp},\n alertmanager: None,\n rules: {rules},\n\
         config_file: None,\n warnings: vec![{warnings}],\n argv: Vec::new(),\n    }})\n}}\n",
        socket = path(&c.socket)?,
        mode = c.socket_mode,
        threshold = dur(c.threshold),
        rcvbuf = c.uds_rcvbuf_bytes,
        cap = c.tracker_capacity,
        rate = c.max_beat_rate,
        grate = c.global_beat_rate,
        gburst = c.global_beat_burst,
        export = export(&c.export)?,
        shutdown_after = opt_dur(c.shutdown_after),
        cross = c.allow_cross_namespace_agents,
        strict = c.strict_namespace_check,
        recovery = recovery(&c.recovery)?,
        audit = audit(&c.audit)?,
        grace = dur(c.shutdown_grace),
        hb = opt_path(&w.heartbeat_file)?,
        sw = opt_dur(w.self_watchdog),
        hw = opt_path(&w.hw_watchdog)?,
        warnings = warnings.join(", "),
        udp = udp(&c.udp)?,
        rules = rules(&c.rules),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("varta-watch.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn load_file_is_the_runtime_loader() {
        let (_d, p) = file("threshold-ms = 5\n");
        let baked = load_file(&p).unwrap_err().to_string();
        let runtime = load([
            OsString::from("varta-watch"),
            OsString::from("--config"),
            p.clone().into_os_string(),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(baked, runtime);
        assert!(baked.contains("threshold-ms = 5"), "{baked}");
    }

    #[test]
    fn the_profile_refuses_http_parts_by_name() {
        let (_d, p) = file("socket = \"/run/v.sock\"\n");
        let e = to_rust(&load_file(&p).unwrap()).unwrap_err();
        assert!(e.contains("control-socket = \"none\""), "{e}");
        assert!(!e.contains("prom-addr"), "{e}");
    }

    #[test]
    fn warnings_name_settings_without_flag_dashes() {
        assert_eq!(
            without_flag_dashes("use secure UDP (--key-file) or `--udp-port`; --9 --"),
            "use secure UDP (key-file) or `udp-port`; --9 --"
        );
        assert_eq!(without_flag_dashes("/tmp/a--b --"), "/tmp/a--b --");
        let (_d, p) =
            file("control-socket = \"none\"\nudp-port = 9000\ni-accept-plaintext-udp = true\n");
        let c = load_file(&p).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("--key-file")), "{c:?}");
        let src = to_rust(&c).unwrap();
        assert!(src.contains("PLAINTEXT UDP listener"), "{src}");
        assert!(
            src.contains("(key-file)") && !src.contains("--key-file"),
            "{src}"
        );
    }

    #[test]
    fn udp_listener_and_agent_rules_are_carried() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("udp.key");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let (_d, p) = file(&format!(
            "control-socket = \"none\"\nudp-port = 4900\nudp-bind-addr = \"::1\"\n\
             key-file = \"{}\"\nrecovery-exec = \"/bin/true {{pid}}\"\n\
             secure-udp-i-accept-recovery-on-unauthenticated-transport = true\n\
             [[agent]]\nmatch = {{ comm = \"pump-*\", uid = [0, 7], peer = \"::ffff:10.0.0.0/104\" }}\n\
             name = \"{{comm}}@{{pid}}\"\nthreshold-ms = 700\nrecovery = false\n\
             [[agent]]\nmatch = {{ name = \"pump\", origin = \"network_verified\" }}\n\
             required = true\nstartup-grace-ms = 1500\nrecovery-exec = \"/bin/echo {{pid}}\"\n",
            key.display()
        ));
        let c = load_file(&p).unwrap();
        assert_eq!(c.rules.rules.len(), 2);
        let src = to_rust(&c).unwrap();
        for want in [
            "addr: ::std::net::SocketAddr::new(::std::net::IpAddr::from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 4900)",
            &format!("key_file: Some(::std::path::PathBuf::from({:?}))", key.to_str().unwrap()),
            "recovery_opt_in: true",
            "trusted_network_origin: Some(::varta_config::AgentOrigin::NetworkVerified)",
            "comm: Some(::varta_config::Pattern::new(\"pump-*\")?)",
            "uid: Some(vec![0, 7])",
            "peer: Some(::varta_config::Cidr::parse(\"10.0.0.0/8\")?)",
            "name_template: Some(\"{comm}@{pid}\".to_string())",
            "threshold: Some(::std::time::Duration::new(0, 700000000))",
            "recovery: Some(false)",
            "name: Some(::varta_config::Pattern::new(\"pump\")?)",
            "origin: Some(::varta_config::AgentOrigin::NetworkVerified)",
            "required: true",
            "disabled: true",
            "required_name: Some(\"pump\".to_string())",
            "exec: Some(\"/bin/echo {pid}\".to_string())",
        ] {
            assert!(src.contains(want), "{want} not in\n{src}");
        }
        // The key material stays in its file.
        assert!(!src.contains("abab"), "{src}");
    }

    #[test]
    fn literals_carry_every_baked_setting() {
        let (_d, p) = file(
            "socket = \"/run/v/v.sock\"\ncontrol-socket = \"none\"\nthreshold-ms = 1500\n\
             export-file = \"/var/log/v/e.tsv\"\nrecovery-exec = \"/usr/bin/touch /tmp/x-{pid}\"\n\
             recovery-env = [\"A=b \\\"c\\\"\"]\nrecovery-audit-file = \"/var/lib/v/a.log\"\n\
             heartbeat-file = \"/run/v/hb\"\nself-watchdog-secs = 3\nhw-watchdog = \"/dev/watchdog0\"\n",
        );
        let src = to_rust(&load_file(&p).unwrap()).unwrap();
        for want in [
            "PathBuf::from(\"/run/v/v.sock\")",
            "threshold: ::std::time::Duration::new(1, 500000000)",
            "template: \"/usr/bin/touch /tmp/x-{pid}\".to_string()",
            "(\"A\".to_string(), \"b \\\"c\\\"\".to_string())",
            "schema: ::varta_audit::Schema::V2",
            "self_watchdog: Some(::std::time::Duration::new(3, 0))",
            "hw_watchdog: Some(::std::path::PathBuf::from(\"/dev/watchdog0\"))",
            "control_socket: None",
        ] {
            assert!(src.contains(want), "{want} not in\n{src}");
        }
    }
}
