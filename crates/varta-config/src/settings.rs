//! Per-setting validation shared by flags and the config file, so a value is
//! judged by the same rule wherever it comes from and only the wording of
//! the error (flag or file key) differs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::error::ConfigError;
use super::types::{ClockSource, EvictionPolicy, ExportFormat, LogFormat};
use super::types::{MAX_TRACKER_CAPACITY, MIN_THRESHOLD_MS, RECOVERY_BACKOFF_CAP_MS};

/// Smallest `--recovery-timeout-ms` (the original's minimum).
pub(crate) const MIN_RECOVERY_TIMEOUT_MS: u64 = 100;
/// Largest `--recovery-max-attempts`: the per-agent attempt history is kept
/// in full, so it is bounded.
pub(crate) const MAX_RECOVERY_ATTEMPTS: u64 = 1000;
/// Largest `--recovery-window-ms` (7 days).
pub(crate) const MAX_RECOVERY_WINDOW_MS: u64 = 604_800_000;
/// Largest `--recovery-capture-bytes` (the original's 1 MiB).
pub(crate) const MAX_CAPTURE_BYTES: u64 = 1 << 20;
/// Largest `--recovery-max-children`.
pub(crate) const MAX_RECOVERY_CHILDREN: u64 = 65_536;

/// Largest accepted `--threshold-ms` (24 h).
pub(crate) const MAX_THRESHOLD_MS: u64 = 86_400_000;
/// Largest accepted `--uds-rcvbuf-bytes` (1 GiB).
pub(crate) const MAX_RCVBUF_BYTES: u64 = 1 << 30;
/// Largest accepted `--max-beat-rate`.
pub(crate) const MAX_PER_PID_RATE: u64 = 1_000_000;
/// Smallest accepted `--export-file-max-bytes`: below this a rotation would
/// happen every few lines.
pub(crate) const MIN_EXPORT_MAX_BYTES: u64 = 4096;
/// Largest accepted `--shutdown-after-secs` (10 years): keeps deadline
/// arithmetic on the monotonic clock far from overflow.
pub(crate) const MAX_SHUTDOWN_AFTER_SECS: u64 = 315_360_000;
/// `sun_path` holds 108 bytes including the terminating NUL.
pub(crate) const MAX_SOCKET_PATH_BYTES: usize = 107;
/// Largest accepted `--socket-mode`: permission bits only.
pub(crate) const MAX_SOCKET_MODE: u32 = 0o777;

/// Settings as given by one source, before validation. Flags are converted
/// into this; the config file deserializes straight into it, which is why
/// field names are the flag names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSettings {
    pub socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "octal_string")]
    pub socket_mode: Option<String>,
    pub control_socket: Option<PathBuf>,
    pub uds_rcvbuf_bytes: Option<u64>,
    pub allow_cross_namespace_agents: Option<bool>,
    pub strict_namespace_check: Option<bool>,
    pub threshold_ms: Option<u64>,
    pub clock_source: Option<String>,
    pub tracker_capacity: Option<u64>,
    pub tracker_eviction_policy: Option<String>,
    pub max_beat_rate: Option<u64>,
    pub global_beat_rate: Option<u64>,
    pub global_beat_burst: Option<u64>,
    pub export_file: Option<PathBuf>,
    pub export_format: Option<String>,
    pub no_export_beats: Option<bool>,
    pub export_file_max_bytes: Option<u64>,
    pub export_file_sync_every: Option<u64>,
    pub log_format: Option<String>,
    pub shutdown_after_secs: Option<u64>,
    pub recovery_exec: Option<String>,
    pub recovery_exec_file: Option<PathBuf>,
    pub recovery_debounce_ms: Option<u64>,
    pub recovery_timeout_ms: Option<u64>,
    pub recovery_kill_grace_ms: Option<u64>,
    pub recovery_max_attempts: Option<u64>,
    pub recovery_window_ms: Option<u64>,
    pub recovery_backoff_ms: Option<u64>,
    pub recovery_env: Option<Vec<String>>,
    pub recovery_inherit_env: Option<bool>,
    pub recovery_capture_stdio: Option<bool>,
    pub recovery_capture_bytes: Option<u64>,
    pub recovery_table_capacity: Option<u64>,
    pub recovery_max_children: Option<u64>,
    pub recovery_audit_file: Option<PathBuf>,
    pub recovery_audit_max_bytes: Option<u64>,
    pub recovery_audit_sync_every: Option<u64>,
    pub recovery_audit_key_file: Option<PathBuf>,
    pub recovery_audit_schema: Option<String>,
    pub shutdown_grace_ms: Option<u64>,
    pub heartbeat_file: Option<PathBuf>,
    pub self_watchdog_secs: Option<u64>,
    pub hw_watchdog: Option<PathBuf>,
    pub prom_addr: Option<std::net::SocketAddr>,
    pub prom_token_file: Option<PathBuf>,
    pub prom_rate_limit_per_sec: Option<u64>,
    pub prom_rate_limit_burst: Option<u64>,
    pub per_agent_metrics_limit: Option<u64>,
    pub udp_port: Option<u64>,
    pub udp_bind_addr: Option<std::net::IpAddr>,
    pub key_file: Option<PathBuf>,
    pub accepted_key_file: Option<Vec<PathBuf>>,
    pub master_key_file: Option<PathBuf>,
    pub i_accept_plaintext_udp: Option<bool>,
    pub i_accept_secure_udp_non_loopback: Option<bool>,
    pub secure_udp_i_accept_recovery_on_unauthenticated_transport: Option<bool>,
    pub plaintext_udp_i_accept_recovery_on_unauthenticated_transport: Option<bool>,
    pub udp_sender_capacity: Option<u64>,
    pub udp_rcvbuf_bytes: Option<u64>,
    #[serde(default, deserialize_with = "super::alert::one_or_many")]
    pub alertmanager_url: Option<Vec<String>>,
    pub alert_instance: Option<String>,
    pub alertmanager_resend_ms: Option<u64>,
    pub alertmanager_timeout_ms: Option<u64>,
    pub alertmanager_bearer_token_file: Option<PathBuf>,
    pub alertmanager_basic_auth_file: Option<PathBuf>,
}

/// A TOML integer has lost its spelling by the time we see it: `0o600` and
/// `384` are the same value, and `600` would silently mean 0o1130. Only a
/// string is unambiguous.
fn octal_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(Some(s)),
        _ => Err(serde::de::Error::custom(
            "write the mode as a quoted octal string, e.g. socket-mode = \"0600\" \
             (a TOML integer cannot tell 600 from 0o600)",
        )),
    }
}

/// Where a setting came from; decides how an error names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin<'a> {
    /// The command line.
    Flag,
    /// The config file at this path.
    File(&'a Path),
}

impl Origin<'_> {
    /// `--key` or `key` (in the config file), for sentences about a setting.
    pub(crate) fn name(&self, key: &str) -> String {
        match self {
            Origin::Flag => format!("--{key}"),
            Origin::File(path) => format!("{key} (config file {})", path.display()),
        }
    }

    /// The error for `key` holding `value`, which breaks `reason`.
    pub(super) fn invalid(&self, key: &str, value: Shown<'_>, reason: &str) -> ConfigError {
        match self {
            Origin::Flag => {
                ConfigError::Invalid(format!("invalid value '{value}' for --{key}: {reason}"))
            }
            Origin::File(path) => ConfigError::File {
                path: path.to_path_buf(),
                message: format!("{key} = {:#}: {reason}", value),
            },
        }
    }
}

/// A rejected value as the operator wrote it: bare on the command line,
/// TOML-quoted (`{:#}`) when it came from the file.
#[derive(Clone, Copy)]
pub(super) enum Shown<'a> {
    Num(u64),
    Text(&'a str),
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self, f.alternate()) {
            (Shown::Num(n), _) => write!(f, "{n}"),
            (Shown::Text(s), false) => f.write_str(s),
            (Shown::Text(s), true) => write!(f, "{}", toml::Value::String((*s).to_string())),
        }
    }
}

/// Validated settings from one source; `None` means "not given here".
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Partial {
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<u32>,
    pub control_socket: Option<PathBuf>,
    pub uds_rcvbuf_bytes: Option<usize>,
    pub allow_cross_namespace_agents: Option<bool>,
    pub strict_namespace_check: Option<bool>,
    pub threshold: Option<Duration>,
    pub clock_source: Option<ClockSource>,
    pub tracker_capacity: Option<u32>,
    pub eviction_policy: Option<EvictionPolicy>,
    pub max_beat_rate: Option<u32>,
    pub global_beat_rate: Option<u32>,
    pub global_beat_burst: Option<u32>,
    pub export_file: Option<PathBuf>,
    pub export_format: Option<ExportFormat>,
    pub no_export_beats: Option<bool>,
    pub export_file_max_bytes: Option<u64>,
    pub export_file_sync_every: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub shutdown_after: Option<Duration>,
    pub recovery_exec: Option<String>,
    pub recovery_exec_file: Option<PathBuf>,
    pub recovery_debounce: Option<Duration>,
    pub recovery_timeout: Option<Duration>,
    pub recovery_kill_grace: Option<Duration>,
    pub recovery_max_attempts: Option<u32>,
    pub recovery_window: Option<Duration>,
    pub recovery_backoff: Option<Duration>,
    pub recovery_env: Option<Vec<(String, String)>>,
    pub recovery_inherit_env: Option<bool>,
    pub recovery_capture_stdio: Option<bool>,
    pub recovery_capture_bytes: Option<u32>,
    pub recovery_table_capacity: Option<u32>,
    pub recovery_max_children: Option<u32>,
    pub recovery_audit_file: Option<PathBuf>,
    pub recovery_audit_max_bytes: Option<u64>,
    pub recovery_audit_sync_every: Option<u32>,
    pub recovery_audit_key_file: Option<PathBuf>,
    pub recovery_audit_schema: Option<varta_audit::Schema>,
    pub shutdown_grace: Option<Duration>,
    pub heartbeat_file: Option<PathBuf>,
    pub self_watchdog: Option<Duration>,
    pub hw_watchdog: Option<PathBuf>,
    pub prom_addr: Option<std::net::SocketAddr>,
    pub prom_token_file: Option<PathBuf>,
    pub prom_rate_limit_per_sec: Option<u32>,
    pub prom_rate_limit_burst: Option<u32>,
    pub per_agent_metrics_limit: Option<u32>,
    pub udp_port: Option<u16>,
    pub udp_bind_addr: Option<std::net::IpAddr>,
    pub key_file: Option<PathBuf>,
    pub accepted_key_file: Option<Vec<PathBuf>>,
    pub master_key_file: Option<PathBuf>,
    pub i_accept_plaintext_udp: Option<bool>,
    pub i_accept_secure_udp_non_loopback: Option<bool>,
    pub secure_udp_recovery: Option<bool>,
    pub plaintext_udp_recovery: Option<bool>,
    pub udp_sender_capacity: Option<u32>,
    pub udp_rcvbuf_bytes: Option<usize>,
    pub alert: super::alert::AlertPartial,
}

impl Partial {
    /// Field by field, `self` where given, else `lower`.
    pub(crate) fn or(self, lower: Partial) -> Partial {
        Partial {
            socket: self.socket.or(lower.socket),
            socket_mode: self.socket_mode.or(lower.socket_mode),
            control_socket: self.control_socket.or(lower.control_socket),
            uds_rcvbuf_bytes: self.uds_rcvbuf_bytes.or(lower.uds_rcvbuf_bytes),
            allow_cross_namespace_agents: self
                .allow_cross_namespace_agents
                .or(lower.allow_cross_namespace_agents),
            strict_namespace_check: self.strict_namespace_check.or(lower.strict_namespace_check),
            threshold: self.threshold.or(lower.threshold),
            clock_source: self.clock_source.or(lower.clock_source),
            tracker_capacity: self.tracker_capacity.or(lower.tracker_capacity),
            eviction_policy: self.eviction_policy.or(lower.eviction_policy),
            max_beat_rate: self.max_beat_rate.or(lower.max_beat_rate),
            global_beat_rate: self.global_beat_rate.or(lower.global_beat_rate),
            global_beat_burst: self.global_beat_burst.or(lower.global_beat_burst),
            export_file: self.export_file.or(lower.export_file),
            export_format: self.export_format.or(lower.export_format),
            no_export_beats: self.no_export_beats.or(lower.no_export_beats),
            export_file_max_bytes: self.export_file_max_bytes.or(lower.export_file_max_bytes),
            export_file_sync_every: self.export_file_sync_every.or(lower.export_file_sync_every),
            log_format: self.log_format.or(lower.log_format),
            shutdown_after: self.shutdown_after.or(lower.shutdown_after),
            recovery_exec: self.recovery_exec.or(lower.recovery_exec),
            recovery_exec_file: self.recovery_exec_file.or(lower.recovery_exec_file),
            recovery_debounce: self.recovery_debounce.or(lower.recovery_debounce),
            recovery_timeout: self.recovery_timeout.or(lower.recovery_timeout),
            recovery_kill_grace: self.recovery_kill_grace.or(lower.recovery_kill_grace),
            recovery_max_attempts: self.recovery_max_attempts.or(lower.recovery_max_attempts),
            recovery_window: self.recovery_window.or(lower.recovery_window),
            recovery_backoff: self.recovery_backoff.or(lower.recovery_backoff),
            recovery_env: self.recovery_env.or(lower.recovery_env),
            recovery_inherit_env: self.recovery_inherit_env.or(lower.recovery_inherit_env),
            recovery_capture_stdio: self.recovery_capture_stdio.or(lower.recovery_capture_stdio),
            recovery_capture_bytes: self.recovery_capture_bytes.or(lower.recovery_capture_bytes),
            recovery_table_capacity: self
                .recovery_table_capacity
                .or(lower.recovery_table_capacity),
            recovery_max_children: self.recovery_max_children.or(lower.recovery_max_children),
            recovery_audit_file: self.recovery_audit_file.or(lower.recovery_audit_file),
            recovery_audit_max_bytes: self
                .recovery_audit_max_bytes
                .or(lower.recovery_audit_max_bytes),
            recovery_audit_sync_every: self
                .recovery_audit_sync_every
                .or(lower.recovery_audit_sync_every),
            recovery_audit_key_file: self
                .recovery_audit_key_file
                .or(lower.recovery_audit_key_file),
            recovery_audit_schema: self.recovery_audit_schema.or(lower.recovery_audit_schema),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            heartbeat_file: self.heartbeat_file.or(lower.heartbeat_file),
            self_watchdog: self.self_watchdog.or(lower.self_watchdog),
            hw_watchdog: self.hw_watchdog.or(lower.hw_watchdog),
            prom_addr: self.prom_addr.or(lower.prom_addr),
            prom_token_file: self.prom_token_file.or(lower.prom_token_file),
            prom_rate_limit_per_sec: self
                .prom_rate_limit_per_sec
                .or(lower.prom_rate_limit_per_sec),
            prom_rate_limit_burst: self.prom_rate_limit_burst.or(lower.prom_rate_limit_burst),
            per_agent_metrics_limit: self
                .per_agent_metrics_limit
                .or(lower.per_agent_metrics_limit),
            udp_port: self.udp_port.or(lower.udp_port),
            udp_bind_addr: self.udp_bind_addr.or(lower.udp_bind_addr),
            key_file: self.key_file.or(lower.key_file),
            accepted_key_file: self.accepted_key_file.or(lower.accepted_key_file),
            master_key_file: self.master_key_file.or(lower.master_key_file),
            i_accept_plaintext_udp: self.i_accept_plaintext_udp.or(lower.i_accept_plaintext_udp),
            i_accept_secure_udp_non_loopback: self
                .i_accept_secure_udp_non_loopback
                .or(lower.i_accept_secure_udp_non_loopback),
            secure_udp_recovery: self.secure_udp_recovery.or(lower.secure_udp_recovery),
            plaintext_udp_recovery: self.plaintext_udp_recovery.or(lower.plaintext_udp_recovery),
            udp_sender_capacity: self.udp_sender_capacity.or(lower.udp_sender_capacity),
            udp_rcvbuf_bytes: self.udp_rcvbuf_bytes.or(lower.udp_rcvbuf_bytes),
            alert: self.alert.or(lower.alert),
        }
    }
}

impl RawSettings {
    /// Checks every given value; the first bad one is the error.
    pub(crate) fn validate(mut self, origin: Origin<'_>) -> Result<Partial, ConfigError> {
        let o = origin;
        let alert = super::alert::validate(o, super::alert::AlertRaw::take(&mut self))?;
        let u32_max = u64::from(u32::MAX);
        // Range checks make every narrowing below lossless; the fallbacks
        // only exist so no input can reach a panic.
        let to_u32 = |v: Option<u64>| v.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        Ok(Partial {
            socket: path(o, "socket", self.socket, Some(MAX_SOCKET_PATH_BYTES))?,
            socket_mode: text(o, "socket-mode", self.socket_mode, parse_socket_mode)?,
            control_socket: path(
                o,
                "control-socket",
                self.control_socket,
                Some(MAX_SOCKET_PATH_BYTES),
            )?,
            uds_rcvbuf_bytes: num(
                o,
                "uds-rcvbuf-bytes",
                self.uds_rcvbuf_bytes,
                (0, MAX_RCVBUF_BYTES),
                " bytes (0 keeps the kernel default)",
            )?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            allow_cross_namespace_agents: self.allow_cross_namespace_agents,
            strict_namespace_check: self.strict_namespace_check,
            threshold: num(
                o,
                "threshold-ms",
                self.threshold_ms,
                (MIN_THRESHOLD_MS, MAX_THRESHOLD_MS),
                " milliseconds",
            )?
            .map(Duration::from_millis),
            clock_source: text(o, "clock-source", self.clock_source, parse_clock_source)?,
            tracker_capacity: to_u32(num(
                o,
                "tracker-capacity",
                self.tracker_capacity,
                (1, u64::from(MAX_TRACKER_CAPACITY)),
                " agents",
            )?),
            eviction_policy: text(
                o,
                "tracker-eviction-policy",
                self.tracker_eviction_policy,
                parse_eviction_policy,
            )?,
            max_beat_rate: to_u32(num(
                o,
                "max-beat-rate",
                self.max_beat_rate,
                (0, MAX_PER_PID_RATE),
                " beats per second (0 disables the limit)",
            )?),
            global_beat_rate: to_u32(num(
                o,
                "global-beat-rate",
                self.global_beat_rate,
                (0, u32_max),
                " beats per second (0 disables the limit)",
            )?),
            global_beat_burst: to_u32(num(
                o,
                "global-beat-burst",
                self.global_beat_burst,
                (0, u32_max),
                " beats (0 means the same as the global beat rate)",
            )?),
            export_file: path(o, "export-file", self.export_file, None)?,
            export_format: text(o, "export-format", self.export_format, parse_export_format)?,
            no_export_beats: self.no_export_beats,
            export_file_max_bytes: num(
                o,
                "export-file-max-bytes",
                self.export_file_max_bytes,
                (MIN_EXPORT_MAX_BYTES, u64::MAX),
                " bytes",
            )?,
            export_file_sync_every: self.export_file_sync_every,
            log_format: text(o, "log-format", self.log_format, parse_log_format)?,
            shutdown_after: num(
                o,
                "shutdown-after-secs",
                self.shutdown_after_secs,
                (1, MAX_SHUTDOWN_AFTER_SECS),
                " seconds",
            )?
            .map(Duration::from_secs),
            recovery_exec: text(o, "recovery-exec", self.recovery_exec, parse_command)?,
            recovery_exec_file: path(o, "recovery-exec-file", self.recovery_exec_file, None)?,
            recovery_debounce: ms(
                o,
                "recovery-debounce-ms",
                self.recovery_debounce_ms,
                (0, MAX_THRESHOLD_MS),
            )?,
            recovery_timeout: ms(
                o,
                "recovery-timeout-ms",
                self.recovery_timeout_ms,
                (MIN_RECOVERY_TIMEOUT_MS, MAX_THRESHOLD_MS),
            )?,
            recovery_kill_grace: ms(
                o,
                "recovery-kill-grace-ms",
                self.recovery_kill_grace_ms,
                (10, 600_000),
            )?,
            recovery_max_attempts: to_u32(num(
                o,
                "recovery-max-attempts",
                self.recovery_max_attempts,
                (1, MAX_RECOVERY_ATTEMPTS),
                " attempts",
            )?),
            recovery_window: ms(
                o,
                "recovery-window-ms",
                self.recovery_window_ms,
                (1000, MAX_RECOVERY_WINDOW_MS),
            )?,
            recovery_backoff: ms(
                o,
                "recovery-backoff-ms",
                self.recovery_backoff_ms,
                (0, RECOVERY_BACKOFF_CAP_MS),
            )?,
            recovery_env: self
                .recovery_env
                .map(|list| {
                    list.iter()
                        .map(|kv| {
                            parse_env(kv).map_err(|reason| {
                                o.invalid("recovery-env", Shown::Text(kv), &reason)
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?,
            recovery_inherit_env: self.recovery_inherit_env,
            recovery_capture_stdio: self.recovery_capture_stdio,
            recovery_capture_bytes: to_u32(num(
                o,
                "recovery-capture-bytes",
                self.recovery_capture_bytes,
                (1, MAX_CAPTURE_BYTES),
                " bytes",
            )?),
            recovery_table_capacity: to_u32(num(
                o,
                "recovery-table-capacity",
                self.recovery_table_capacity,
                (1, u64::from(MAX_TRACKER_CAPACITY)),
                " agents",
            )?),
            recovery_max_children: to_u32(num(
                o,
                "recovery-max-children",
                self.recovery_max_children,
                (1, MAX_RECOVERY_CHILDREN),
                " children",
            )?),
            recovery_audit_file: path(o, "recovery-audit-file", self.recovery_audit_file, None)?,
            recovery_audit_max_bytes: num(
                o,
                "recovery-audit-max-bytes",
                self.recovery_audit_max_bytes,
                (MIN_EXPORT_MAX_BYTES, u64::MAX),
                " bytes",
            )?,
            recovery_audit_sync_every: to_u32(num(
                o,
                "recovery-audit-sync-every",
                self.recovery_audit_sync_every,
                (1, 1_000_000),
                " records",
            )?),
            recovery_audit_key_file: path(
                o,
                "recovery-audit-key-file",
                self.recovery_audit_key_file,
                None,
            )?,
            recovery_audit_schema: text(
                o,
                "recovery-audit-schema",
                self.recovery_audit_schema,
                |s| s.parse::<varta_audit::Schema>(),
            )?,
            shutdown_grace: ms(
                o,
                "shutdown-grace-ms",
                self.shutdown_grace_ms,
                (100, 60_000),
            )?,
            heartbeat_file: path(o, "heartbeat-file", self.heartbeat_file, None)?,
            self_watchdog: num(
                o,
                "self-watchdog-secs",
                self.self_watchdog_secs,
                (1, super::watchdog::MAX_SELF_WATCHDOG_SECS),
                " seconds",
            )?
            .map(Duration::from_secs),
            hw_watchdog: path(o, "hw-watchdog", self.hw_watchdog, None)?,
            prom_addr: self.prom_addr,
            prom_token_file: path(o, "prom-token-file", self.prom_token_file, None)?,
            prom_rate_limit_per_sec: to_u32(num(
                o,
                "prom-rate-limit-per-sec",
                self.prom_rate_limit_per_sec,
                (1, 10_000),
                " requests per second",
            )?),
            prom_rate_limit_burst: to_u32(num(
                o,
                "prom-rate-limit-burst",
                self.prom_rate_limit_burst,
                (0, 10_000),
                " requests (0 disables rate limiting)",
            )?),
            per_agent_metrics_limit: to_u32(num(
                o,
                "per-agent-metrics-limit",
                self.per_agent_metrics_limit,
                (0, super::metrics::MAX_PER_AGENT_METRICS_LIMIT),
                " agents",
            )?),
            udp_port: num(o, "udp-port", self.udp_port, (0, 65_535), "")?
                .map(|n| u16::try_from(n).unwrap_or(u16::MAX)),
            udp_bind_addr: self.udp_bind_addr,
            key_file: path(o, "key-file", self.key_file, None)?,
            accepted_key_file: match self.accepted_key_file {
                Some(list) if list.is_empty() => {
                    return Err(origin.invalid(
                        "accepted-key-file",
                        Shown::Text("[]"),
                        "list at least one key file, or leave the key out",
                    ))
                }
                Some(list) => Some(
                    list.into_iter()
                        .map(|p| {
                            path(o, "accepted-key-file", Some(p), None)
                                .map(Option::unwrap_or_default)
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                None => None,
            },
            master_key_file: path(o, "master-key-file", self.master_key_file, None)?,
            i_accept_plaintext_udp: self.i_accept_plaintext_udp,
            i_accept_secure_udp_non_loopback: self.i_accept_secure_udp_non_loopback,
            secure_udp_recovery: self.secure_udp_i_accept_recovery_on_unauthenticated_transport,
            plaintext_udp_recovery: self
                .plaintext_udp_i_accept_recovery_on_unauthenticated_transport,
            udp_sender_capacity: to_u32(num(
                o,
                "udp-sender-capacity",
                self.udp_sender_capacity,
                (1, super::udp::MAX_UDP_SENDER_CAPACITY),
                " senders",
            )?),
            udp_rcvbuf_bytes: num(
                o,
                "udp-rcvbuf-bytes",
                self.udp_rcvbuf_bytes,
                (0, MAX_RCVBUF_BYTES),
                " bytes (0 keeps the kernel default)",
            )?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            alert,
        })
    }
}

/// `value` in `range` milliseconds, as a duration; the error names `key`.
pub(super) fn ms(
    origin: Origin<'_>,
    key: &str,
    value: Option<u64>,
    range: (u64, u64),
) -> Result<Option<Duration>, ConfigError> {
    Ok(num(origin, key, value, range, " milliseconds")?.map(Duration::from_millis))
}

/// A recovery command template: at least a program, no NUL byte (an
/// argument cannot hold one). Everything else — quotes, `;`, `$(…)` — is a
/// plain byte of some argument, because no shell ever sees it.
pub(crate) fn parse_command(s: &str) -> Result<String, String> {
    if s.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    if s.split_ascii_whitespace().next().is_none() {
        return Err(
            "must name a program to run, e.g. \"/usr/bin/systemctl restart app@{pid}\"".into(),
        );
    }
    crate::placeholders::check_placeholders(s)?;
    Ok(s.to_string())
}

/// `KEY=VALUE` for `--recovery-env`.
pub(crate) fn parse_env(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err("expected KEY=VALUE, e.g. RESTART_MODE=soft".into());
    };
    if key.is_empty() {
        return Err("the variable name before '=' is empty; expected KEY=VALUE".into());
    }
    if s.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    if key.starts_with("VARTA_") {
        return Err(format!(
            "{key} is reserved: the observer sets VARTA_AGENT_PID and VARTA_EVENT itself"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `value` in the inclusive `range`; the error names `key` and says the
/// range with `unit` after it.
pub(super) fn num(
    origin: Origin<'_>,
    key: &str,
    value: Option<u64>,
    (lo, hi): (u64, u64),
    unit: &str,
) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(n) if !(lo..=hi).contains(&n) => {
            let reason = if hi == u64::MAX {
                format!("must be at least {lo}{unit}")
            } else {
                format!("must be between {lo} and {hi}{unit}")
            };
            Err(origin.invalid(key, Shown::Num(n), &reason))
        }
        _ => Ok(value),
    }
}

/// `value` through `parse`; the error names `key` and quotes the value.
pub(super) fn text<T>(
    origin: Origin<'_>,
    key: &str,
    value: Option<String>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    value
        .map(|s| parse(&s).map_err(|reason| origin.invalid(key, Shown::Text(&s), &reason)))
        .transpose()
}

fn path(
    origin: Origin<'_>,
    key: &str,
    value: Option<PathBuf>,
    max: Option<usize>,
) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(p) = &value {
        check_path(p, max)
            .map_err(|reason| origin.invalid(key, Shown::Text(&p.to_string_lossy()), &reason))?;
    }
    Ok(value)
}

fn check_path(p: &Path, max: Option<usize>) -> Result<(), String> {
    let len = p.as_os_str().len();
    if len == 0 {
        return Err("must not be empty".into());
    }
    if p.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("must not contain a NUL byte".into());
    }
    match max {
        Some(max) if len > max => Err(format!(
            "is {len} bytes long; a Unix socket path must be between 1 and {max} bytes"
        )),
        _ => Ok(()),
    }
}

/// Parses `600`, `0600` or `0o600` as octal permission bits.
pub(crate) fn parse_socket_mode(s: &str) -> Result<u32, String> {
    let digits = s
        .strip_prefix("0o")
        .or_else(|| s.strip_prefix("0O"))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err("expected octal digits (e.g. 600, 0600 or 0o600) between 0 and 0777".into());
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= MAX_SOCKET_MODE => Ok(mode),
        _ => Err(
            "must be between 0 and 0777 (octal); setuid, setgid and sticky bits are not allowed"
                .into(),
        ),
    }
}

/// Parses a `--clock-source` value.
pub(crate) fn parse_clock_source(s: &str) -> Result<ClockSource, String> {
    match s {
        "monotonic" => Ok(ClockSource::Monotonic),
        "boottime" => Ok(ClockSource::Boottime),
        "monotonic-raw" => Err("monotonic-raw is only supported on macOS/iOS; on Linux use boottime \
             (CLOCK_BOOTTIME) to keep counting through suspend; expected one of: monotonic, boottime"
            .into()),
        _ => Err("expected one of: monotonic, boottime".into()),
    }
}

/// Parses a `--tracker-eviction-policy` value.
pub(crate) fn parse_eviction_policy(s: &str) -> Result<EvictionPolicy, String> {
    match s {
        "strict" => Ok(EvictionPolicy::Strict),
        "balanced" => Ok(EvictionPolicy::Balanced),
        _ => Err("expected one of: strict, balanced".into()),
    }
}

/// Parses an `--export-format` value.
pub(crate) fn parse_export_format(s: &str) -> Result<ExportFormat, String> {
    match s {
        "tsv" => Ok(ExportFormat::Tsv),
        "json" => Ok(ExportFormat::Json),
        _ => Err("expected one of: tsv, json".into()),
    }
}

/// Parses a `--log-format` value.
pub(crate) fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected one of: text, json".into()),
    }
}

/// Value names as written on the command line, for diffs and warnings.
pub(crate) fn clock_source_name(c: ClockSource) -> &'static str {
    match c {
        ClockSource::Monotonic => "monotonic",
        ClockSource::Boottime => "boottime",
    }
}

/// See [`clock_source_name`].
pub(crate) fn eviction_policy_name(p: EvictionPolicy) -> &'static str {
    match p {
        EvictionPolicy::Strict => "strict",
        EvictionPolicy::Balanced => "balanced",
    }
}

/// See [`clock_source_name`].
pub(crate) fn export_format_name(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Tsv => "tsv",
        ExportFormat::Json => "json",
    }
}

/// See [`clock_source_name`].
pub(crate) fn log_format_name(f: LogFormat) -> &'static str {
    match f {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    }
}
