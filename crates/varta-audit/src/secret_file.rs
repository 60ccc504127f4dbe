//! Rules for files whose content or integrity is security-relevant: key
//! files, token files, `--recovery-exec-file`, and the audit file itself.
//!
//! Such a file must be a regular file (not a symlink, which someone with
//! write access to the directory could re-point), owned by the effective uid
//! we run as, and not accessible to group or others (mode & 0o077 == 0).
//! Every error says how to fix it.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use zeroize::Zeroizing;

/// Largest secret file [`read_secret_file`] reads (keys and commands are
/// tiny; anything larger is a misconfiguration, not a secret).
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why a secret file is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file does not exist.
    #[error("{}: no such file; create it (mode 0600) or fix the path", .path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The path is a symbolic link.
    #[error("{}: is a symlink; point the option at the real file (symlinks are refused so a link planted in the directory cannot redirect it)", .path.display())]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// The path is a directory, FIFO, device or socket.
    #[error("{}: is a {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Owned by another user.
    #[error("{}: owned by uid {owner}, but the observer runs as uid {euid}; run `chown {euid} {}`", .path.display(), .path.display())]
    WrongOwner {
        /// The path.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// Our effective uid.
        euid: u32,
    },
    /// Group or others have some access.
    #[error("{}: mode {mode:04o} gives group/others access; run `chmod 600 {}`", .path.display(), .path.display())]
    TooOpen {
        /// The path.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
    },
    /// Larger than [`MAX_SECRET_FILE_BYTES`].
    #[error("{}: {len} bytes, more than the {max} a secret file may have", .path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Any other I/O failure (permission denied, …).
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SecretFileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SecretFileError::NotFound { path }
            | SecretFileError::Symlink { path }
            | SecretFileError::NotRegular { path, .. }
            | SecretFileError::WrongOwner { path, .. }
            | SecretFileError::TooOpen { path, .. }
            | SecretFileError::TooLarge { path, .. }
            | SecretFileError::Io { path, .. } => path,
        }
    }
}

fn kind_name(m: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// The content of a one-line secret file (key, token) without its line
/// end: one trailing `\n` or `\r\n` is dropped, nothing else.
pub fn strip_line_end(text: &[u8]) -> &[u8] {
    text.strip_suffix(b"\n")
        .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
        .unwrap_or(text)
}

/// 32 bytes written as exactly 64 hex characters, either case: the one
/// spelling of every key and token file (`openssl rand -hex 32`). None for
/// any other length or a non-hex character.
pub fn decode_hex_32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

/// One hex digit's value, either case.
pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Checks metadata already obtained for `path` — from `fstat` on a
/// descriptor you opened (no race) or from `lstat`.
pub fn check_metadata(path: &Path, m: &Metadata) -> Result<(), SecretFileError> {
    let path = || path.to_path_buf();
    if m.file_type().is_symlink() {
        return Err(SecretFileError::Symlink { path: path() });
    }
    if !m.file_type().is_file() {
        return Err(SecretFileError::NotRegular {
            path: path(),
            kind: kind_name(m),
        });
    }
    let euid = rustix::process::geteuid().as_raw();
    if m.uid() != euid {
        return Err(SecretFileError::WrongOwner {
            path: path(),
            owner: m.uid(),
            euid,
        });
    }
    let mode = m.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen { path: path(), mode });
    }
    Ok(())
}

/// Checks `path` without opening it (`lstat`, so a symlink is reported as
/// one). Prefer [`open_secret_file`] when you are going to read it.
pub fn check_secret_file(path: &Path) -> Result<(), SecretFileError> {
    let m = std::fs::symlink_metadata(path).map_err(|e| io_err(path, e))?;
    check_metadata(path, &m)
}

fn io_err(path: &Path, e: std::io::Error) -> SecretFileError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SecretFileError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        SecretFileError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Maps an `open(2)` failure, naming a symlink when `O_NOFOLLOW` hit one.
pub fn open_error(path: &Path, e: Errno) -> SecretFileError {
    // ELOOP is also "too many links" further up the path; only call it a
    // symlink when the last component is one.
    if e == Errno::LOOP && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        return SecretFileError::Symlink {
            path: path.to_path_buf(),
        };
    }
    io_err(path, e.into())
}

/// Opens `path` read-only with `O_NOFOLLOW`, then checks the open descriptor
/// (so the file checked is the file read).
pub fn open_secret_file(path: &Path) -> Result<File, SecretFileError> {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is
    // refused by the type check right after.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| open_error(path, e))?;
    let file = File::from(fd);
    let m = file.metadata().map_err(|e| io_err(path, e))?;
    check_metadata(path, &m)?;
    Ok(file)
}

/// Reads a whole secret file (at most [`MAX_SECRET_FILE_BYTES`]) after the
/// checks; the buffer is wiped when dropped.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let file = open_secret_file(path)?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    if len > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
            len,
            max: MAX_SECRET_FILE_BYTES,
        });
    }
    // Reserve up front so the secret is never copied by a reallocation
    // (the old buffer would not be wiped).
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_SECRET_FILE_BYTES as usize + 1));
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, e))?;
    if buf.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
            len: buf.len() as u64,
            max: MAX_SECRET_FILE_BYTES,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write_mode(path: &Path, content: &[u8], mode: u32) {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn accepts_0600_and_0400() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_mode(&p, b"secret\n", 0o600);
        assert_eq!(&read_secret_file(&p).unwrap()[..], b"secret\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        check_secret_file(&p).unwrap();
    }

    #[test]
    fn refuses_group_or_other_access_with_chmod_hint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        for mode in [0o640, 0o604, 0o660, 0o601] {
            write_mode(&p, b"x", mode);
            let e = read_secret_file(&p).unwrap_err();
            assert!(matches!(e, SecretFileError::TooOpen { mode: m, .. } if m == mode));
            assert!(e
                .to_string()
                .contains(&format!("chmod 600 {}", p.display())));
        }
    }

    #[test]
    fn refuses_symlink_even_to_a_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        write_mode(&real, b"x", 0o600);
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        assert!(matches!(
            read_secret_file(&link),
            Err(SecretFileError::Symlink { .. })
        ));
        assert!(matches!(
            check_secret_file(&link),
            Err(SecretFileError::Symlink { .. })
        ));
    }

    #[test]
    fn refuses_directory_missing_and_large() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_secret_file(dir.path()),
            Err(SecretFileError::NotRegular {
                kind: "directory",
                ..
            })
        ));
        let missing = dir.path().join("nope");
        let e = read_secret_file(&missing).unwrap_err();
        assert!(matches!(e, SecretFileError::NotFound { .. }));
        assert_eq!(e.path(), missing);
        let big = dir.path().join("big");
        write_mode(&big, &vec![b'a'; 70_000], 0o600);
        assert!(matches!(
            read_secret_file(&big),
            Err(SecretFileError::TooLarge { len: 70_000, .. })
        ));
    }

    #[test]
    fn refuses_file_of_another_owner() {
        if rustix::process::geteuid().as_raw() != 0 {
            return; // only root can give a file away
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_mode(&p, b"x", 0o600);
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let e = read_secret_file(&p).unwrap_err();
        assert!(matches!(
            e,
            SecretFileError::WrongOwner {
                owner: 65534,
                euid: 0,
                ..
            }
        ));
        assert!(e.to_string().contains("chown 0 "));
    }
}
