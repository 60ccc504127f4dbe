//! Startup: opening (or creating) the audit file under the secret-file
//! rules, probing its tail, repairing a torn tail, refusing files we must
//! not append to, and deciding where seq and chain continue from.

use std::fs::File;
use std::path::Path;

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use std::path::PathBuf;
use varta_audit::secret_file::{check_metadata, open_error, open_secret_file};
use varta_audit::{
    probe, rotated_path, verify_open_file, BootReason, ChainHash, ChainKey, Header, TailRecord,
    VerifyError,
};

use super::writer::{shift_generations, sync_parent, Start};
use super::{AuditError, AuditSettings};

/// What startup decided, besides the [`Start`] for the sink.
pub(super) struct Opened {
    pub(super) start: Start,
    pub(super) reason: BootReason,
    /// Bytes cut off a torn tail (0: none).
    pub(super) repaired: u64,
    /// The first bytes of what was cut.
    pub(super) torn_head: Vec<u8>,
    pub(super) created: bool,
    /// The file continued ends in records without a chain (0.2.0 built
    /// without `audit-chain`).
    pub(super) unchained: Option<Unchained>,
}

/// Unchained records found in the file continued (for the startup log).
pub(super) struct Unchained {
    pub(super) path: PathBuf,
    pub(super) unchained: u64,
    pub(super) unchained_seqs: Option<(u64, u64)>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the advisory lock that keeps a second observer of ours off the
/// file: two writers would interleave seq and chain, and each would take
/// the other's record in progress for a torn tail (and cut it) or cut the
/// other's records when cutting back a failed write. Held as long as the
/// file is open (the writer thread owns it).
pub(super) fn lock(path: &Path, file: &File) -> Result<(), AuditError> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(Errno::WOULDBLOCK) => Err(AuditError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path)(e.into())),
    }
}

/// Opens the existing file (checked: ours, ≤ 0600, not a symlink) or
/// creates it (0600, `O_EXCL|O_NOFOLLOW`), locked ([`lock`]). Returns the
/// file and whether it was created.
fn open_or_create(path: &Path) -> Result<(File, bool), AuditError> {
    let (file, created) = open_or_create_unlocked(path)?;
    lock(path, &file)?;
    Ok((file, created))
}

fn open_or_create_unlocked(path: &Path) -> Result<(File, bool), AuditError> {
    let base = OFlags::RDWR | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // O_NONBLOCK so a FIFO planted at the path cannot block the open; the
    // type check refuses it right after.
    match rustix::fs::open(path, base | OFlags::NONBLOCK, Mode::empty()) {
        Ok(fd) => {
            let file = File::from(fd);
            let m = file.metadata().map_err(io_err(path))?;
            check_metadata(path, &m).map_err(AuditError::File)?;
            rustix::fs::fcntl_setfl(&file, OFlags::APPEND).map_err(|e| io_err(path)(e.into()))?;
            Ok((file, false))
        }
        Err(Errno::NOENT) => {
            let fd = rustix::fs::open(
                path,
                base | OFlags::CREATE | OFlags::EXCL,
                Mode::RUSR | Mode::WUSR,
            )
            .map_err(|e| AuditError::File(open_error(path, e)))?;
            Ok((File::from(fd), true))
        }
        Err(e) => Err(AuditError::File(open_error(path, e))),
    }
}

/// Refuses to continue a chain whose last link does not verify with the
/// configured key: appending would make the file unverifiable in any mode.
fn check_link(path: &Path, last: &TailRecord, key: &ChainKey) -> Result<(), AuditError> {
    if last.link_verifies(key) != Some(false) {
        return Ok(());
    }
    if key.is_keyed() && last.link_verifies(&ChainKey::Plain) == Some(true) {
        return Err(AuditError::PlainFileWithKey {
            path: path.to_path_buf(),
        });
    }
    Err(AuditError::TailDoesNotVerify {
        path: path.to_path_buf(),
        seq: last.line.seq,
        keyed: key.is_keyed(),
    })
}

/// Seq and chain to continue `path` from, its last record being `last`.
///
/// A chained record: its own chain, once its link verifies with `key`. An
/// unchained one (`-`, 0.2.0 without `audit-chain`): the whole file is read
/// to compute the chain the records would have had, which the new boot
/// record's `prev_chain` carries — so the old records are kept byte for
/// byte and sealed from now on. The scan reads the file once; after the
/// boot record the tail is chained and later starts read only the window.
fn continuation(
    path: &Path,
    file: &File,
    last: &TailRecord,
    key: &ChainKey,
    unchained: &mut Option<Unchained>,
) -> Result<(u64, ChainHash), AuditError> {
    if last.line.chained {
        check_link(path, last, key)?;
        return Ok((last.line.seq, last.line.chain));
    }
    let summary = verify_open_file(file, last.end, path, key).map_err(|e| match e {
        VerifyError::Unreadable { source, .. } => io_err(path)(source),
        VerifyError::Invalid(f) => AuditError::UnchainedFileDoesNotVerify {
            path: path.to_path_buf(),
            failure: f.to_string(),
        },
    })?;
    let chain = match (summary.last_seq, summary.last_chain) {
        (Some(seq), Some(chain)) if seq == last.line.seq => chain,
        // The window and the scan disagree: the file changed under us.
        _ => {
            return Err(AuditError::UnchainedFileDoesNotVerify {
                path: path.to_path_buf(),
                failure: format!(
                    "the full read ended at seq {:?}, the tail at seq {}",
                    summary.last_seq, last.line.seq
                ),
            })
        }
    };
    *unchained = Some(Unchained {
        path: path.to_path_buf(),
        unchained: summary.unchained,
        unchained_seqs: summary.unchained_seqs,
    });
    Ok((last.line.seq, chain))
}

/// The last record of `PATH.1`, to continue from when the live file has no
/// record (a crash between rotation's rename and the new file's boot
/// record, or an operator who removed the live file).
fn previous_generation(
    path: &Path,
    key: &ChainKey,
    unchained: &mut Option<Unchained>,
) -> Result<Option<(u64, ChainHash)>, AuditError> {
    let prev = rotated_path(path, 1);
    if std::fs::symlink_metadata(&prev).is_err() {
        return Ok(None);
    }
    let file = open_secret_file(&prev).map_err(AuditError::File)?;
    let p = probe(&file).map_err(io_err(&prev))?;
    match p.last {
        Some(last) => continuation(&prev, &file, &last, key, unchained).map(Some),
        None => Ok(None),
    }
}

pub(super) fn open(
    s: &AuditSettings,
    daemon_pid: u32,
    key: ChainKey,
) -> Result<Opened, AuditError> {
    let path = &s.file.path;
    let schema = s.file.schema;
    let (mut file, mut created) = open_or_create(path)?;
    if created {
        // The new directory entry must survive a power cut like the records.
        sync_parent(path).map_err(io_err(path))?;
    }
    let p = probe(&file).map_err(io_err(path))?;
    // Refusals come first: nothing is cut from a file we do not continue.
    match p.header {
        Header::LegacyV1 => {
            return Err(AuditError::LegacyV1 {
                path: path.to_path_buf(),
            })
        }
        Header::Unknown => {
            return Err(AuditError::NotAuditFile {
                path: path.to_path_buf(),
            })
        }
        _ => {}
    }
    if let Some(bad) = p.bad_last.clone() {
        return Err(AuditError::UnparseableLastLine {
            path: path.to_path_buf(),
            offset: bad.offset,
            seq: bad.seq,
            error: bad.error,
        });
    }
    if p.header.schema().is_some() && p.last.is_none() && !p.complete_scan {
        return Err(AuditError::NoRecordInTail {
            path: path.to_path_buf(),
        });
    }
    let mut unchained = None;
    // Where the chain continues, decided (and checked) before anything is
    // cut, so a refusal leaves the file as it was.
    let tail_continues = match &p.last {
        Some(last) => Some(continuation(path, &file, last, &key, &mut unchained)?),
        None => None,
    };
    // Only an incomplete final line (no newline: a torn write) is cut.
    let mut repaired = 0;
    if let Some(to) = p.truncate_to {
        rustix::fs::ftruncate(&file, to).map_err(|e| io_err(path)(e.into()))?;
        rustix::fs::fdatasync(&file).map_err(|e| io_err(path)(e.into()))?;
        repaired = p.len - to;
    }
    let mut len = p.truncate_to.unwrap_or(p.len);
    let (continues, needs_header, reason) = match (p.header, tail_continues) {
        (Header::V2 | Header::V3, Some(continues)) => {
            if p.header.schema() != Some(schema) {
                // One file holds one schema: the file in the other schema
                // becomes PATH.1 and a new file in ours continues its chain
                // (a `rotation` boot), as a size rotation would.
                shift_generations(path).map_err(io_err(path))?;
                (file, created) = open_or_create(path)?;
                sync_parent(path).map_err(io_err(path))?;
                len = 0;
                tracing::info!(
                    path = %path.display(),
                    from = p.header.schema().map_or("?", |s| s.as_str()),
                    to = schema.as_str(),
                    "recovery audit schema changed: the old file was rotated to PATH.1 and the chain continues in a new file"
                );
                (Some(continues), true, BootReason::Rotation)
            } else {
                let reason = if repaired > 0 {
                    BootReason::CorruptTail
                } else {
                    BootReason::Resume
                };
                (Some(continues), false, reason)
            }
        }
        // No record in the file (empty, torn header, header only or a torn
        // line after it): continue PATH.1's chain if there is one.
        (header, _) => {
            let prev = previous_generation(path, &key, &mut unchained)?;
            let reason = match (repaired > 0, &prev) {
                (true, _) => BootReason::CorruptTail,
                (false, Some(_)) => BootReason::Resume,
                (false, None) => BootReason::Fresh,
            };
            if header.schema().is_some_and(|h| h != schema) {
                // A header of the other schema and no record: rewrite it.
                rustix::fs::ftruncate(&file, 0).map_err(|e| io_err(path)(e.into()))?;
                len = 0;
            }
            (prev, header.schema() != Some(schema), reason)
        }
    };
    Ok(Opened {
        start: Start {
            path: path.clone(),
            file,
            len,
            key,
            schema,
            daemon_pid,
            max_bytes: s.file.max_bytes,
            sync_every: s.file.sync_every,
            continues,
            needs_header,
        },
        reason,
        repaired,
        torn_head: p.torn_head,
        created,
        unchained,
    })
}
