//! The recovery audit log writer (`--recovery-audit-file`).
//!
//! Format, chain and verification live in the `varta-audit` crate (shared
//! with `varta audit verify`); this module owns the file. The recovery
//! thread calls [`AuditLog::submit`], which never blocks: records go through
//! a bounded queue to a dedicated writer thread that assigns seq and chain
//! in queue order, writes, and `fdatasync`s — so a slow or full disk can
//! delay the audit file but never recovery or detection.
//!
//! Guarantees:
//! - a record counts as committed ([`AuditCounters::records_committed`])
//!   only after `fdatasync`; with `sync_every = 1` (default) every record is
//!   synced before the next one is written;
//! - a failed write (ENOSPC, EFBIG, EIO) is cut back to the last committed
//!   byte, counted, logged once per outage, and retried with back-off until
//!   it succeeds — records wait in the queue meanwhile, and only records
//!   that find the queue full are dropped (counted);
//! - startup repairs a torn tail, resumes seq and chain, and refuses a file
//!   it must not append to (not ours, too open, a symlink, another chain
//!   mode, not an audit file);
//! - rotation at `max_bytes` keeps [`varta_audit::GENERATIONS`] generations,
//!   the new file starting with a `rotation` boot record that carries the
//!   chain on.

mod open;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use std::path::PathBuf;

use crate::config::AuditConfig;
use varta_audit::{Agent, ChainKey, KeyFileError, Record, SecretFileError};

use writer::{Sink, Writer};

/// Default bound of the queue between the recovery thread and the writer.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

/// How the audit log is configured: the file settings as the operator
/// gave them, plus the writer queue bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// `--recovery-audit-file` and its companions.
    pub file: AuditConfig,
    /// Records that may wait for the writer before `submit` drops them.
    pub queue_capacity: usize,
}

/// Audit counters, shared with the metrics export.
#[derive(Debug, Default)]
pub struct AuditCounters {
    /// Where fdatasync times go (`varta_audit_fsync_seconds`); set by the
    /// daemon before the log opens when metrics are served.
    pub observations: std::sync::OnceLock<Arc<crate::export::metrics::Observations>>,
    records_committed: AtomicU64,
    dropped_queue_full: AtomicU64,
    write_errors: AtomicU64,
    fsyncs: AtomicU64,
    rotations: AtomicU64,
    torn_tail_repairs: AtomicU64,
}

impl AuditCounters {
    /// Records (boot records included) written and `fdatasync`ed.
    pub fn records_committed(&self) -> u64 {
        self.records_committed.load(Ordering::Relaxed)
    }
    /// Records refused by [`AuditLog::submit`] because the queue was full.
    pub fn dropped_queue_full(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
    }
    /// Failed write, sync or rotation attempts (each retry counts).
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
    /// Successful `fdatasync` calls.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
    /// Completed rotations.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }
    /// Torn tails cut off at startup.
    pub fn torn_tail_repairs(&self) -> u64 {
        self.torn_tail_repairs.load(Ordering::Relaxed)
    }
}

/// Why the audit log cannot start; the observer refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `sync_every` was 0.
    #[error("recovery-audit-sync-every must be at least 1")]
    SyncEveryZero,
    /// `queue_capacity` was 0.
    #[error("the recovery audit queue capacity must be at least 1")]
    QueueCapacityZero,
    /// The key file is unusable.
    #[error("recovery-audit-key-file {0}")]
    Key(#[source] KeyFileError),
    /// The audit file (or `PATH.1`) fails the ownership/mode/symlink rules.
    #[error("recovery-audit-file {0}")]
    File(#[source] SecretFileError),
    /// An I/O error on the audit file.
    #[error("recovery-audit-file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has some other content.
    #[error("recovery-audit-file {}: not a varta audit file (it does not start with `# varta-watch recovery audit v2` or `v3`); point the option at a new path or move the file aside", .path.display())]
    NotAuditFile {
        /// The file.
        path: PathBuf,
    },
    /// A legacy v1 file (no seq, no chain).
    #[error("recovery-audit-file {}: a legacy v1 audit file (no hash chain); move it aside (e.g. `mv {} {}.v1`) to start a v2 file", .path.display(), .path.display(), .path.display())]
    LegacyV1 {
        /// The file.
        path: PathBuf,
    },
    /// No record to continue from in the last 64 KiB.
    #[error("recovery-audit-file {}: no complete record in its last 64 KiB; check it with `varta audit verify {}` and move it aside to start a new chain", .path.display(), .path.display())]
    NoRecordInTail {
        /// The file.
        path: PathBuf,
    },
    /// The last complete line is not a record. Only an incomplete final
    /// line (a torn write) is ever cut: this one may be a record we cannot
    /// read, so the observer refuses rather than lose it.
    #[error("recovery-audit-file {}: its last complete line (byte offset {offset}{}) is not a record: {error}; the observer never cuts a complete line. Look at it (`tail -n 3 {}`), check the file with `varta audit verify {}`, then repair it or move it aside (e.g. `mv {} {}.old`) to start a new chain", .path.display(), .seq.map(|s| format!(", seq {s}")).unwrap_or_default(), .path.display(), .path.display(), .path.display(), .path.display())]
    UnparseableLastLine {
        /// The file.
        path: PathBuf,
        /// Offset of the line.
        offset: u64,
        /// Its seq column, if readable.
        seq: Option<u64>,
        /// Why it does not parse.
        error: varta_audit::ParseError,
    },
    /// The file ends in unchained records (0.2.0 without `audit-chain`) and
    /// does not read as one sequence, so there is no value to seal them
    /// with.
    #[error("recovery-audit-file {}: its last records carry no hash chain (chain column `-`: written by varta-watch 0.2.0 built without audit-chain); to continue it the observer reads the whole file, which failed: {failure}. Nothing was changed; move it aside (e.g. `mv {} {}.0.2.0`) to start a new chain", .path.display(), .path.display(), .path.display())]
    UnchainedFileDoesNotVerify {
        /// The file (`PATH` or `PATH.1`).
        path: PathBuf,
        /// The verifier's report (file, line, seq, problem).
        failure: String,
    },
    /// Another observer holds the file's lock.
    #[error("recovery-audit-file {}: another varta-watch is writing this file (it holds its lock); two observers must not share an audit file: give each its own path, or stop the other one", .path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// A key is configured but the file has a plain SHA-256 chain.
    #[error("recovery-audit-file {}: the file has a plain SHA-256 chain but recovery-audit-key-file is set; appending HMAC records would break its chain: move it aside (e.g. `mv {} {}.plain`) to start a keyed file, or drop the key file", .path.display(), .path.display(), .path.display())]
    PlainFileWithKey {
        /// The file.
        path: PathBuf,
    },
    /// The last record's chain does not verify in the configured mode.
    #[error("recovery-audit-file {}: its last record (seq {seq}) does not verify with {}", .path.display(), if *.keyed { "this recovery-audit-key-file: it was written with another key, or modified; check it with `varta audit verify --key-file KEY PATH` and move it aside to start a new chain" } else { "a plain SHA-256 chain: it was written with recovery-audit-key-file (pass the same key), or modified (check it with `varta audit verify PATH`)" })]
    TailDoesNotVerify {
        /// The file (`PATH` or `PATH.1`).
        path: PathBuf,
        /// Seq of the last record.
        seq: u64,
        /// A key was configured.
        keyed: bool,
    },
    /// The writer thread could not be started.
    #[error("cannot start the recovery audit writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// State shared by [`AuditLog`] and its writer thread.
#[derive(Debug, Default)]
struct Shared {
    /// Set by [`AuditLog::shutdown`]: the writer gives up at this instant.
    deadline: Mutex<Option<Instant>>,
    /// Records accepted by `submit`.
    accepted: AtomicU64,
    /// Of those, records committed.
    submitted_committed: AtomicU64,
}

impl Shared {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`AuditLog::shutdown`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Records committed over the log's life (boot records included).
    pub committed: u64,
    /// Submitted records that never reached the file (queued or being
    /// retried when the deadline passed).
    pub not_written: u64,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// The writer was still busy at the deadline (e.g. a hung disk) and
    /// was left behind.
    pub timed_out: bool,
}

/// The audit log: owned by the recovery thread.
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<writer::Queued>,
    shared: Arc<Shared>,
    counters: Arc<AuditCounters>,
    thread: JoinHandle<()>,
    done: Receiver<()>,
}

impl AuditLog {
    /// Startup: checks an existing file (owned by us, mode ≤ 0600, not a
    /// symlink; a new file is created 0600 with `O_NOFOLLOW`), reads the key
    /// file, probes the tail, cuts a torn tail, writes the `boot` record
    /// (`fresh`, `resume`, `corrupt_tail`) and `fdatasync`s it before
    /// returning, then starts the writer thread. Errors name the path and
    /// the fix.
    pub fn open(
        s: &AuditSettings,
        daemon_pid: u32,
        counters: Arc<AuditCounters>,
    ) -> Result<AuditLog, AuditError> {
        if s.file.sync_every == 0 {
            return Err(AuditError::SyncEveryZero);
        }
        if s.queue_capacity == 0 {
            return Err(AuditError::QueueCapacityZero);
        }
        let key = match &s.file.key_file {
            Some(k) => ChainKey::from_key_file(k).map_err(AuditError::Key)?,
            None => ChainKey::Plain,
        };
        let opened = open::open(s, daemon_pid, key)?;
        if opened.repaired > 0 {
            counters.torn_tail_repairs.fetch_add(1, Ordering::Relaxed);
            // The cut bytes go to the log, so even an incomplete record
            // leaves a trace.
            tracing::warn!(
                path = %s.file.path.display(),
                bytes = opened.repaired,
                torn = ?String::from_utf8_lossy(&opened.torn_head),
                "recovery audit file ended with an incomplete line (a write torn by a crash or power cut); cut it off and continued the chain"
            );
        }
        if let Some(u) = &opened.unchained {
            let (a, b) = u.unchained_seqs.unwrap_or_default();
            tracing::warn!(
                path = %u.path.display(),
                unchained = u.unchained,
                first_seq = a,
                last_seq = b,
                "recovery audit file has records without a hash chain (chain column `-`: written by varta-watch 0.2.0 built without audit-chain); they are kept as they are and cannot be verified; the chain continues after them and its boot record seals them from now on"
            );
        }
        // `sync_every > 1` is warned about once, by config validation.
        let shared = Arc::new(Shared::default());
        let continues = opened.start.continues.is_some();
        let mut sink = Sink::new(opened.start, counters.clone(), shared.clone());
        sink.push_boot(opened.reason, continues);
        if let Err(source) = sink.commit() {
            return Err(AuditError::Io {
                path: s.file.path.clone(),
                source,
            });
        }
        tracing::info!(
            path = %s.file.path.display(),
            reason = opened.reason.as_str(),
            created = opened.created,
            keyed = s.file.key_file.is_some(),
            "recovery audit log open"
        );
        let (tx, rx) = mpsc::sync_channel(s.queue_capacity);
        let (done_tx, done) = mpsc::channel();
        let writer = Writer::new(sink, rx);
        let thread = std::thread::Builder::new()
            .name("varta-audit".into())
            .spawn(move || {
                writer.run();
                let _ = done_tx.send(());
            })
            .map_err(AuditError::Thread)?;
        Ok(AuditLog {
            tx,
            shared,
            counters,
            thread,
            done,
        })
    }

    /// Queues `rec` for the writer thread, which assigns its seq and chain
    /// in queue order. Never blocks: returns false (and counts a drop) when
    /// the queue is full.
    pub fn submit(&self, rec: Record) -> bool {
        self.submit_for(rec, None)
    }

    /// [`AuditLog::submit`] with the agent the record is about: its name
    /// and unit fill the columns of schema v3 (`unknown` and `-` without
    /// it); schema v2 ignores it.
    pub fn submit_for(&self, rec: Record, agent: Option<Agent>) -> bool {
        match self.tx.try_send((rec, agent)) {
            Ok(()) => {
                self.shared.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let n = self
                    .counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                // Logarithmic: the 1st, 2nd, 4th, 8th… drop — never a flood.
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped_total = n,
                        "recovery audit queue full (the disk is slow or failing); record dropped"
                    );
                }
                false
            }
        }
    }

    /// Writes every queued record, `fdatasync`s and stops the writer,
    /// giving up at `deadline` (a full or hung disk); reports what was not
    /// written.
    pub fn shutdown(self, deadline: Instant) -> ShutdownReport {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(deadline);
        drop(self.tx);
        self.thread.thread().unpark();
        let wait = deadline.saturating_duration_since(Instant::now());
        // The writer checks the deadline itself; the extra second covers
        // one write or fdatasync in flight when it passes.
        let finished = match self
            .done
            .recv_timeout(wait + std::time::Duration::from_secs(1))
        {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        };
        let accepted = self.shared.accepted.load(Ordering::Relaxed);
        let done = self.shared.submitted_committed.load(Ordering::Relaxed);
        let report = ShutdownReport {
            committed: self.counters.records_committed(),
            not_written: accepted.saturating_sub(done),
            dropped: self.counters.dropped_queue_full(),
            timed_out: !finished,
        };
        if report.not_written > 0 || report.timed_out {
            tracing::error!(
                not_written = report.not_written,
                timed_out = report.timed_out,
                "recovery audit log closed with records not written"
            );
        }
        report
    }
}
