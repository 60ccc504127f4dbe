//! `varta agents` (`GET /v1/agents`, every page, printed as it arrives) and
//! `varta agent PID` (`GET /v1/agents/{pid}`).

use std::io::Write;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::api::{Agent, AgentsPage, Recovery};
use crate::cli::{report, CmdError, Global, EXIT_OK};
use crate::client::with_query;
use crate::ui::{self, paint, state_style, Cell, Table, DIM, HEAD};

/// An agent state filter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Beating within its threshold.
    Alive,
    /// Silent past its threshold (given-up agents included).
    Stalled,
    /// Exited (terminal frame or process gone).
    Exited,
    /// Recovery gave up.
    #[value(name = "given_up", alias = "given-up")]
    GivenUp,
}

impl StateFilter {
    fn as_str(self) -> &'static str {
        match self {
            StateFilter::Alive => "alive",
            StateFilter::Stalled => "stalled",
            StateFilter::Exited => "exited",
            StateFilter::GivenUp => "given_up",
        }
    }
}

/// Arguments of `varta agents`.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Only agents in these states (comma-separated or repeated):
    /// alive, stalled, exited, given_up.
    #[arg(long, value_name = "STATE", value_delimiter = ',')]
    pub state: Vec<StateFilter>,

    /// Only agents whose name matches this glob (`nginx*`, `*.service`).
    #[arg(long, value_name = "GLOB")]
    pub name: Option<String>,

    /// Print at most N agents in all (default: every matching agent).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Agents fetched per request (the API's `limit`, 1-10000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub page_size: u64,

    /// Print JSON lines: one `<agent>` object (docs/api.md) per line, as
    /// each page arrives.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `varta agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's pid.
    #[arg(value_name = "PID")]
    pub pid: u32,

    /// Print the `<agent>` object as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `varta agents`.
pub fn run_list(g: &Global, args: &AgentsArgs) -> u8 {
    report(list(g, args))
}

/// Runs `varta agent PID`.
pub fn run_one(g: &Global, args: &AgentArgs) -> u8 {
    report(one(g, args))
}

fn list(g: &Global, args: &AgentsArgs) -> Result<u8, CmdError> {
    let control = g.control()?;
    let states: Vec<&str> = args.state.iter().map(|s| s.as_str()).collect();
    let states = (!states.is_empty()).then(|| states.join(","));
    let mut out = ui::stdout(g.color);
    let mut table = Table::new(&["PID", "NAME", "STATE", "LAST BEAT", "STATUS", "ORIGIN"]);
    let mut printed: u64 = 0;
    let mut total = None;
    let mut cursor: Option<String> = None;
    loop {
        let left = args.limit.map_or(u64::MAX, |l| l - printed);
        let size = args.page_size.min(left).to_string();
        let route = with_query(
            "/v1/agents",
            &[
                ("state", states.as_deref()),
                ("name", args.name.as_deref()),
                ("limit", Some(&size)),
                ("cursor", cursor.as_deref()),
            ],
        );
        let page: AgentsPage = control.get_json(&route)?;
        total = total.or(page.total);
        cursor = page.cursor();
        let take = usize::try_from(left).unwrap_or(usize::MAX);
        let agents = &page.agents[..page.agents.len().min(take)];
        printed += agents.len() as u64;
        if args.json {
            for a in agents {
                writeln!(out, "{a}")?;
            }
        } else {
            let extra = page.snapshot_age_ms.unwrap_or(0);
            let rows: Vec<Vec<Cell>> = agents.iter().map(|v| list_row(v, extra)).collect();
            if !rows.is_empty() {
                table.print(&mut out, &rows)?;
            }
        }
        out.flush()?;
        if cursor.is_none() || args.limit.is_some_and(|l| printed >= l) {
            break;
        }
    }
    if !args.json {
        if printed == 0 {
            writeln!(out, "No agents match.")?;
        } else if let Some(t) = total.filter(|&t| t > printed && cursor.is_some()) {
            let msg = format!("… {printed} of {t} shown (--limit)");
            writeln!(out, "{}", paint(DIM, &msg))?;
        }
    }
    out.flush()?;
    Ok(EXIT_OK)
}

fn list_row(v: &Value, extra_ms: u64) -> Vec<Cell> {
    let a: Agent = serde_json::from_value(v.clone()).unwrap_or_default();
    let state = a.display_state();
    let status = a.status.clone().unwrap_or_else(|| "-".into());
    vec![
        Cell::plain(a.pid.to_string()),
        Cell::plain(a.name.clone().unwrap_or_else(|| "unknown".into())),
        Cell::styled(state, state_style(state)),
        Cell::plain(beat_age(a.last_beat_age_ms, extra_ms)),
        Cell::styled(status.clone(), state_style(&status)),
        Cell::plain(ui::or_dash(a.origin.as_deref())),
    ]
}

fn beat_age(age_ms: Option<u64>, extra_ms: u64) -> String {
    match age_ms {
        Some(ms) => format!("{} ago", ui::duration_ms(ms.saturating_add(extra_ms))),
        None => "never".to_owned(),
    }
}

/// Recovery in a few words: `-` when off, `none yet`, `2 attempts (last:
/// nonzero_exit)` or `gave up after 2 attempts (last: …)`.
pub fn recovery_summary(r: Option<&Recovery>) -> String {
    let Some(r) = r else {
        return "-".to_owned();
    };
    if r.attempts == 0 && !r.given_up {
        return "none yet".to_owned();
    }
    let plural = if r.attempts == 1 { "" } else { "s" };
    let last = r
        .last_outcome
        .as_ref()
        .map(|o| format!(" (last: {o})"))
        .unwrap_or_default();
    if r.given_up {
        format!("gave up after {} attempt{plural}{last}", r.attempts)
    } else {
        format!("{} attempt{plural}{last}", r.attempts)
    }
}

fn one(g: &Global, args: &AgentArgs) -> Result<u8, CmdError> {
    let control = g.control()?;
    let raw: Value = control.get_json(&format!("/v1/agents/{}", args.pid))?;
    let mut out = ui::stdout(g.color);
    if args.json {
        writeln!(out, "{raw}")?;
    } else {
        print_agent(&mut out, &raw)?;
    }
    out.flush()?;
    Ok(EXIT_OK)
}

/// Fields `print_agent` renders itself; any other field of the object is
/// listed after them as it is.
const KNOWN: &[&str] = &[
    "pid",
    "name",
    "state",
    "unit",
    "container",
    "comm",
    "exe",
    "uid",
    "peer",
    "origin",
    "last_beat_unix_ms",
    "last_beat_age_ms",
    "nonce",
    "status",
    "payload",
    "rule",
    "threshold_ms",
    "recovery",
];

/// Every field of one agent, one per line.
fn print_agent(out: &mut impl Write, raw: &Value) -> std::io::Result<()> {
    let a: Agent = serde_json::from_value(raw.clone()).unwrap_or_default();
    let state = a.display_state();
    let last_beat = match (a.last_beat_age_ms, a.last_beat_unix_ms) {
        (None, None) => "never".to_owned(),
        (age, at) => format!(
            "{} ({})",
            beat_age(age, 0),
            at.map_or_else(|| "-".into(), ui::unix_ms)
        ),
    };
    let payload = a
        .payload
        .map_or_else(|| "-".into(), |p| format!("{p} ({p:#010x})"));
    let recovery = match &a.recovery {
        None => "off".to_owned(),
        Some(r) => format!(
            "{} attempts, last outcome {}, given up: {}",
            r.attempts,
            r.last_outcome.as_deref().unwrap_or("-"),
            if r.given_up { "yes" } else { "no" }
        ),
    };
    let fields: Vec<(&str, String)> = vec![
        ("pid", a.pid.to_string()),
        ("name", ui::or_dash(a.name.as_deref())),
        ("state", paint(state_style(state), state)),
        ("unit", ui::or_dash(a.unit.as_deref())),
        ("container", ui::or_dash(a.container.as_deref())),
        ("comm", ui::or_dash(a.comm.as_deref())),
        ("exe", ui::or_dash(a.exe.as_deref())),
        ("uid", ui::or_dash(a.uid)),
        ("peer", ui::or_dash(a.peer.as_deref())),
        ("origin", ui::or_dash(a.origin.as_deref())),
        ("last beat", last_beat),
        ("nonce", ui::or_dash(a.nonce)),
        ("status", ui::or_dash(a.status.as_deref())),
        ("payload", payload),
        (
            "rule",
            a.rule.map_or_else(|| "none".into(), |r| format!("#{r}")),
        ),
        ("threshold", ui::opt_duration_ms(a.threshold_ms)),
        ("recovery", recovery),
    ];
    for (k, v) in fields {
        writeln!(out, "{} {v}", paint(HEAD, &format!("{k:<10}")))?;
    }
    if let Value::Object(map) = raw {
        for (k, v) in map.iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())) {
            writeln!(out, "{} {v}", paint(HEAD, &format!("{k:<10}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plain(bytes: &[u8]) -> String {
        anstream::adapter::strip_str(std::str::from_utf8(bytes).unwrap()).to_string()
    }

    #[test]
    fn agent_view_shows_every_field() {
        let raw = json!({"pid": 1234, "state": "stalled", "name": "nginx.service",
            "unit": "nginx.service", "container": null, "comm": "nginx", "exe": "/usr/sbin/nginx",
            "uid": 0, "peer": null, "origin": "kernel_attested", "last_beat_unix_ms": 1764530000123u64,
            "last_beat_age_ms": 5230, "nonce": 77, "status": "ok", "payload": 255, "rule": 1,
            "threshold_ms": 2000, "recovery": {"attempts": 2, "last_outcome": "nonzero_exit", "given_up": false},
            "future_field": "x"});
        let mut out = Vec::new();
        print_agent(&mut out, &raw).unwrap();
        let text = plain(&out);
        for needle in [
            "pid        1234",
            "state      stalled",
            "container  -",
            "exe        /usr/sbin/nginx",
            "last beat  5.2s ago (2025-11-30T19:13:20.123Z)",
            "nonce      77",
            "payload    255 (0x000000ff)",
            "rule       #1",
            "threshold  2.0s",
            "recovery   2 attempts, last outcome nonzero_exit, given up: no",
            "future_field \"x\"",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }

    #[test]
    fn recovery_summaries() {
        assert_eq!(recovery_summary(None), "-");
        let r = |attempts, given_up| Recovery {
            attempts,
            last_outcome: (attempts > 0).then(|| "timeout".to_owned()),
            given_up,
        };
        assert_eq!(recovery_summary(Some(&r(0, false))), "none yet");
        assert_eq!(
            recovery_summary(Some(&r(1, false))),
            "1 attempt (last: timeout)"
        );
        assert_eq!(
            recovery_summary(Some(&r(3, true))),
            "gave up after 3 attempts (last: timeout)"
        );
    }

    #[test]
    fn list_rows_add_the_snapshot_age() {
        let row = list_row(
            &json!({"pid": 9, "state": "alive", "name": "a", "last_beat_age_ms": 900,
                    "status": "degraded", "origin": "network_verified"}),
            200,
        );
        let texts: Vec<&str> = row.iter().map(Cell::text).collect();
        assert_eq!(
            texts,
            [
                "9",
                "a",
                "alive",
                "1.1s ago",
                "degraded",
                "network_verified"
            ]
        );
    }
}
