//! One rate limiter for every log line that could repeat: at most `budget`
//! lines per window, counting the rest so the next logged line can say how
//! many were held back.

/// Window state for one kind of line. Time is caller-supplied nanoseconds
/// (observer time, or any monotonic origin).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RateLimit {
    start: Option<u64>,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(suppressed since the last allowed line)` if a line may be
    /// logged at `now_ns`. A window opens at the first line allowed after
    /// the previous window ended.
    pub(crate) fn allow(&mut self, now_ns: u64, window_ns: u64, budget: u32) -> Option<u64> {
        if self
            .start
            .is_none_or(|s| now_ns.saturating_sub(s) >= window_ns)
        {
            self.start = Some(now_ns);
            self.used = 0;
        }
        if self.used >= budget {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_window_and_suppressed_count() {
        let mut r = RateLimit::default();
        assert_eq!(r.allow(0, 10, 2), Some(0));
        assert_eq!(r.allow(1, 10, 2), Some(0));
        assert_eq!(r.allow(2, 10, 2), None);
        assert_eq!(r.allow(9, 10, 2), None);
        assert_eq!(r.allow(10, 10, 2), Some(2));
    }
}
