//! `varta events`: recent events, or with `--follow` the live stream
//! (`GET /v1/events`, JSON lines).

use std::io::{self, Write};

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use crate::cli::{fail, report, CmdError, Global, EXIT_OK};
use crate::client::{with_query, StreamEnd};
use crate::ui::{self, paint, state_style, DIM};

/// Arguments of `varta events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep streaming events as they happen, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,

    /// Only these event kinds (comma-separated or repeated: stall,
    /// recovered, exit, missing, beat, …). Default: all but beat.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,

    /// Without --follow: how many recent events (1-1000, the observer's
    /// default 100). With --follow: stop after N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Print each event as the observer sent it: one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// The fields of an event line the human form shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventLine {
    time: Option<String>,
    kind: String,
    pid: Option<u32>,
    name: Option<String>,
    detail: Option<Value>,
}

/// Runs `varta events`.
pub fn run(g: &Global, args: &EventsArgs) -> u8 {
    report(events(g, args))
}

fn events(g: &Global, args: &EventsArgs) -> Result<u8, CmdError> {
    let control = g.control()?;
    let kinds = (!args.kind.is_empty()).then(|| args.kind.join(","));
    let limit = args.limit.filter(|_| !args.follow).map(|l| l.to_string());
    let route = with_query(
        "/v1/events",
        &[
            ("follow", args.follow.then_some("1")),
            ("kind", kinds.as_deref()),
            ("limit", limit.as_deref()),
        ],
    );
    let mut out = ui::stdout(g.color);
    let mut write_err: Option<io::Error> = None;
    let mut dropped: Option<String> = None;
    let mut seen: u64 = 0;
    let end = control.stream_lines(&route, args.follow, |line| {
        let parsed: Option<EventLine> = serde_json::from_slice(line).ok();
        if let Some(ev) = parsed.as_ref().filter(|e| e.kind == "dropped") {
            dropped = Some(detail_text(ev.detail.as_ref()));
        }
        let r = if args.json {
            out.write_all(line)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
        } else {
            let text = match &parsed {
                Some(ev) => human(ev),
                None => String::from_utf8_lossy(line).into_owned(),
            };
            writeln!(out, "{text}").and_then(|()| out.flush())
        };
        if let Err(e) = r {
            write_err = Some(e);
            return false;
        }
        seen += 1;
        !(args.follow && args.limit.is_some_and(|l| seen >= l))
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    Ok(match end {
        StreamEnd::Interrupted | StreamEnd::Stopped => EXIT_OK,
        StreamEnd::Closed if !args.follow => EXIT_OK,
        StreamEnd::Closed => match dropped {
            Some(why) => fail(format_args!(
                "the observer dropped this event stream: {why}"
            )),
            None => fail("the observer closed the event stream (did varta-watch stop or restart?)"),
        },
    })
}

/// `time  kind  pid  name  detail`, with fixed column widths so a live
/// stream lines up without buffering.
fn human(ev: &EventLine) -> String {
    let time = ev
        .time
        .as_deref()
        .map_or_else(|| "-".to_owned(), short_time);
    let kind = format!("{:<10}", ev.kind);
    let pid = format!("{:>7}", ui::or_dash(ev.pid));
    let name = format!("{:<20}", ev.name.as_deref().unwrap_or("-"));
    let detail = detail_text(ev.detail.as_ref());
    format!(
        "{}  {}  {pid}  {name}  {detail}",
        paint(DIM, &time),
        paint(state_style(&ev.kind), &kind)
    )
    .trim_end()
    .to_owned()
}

fn detail_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// RFC 3339 with nanoseconds cut to milliseconds: `…T19:13:20.123Z`.
fn short_time(t: &str) -> String {
    let Some(dot) = t.find('.') else {
        return t.to_owned();
    };
    let digits = t[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
    if digits <= 3 {
        return t.to_owned();
    }
    format!("{}{}", &t[..dot + 4], &t[dot + 1 + digits..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_cut_to_milliseconds() {
        assert_eq!(
            short_time("2025-11-30T19:13:20.123456789Z"),
            "2025-11-30T19:13:20.123Z"
        );
        assert_eq!(short_time("2025-11-30T19:13:20Z"), "2025-11-30T19:13:20Z");
    }

    #[test]
    fn human_line_has_time_kind_pid_name_detail() {
        let ev: EventLine = serde_json::from_str(
            r#"{"time":"2025-11-30T19:13:20.123456789Z","observer_ns":1,"kind":"stall","pid":42,
               "nonce":7,"status":"stall","payload":null,"detail":"silent_ns=5000000000","name":"web"}"#,
        )
        .unwrap();
        let line = anstream::adapter::strip_str(&human(&ev)).to_string();
        assert_eq!(
            line,
            "2025-11-30T19:13:20.123Z  stall            42  web                   silent_ns=5000000000"
        );
    }
}
