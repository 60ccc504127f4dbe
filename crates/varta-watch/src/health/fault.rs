//! Fault injection for the watchdog tests (feature `fault-injection`,
//! never in a release build): `VARTA_FAULT_WEDGE_AFTER=N` wedges the event
//! loop for good after N iterations, while every other thread keeps
//! running — the failure SIGSTOP cannot simulate, since it stops them all.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable read once at the first iteration.
pub const WEDGE_AFTER_ENV: &str = "VARTA_FAULT_WEDGE_AFTER";

/// Called by the loop after each iteration with the iteration count.
pub(crate) fn maybe_wedge(iterations: u64) {
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    let after = *AFTER.get_or_init(|| {
        std::env::var(WEDGE_AFTER_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if after.is_some_and(|n| iterations >= n) {
        tracing::warn!(iterations, "fault injection: wedging the event loop");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
