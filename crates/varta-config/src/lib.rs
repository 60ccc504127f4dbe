//! # varta-config — the observer's configuration
//!
//! The typed [`Config`] `varta-watch` runs on, and — with feature `load` —
//! everything that builds one: command-line flags, the TOML file, and
//! validation with messages that name the flag, the value and the range.
//! Both the daemon and its `baked-config` build script use this crate, so
//! a file baked in at build time is judged by exactly the code that judges
//! `--config` at run time ([`bake`] turns the result into Rust source).
//!
//! Per-agent policy rules (`[[agent]]` tables, file only) are in [`rules`].
//!
//! Entry points: [`load`] at startup, [`reload`] on SIGHUP, [`diff`] to log
//! what a reload changed.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod alert;
#[cfg(feature = "load")]
pub mod bake;
#[cfg(feature = "load")]
mod cli;
mod error;
#[cfg(feature = "load")]
mod file;
pub mod keys;
#[cfg(feature = "load")]
mod load;
mod matcher;
mod metrics;
mod origin;
pub mod placeholders;
#[cfg(feature = "load")]
mod recovery;
pub mod rules;
#[cfg(feature = "load")]
mod settings;
mod types;
mod udp;
mod watchdog;

#[cfg(all(test, feature = "load"))]
mod rules_tests;
#[cfg(all(test, feature = "load"))]
mod tests;

#[cfg(feature = "load")]
pub use alert::read_auth as read_alert_auth;
pub use alert::{AlertAuth, AlertmanagerConfig, DEFAULT_ALERT_RESEND_MS, DEFAULT_ALERT_TIMEOUT_MS};
pub use error::ConfigError;
#[cfg(feature = "load")]
pub use load::{diff, load, reload, Loaded};
#[cfg(feature = "load")]
pub use metrics::read_token_file;
pub use metrics::{parse_token, MetricsConfig, DEFAULT_PER_AGENT_METRICS_LIMIT};
pub use origin::AgentOrigin;
pub use rules::{AgentFacts, Cidr, Matcher, Pattern, Rule, Rules};
pub use types::*;
pub use udp::{
    KeyFiles, UdpConfig, UdpSecurity, DEFAULT_UDP_RCVBUF_BYTES, DEFAULT_UDP_SENDER_CAPACITY,
};
pub use watchdog::WatchdogConfig;
