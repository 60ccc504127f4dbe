//! `varta audit …`: the recovery audit log.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use varta_audit::{existing_generations, verify_files, ChainKey, VerifyError};

use crate::cli::{unusable, EXIT_FAIL, EXIT_OK};

/// `varta audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that audit files are intact: header, record syntax, seq
    /// continuity and the hash chain.
    ///
    /// FILEs are checked as one chain, oldest first. For a rotated log list
    /// the generations oldest first (PATH.5 … PATH.1 PATH), or give PATH
    /// alone with --with-rotated. A file checked without its older
    /// generations is anchored on the prev_chain column of its first boot
    /// record, which the summary says. Like any hash chain it cannot show
    /// records cut off the end: compare the last seq with what you expect.
    ///
    /// Each file is read in the schema its header declares: v2 (the
    /// original's) or v3 (`--recovery-audit-schema v3`: agent name and unit
    /// columns). A chain may change schema from one file to the next (the
    /// observer rotates a file when its schema is switched); the summary
    /// says which schemas it saw when v3 is among them. Records an original
    /// 0.2.0 built without `audit-chain` wrote (chain column `-`) cannot be
    /// verified: the summary counts them as UNCHAINED and says whether the
    /// observer's chain seals them (later edits are then detected).
    ///
    /// Exit status: 0 the chain holds (one summary line); 1 a record does
    /// not verify (names the file, line and seq of the first bad record and
    /// why); 2 a file or the key file cannot be read.
    #[command(
        after_help = "Examples:\n  varta audit verify /var/log/varta/audit.tsv\n  varta audit verify --with-rotated /var/log/varta/audit.tsv\n  varta audit verify --key-file /etc/varta/audit.key audit.tsv.2 audit.tsv.1 audit.tsv"
    )]
    Verify(VerifyArgs),
}

/// Arguments of `varta audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Audit files, oldest first.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The observer's --recovery-audit-key-file (64 hex characters; must be
    /// a regular file owned by you with mode 0600 or stricter). Without it
    /// the file is checked as a plain SHA-256 chain.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// With a single FILE: also check its rotated generations
    /// FILE.5 … FILE.1 that exist, oldest first, before FILE.
    #[arg(long)]
    pub with_rotated: bool,
}

/// Runs an audit subcommand; returns the exit status.
pub fn run(cmd: AuditCommand) -> u8 {
    match cmd {
        AuditCommand::Verify(args) => verify(args),
    }
}

fn verify(args: VerifyArgs) -> u8 {
    let key = match &args.key_file {
        Some(p) => match ChainKey::from_key_file(p) {
            Ok(k) => k,
            Err(e) => return unusable(format!("key file {e}")),
        },
        None => ChainKey::Plain,
    };
    let single = (args.files.len() == 1).then(|| args.files[0].clone());
    let mut files = args.files;
    let mut rotated_note = None;
    if let Some(path) = &single {
        let older = existing_generations(path);
        if args.with_rotated {
            files = older.into_iter().chain([path.clone()]).collect();
        } else if !older.is_empty() {
            rotated_note = Some(format!(
                "note: {} rotated generation(s) of {} exist and were not checked; pass --with-rotated (or list them oldest first: {} {})",
                older.len(),
                path.display(),
                older
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                path.display()
            ));
        }
    } else if args.with_rotated {
        return unusable("--with-rotated takes exactly one FILE (the live file); list the generations yourself to check several");
    }
    let code = match verify_files(&files, &key) {
        Ok(summary) => {
            println!("OK: {summary}; {} chain", key.mode_name());
            EXIT_OK
        }
        Err(VerifyError::Invalid(failure)) => {
            println!("FAIL: {failure}");
            EXIT_FAIL
        }
        Err(e @ VerifyError::Unreadable { .. }) => return unusable(e),
    };
    if let Some(note) = rotated_note {
        eprintln!("{note}");
    }
    code
}
