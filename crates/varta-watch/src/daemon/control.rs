//! The loop's side of the control API: start-up (socket, sink, HTTP
//! server when metrics are off) and what a wake-up does for it.

use std::sync::Arc;

use super::{Daemon, DaemonError};
use crate::config::Config;
use crate::control::{ControlApi, ControlLoop, ControlSink, Settings};
use crate::events::EventBus;
use crate::http::{Api, HttpServer, HttpSettings};
use crate::policy::Names;
use crate::recovery::history::RecoveryHistory;

/// The control API, bound but not yet served.
pub(super) struct Prepared {
    pub control: ControlLoop,
    pub api: Arc<dyn Api>,
    pub listener: std::os::unix::net::UnixListener,
}

/// Binds `--control-socket` (if on) and puts the event sink on the bus.
pub(super) fn prepare(
    config: &Config,
    waker: Arc<mio::Waker>,
    names: &Names,
    history: Option<Arc<RecoveryHistory>>,
    bus: &mut EventBus,
) -> Result<Option<Prepared>, DaemonError> {
    let Some(path) = &config.control_socket else {
        return Ok(None);
    };
    let (control, api, listener) = ControlLoop::bind(
        path,
        waker,
        names.registry().clone(),
        history,
        Settings::of(config),
    )
    .map_err(|e| {
        DaemonError::Control(format!(
            "--control-socket {}: {e} (or --control-socket none)",
            path.display()
        ))
    })?;
    api.set_tracker_capacity(config.tracker_capacity);
    bus.add(Box::new(ControlSink::new(
        control.shared().stats.events.clone(),
        names.clone(),
    )));
    let api: Arc<ControlApi> = Arc::new(api);
    Ok(Some(Prepared {
        control,
        api,
        listener,
    }))
}

/// Serves the control socket alone (metrics off): same HTTP stack and
/// thread model, no TCP listener.
pub(super) fn serve_alone(
    p: (Arc<dyn Api>, std::os::unix::net::UnixListener),
) -> Result<HttpServer, DaemonError> {
    let settings = HttpSettings::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    HttpServer::start_full(settings, false, None, Some((p.0, Some(p.1))))
        .map_err(|e| DaemonError::Control(e.to_string()))
}

impl Daemon {
    /// On a wake-up: reloads the API asked for, then one snapshot chunk.
    pub(super) fn serve_control(&mut self, now: u64) {
        let Some(c) = &self.control else {
            return;
        };
        for reply in c.take_reloads() {
            let outcome = self.reload(now);
            let _ = reply.send(outcome);
        }
        let given_up = self.recovery.as_ref().map_or(0, |r| {
            r.stats()
                .given_up
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        let names = self.policy.names();
        let required = self.policy.required_states();
        if let Some(c) = &mut self.control {
            c.step(now, &mut self.tracker, &names, |t| {
                crate::control::loop_side::extras(t, given_up, &required)
            });
        }
    }

    /// After an ingest batch: keeps the control API's snapshot mirror
    /// current once enough agents changed (bounded work, no scan).
    pub(super) fn maintain_control(&mut self) {
        if let Some(c) = &mut self.control {
            let names = self.policy.names();
            c.maintain(&mut self.tracker, &names);
        }
    }

    /// Where the control API listens, if on.
    pub fn control_path(&self) -> Option<&std::path::Path> {
        self.control.as_ref().map(ControlLoop::path)
    }
}

impl Daemon {
    /// Tells `/v1/status` where everything listens (after binding).
    pub(super) fn with_listeners(self) -> Daemon {
        if let Some(c) = &self.control {
            c.shared().set_listeners(crate::control::Listeners {
                socket: Some(self.socket_path().display().to_string()),
                control: Some(c.path().display().to_string()),
                udp: self.udp_addr().map(|(a, _)| a.to_string()),
                metrics: self.metrics_addr().map(|a| a.to_string()),
            });
        }
        self
    }
}
