//! What watches the loop from outside: the liveness tick, the watchdog
//! thread (systemd pings, self-watchdog, heartbeat file) and systemd's
//! `READY=1`.

use std::sync::Arc;

use super::{os, Daemon, DaemonError, AUTO_SELF_WATCHDOG};
use crate::health;
use crate::health::notify::Notifier;
use crate::health::supervisor::{self, Plan, Supervisor};

impl Daemon {
    /// Sets up everything that watches the loop: the liveness tick, the
    /// watchdog thread (systemd pings and status, self-watchdog, heartbeat
    /// file), then tells systemd we are ready. Returns the thread and the
    /// notifier (for `STOPPING=1`).
    pub(super) fn start_watching(
        &mut self,
    ) -> Result<(Option<Supervisor>, Option<Arc<Notifier>>), DaemonError> {
        let notifier = self.systemd.notifier.take().map(Arc::new);
        let systemd_watchdog = self.systemd.watchdog;
        let self_watchdog = self.config.watchdog.self_watchdog.or_else(|| {
            systemd_watchdog.map(|w| {
                tracing::info!(
                    watchdog_usec = w.as_micros() as u64,
                    "systemd watchdog is on; self-watchdog set to {} s (the self-watchdog-secs setting overrides)",
                    AUTO_SELF_WATCHDOG.as_secs()
                );
                AUTO_SELF_WATCHDOG
            })
        });
        let plan = Plan {
            ping_every: systemd_watchdog
                .filter(|_| notifier.is_some())
                .map(|w| w / 2),
            notifier: notifier.clone(),
            self_watchdog,
            heartbeat: self.config.watchdog.heartbeat_file.clone(),
        };
        let tick = (plan.needs_ticks() || self.pulse.has_hw() || self.want_liveness)
            .then(|| health::tick_for(systemd_watchdog));
        let now = self.now();
        // Before the thread starts: it sizes its alive window on the tick.
        self.pulse.configure(tick, notifier.is_some(), now);
        if let Some(t) = tick {
            tracing::info!(
                tick_ms = t.as_millis() as u64,
                self_watchdog_secs = self_watchdog.map(|d| d.as_secs()),
                heartbeat_file = self
                    .config
                    .watchdog
                    .heartbeat_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                systemd_watchdog_ms = systemd_watchdog.map(|d| d.as_millis() as u64),
                "loop liveness watched"
            );
        }
        let watchdog = if plan.is_empty() {
            None
        } else {
            let tick = tick.unwrap_or(health::DEFAULT_TICK);
            Some(
                Supervisor::start(plan, self.health.clone(), tick)
                    .map_err(os("cannot start the watchdog thread"))?,
            )
        };
        if let Some(n) = &notifier {
            let (live, stalled, exited) = self.tracker.counts();
            let msg = format!(
                "READY=1\n{}",
                supervisor::status_line(live, stalled, exited)
            );
            if let Err(e) = n.send(&msg) {
                tracing::warn!(notify_socket = n.target(), error = %e, "cannot notify systemd that the observer is ready");
            }
        }
        Ok((watchdog, notifier))
    }
}
