//! Cheap fork detection.
//!
//! `getpid(2)` is a real syscall (glibc stopped caching it), measured at
//! ~255 ns on the reference VM — over 10 % of a whole UDS send. Instead, a
//! `pthread_atfork` child handler bumps a generation counter in the child;
//! a beat compares one relaxed atomic load with its session's generation and
//! reads the pid only when they differ, i.e. on the first beat after a fork.
//! If registration fails, `generation()` returns a value that never matches,
//! so every beat reads the pid (the slow but always-correct path).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTERED: AtomicBool = AtomicBool::new(false);
static REGISTER: Once = Once::new();

/// Sentinel meaning "unknown generation: read the pid".
pub(crate) const ALWAYS_CHECK: u64 = u64::MAX;

extern "C" fn bump_in_child() {
    // Async-signal-safe: one atomic add, no allocation, no locks.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn register() {
    // SAFETY: pthread_atfork only stores the function pointers; the child
    // handler is a plain `extern "C"` fn that touches a static atomic.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(bump_in_child)) };
    REGISTERED.store(rc == 0, Ordering::Release);
}

/// Current fork generation of this process, or [`ALWAYS_CHECK`] when the
/// atfork hook could not be registered.
#[inline]
pub(crate) fn generation() -> u64 {
    REGISTER.call_once(register);
    if REGISTERED.load(Ordering::Acquire) {
        GENERATION.load(Ordering::Relaxed)
    } else {
        ALWAYS_CHECK
    }
}
