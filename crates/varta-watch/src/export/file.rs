//! The event file export (`--export-file`): one line per event appended to a
//! file, as TSV (byte-compatible with varta-watch 0.2.0) or JSON.
//!
//! # TSV
//!
//! `observer_ns⇥kind⇥pid⇥nonce⇥status⇥payload`, `-` for absent fields. The
//! 0.2.0 kinds (`beat`, `stall`, `mismatch`, `decode`, `io`, `ctrunc`,
//! `eviction`) are written exactly as 0.2.0 wrote them, so existing parsers
//! keep working; newer kinds keep the same six columns.
//!
//! # JSON
//!
//! One object per line with a fixed set of keys: `time` (wall clock, RFC 3339
//! with nanoseconds), `observer_ns`, `kind` ([`Event::kind`]), `pid`, `nonce`,
//! `status`, `payload` and `detail`, `null` when absent. `detail` is a string:
//! the origin for `beat`/`exit`, the decode-error kind, the reject reason,
//! the OS error text for `io`, and `key=value` pairs (`silent_ns=…`,
//! `kernel_pid=…`, `pinned=… got=…`, `len=…`, `was_live=…`, `back_ns=…`,
//! `forward_ns=…`) where the event carries measurements.
//!
//! # Liveness and durability
//!
//! The file is a live stream (`tail -f` works): a non-beat line is handed to
//! `write(2)` by the end of the batch that raised it; beat lines are batched
//! for at most [`BEAT_FLUSH_NS`]. With `sync_every = N` an `fdatasync` follows
//! every N lines.
//!
//! # Failures
//!
//! The export must never stop detection: write, flush, sync and rotation
//! errors are counted ([`FileExportCounters`]) and logged at most once per 10
//! seconds, never propagated. Lines that could not be written are discarded
//! (memory stays bounded) and counted as `lines_dropped`.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::format::{write_json, write_tsv};
use crate::policy::Names;
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use super::limit::RateLimit;
use crate::config::{ExportConfig, ExportFormat};
use crate::events::{Event, Sink};

/// Bytes buffered before lines are handed to `write(2)` regardless of
/// deadlines: large enough that a beat flood costs few syscalls, small enough
/// to bound memory and what a crash can lose.
const BUF_CAPACITY: usize = 64 * 1024;

/// Longest a beat line may wait in the buffer (observer nanoseconds).
pub const BEAT_FLUSH_NS: u64 = 100_000_000;

/// Rotated generations kept (`PATH.1` … `PATH.5`).
const GENERATIONS: u32 = 5;

/// Minimum spacing of failure warnings: a full disk fails every write, and
/// the log must not become a second flood.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Why the export file cannot be used; the observer refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The path is a symbolic link (refused so that a link planted in a
    /// shared directory cannot redirect our writes).
    #[error("export file {}: is a symlink; point export-file at a regular file", .path.display())]
    Symlink {
        /// The configured path.
        path: PathBuf,
    },
    /// The path is a directory, device, FIFO or socket.
    #[error("export file {}: is a {kind}, not a regular file; point export-file at a regular file", .path.display())]
    NotRegular {
        /// The configured path.
        path: PathBuf,
        /// What it is instead (`directory`, `character device`, …).
        kind: &'static str,
    },
    /// The file belongs to another user.
    #[error("export file {}: is owned by uid {owner}, but the observer runs as uid {euid}; chown it to uid {euid} or point export-file at another path", .path.display())]
    NotOwned {
        /// The configured path.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// The observer's effective uid.
        euid: u32,
    },
    /// Opening or inspecting the file failed.
    #[error("export file {}: cannot open: {source}; check that its directory exists and is writable by the observer", .path.display())]
    Open {
        /// The configured path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Why a rotation did not complete (logged, never fatal).
#[derive(Debug, thiserror::Error)]
enum RotateError {
    #[error("renaming {} to {}: {source}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("reopening after rename: {0}")]
    Reopen(ExportError),
}

/// Export counters, shared with whoever reports metrics (read from any
/// thread; the sink is the only writer).
#[derive(Debug, Default)]
pub struct FileExportCounters {
    lines_written: AtomicU64,
    lines_dropped: AtomicU64,
    write_errors: AtomicU64,
    rotations: AtomicU64,
    rotation_errors: AtomicU64,
    syncs: AtomicU64,
}

impl FileExportCounters {
    /// Current values.
    pub fn snapshot(&self) -> FileExportStats {
        FileExportStats {
            lines_written: self.lines_written.load(Ordering::Relaxed),
            lines_dropped: self.lines_dropped.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            rotations: self.rotations.load(Ordering::Relaxed),
            rotation_errors: self.rotation_errors.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A snapshot of [`FileExportCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileExportStats {
    /// Lines handed to `write(2)` in full.
    pub lines_written: u64,
    /// Lines discarded because writing them failed (or, never expected,
    /// because they could not be formatted).
    pub lines_dropped: u64,
    /// Failed `write(2)`/`fdatasync` calls.
    pub write_errors: u64,
    /// Completed rotations.
    pub rotations: u64,
    /// Rotations that failed (writing continued to the current file).
    pub rotation_errors: u64,
    /// Successful `fdatasync` calls.
    pub syncs: u64,
}

/// The file export sink. See the [module docs](self).
pub struct FileExport {
    path: PathBuf,
    format: ExportFormat,
    beats: bool,
    max_bytes: Option<u64>,
    sync_every: u64,
    file: File,
    /// Lines not yet handed to `write(2)`. Deliberately not a `BufWriter`:
    /// after a failed write its unwritten tail must be discarded (a
    /// `BufWriter` keeps it, retries it, and retries again on drop), and the
    /// number of lines lost must be known.
    buf: Vec<u8>,
    /// Complete lines in `buf`.
    buf_lines: u64,
    /// Scratch space for formatting one line; reused so that exporting
    /// allocates nothing per event.
    line: Vec<u8>,
    /// Size of the current file including `buf`: the rotation trigger.
    file_bytes: u64,
    /// `file_bytes` beyond which the next line rotates first. Pushed further
    /// out after a failed rotation so a stuck rename is not retried (and
    /// generations shifted) on every line.
    rotate_at: u64,
    /// The file ends in a partial line (a write failed midway); the next
    /// line starts with `\n` so it is not glued to the fragment.
    torn: bool,
    lines_since_sync: u64,
    /// `buf` holds a non-beat line: flush at the end of this batch.
    non_beat_pending: bool,
    /// Observer time by which `buf` must be written.
    flush_due_ns: Option<u64>,
    counters: Arc<FileExportCounters>,
    warn: RateLimit,
    /// Time origin for the warning limiter (warnings arise outside
    /// `on_event`, where no observer time is at hand).
    opened: Instant,
    /// Agent identities for the JSON export's name fields.
    names: Option<Names>,
}

impl FileExport {
    /// Opens (creating with mode 0600, appending) the configured file.
    ///
    /// Refuses a symlink, anything but a regular file, and a file owned by
    /// another user: the observer often runs privileged, and the export path
    /// may sit in a shared directory.
    pub fn open(cfg: &ExportConfig) -> Result<FileExport, ExportError> {
        let (file, size) = open_checked(&cfg.path)?;
        Ok(FileExport::from_file(cfg, file, size))
    }

    /// Adds agent names (JSON `name`, `unit`, … fields; `missing` and
    /// `present` lines).
    pub fn with_names(mut self, names: Names) -> FileExport {
        self.names = Some(names);
        self
    }

    /// Wraps an already-opened file of `size` bytes without the safety
    /// checks (tests point it at devices).
    fn from_file(cfg: &ExportConfig, file: File, size: u64) -> FileExport {
        let max = cfg.max_bytes.unwrap_or(u64::MAX);
        FileExport {
            path: cfg.path.clone(),
            format: cfg.format,
            beats: cfg.beats,
            max_bytes: cfg.max_bytes,
            sync_every: cfg.sync_every,
            file,
            buf: Vec::with_capacity(BUF_CAPACITY),
            buf_lines: 0,
            line: Vec::with_capacity(256),
            file_bytes: size,
            rotate_at: max,
            torn: false,
            lines_since_sync: 0,
            non_beat_pending: false,
            flush_due_ns: None,
            counters: Arc::new(FileExportCounters::default()),
            warn: RateLimit::default(),
            opened: Instant::now(),
            names: None,
        }
    }

    /// Counter values now.
    pub fn stats(&self) -> FileExportStats {
        self.counters.snapshot()
    }

    /// The live counters, for a metrics exporter.
    pub fn counters(&self) -> Arc<FileExportCounters> {
        Arc::clone(&self.counters)
    }

    fn warn(&mut self, what: &str, err: &dyn fmt::Display) {
        let now = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let interval = u64::try_from(WARN_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        if let Some(suppressed) = self.warn.allow(now, interval, 1) {
            tracing::warn!(
                path = %self.path.display(),
                error = %err,
                suppressed,
                "event export: {what}; detection continues (similar warnings are limited to one per 10 s)"
            );
        }
    }

    /// Appends the formatted `self.line` to the buffer, rotating, flushing
    /// and syncing as configured.
    fn push_line(&mut self, at_ns: u64, is_beat: bool) {
        // The torn-line separator counts too, so no file grows past the limit.
        let len = self.line.len() as u64 + u64::from(self.torn);
        if self.max_bytes.is_some() && self.file_bytes.saturating_add(len) > self.rotate_at {
            self.rotate_before_line(len);
        }
        if self.buf.len() + self.line.len() + 1 > BUF_CAPACITY {
            self.flush_buf();
        }
        if self.torn && self.buf.is_empty() {
            self.buf.push(b'\n');
            self.file_bytes += 1;
        }
        self.buf.extend_from_slice(&self.line);
        self.buf_lines += 1;
        self.file_bytes += self.line.len() as u64;
        let due = if is_beat {
            at_ns.saturating_add(BEAT_FLUSH_NS)
        } else {
            self.non_beat_pending = true;
            at_ns
        };
        self.flush_due_ns = Some(self.flush_due_ns.map_or(due, |d| d.min(due)));

        if self.sync_every > 0 {
            self.lines_since_sync += 1;
            if self.lines_since_sync >= self.sync_every {
                self.lines_since_sync = 0;
                if self.flush_buf() {
                    self.sync();
                }
            }
        }
    }

    /// Hands the buffer to `write(2)`. On failure the unwritten lines are
    /// discarded and counted; returns whether everything was written.
    fn flush_buf(&mut self) -> bool {
        self.non_beat_pending = false;
        self.flush_due_ns = None;
        if self.buf.is_empty() {
            return true;
        }
        let (done, result) = write_all_counted(&mut self.file, &self.buf);
        let unwritten = &self.buf[done..];
        // A line is lost unless its `\n` made it out. `min` because a torn-line
        // separator at the front is a newline but not a line.
        let lost = (unwritten.iter().filter(|&&b| b == b'\n').count() as u64).min(self.buf_lines);
        bump(&self.counters.lines_written, self.buf_lines - lost);
        if done > 0 {
            self.torn = self.buf[done - 1] != b'\n';
        }
        let unwritten_len = unwritten.len() as u64;
        self.buf.clear();
        self.buf_lines = 0;
        match result {
            Ok(()) => true,
            Err(e) => {
                self.file_bytes = self.file_bytes.saturating_sub(unwritten_len);
                bump(&self.counters.write_errors, 1);
                bump(&self.counters.lines_dropped, lost);
                self.warn("write failed, lines discarded", &e);
                false
            }
        }
    }

    fn sync(&mut self) {
        match self.file.sync_data() {
            Ok(()) => bump(&self.counters.syncs, 1),
            Err(e) => {
                bump(&self.counters.write_errors, 1);
                self.warn("fdatasync failed", &e);
            }
        }
    }

    /// Rotates if appending a `len`-byte line would push the file past
    /// `max_bytes`. A file holding nothing yet takes the line whatever its
    /// length, so an absurdly small limit cannot make rotation loop.
    fn rotate_before_line(&mut self, len: u64) {
        let Some(max) = self.max_bytes else {
            return;
        };
        self.flush_buf();
        if self.file_bytes == 0 || self.file_bytes.saturating_add(len) <= self.rotate_at {
            return;
        }
        match self.rotate() {
            Ok(()) => {
                bump(&self.counters.rotations, 1);
                self.rotate_at = max;
            }
            Err(e) => {
                bump(&self.counters.rotation_errors, 1);
                self.rotate_at = self.file_bytes.saturating_add(max);
                self.warn("rotation failed, still writing to the current file", &e);
            }
        }
    }

    /// PATH.4→PATH.5 … PATH→PATH.1, then a fresh PATH. Renames replace the
    /// target atomically, so PATH.5 is simply overwritten. On a failed reopen
    /// the current handle (now PATH.1) stays in use.
    fn rotate(&mut self) -> Result<(), RotateError> {
        for n in (1..GENERATIONS).rev() {
            rename_if_exists(&generation(&self.path, n), &generation(&self.path, n + 1))?;
        }
        rename_if_exists(&self.path, &generation(&self.path, 1))?;
        let (file, size) = open_checked(&self.path).map_err(RotateError::Reopen)?;
        if self.sync_every > 0 && self.lines_since_sync > 0 {
            // The promise "synced every N lines" should not depend on where a
            // rotation fell.
            self.sync();
        }
        self.lines_since_sync = 0;
        self.file = file;
        self.file_bytes = size;
        self.torn = false;
        Ok(())
    }
}

impl Sink for FileExport {
    fn on_event(&mut self, at_ns: u64, event: &Event) {
        if event.is_beat() && !self.beats {
            return;
        }
        self.line.clear();
        let formatted = match self.format {
            ExportFormat::Tsv => write_tsv(&mut self.line, at_ns, event, self.names.as_ref()),
            ExportFormat::Json => write_json(
                &mut self.line,
                at_ns,
                SystemTime::now(),
                event,
                self.names
                    .as_ref()
                    .map(|n| n as &dyn super::format::NameLookup),
            ),
        };
        match formatted {
            // The TSV format has no line for some kinds (identified,
            // recovery): nothing written, nothing counted, no flush due.
            Ok(()) if self.line.is_empty() => {}
            Ok(()) => self.push_line(at_ns, event.is_beat()),
            Err(e) => {
                // Unreachable in practice (formatting into a Vec only fails on a
                // broken Display impl), but a line is never lost silently.
                bump(&self.counters.lines_dropped, 1);
                self.warn("formatting a line failed", &e);
            }
        }
    }

    fn end_of_batch(&mut self, now_ns: u64) {
        if self.non_beat_pending || self.flush_due_ns.is_some_and(|due| now_ns >= due) {
            self.flush_buf();
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.flush_due_ns
    }

    fn shutdown(&mut self) {
        self.flush_buf();
        self.sync();
    }
}

impl Drop for FileExport {
    fn drop(&mut self) {
        // Normally empty after `shutdown`; a sink dropped without it must not
        // lose its buffered lines silently.
        if !self.buf.is_empty() {
            self.flush_buf();
        }
    }
}

/// Opens `path` for appending with the safety checks; returns the file and
/// its current size.
fn open_checked(path: &Path) -> Result<(File, u64), ExportError> {
    let open_err = |source: io::Error| ExportError::Open {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for writing would otherwise block until a
    // reader shows up; it is refused below and the flag cleared.
    let flags = OFlags::WRONLY
        | OFlags::APPEND
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags, Mode::RUSR | Mode::WUSR).map_err(|e| match e {
        // ELOOP is also "too many links" further up the path; only call it a
        // symlink when it is one.
        Errno::LOOP
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            ExportError::Symlink {
                path: path.to_path_buf(),
            }
        }
        Errno::ISDIR => ExportError::NotRegular {
            path: path.to_path_buf(),
            kind: "directory",
        },
        e => open_err(e.into()),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| open_err(e.into()))?;
    let file_type = FileType::from_raw_mode(st.st_mode);
    if file_type != FileType::RegularFile {
        return Err(ExportError::NotRegular {
            path: path.to_path_buf(),
            kind: file_type_name(file_type),
        });
    }
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid {
        return Err(ExportError::NotOwned {
            path: path.to_path_buf(),
            owner: st.st_uid,
            euid,
        });
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::APPEND).map_err(|e| open_err(e.into()))?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    Ok((File::from(fd), size))
}

fn file_type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "special file",
    }
}

/// `PATH.n`.
fn generation(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), RotateError> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RotateError::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// `write_all` that also reports how many bytes made it out before an error.
fn write_all_counted(file: &mut File, data: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < data.len() {
        match file.write(&data[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Origin, RejectReason};
    use crate::export::format::json_str;
    use std::fs;
    use std::time::UNIX_EPOCH;
    use varta_vlp::{DecodeError, Status};

    fn config(path: &Path, format: ExportFormat) -> ExportConfig {
        ExportConfig {
            path: path.to_path_buf(),
            format,
            beats: true,
            max_bytes: None,
            sync_every: 0,
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    /// One event of every kind, with the TSV line it must produce.
    fn every_kind() -> Vec<(Event, &'static str)> {
        vec![
            (
                Event::Beat {
                    pid: 42,
                    nonce: 7,
                    status: Status::Degraded,
                    payload: 99,
                    origin: Origin::KernelAttested,
                },
                "1000\tbeat\t42\t7\tdegraded\t99",
            ),
            (
                Event::Stall {
                    pid: 42,
                    last_nonce: 7,
                    last_beat_ns: 5,
                    origin: Origin::KernelAttested,
                    foreign_ns: false,
                },
                "1000\tstall\t42\t7\tstall\t-",
            ),
            (
                Event::Recovered {
                    pid: 42,
                    nonce: 8,
                    status: Status::Ok,
                    payload: 3,
                    silent_ns: 6_000_000_000,
                },
                "1000\trecovered\t42\t8\tok\t3",
            ),
            (
                Event::Exit {
                    pid: 42,
                    timestamp: 77,
                    payload: 13,
                    origin: Origin::NetworkVerified,
                    foreign_ns: false,
                },
                "1000\texit\t42\t18446744073709551615\tcritical\t13",
            ),
            (
                Event::AuthFailure {
                    claimed_pid: 43,
                    kernel_pid: 44,
                },
                "1000\tmismatch\t43\t-\t-\tauth_failure",
            ),
            (
                Event::OriginConflict {
                    pid: 45,
                    pinned: Origin::KernelAttested,
                    got: Origin::NetworkUnverified,
                },
                "1000\tmismatch\t45\t-\t-\torigin_conflict",
            ),
            (
                Event::NamespaceConflict {
                    pid: 46,
                    pinned: 4_026_531_836,
                    got: 4_026_532_000,
                },
                "1000\tmismatch\t46\t-\t-\tnamespace_conflict",
            ),
            (
                Event::DecodeError(DecodeError::BadCrc {
                    expected: 1,
                    actual: 2,
                }),
                "1000\tdecode\t-\t-\t-\tBadCrc { expected: 1, actual: 2 }",
            ),
            (
                Event::DecodeError(DecodeError::BadMagic),
                "1000\tdecode\t-\t-\t-\tBadMagic",
            ),
            (
                Event::Truncated { len: 31 },
                "1000\tdecode\t-\t-\t-\tTruncated(31)",
            ),
            (
                Event::Rejected {
                    pid: 47,
                    reason: RejectReason::OutOfOrder,
                },
                "1000\trejected\t47\t-\t-\tout_of_order",
            ),
            (
                Event::Rejected {
                    pid: 0,
                    reason: RejectReason::PidNotVisible,
                },
                "1000\trejected\t-\t-\t-\tpid_not_visible",
            ),
            (
                Event::Eviction {
                    pid: 48,
                    was_live: true,
                },
                "1000\teviction\t48\t-\t-\t-",
            ),
            (
                Event::CapacityExceeded { pid: 49 },
                "1000\tcapacity_exceeded\t49\t-\t-\t-",
            ),
            (Event::NewLife { pid: 50 }, "1000\tnew_life\t50\t-\t-\t-"),
            (
                Event::NonceWrap { pid: 51 },
                "1000\tnonce_wrap\t51\t-\t-\t-",
            ),
            (Event::Ctrunc, "1000\tctrunc\t-\t-\t-\tMSG_CTRUNC"),
            (
                Event::Io { errno: 28 },
                "1000\tio\t-\t-\t-\tNo space left on device (os error 28)",
            ),
            (
                Event::ClockRegression { back_ns: 123 },
                "1000\tclock_regression\t-\t-\t-\t123",
            ),
            (
                Event::ClockJump {
                    forward_ns: 6_000_000_000,
                },
                "1000\tclock_jump\t-\t-\t-\t6000000000",
            ),
        ]
    }

    #[test]
    fn tsv_line_for_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        let cases = every_kind();
        for (event, _) in &cases {
            sink.on_event(1000, event);
        }
        sink.end_of_batch(1000);
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), cases.len());
        for ((event, want), got) in cases.iter().zip(&lines) {
            assert_eq!(got, want, "{}", event.kind());
            assert_eq!(got.split('\t').count(), 6, "{}", event.kind());
        }
        assert!(text.ends_with('\n'));
        assert_eq!(sink.stats().lines_written, cases.len() as u64);
    }

    /// Kinds the TSV format has no line for write nothing and count
    /// nothing (the soak bench compares line counts with event counters).
    #[test]
    fn tsv_kinds_without_a_line_count_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        sink.on_event(
            1000,
            &Event::Identified {
                pid: 7,
                identity: crate::identity::IdentityId(0),
                rule: None,
            },
        );
        sink.end_of_batch(1000);
        assert_eq!(read(&path), "");
        assert_eq!(sink.stats().lines_written, 0);
        assert_eq!(sink.stats().lines_dropped, 0);
    }

    #[test]
    fn json_line_for_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let mut sink = FileExport::open(&config(&path, ExportFormat::Json)).unwrap();
        let cases = every_kind();
        for (event, _) in &cases {
            sink.on_event(1000, event);
        }
        sink.end_of_batch(1000);
        let text = read(&path);
        assert_eq!(text.lines().count(), cases.len());
        for ((event, tsv), line) in cases.iter().zip(text.lines()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", event.kind()));
            let obj = v.as_object().unwrap();
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            for key in [
                "time",
                "observer_ns",
                "kind",
                "pid",
                "nonce",
                "status",
                "payload",
                "detail",
                "name",
                "unit",
                "container",
                "comm",
                "exe",
            ] {
                assert!(keys.contains(&key), "{line} lacks {key}");
            }
            assert_eq!(obj.len(), 13, "{line}");
            // No names without an identity source.
            assert!(v["name"].is_null(), "{line}");

            let time = v["time"].as_str().unwrap();
            assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
            assert!(time.ends_with('Z') && time.len() == 30, "{time}");
            assert_eq!(v["observer_ns"], 1000);
            assert_eq!(v["kind"], event.kind());
            match event.pid() {
                Some(pid) => assert_eq!(v["pid"], pid),
                None => assert!(v["pid"].is_null()),
            }
            // The TSV columns and the JSON fields tell the same story.
            let cols: Vec<&str> = tsv.split('\t').collect();
            let nonce = if v["nonce"].is_null() {
                "-".to_string()
            } else {
                v["nonce"].to_string()
            };
            assert_eq!(nonce, cols[3], "{line}");
            let status = v["status"].as_str().unwrap_or("-");
            assert_eq!(status, cols[4], "{line}");
            if !v["payload"].is_null() {
                assert_eq!(v["payload"].to_string(), cols[5], "{line}");
            }
        }

        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let by_kind = |k: &str| parsed.iter().find(|v| v["kind"] == k).unwrap();
        assert_eq!(by_kind("beat")["detail"], "kernel_attested");
        assert_eq!(by_kind("beat")["status"], "degraded");
        assert_eq!(by_kind("beat")["payload"], 99);
        assert_eq!(by_kind("stall")["nonce"], 7);
        assert!(by_kind("stall")["payload"].is_null());
        assert!(by_kind("stall")["detail"].is_null());
        assert_eq!(by_kind("exit")["nonce"], u64::MAX);
        assert_eq!(by_kind("recovered")["detail"], "silent_ns=6000000000");
        assert_eq!(by_kind("auth_failure")["detail"], "kernel_pid=44");
        assert_eq!(
            by_kind("origin_conflict")["detail"],
            "pinned=kernel_attested got=network_unverified"
        );
        assert_eq!(by_kind("decode_error")["detail"], "bad_crc");
        assert_eq!(by_kind("truncated")["detail"], "len=31");
        assert_eq!(by_kind("rejected")["detail"], "out_of_order");
        assert_eq!(
            by_kind("io")["detail"],
            "No space left on device (os error 28)"
        );
        assert_eq!(by_kind("clock_jump")["detail"], "forward_ns=6000000000");
    }

    #[test]
    fn json_time_is_the_wall_clock_and_never_panics() {
        let mut out = Vec::new();
        let at = UNIX_EPOCH + Duration::new(1_795_453_200, 123_456_789);
        write_json(&mut out, 5, at, &Event::Ctrunc, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-11-23T17:00:00.123456789Z");

        for t in [
            UNIX_EPOCH - Duration::from_secs(1),
            UNIX_EPOCH + Duration::from_secs(300_000_000_000),
        ] {
            out.clear();
            write_json(&mut out, 5, t, &Event::Ctrunc, None).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(humantime::parse_rfc3339(v["time"].as_str().unwrap()).is_ok());
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        let s: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(s, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn no_export_beats_skips_beats_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut cfg = config(&path, ExportFormat::Tsv);
        cfg.beats = false;
        let mut sink = FileExport::open(&cfg).unwrap();
        let cases = every_kind();
        for (event, _) in &cases {
            sink.on_event(1000, event);
        }
        assert_eq!(sink.next_deadline(), Some(1000), "a non-beat is due now");
        sink.end_of_batch(1000);
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        let want: Vec<&str> = cases
            .iter()
            .filter(|(e, _)| !e.is_beat())
            .map(|(_, l)| *l)
            .collect();
        assert_eq!(lines, want);
        assert!(lines.iter().all(|l| !l.contains("\tbeat\t")));
    }

    #[test]
    fn non_beat_is_written_by_end_of_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        assert_eq!(sink.next_deadline(), None);
        sink.on_event(
            10,
            &Event::Stall {
                pid: 9,
                last_nonce: 1,
                last_beat_ns: 0,
                origin: Origin::KernelAttested,
                foreign_ns: false,
            },
        );
        assert_eq!(read(&path), "", "buffered until the batch ends");
        sink.end_of_batch(10);
        assert_eq!(read(&path), "10\tstall\t9\t1\tstall\t-\n");
        assert_eq!(sink.next_deadline(), None);
    }

    #[test]
    fn beats_wait_for_their_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        let beat = |nonce| Event::Beat {
            pid: 9,
            nonce,
            status: Status::Ok,
            payload: 0,
            origin: Origin::KernelAttested,
        };
        sink.on_event(1_000, &beat(1));
        sink.on_event(50_000_000, &beat(2));
        let deadline = 1_000 + BEAT_FLUSH_NS;
        assert_eq!(sink.next_deadline(), Some(deadline), "oldest beat decides");
        sink.end_of_batch(1_000);
        sink.end_of_batch(deadline - 1);
        assert_eq!(read(&path), "");
        assert_eq!(sink.stats().lines_written, 0);
        sink.end_of_batch(deadline);
        assert_eq!(read(&path).lines().count(), 2);
        assert_eq!(sink.next_deadline(), None);
        assert_eq!(sink.stats().lines_written, 2);

        // A non-beat takes pending beats out with it.
        sink.on_event(deadline + 1, &beat(3));
        sink.on_event(deadline + 2, &Event::NewLife { pid: 9 });
        sink.end_of_batch(deadline + 2);
        assert_eq!(read(&path).lines().count(), 4);
        assert_eq!(sink.next_deadline(), None);
    }

    #[test]
    fn shutdown_and_drop_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let beat = Event::Beat {
            pid: 9,
            nonce: 1,
            status: Status::Ok,
            payload: 0,
            origin: Origin::KernelAttested,
        };
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        sink.on_event(1, &beat);
        sink.shutdown();
        assert_eq!(read(&path).lines().count(), 1);
        assert_eq!(sink.stats().syncs, 1);
        sink.on_event(2, &beat);
        drop(sink);
        assert_eq!(read(&path).lines().count(), 2);
    }

    #[test]
    fn full_buffer_flushes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        for nonce in 0..10_000 {
            sink.on_event(
                1,
                &Event::Beat {
                    pid: 9,
                    nonce,
                    status: Status::Ok,
                    payload: 0,
                    origin: Origin::KernelAttested,
                },
            );
            assert!(sink.buf.len() <= BUF_CAPACITY);
        }
        let on_disk = fs::metadata(&path).unwrap().len();
        assert!(on_disk > 0 && on_disk <= 10_000 * 30, "{on_disk}");
        assert_eq!(
            read(&path).lines().count() as u64,
            sink.stats().lines_written
        );
    }

    #[test]
    fn appends_to_existing_file_and_creates_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        sink.on_event(1, &Event::NewLife { pid: 2 });
        sink.shutdown();
        drop(sink);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut sink = FileExport::open(&config(&path, ExportFormat::Tsv)).unwrap();
        assert_eq!(sink.file_bytes, 19);
        sink.on_event(2, &Event::NewLife { pid: 3 });
        sink.shutdown();
        assert_eq!(
            read(&path),
            "1\tnew_life\t2\t-\t-\t-\n2\tnew_life\t3\t-\t-\t-\n"
        );
    }

    #[test]
    fn rotation_keeps_five_generations_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut cfg = config(&path, ExportFormat::Tsv);
        cfg.max_bytes = Some(200);
        // Leftover from an earlier run: counts towards the first file.
        fs::write(&path, "x".repeat(150)).unwrap();
        let mut sink = FileExport::open(&cfg).unwrap();
        let n = 300u64;
        for i in 0..n {
            let at = 1_000_000 + i;
            sink.on_event(at, &Event::NewLife { pid: 7 });
            if i % 3 == 0 {
                sink.end_of_batch(at);
            }
        }
        sink.shutdown();
        let stats = sink.stats();
        assert_eq!(stats.lines_written, n);
        assert_eq!(stats.rotation_errors, 0);
        assert!(stats.rotations > 5, "{stats:?}");

        let mut files = vec![path.clone()];
        files.extend((1..=5).map(|g| generation(&path, g)));
        for f in &files {
            let len = fs::metadata(f).unwrap().len();
            assert!(len > 0 && len <= 200, "{} is {len} bytes", f.display());
        }
        assert!(!generation(&path, 6).exists());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 6);

        // Oldest to newest, the kept lines are the last ones written, in order.
        let mut stamps = Vec::new();
        for f in files.iter().rev() {
            for line in read(f).lines() {
                stamps.push(line.split('\t').next().unwrap().parse::<u64>().unwrap());
            }
        }
        let first = stamps[0];
        let want: Vec<u64> = (first..1_000_000 + n).collect();
        assert_eq!(stamps, want);
    }

    #[test]
    fn failed_rotation_keeps_writing_and_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        // Non-empty directories in the way make every rename fail.
        for g in 1..=5 {
            let d = generation(&path, g);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("keep"), "").unwrap();
        }
        let mut cfg = config(&path, ExportFormat::Tsv);
        cfg.max_bytes = Some(200);
        let mut sink = FileExport::open(&cfg).unwrap();
        for i in 0..100u64 {
            sink.on_event(i + 10, &Event::NewLife { pid: 7 });
            sink.end_of_batch(i + 10);
        }
        let stats = sink.stats();
        assert_eq!(stats.lines_written, 100);
        assert_eq!(stats.lines_dropped, 0);
        assert_eq!(stats.rotations, 0);
        // About one attempt per 200 bytes (~21 lines), not one per line.
        assert!((1..=10).contains(&stats.rotation_errors), "{stats:?}");
        assert_eq!(read(&path).lines().count(), 100);
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "precious\n").unwrap();
        let link = dir.path().join("events.tsv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = FileExport::open(&config(&link, ExportFormat::Tsv))
            .err()
            .unwrap();
        assert!(matches!(err, ExportError::Symlink { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("symlink") && msg.contains("events.tsv"),
            "{msg}"
        );
        assert_eq!(read(&target), "precious\n");

        // A dangling link must not create its target either.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(FileExport::open(&config(&dangling, ExportFormat::Tsv)).is_err());
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn directory_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileExport::open(&config(dir.path(), ExportFormat::Tsv))
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                ExportError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("regular file"), "{err}");

        let err = FileExport::open(&config(Path::new("/dev/null"), ExportFormat::Tsv))
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                ExportError::NotRegular {
                    kind: "character device",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn missing_directory_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/events.tsv");
        let err = FileExport::open(&config(&path, ExportFormat::Tsv))
            .err()
            .unwrap();
        assert!(matches!(err, ExportError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("directory exists"), "{err}");
    }

    #[test]
    fn file_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        fs::write(&path, "").unwrap();
        let other = if rustix::process::geteuid().as_raw() == 65534 {
            65533
        } else {
            65534
        };
        if std::os::unix::fs::chown(&path, Some(other), None).is_err() {
            // Only root can give a file away; nothing to test otherwise.
            return;
        }
        let err = FileExport::open(&config(&path, ExportFormat::Tsv))
            .err()
            .unwrap();
        assert!(
            matches!(err, ExportError::NotOwned { owner, .. } if owner == other),
            "{err:?}"
        );
        assert!(err.to_string().contains("chown"), "{err}");
    }

    #[test]
    fn write_failures_are_counted_not_fatal() {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let cfg = config(Path::new("/dev/full"), ExportFormat::Tsv);
        let mut sink = FileExport::from_file(&cfg, full, 0);
        sink.on_event(
            1,
            &Event::Stall {
                pid: 3,
                last_nonce: 1,
                last_beat_ns: 0,
                origin: Origin::KernelAttested,
                foreign_ns: false,
            },
        );
        sink.end_of_batch(1);
        let s = sink.stats();
        assert_eq!(s.write_errors, 1);
        assert_eq!(s.lines_dropped, 1);
        assert_eq!(s.lines_written, 0);
        assert!(sink.buf.is_empty(), "failed lines are discarded");
        assert_eq!(sink.next_deadline(), None);

        // A flood through a failing file stays bounded and fully accounted.
        for nonce in 0..20_000 {
            sink.on_event(
                2,
                &Event::Beat {
                    pid: 3,
                    nonce,
                    status: Status::Ok,
                    payload: 0,
                    origin: Origin::KernelAttested,
                },
            );
            assert!(sink.buf.len() <= BUF_CAPACITY);
        }
        sink.shutdown();
        let s = sink.stats();
        assert_eq!(s.lines_dropped, 20_001);
        assert_eq!(s.lines_written, 0);
        assert!(s.write_errors > 2, "{s:?}");
        assert_eq!(sink.counters().snapshot(), s);
    }

    #[test]
    fn partial_writes_never_glue_lines() {
        use std::io::Read;
        use std::os::unix::net::UnixStream;
        // A non-blocking socket nobody reads fills up and then accepts part
        // of a write: the closest portable stand-in for a disk filling up
        // mid-write.
        let (tx, mut rx) = UnixStream::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        rx.set_nonblocking(true).unwrap();
        let cfg = config(Path::new("socket"), ExportFormat::Tsv);
        let mut sink = FileExport::from_file(&cfg, File::from(std::os::fd::OwnedFd::from(tx)), 0);
        let beat = |nonce| Event::Beat {
            pid: 3,
            nonce,
            status: Status::Ok,
            payload: 0,
            origin: Origin::KernelAttested,
        };
        let mut nonce = 0;
        while sink.stats().write_errors == 0 {
            sink.on_event(1, &beat(nonce));
            nonce += 1;
        }
        let mut received = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut drain = |received: &mut Vec<u8>| loop {
            match rx.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        };
        drain(&mut received);
        for _ in 0..100 {
            sink.on_event(2, &beat(nonce));
            nonce += 1;
        }
        sink.shutdown();
        drain(&mut received);

        let s = sink.stats();
        assert_eq!(s.lines_written + s.lines_dropped, nonce);
        let text = String::from_utf8(received).unwrap();
        assert!(text.ends_with('\n'));
        let mut complete = 0;
        for line in text.lines() {
            assert!(line.matches("beat").count() <= 1, "glued: {line:?}");
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() == 6 && cols[5] == "0" {
                complete += 1;
            }
        }
        assert_eq!(complete, s.lines_written);
        // At most the one line cut by the partial write, ended by the `\n`
        // that opened the next flush.
        assert!(text.lines().count() as u64 - complete <= 1);
    }

    #[test]
    fn sync_every_line_counts_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.tsv");
        let mut cfg = config(&path, ExportFormat::Tsv);
        cfg.sync_every = 1;
        let mut sink = FileExport::open(&cfg).unwrap();
        for pid in 0..3 {
            sink.on_event(1, &Event::NonceWrap { pid });
            // Written and synced before the batch even ends.
            assert_eq!(read(&path).lines().count(), pid as usize + 1);
        }
        let s = sink.stats();
        assert_eq!(s.syncs, 3);
        assert_eq!(s.lines_written, 3);

        cfg.sync_every = 2;
        let mut sink = FileExport::open(&cfg).unwrap();
        for pid in 0..5 {
            sink.on_event(1, &Event::NonceWrap { pid });
        }
        assert_eq!(sink.stats().syncs, 2);
    }

    #[test]
    fn warnings_are_rate_limited() {
        // The sink's limiter: one warning per WARN_INTERVAL, the rest counted.
        let interval = WARN_INTERVAL.as_nanos() as u64;
        let mut w = RateLimit::default();
        assert_eq!(w.allow(0, interval, 1), Some(0));
        assert_eq!(w.allow(1, interval, 1), None);
        assert_eq!(w.allow(2, interval, 1), None);
        assert_eq!(w.allow(interval, interval, 1), Some(2));
    }
}
