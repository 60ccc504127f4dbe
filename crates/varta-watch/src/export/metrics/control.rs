//! `varta_control_*`: the control API (requests, event streams, what
//! agents snapshots cost the loop). Present at zero without the API, so
//! dashboards need no special case.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::enc::{counter, empty_histogram, gauge, histogram, Res};
use super::SECONDS_BUCKETS;
use crate::control::ControlStats;

pub(super) fn encode(e: &mut DescriptorEncoder, c: Option<&ControlStats>) -> Res {
    let hub = c.map(|c| c.events.as_ref());
    {
        let mut m = e.encode_descriptor(
            "varta_control_requests",
            "Control API requests answered, by route and HTTP status code.",
            None,
            MetricType::Counter,
        )?;
        for (route, code, n) in c.map(ControlStats::requests).unwrap_or_default() {
            let code = code.to_string();
            m.encode_family(&[("route", route), ("code", code.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
    }
    gauge(
        e,
        "varta_control_event_readers",
        "Control API event streams (GET /v1/events?follow=1) open now.",
        hub.map_or(0, |h| h.readers.load(Ordering::Relaxed)),
    )?;
    counter(
        e,
        "varta_control_event_readers_dropped",
        "Control API event streams cut because the reader fell more than 4096 events behind.",
        hub.map_or(0, |h| h.dropped.load(Ordering::Relaxed)),
    )?;
    counter(
        e,
        "varta_control_mirror_synced",
        "Agent changes the detection loop applied to the snapshot mirror in background syncs.",
        c.map_or(0, |c| c.mirror_synced.load(Ordering::Relaxed)),
    )?;
    let sync = "varta_control_mirror_sync_seconds";
    let sync_help = "Detection-loop time per background sync of the snapshot mirror.";
    match c {
        Some(c) => histogram(e, sync, sync_help, &c.mirror_sync_seconds)?,
        None => empty_histogram(e, sync, sync_help, &SECONDS_BUCKETS)?,
    }
    let seconds = "varta_control_snapshot_seconds";
    let seconds_help = "Detection-loop time per control API agents snapshot, all chunks together.";
    let chunk = "varta_control_snapshot_chunk_seconds";
    let chunk_help =
        "Longest single loop wake-up spent on one control API agents snapshot (one per snapshot).";
    match c {
        Some(c) => {
            histogram(e, seconds, seconds_help, &c.snapshot_seconds)?;
            histogram(e, chunk, chunk_help, &c.snapshot_chunk_seconds)
        }
        None => {
            empty_histogram(e, seconds, seconds_help, &SECONDS_BUCKETS)?;
            empty_histogram(e, chunk, chunk_help, &SECONDS_BUCKETS)
        }
    }
}
