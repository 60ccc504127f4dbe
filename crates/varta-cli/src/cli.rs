//! The top-level command line: one variant per subcommand group, and the
//! exit-status convention every subcommand follows.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit;

/// Exit status: the check passed / the command succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status: the check ran and found a problem.
pub const EXIT_FAIL: u8 = 1;
/// Exit status: the input could not be read or the arguments are unusable
/// (clap's own usage errors use 2 as well).
pub const EXIT_UNUSABLE: u8 = 2;

/// Operator tools for Varta, the process-liveness watchdog.
///
/// Exit status: 0 success, 1 a check failed, 2 unreadable input or bad usage.
#[derive(Debug, Parser)]
#[command(name = "varta", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommand groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with the observer's recovery audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Audit(cmd) => audit::run(cmd),
    };
    ExitCode::from(code)
}

/// Prints a one-line error for unusable input (exit 2).
pub fn unusable(msg: impl std::fmt::Display) -> u8 {
    eprintln!("varta: {msg}");
    EXIT_UNUSABLE
}
