//! Configuration: typed [`Config`], command-line flags, TOML file, and
//! validation with messages that name the flag, the value and the range.
//!
//! Per-agent policy rules (`[[agent]]` tables, file only) are in [`rules`].
//!
//! Entry points: [`load`] at startup, [`reload`] on SIGHUP, [`diff`] to log
//! what a reload changed.

mod alert;
mod cli;
mod error;
mod file;
mod load;
mod matcher;
mod metrics;
mod recovery;
pub mod rules;
mod settings;
mod types;
mod udp;
mod watchdog;

#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod tests;

pub use alert::{
    read_auth as read_alert_auth, AlertAuth, AlertmanagerConfig, DEFAULT_ALERT_RESEND_MS,
    DEFAULT_ALERT_TIMEOUT_MS,
};
pub use error::ConfigError;
pub use load::{diff, load, reload, Loaded};
pub use metrics::{read_token, MetricsConfig, DEFAULT_PER_AGENT_METRICS_LIMIT};
pub use rules::{AgentFacts, Cidr, Matcher, Pattern, Rule, Rules};
pub use types::*;
pub use udp::{
    KeyFiles, UdpConfig, UdpSecurity, DEFAULT_UDP_RCVBUF_BYTES, DEFAULT_UDP_SENDER_CAPACITY,
};
pub use watchdog::WatchdogConfig;
