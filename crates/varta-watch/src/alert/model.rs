//! What an alert is: its name and severity, its identity in the firing
//! table ([`Key`]), its labels and annotations, and the Alertmanager v2
//! JSON it becomes (`POST /api/v2/alerts` takes an array of these).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The alerts Varta raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertName {
    /// An agent went silent past its threshold (`warning`): it may come
    /// back by itself, and recovery may be running.
    Stalled,
    /// Recovery reached its restart-storm cap for an agent (`critical`):
    /// nothing automatic will happen any more.
    GivenUp,
    /// A required agent name has no live agent (`critical`): a service
    /// that must run is not running.
    Missing,
}

impl AlertName {
    /// The `alertname` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertName::Stalled => "VartaAgentStalled",
            AlertName::GivenUp => "VartaAgentGivenUp",
            AlertName::Missing => "VartaAgentMissing",
        }
    }

    /// The `severity` label.
    pub const fn severity(self) -> &'static str {
        match self {
            AlertName::Stalled => "warning",
            AlertName::GivenUp | AlertName::Missing => "critical",
        }
    }
}

/// One alert's identity in the firing table: what a later event resolves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `VartaAgentStalled` of this pid.
    Stalled(u32),
    /// `VartaAgentGivenUp` of this pid.
    GivenUp(u32),
    /// `VartaAgentMissing` of this required name.
    Missing(Arc<str>),
}

impl Key {
    /// The alert this key stands for.
    pub fn name(&self) -> AlertName {
        match self {
            Key::Stalled(_) => AlertName::Stalled,
            Key::GivenUp(_) => AlertName::GivenUp,
            Key::Missing(_) => AlertName::Missing,
        }
    }
}

/// The agent an alert is about, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agent {
    /// Agent pid (none for a missing name).
    pub pid: Option<u32>,
    /// Its name (the required name for a missing one).
    pub name: Option<Arc<str>>,
    /// Its systemd unit.
    pub unit: Option<Arc<str>>,
    /// Its container id.
    pub container: Option<Arc<str>>,
}

impl Agent {
    /// `name (pid N)`, `pid N` or `name`, for sentences.
    pub fn describe(&self) -> String {
        match (&self.name, self.pid) {
            (Some(n), Some(p)) => format!("{n} (pid {p})"),
            (None, Some(p)) => format!("pid {p}"),
            (Some(n), None) => n.to_string(),
            (None, None) => "an agent".into(),
        }
    }

    /// ` in unit U, container C` or empty.
    fn whereabouts(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.unit {
            s.push_str(&format!(", unit {u}"));
        }
        if let Some(c) = &self.container {
            s.push_str(&format!(", container {c}"));
        }
        s
    }
}

/// One alert as sent: labels, annotations, times.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// `alertname`, `severity`, `instance`, then what is known of the
    /// agent: `name`, `unit`, `container`, `pid`.
    pub labels: Vec<(&'static str, Arc<str>)>,
    /// Short sentence.
    pub summary: String,
    /// Longer sentence: who, since when, what it means.
    pub description: String,
    /// When the condition began.
    pub starts_at: SystemTime,
    /// Firing: a few resend intervals ahead; resolved: the resolution time.
    pub ends_at: SystemTime,
}

/// Seconds with one decimal, for sentences.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What the firing table keeps per alert to (re)render it.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// Which alert.
    pub key: Key,
    /// Who.
    pub agent: Agent,
    /// When the condition began (stall: the last beat; given up / missing:
    /// the event).
    pub since: SystemTime,
    /// When the alert first fired (`startsAt`).
    pub starts_at: SystemTime,
}

impl Facts {
    /// The alert at `now`, with `ends_at`.
    pub fn render(&self, instance: &Arc<str>, now: SystemTime, ends_at: SystemTime) -> Alert {
        let name = self.key.name();
        let mut labels: Vec<(&'static str, Arc<str>)> = vec![
            ("alertname", Arc::from(name.as_str())),
            ("severity", Arc::from(name.severity())),
            ("instance", instance.clone()),
        ];
        let a = &self.agent;
        for (label, value) in [
            ("name", &a.name),
            ("unit", &a.unit),
            ("container", &a.container),
        ] {
            if let Some(v) = value {
                labels.push((label, v.clone()));
            }
        }
        if let Some(pid) = a.pid {
            labels.push(("pid", Arc::from(pid.to_string())));
        }
        let silent = now.duration_since(self.since).unwrap_or_default();
        let who = a.describe();
        let (summary, description) = match name {
            AlertName::Stalled => (
                format!("Agent {who} stalled on {instance}"),
                format!(
                    "Agent {who}{} has sent no heartbeat for {}; the observer on {instance} reports it stalled (silent past its threshold).",
                    a.whereabouts(),
                    secs(silent)
                ),
            ),
            AlertName::GivenUp => (
                format!("Recovery gave up on agent {who} on {instance}"),
                format!(
                    "Recovery of agent {who}{} reached its restart-storm cap {} ago; no more recovery attempts until it beats again. Someone has to look at it.",
                    a.whereabouts(),
                    secs(silent)
                ),
            ),
            AlertName::Missing => (
                format!("Required agent {who} is missing on {instance}"),
                format!(
                    "No live agent named {who} on {instance} for {}: the required agent never started, exited or stalled.",
                    secs(silent)
                ),
            ),
        };
        Alert {
            labels,
            summary,
            description,
            starts_at: self.starts_at,
            ends_at,
        }
    }
}

/// RFC 3339 in UTC with microseconds (Alertmanager parses any fraction;
/// microseconds let a receiver measure the push latency).
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[derive(Serialize)]
struct Wire<'a> {
    labels: BTreeMap<&'static str, &'a str>,
    annotations: BTreeMap<&'static str, &'a str>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
}

/// The JSON body of one `POST /api/v2/alerts`.
pub fn body<'a>(alerts: impl IntoIterator<Item = &'a Alert>) -> Vec<u8> {
    let wire: Vec<Wire<'_>> = alerts
        .into_iter()
        .map(|a| Wire {
            labels: a.labels.iter().map(|(k, v)| (*k, &**v)).collect(),
            annotations: BTreeMap::from([
                ("summary", a.summary.as_str()),
                ("description", a.description.as_str()),
            ]),
            starts_at: rfc3339(a.starts_at),
            ends_at: rfc3339(a.ends_at),
        })
        .collect();
    // Serializing maps of strings cannot fail.
    serde_json::to_vec(&wire).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shape() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let f = Facts {
            key: Key::Stalled(42),
            agent: Agent {
                pid: Some(42),
                name: Some("nginx.service".into()),
                unit: Some("nginx.service".into()),
                container: None,
            },
            since: t0,
            starts_at: t0 + Duration::from_secs(5),
        };
        let a = f.render(
            &Arc::from("host1"),
            t0 + Duration::from_secs(7),
            t0 + Duration::from_secs(247),
        );
        let v: serde_json::Value = serde_json::from_slice(&body([&a])).unwrap();
        let one = &v[0];
        assert_eq!(one["labels"]["alertname"], "VartaAgentStalled");
        assert_eq!(one["labels"]["severity"], "warning");
        assert_eq!(one["labels"]["instance"], "host1");
        assert_eq!(one["labels"]["name"], "nginx.service");
        assert_eq!(one["labels"]["unit"], "nginx.service");
        assert_eq!(one["labels"]["pid"], "42");
        assert!(
            one["labels"].get("container").is_none(),
            "unknown labels are left out"
        );
        assert_eq!(one["startsAt"], "2027-01-15T08:00:05.000000Z");
        assert_eq!(one["endsAt"], "2027-01-15T08:04:07.000000Z");
        let d = one["annotations"]["description"].as_str().unwrap();
        assert!(
            d.contains("nginx.service (pid 42)") && d.contains("7.0 s"),
            "{d}"
        );
        assert!(one["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("stalled"));
        assert_eq!(one.as_object().unwrap().len(), 4);
    }

    #[test]
    fn missing_has_no_pid_and_is_critical() {
        let t0 = SystemTime::UNIX_EPOCH;
        let f = Facts {
            key: Key::Missing("db".into()),
            agent: Agent {
                name: Some("db".into()),
                ..Agent::default()
            },
            since: t0,
            starts_at: t0,
        };
        let a = f.render(&Arc::from("h"), t0, t0);
        let labels: Vec<&str> = a.labels.iter().map(|(k, _)| *k).collect();
        assert_eq!(labels, ["alertname", "severity", "instance", "name"]);
        assert_eq!(&*a.labels[1].1, "critical");
        assert_eq!(&*a.labels[0].1, "VartaAgentMissing");
    }
}
