//! Per-source-IP token buckets for `/metrics`, in a bounded table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Why a request was refused by the limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The source's bucket is empty.
    RateLimited,
    /// The table is full of sources that are still limited.
    TableFull,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by source IP.
#[derive(Debug)]
pub struct IpLimiter {
    rate: f64,
    burst: f64,
    capacity: usize,
    table: HashMap<IpAddr, Bucket>,
}

impl IpLimiter {
    /// `rate` requests per second refilling a bucket of `burst`; at most
    /// `capacity` sources tracked. `burst == 0` disables limiting.
    pub fn new(rate: u32, burst: u32, capacity: usize) -> IpLimiter {
        IpLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst),
            capacity: capacity.max(1),
            table: HashMap::new(),
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Takes one token for `ip` at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.burst == 0.0 {
            return Ok(());
        }
        if !self.table.contains_key(&ip) && self.table.len() >= self.capacity {
            // Only now, and bounded by `capacity`: forget sources whose
            // bucket has refilled, which are indistinguishable from new.
            let (rate, burst) = (self.rate, self.burst);
            self.table
                .retain(|_, b| refill(b, now, rate, burst) < burst);
            if self.table.len() >= self.capacity {
                return Err(Refusal::TableFull);
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.table.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = refill(b, now, rate, burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Refusal::RateLimited)
        }
    }
}

fn refill(b: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let dt = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + dt * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn burst_then_rate() {
        let mut l = IpLimiter::new(5, 10, 16);
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(l.check(ip(1), t), Ok(()));
        }
        assert_eq!(l.check(ip(1), t), Err(Refusal::RateLimited));
        // Another source has its own bucket.
        assert_eq!(l.check(ip(2), t), Ok(()));
        // 200 ms at 5/s refills one token.
        assert_eq!(l.check(ip(1), t + Duration::from_millis(200)), Ok(()));
        assert_eq!(
            l.check(ip(1), t + Duration::from_millis(200)),
            Err(Refusal::RateLimited)
        );
    }

    #[test]
    fn zero_burst_disables() {
        let mut l = IpLimiter::new(5, 0, 1);
        let t = Instant::now();
        for n in 0..100 {
            assert_eq!(l.check(ip(n), t), Ok(()));
        }
        assert!(l.is_empty());
    }

    #[test]
    fn full_table_refuses_until_buckets_refill() {
        let mut l = IpLimiter::new(1, 2, 2);
        let t = Instant::now();
        l.check(ip(1), t).unwrap();
        l.check(ip(2), t).unwrap();
        assert_eq!(l.check(ip(3), t), Err(Refusal::TableFull));
        // After 1 s both buckets are full again: their entries are dropped.
        assert_eq!(l.check(ip(3), t + Duration::from_secs(1)), Ok(()));
        assert!(l.len() <= 2);
    }
}
