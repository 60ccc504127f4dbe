//! Counts every event by kind (and drops by reason) in atomics, so a
//! metrics exporter on another thread can read them without locking the
//! observer. Counting happens as the event is emitted — where the thing
//! happened — not by draining state in the main loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use varta_vlp::DecodeError;

use crate::events::{Event, RecoveryOutcome, RejectReason, Sink};

/// Shared counters.
#[derive(Default)]
pub struct Counters {
    by_kind: [AtomicU64; Event::KINDS.len()],
    decode: [AtomicU64; 8],
    reject: [AtomicU64; RejectReason::ALL.len()],
    recovery: [AtomicU64; RecoveryOutcome::LABELS.len()],
    /// AEAD opens tried by the secure-UDP listener (every key on every
    /// datagram), bumped once per receive batch by the listener itself:
    /// an attempt is not an event worth a line, only a rate.
    aead_attempts: AtomicU64,
    /// Secure-UDP senders with replay state now (a gauge, set by the
    /// listener after each batch).
    udp_senders: AtomicU64,
}

impl Counters {
    /// Events of `kind` so far (0 for unknown kinds).
    pub fn kind(&self, kind: &str) -> u64 {
        Event::KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.by_kind[i].load(Ordering::Relaxed))
    }

    /// Decode errors of one [`DecodeError::kind`].
    pub fn decode(&self, kind: &str) -> u64 {
        DecodeError::KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.decode[i].load(Ordering::Relaxed))
    }

    /// Rejections for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.reject[reason.index()].load(Ordering::Relaxed)
    }

    /// Recovery outcomes with this label (see [`RecoveryOutcome::LABELS`]).
    pub fn recovery(&self, label: &str) -> u64 {
        RecoveryOutcome::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.recovery[i].load(Ordering::Relaxed))
    }

    /// Adds `n` secure-UDP AEAD attempts.
    pub fn add_aead_attempts(&self, n: u64) {
        self.aead_attempts.fetch_add(n, Ordering::Relaxed);
    }

    /// Records how many secure-UDP senders have replay state.
    pub fn set_udp_senders(&self, n: u64) {
        self.udp_senders.store(n, Ordering::Relaxed);
    }

    /// Secure-UDP senders with replay state.
    pub fn udp_senders(&self) -> u64 {
        self.udp_senders.load(Ordering::Relaxed)
    }

    /// Secure-UDP AEAD attempts so far.
    pub fn aead_attempts(&self) -> u64 {
        self.aead_attempts.load(Ordering::Relaxed)
    }

    /// (kind, count) for every kind, plus `decode_error{kind}` and
    /// `rejected{reason}` breakdowns; for logs and the shutdown summary.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Event::KINDS
            .iter()
            .zip(&self.by_kind)
            .map(|(k, c)| (k.to_string(), c.load(Ordering::Relaxed)))
            .collect();
        for (k, c) in DecodeError::KINDS.iter().zip(&self.decode) {
            out.push((
                format!("decode_error{{kind={k}}}"),
                c.load(Ordering::Relaxed),
            ));
        }
        for r in RejectReason::ALL {
            out.push((
                format!("rejected{{reason={}}}", r.as_str()),
                self.rejected(r),
            ));
        }
        for (l, c) in RecoveryOutcome::LABELS.iter().zip(&self.recovery) {
            out.push((
                format!("recovery{{outcome={l}}}"),
                c.load(Ordering::Relaxed),
            ));
        }
        out.push(("aead_attempts".to_string(), self.aead_attempts()));
        out
    }
}

/// The sink that bumps [`Counters`].
pub struct CountingSink {
    counters: Arc<Counters>,
}

impl CountingSink {
    /// A sink feeding `counters`.
    pub fn new(counters: Arc<Counters>) -> CountingSink {
        CountingSink { counters }
    }
}

impl Sink for CountingSink {
    #[inline]
    fn on_event(&mut self, _at_ns: u64, event: &Event) {
        let c = &self.counters;
        c.by_kind[event.index()].fetch_add(1, Ordering::Relaxed);
        match event {
            Event::DecodeError(e) => {
                c.decode[e.index()].fetch_add(1, Ordering::Relaxed);
            }
            Event::Rejected { reason, .. } => {
                c.reject[reason.index()].fetch_add(1, Ordering::Relaxed);
            }
            Event::Recovery { outcome, .. } => {
                c.recovery[outcome.index()].fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_reason() {
        let counters = Arc::new(Counters::default());
        let mut sink = CountingSink::new(counters.clone());
        sink.on_event(0, &Event::DecodeError(DecodeError::BadMagic));
        sink.on_event(
            0,
            &Event::Rejected {
                pid: 5,
                reason: RejectReason::OutOfOrder,
            },
        );
        sink.on_event(0, &Event::Ctrunc);
        assert_eq!(counters.kind("decode_error"), 1);
        assert_eq!(counters.decode("bad_magic"), 1);
        assert_eq!(counters.rejected(RejectReason::OutOfOrder), 1);
        assert_eq!(counters.kind("ctrunc"), 1);
        assert_eq!(counters.kind("clock_jump"), 0);
        assert_eq!(Event::ClockJump { forward_ns: 1 }.kind(), "clock_jump");
    }
}
