//! The control socket: a Unix *stream* socket bound with the beat socket's
//! rules — the directory is checked the same way, a stale socket (nobody
//! answering) is replaced, a live one is refused, the file is created
//! owner-only (0600, never wider, not even briefly), and on shutdown it is
//! removed only if it is still ours.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::ingest::sockfile::{check_parent, clear_stale, io_err, BoundPath, Kind};
use crate::ingest::BindError;

/// A bound control socket (the listener itself goes to the HTTP thread).
#[derive(Debug)]
pub struct ControlSocket {
    bound_path: BoundPath,
}

impl ControlSocket {
    /// Binds `path` mode 0600 and returns the listener (non-blocking, for
    /// the HTTP thread) with the handle that removes the file later.
    pub fn bind(path: &Path) -> Result<(ControlSocket, UnixListener), BindError> {
        check_parent(path)?;
        clear_stale(path, Kind::Stream)?;
        // umask 0177 around bind: the file is born 0600 (the beat socket
        // does the same, at the same single-threaded point of startup).
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(io_err("cannot bind", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("cannot set mode on", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("cannot configure", path))?;
        Ok((
            ControlSocket {
                bound_path: BoundPath::new(path)?,
            },
            listener,
        ))
    }

    /// The bound path.
    pub fn path(&self) -> &Path {
        self.bound_path.path()
    }

    /// Removes the socket file if it is still the one we bound.
    pub fn unlink_if_ours(&self) {
        self.bound_path.unlink_if_ours();
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.unlink_if_ours();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_stale_and_live() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.ctl");
        let (s, l) = ControlSocket::bind(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            ControlSocket::bind(&p),
            Err(BindError::LiveObserver(_))
        ));
        // Stale: the listener is gone but the file stays.
        drop(l);
        std::mem::forget(s);
        let (_s2, _l2) = ControlSocket::bind(&p).unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(matches!(
            ControlSocket::bind(&f),
            Err(BindError::NotASocket(_))
        ));
    }
}
