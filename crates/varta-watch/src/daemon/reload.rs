//! SIGHUP: re-read the configuration (and the UDP key files) and apply
//! what can change without a restart; a bad file keeps what runs.

use super::setup::tracker_settings;
use super::Daemon;
use crate::config::{self, Config};
use crate::ingest::UdsPolicy;

/// What a reload came to (`POST /v1/reload`, SIGHUP, `last_reload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Something changed and was applied.
    Applied {
        /// One line per changed setting (`threshold-ms: 5000 -> 3000`).
        changes: Vec<String>,
        /// Changed settings that only take effect on restart.
        restart_needed: Vec<String>,
    },
    /// The file says what already runs.
    Unchanged,
    /// The new configuration was refused; the old one stays.
    Failed {
        /// Why.
        error: String,
    },
}

impl Daemon {
    /// SIGHUP or `POST /v1/reload`: re-read the config file and re-apply
    /// what can change at runtime (a bad file keeps the old configuration);
    /// the outcome is what the control API shows as `last_reload`.
    pub(super) fn reload(&mut self, now: u64) -> ReloadOutcome {
        let outcome = self.apply_reload(now);
        #[cfg(feature = "http")]
        if let Some(c) = &self.control {
            c.note_reload(&outcome, &self.config);
        }
        outcome
    }

    fn apply_reload(&mut self, now: u64) -> ReloadOutcome {
        let new = match config::reload(&self.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the current configuration (and the current UDP keys)");
                return ReloadOutcome::Failed {
                    error: e.to_string(),
                };
            }
        };
        // Key files are re-read on every SIGHUP: rotating a key changes the
        // file, not the configuration.
        self.reload_udp_keys(&new);
        let changes = config::diff(&self.config, &new);
        if changes.is_empty() {
            tracing::info!("reload: no changes");
            return ReloadOutcome::Unchanged;
        }
        let needs_restart = new.socket != self.config.socket
            || new.socket_mode != self.config.socket_mode
            || new.uds_rcvbuf_bytes != self.config.uds_rcvbuf_bytes
            || new.tracker_capacity != self.config.tracker_capacity
            || new.clock_source != self.config.clock_source
            || new.log_format != self.config.log_format
            || new.recovery.is_some() != self.config.recovery.is_some()
            || new.audit != self.config.audit
            || new.watchdog != self.config.watchdog
            || new.control_socket != self.config.control_socket
            || new.alertmanager != self.config.alertmanager
            || !udp_same_listener(&self.config.udp, &new.udp);
        if needs_restart {
            tracing::warn!("reload: socket, socket-mode, uds-rcvbuf-bytes, tracker-capacity, clock-source, log-format, the audit log, turning recovery on or off, heartbeat-file, self-watchdog-secs, hw-watchdog, the Alertmanager push (targets, instance, resend, timeout, credentials) and the UDP listener's port, address, mode, sender capacity and receive buffer only change on restart; those changes are ignored");
        }
        if new.export != self.config.export {
            match (self.sink_factory)(&new, &self.policy.names()) {
                Ok(sinks) => {
                    self.bus.end_of_batch(now);
                    self.bus.truncate(self.base_sinks);
                    for s in sinks {
                        self.bus.add(s);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload: cannot open the new export; keeping the current configuration");
                    return ReloadOutcome::Failed {
                        error: format!("cannot open the new export: {e}"),
                    };
                }
            }
        }
        let mut applied = new.clone();
        // Restart-only settings keep their running values.
        applied.socket = self.config.socket.clone();
        applied.socket_mode = self.config.socket_mode;
        applied.uds_rcvbuf_bytes = self.config.uds_rcvbuf_bytes;
        applied.tracker_capacity = self.config.tracker_capacity;
        applied.clock_source = self.config.clock_source;
        applied.log_format = self.config.log_format;
        if applied.recovery.is_some() != self.config.recovery.is_some() {
            applied.recovery = self.config.recovery.clone();
        }
        applied.audit = self.config.audit.clone();
        applied.watchdog = self.config.watchdog.clone();
        applied.control_socket = self.config.control_socket.clone();
        applied.alertmanager = self.config.alertmanager.clone();
        if !udp_same_listener(&self.config.udp, &applied.udp) {
            applied.udp = self.config.udp.clone();
        }
        if let (Some(r), Some(cfg)) = (&self.recovery, &applied.recovery) {
            if self.config.recovery.as_ref() != Some(cfg) && !r.reconfigure(cfg) {
                tracing::error!("reload: the recovery thread is busy; the new recovery settings were not applied, try again");
                applied.recovery = self.config.recovery.clone();
            }
        }
        self.tracker
            .reconfigure(tracker_settings(&applied, self.listener.own_pidns()));
        for m in self
            .policy
            .reload(now, &applied, &mut self.tracker, &mut self.bus)
        {
            tracing::info!(change = %m, "reload: agent policy changed");
        }
        self.threshold_ns.store(
            u64::try_from(applied.threshold.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.listener.set_policy(UdsPolicy {
            allow_cross_namespace: applied.allow_cross_namespace_agents,
        });
        if let Some(u) = &mut self.udp {
            u.set_threshold(u64::try_from(applied.threshold.as_nanos()).unwrap_or(u64::MAX));
        }
        self.shutdown_at = applied
            .shutdown_after
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // A shorter threshold may make the next stall earlier than armed.
        self.armed = None;
        for c in &changes {
            tracing::info!(change = %c, "reload applied");
        }
        // What the file asks for and does not run: the restart-only
        // settings (and a refused recovery change), by name.
        let restart_needed = config::diff(&applied, &new)
            .into_iter()
            .map(|l| l.split(':').next().unwrap_or_default().to_string())
            .collect();
        self.config = applied;
        ReloadOutcome::Applied {
            changes,
            restart_needed,
        }
    }

    /// SIGHUP: re-read the running UDP listener's key files (the key-file
    /// paths of `new`, when the listener itself stays). On error the old
    /// keys stay.
    fn reload_udp_keys(&mut self, new: &Config) {
        let (Some(u), Some(cfg)) = (&mut self.udp, &new.udp) else {
            return;
        };
        if !udp_same_listener(&self.config.udp, &new.udp) {
            return;
        }
        match u.reload_keys(&cfg.security) {
            Ok(Some(keys)) => tracing::info!(keys = %keys, "reload: UDP keys re-read"),
            Ok(None) => {}
            Err(e) => tracing::error!(
                error = %e,
                "reload: cannot read the UDP key files; the listener keeps its current keys"
            ),
        }
    }
}

/// Whether two UDP settings describe the same bound listener (what a
/// reload cannot change without a restart); key-file paths and the
/// recovery opt-in may differ.
fn udp_same_listener(a: &Option<config::UdpConfig>, b: &Option<config::UdpConfig>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.addr == b.addr
                && a.mode() == b.mode()
                && a.sender_capacity == b.sender_capacity
                && a.rcvbuf_bytes == b.rcvbuf_bytes
        }
        _ => false,
    }
}
