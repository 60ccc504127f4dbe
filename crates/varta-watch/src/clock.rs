//! The observer's own clock: nanoseconds since start on the configured
//! kernel clock, guarded against going backwards.

use nix::time::{clock_gettime, ClockId};

use crate::config::ClockSource;

/// Monotonic observer time. `now()` never decreases; a backwards step of
/// the underlying clock is clamped and reported.
#[derive(Clone)]
pub struct ObserverClock {
    id: ClockId,
    origin_ns: u64,
    last: u64,
}

fn read(id: ClockId) -> u64 {
    // Both clocks exist on every supported kernel (Linux ≥ 2.6.39), so the
    // call cannot fail; 0 would only freeze observer time, never panic.
    let ts = clock_gettime(id).unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    (ts.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec() as u64)
}

impl ObserverClock {
    /// Starts observer time at 0 now.
    pub fn new(source: ClockSource) -> ObserverClock {
        let id = kernel_clock(source);
        ObserverClock {
            id,
            origin_ns: read(id),
            last: 0,
        }
    }

    /// Observer ns now, and how far the kernel clock stepped back (if it did).
    #[inline]
    pub fn now(&mut self) -> (u64, Option<u64>) {
        let raw = read(self.id).saturating_sub(self.origin_ns);
        if raw < self.last {
            return (self.last, Some(self.last - raw));
        }
        self.last = raw;
        (raw, None)
    }

    /// Absolute kernel-clock ns for observer time `t` (for timerfd).
    pub fn to_kernel_ns(&self, t: u64) -> u64 {
        self.origin_ns.saturating_add(t)
    }

    /// Test hook: pretend the clock is at observer time `t`.
    #[doc(hidden)]
    pub fn set_last_for_test(&mut self, t: u64) {
        self.last = t;
    }
}

/// The kernel clock id for a source.
pub fn kernel_clock(source: ClockSource) -> ClockId {
    match source {
        ClockSource::Monotonic => ClockId::CLOCK_MONOTONIC,
        ClockSource::Boottime => ClockId::CLOCK_BOOTTIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards() {
        let mut c = ObserverClock::new(ClockSource::Monotonic);
        let (a, _) = c.now();
        c.set_last_for_test(a + 1_000_000_000_000);
        let (b, back) = c.now();
        assert_eq!(b, a + 1_000_000_000_000);
        assert!(back.is_some());
        let mut boot = ObserverClock::new(ClockSource::Boottime);
        assert!(boot.now().1.is_none());
    }
}
