//! The one typed configuration the daemon runs on. Built from defaults, an
//! optional TOML file and command-line flags (flags win); re-built on SIGHUP.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Which kernel clock stall accounting uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// `CLOCK_MONOTONIC`: pauses during suspend (a suspended host's agents
    /// are not stalled).
    Monotonic,
    /// `CLOCK_BOOTTIME`: advances through suspend.
    Boottime,
}

/// What to do when the tracker is full and a new pid beats (same meaning as
/// the original 0.2.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Reclaim only exited or stalled slots; otherwise refuse the new pid.
    Strict,
    /// As strict, then fall back to evicting the least recently beating live
    /// agent, so a flood of new pids cannot lock out legitimate ones.
    Balanced,
}

/// Export line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// `observer_ns⇥kind⇥pid⇥nonce⇥status⇥payload`, as the original.
    Tsv,
    /// One JSON object per line with an RFC 3339 wall-clock `time`.
    Json,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Event file export settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// File to append to (a regular file owned by us, never a symlink).
    pub path: PathBuf,
    /// Line format.
    pub format: ExportFormat,
    /// Whether `beat` lines are written (default yes, like the original).
    pub beats: bool,
    /// Rotate when the file would exceed this size (5 generations kept).
    pub max_bytes: Option<u64>,
    /// `fdatasync` every N lines; 0 = never (only flushes).
    pub sync_every: u64,
}

/// Where the recovery command came from (recorded in audit `spawn` records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandSource {
    /// `--recovery-exec` on the command line or in the config file.
    Inline,
    /// `--recovery-exec-file PATH` (re-read on reload).
    File(PathBuf),
}

/// What to run when an agent stalls or exits, and the limits around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// The command template: split on whitespace, placeholders (`{pid}`,
    /// `{name}`, `{unit}`, `{container}`, `{comm}`, `{exe}`) substituted in
    /// every argument, run without a shell. Empty when there is no global
    /// command and only `[[agent]]` rules set `recovery-exec` (recovery
    /// then runs for their agents alone).
    pub template: String,
    /// Where `template` came from.
    pub source: CommandSource,
    /// Minimum time between two spawns for one pid (default 1 s).
    pub debounce: Duration,
    /// Kill a child running longer than this (default: never).
    pub timeout: Option<Duration>,
    /// SIGTERM → SIGKILL delay of the kill ladder (default 2 s).
    pub kill_grace: Duration,
    /// Restart-storm cap: attempts per agent within `window` (default 5).
    pub max_attempts: u32,
    /// Sliding window of the storm cap (default 300 s).
    pub window: Duration,
    /// First backoff between attempts, doubling, capped at 60 s (default 1 s).
    pub backoff: Duration,
    /// Extra `KEY=VALUE` environment for children, in order.
    pub env: Vec<(String, String)>,
    /// Children inherit the observer's whole environment.
    pub inherit_env: bool,
    /// Capture children's stdout and stderr.
    pub capture: bool,
    /// Combined stdout+stderr capture cap in bytes (default 4096).
    pub capture_bytes: u32,
    /// Agents with recovery state (debounce, attempts) at once (default 4096).
    pub table_capacity: u32,
    /// Recovery children running at once (default 1024).
    pub max_children: u32,
    /// The network origin whose agents may be recovered too: set when the
    /// UDP listener's `--…-i-accept-recovery-on-unauthenticated-transport`
    /// opt-in is given; otherwise only kernel-attested agents are.
    pub trusted_network_origin: Option<crate::AgentOrigin>,
    /// The recovery part of every `[[agent]]` rule, by rule index (empty
    /// without rules).
    pub rules: Vec<RuleRecovery>,
}

impl RecoveryConfig {
    /// Whether a global command (`--recovery-exec` or
    /// `--recovery-exec-file`) is set, rather than only rules' commands.
    pub fn has_global_command(&self) -> bool {
        self.template.split_ascii_whitespace().next().is_some()
    }
}

/// What one `[[agent]]` rule says about recovery of the agents it matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleRecovery {
    /// `recovery-exec`: replaces the global command for these agents.
    pub exec: Option<String>,
    /// `recovery = false`: never recover these agents.
    pub disabled: bool,
    /// `recovery-max-attempts`: their storm cap.
    pub max_attempts: Option<u32>,
    /// `recovery-window-ms`: the cap's window.
    pub window: Option<Duration>,
    /// `required = true`: the name whose `missing` this rule recovers.
    pub required_name: Option<String>,
}

impl RuleRecovery {
    /// The recovery part of `rule`.
    pub fn of(rule: &super::rules::Rule) -> RuleRecovery {
        RuleRecovery {
            exec: rule.recovery_exec.clone(),
            disabled: rule.recovery == Some(false),
            max_attempts: rule.recovery_max_attempts,
            window: rule.recovery_window,
            required_name: rule.required_name().map(str::to_string),
        }
    }
}

/// The tamper-evident recovery audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The log file (created 0600).
    pub path: PathBuf,
    /// Rotate above this size, keeping 5 generations.
    pub max_bytes: Option<u64>,
    /// `fdatasync` every N records (default 1: every record).
    pub sync_every: u32,
    /// HMAC-SHA256 key file (64 hex chars); plain SHA-256 chain without it.
    pub key_file: Option<PathBuf>,
    /// `--recovery-audit-schema`: v2 (default, the original's byte for
    /// byte) or v3 (agent `name` and `unit` columns appended).
    pub schema: varta_audit::Schema,
}

/// Complete daemon configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Observer Unix socket path.
    pub socket: PathBuf,
    /// Socket file mode (default 0o600).
    pub socket_mode: u32,
    /// The control API's Unix socket (`--control-socket`); None: off.
    pub control_socket: Option<PathBuf>,
    /// Silence before a stall (default 5 s, minimum 10 ms).
    pub threshold: Duration,
    /// Requested `SO_RCVBUF` (default 4 MiB); 0 leaves the kernel default.
    pub uds_rcvbuf_bytes: usize,
    /// Maximum tracked pids (default 65,536; 1..=4,194,304).
    pub tracker_capacity: u32,
    /// Full-tracker behaviour.
    pub eviction_policy: EvictionPolicy,
    /// Per-pid beats/s (default 100); 0 disables.
    pub max_beat_rate: u32,
    /// Global beats/s (default 0 = off).
    pub global_beat_rate: u32,
    /// Global bucket size (default: equal to the rate).
    pub global_beat_burst: u32,
    /// Clock for stall accounting.
    pub clock_source: ClockSource,
    /// Event file export, if any.
    pub export: Option<ExportConfig>,
    /// Exit cleanly after this uptime (tests, benchmarks).
    pub shutdown_after: Option<Duration>,
    /// Accept agents from other PID namespaces.
    pub allow_cross_namespace_agents: bool,
    /// A cross-namespace agent is fatal (exit 1).
    pub strict_namespace_check: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Recovery command and policy, if any.
    pub recovery: Option<RecoveryConfig>,
    /// Recovery audit log, if any.
    pub audit: Option<AuditConfig>,
    /// How long shutdown waits for recovery children (default 5 s).
    pub shutdown_grace: Duration,
    /// Heartbeat file, self-watchdog and hardware watchdog.
    pub watchdog: super::watchdog::WatchdogConfig,
    /// The Prometheus endpoint, if any.
    pub metrics: Option<super::metrics::MetricsConfig>,
    /// The UDP listener, if any.
    pub udp: Option<super::udp::UdpConfig>,
    /// Alertmanager push, if any.
    pub alertmanager: Option<super::alert::AlertmanagerConfig>,
    /// Per-agent policy rules (`[[agent]]` tables of the config file; none
    /// without a file). Agents no rule matches use the settings above.
    pub rules: super::rules::Rules,
    /// The TOML file this came from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    /// One line per accepted-but-ineffective flag: printed as startup warnings.
    pub warnings: Vec<String>,
    /// The command line this came from (argv[0] included), kept so a reload
    /// re-applies exactly the startup flags over the re-read file.
    pub argv: Vec<OsString>,
}

impl Config {
    /// Defaults for everything, listening on `socket`.
    pub fn with_socket(socket: PathBuf) -> Config {
        Config {
            control_socket: Some(default_control_socket(&socket)),
            socket,
            socket_mode: 0o600,
            threshold: Duration::from_millis(DEFAULT_THRESHOLD_MS),
            uds_rcvbuf_bytes: 4 * 1024 * 1024,
            tracker_capacity: 65_536,
            eviction_policy: EvictionPolicy::Strict,
            max_beat_rate: 100,
            global_beat_rate: 0,
            global_beat_burst: 0,
            clock_source: ClockSource::Monotonic,
            export: None,
            shutdown_after: None,
            allow_cross_namespace_agents: false,
            strict_namespace_check: false,
            log_format: LogFormat::Text,
            recovery: None,
            audit: None,
            shutdown_grace: Duration::from_millis(5000),
            watchdog: Default::default(),
            metrics: None,
            udp: None,
            alertmanager: None,
            rules: Default::default(),
            config_file: None,
            warnings: Vec::new(),
            argv: Vec::new(),
        }
    }
}

/// Default `--control-socket` for beat socket `socket`: its path with the
/// extension `.ctl` (`varta.sock` → `varta.ctl`, so `varta.ctl` beside the
/// default beat socket), unique per beat socket so observers with
/// different sockets never share one.
pub fn default_control_socket(socket: &std::path::Path) -> PathBuf {
    let p = socket.with_extension("ctl");
    if p == socket {
        let mut s = socket.as_os_str().to_owned();
        s.push(".ctl");
        return PathBuf::from(s);
    }
    p
}

/// Largest accepted `--tracker-capacity`.
pub const MAX_TRACKER_CAPACITY: u32 = 4_194_304;
/// Default `--threshold-ms`.
pub const DEFAULT_THRESHOLD_MS: u64 = 5000;
/// Smallest accepted `--threshold-ms`.
pub const MIN_THRESHOLD_MS: u64 = 10;

/// Default `--recovery-debounce-ms`.
pub const DEFAULT_RECOVERY_DEBOUNCE_MS: u64 = 1000;
/// Default `--recovery-kill-grace-ms`.
pub const DEFAULT_RECOVERY_KILL_GRACE_MS: u64 = 2000;
/// Default `--recovery-max-attempts`.
pub const DEFAULT_RECOVERY_MAX_ATTEMPTS: u32 = 5;
/// Default `--recovery-window-ms`.
pub const DEFAULT_RECOVERY_WINDOW_MS: u64 = 300_000;
/// Default `--recovery-backoff-ms`.
pub const DEFAULT_RECOVERY_BACKOFF_MS: u64 = 1000;
/// Longest backoff between two attempts, however often the agent failed.
pub const RECOVERY_BACKOFF_CAP_MS: u64 = 60_000;
/// Default `--recovery-capture-bytes`.
pub const DEFAULT_RECOVERY_CAPTURE_BYTES: u32 = 4096;
/// Default `--recovery-table-capacity` (the original's debounce table size).
pub const DEFAULT_RECOVERY_TABLE_CAPACITY: u32 = 4096;
/// Default `--recovery-max-children`.
pub const DEFAULT_RECOVERY_MAX_CHILDREN: u32 = 1024;
