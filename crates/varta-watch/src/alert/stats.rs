//! Counters of the Alertmanager push, read by `/metrics`
//! (`varta_alertmanager_*`) and tests. Lock-free: bumped by the detection
//! thread (queue), the alert thread and the sender threads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why alerts were dropped for a target (`reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue from the detection thread was full: the event never
    /// reached the alert thread (counted for every target), or the
    /// target's own outbox was full.
    QueueFull,
    /// Every retry of a request failed.
    RetriesExhausted,
    /// The Alertmanager refused the request as malformed (4xx other than
    /// 408 and 429): retrying cannot help.
    Rejected,
    /// Still unsent when the shutdown flush bound ran out.
    Shutdown,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::RetriesExhausted,
        DropReason::Rejected,
        DropReason::Shutdown,
    ];

    /// The `reason` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Rejected => "rejected",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// One target's counters.
#[derive(Debug)]
pub struct TargetStats {
    /// The target's base URL (`target` label).
    pub target: String,
    sent: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    dropped: [AtomicU64; 4],
}

impl TargetStats {
    fn new(target: String) -> TargetStats {
        TargetStats {
            target,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            dropped: Default::default(),
        }
    }

    /// Alerts the target accepted (2xx).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Alerts in requests that failed, once per failed attempt.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// POSTs attempted.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Alerts dropped for `reason` by this target's sender (the shared
    /// queue's drops are in [`AlertStats::queue_dropped`]).
    pub fn dropped_here(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    pub(super) fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(super) fn add_failed(&self, n: usize) {
        self.failed.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(super) fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_dropped(&self, reason: DropReason, n: usize) {
        self.dropped[reason as usize].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// All counters of the push.
#[derive(Debug)]
pub struct AlertStats {
    /// One per `--alertmanager-url`, in order.
    pub targets: Vec<TargetStats>,
    enqueued: AtomicU64,
    dequeued: AtomicU64,
    queue_dropped: AtomicU64,
}

impl AlertStats {
    /// Zeroed counters for `targets`.
    pub fn new(targets: &[String]) -> AlertStats {
        AlertStats {
            targets: targets.iter().cloned().map(TargetStats::new).collect(),
            enqueued: AtomicU64::new(0),
            dequeued: AtomicU64::new(0),
            queue_dropped: AtomicU64::new(0),
        }
    }

    /// Messages waiting in the queue from the detection thread.
    pub fn queue_depth(&self) -> u64 {
        let out = self.dequeued.load(Ordering::Relaxed);
        self.enqueued.load(Ordering::Relaxed).saturating_sub(out)
    }

    /// Events lost because that queue was full (lost for every target).
    pub fn queue_dropped(&self) -> u64 {
        self.queue_dropped.load(Ordering::Relaxed)
    }

    /// `varta_alertmanager_alerts_dropped_total{target, reason}`.
    pub fn dropped(&self, target: &TargetStats, reason: DropReason) -> u64 {
        let shared = if reason == DropReason::QueueFull {
            self.queue_dropped()
        } else {
            0
        };
        shared + target.dropped_here(reason)
    }

    pub(super) fn on_enqueued(&self) {
        self.enqueued.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn on_dequeued(&self) {
        self.dequeued.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn on_queue_full(&self) {
        self.queue_dropped.fetch_add(1, Ordering::Relaxed);
    }
}
