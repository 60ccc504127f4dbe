//! The firing-alert table, owned by the alert thread: what fires, what is
//! resolved, and what the resend timer re-sends. Pure state: it turns
//! [`Msg`]s and resend ticks into alerts to send and never does I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::model::{Agent, Alert, Facts, Key};

/// Firing alerts are sent with `endsAt` this many resend intervals ahead,
/// so a few lost re-sends never let Alertmanager resolve them by timeout.
pub const ENDS_AT_RESENDS: u32 = 4;

/// What the detection thread tells the alert thread: a copy of the event
/// and the agent's identity strings (shared `Arc`s), nothing more.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    /// `stall`: fire `VartaAgentStalled`.
    Stalled {
        /// Who.
        agent: Agent,
        /// Wall time of its last beat.
        last_beat: SystemTime,
        /// Wall time of the stall.
        at: SystemTime,
    },
    /// Recovery gave up on the agent: fire `VartaAgentGivenUp`.
    GivenUp {
        /// Who.
        agent: Agent,
        /// When.
        at: SystemTime,
    },
    /// A required name is missing: fire `VartaAgentMissing`.
    Missing {
        /// The name.
        name: Arc<str>,
        /// When.
        at: SystemTime,
    },
    /// The agent beat again (`recovered`, `given_up_cleared`): resolve its
    /// stall and given-up alerts.
    Beats {
        /// Agent pid.
        pid: u32,
        /// When.
        at: SystemTime,
    },
    /// Dying gasp: resolve its stall alert (a given-up alert stays).
    Exited {
        /// Agent pid.
        pid: u32,
        /// When.
        at: SystemTime,
    },
    /// This life of the pid is over for the observer (a new process has
    /// the pid, or its slot was evicted): resolve both of its alerts, as
    /// nothing would ever resolve them otherwise.
    Gone {
        /// Agent pid.
        pid: u32,
        /// When.
        at: SystemTime,
    },
    /// A required name is present again: resolve `VartaAgentMissing`.
    Present {
        /// The name.
        name: Arc<str>,
        /// When.
        at: SystemTime,
    },
}

/// The firing alerts and how to render them.
pub struct Table {
    firing: HashMap<Key, Facts>,
    instance: Arc<str>,
    resend: Duration,
}

impl Table {
    /// An empty table; alerts carry `instance`, firing ones are re-sent
    /// every `resend`.
    pub fn new(instance: Arc<str>, resend: Duration) -> Table {
        Table {
            firing: HashMap::new(),
            instance,
            resend,
        }
    }

    /// Alerts firing now.
    pub fn len(&self) -> usize {
        self.firing.len()
    }

    /// Whether nothing fires.
    pub fn is_empty(&self) -> bool {
        self.firing.is_empty()
    }

    /// Whether `key` fires.
    pub fn is_firing(&self, key: &Key) -> bool {
        self.firing.contains_key(key)
    }

    fn ends_at(&self, now: SystemTime) -> SystemTime {
        now + self.resend * ENDS_AT_RESENDS
    }

    /// Applies one message; pushes what must be sent now onto `out`.
    pub fn apply(&mut self, msg: Msg, out: &mut Vec<(Key, Alert)>) {
        match msg {
            Msg::Stalled {
                agent,
                last_beat,
                at,
            } => {
                let Some(pid) = agent.pid else { return };
                self.fire(Key::Stalled(pid), agent, last_beat, at, out);
            }
            Msg::GivenUp { agent, at } => {
                let Some(pid) = agent.pid else { return };
                self.fire(Key::GivenUp(pid), agent, at, at, out);
            }
            Msg::Missing { name, at } => {
                let agent = Agent {
                    name: Some(name.clone()),
                    ..Agent::default()
                };
                self.fire(Key::Missing(name), agent, at, at, out);
            }
            Msg::Beats { pid, at } | Msg::Gone { pid, at } => {
                self.resolve(&Key::Stalled(pid), at, out);
                self.resolve(&Key::GivenUp(pid), at, out);
            }
            Msg::Exited { pid, at } => self.resolve(&Key::Stalled(pid), at, out),
            Msg::Present { name, at } => self.resolve(&Key::Missing(name), at, out),
        }
    }

    fn fire(
        &mut self,
        key: Key,
        agent: Agent,
        since: SystemTime,
        at: SystemTime,
        out: &mut Vec<(Key, Alert)>,
    ) {
        // A repeated fire (a given-up agent given up again) keeps the
        // original start: it is the same condition.
        let starts_at = self.firing.get(&key).map_or(at, |f| f.starts_at);
        let since = self.firing.get(&key).map_or(since, |f| f.since);
        let facts = Facts {
            key: key.clone(),
            agent,
            since,
            starts_at,
        };
        out.push((
            key.clone(),
            facts.render(&self.instance, at, self.ends_at(at)),
        ));
        self.firing.insert(key, facts);
    }

    fn resolve(&mut self, key: &Key, at: SystemTime, out: &mut Vec<(Key, Alert)>) {
        if let Some(facts) = self.firing.remove(key) {
            // endsAt not before startsAt, whatever the wall clock did.
            let ends = at.max(facts.starts_at);
            out.push((key.clone(), facts.render(&self.instance, at, ends)));
        }
    }

    /// The resend timer: every firing alert again, `endsAt` pushed ahead.
    pub fn resend(&self, now: SystemTime, out: &mut Vec<(Key, Alert)>) {
        let ends = self.ends_at(now);
        out.extend(
            self.firing
                .iter()
                .map(|(k, f)| (k.clone(), f.render(&self.instance, now, ends))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn agent(pid: u32) -> Agent {
        Agent {
            pid: Some(pid),
            name: Some("app".into()),
            ..Agent::default()
        }
    }

    fn label<'a>(a: &'a Alert, k: &str) -> Option<&'a str> {
        a.labels.iter().find(|(n, _)| *n == k).map(|(_, v)| &**v)
    }

    #[test]
    fn fire_resend_resolve_refire() {
        let mut tab = Table::new("h".into(), Duration::from_secs(60));
        let mut out = Vec::new();
        tab.apply(
            Msg::Stalled {
                agent: agent(7),
                last_beat: t(0),
                at: t(5),
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let (k, a) = &out[0];
        assert_eq!(*k, Key::Stalled(7));
        assert_eq!(label(a, "alertname"), Some("VartaAgentStalled"));
        assert_eq!(a.starts_at, t(5));
        assert_eq!(a.ends_at, t(5 + 240), "endsAt = now + 4 x resend");
        assert!(tab.is_firing(&Key::Stalled(7)));

        out.clear();
        tab.resend(t(65), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.starts_at, t(5), "a re-send keeps startsAt");
        assert_eq!(out[0].1.ends_at, t(65 + 240));
        assert!(
            out[0].1.description.contains("65.0 s"),
            "silent since the last beat"
        );

        out.clear();
        tab.apply(Msg::Beats { pid: 7, at: t(70) }, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.ends_at, t(70), "resolved: endsAt = now");
        assert!(tab.is_empty());

        out.clear();
        tab.resend(t(125), &mut out);
        assert!(out.is_empty(), "nothing fires, nothing is re-sent");
        tab.apply(Msg::Beats { pid: 7, at: t(126) }, &mut out);
        assert!(out.is_empty(), "resolving twice sends nothing");

        tab.apply(
            Msg::Stalled {
                agent: agent(7),
                last_beat: t(126),
                at: t(131),
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.starts_at, t(131), "a new stall is a new alert");
    }

    #[test]
    fn given_up_missing_exit_and_gone() {
        let mut tab = Table::new("h".into(), Duration::from_secs(10));
        let mut out = Vec::new();
        tab.apply(
            Msg::Stalled {
                agent: agent(1),
                last_beat: t(0),
                at: t(1),
            },
            &mut out,
        );
        tab.apply(
            Msg::GivenUp {
                agent: agent(1),
                at: t(2),
            },
            &mut out,
        );
        tab.apply(
            Msg::Missing {
                name: "db".into(),
                at: t(3),
            },
            &mut out,
        );
        assert_eq!(tab.len(), 3);
        assert_eq!(label(&out[1].1, "severity"), Some("critical"));
        assert_eq!(label(&out[2].1, "pid"), None);
        out.clear();
        // Exit resolves the stall only.
        tab.apply(Msg::Exited { pid: 1, at: t(4) }, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Key::Stalled(1));
        assert!(tab.is_firing(&Key::GivenUp(1)));
        out.clear();
        tab.apply(Msg::Gone { pid: 1, at: t(5) }, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Key::GivenUp(1));
        out.clear();
        tab.apply(
            Msg::Present {
                name: "db".into(),
                at: t(6),
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert!(tab.is_empty());
    }

    #[test]
    fn repeated_fire_keeps_start() {
        let mut tab = Table::new("h".into(), Duration::from_secs(10));
        let mut out = Vec::new();
        for at in [t(2), t(9)] {
            tab.apply(
                Msg::GivenUp {
                    agent: agent(3),
                    at,
                },
                &mut out,
            );
        }
        assert_eq!(out[1].1.starts_at, t(2));
        assert_eq!(tab.len(), 1);
    }
}
