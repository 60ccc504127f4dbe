//! Token buckets for `--max-beat-rate` (per pid) and `--global-beat-rate`.

/// Global bucket with nanosecond refill. A rate of 0 disables it.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_s: u64,
    /// Capacity in nano-tokens (1 beat = 1e9).
    cap: u64,
    tokens: u64,
    last_ns: u64,
}

const NANO: u64 = 1_000_000_000;

impl TokenBucket {
    /// `rate` beats/s with room for `burst` beats (0 = one second of rate).
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        let burst = if burst == 0 { rate } else { burst };
        let cap = u64::from(burst.max(1)) * NANO;
        TokenBucket {
            rate_per_s: u64::from(rate),
            cap,
            tokens: cap,
            last_ns: 0,
        }
    }

    /// Whether the bucket limits anything.
    pub fn enabled(&self) -> bool {
        self.rate_per_s > 0
    }

    /// Takes one token at observer time `now_ns`; false when empty.
    #[inline]
    pub fn take(&mut self, now_ns: u64) -> bool {
        if self.rate_per_s == 0 {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns.max(self.last_ns);
        // rate [beats/s] * elapsed [ns] = nano-tokens gained.
        let gained = elapsed.saturating_mul(self.rate_per_s);
        self.tokens = self.tokens.saturating_add(gained).min(self.cap);
        if self.tokens >= NANO {
            self.tokens -= NANO;
            true
        } else {
            false
        }
    }
}

/// Per-pid bucket state packed into the slot: tokens in milli-beats and the
/// millisecond of the last refill (wrapping u32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidBucket {
    /// Milli-tokens available.
    pub tokens: u32,
    /// Observer milliseconds (truncated) at the last refill.
    pub refill_ms: u32,
}

impl PidBucket {
    /// A full bucket for `rate` beats/s (1 s of burst).
    pub fn full(rate: u32, now_ms: u32) -> PidBucket {
        PidBucket {
            tokens: rate.saturating_mul(1000),
            refill_ms: now_ms,
        }
    }

    /// Takes one beat's worth at `now_ms`; `rate` 0 always succeeds.
    #[inline]
    pub fn take(&mut self, rate: u32, now_ms: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let cap = rate.saturating_mul(1000);
        let elapsed = now_ms.wrapping_sub(self.refill_ms);
        self.refill_ms = now_ms;
        // rate [beats/s] = rate milli-beats per ms.
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(10, 20);
        let allowed = (0..100).filter(|_| b.take(0)).count();
        assert_eq!(allowed, 20);
        // 1 s later: 10 more.
        let allowed = (0..100).filter(|_| b.take(NANO)).count();
        assert_eq!(allowed, 10);
        assert!(TokenBucket::new(0, 0).take(0));
    }

    #[test]
    fn pid_bucket_rate() {
        let mut b = PidBucket::full(100, 0);
        let allowed = (0..500).filter(|_| b.take(100, 0)).count();
        assert_eq!(allowed, 100);
        assert!(!b.take(100, 5)); // 0.5 beat refilled
        assert!(b.take(100, 10)); // another 0.5: one beat
        assert!(b.take(0, 0));
    }

    #[test]
    fn hundred_thousand_agents_at_one_hz_never_throttled_by_defaults() {
        // Default per-pid rate 100/s: a 1 Hz agent always has tokens.
        let mut b = PidBucket::full(100, 0);
        for s in 1..1000u32 {
            assert!(b.take(100, s * 1000));
        }
    }
}
