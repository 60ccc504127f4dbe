//! Building a [`Config`]: defaults, then the file, then flags; cross-setting
//! checks; reload on SIGHUP; and a readable diff of what a reload changed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cli::{self, CompatFlag, Parsed};
use super::error::ConfigError;
use super::file::{self, FileSettings};
use super::settings::{self, Origin, Partial};
use super::types::{Config, ExportConfig, ExportFormat, RecoveryConfig};

/// What the command line asks the binary to do.
#[derive(Clone, Debug, PartialEq)]
// Built once at startup and on reload: the size of the variant is irrelevant.
#[allow(clippy::large_enum_variant)]
pub enum Loaded {
    /// Run the observer with this configuration.
    Run(Config),
    /// Print this `--help` text to stdout and exit 0.
    Help(String),
    /// Print this `--version` text to stdout and exit 0.
    Version(String),
}

/// Builds the configuration from the command line (`args` starts with
/// argv[0]) and the `--config` file if one is named. Flags override the
/// file; unset settings take their defaults.
pub fn load<I: IntoIterator<Item = OsString>>(args: I) -> Result<Loaded, ConfigError> {
    let argv: Vec<OsString> = args.into_iter().collect();
    match cli::parse(argv.clone())? {
        Parsed::Help(text) => Ok(Loaded::Help(text)),
        Parsed::Version(text) => Ok(Loaded::Version(text)),
        Parsed::Run(cli, compat) => {
            let (raw, config_file) = cli.into_raw();
            build(raw, compat, config_file, argv).map(Loaded::Run)
        }
    }
}

/// Re-reads `current.config_file` and re-applies the startup flags over it,
/// exactly as [`load`] did at startup. On error the caller keeps `current`.
pub fn reload(current: &Config) -> Result<Config, ConfigError> {
    // A Config built in code rather than by `load` has no argv; parse an
    // empty command line so only the file and defaults apply.
    let argv = if current.argv.is_empty() {
        vec![OsString::from("varta-watch")]
    } else {
        current.argv.clone()
    };
    match cli::parse(argv)? {
        Parsed::Run(cli, compat) => {
            let (raw, _) = cli.into_raw();
            build(
                raw,
                compat,
                current.config_file.clone(),
                current.argv.clone(),
            )
        }
        Parsed::Help(_) | Parsed::Version(_) => Err(ConfigError::Invalid(
            "the startup command line asks for --help or --version; there is nothing to reload"
                .into(),
        )),
    }
}

fn build(
    flag_raw: settings::RawSettings,
    flag_compat: Vec<&'static CompatFlag>,
    config_file: Option<PathBuf>,
    argv: Vec<OsString>,
) -> Result<Config, ConfigError> {
    let file_path = config_file.as_deref();
    let file_settings = match file_path {
        Some(path) => file::read(path)?,
        None => FileSettings::default(),
    };
    // Every value is checked where it was written, even one a flag
    // overrides: a broken file should be reported, not silently masked
    // until the day the flag is dropped.
    let from_file = match file_path {
        Some(path) => file_settings.raw.validate(Origin::File(path))?,
        None => Partial::default(),
    };
    let from_flags = flag_raw.validate(Origin::Flag)?;
    let origin = |given_as_flag: bool| match file_path {
        Some(path) if !given_as_flag => Origin::File(path),
        _ => Origin::Flag,
    };

    let mut warnings = compat_warnings(&flag_compat, &file_settings.compat, file_path);
    let merged = from_flags.clone().or(from_file);

    if merged.export_file.is_none() {
        if merged.export_file_max_bytes.is_some() {
            let name =
                origin(from_flags.export_file_max_bytes.is_some()).name("export-file-max-bytes");
            return Err(ConfigError::Invalid(format!(
                "{name} requires an export file: set --export-file (or export-file in the config file)"
            )));
        }
        let export_only = [
            (
                "export-format",
                merged.export_format.is_some(),
                from_flags.export_format.is_some(),
            ),
            (
                "no-export-beats",
                merged.no_export_beats.is_some(),
                from_flags.no_export_beats.is_some(),
            ),
            (
                "export-file-sync-every",
                merged.export_file_sync_every.is_some(),
                from_flags.export_file_sync_every.is_some(),
            ),
        ];
        for (key, given, as_flag) in export_only {
            if given {
                warnings.push(format!(
                    "{} has no effect without an export file (--export-file)",
                    origin(as_flag).name(key)
                ));
            }
        }
    }
    if let Some(burst) = merged.global_beat_burst {
        if burst > 0 && merged.global_beat_rate.unwrap_or(0) == 0 {
            warnings.push(format!(
                "{} has no effect while the global beat rate is 0 (global rate limiting is off; set --global-beat-rate to enable it)",
                origin(from_flags.global_beat_burst.is_some()).name("global-beat-burst")
            ));
        }
    }

    let rules = file_settings.rules;
    let (mut recovery, audit) =
        super::recovery::build(&merged, &from_flags, &origin, &rules, &mut warnings)?;
    let watchdog = super::watchdog::build(&merged);
    let alertmanager =
        super::alert::build(&merged.alert, &from_flags.alert, &origin, &mut warnings)?;
    let metrics = super::metrics::build(&merged, &from_flags, &origin, &mut warnings)?;
    let threshold = merged
        .threshold
        .unwrap_or(Duration::from_millis(super::types::DEFAULT_THRESHOLD_MS));
    super::rules::check(
        &rules,
        file_path,
        threshold,
        recovery
            .as_ref()
            .is_some_and(RecoveryConfig::has_global_command),
        merged.recovery_inherit_env.unwrap_or(false),
        &mut warnings,
    )?;
    // A rule's recovery-exec may run for network agents too, so it needs
    // the UDP listener's recovery opt-in like a global command does.
    let udp = super::udp::build(
        &merged,
        &from_flags,
        &origin,
        recovery
            .as_ref()
            .is_some_and(RecoveryConfig::has_global_command)
            || rules.may_recover_network_agents(),
        &mut warnings,
    )?;
    if let (Some(r), Some(u)) = (&mut recovery, &udp) {
        if u.recovery_opt_in {
            r.trusted_network_origin = Some(match u.security {
                super::udp::UdpSecurity::Plaintext => crate::AgentOrigin::NetworkUnverified,
                super::udp::UdpSecurity::Secure(_) => crate::AgentOrigin::NetworkVerified,
            });
        }
    }
    let socket = merged.socket.unwrap_or_else(varta_vlp::default_socket_path);
    let mut config = Config::with_socket(socket);
    let d = &mut config;
    d.socket_mode = merged.socket_mode.unwrap_or(d.socket_mode);
    d.control_socket = match merged.control_socket {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p),
        None => d.control_socket.take(),
    };
    d.threshold = merged.threshold.unwrap_or(d.threshold);
    d.uds_rcvbuf_bytes = merged.uds_rcvbuf_bytes.unwrap_or(d.uds_rcvbuf_bytes);
    d.tracker_capacity = merged.tracker_capacity.unwrap_or(d.tracker_capacity);
    d.eviction_policy = merged.eviction_policy.unwrap_or(d.eviction_policy);
    d.max_beat_rate = merged.max_beat_rate.unwrap_or(d.max_beat_rate);
    d.global_beat_rate = merged.global_beat_rate.unwrap_or(d.global_beat_rate);
    d.global_beat_burst = merged.global_beat_burst.unwrap_or(d.global_beat_burst);
    d.clock_source = merged.clock_source.unwrap_or(d.clock_source);
    d.export = merged.export_file.map(|path| ExportConfig {
        path,
        format: merged.export_format.unwrap_or(ExportFormat::Tsv),
        beats: !merged.no_export_beats.unwrap_or(false),
        max_bytes: merged.export_file_max_bytes,
        sync_every: merged.export_file_sync_every.unwrap_or(0),
    });
    d.shutdown_after = merged.shutdown_after.or(d.shutdown_after);
    d.allow_cross_namespace_agents = merged
        .allow_cross_namespace_agents
        .unwrap_or(d.allow_cross_namespace_agents);
    d.strict_namespace_check = merged
        .strict_namespace_check
        .unwrap_or(d.strict_namespace_check);
    d.log_format = merged.log_format.unwrap_or(d.log_format);
    d.shutdown_grace = merged.shutdown_grace.unwrap_or(d.shutdown_grace);
    d.recovery = recovery;
    d.audit = audit;
    d.watchdog = watchdog;
    d.metrics = metrics;
    d.udp = udp;
    d.alertmanager = alertmanager;
    d.rules = rules;
    d.config_file = config_file;
    d.warnings = warnings;
    d.argv = argv;
    Ok(config)
}

/// One line per compatibility setting, in table order; a setting given both
/// as a flag and in the file is reported once, as the flag.
fn compat_warnings(
    flags: &[&'static CompatFlag],
    file: &[&'static CompatFlag],
    file_path: Option<&Path>,
) -> Vec<String> {
    let given = |set: &[&CompatFlag], f: &CompatFlag| set.iter().any(|g| g.name == f.name);
    cli::COMPAT
        .iter()
        .filter_map(|f| {
            if given(flags, f) {
                Some(f.warning())
            } else {
                match file_path {
                    Some(path) if given(file, f) => {
                        Some(format!("{} {}", Origin::File(path).name(f.name), f.reason))
                    }
                    _ => None,
                }
            }
        })
        .collect()
}

/// One line per setting that differs, named like its flag, e.g.
/// `threshold-ms: 5000 -> 2000`; changed `[[agent]]` rules as
/// `agent rules: 2 -> 3 rules (changed: #3)` and one line per changed rule.
/// Warnings and the stored argv are not settings and are ignored.
pub fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} -> {b}"));
        }
    };
    let path = |p: &Path| p.display().to_string();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "none".into());

    field("socket", path(&old.socket), path(&new.socket));
    field(
        "socket-mode",
        format!("{:04o}", old.socket_mode),
        format!("{:04o}", new.socket_mode),
    );
    field(
        "control-socket",
        opt(old.control_socket.as_deref().map(path)),
        opt(new.control_socket.as_deref().map(path)),
    );
    field(
        "uds-rcvbuf-bytes",
        old.uds_rcvbuf_bytes.to_string(),
        new.uds_rcvbuf_bytes.to_string(),
    );
    field(
        "allow-cross-namespace-agents",
        old.allow_cross_namespace_agents.to_string(),
        new.allow_cross_namespace_agents.to_string(),
    );
    field(
        "strict-namespace-check",
        old.strict_namespace_check.to_string(),
        new.strict_namespace_check.to_string(),
    );
    field(
        "threshold-ms",
        old.threshold.as_millis().to_string(),
        new.threshold.as_millis().to_string(),
    );
    field(
        "clock-source",
        settings::clock_source_name(old.clock_source).into(),
        settings::clock_source_name(new.clock_source).into(),
    );
    field(
        "tracker-capacity",
        old.tracker_capacity.to_string(),
        new.tracker_capacity.to_string(),
    );
    field(
        "tracker-eviction-policy",
        settings::eviction_policy_name(old.eviction_policy).into(),
        settings::eviction_policy_name(new.eviction_policy).into(),
    );
    field(
        "max-beat-rate",
        old.max_beat_rate.to_string(),
        new.max_beat_rate.to_string(),
    );
    field(
        "global-beat-rate",
        old.global_beat_rate.to_string(),
        new.global_beat_rate.to_string(),
    );
    field(
        "global-beat-burst",
        old.global_beat_burst.to_string(),
        new.global_beat_burst.to_string(),
    );
    field(
        "export-file",
        opt(old.export.as_ref().map(|e| path(&e.path))),
        opt(new.export.as_ref().map(|e| path(&e.path))),
    );
    // Export details only mean something while an export exists; turning
    // the export on or off is already the line above.
    if let (Some(a), Some(b)) = (&old.export, &new.export) {
        field(
            "export-format",
            settings::export_format_name(a.format).into(),
            settings::export_format_name(b.format).into(),
        );
        field(
            "no-export-beats",
            (!a.beats).to_string(),
            (!b.beats).to_string(),
        );
        field(
            "export-file-max-bytes",
            opt(a.max_bytes.map(|n| n.to_string())),
            opt(b.max_bytes.map(|n| n.to_string())),
        );
        field(
            "export-file-sync-every",
            a.sync_every.to_string(),
            b.sync_every.to_string(),
        );
    }
    field(
        "log-format",
        settings::log_format_name(old.log_format).into(),
        settings::log_format_name(new.log_format).into(),
    );
    field(
        "shutdown-after-secs",
        opt(old.shutdown_after.map(|d| d.as_secs().to_string())),
        opt(new.shutdown_after.map(|d| d.as_secs().to_string())),
    );
    field(
        "config",
        opt(old.config_file.as_deref().map(path)),
        opt(new.config_file.as_deref().map(path)),
    );
    super::recovery::diff(old, new, &mut out);
    super::watchdog::diff(old, new, &mut out);
    super::metrics::diff(old, new, &mut out);
    super::udp::diff(old, new, &mut out);
    super::alert::diff(old, new, &mut out);
    super::rules::diff(&old.rules, &new.rules, &mut out);
    out
}
