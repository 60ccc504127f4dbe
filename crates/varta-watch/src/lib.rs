//! # varta-watch — the Varta observer
//!
//! Receives VLP heartbeats, tracks every agent, raises `stall` when one goes
//! silent and `exit` when one sends its dying gasp, and streams every
//! happening to sinks (file export today; recovery, audit and metrics plug
//! in the same way).
//!
//! Layout: [`config`] (flags, TOML, validation), [`ingest`] (sockets and
//! kernel attestation), [`tracker`] (agent state, nonce rules, deadlines),
//! [`events`] (the one event stream), [`export`] (sinks), [`identity`]
//! (what an agent is: unit, container, name), [`health`] (the
//! loop's liveness: systemd, watchdogs, heartbeat file), [`daemon`] (the
//! event loop that ties them together).
#![deny(unsafe_code)]
#![warn(missing_docs)]

// The safety profile removes the argv parser, the TOML parser, every HTTP
// server and client: a build that asks for both is a mistake, said loudly.
#[cfg(all(feature = "baked-config", feature = "runtime-config"))]
compile_error!("feature `baked-config` cannot be combined with `runtime-config` (the command line and TOML parser): build with --no-default-features --features baked-config");
#[cfg(all(feature = "baked-config", feature = "http"))]
compile_error!("feature `baked-config` cannot be combined with `http` (the /metrics endpoint and control API server): build with --no-default-features --features baked-config");
#[cfg(all(feature = "baked-config", feature = "alerting"))]
compile_error!("feature `baked-config` cannot be combined with `alerting` (the Alertmanager HTTP client): build with --no-default-features --features baked-config");

#[cfg(feature = "alerting")]
pub mod alert;
pub mod audit;
pub mod clock;
pub mod config;
#[cfg(feature = "http")]
pub mod control;
pub mod daemon;
pub mod events;
pub mod export;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod identity;
pub mod ingest;
pub mod policy;
pub mod recovery;
pub mod tracker;
