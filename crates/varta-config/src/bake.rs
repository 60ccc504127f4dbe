//! The safety profile's build step (`varta-watch --features baked-config`):
//! the config file is loaded by [`load_file`] — the very code path of
//! `varta-watch --config FILE` — then checked against what the profile
//! can carry ([`check_profile`]) and written out as Rust source that
//! builds the same [`Config`] from literals ([`to_rust`]). The binary
//! that includes that source has no TOML parser and no argv parser.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::types::*;
use crate::{load, ConfigError, Loaded};

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
/// profile removes (an HTTP server or client, a network listener) or is
/// not carried by the baking step yet.
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
    if c.udp.is_some() {
        refused.push("udp-port: network agents are not kernel-attested");
    }
    if !c.rules.is_empty() {
        refused.push("[[agent]] rules: not carried by the baked profile");
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

fn opt_u64(n: Option<u64>) -> String {
    n.map_or("None".into(), |n| format!("Some({n})"))
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
        opt_u64(e.max_bytes),
        e.sync_every
    ))
}

fn recovery(r: &Option<RecoveryConfig>) -> Result<String, String> {
    let Some(r) = r else { return Ok("None".into()) };
    if r.trusted_network_origin.is_some() || !r.rules.is_empty() {
        return Err("recovery for network agents or [[agent]] rules cannot be baked".into());
    }
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
        "Some({T}::RecoveryConfig {{ template: {:?}.to_string(), source: {source}, debounce: {}, timeout: {}, kill_grace: {}, max_attempts: {}, window: {}, backoff: {}, env: vec![{}], inherit_env: {}, capture: {}, capture_bytes: {}, table_capacity: {}, max_children: {}, trusted_network_origin: None, rules: Vec::new() }})",
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
        opt_u64(a.max_bytes),
        a.sync_every,
        opt_path(&a.key_file)?,
    ))
}

/// Rust source of `pub fn baked_config() -> varta_config::Config` returning
/// `c` (after [`check_profile`]), built from literals only. Paths must be
/// UTF-8. The startup warnings are kept; the file path and argv are not
/// (there is nothing to reload).
pub fn to_rust(c: &Config) -> Result<String, String> {
    check_profile(c)?;
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
         pub fn baked_config() -> {T}::Config {{\n    {T}::Config {{\n\
         socket: {socket},\n socket_mode: {mode:#o},\n control_socket: None,\n\
         threshold: {threshold},\n uds_rcvbuf_bytes: {rcvbuf},\n tracker_capacity: {cap},\n\
         eviction_policy: {T}::EvictionPolicy::{eviction},\n max_beat_rate: {rate},\n\
         global_beat_rate: {grate},\n global_beat_burst: {gburst},\n\
         clock_source: {T}::ClockSource::{clock},\n export: {export},\n\
         shutdown_after: {shutdown_after},\n allow_cross_namespace_agents: {cross},\n\
         strict_namespace_check: {strict},\n log_format: {T}::LogFormat::{log},\n\
         recovery: {recovery},\n audit: {audit},\n shutdown_grace: {grace},\n\
         watchdog: {T}::WatchdogConfig {{ heartbeat_file: {hb}, self_watchdog: {sw}, hw_watchdog: {hw} }},\n\
         metrics: None,\n udp: None,\n alertmanager: None,\n rules: Default::default(),\n\
         config_file: None,\n warnings: vec![{warnings}],\n argv: Vec::new(),\n    }}\n}}\n",
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
    fn the_profile_refuses_network_and_http_parts_by_name() {
        let (_d, p) = file("socket = \"/run/v.sock\"\n");
        let e = to_rust(&load_file(&p).unwrap()).unwrap_err();
        assert!(e.contains("control-socket = \"none\""), "{e}");
        let (_d, p) =
            file("control-socket = \"none\"\nudp-port = 9000\ni-accept-plaintext-udp = true\n");
        let e = to_rust(&load_file(&p).unwrap()).unwrap_err();
        assert!(e.contains("udp-port") && !e.contains("control"), "{e}");
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
