//! Reading the observers' export files (the TSV both write:
//! `observer_ns⇥kind⇥pid⇥nonce⇥status⇥payload`), from outside the observer
//! and identically for both.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::procs::{monotonic_ns, Res};

/// Current size of the export file (0 while it does not exist yet).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Lines are far shorter than this; used to find the line a window starts in.
const MAX_LINE: u64 = 512;

/// Number of `beat` lines whose terminating newline lies in byte range
/// `[from, to)` of the file. Both observers buffer their writes, so a window
/// edge may fall inside a line: a line counts in the window its newline
/// falls in, so consecutive windows never count a line twice.
pub fn beat_lines_between(path: &Path, from: u64, to: u64) -> Res<u64> {
    if to <= from {
        return Ok(0);
    }
    let start = from.saturating_sub(MAX_LINE);
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((to - start) as usize);
    f.take(to - start).read_to_end(&mut buf)?;
    Ok(count_beats(&buf, start, from))
}

/// `buf` holds the file from offset `start`; counts beat lines ending at or
/// after absolute offset `from`.
fn count_beats(buf: &[u8], start: u64, from: u64) -> u64 {
    // Before `from` the buffer may begin mid-line: skip to the first line
    // boundary (the file's own start is one).
    let mut line_start = if start == 0 {
        0
    } else {
        match buf.iter().position(|&b| b == b'\n') {
            Some(p) => p + 1,
            None => return 0,
        }
    };
    let mut n = 0;
    for (i, &b) in buf.iter().enumerate().skip(line_start) {
        if b == b'\n' {
            if start + i as u64 >= from && kind(&buf[line_start..i]) == Some(&b"beat"[..]) {
                n += 1;
            }
            line_start = i + 1;
        }
    }
    n
}

/// Second column of a TSV line.
fn kind(line: &[u8]) -> Option<&[u8]> {
    line.split(|&b| b == b'\t').nth(1)
}

/// A `stall` line as the harness saw it appear.
#[derive(Clone, Copy, Debug)]
pub struct SeenStall {
    /// CLOCK_MONOTONIC when the line was read from the file.
    pub seen_ns: u64,
    pub pid: u32,
    pub nonce: u64,
}

fn parse_stall(line: &[u8]) -> Option<(u32, u64)> {
    let mut cols = line.split(|&b| b == b'\t');
    let _ns = cols.next()?;
    if cols.next()? != b"stall" {
        return None;
    }
    let pid = std::str::from_utf8(cols.next()?).ok()?.parse().ok()?;
    let nonce = std::str::from_utf8(cols.next()?).ok()?.parse().ok()?;
    Some((pid, nonce))
}

/// Follows an export file with inotify and timestamps every `stall` line
/// the moment it can be read: what an external supervisor tailing the file
/// would see.
pub struct StallWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Res<Vec<SeenStall>>>>,
}

impl StallWatcher {
    /// Watches the directory (the file may not exist yet) for writes to `file`.
    pub fn start(file: PathBuf) -> Res<StallWatcher> {
        let dir = file
            .parent()
            .ok_or("export file has no parent directory")?
            .to_path_buf();
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        ino.add_watch(&dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || follow(&ino, &file, &stop2));
        Ok(StallWatcher {
            stop,
            handle: Some(handle),
        })
    }

    pub fn finish(mut self) -> Res<Vec<SeenStall>> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err("export watcher thread panicked".into()),
        }
    }
}

impl Drop for StallWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn follow(ino: &Inotify, path: &Path, stop: &AtomicBool) -> Res<Vec<SeenStall>> {
    let mut seen = Vec::new();
    let mut file: Option<File> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let last = stop.load(Ordering::Relaxed);
        // The timeout only lets us notice `stop`; writes wake us at once.
        let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(20u8));
        // Timestamp first: this is when the new bytes became visible.
        let now = monotonic_ns();
        while let Ok(events) = ino.read_events() {
            if events.is_empty() {
                break;
            }
        }
        if file.is_none() {
            file = File::open(path).ok();
        }
        if let Some(f) = file.as_mut() {
            loop {
                let n = f.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&chunk[..n]);
            }
            // Complete lines only; a partial tail waits for its newline.
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                for line in pending[..end].split(|&b| b == b'\n') {
                    if let Some((pid, nonce)) = parse_stall(line) {
                        seen.push(SeenStall {
                            seen_ns: now,
                            pid,
                            nonce,
                        });
                    }
                }
                pending.drain(..=end);
            }
        }
        if last {
            return Ok(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_beats_by_terminating_newline() {
        let text = b"1\tbeat\t5\t1\tok\t0\n2\tstall\t5\t1\tstall\t-\n3\tbeat\t6\t1\tok\t0\n";
        // Whole file.
        assert_eq!(count_beats(text, 0, 0), 2);
        // A window starting mid-way through the first line still counts it
        // (its newline is inside), the next window does not.
        assert_eq!(count_beats(text, 0, 3), 2);
        let first_nl = text.iter().position(|&b| b == b'\n').unwrap() as u64;
        assert_eq!(count_beats(text, 0, first_nl + 1), 1);
        // A buffer that begins mid-line skips the fragment.
        assert_eq!(count_beats(&text[5..], 5, 5), 1);
    }

    #[test]
    fn parses_stall_lines() {
        assert_eq!(parse_stall(b"99\tstall\t42\t7\tstall\t-"), Some((42, 7)));
        assert_eq!(parse_stall(b"99\tbeat\t42\t7\tok\t0"), None);
        assert_eq!(parse_stall(b"garbage"), None);
    }

    #[test]
    fn beat_lines_between_reads_a_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tsv");
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("{i}\tbeat\t{i}\t1\tok\t0\n"));
        }
        std::fs::write(&p, &text).unwrap();
        let len = text.len() as u64;
        let mid = len / 2;
        let a = beat_lines_between(&p, 0, mid).unwrap();
        let b = beat_lines_between(&p, mid, len).unwrap();
        assert_eq!(a + b, 100);
    }
}
