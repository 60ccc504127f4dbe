//! Fault injection for the watchdog tests (feature `fault-injection`,
//! never in a release build): `VARTA_FAULT_WEDGE_AFTER=N` wedges the event
//! loop for good after N iterations, while every other thread keeps
//! running — the failure SIGSTOP cannot simulate, since it stops them all.
//! `VARTA_FAULT_WATCHDOG_STOP_AFTER=N` is the opposite fault: the watchdog
//! thread (systemd pings, heartbeat file, self-watchdog) hangs after N
//! rounds while the loop runs on, which only the layers outside the
//! process (systemd's WatchdogSec, a heartbeat reader) can catch.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable read once at the first iteration.
pub const WEDGE_AFTER_ENV: &str = "VARTA_FAULT_WEDGE_AFTER";

/// The environment variable the watchdog thread reads once at its first round.
pub const WATCHDOG_STOP_AFTER_ENV: &str = "VARTA_FAULT_WATCHDOG_STOP_AFTER";

fn read_env(cell: &OnceLock<Option<u64>>, name: &str) -> Option<u64> {
    *cell.get_or_init(|| std::env::var(name).ok().and_then(|v| v.parse().ok()))
}

/// Never returns: the calling thread sleeps for good.
fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Called by the loop after each iteration with the iteration count.
pub(crate) fn maybe_wedge(iterations: u64) {
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    if read_env(&AFTER, WEDGE_AFTER_ENV).is_some_and(|n| iterations >= n) {
        tracing::warn!(iterations, "fault injection: wedging the event loop");
        hang();
    }
}

/// Called by the watchdog thread before each round with the rounds done.
pub(crate) fn maybe_stop_watchdog(rounds: u64) {
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    if read_env(&AFTER, WATCHDOG_STOP_AFTER_ENV).is_some_and(|n| rounds >= n) {
        tracing::warn!(rounds, "fault injection: stopping the watchdog thread");
        hang();
    }
}
