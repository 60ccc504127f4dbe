//! `varta keygen`: a new random 32-byte key in the one spelling every
//! observer key and token file uses (64 hex characters and a newline, see
//! `varta_audit::secret_file`), written so that it is never readable by
//! anyone else, not even for a moment.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use zeroize::Zeroizing;

use crate::cli::{EXIT_FAIL, EXIT_OK};

/// Bytes of key material: what `decode_hex_32` expects.
const KEY_BYTES: usize = 32;

/// The PATH that means standard output.
const STDOUT_PATH: &str = "-";

/// Arguments of `varta keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The key file to create, or `-` to print the key on standard output
    /// (e.g. to append it to an --accepted-key-file). A file literally
    /// named `-` is `./-`.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Replace an existing PATH. The new key is written to a temporary
    /// file (mode 0600) in the same directory, synced and renamed over
    /// PATH, so PATH always holds either the old key or the whole new one.
    /// A symlink at PATH is still refused.
    #[arg(long)]
    pub force: bool,
}

/// Runs `varta keygen`; returns the exit status. Failures are one line on
/// stderr and exit 1.
pub fn run(args: KeygenArgs) -> u8 {
    match keygen(&args) {
        Ok(()) => EXIT_OK,
        Err(msg) => {
            eprintln!("varta: error: {msg}");
            EXIT_FAIL
        }
    }
}

fn keygen(args: &KeygenArgs) -> Result<(), String> {
    let line = new_key_line()?;
    if args.path.as_os_str() == STDOUT_PATH {
        let mut out = io::stdout().lock();
        return out
            .write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing the key to standard output: {e}"));
    }
    if args.force {
        replace(&args.path, &line)
    } else {
        create(&args.path, &line)
    }
}

/// A fresh key from the OS random source as lowercase hex plus `\n`. Both
/// buffers are wiped on drop so the key does not linger in freed memory.
fn new_key_line() -> Result<Zeroizing<Vec<u8>>, String> {
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    getrandom::fill(&mut key[..])
        .map_err(|e| format!("the operating system's random source failed: {e}"))?;
    Ok(hex_line(&key))
}

/// `key` as lowercase hex and a trailing newline, in a buffer sized up
/// front so no reallocation leaves an unwiped copy behind.
fn hex_line(key: &[u8; KEY_BYTES]) -> Zeroizing<Vec<u8>> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut line = Zeroizing::new(Vec::with_capacity(2 * KEY_BYTES + 1));
    for b in key {
        line.push(DIGITS[usize::from(b >> 4)]);
        line.push(DIGITS[usize::from(b & 15)]);
    }
    line.push(b'\n');
    line
}

/// Creates `path` with O_CREAT|O_EXCL and mode 0600 (the umask can only
/// narrow it), so the file is never readable by others and an existing
/// file — or a symlink, which O_EXCL does not follow — is never touched.
fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes, then fsyncs, so a crash cannot leave an empty or partial key
/// that the observer would later reject.
fn write_synced(file: &mut File, line: &[u8]) -> io::Result<()> {
    file.write_all(line)?;
    file.sync_all()
}

/// Without --force: a new file only.
fn create(path: &Path, line: &[u8]) -> Result<(), String> {
    let mut file = create_exclusive(path).map_err(|e| create_error(path, path, e))?;
    if let Err(e) = write_synced(&mut file, line) {
        drop(file);
        // We created it a moment ago under O_EXCL; a half-written key must
        // not be left for the observer to trip over.
        let _ = std::fs::remove_file(path);
        return Err(format!("{}: writing the key failed: {e}", path.display()));
    }
    sync_dir(&parent_dir(path), path)
}

/// With --force: write beside the target and rename over it.
fn replace(path: &Path, line: &[u8]) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            if let Some(msg) = not_replaceable(path, &m) {
                return Err(msg);
            }
        }
        // A missing file is fine (--force then simply creates it); a
        // missing directory is reported when the temporary file is created.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: does not name a file", path.display()))?;
    let dir = parent_dir(path);
    let tmp = dir.join(temp_name(name)?);
    let mut file = create_exclusive(&tmp).map_err(|e| create_error(path, &tmp, e))?;
    // rename(2) replaces the directory entry itself and never follows a
    // symlink at the target, so a link planted after the check above is
    // replaced, not written through.
    let written = write_synced(&mut file, line).and_then(|()| std::fs::rename(&tmp, path));
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: replacing the key failed: {e}", path.display()));
    }
    sync_dir(&dir, path)
}

/// `.NAME.keygen-XXXXXXXX`: hidden, recognisable if a crash leaves it, and
/// random so two concurrent runs do not collide (O_EXCL would refuse).
fn temp_name(name: &std::ffi::OsStr) -> Result<OsString, String> {
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag)
        .map_err(|e| format!("the operating system's random source failed: {e}"))?;
    let mut out = OsString::from(".");
    out.push(name);
    out.push(format!(
        ".keygen-{:02x}{:02x}{:02x}{:02x}",
        tag[0], tag[1], tag[2], tag[3]
    ));
    Ok(out)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes the new directory entry durable: without it a crash after the
/// file's fsync could still lose the name (or, after a rename, bring back
/// the old key).
fn sync_dir(dir: &Path, path: &Path) -> Result<(), String> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        format!(
            "{}: key written, but syncing directory {} failed: {e}",
            path.display(),
            dir.display()
        )
    })
}

/// Why an existing `path` (metadata from `lstat`) must not be replaced,
/// even with --force: a symlink (writing through it would let whoever
/// planted it choose where the key goes) or anything but a regular file.
fn not_replaceable(path: &Path, m: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_symlink() {
        return Some(format!(
            "{}: is a symlink; refusing to write through it (give the real path; key files must not be symlinks)",
            path.display()
        ));
    }
    let kind = if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    };
    Some(format!(
        "{}: is a {kind}, not a regular file; refusing to replace it",
        path.display()
    ))
}

/// One line saying why `created` (`target` itself, or the temporary file
/// beside it) could not be created, with the fix, naming `target`.
fn create_error(target: &Path, created: &Path, e: io::Error) -> String {
    let dir = parent_dir(target);
    match e.kind() {
        io::ErrorKind::AlreadyExists if created == target => {
            match std::fs::symlink_metadata(target)
                .ok()
                .and_then(|m| not_replaceable(target, &m))
            {
                Some(msg) => msg,
                None => format!(
                    "{}: already exists; pass --force to replace it (the old key then stops working wherever it is configured)",
                    target.display()
                ),
            }
        }
        // With O_CREAT the file itself cannot be missing, so a directory on
        // the way is (unless the file system refuses new files with ENOENT,
        // as /proc does: then the directory is there and the plain error
        // below is clearer).
        io::ErrorKind::NotFound if !dir.is_dir() => format!(
            "{}: directory {} does not exist; create it first",
            target.display(),
            dir.display()
        ),
        _ if created == target => format!("{}: cannot create: {e}", target.display()),
        _ => format!(
            "{}: cannot create temporary file {}: {e}",
            target.display(),
            created.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varta_audit::secret_file::{decode_hex_32, strip_line_end};

    #[test]
    fn hex_line_is_lowercase_and_decodes_back() {
        let mut key = [0u8; KEY_BYTES];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(0xa5);
        }
        let line = hex_line(&key);
        assert_eq!(line.len(), 65);
        assert_eq!(line.last(), Some(&b'\n'));
        let hex = strip_line_end(&line);
        assert!(hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(decode_hex_32(hex), Some(key));
    }

    #[test]
    fn parent_of_bare_name_is_current_dir() {
        assert_eq!(parent_dir(Path::new("k")), PathBuf::from("."));
        assert_eq!(
            parent_dir(Path::new("/etc/varta/k")),
            PathBuf::from("/etc/varta")
        );
    }
}
