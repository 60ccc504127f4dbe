//! Dying gasp: a panic hook that sends one terminal frame (Critical +
//! `NONCE_TERMINAL`) before the previous hook runs, so the observer raises
//! `exit` at once instead of waiting for the stall threshold.
//!
//! The socket is opened at install time; the hook only encodes on the stack
//! and calls `send(2)` — no allocation, no blocking (the socket is
//! non-blocking). Frames carry the pid of the panicking process, read at
//! panic time, so a forked child reports itself.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use varta_vlp::{Frame, Status, NONCE_TERMINAL};

use crate::transport::{BeatTransport, UdsTransport};

/// Process-wide clock origin for terminal timestamps.
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Last terminal timestamp sent by any hook of this process: the observer
/// accepts a terminal frame only if it is strictly newer than the last one.
static LAST_TERMINAL: AtomicU64 = AtomicU64::new(0);

fn next_terminal_timestamp() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    let now = u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX - 1)
        .min(u64::MAX - 1);
    let mut prev = LAST_TERMINAL.load(Ordering::Relaxed);
    loop {
        let ts = now.max(prev.saturating_add(1)).min(u64::MAX - 1);
        match LAST_TERMINAL.compare_exchange_weak(prev, ts, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return ts,
            Err(seen) => prev = seen,
        }
    }
}

/// The 32-byte terminal frame for this process, as the hook sends it.
pub(crate) fn terminal_frame() -> [u8; 32] {
    Frame::new(
        Status::Critical,
        std::process::id(),
        next_terminal_timestamp(),
        NONCE_TERMINAL,
        0,
    )
    .to_bytes()
}

/// What the hook does before chaining: one terminal frame, best effort.
/// Allocation-free (checked by a counting-allocator test).
fn gasp<T: BeatTransport>(transport: &Mutex<T>) {
    let frame = terminal_frame();
    // A poisoned lock only means another thread panicked mid-send; the
    // transport is still usable for a best-effort gasp.
    let mut t = transport.lock().unwrap_or_else(|p| p.into_inner());
    let _ = t.send(&frame);
}

fn install_with<T: BeatTransport>(transport: T) {
    EPOCH.get_or_init(Instant::now);
    let transport = Mutex::new(transport);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        gasp(&transport);
        previous(info);
    }));
}

/// Installs the hook for a Unix-socket observer at `path`. Fails (and
/// installs nothing) if the socket cannot be opened now.
pub fn install_panic_handler<P: AsRef<Path>>(path: P) -> io::Result<()> {
    install_with(UdsTransport::connect(path)?);
    Ok(())
}

/// Installs the hook for a plaintext-UDP observer (features `panic-handler`
/// and `udp`).
#[cfg(feature = "udp")]
pub fn install_panic_handler_udp(addr: std::net::SocketAddr) -> io::Result<()> {
    install_with(crate::transport::UdpTransport::connect(addr)?);
    Ok(())
}

/// Installs the hook for a secure-UDP observer with a shared key. The
/// session salt comes from OS entropy now; a forked child re-salts before
/// its first gasp.
#[cfg(feature = "secure-udp")]
pub fn install_panic_handler_secure_udp(
    addr: std::net::SocketAddr,
    key: varta_vlp::Key,
) -> io::Result<()> {
    install_with(crate::transport::SecureUdpTransport::connect(addr, key)?);
    Ok(())
}

/// Installs the hook for a secure-UDP observer in master-key mode.
#[cfg(feature = "secure-udp")]
pub fn install_panic_handler_secure_udp_with_master(
    addr: std::net::SocketAddr,
    master: varta_vlp::Key,
) -> io::Result<()> {
    install_with(crate::transport::SecureUdpTransport::connect_with_master(
        addr, master,
    )?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts allocations made by the current thread while enabled.
    mod counting {
        #![allow(unsafe_code)]
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            pub static ON: Cell<bool> = const { Cell::new(false) };
            pub static COUNT: Cell<u64> = const { Cell::new(0) };
        }

        pub struct Counting;

        // SAFETY: forwards every call to the system allocator unchanged.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                if ON.with(Cell::get) {
                    COUNT.with(|c| c.set(c.get() + 1));
                }
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;
    }

    #[test]
    fn gasp_does_not_allocate() {
        let dir = std::env::temp_dir().join(format!("varta-gasp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("obs.sock");
        let _ = std::fs::remove_file(&path);
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let transport = Mutex::new(UdsTransport::connect(&path).unwrap());
        counting::COUNT.with(|c| c.set(0));
        counting::ON.with(|c| c.set(true));
        for _ in 0..100 {
            gasp(&transport);
        }
        counting::ON.with(|c| c.set(false));
        assert_eq!(counting::COUNT.with(std::cell::Cell::get), 0);
        let mut buf = [0u8; 64];
        assert_eq!(rx.recv(&mut buf).unwrap(), 32);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn terminal_frames_strictly_newer() {
        let a = Frame::decode(&terminal_frame()).unwrap();
        let b = Frame::decode(&terminal_frame()).unwrap();
        assert!(a.is_terminal() && b.is_terminal());
        assert!(b.timestamp > a.timestamp);
        assert_eq!(a.pid, std::process::id());
    }
}
