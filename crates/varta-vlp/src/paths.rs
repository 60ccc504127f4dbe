//! Where the observer listens by default, so agents and observer agree
//! without configuration.

use std::format;
use std::path::PathBuf;

/// Default observer socket: `/run/varta/varta.sock` for root,
/// `$XDG_RUNTIME_DIR/varta.sock` otherwise, and `/tmp/varta-<uid>/varta.sock`
/// when there is no runtime directory.
pub fn default_socket_path() -> PathBuf {
    let uid = effective_uid();
    if uid == Some(0) {
        return PathBuf::from("/run/varta/varta.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("varta.sock"),
        _ => PathBuf::from(format!("/tmp/varta-{}", uid.unwrap_or(u32::MAX))).join("varta.sock"),
    }
}

/// The effective uid, read without libc: `/proc/self` is owned by it.
pub fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}
