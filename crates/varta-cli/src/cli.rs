//! The top-level command line: one variant per subcommand group, and the
//! exit-status convention every subcommand follows.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{audit, keygen};

/// Exit status: the check passed / the command succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status: the check ran and found a problem.
pub const EXIT_FAIL: u8 = 1;
/// Exit status: the input could not be read or the arguments are unusable
/// (clap's own usage errors use 2 as well).
pub const EXIT_UNUSABLE: u8 = 2;

/// Operator tools for Varta, the process-liveness watchdog.
///
/// Exit status: 0 success, 1 a check failed or the command could not be
/// done, 2 unreadable input or bad usage.
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

    /// Write a new random key file for the observer's key and token
    /// options.
    ///
    /// Writes 32 bytes from the operating system's random source as 64
    /// lowercase hex characters and a newline to PATH, created with mode
    /// 0600 (your umask can only narrow it) and owned by you: the form
    /// varta-watch's --key-file, --master-key-file, --prom-token-file and
    /// --recovery-audit-key-file read (and `varta audit verify --key-file`).
    /// --accepted-key-file takes one key per line: create it with `varta
    /// keygen FILE`, then append further keys with `varta keygen - >> FILE`.
    ///
    /// The key is never printed, except with PATH `-`, which writes it to
    /// standard output (and nowhere else) for appending or piping. An
    /// existing PATH is left alone unless --force; a symlink at PATH is
    /// refused even with --force.
    ///
    /// Exit status: 0 the key was written; 1 it was not (one line on stderr
    /// says why).
    #[command(
        after_help = "Examples:\n  varta keygen /etc/varta/audit.key          # for --recovery-audit-key-file\n  varta keygen --force /etc/varta/prom.token  # rotate the /metrics token\n  varta keygen - >> /etc/varta/accepted.keys  # one more key for --accepted-key-file"
    )]
    Keygen(keygen::KeygenArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Audit(cmd) => audit::run(cmd),
        Command::Keygen(args) => keygen::run(args),
    };
    ExitCode::from(code)
}

/// Prints a one-line error for unusable input (exit 2).
pub fn unusable(msg: impl std::fmt::Display) -> u8 {
    eprintln!("varta: {msg}");
    EXIT_UNUSABLE
}
