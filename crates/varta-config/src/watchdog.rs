//! The observer watching itself: `--heartbeat-file`, `--self-watchdog-secs`
//! and `--hw-watchdog` (flags, the section of [`Config`], its reload diff).
//! All three are restart-only: the heartbeat writer, the watchdog thread and
//! the opened device are set up once at start, and a reload that changes
//! them says so.

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "load")]
use clap::Args;

#[cfg(feature = "load")]
use super::settings::Partial;
#[cfg(feature = "load")]
use super::types::Config;

#[cfg(feature = "load")]
/// `--help` heading of this section.
pub(crate) const H_WATCHDOG: &str = "Watchdogs & systemd";
#[cfg(feature = "load")]
/// Largest `--self-watchdog-secs` (1 h): beyond that nobody is watching.
pub(crate) const MAX_SELF_WATCHDOG_SECS: u64 = 3600;

#[cfg(feature = "load")]
/// The section's flags (flattened into the command line).
#[derive(Args, Debug, Default)]
pub(crate) struct WatchdogFlags {
    /// Rewrite this file with "<loop iterations> <ns since start>" (the
    /// original's format) at most every 100 ms while the event loop is
    /// alive, atomically (temporary file + rename); an external watchdog
    /// alarms when it stops changing. Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_WATCHDOG)]
    pub heartbeat_file: Option<PathBuf>,

    /// Abort the process (core dump, then a restart by systemd) when the
    /// event loop has not completed an iteration for this many seconds.
    /// Default: off, or 4 when systemd sets WATCHDOG_USEC (WatchdogSec=).
    /// Range 1 to 3600.
    #[arg(long, value_name = "SECS", help_heading = H_WATCHDOG)]
    pub self_watchdog_secs: Option<u64>,

    /// Linux watchdog device (e.g. /dev/watchdog0) kicked from the event
    /// loop: its timeout is raised to at least 30 s, and only a clean exit
    /// disarms it (magic close) — a wedged or crashed observer that is not
    /// restarted in time resets the host. Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_WATCHDOG)]
    pub hw_watchdog: Option<PathBuf>,
}

/// The self-watching settings of a [`Config`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// `--heartbeat-file`.
    pub heartbeat_file: Option<PathBuf>,
    /// `--self-watchdog-secs`; `None` is off unless systemd's watchdog is
    /// on, which turns on a 4 s self-watchdog.
    pub self_watchdog: Option<Duration>,
    /// `--hw-watchdog`.
    pub hw_watchdog: Option<PathBuf>,
}

#[cfg(feature = "load")]
/// The section from merged settings (validated already).
pub(super) fn build(merged: &Partial) -> WatchdogConfig {
    WatchdogConfig {
        heartbeat_file: merged.heartbeat_file.clone(),
        self_watchdog: merged.self_watchdog,
        hw_watchdog: merged.hw_watchdog.clone(),
    }
}

#[cfg(feature = "load")]
/// Appends reload-diff lines for this section.
pub(super) fn diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    let (a, b) = (&old.watchdog, &new.watchdog);
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    };
    let secs = |d: &Option<Duration>| d.map_or("none".into(), |d| d.as_secs().to_string());
    for (name, x, y) in [
        (
            "heartbeat-file",
            path(&a.heartbeat_file),
            path(&b.heartbeat_file),
        ),
        (
            "self-watchdog-secs",
            secs(&a.self_watchdog),
            secs(&b.self_watchdog),
        ),
        ("hw-watchdog", path(&a.hw_watchdog), path(&b.hw_watchdog)),
    ] {
        if x != y {
            out.push(format!("{name}: {x} -> {y}"));
        }
    }
}
