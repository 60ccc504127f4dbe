//! Command-line flags. Long names match the original varta-watch 0.2.0 so
//! existing unit files keep working; flags we cannot honour yet are still
//! accepted (see [`COMPAT`]) and turned into startup warnings.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};

use super::error::ConfigError;
use super::settings::RawSettings;

pub(crate) const H_LISTENER: &str = "Listener";
pub(crate) const H_DETECTION: &str = "Detection";
pub(crate) const H_TRACKER: &str = "Tracker & rate limits";
pub(crate) const H_EXPORT: &str = "Export";
pub(crate) const H_RECOVERY: &str = "Recovery";
pub(crate) const H_AUDIT: &str = "Recovery audit log";
pub(crate) const H_LIFECYCLE: &str = "Logging & lifecycle";
pub(crate) const H_NO_EFFECT: &str = "Compatibility (no effect in this design)";
pub(crate) const H_LATER: &str = "Compatibility (accepted, not yet active)";

/// Flags this build implements. Numbers are parsed as `u64` and enums as
/// strings on purpose: range and meaning are checked later by the same code
/// that checks config-file values, so both report errors the same way.
#[derive(Parser, Debug)]
#[command(
    name = "varta-watch",
    version,
    about = "Varta observer: receives VLP heartbeats, detects stalled and exited agents, exports events.",
    // The original's hand-written parser let a repeated flag win; keep that
    // instead of clap's "cannot be used multiple times".
    args_override_self = true,
    disable_help_flag = true,
    disable_version_flag = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// Unix datagram socket agents send beats to. At most 107 bytes. Default:
    /// $XDG_RUNTIME_DIR/varta.sock; /run/varta/varta.sock when run as root;
    /// /tmp/varta-UID/varta.sock without XDG_RUNTIME_DIR.
    #[arg(long, value_name = "PATH", help_heading = H_LISTENER)]
    socket: Option<PathBuf>,

    /// Permissions of the socket file, in octal: 600, 0600 or 0o600.
    /// Default 0600 (owner only). Range 0 to 0777.
    #[arg(long, value_name = "OCTAL", help_heading = H_LISTENER)]
    socket_mode: Option<String>,

    /// Unix stream socket of the control API (HTTP/1.1 + JSON: status,
    /// agents, events, reload; docs/api.md), created mode 0600. At most 107
    /// bytes; `none` turns it off. Default: the beat socket's path with the
    /// extension .ctl (varta.ctl beside the default beat socket).
    #[arg(long, value_name = "PATH|none", help_heading = H_LISTENER)]
    control_socket: Option<PathBuf>,

    /// SO_RCVBUF requested for the socket, in bytes (the kernel doubles it and
    /// caps it at net.core.rmem_max). Default 4194304 (4 MiB). Range 0 to
    /// 1073741824 (1 GiB); 0 keeps the kernel default.
    #[arg(long, value_name = "N", help_heading = H_LISTENER)]
    uds_rcvbuf_bytes: Option<u64>,

    /// Accept beats from agents in other PID namespaces, whose pids mean
    /// nothing in ours. Default: off (such beats are dropped).
    #[arg(long, help_heading = H_LISTENER)]
    allow_cross_namespace_agents: bool,

    /// Exit with status 1 on a beat from another PID namespace instead of
    /// dropping it. Default: off.
    #[arg(long, help_heading = H_LISTENER)]
    strict_namespace_check: bool,

    /// Silence after which an agent is reported stalled, in milliseconds.
    /// Default 5000. Range 10 to 86400000 (24 h).
    #[arg(long, value_name = "MS", help_heading = H_DETECTION)]
    threshold_ms: Option<u64>,

    /// Clock for stall accounting: monotonic stops while the host is
    /// suspended (a sleeping host's agents are not stalled), boottime keeps
    /// counting through suspend. Default monotonic. The original's
    /// monotonic-raw is macOS-only and rejected here.
    #[arg(
        long,
        value_name = "MODE",
        help_heading = H_DETECTION,
        value_parser = PossibleValuesParser::new([
            PossibleValue::new("monotonic"),
            PossibleValue::new("boottime"),
            // Let it through the parser so validation can explain the
            // platform restriction instead of a bare "invalid value".
            PossibleValue::new("monotonic-raw").hide(true),
        ])
    )]
    clock_source: Option<String>,

    /// Most agents (pids) tracked at once. Default 65536. Range 1 to 4194304.
    #[arg(long, value_name = "N", help_heading = H_TRACKER)]
    tracker_capacity: Option<u64>,

    /// When the tracker is full: strict reclaims only exited or stalled slots
    /// and otherwise drops the new pid; balanced then evicts the least
    /// recently beating live agent. Default strict.
    #[arg(
        long,
        value_name = "POLICY",
        help_heading = H_TRACKER,
        value_parser = PossibleValuesParser::new(["strict", "balanced"])
    )]
    tracker_eviction_policy: Option<String>,

    /// Beats per second accepted from one pid; faster beats are dropped.
    /// Default 100. Range 0 to 1000000; 0 disables the limit.
    #[arg(long, value_name = "N", help_heading = H_TRACKER)]
    max_beat_rate: Option<u64>,

    /// Beats per second accepted across all agents. Default 0 (off). Range 0
    /// to 4294967295.
    #[arg(long, value_name = "N", help_heading = H_TRACKER)]
    global_beat_rate: Option<u64>,

    /// Token-bucket size for --global-beat-rate. Default 0 (same as the
    /// rate). Range 0 to 4294967295.
    #[arg(long, value_name = "N", help_heading = H_TRACKER)]
    global_beat_burst: Option<u64>,

    /// Append one line per event (beat, stall, exit, ...) to this file.
    /// Default: no export.
    #[arg(long, value_name = "PATH", help_heading = H_EXPORT)]
    export_file: Option<PathBuf>,

    /// Export line format: tsv is the original's, json is one object per line
    /// with an RFC 3339 time. Default tsv.
    #[arg(
        long,
        value_name = "FORMAT",
        help_heading = H_EXPORT,
        value_parser = PossibleValuesParser::new(["tsv", "json"])
    )]
    export_format: Option<String>,

    /// Leave beat lines out of the export; stalls, exits and the rest are
    /// still written. Default: beats are exported.
    #[arg(long, help_heading = H_EXPORT)]
    no_export_beats: bool,

    /// Rotate the export before it would exceed N bytes, keeping PATH.1 to
    /// PATH.5. Default: no rotation. Range 4096 to 18446744073709551615.
    /// Requires --export-file.
    #[arg(long, value_name = "N", help_heading = H_EXPORT)]
    export_file_max_bytes: Option<u64>,

    /// fdatasync the export every N lines. Default 0 (lines are flushed but
    /// never synced). Range 0 to 18446744073709551615.
    #[arg(long, value_name = "N", help_heading = H_EXPORT)]
    export_file_sync_every: Option<u64>,

    /// Command run when an agent stalls or sends its dying gasp: split on
    /// whitespace, {pid} replaced in every argument, executed without a
    /// shell (quotes, ; and $ are plain bytes). Example: "/usr/bin/systemctl
    /// restart app@{pid}". Default: none. Conflicts with --recovery-exec-file.
    #[arg(long, value_name = "CMD", help_heading = H_RECOVERY)]
    recovery_exec: Option<String>,

    /// Read the --recovery-exec command from this file (owned by the
    /// observer's user, mode 0600 or stricter, not a symlink). Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_RECOVERY)]
    recovery_exec_file: Option<PathBuf>,

    /// Least time between two recovery spawns for one pid. Default 1000.
    /// Range 0 to 86400000.
    #[arg(long, value_name = "MS", help_heading = H_RECOVERY)]
    recovery_debounce_ms: Option<u64>,

    /// Kill a recovery child (and its process group) that runs longer than
    /// this: SIGTERM, then SIGKILL after --recovery-kill-grace-ms. Default:
    /// no timeout. Range 100 to 86400000.
    #[arg(long, value_name = "MS", help_heading = H_RECOVERY)]
    recovery_timeout_ms: Option<u64>,

    /// Time between SIGTERM and SIGKILL when a recovery child is killed.
    /// Default 2000. Range 10 to 600000.
    #[arg(long, value_name = "MS", help_heading = H_RECOVERY)]
    recovery_kill_grace_ms: Option<u64>,

    /// Restart-storm cap: at most N recovery attempts per agent within
    /// --recovery-window-ms; past it the agent is given_up until it beats
    /// again and the window has room. Default 5. Range 1 to 1000.
    #[arg(long, value_name = "N", help_heading = H_RECOVERY)]
    recovery_max_attempts: Option<u64>,

    /// Sliding window of --recovery-max-attempts. Default 300000 (5 min).
    /// Range 1000 to 604800000.
    #[arg(long, value_name = "MS", help_heading = H_RECOVERY)]
    recovery_window_ms: Option<u64>,

    /// Wait before a repeated attempt for one agent: this, doubling with
    /// every attempt in the window, capped at 60000. Default 1000. Range 0
    /// to 60000.
    #[arg(long, value_name = "MS", help_heading = H_RECOVERY)]
    recovery_backoff_ms: Option<u64>,

    /// Environment variable for recovery children, KEY=VALUE; repeatable.
    /// Children otherwise get only PATH=/usr/bin:/bin, VARTA_AGENT_PID and
    /// VARTA_EVENT (stall or exit). Default: none.
    #[arg(long, value_name = "KEY=VALUE", action = ArgAction::Append, help_heading = H_RECOVERY)]
    recovery_env: Vec<String>,

    /// Recovery children inherit the observer's whole environment (logged
    /// as a warning at startup). Default: off.
    #[arg(long, help_heading = H_RECOVERY)]
    recovery_inherit_env: bool,

    /// Capture recovery children's stdout and stderr; the audit complete
    /// record keeps their lengths and an excerpt. Default: off (both go to
    /// /dev/null).
    #[arg(long, help_heading = H_RECOVERY)]
    recovery_capture_stdio: bool,

    /// Combined stdout+stderr bytes kept per child with
    /// --recovery-capture-stdio; the rest is read and discarded. Default
    /// 4096. Range 1 to 1048576.
    #[arg(long, value_name = "N", help_heading = H_RECOVERY)]
    recovery_capture_bytes: Option<u64>,

    /// Agents with recovery state (debounce, attempt history) at once; when
    /// full, recovery for a new agent is refused (debounce_capacity).
    /// Default 4096. Range 1 to 4194304.
    #[arg(long, value_name = "N", help_heading = H_RECOVERY)]
    recovery_table_capacity: Option<u64>,

    /// Recovery children running at once; when full, recovery is refused
    /// (outstanding_capacity). Default 1024. Range 1 to 65536.
    #[arg(long, value_name = "N", help_heading = H_RECOVERY)]
    recovery_max_children: Option<u64>,

    /// Time shutdown gives running recovery children (SIGTERM, then SIGKILL)
    /// before their complete records are written. Default 5000. Range 100
    /// to 60000.
    #[arg(long, value_name = "MS", help_heading = H_RECOVERY)]
    shutdown_grace_ms: Option<u64>,

    /// Hash-chained TSV audit log of every recovery spawn, completion and
    /// refusal (schema v2 of the original; created 0600). Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_AUDIT)]
    recovery_audit_file: Option<PathBuf>,

    /// Rotate the audit log above N bytes, keeping PATH.1 to PATH.5; the
    /// chain continues across files. Default: no rotation. Range 4096 to
    /// 18446744073709551615.
    #[arg(long, value_name = "N", help_heading = H_AUDIT)]
    recovery_audit_max_bytes: Option<u64>,

    /// fdatasync the audit log every N records. Default 1 (every record is
    /// durable before the next); larger values are warned about. Range 1 to
    /// 1000000.
    #[arg(long, value_name = "N", help_heading = H_AUDIT)]
    recovery_audit_sync_every: Option<u64>,

    /// Chain audit records with HMAC-SHA256 under this key (64 hex chars;
    /// owned by the observer's user, mode 0600 or stricter) so someone who
    /// can edit the log cannot recompute the chain. Default: plain SHA-256.
    #[arg(long, value_name = "PATH", help_heading = H_AUDIT)]
    recovery_audit_key_file: Option<PathBuf>,

    /// Audit file schema: v2 (the original's, byte for byte) or v3 (v2
    /// plus the agent's name and unit columns on spawn, complete and
    /// refused records). A file of the other schema is rotated to PATH.1
    /// and its chain continued in a new file. Default v2.
    #[arg(long, value_name = "v2|v3", help_heading = H_AUDIT)]
    recovery_audit_schema: Option<String>,

    #[command(flatten)]
    watchdog: super::watchdog::WatchdogFlags,

    #[command(flatten)]
    metrics: super::metrics::MetricsFlags,

    #[command(flatten)]
    udp: super::udp::UdpFlags,

    #[command(flatten)]
    alert: super::alert::AlertFlags,

    /// TOML file with the same settings, keyed by these long flag names
    /// without the dashes (snake_case also accepted). Flags override it. It
    /// is re-read on SIGHUP. Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_LIFECYCLE)]
    config: Option<PathBuf>,

    /// Log line format. Default text.
    #[arg(
        long,
        value_name = "FORMAT",
        help_heading = H_LIFECYCLE,
        value_parser = PossibleValuesParser::new(["text", "json"])
    )]
    log_format: Option<String>,

    /// Exit cleanly after this many seconds of uptime (tests, benchmarks).
    /// Default: run until signalled. Range 1 to 315360000 (10 years).
    #[arg(long, value_name = "SECS", help_heading = H_LIFECYCLE)]
    shutdown_after_secs: Option<u64>,
}

impl Cli {
    /// Splits off `--config` and turns the rest into the form the file
    /// also produces. A switch that was not given is "not set here", not
    /// "false", so it does not override a `true` from the file.
    pub(crate) fn into_raw(self) -> (RawSettings, Option<PathBuf>) {
        let switch = |given: bool| given.then_some(true);
        let alert = self.alert.into_raw();
        let raw = RawSettings {
            socket: self.socket,
            socket_mode: self.socket_mode,
            control_socket: self.control_socket,
            uds_rcvbuf_bytes: self.uds_rcvbuf_bytes,
            allow_cross_namespace_agents: switch(self.allow_cross_namespace_agents),
            strict_namespace_check: switch(self.strict_namespace_check),
            threshold_ms: self.threshold_ms,
            clock_source: self.clock_source,
            tracker_capacity: self.tracker_capacity,
            tracker_eviction_policy: self.tracker_eviction_policy,
            max_beat_rate: self.max_beat_rate,
            global_beat_rate: self.global_beat_rate,
            global_beat_burst: self.global_beat_burst,
            export_file: self.export_file,
            export_format: self.export_format,
            no_export_beats: switch(self.no_export_beats),
            export_file_max_bytes: self.export_file_max_bytes,
            export_file_sync_every: self.export_file_sync_every,
            log_format: self.log_format,
            shutdown_after_secs: self.shutdown_after_secs,
            recovery_exec: self.recovery_exec,
            recovery_exec_file: self.recovery_exec_file,
            recovery_debounce_ms: self.recovery_debounce_ms,
            recovery_timeout_ms: self.recovery_timeout_ms,
            recovery_kill_grace_ms: self.recovery_kill_grace_ms,
            recovery_max_attempts: self.recovery_max_attempts,
            recovery_window_ms: self.recovery_window_ms,
            recovery_backoff_ms: self.recovery_backoff_ms,
            recovery_env: (!self.recovery_env.is_empty()).then_some(self.recovery_env),
            recovery_inherit_env: switch(self.recovery_inherit_env),
            recovery_capture_stdio: switch(self.recovery_capture_stdio),
            recovery_capture_bytes: self.recovery_capture_bytes,
            recovery_table_capacity: self.recovery_table_capacity,
            recovery_max_children: self.recovery_max_children,
            recovery_audit_file: self.recovery_audit_file,
            recovery_audit_max_bytes: self.recovery_audit_max_bytes,
            recovery_audit_sync_every: self.recovery_audit_sync_every,
            recovery_audit_key_file: self.recovery_audit_key_file,
            recovery_audit_schema: self.recovery_audit_schema,
            shutdown_grace_ms: self.shutdown_grace_ms,
            heartbeat_file: self.watchdog.heartbeat_file,
            self_watchdog_secs: self.watchdog.self_watchdog_secs,
            hw_watchdog: self.watchdog.hw_watchdog,
            prom_addr: self.metrics.prom_addr,
            prom_token_file: self.metrics.prom_token_file,
            prom_rate_limit_per_sec: self.metrics.prom_rate_limit_per_sec,
            prom_rate_limit_burst: self.metrics.prom_rate_limit_burst,
            per_agent_metrics_limit: self.metrics.per_agent_metrics_limit,
            udp_port: self.udp.udp_port.map(u64::from),
            udp_bind_addr: self.udp.udp_bind_addr,
            key_file: self.udp.key_file,
            accepted_key_file: (!self.udp.accepted_key_file.is_empty())
                .then_some(self.udp.accepted_key_file),
            master_key_file: self.udp.master_key_file,
            i_accept_plaintext_udp: switch(self.udp.i_accept_plaintext_udp),
            i_accept_secure_udp_non_loopback: switch(self.udp.i_accept_secure_udp_non_loopback),
            secure_udp_i_accept_recovery_on_unauthenticated_transport: switch(
                self.udp
                    .secure_udp_i_accept_recovery_on_unauthenticated_transport,
            ),
            plaintext_udp_i_accept_recovery_on_unauthenticated_transport: switch(
                self.udp
                    .plaintext_udp_i_accept_recovery_on_unauthenticated_transport,
            ),
            udp_sender_capacity: self.udp.udp_sender_capacity,
            udp_rcvbuf_bytes: self.udp.udp_rcvbuf_bytes,
            alertmanager_url: alert.urls,
            alert_instance: alert.instance,
            alertmanager_resend_ms: alert.resend_ms,
            alertmanager_timeout_ms: alert.timeout_ms,
            alertmanager_bearer_token_file: alert.bearer_token_file,
            alertmanager_basic_auth_file: alert.basic_auth_file,
        };
        (raw, self.config)
    }
}

/// Value shape of a compatibility flag, as the original parsed it, so a
/// value the original would have rejected is still rejected.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    /// Milliseconds.
    Millis,
    /// A count or size.
    Count,
    /// `direct` or `libc`.
    SignalMode,
}

/// A flag of the original that this build accepts without acting on it.
#[derive(Debug)]
pub(crate) struct CompatFlag {
    /// Long name without dashes; also the config-file key.
    pub name: &'static str,
    /// How the value is parsed.
    pub shape: Shape,
    /// `true`: a later release implements it; `false`: meaningless in the
    /// event-driven design.
    pub later: bool,
    /// Completes the warning sentence after the flag name.
    pub reason: &'static str,
    /// `--help` text.
    pub help: &'static str,
}

impl CompatFlag {
    /// The startup warning for this flag.
    pub(crate) fn warning(&self) -> String {
        format!("--{} {}", self.name, self.reason)
    }

    fn arg(&self) -> Arg {
        let (value_name, parser): (&str, clap::builder::ValueParser) = match self.shape {
            Shape::Millis => ("MS", clap::value_parser!(u64).into()),
            Shape::Count => ("N", clap::value_parser!(u64).into()),
            Shape::SignalMode => ("MODE", PossibleValuesParser::new(["direct", "libc"]).into()),
        };
        let action = ArgAction::Set;
        let arg = Arg::new(self.name)
            .long(self.name)
            .value_name(value_name)
            .value_parser(parser)
            .action(action);
        self.decorate(arg)
    }

    fn decorate(&self, arg: Arg) -> Arg {
        let heading = if self.later { H_LATER } else { H_NO_EFFECT };
        arg.help(self.help).help_heading(heading)
    }
}

/// Every flag of the original 0.2.0 that this build accepts but does not act
/// on. One table drives the parser, `--help`, config-file keys and warnings,
/// so they cannot drift apart.
pub(crate) const COMPAT: &[CompatFlag] = &[
    CompatFlag {
        name: "read-timeout-ms",
        shape: Shape::Millis,
        later: false,
        reason: "has no effect: the observer is event-driven and never polls with a read timeout",
        help: "No effect: the observer is event-driven and never polls with a read timeout. Original: UDS read timeout per poll, default 100",
    },
    CompatFlag {
        name: "eviction-scan-window",
        shape: Shape::Count,
        later: false,
        reason: "has no effect: eviction takes the oldest slot from an ordered list in constant time and never scans",
        help: "No effect: eviction takes the oldest slot from an ordered list in constant time and never scans. Original: slots scanned per eviction, default 256",
    },
    CompatFlag {
        name: "signal-handler-mode",
        shape: Shape::SignalMode,
        later: false,
        reason: "has no effect: signals reach the event loop through signal-hook, not a hand-installed handler",
        help: "No effect: signals reach the event loop through signal-hook, not a hand-installed handler. Original: direct or libc, default direct",
    },
    CompatFlag {
        name: "iteration-budget-ms",
        shape: Shape::Millis,
        later: false,
        reason: "has no effect: the event-driven loop has no fixed poll iteration to budget",
        help: "No effect: the event-driven loop sleeps until a socket, timer or signal is ready and has no fixed iteration to budget. Original: default 250, range 50 to 60000",
    },
    CompatFlag {
        name: "scrape-budget-ms",
        shape: Shape::Millis,
        later: false,
        reason: "has no effect: the event-driven loop has no metrics-serving phase to budget",
        help: "No effect: the event-driven loop has no metrics-serving phase to budget. Original: default 250, range 50 to 60000",
    },
    CompatFlag {
        name: "audit-fsync-budget-ms",
        shape: Shape::Millis,
        later: false,
        reason: "has no effect: audit fsyncs run on their own writer thread and never share a tick with detection, so there is no per-tick budget to set",
        help: "No effect: audit fsyncs run on their own writer thread, never on the detection loop. Original: per-tick fsync budget, default 50",
    },
    CompatFlag {
        name: "audit-rotation-budget-ms",
        shape: Shape::Millis,
        later: false,
        reason: "has no effect: audit rotation runs on the audit writer thread, never on the detection loop, so it needs no per-tick budget",
        help: "No effect: audit rotation runs on the audit writer thread, never on the detection loop. Original: per-tick rotation budget, default 50",
    },
    CompatFlag {
        name: "audit-sync-interval-ms",
        shape: Shape::Millis,
        later: false,
        reason: "has no effect: audit records are fdatasynced by count (--recovery-audit-sync-every, default every record) on the audit writer thread, so a time-based cadence adds nothing",
        help: "No effect: audit records are fdatasynced by count (--recovery-audit-sync-every) on their own writer thread. Original: time-based audit fdatasync cadence, default 0 (off)",
    },
];

/// Looks up a compatibility flag by long name (no dashes).
pub(crate) fn compat(name: &str) -> Option<&'static CompatFlag> {
    COMPAT.iter().find(|f| f.name == name)
}

/// The full parser: the derived flags plus the compatibility table.
pub(crate) fn command() -> clap::Command {
    // Help and version are added by hand only to file them under a heading
    // instead of a lone "Options" group.
    Cli::command()
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Print this help and exit")
                .help_heading(H_LIFECYCLE),
        )
        .arg(
            Arg::new("version")
                .short('V')
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version and exit")
                .help_heading(H_LIFECYCLE),
        )
        .args(COMPAT.iter().map(CompatFlag::arg))
}

/// Outcome of parsing the command line.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Flags to run with, plus the compatibility flags that were given.
    Run(Box<Cli>, Vec<&'static CompatFlag>),
    /// `--help` text.
    Help(String),
    /// `--version` text.
    Version(String),
}

/// Parses `args` (argv[0] included).
pub(crate) fn parse(args: Vec<OsString>) -> Result<Parsed, ConfigError> {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp => Ok(Parsed::Help(text)),
                ErrorKind::DisplayVersion => Ok(Parsed::Version(text)),
                _ => Err(usage(text)),
            };
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| usage(e.render().to_string()))?;
    Ok(Parsed::Run(Box::new(cli), given_compat(&matches)))
}

fn given_compat(matches: &ArgMatches) -> Vec<&'static CompatFlag> {
    COMPAT
        .iter()
        .filter(|f| matches.value_source(f.name) == Some(ValueSource::CommandLine))
        .collect()
}

/// The binary prints `error: ` itself; clap's rendering already starts with
/// it, so drop clap's to avoid `error: error: ...`.
fn usage(rendered: String) -> ConfigError {
    let text = rendered.trim_end();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    ConfigError::Usage(text.to_string())
}
