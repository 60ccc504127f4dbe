//! `varta status`: the observer's summary (`GET /v1/status`) and a table of
//! the agents that need attention (`GET /v1/agents?state=stalled,given_up`
//! plus the status's `missing` names).

use std::io::Write;

use clap::Args;
use serde_json::{json, Value};

use crate::agents::recovery_summary;
use crate::api::{Agent, AgentsPage, StatusDoc};
use crate::cli::{report, CmdError, Global, EXIT_OK};
use crate::client::{parse_body, with_query, Control};
use crate::ui::{self, paint, state_style, Cell, Table, DIM, HEAD};

/// Arguments of `varta status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the machine form: `{"status": <GET /v1/status>, "agents":
    /// [<stalled and given-up agents, at most --max-rows>],
    /// "agents_total": N}`.
    #[arg(long)]
    pub json: bool,

    /// Show at most this many stalled or given-up agents (missing agents
    /// are always all shown).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_rows: u64,
}

/// The status answer and the first problem agents.
struct Snapshot {
    raw: Value,
    doc: StatusDoc,
    agents: Vec<Value>,
    total: u64,
    page_age_ms: Option<u64>,
}

/// Runs `varta status`.
pub fn run(g: &Global, args: &StatusArgs) -> u8 {
    report(status(g, args))
}

fn status(g: &Global, args: &StatusArgs) -> Result<u8, CmdError> {
    let control = g.control()?;
    let snap = fetch(&control, args.max_rows)?;
    let mut out = ui::stdout(g.color);
    if args.json {
        let doc = json!({"status": snap.raw, "agents": snap.agents, "agents_total": snap.total});
        writeln!(out, "{doc}")?;
    } else {
        print_summary(&mut out, &snap.doc)?;
        writeln!(out)?;
        print_problems(&mut out, &snap)?;
    }
    out.flush()?;
    Ok(EXIT_OK)
}

fn fetch(control: &Control, max_rows: u64) -> Result<Snapshot, CmdError> {
    let raw: Value = control.get_json("/v1/status")?;
    let doc: StatusDoc = parse_body("/v1/status", raw.to_string().as_bytes())?;
    let mut agents = Vec::new();
    let mut total = 0;
    let mut page_age_ms = None;
    let mut cursor: Option<String> = None;
    loop {
        let want = max_rows
            .saturating_sub(agents.len() as u64)
            .clamp(1, 10_000);
        let route = with_query(
            "/v1/agents",
            &[
                ("state", Some("stalled,given_up")),
                ("limit", Some(&want.to_string())),
                ("cursor", cursor.as_deref()),
            ],
        );
        let page: AgentsPage = control.get_json(&route)?;
        total = page.total.unwrap_or(total.max(agents.len() as u64));
        page_age_ms = page_age_ms.or(page.snapshot_age_ms);
        let room = max_rows.saturating_sub(agents.len() as u64) as usize;
        cursor = page.cursor();
        agents.extend(page.agents.into_iter().take(room));
        if cursor.is_none() || agents.len() as u64 >= max_rows {
            break;
        }
    }
    total = total.max(agents.len() as u64);
    Ok(Snapshot {
        raw,
        doc,
        agents,
        total,
        page_age_ms,
    })
}

fn print_summary(out: &mut impl Write, s: &StatusDoc) -> std::io::Result<()> {
    let key = |k: &str| paint(HEAD, &format!("{k:<10}"));
    let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let up = ui::duration_ms((s.uptime_s.max(0.0) * 1000.0) as u64);
    writeln!(
        out,
        "{} {}{pid}, up {up}",
        paint(HEAD, "varta-watch"),
        s.version
    )?;
    if let Some(c) = &s.config_file {
        writeln!(out, "{} {c}", key("config"))?;
    }
    let l = &s.listeners;
    let listeners: Vec<String> = [
        ("socket", &l.socket),
        ("control", &l.control),
        ("udp", &l.udp),
        ("metrics", &l.metrics),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
    .collect();
    let listeners = if listeners.is_empty() {
        "none".to_owned()
    } else {
        listeners.join(", ")
    };
    writeln!(out, "{} {listeners}", key("listeners"))?;
    let cap = s
        .tracker_capacity
        .map(|c| format!(", capacity {c} agents"))
        .unwrap_or_default();
    writeln!(
        out,
        "{} {}{cap}",
        key("threshold"),
        ui::opt_duration_ms(s.threshold_ms)
    )?;
    if s.rules.is_empty() {
        writeln!(out, "{} {}", key("rules"), paint(DIM, "none"))?;
    }
    for (i, r) in s.rules.iter().enumerate() {
        let mut line = format!("#{} {}", r.index, r.matcher);
        if let Some(t) = r.threshold_ms {
            line.push_str(&format!(", threshold {}", ui::duration_ms(t)));
        }
        if let Some(t) = r.startup_grace_ms {
            line.push_str(&format!(", grace {}", ui::duration_ms(t)));
        }
        if r.required {
            line.push_str(", required");
        }
        if let Some(rec) = &r.recovery {
            line.push_str(&format!(", recovery {rec}"));
        }
        let k = if i == 0 { key("rules") } else { key("") };
        writeln!(out, "{k} {line}")?;
    }
    let c = &s.counts;
    let count = |n: u64, word: &str, state: &str| {
        let text = format!("{n} {word}");
        if n > 0 {
            paint(state_style(state), &text)
        } else {
            text
        }
    };
    writeln!(
        out,
        "{} {}, {}, {}, {}, {}",
        key("agents"),
        count(c.alive, "alive", "alive"),
        count(c.stalled, "stalled", "stalled"),
        count(c.given_up, "given up", "given_up"),
        count(c.exited, "exited", "exited"),
        count(c.missing, "missing", "missing"),
    )?;
    let reload = match &s.last_reload {
        None => paint(DIM, "never"),
        Some(r) => {
            let at = r.at_unix_ms.map(ui::unix_ms).unwrap_or_else(|| "-".into());
            let mut text = format!("{} at {at}", paint(state_style(&r.result), &r.result));
            if !r.changes.is_empty() {
                text.push_str(&format!(": {}", r.changes.join("; ")));
            }
            if let Some(e) = &r.error {
                text.push_str(&format!(": {e}"));
            }
            text
        }
    };
    writeln!(out, "{} {reload}", key("reload"))
}

fn print_problems(out: &mut impl Write, snap: &Snapshot) -> std::io::Result<()> {
    let missing = &snap.doc.missing;
    if snap.agents.is_empty() && missing.is_empty() {
        return writeln!(out, "No stalled, given-up or missing agents.");
    }
    let extra = snap.page_age_ms.unwrap_or(0);
    let mut rows: Vec<Vec<Cell>> = snap
        .agents
        .iter()
        .map(|v| {
            let a: Agent = serde_json::from_value(v.clone()).unwrap_or_default();
            problem_row(&a, extra)
        })
        .collect();
    rows.extend(missing.iter().map(|name| {
        vec![
            Cell::plain("-"),
            Cell::plain(name.clone()),
            Cell::styled("missing", state_style("missing")),
            Cell::plain("-"),
            Cell::plain("-"),
            Cell::plain("-"),
        ]
    }));
    let mut table = Table::new(&[
        "PID",
        "NAME",
        "STATE",
        "SILENT FOR",
        "UNIT/CONTAINER",
        "RECOVERY",
    ]);
    table.print(out, &rows)?;
    let more = snap.total.saturating_sub(snap.agents.len() as u64);
    if more > 0 {
        writeln!(
            out,
            "{}",
            paint(
                DIM,
                &format!("… and {more} more (varta agents --state stalled)")
            )
        )?;
    }
    Ok(())
}

/// One row of the problem table; `extra_ms` is the snapshot's age, added
/// to the agent's silence so it reads as "until now".
fn problem_row(a: &Agent, extra_ms: u64) -> Vec<Cell> {
    let state = a.display_state();
    vec![
        Cell::plain(a.pid.to_string()),
        Cell::plain(a.name.clone().unwrap_or_else(|| "unknown".into())),
        Cell::styled(state, state_style(state)),
        Cell::plain(ui::opt_duration_ms(
            a.last_beat_age_ms.map(|ms| ms.saturating_add(extra_ms)),
        )),
        Cell::plain(a.unit_or_container()),
        Cell::plain(recovery_summary(a.recovery.as_ref())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bytes: &[u8]) -> String {
        anstream::adapter::strip_str(std::str::from_utf8(bytes).unwrap()).to_string()
    }

    #[test]
    fn summary_names_every_part_of_the_status() {
        let doc: StatusDoc = serde_json::from_str(
            r#"{"version":"0.3.0","pid":4242,"uptime_s":3600.5,"config_file":"/etc/v.toml",
            "listeners":{"socket":"/run/varta/varta.sock","control":"/run/varta/varta.ctl","udp":null,"metrics":"127.0.0.1:9101"},
            "threshold_ms":5000,"tracker_capacity":4096,
            "rules":[{"index":1,"match":"unit=nginx.service","threshold_ms":2000,"startup_grace_ms":10000,"required":true,"recovery":"rule"}],
            "counts":{"alive":10,"stalled":1,"exited":0,"given_up":0,"missing":1},"missing":["nginx.service"],
            "last_reload":{"at_unix_ms":1764530000000,"result":"applied","changes":["threshold-ms 5000 -> 3000"],"error":null},
            "snapshot_age_ms":12}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        print_summary(&mut out, &doc).unwrap();
        let text = plain(&out);
        for needle in [
            "varta-watch 0.3.0 (pid 4242), up 1h00m",
            "config     /etc/v.toml",
            "socket /run/varta/varta.sock, control /run/varta/varta.ctl, metrics 127.0.0.1:9101",
            "threshold  5.0s, capacity 4096 agents",
            "#1 unit=nginx.service, threshold 2.0s, grace 10.0s, required, recovery rule",
            "10 alive, 1 stalled, 0 given up, 0 exited, 1 missing",
            "applied at 2025-11-30T19:13:20.000Z: threshold-ms 5000 -> 3000",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }

    #[test]
    fn problem_table_caps_rows_and_lists_missing_names() {
        let agent = json!({"pid": 77, "state": "stalled", "name": "web", "unit": "web.service",
            "last_beat_age_ms": 5230, "recovery": {"attempts": 2, "last_outcome": "nonzero_exit", "given_up": true}});
        let snap = Snapshot {
            raw: Value::Null,
            doc: StatusDoc {
                missing: vec!["db.service".into()],
                ..StatusDoc::default()
            },
            agents: vec![agent],
            total: 3,
            page_age_ms: Some(100),
        };
        let mut out = Vec::new();
        print_problems(&mut out, &snap).unwrap();
        let text = plain(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("PID  NAME        STATE     SILENT FOR"),
            "{text}"
        );
        assert!(
            lines[1].contains("77   web         given_up  5.3s"),
            "{text}"
        );
        assert!(lines[1].contains("web.service"), "{text}");
        assert!(
            lines[1].ends_with("gave up after 2 attempts (last: nonzero_exit)"),
            "{text}"
        );
        assert!(lines[2].starts_with("-    db.service  missing"), "{text}");
        assert_eq!(lines[3], "… and 2 more (varta agents --state stalled)");
    }
}
