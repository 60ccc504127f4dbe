//! Query parameters of the API routes, and the agent listing (filters,
//! paging) over an [`AgentsSnapshot`] — pure functions, run on the HTTP
//! thread.

use rustc_hash::{FxHashMap, FxHashSet};

use super::record::AgentRecord;
use super::snapshot::AgentsSnapshot;
use crate::config::Pattern;
use crate::identity::{IdentityId, Registry};
use crate::tracker::SlotState;

/// `limit` of `/v1/agents`: default and largest.
pub const AGENTS_LIMIT: (usize, usize) = (1000, 10_000);
/// `limit` of `/v1/events`: default and largest.
pub const EVENTS_LIMIT: (usize, usize) = (100, super::events::RING);

/// Splits a query string into decoded (key, value) pairs; every key must
/// be one of `allowed` and appear once.
pub fn params<'a>(
    query: Option<&str>,
    allowed: &[&'a str],
) -> Result<FxHashMap<&'a str, String>, String> {
    let mut out = FxHashMap::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        let Some(key) = allowed.iter().find(|a| **a == k) else {
            return Err(format!(
                "unknown query parameter `{k}`; this route takes: {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ));
        };
        if out.insert(*key, decode(v)?).is_some() {
            return Err(format!("query parameter `{k}` given twice"));
        }
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("query text `{s}` is not valid UTF-8 once decoded"))
}

/// A number in `1..=max` (`default` when absent).
pub fn limit(v: Option<&String>, (default, max): (usize, usize)) -> Result<usize, String> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("limit={s} is not a number from 1 to {max}")),
        },
    }
}

/// Agent state as the API names it.
pub fn state_name(s: &AgentRecord) -> &'static str {
    match s.state() {
        SlotState::Live => "alive",
        SlotState::Stalled => "stalled",
        SlotState::Exited => "exited",
        SlotState::Free => "free",
    }
}

/// The filters of `/v1/agents`.
#[derive(Debug, Default)]
pub struct Filter {
    /// Wanted states (`alive`, `stalled`, `exited`); empty: any.
    states: Vec<&'static str>,
    /// `given_up` was asked for: pids recovery has given up on.
    given_up: Option<FxHashSet<u32>>,
    name: Option<Pattern>,
}

impl Filter {
    /// Parses `state=` and `name=`; `given_up` is the set of given-up pids
    /// (only read when `state` names it).
    pub fn parse(
        state: Option<&String>,
        name: Option<&String>,
        given_up: impl FnOnce() -> FxHashSet<u32>,
    ) -> Result<Filter, String> {
        let mut f = Filter::default();
        let mut want_given_up = false;
        for s in state.map(|s| s.as_str()).unwrap_or("").split(',') {
            match s {
                "" if state.is_none() => {}
                "alive" => f.states.push("alive"),
                "stalled" => f.states.push("stalled"),
                "exited" => f.states.push("exited"),
                "given_up" => want_given_up = true,
                other => {
                    return Err(format!(
                        "state={other} is not a state; use alive, stalled, exited or given_up (comma-separated for several)"
                    ))
                }
            }
        }
        if want_given_up {
            f.given_up = Some(given_up());
        }
        if let Some(n) = name {
            f.name = Some(Pattern::new(n).map_err(|e| format!("name={n}: {e}"))?);
        }
        Ok(f)
    }

    fn state_ok(&self, s: &AgentRecord) -> bool {
        if self.states.is_empty() && self.given_up.is_none() {
            return true;
        }
        self.states.contains(&state_name(s))
            || self.given_up.as_ref().is_some_and(|g| g.contains(&s.pid))
    }
}

/// A page of agents: record indices, the matching total, the next cursor.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// Record indices ([`AgentsSnapshot::record`]), in pid order.
    pub slots: Vec<u32>,
    /// Agents matching the filters in the snapshot.
    pub total: usize,
    /// The pid to continue after, when more match.
    pub next: Option<u32>,
}

/// Parses a cursor (`c<pid>`).
pub fn cursor(v: Option<&String>) -> Result<Option<u32>, String> {
    match v {
        None => Ok(None),
        Some(s) => s
            .strip_prefix('c')
            .and_then(|p| p.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                format!("cursor={s} is not a cursor; pass the next_cursor of the previous page")
            }),
    }
}

/// Formats a cursor.
pub fn cursor_text(pid: u32) -> String {
    format!("c{pid}")
}

/// Agents of `snap` matching `f`, after pid `after`, at most `limit`.
/// Name globs are evaluated once per identity, not once per agent.
pub fn page(
    snap: &AgentsSnapshot,
    registry: &Registry,
    f: &Filter,
    after: Option<u32>,
    limit: usize,
) -> Page {
    let order = snap.order();
    let mut memo: FxHashMap<Option<IdentityId>, bool> = FxHashMap::default();
    let mut matches = |s: &AgentRecord| -> bool {
        if !f.state_ok(s) {
            return false;
        }
        let Some(p) = &f.name else {
            return true;
        };
        let id = s.identity();
        *memo.entry(id).or_insert_with(|| {
            let name = id.map_or_else(
                || crate::identity::UNKNOWN.into(),
                |id| registry.name(id).to_string(),
            );
            p.is_match(&name)
        })
    };
    let start = match after {
        Some(c) => order.partition_point(|e| e.0 <= c),
        None => 0,
    };
    let mut total = 0;
    let mut slots = Vec::new();
    let mut next = None;
    for (i, &(_, idx)) in order.iter().enumerate() {
        if !matches(snap.record(idx)) {
            continue;
        }
        total += 1;
        if i < start {
            continue;
        }
        if slots.len() < limit {
            slots.push(idx);
        } else if next.is_none() {
            next = Some(snap.record(*slots.last().expect("limit >= 1")).pid);
        }
    }
    Page { slots, total, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityRecord;
    use crate::policy::SlotName;
    use crate::tracker::Slot;

    fn record(pid: u32, state: SlotState, name: SlotName) -> AgentRecord {
        let mut s = Slot::empty();
        s.pid = pid;
        s.state = state;
        AgentRecord::of(&s, name)
    }

    fn snap(reg: &Registry) -> AgentsSnapshot {
        // Record (slot) order is not pid order.
        let mut rec = IdentityRecord::unknown();
        rec.name = "nginx.service".into();
        let id = reg.intern(rec);
        let mut records = Vec::new();
        for pid in (1..=50u32).rev() {
            let st = match pid % 3 {
                0 => SlotState::Stalled,
                1 => SlotState::Live,
                _ => SlotState::Exited,
            };
            let name = if pid % 2 == 0 {
                SlotName::new(id, None)
            } else {
                SlotName::UNKNOWN
            };
            records.push(record(pid, st, name));
        }
        AgentsSnapshot::from_parts(records, Default::default(), 0, 0)
    }

    #[test]
    fn params_reject_unknown_and_duplicates() {
        let p = params(Some("state=alive&name=ng%2A"), &["state", "name"]).unwrap();
        assert_eq!(p["name"], "ng*");
        assert!(params(Some("bogus=1"), &["state"])
            .unwrap_err()
            .contains("bogus"));
        assert!(params(Some("state=a&state=b"), &["state"]).is_err());
        assert!(limit(Some(&"0".into()), AGENTS_LIMIT).is_err());
        assert!(limit(Some(&"10001".into()), AGENTS_LIMIT).is_err());
        assert_eq!(limit(None, AGENTS_LIMIT).unwrap(), 1000);
        assert!(cursor(Some(&"x".into())).is_err());
        assert_eq!(cursor(Some(&cursor_text(7))).unwrap(), Some(7));
    }

    #[test]
    fn paging_visits_every_pid_once_in_order() {
        let reg = Registry::new(16);
        let s = snap(&reg);
        let f = Filter::default();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let p = page(&s, &reg, &f, after, 7);
            assert_eq!(p.total, 50);
            seen.extend(p.slots.iter().map(|&i| s.record(i).pid));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn filters_state_name_and_given_up() {
        let reg = Registry::new(16);
        let s = snap(&reg);
        let st = |v: &str| Filter::parse(Some(&v.to_string()), None, FxHashSet::default).unwrap();
        let p = page(&s, &reg, &st("stalled"), None, 100);
        assert_eq!(p.total, 16);
        assert!(p
            .slots
            .iter()
            .all(|&i| s.record(i).state() == SlotState::Stalled));
        let p = page(&s, &reg, &st("alive,exited"), None, 100);
        assert_eq!(p.total, 34);
        let g = Filter::parse(Some(&"given_up".to_string()), None, || {
            [3u32, 4].into_iter().collect()
        })
        .unwrap();
        let p = page(&s, &reg, &g, None, 100);
        assert_eq!(p.total, 2);
        let n = Filter::parse(None, Some(&"nginx*".to_string()), FxHashSet::default).unwrap();
        let p = page(&s, &reg, &n, None, 10);
        assert_eq!((p.total, p.slots.len(), p.next), (25, 10, Some(20)));
        let u = Filter::parse(None, Some(&"unknown".to_string()), FxHashSet::default).unwrap();
        assert_eq!(page(&s, &reg, &u, None, 100).total, 25);
        assert!(Filter::parse(Some(&"dead".to_string()), None, FxHashSet::default).is_err());
    }
}
