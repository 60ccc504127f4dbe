//! The alert thread: drains the queue from the detection thread, keeps the
//! firing table, hands rendered alerts to every target's sender, and runs
//! the resend timer. Everything that arrived together goes out together:
//! a burst of 10,000 stalls is applied in one go and leaves as one batch
//! per target (chunked by the sender), not 10,000 requests.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::model::{Alert, Key};
use super::sender::Outlet;
use super::stats::AlertStats;
use super::table::{Msg, Table};

/// Messages applied per wake-up before the batch is handed on: large
/// enough for a mass stall, bounded so the resend timer is never starved.
const DRAIN_MAX: usize = 1 << 17;

/// What the thread works with.
pub(super) struct Service {
    pub rx: Receiver<Msg>,
    pub table: Table,
    pub outlets: Vec<Arc<Outlet>>,
    pub stats: Arc<AlertStats>,
    pub resend: Duration,
    /// How long the final flush may take once the queue is closed.
    pub flush_bound: Duration,
}

impl Service {
    /// Runs until the sending side of the queue is dropped (shutdown),
    /// then flushes within `flush_bound`.
    pub fn run(mut self) {
        super::lower_priority();
        let mut out: Vec<(Key, Alert)> = Vec::new();
        let mut next_resend = Instant::now() + self.resend;
        loop {
            let wait = next_resend.saturating_duration_since(Instant::now());
            let open = match self.rx.recv_timeout(wait) {
                Ok(first) => {
                    self.stats.on_dequeued();
                    self.table.apply(first, &mut out);
                    // Everything already queued joins this batch.
                    for _ in 1..DRAIN_MAX {
                        match self.rx.try_recv() {
                            Ok(m) => {
                                self.stats.on_dequeued();
                                self.table.apply(m, &mut out);
                            }
                            Err(_) => break,
                        }
                    }
                    true
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => false,
            };
            let now = Instant::now();
            if open && now >= next_resend {
                self.table.resend(SystemTime::now(), &mut out);
                // From now, not from the missed tick: after a long pause
                // one resend, not a burst of them.
                next_resend = now + self.resend;
            }
            self.hand_on(&mut out);
            if !open {
                break;
            }
        }
        self.flush();
    }

    fn hand_on(&self, out: &mut Vec<(Key, Alert)>) {
        if out.is_empty() {
            return;
        }
        for (i, o) in self.outlets.iter().enumerate() {
            o.push(out, &self.stats, i);
        }
        out.clear();
    }

    /// Shutdown: every sender gets until the bound to deliver what waits.
    fn flush(&self) {
        let deadline = Instant::now() + self.flush_bound;
        for o in &self.outlets {
            o.stop(deadline);
        }
        for o in &self.outlets {
            // A sender stuck in a request past the bound is left behind:
            // the process is exiting, and the bound is what we promised.
            o.wait_finished(deadline);
        }
    }
}
