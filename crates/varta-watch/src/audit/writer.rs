//! The file side of the audit log: assigning seq and chain in file order,
//! writing, `fdatasync`, truncating back after a failed write, rotation —
//! and the writer thread's loop that drives it.
//!
//! Invariant: the file is always `committed_len` bytes of synced, complete
//! records followed by the lines in `pending` (written or not). Any failure
//! cuts the file back to `committed_len` and rewrites every pending line, so
//! a partial line never survives and a committed record is never touched.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use varta_audit::{
    rotated_path, Agent, BootReason, ChainHash, ChainKey, Record, Schema, GENERATIONS,
};

use super::{AuditCounters, Shared};

/// With `sync_every > 1`, pending records are synced after the queue has
/// been idle this long, so a quiet observer never leaves them unsynced.
const IDLE_SYNC: Duration = Duration::from_millis(100);

/// First retry delay after a failed write; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// Longest wait between retries while the disk stays full.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// One line handed to the file but not yet covered by an `fdatasync`.
struct Pending {
    text: String,
    /// A record (not the header line).
    record: bool,
    /// Submitted through `AuditLog::submit` (not a boot record).
    submitted: bool,
}

/// The open audit file and the chain state.
pub(super) struct Sink {
    pub(super) path: PathBuf,
    file: File,
    key: ChainKey,
    schema: Schema,
    daemon_pid: u32,
    max_bytes: Option<u64>,
    sync_every: usize,
    /// Seq the next record gets.
    next_seq: u64,
    /// Chain of the last record formatted (pending or committed).
    prev: ChainHash,
    /// File length covered by the last successful `fdatasync`.
    committed_len: u64,
    pending: Vec<Pending>,
    /// How many of `pending` are in the file (in order).
    written: usize,
    /// A failed write/sync left bytes past `committed_len` to cut off.
    dirty: bool,
    counters: Arc<AuditCounters>,
    shared: Arc<Shared>,
    fsync_delay: Option<Duration>,
}

/// Where a file starts: what the startup code decided.
pub(super) struct Start {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) key: ChainKey,
    /// Schema of the records (and of the header of a new file).
    pub(super) schema: Schema,
    pub(super) daemon_pid: u32,
    pub(super) max_bytes: Option<u64>,
    pub(super) sync_every: u32,
    /// Seq and chain of the record this file continues, if any.
    pub(super) continues: Option<(u64, ChainHash)>,
    pub(super) needs_header: bool,
}

impl Sink {
    pub(super) fn new(s: Start, counters: Arc<AuditCounters>, shared: Arc<Shared>) -> Sink {
        let (next_seq, prev) = match s.continues {
            Some((seq, chain)) => (seq.saturating_add(1), chain),
            None => (1, varta_audit::ZERO_CHAIN),
        };
        let mut sink = Sink {
            path: s.path,
            file: s.file,
            key: s.key,
            schema: s.schema,
            daemon_pid: s.daemon_pid,
            max_bytes: s.max_bytes,
            sync_every: s.sync_every.max(1) as usize,
            next_seq,
            prev,
            committed_len: s.len,
            pending: Vec::new(),
            written: 0,
            dirty: false,
            counters,
            shared,
            fsync_delay: fsync_delay(),
        };
        if s.needs_header {
            sink.push_header();
        }
        sink
    }

    fn push_header(&mut self) {
        self.pending.push(Pending {
            text: self.schema.header().to_string(),
            record: false,
            submitted: false,
        });
    }

    /// Formats `rec` with the next seq and chain and queues it for writing.
    /// `agent` fills the v3 `name` and `unit` columns (ignored by v2).
    fn push(&mut self, rec: &Record, agent: Option<&Agent>, submitted: bool) {
        let (text, chain) =
            rec.to_line_as(self.next_seq, &self.key, &self.prev, self.schema, agent);
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev = chain;
        self.pending.push(Pending {
            text,
            record: true,
            submitted,
        });
    }

    /// Queues a `boot` record continuing the current chain.
    pub(super) fn push_boot(&mut self, reason: BootReason, continues: bool) {
        let rec = Record::Boot {
            wallclock_ms: varta_audit::wallclock_ms_now(),
            observer_ns: 0,
            daemon_pid: self.daemon_pid,
            prev_chain: continues.then_some(self.prev),
            reason,
        };
        self.push(&rec, None, false);
    }

    /// Writes the pending lines not yet in the file. On failure the file is
    /// marked for cutting back, and every pending line will be rewritten.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.dirty {
            rustix::fs::ftruncate(&self.file, self.committed_len)?;
            self.dirty = false;
        }
        while self.written < self.pending.len() {
            if let Err(e) = self
                .file
                .write_all(self.pending[self.written].text.as_bytes())
            {
                self.cut_back();
                return Err(e);
            }
            self.written += 1;
        }
        Ok(())
    }

    /// After a failure: cut the file back to its committed length at once
    /// (a partial line must not sit in the file while we wait to retry),
    /// and rewrite every pending line next time. If even the truncate
    /// fails, it is retried before the next write.
    fn cut_back(&mut self) {
        self.written = 0;
        self.dirty = rustix::fs::ftruncate(&self.file, self.committed_len).is_err();
    }

    /// Writes and `fdatasync`s everything pending; only then are the
    /// records counted as committed.
    pub(super) fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() && !self.dirty {
            return Ok(());
        }
        self.write_pending()?;
        let started = std::time::Instant::now();
        if let Some(d) = self.fsync_delay {
            std::thread::sleep(d);
        }
        let synced = rustix::fs::fdatasync(&self.file);
        if let Some(o) = self.counters.observations.get() {
            o.observe_audit_fsync(started.elapsed().as_secs_f64());
        }
        if let Err(e) = synced {
            // After a failed fdatasync the kernel may have dropped the dirty
            // pages: the only safe state is to rewrite them.
            self.cut_back();
            return Err(e.into());
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = self.pending.iter().map(|p| p.text.len()).sum();
        self.committed_len += bytes as u64;
        let records = self.pending.iter().filter(|p| p.record).count() as u64;
        let submitted = self.pending.iter().filter(|p| p.submitted).count() as u64;
        self.counters
            .records_committed
            .fetch_add(records, Ordering::Relaxed);
        self.shared
            .submitted_committed
            .fetch_add(submitted, Ordering::Relaxed);
        self.pending.clear();
        self.written = 0;
        Ok(())
    }

    fn rotation_due(&self) -> bool {
        self.pending.is_empty() && self.max_bytes.is_some_and(|m| self.committed_len >= m)
    }

    /// Shifts the generations and renames the live file to `PATH.1`.
    /// Nothing is lost on failure: the current file stays open and in use.
    fn shift_generations(&self) -> io::Result<()> {
        shift_generations(&self.path)
    }

    /// Creates the new live file and queues its header and `rotation` boot.
    fn open_new_generation(&mut self) -> io::Result<()> {
        let fd = rustix::fs::open(
            &self.path,
            OFlags::RDWR
                | OFlags::APPEND
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        self.file = File::from(fd);
        // The new generation gets the lock the old file had (see
        // open::lock). It was just created with O_EXCL, so nobody else can
        // hold it; a failure would only weaken the guard, not the file.
        if let Err(e) = super::open::lock(&self.path, &self.file) {
            tracing::warn!(error = %e, "could not lock the new recovery audit generation");
        }
        self.committed_len = 0;
        self.written = 0;
        self.dirty = false;
        self.push_header();
        self.push_boot(BootReason::Rotation, true);
        Ok(())
    }
}

/// Shifts the generations of `path` (`PATH.4` → `PATH.5` …, the oldest
/// dropped) and renames `path` to `PATH.1`.
pub(super) fn shift_generations(path: &std::path::Path) -> io::Result<()> {
    let ignore_missing = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    ignore_missing(std::fs::remove_file(rotated_path(path, GENERATIONS)))?;
    for n in (1..GENERATIONS).rev() {
        ignore_missing(std::fs::rename(
            rotated_path(path, n),
            rotated_path(path, n + 1),
        ))?;
    }
    std::fs::rename(path, rotated_path(path, 1))
}

/// `fsync` the directory holding `path`, so a create or rename survives a
/// power cut.
pub(super) fn sync_parent(path: &std::path::Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(feature = "test-hooks")]
fn fsync_delay() -> Option<Duration> {
    let ms: u64 = std::env::var("VARTA_TEST_AUDIT_FSYNC_DELAY_MS")
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms))
}

#[cfg(not(feature = "test-hooks"))]
fn fsync_delay() -> Option<Duration> {
    None
}

/// Failure bookkeeping for one outage: warn once when it starts and once
/// when it ends, never once per record or retry.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    attempts: u64,
}

impl Outage {
    fn failed(&mut self, sink: &Sink, what: &str, e: &io::Error) {
        sink.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        self.attempts += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(
                path = %sink.path.display(),
                error = %e,
                "recovery audit {what} failed; records are held in memory and retried until it succeeds (new records are dropped and counted while the queue is full)"
            );
        }
    }

    fn recovered(&mut self, sink: &Sink) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                path = %sink.path.display(),
                failed_attempts = self.attempts,
                outage_ms = since.elapsed().as_millis() as u64,
                "recovery audit writes recovered; no committed record was lost"
            );
            self.attempts = 0;
        }
    }
}

/// The writer thread.
pub(super) struct Writer {
    pub(super) sink: Sink,
    pub(super) rx: Receiver<Queued>,
    outage: Outage,
}

/// A submitted record and, for schema v3, whom it is about.
pub(super) type Queued = (Record, Option<Agent>);

impl Writer {
    pub(super) fn new(sink: Sink, rx: Receiver<Queued>) -> Writer {
        Writer {
            sink,
            rx,
            outage: Outage::default(),
        }
    }

    fn deadline_passed(&self) -> bool {
        self.sink
            .shared
            .deadline()
            .is_some_and(|d| Instant::now() >= d)
    }

    /// Runs `step` until it succeeds, backing off while it fails. Returns
    /// false when the shutdown deadline passed first.
    fn retry(&mut self, what: &str, mut step: impl FnMut(&mut Sink) -> io::Result<()>) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match step(&mut self.sink) {
                Ok(()) => {
                    self.outage.recovered(&self.sink);
                    return true;
                }
                Err(e) => self.outage.failed(&self.sink, what, &e),
            }
            let wait = match self.sink.shared.deadline() {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    left.min(backoff)
                }
                None => backoff,
            };
            // Shutdown unparks us so a deadline is honoured promptly.
            std::thread::park_timeout(wait);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn commit(&mut self) -> bool {
        if !self.retry("write", Sink::commit) {
            return false;
        }
        if self.sink.rotation_due() {
            return self.rotate();
        }
        true
    }

    /// Rotation. A failure before the live file is renamed is only logged
    /// (the current file keeps growing; retried after the next record); once
    /// renamed, the new file must be created before anything else is
    /// written, so that step is retried until it succeeds.
    fn rotate(&mut self) -> bool {
        if let Err(e) = self.sink.shift_generations() {
            self.outage.failed(&self.sink, "rotation", &e);
            return true;
        }
        if !self.retry("rotation", Sink::open_new_generation) {
            return false;
        }
        if !self.retry("write", Sink::commit) {
            return false;
        }
        self.sink.counters.rotations.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sync_parent(&self.sink.path) {
            tracing::debug!(error = %e, "cannot fsync the audit directory after rotation");
        }
        true
    }

    /// The loop: take records in queue order, commit every `sync_every`
    /// (or when the queue goes idle), stop when the log is shut down and
    /// the queue is drained, or when the shutdown deadline passes.
    pub(super) fn run(mut self) {
        if self.sink.rotation_due() && !self.rotate() {
            return;
        }
        loop {
            let next = if self.sink.pending.is_empty() {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.rx.recv_timeout(IDLE_SYNC)
            };
            match next {
                Ok((rec, agent)) => {
                    if self.deadline_passed() {
                        // One last attempt for what is already pending;
                        // the rest of the queue is reported as not written.
                        let _ = self.sink.commit();
                        return;
                    }
                    self.sink.push(&rec, agent.as_ref(), true);
                    let write_now = self.sink.write_pending();
                    if write_now.is_err() || self.sink.pending.len() >= self.sink.sync_every {
                        if let Err(e) = write_now {
                            self.outage.failed(&self.sink, "write", &e);
                        }
                        if !self.commit() {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if !self.commit() {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    return;
                }
            }
        }
    }
}
