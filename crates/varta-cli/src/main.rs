//! `varta` — the Varta operator command line.
//!
//! Thin on purpose: parsing lives in [`cli`], each subcommand group in its
//! own module (`audit` and `keygen` today; `status`, `agents`, `frame`,
//! `completions` and `man` slot in next to them).
#![forbid(unsafe_code)]

mod audit;
mod cli;
mod keygen;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
