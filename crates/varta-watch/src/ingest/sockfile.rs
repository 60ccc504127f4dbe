//! Rules for the observer's socket files, shared by the beat socket
//! ([`super::uds`]) and the control socket ([`crate::control::socket`]):
//! the directory is checked (exists, not a symlink, not world-writable
//! without the sticky bit), a stale socket (nobody answering) is replaced,
//! a live one or anything that is not a socket is refused, and on shutdown
//! the file is removed only if it is still the one we bound.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};

use super::uds::BindError;

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BindError {
    let path = path.to_path_buf();
    move |source| BindError::Io { what, path, source }
}

/// Checks a socket's directory (exists, not a symlink, not world-writable
/// without the sticky bit).
pub(crate) fn check_parent(path: &Path) -> Result<(), BindError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = match std::fs::symlink_metadata(&parent) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BindError::ParentMissing(parent))
        }
        Err(e) => return Err(io_err("cannot inspect socket directory", &parent)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(BindError::ParentSymlink(parent));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(BindError::ParentWorldWritable(parent));
    }
    Ok(())
}

/// The kind of socket expected at a path, which decides how it is probed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// The beat socket.
    Datagram,
    /// The control socket.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Stream,
}

/// Removes a stale socket file (connecting is refused: nobody listens),
/// refusing to touch anything else.
pub(crate) fn clear_stale(path: &Path, kind: Kind) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    let probe = match kind {
        Kind::Datagram => UnixDatagram::unbound()
            .map_err(io_err("cannot create probe socket for", path))?
            .connect(path),
        Kind::Stream => UnixStream::connect(path).map(drop),
    };
    match probe {
        Ok(()) => Err(BindError::LiveObserver(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))
        }
        Err(e) => Err(io_err("cannot probe existing socket", path)(e)),
    }
}

/// A socket file we bound, identified by device and inode, so that a
/// successor observer's socket at the same path is never removed.
#[derive(Debug)]
pub(crate) struct BoundPath {
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl BoundPath {
    /// Records the file just bound at `path`.
    pub(crate) fn new(path: &Path) -> Result<BoundPath, BindError> {
        let meta = std::fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
        Ok(BoundPath {
            path: path.to_path_buf(),
            dev_ino: (meta.dev(), meta.ino()),
        })
    }

    /// The bound path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one we bound.
    pub(crate) fn unlink_if_ours(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.dev_ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
