//! `varta reload`: `POST /v1/reload`, the same as sending the observer
//! SIGHUP, and what came of it.

use std::io::Write;

use clap::Args;
use hyper::{Method, StatusCode};

use crate::api::ReloadDoc;
use crate::cli::{report, CmdError, Global, EXIT_FAIL, EXIT_OK};
use crate::client::{api_error, parse_body};
use crate::ui::{self, paint, state_style};

/// Route of the reload request.
const ROUTE: &str = "/v1/reload";

/// Arguments of `varta reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Print the observer's JSON answer (also when the reload failed; the
    /// exit status still says which).
    #[arg(long)]
    pub json: bool,
}

/// Runs `varta reload`.
pub fn run(g: &Global, args: &ReloadArgs) -> u8 {
    report(reload(g, args))
}

fn reload(g: &Global, args: &ReloadArgs) -> Result<u8, CmdError> {
    let control = g.control()?;
    let (status, body) = control.request(Method::POST, ROUTE)?;
    if !status.is_success() && status != StatusCode::UNPROCESSABLE_ENTITY {
        return Err(api_error(status, &body).into());
    }
    let doc: ReloadDoc = parse_body(ROUTE, &body)?;
    let failed = status == StatusCode::UNPROCESSABLE_ENTITY || doc.result == "failed";
    let mut out = ui::stdout(g.color);
    if args.json {
        writeln!(out, "{}", String::from_utf8_lossy(&body).trim_end())?;
    } else if failed {
        let why = doc.error.as_deref().unwrap_or("no reason given");
        eprintln!("varta: reload failed, the observer keeps its configuration: {why}");
    } else {
        print_applied(&mut out, &doc)?;
    }
    out.flush()?;
    Ok(if failed { EXIT_FAIL } else { EXIT_OK })
}

fn print_applied(out: &mut impl Write, doc: &ReloadDoc) -> std::io::Result<()> {
    let result = paint(state_style(&doc.result), &doc.result);
    if doc.changes.is_empty() {
        writeln!(out, "{result}: the configuration did not change")?;
    } else {
        let n = doc.changes.len();
        writeln!(out, "{result}: {n} change{}", if n == 1 { "" } else { "s" })?;
        for c in &doc.changes {
            writeln!(out, "  {c}")?;
        }
    }
    if !doc.restart_needed.is_empty() {
        writeln!(
            out,
            "restart varta-watch for these to take effect: {}",
            doc.restart_needed.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_lists_changes_and_restart_needed() {
        let doc = ReloadDoc {
            result: "applied".into(),
            changes: vec!["threshold-ms 5000 -> 3000".into()],
            restart_needed: vec!["socket".into()],
            error: None,
        };
        let mut out = Vec::new();
        print_applied(&mut out, &doc).unwrap();
        let text = anstream::adapter::strip_str(std::str::from_utf8(&out).unwrap()).to_string();
        assert_eq!(
            text,
            "applied: 1 change\n  threshold-ms 5000 -> 3000\nrestart varta-watch for these to take effect: socket\n"
        );
    }
}
