//! `varta_alertmanager_*`: the Alertmanager push's counters per target
//! (crate::alert). Absent without `--alertmanager-url`; every target and
//! drop reason present at zero from the first render otherwise.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::enc::{counters_by, gauge, Res};
use crate::alert::{AlertStats, DropReason};

/// The families, if the push is on.
pub(super) fn encode(e: &mut DescriptorEncoder, stats: Option<&AlertStats>) -> Res {
    let Some(s) = stats else {
        return Ok(());
    };
    counters_by(
        e,
        "varta_alertmanager_alerts_sent",
        "Alerts an Alertmanager accepted (2xx), by target.",
        "target",
        s.targets.iter().map(|t| (t.target.as_str(), t.sent())),
    )?;
    counters_by(
        e,
        "varta_alertmanager_alerts_failed",
        "Alerts in POSTs that failed and will be retried (connection error, timeout, 5xx, 408, 429), once per failed attempt, by target.",
        "target",
        s.targets.iter().map(|t| (t.target.as_str(), t.failed())),
    )?;
    let mut m = e.encode_descriptor(
        "varta_alertmanager_alerts_dropped",
        "Alerts never delivered to a target, by reason: queue_full (queue from the detection thread or the target's outbox full), retries_exhausted, rejected (4xx), shutdown (flush bound ran out).",
        None,
        MetricType::Counter,
    )?;
    for t in &s.targets {
        for r in DropReason::ALL {
            m.encode_family(&[("target", t.target.as_str()), ("reason", r.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&s.dropped(t, r), None)?;
        }
    }
    gauge(
        e,
        "varta_alertmanager_queue_depth",
        "Events waiting in the queue from the detection thread to the alert thread.",
        s.queue_depth(),
    )
}
