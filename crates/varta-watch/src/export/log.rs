//! Operator-facing log lines for notable events. Agent lifecycle (stall,
//! recovered, exit) is logged up to 100 times per 10 s per kind — enough to
//! see every agent of a normal incident, bounded when thousands stall at
//! once; drops and errors at most once per 10 s per kind. Suppressed lines
//! are counted and reported with the next logged one. The export file and
//! counters always have every event.

use super::limit::RateLimit;
use crate::events::{Event, RecoveryOutcome, Sink};
use crate::policy::Names;

const WINDOW_NS: u64 = 10_000_000_000;
/// Lines per window for agent lifecycle kinds.
const LIFECYCLE_BUDGET: u32 = 100;

/// Logs events through `tracing`.
#[derive(Default)]
pub struct LogSink {
    /// One limiter per event kind, indexed by [`Event::index`].
    limiter: [RateLimit; Event::KINDS.len()],
    /// Agent names for lifecycle lines (`agent nginx.service[1234] …`).
    names: Option<Names>,
}

impl LogSink {
    /// A fresh limiter.
    pub fn new() -> LogSink {
        LogSink::default()
    }

    /// Names agents in lifecycle lines.
    pub fn with_names(mut self, names: Names) -> LogSink {
        self.names = Some(names);
        self
    }

    /// `name[pid]`, or `pid` alone while the name is unknown.
    fn agent(&self, pid: u32) -> String {
        match self.names.as_ref().and_then(|n| n.record(pid)) {
            Some(r) => format!("{}[{pid}]", r.name),
            None => format!("[{pid}]"),
        }
    }

    /// Whether this occurrence may be logged (`budget` lines per window);
    /// if so, how many were suppressed since the last logged one.
    fn allow(&mut self, at_ns: u64, e: &Event, budget: u32) -> Option<u64> {
        self.limiter[e.index()].allow(at_ns, WINDOW_NS, budget)
    }
}

impl Sink for LogSink {
    fn on_event(&mut self, at_ns: u64, event: &Event) {
        match *event {
            Event::Beat { .. } => {}
            Event::Stall {
                pid, last_beat_ns, ..
            } => {
                if let Some(suppressed) = self.allow(at_ns, event, LIFECYCLE_BUDGET) {
                    let silent_ms = at_ns.saturating_sub(last_beat_ns) / 1_000_000;
                    tracing::warn!(
                        pid,
                        silent_ms,
                        suppressed,
                        "agent {} stalled after {:.1} s",
                        self.agent(pid),
                        silent_ms as f64 / 1000.0
                    );
                }
            }
            Event::Recovered { pid, silent_ns, .. } => {
                if let Some(suppressed) = self.allow(at_ns, event, LIFECYCLE_BUDGET) {
                    tracing::info!(
                        pid,
                        silent_ms = silent_ns / 1_000_000,
                        suppressed,
                        "agent {} recovered after {:.1} s of silence",
                        self.agent(pid),
                        silent_ns as f64 / 1e9
                    );
                }
            }
            Event::Exit { pid, payload, .. } => {
                if let Some(suppressed) = self.allow(at_ns, event, LIFECYCLE_BUDGET) {
                    tracing::warn!(
                        pid,
                        payload,
                        suppressed,
                        "agent {} sent its dying gasp (exit)",
                        self.agent(pid)
                    );
                }
            }
            Event::Recovery {
                pid,
                child,
                outcome,
            } => {
                // Per-kind budget is shared by all outcomes: a mass stall
                // with recovery is bounded like the stalls themselves.
                if let Some(suppressed) = self.allow(at_ns, event, LIFECYCLE_BUDGET) {
                    log_recovery(pid, child, outcome, suppressed);
                }
            }
            Event::Identified { pid, rule, .. } => {
                if let Some(suppressed) = self.allow(at_ns, event, LIFECYCLE_BUDGET) {
                    tracing::debug!(
                        pid,
                        rule = rule.map(|r| u32::from(r) + 1),
                        suppressed,
                        "agent {} identified",
                        self.agent(pid)
                    );
                }
            }
            Event::Missing { name } => {
                let name = Names::show(self.names.as_ref(), name);
                tracing::warn!(%name, "required agent {name} is missing: no live agent of that name");
            }
            Event::Present { name, pid } => {
                let name = Names::show(self.names.as_ref(), name);
                tracing::info!(%name, pid, "required agent {name} is present (pid {pid})");
            }
            Event::ClockJump { forward_ns } => tracing::warn!(
                forward_ms = forward_ns / 1_000_000,
                "observer woke late (suspend or VM pause?); agents get one threshold of grace"
            ),
            ref other => {
                if let Some(suppressed) = self.allow(at_ns, other, 1) {
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

fn log_recovery(pid: u32, child: u32, outcome: RecoveryOutcome, suppressed: u64) {
    match outcome {
        RecoveryOutcome::Spawned => {
            tracing::info!(pid, child, suppressed, "recovery command started")
        }
        RecoveryOutcome::Debounced => {
            tracing::info!(pid, suppressed, "recovery debounced (a child still runs, or within the debounce window or backoff)")
        }
        RecoveryOutcome::ReapedZero => {
            tracing::info!(pid, child, suppressed, "recovery command succeeded")
        }
        RecoveryOutcome::ReapedNonzero { code } => {
            tracing::warn!(pid, child, code, suppressed, "recovery command failed")
        }
        RecoveryOutcome::Killed => tracing::warn!(
            pid,
            child,
            suppressed,
            "recovery command overran its timeout and was killed with its process group"
        ),
        RecoveryOutcome::SpawnFailed { errno } => tracing::error!(
            pid,
            error = %std::io::Error::from_raw_os_error(errno),
            suppressed,
            "recovery command could not be started"
        ),
        RecoveryOutcome::Refused(reason) => tracing::warn!(
            pid,
            reason = reason.as_str(),
            suppressed,
            "recovery refused"
        ),
        RecoveryOutcome::GivenUp => tracing::error!(
            pid,
            suppressed,
            "recovery given up: restart-storm cap reached (recovery-max-attempts within recovery-window-ms); no more attempts until the agent beats again and the window has room"
        ),
        RecoveryOutcome::GivenUpCleared => tracing::info!(
            pid,
            suppressed,
            "given-up agent beats again; recovery resumes once the window has room"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_per_kind() {
        let mut s = LogSink::new();
        let e = Event::Ctrunc;
        assert_eq!(s.allow(0, &e, 1), Some(0));
        assert_eq!(s.allow(1, &e, 1), None);
        assert_eq!(s.allow(2, &e, 1), None);
        assert_eq!(s.allow(WINDOW_NS, &e, 1), Some(2));
        // Another kind has its own budget.
        assert_eq!(s.allow(1, &Event::Io { errno: 5 }, 1), Some(0));
        // Lifecycle kinds get a larger budget per window.
        let stall = Event::Stall {
            pid: 5,
            last_nonce: 1,
            last_beat_ns: 0,
            origin: crate::events::Origin::KernelAttested,
            foreign_ns: false,
        };
        let logged = (0..500)
            .filter(|i| s.allow(*i, &stall, LIFECYCLE_BUDGET).is_some())
            .count();
        assert_eq!(logged, LIFECYCLE_BUDGET as usize);
        assert_eq!(s.allow(WINDOW_NS, &stall, LIFECYCLE_BUDGET), Some(400));
    }
}
