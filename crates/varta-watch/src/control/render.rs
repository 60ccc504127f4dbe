//! JSON shapes of `docs/api.md`, built on the HTTP thread.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::query::state_name;
use super::record::AgentRecord;
use super::snapshot::AgentsSnapshot;
use super::{LastReload, ReloadOutcome, Shared};
use crate::identity::{IdentityRecord, Registry};
use crate::recovery::history::RecoveryHistory;
use crate::tracker::SlotState;

/// One `<agent>`.
pub fn agent(
    snap: &AgentsSnapshot,
    s: &AgentRecord,
    registry: &Registry,
    history: Option<&RecoveryHistory>,
    recovery_on: bool,
) -> Value {
    let rec: Option<std::sync::Arc<IdentityRecord>> = s.identity().map(|id| registry.get(id));
    let r = rec.as_deref();
    let age_ns = snap.now_ns.saturating_sub(s.last_beat_ns);
    let age_ms = age_ns / 1_000_000;
    let recovery = if recovery_on {
        let h = history.and_then(|h| h.get(s.pid)).unwrap_or_default();
        json!({
            "attempts": h.attempts,
            "last_outcome": h.last_outcome,
            "given_up": h.given_up,
        })
    } else {
        Value::Null
    };
    json!({
        "pid": s.pid,
        "state": state_name(s),
        "name": r.map_or(crate::identity::UNKNOWN, |r| &*r.name),
        "unit": r.and_then(|r| r.unit.as_deref()),
        "container": r.and_then(|r| r.container.as_deref()),
        "comm": r.and_then(|r| r.comm.as_deref()),
        "exe": r.and_then(|r| r.exe.as_deref()),
        "uid": r.and_then(|r| r.uid),
        "peer": r.and_then(|r| r.peer).map(|p| p.to_string()),
        "origin": s.origin().as_str(),
        "last_beat_unix_ms": snap.wall_unix_ms.saturating_sub(age_ms),
        "last_beat_age_ms": age_ms,
        "nonce": s.nonce(),
        // As /metrics: `stall` while the observer considers it stalled.
        "status": if s.state() == SlotState::Stalled { "stall" } else { s.status().as_str() },
        "payload": s.payload,
        "rule": s.rule().map(|r| u32::from(r) + 1),
        "threshold_ms": snap.threshold_ms(s),
        "recovery": recovery,
    })
}

/// The body of a reload answer (and `last_reload` without its time).
pub fn reload(o: &ReloadOutcome) -> Value {
    match o {
        ReloadOutcome::Applied {
            changes,
            restart_needed,
        } => {
            json!({"result": "applied", "changes": changes, "restart_needed": restart_needed, "error": null})
        }
        ReloadOutcome::Unchanged => {
            json!({"result": "unchanged", "changes": [], "restart_needed": [], "error": null})
        }
        ReloadOutcome::Failed { error } => {
            json!({"result": "failed", "changes": [], "restart_needed": [], "error": error})
        }
    }
}

fn last_reload(l: Option<LastReload>) -> Value {
    match l {
        None => Value::Null,
        Some(l) => {
            let mut v = reload(&l.outcome);
            v["at_unix_ms"] = json!(l.at_unix_ms);
            v
        }
    }
}

/// `/v1/status`.
pub fn status(shared: &Shared, snap: &AgentsSnapshot, tracker_capacity: u32) -> Value {
    let settings = shared.settings();
    let listeners = shared.listeners();
    let (alive, stalled, exited) = snap.extras.counts;
    let missing: Vec<String> = snap
        .extras
        .missing
        .iter()
        .map(|n| shared.registry.name_str(*n).to_string())
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": shared.uptime().as_secs_f64(),
        "config_file": settings.config_file,
        "listeners": {
            "socket": listeners.socket,
            "control": listeners.control,
            "udp": listeners.udp,
            "metrics": listeners.metrics,
        },
        "threshold_ms": settings.threshold_ms,
        "tracker_capacity": tracker_capacity,
        "rules": settings.rules.iter().map(|r| json!({
            "index": r.index,
            "match": r.matcher,
            "threshold_ms": r.threshold_ms,
            "startup_grace_ms": r.startup_grace_ms,
            "required": r.required,
            "recovery": r.recovery,
        })).collect::<Vec<_>>(),
        "counts": {
            "alive": alive,
            "stalled": stalled,
            "exited": exited,
            "given_up": snap.extras.given_up,
            "missing": missing.len(),
        },
        "missing": missing,
        "last_reload": last_reload(shared.last_reload()),
        "snapshot_age_ms": snap.age_ms(),
        // Ours, beyond docs/api.md's minimum: what the last agents snapshot
        // cost the detection loop.
        "snapshot": {
            "agents": snap.order().len(),
            "loop_us": snap.loop_time.as_micros() as u64,
            "longest_chunk_us": snap.longest_chunk.as_micros() as u64,
            "copied": snap.copied,
            "full": snap.full,
            // Keeping the mirror current between snapshots, since start.
            "mirror_syncs": shared.stats.mirror_syncs.load(Ordering::Relaxed),
            "mirror_synced": shared.stats.mirror_synced.load(Ordering::Relaxed),
            "mirror_sync_us": shared.stats.mirror_sync_us.load(Ordering::Relaxed),
        },
    })
}
