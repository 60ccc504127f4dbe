//! The JSON shapes of the control API (docs/api.md), as the CLI reads
//! them. Every field is optional or defaulted so that an observer adding a
//! field, or leaving one out, does not break the CLI; unknown fields are
//! ignored.

use serde::Deserialize;
use serde_json::Value;

/// `GET /v1/status`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StatusDoc {
    /// Observer version.
    pub version: String,
    /// Observer pid.
    pub pid: Option<u32>,
    /// Seconds since the observer started.
    pub uptime_s: f64,
    /// `--config` file, if any.
    pub config_file: Option<String>,
    /// Listener addresses, `None` when off.
    pub listeners: Listeners,
    /// Global stall threshold.
    pub threshold_ms: Option<u64>,
    /// Tracker capacity (agents).
    pub tracker_capacity: Option<u64>,
    /// `[[agent]]` rules.
    pub rules: Vec<Rule>,
    /// Agents per state.
    pub counts: Counts,
    /// Required agent names not seen.
    pub missing: Vec<String>,
    /// The last reload, `None` before the first.
    pub last_reload: Option<LastReload>,
    /// Age of the snapshot the answer was built from.
    pub snapshot_age_ms: Option<u64>,
}

/// `listeners` of the status.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Listeners {
    /// Beat socket.
    pub socket: Option<String>,
    /// Control socket.
    pub control: Option<String>,
    /// UDP listener.
    pub udp: Option<String>,
    /// Metrics/HTTP listener.
    pub metrics: Option<String>,
}

/// One `[[agent]]` rule summary.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Rule {
    /// 1-based rule index.
    pub index: u32,
    /// The match expression.
    #[serde(rename = "match")]
    pub matcher: String,
    /// The rule's threshold.
    pub threshold_ms: Option<u64>,
    /// Startup grace.
    pub startup_grace_ms: Option<u64>,
    /// Whether an agent matching it must be present.
    pub required: bool,
    /// `global`, `rule` or `off`.
    pub recovery: Option<String>,
}

/// Agents per state.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Beating.
    pub alive: u64,
    /// Silent past their threshold.
    pub stalled: u64,
    /// Exited.
    pub exited: u64,
    /// Recovery gave up (also counted as stalled).
    pub given_up: u64,
    /// Required names not seen.
    pub missing: u64,
}

/// `last_reload` of the status.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LastReload {
    /// Wall-clock time of the reload.
    pub at_unix_ms: Option<u64>,
    /// `applied`, `unchanged` or `failed`.
    pub result: String,
    /// What changed.
    pub changes: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A page of `GET /v1/agents`; agents are kept as JSON so `--json` passes
/// them through unchanged.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AgentsPage {
    /// The agents of this page.
    pub agents: Vec<Value>,
    /// Agents matching the filters in the snapshot.
    pub total: Option<u64>,
    /// Cursor of the next page, `None` on the last one.
    pub next_cursor: Option<Value>,
    /// Age of the snapshot.
    pub snapshot_age_ms: Option<u64>,
}

impl AgentsPage {
    /// The next cursor as query text (the contract shows a string; a number
    /// is accepted too), `None` on the last page.
    pub fn cursor(&self) -> Option<String> {
        match self.next_cursor.as_ref()? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// An `<agent>` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Agent {
    /// Process id.
    pub pid: u32,
    /// `alive`, `stalled`, `exited`.
    pub state: String,
    /// Resolved name, `unknown` until known.
    pub name: Option<String>,
    /// systemd unit.
    pub unit: Option<String>,
    /// Container id or name.
    pub container: Option<String>,
    /// `/proc/PID/comm`.
    pub comm: Option<String>,
    /// `/proc/PID/exe`.
    pub exe: Option<String>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// UDP source of a network agent.
    pub peer: Option<String>,
    /// `kernel_attested`, `network_unverified`, `network_verified`.
    pub origin: Option<String>,
    /// Wall-clock time of the last beat.
    pub last_beat_unix_ms: Option<u64>,
    /// Observer-clock age of the last beat at the snapshot.
    pub last_beat_age_ms: Option<u64>,
    /// Last nonce.
    pub nonce: Option<u64>,
    /// Last reported status.
    pub status: Option<String>,
    /// Last payload.
    pub payload: Option<u32>,
    /// 1-based rule index.
    pub rule: Option<u32>,
    /// Threshold in force for this agent.
    pub threshold_ms: Option<u64>,
    /// Recovery state, `None` when recovery is off.
    pub recovery: Option<Recovery>,
}

impl Agent {
    /// `given_up` when recovery gave up, else the state.
    pub fn display_state(&self) -> &str {
        match &self.recovery {
            Some(r) if r.given_up => "given_up",
            _ => &self.state,
        }
    }

    /// `unit` or `container` (or both, `unit/container`), `-` when neither.
    pub fn unit_or_container(&self) -> String {
        match (&self.unit, &self.container) {
            (Some(u), Some(c)) => format!("{u}/{c}"),
            (Some(u), None) => u.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => "-".to_owned(),
        }
    }
}

/// Recovery state of an agent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Recovery {
    /// Attempts so far.
    pub attempts: u64,
    /// Outcome of the last attempt.
    pub last_outcome: Option<String>,
    /// Recovery gave up.
    pub given_up: bool,
}

/// `POST /v1/reload`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReloadDoc {
    /// `applied`, `unchanged` or `failed`.
    pub result: String,
    /// What changed.
    pub changes: Vec<String>,
    /// Changed settings that only take effect on restart.
    pub restart_needed: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
}
