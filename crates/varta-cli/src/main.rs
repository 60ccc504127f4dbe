//! `varta` — the Varta operator command line.
//!
//! Thin on purpose: parsing lives in [`cli`], each subcommand group in its
//! own module (`audit` today; `status`, `agents`, `frame`, `keygen`,
//! `completions` and `man` slot in next to it).
#![forbid(unsafe_code)]

mod audit;
mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
