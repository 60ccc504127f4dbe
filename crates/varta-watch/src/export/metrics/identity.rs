//! `varta_identity_lookups_total{result}`: what became of each new agent's
//! identity lookup. `queue_full` is the bounded budget at work — the agent
//! was named `unknown` at once rather than queued without bound — so it is
//! the family to alert on when names go missing under churn.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::DescriptorEncoder;

use super::enc::{counters_by, Res};
use crate::policy::PolicyStats;

/// Encodes the family; all zeros before the policy engine started.
pub(super) fn encode(e: &mut DescriptorEncoder, s: Option<&PolicyStats>) -> Res {
    let get = |f: fn(&PolicyStats) -> u64| s.map_or(0, f);
    counters_by(
        e,
        "varta_identity_lookups",
        "Identity lookups of new kernel-attested agents, by result: requested (queued to the identity thread), queue_full (named unknown at once: the bounded queue was full), gone (the process exited before /proc was read: named unknown), stale (the answer came after that pid's life had ended: discarded).",
        "result",
        [
            ("requested", get(|s| s.requested.load(Ordering::Relaxed))),
            ("queue_full", get(|s| s.queue_full.load(Ordering::Relaxed))),
            ("gone", get(|s| s.gone.load(Ordering::Relaxed))),
            ("stale", get(|s| s.stale.load(Ordering::Relaxed))),
        ],
    )
}
