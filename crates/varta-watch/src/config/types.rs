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

/// Complete daemon configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Observer Unix socket path.
    pub socket: PathBuf,
    /// Socket file mode (default 0o600).
    pub socket_mode: u32,
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
            socket,
            socket_mode: 0o600,
            threshold: Duration::from_millis(5000),
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
            config_file: None,
            warnings: Vec::new(),
            argv: Vec::new(),
        }
    }
}

/// Largest accepted `--tracker-capacity`.
pub const MAX_TRACKER_CAPACITY: u32 = 4_194_304;
/// Smallest accepted `--threshold-ms`.
pub const MIN_THRESHOLD_MS: u64 = 10;
