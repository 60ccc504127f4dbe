//! # varta-audit — the tamper-evident recovery audit log
//!
//! One library for everything that touches the recovery audit file, so the
//! observer that writes it (`varta-watch`) and the tool that checks it
//! (`varta audit verify`) can never disagree about the format.
//!
//! # Format (byte-compatible with varta-watch 0.2.0, feature `audit-chain`)
//!
//! The file starts with [`HEADER_V2`]. Every further line is one record:
//!
//! ```text
//! seq ⇥ wallclock_ms ⇥ observer_ns ⇥ kind ⇥ …kind columns… ⇥ chain
//! ```
//!
//! | kind | columns after `kind` |
//! |---|---|
//! | `boot` | `daemon_pid prev_chain(hex or -) reason` |
//! | `spawn` | `agent_pid child_pid mode program source template_len` |
//! | `complete` | `agent_pid child_pid outcome exit_code(or -) signal(or -) duration_ns stdout_len stderr_len truncated [excerpt]` |
//! | `refused` | `agent_pid reason` |
//!
//! `chain` is `hex(SHA-256("VARTA-AUDIT-v2" 0x00 kind 0x00 prev_raw32 0x00
//! body))` where `body` is the line from `seq` up to (not including) the tab
//! before `chain`, and `prev_raw32` is the previous record's chain (32 zero
//! bytes for the very first record). With a key ([`ChainKey::Hmac`]) the
//! same input goes through HMAC-SHA256 instead, so someone who edits the file
//! cannot recompute the chain. The `excerpt` column of `complete` is our
//! extension (present only when stdio capture is on).
//!
//! # Unchained records (0.2.0 built without `audit-chain`)
//!
//! That build writes `-` in every `chain` column (and zeros as the
//! `prev_chain` of its `resume` boots). Such a record parses
//! ([`ParsedLine::chained`] is false) but cannot be verified. [`Verifier`]
//! counts them and links each "virtually" — the chain it would have had,
//! starting again at the first record of each file — and a writer that
//! continues such a file puts that value in its `boot` record's
//! `prev_chain`, which seals them: a later edit fails at that boot record
//! ([`Problem::SealMismatch`]). See docs/audit-log.md, *Compatibility*.
//!
//! # Schema v3 (ours, `--recovery-audit-schema v3`)
//!
//! Header [`HEADER_V3`]; `spawn`, `complete` and `refused` records carry
//! two more columns before `chain`: the agent's `name` and `unit` (`-`
//! when it has none), [`sanitize`]d like the other text columns and
//! covered by the chain (same formula). `boot` records are unchanged. The
//! header declares the schema of every record in its file; a rotated chain
//! may cross from one schema to the other at a file boundary, and
//! [`verify_files`] reads each file in its own header's schema.
//!
//! Rotation renames `PATH` → `PATH.1` … keeping [`GENERATIONS`] generations;
//! the new `PATH` starts with the header and a `boot` record of reason
//! `rotation` whose `prev_chain` column is the last chain of `PATH.1`; seq and
//! chain continue across files.
//!
//! # Modules
//!
//! - [`record`]: [`Record`], line formatting and parsing, sanitising.
//! - [`chain`]: [`ChainKey`] and hex helpers.
//! - [`tail`]: bounded probe of an existing file's tail (resume, torn tail:
//!   only an incomplete final line is ever proposed for cutting).
//! - [`verify`]: [`verify_files`] and the streaming [`Verifier`].
//! - [`secret_file`]: permission checks shared by every key/token/command file.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chain;
pub mod record;
pub mod secret_file;
pub mod tail;
pub mod verify;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use chain::{ChainHash, ChainKey, KeyFileError, ZERO_CHAIN};
pub use record::{
    escape_excerpt, parse_line, parse_line_as, sanitize, unescape_excerpt, Agent, BootReason,
    ParseError, ParsedLine, Record, Schema, EXCERPT_MAX,
};
pub use secret_file::{read_secret_file, SecretFileError};
pub use tail::{probe, BadLine, Header, TailProbe, TailRecord};
pub use verify::{
    verify_files, verify_open_file, Failure, Problem, Summary, Verifier, VerifyError,
};

/// First line of every v2 audit file, newline included.
pub const HEADER_V2: &str = "# varta-watch recovery audit v2\n";

/// First line of a schema v3 audit file (v2 plus `name` and `unit` columns
/// on agent records), newline included. Same length as [`HEADER_V2`].
pub const HEADER_V3: &str = "# varta-watch recovery audit v3\n";

/// Start of the first line of a legacy v1 file (records without seq/chain).
pub const HEADER_V1_PREFIX: &str = "# varta-watch recovery audit v1";

/// Rotated generations kept next to the live file (`PATH.1` … `PATH.5`).
pub const GENERATIONS: u32 = 5;

/// `PATH.n`: the name of rotated generation `n` (1 = newest) of `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The rotated generations of `path` that exist, oldest first
/// (`PATH.5` … `PATH.1`), without `path` itself.
pub fn existing_generations(path: &Path) -> Vec<PathBuf> {
    (1..=GENERATIONS)
        .rev()
        .map(|n| rotated_path(path, n))
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect()
}

/// Wall-clock milliseconds since the UNIX epoch (0 if the clock is before it),
/// the `wallclock_ms` column.
pub fn wallclock_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_path_appends_generation() {
        assert_eq!(
            rotated_path(Path::new("/var/log/a.tsv"), 3),
            PathBuf::from("/var/log/a.tsv.3")
        );
    }

    #[test]
    fn existing_generations_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tsv");
        for n in [1, 2, 4] {
            std::fs::write(rotated_path(&p, n), "x").unwrap();
        }
        assert_eq!(
            existing_generations(&p),
            vec![
                rotated_path(&p, 4),
                rotated_path(&p, 2),
                rotated_path(&p, 1)
            ]
        );
    }
}
