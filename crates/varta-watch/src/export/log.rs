//! Operator-facing log lines for notable events. Agent lifecycle (stall,
//! recovered, exit) is logged every time; drops and errors are logged at
//! most once per 10 s per kind, with how many were suppressed, so a flood
//! of bad datagrams cannot flood the journal.

use crate::events::{Event, Sink};

const QUIET_NS: u64 = 10_000_000_000;

/// Logs events through `tracing`.
#[derive(Default)]
pub struct LogSink {
    /// (last logged at, suppressed since) per kind index.
    limiter: [(Option<u64>, u64); 24],
}

fn limiter_slot(e: &Event) -> usize {
    // Each rate-limited kind gets its own budget.
    match e {
        Event::AuthFailure { .. } => 0,
        Event::OriginConflict { .. } => 1,
        Event::NamespaceConflict { .. } => 2,
        Event::DecodeError(_) => 3,
        Event::Truncated { .. } => 4,
        Event::Rejected { .. } => 5,
        Event::Eviction { .. } => 6,
        Event::CapacityExceeded { .. } => 7,
        Event::Ctrunc => 8,
        Event::Io { .. } => 9,
        Event::ClockRegression { .. } => 10,
        Event::NonceWrap { .. } => 11,
        Event::NewLife { .. } => 12,
        _ => 23,
    }
}

impl LogSink {
    /// A fresh limiter.
    pub fn new() -> LogSink {
        LogSink::default()
    }

    /// True if this occurrence may be logged; returns how many were
    /// suppressed since the last logged one.
    fn allow(&mut self, at_ns: u64, e: &Event) -> Option<u64> {
        let slot = &mut self.limiter[limiter_slot(e)];
        match slot.0 {
            Some(last) if at_ns.saturating_sub(last) < QUIET_NS => {
                slot.1 += 1;
                None
            }
            _ => {
                let suppressed = slot.1;
                *slot = (Some(at_ns), 0);
                Some(suppressed)
            }
        }
    }
}

impl Sink for LogSink {
    fn on_event(&mut self, at_ns: u64, event: &Event) {
        match *event {
            Event::Beat { .. } => {}
            Event::Stall {
                pid, last_beat_ns, ..
            } => tracing::warn!(
                pid,
                silent_ms = at_ns.saturating_sub(last_beat_ns) / 1_000_000,
                "agent stalled"
            ),
            Event::Recovered { pid, silent_ns, .. } => {
                tracing::info!(pid, silent_ms = silent_ns / 1_000_000, "agent recovered")
            }
            Event::Exit { pid, payload, .. } => {
                tracing::warn!(pid, payload, "agent sent its dying gasp (exit)")
            }
            Event::ClockJump { forward_ns } => tracing::warn!(
                forward_ms = forward_ns / 1_000_000,
                "observer woke late (suspend or VM pause?); agents get one threshold of grace"
            ),
            ref other => {
                if let Some(suppressed) = self.allow(at_ns, other) {
                    tracing::warn!(
                        kind = other.kind(),
                        pid = other.pid(),
                        detail = ?other,
                        suppressed,
                        "datagram dropped or observer problem"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_per_kind() {
        let mut s = LogSink::new();
        let e = Event::Ctrunc;
        assert_eq!(s.allow(0, &e), Some(0));
        assert_eq!(s.allow(1, &e), None);
        assert_eq!(s.allow(2, &e), None);
        assert_eq!(s.allow(QUIET_NS, &e), Some(2));
        // Another kind has its own budget.
        assert_eq!(s.allow(1, &Event::Io { errno: 5 }), Some(0));
    }
}
