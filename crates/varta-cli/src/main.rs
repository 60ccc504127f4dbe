//! `varta` — the Varta operator command line.
//!
//! Thin on purpose: parsing lives in [`cli`], each subcommand group in its
//! own module; [`client`] talks to the observer's control API
//! (docs/api.md) and [`ui`] holds the shared terminal output.
#![forbid(unsafe_code)]

mod agents;
mod api;
mod audit;
mod cli;
mod client;
mod events;
mod frame;
mod gen;
mod keygen;
mod reload;
mod status;
mod ui;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
