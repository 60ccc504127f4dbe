//! Sinks of the event stream: counters (for metrics), logs, and the event
//! file.

pub mod counters;
pub mod file;
pub(crate) mod format;
mod limit;
pub mod log;
#[cfg(feature = "http")]
pub mod metrics;

/// Without the HTTP server nothing renders measurements, so nothing takes
/// them: this uninhabited stand-in keeps the `Option<Arc<Observations>>`
/// of recovery and audit typed (always `None`), and its methods are
/// statically unreachable.
#[cfg(not(feature = "http"))]
pub mod metrics {
    /// Loop, recovery and audit measurements (none without `http`).
    #[derive(Debug)]
    pub enum Observations {}

    impl Observations {
        /// See the `http` build's `Observations`.
        pub fn record_recovery_duration(&self, _ns: u64) {
            match *self {}
        }

        /// See the `http` build's `Observations`.
        pub fn record_recovery_table_reclaim(&self) {
            match *self {}
        }

        /// See the `http` build's `Observations`.
        pub fn observe_audit_fsync(&self, _secs: f64) {
            match *self {}
        }
    }
}

use crate::config::Config;
use crate::events::Sink;
use crate::policy::Names;

/// The sinks a configuration asks for beyond the always-on counters and
/// log sink: today the event file. Called at start and again on a reload
/// that changes export settings; `names` gives them agent identities.
pub fn configured_sinks(cfg: &Config, names: &Names) -> Result<Vec<Box<dyn Sink>>, String> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(export) = &cfg.export {
        sinks.push(Box::new(
            file::FileExport::open(export)
                .map_err(|e| e.to_string())?
                .with_names(names.clone()),
        ));
    }
    Ok(sinks)
}
