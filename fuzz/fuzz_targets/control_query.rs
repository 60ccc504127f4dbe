//! Arbitrary query strings into the control API's parameter parsing
//! (`/v1/agents?state=…&name=…&limit=…&cursor=…`, `/v1/events?kind=…`).
//! The query comes from whoever can reach the control socket or the TCP
//! API, so it must never panic: every bad input is an `Err` with a message
//! for a 400 answer, and what parses stays inside the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_watch::control::events::Kinds;
use varta_watch::control::query::{self, Filter, AGENTS_LIMIT, EVENTS_LIMIT};

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = query::params(Some(q), &["state", "name", "limit", "cursor"]) {
        if let Ok(n) = query::limit(p.get("limit"), AGENTS_LIMIT) {
            assert!((1..=AGENTS_LIMIT.1).contains(&n));
        }
        if let Ok(Some(pid)) = query::cursor(p.get("cursor")) {
            // A cursor the server hands out parses back to the same pid.
            let text = query::cursor_text(pid);
            assert_eq!(query::cursor(Some(&text)), Ok(Some(pid)));
        }
        let _ = Filter::parse(p.get("state"), p.get("name"), Default::default);
    }
    if let Ok(p) = query::params(Some(q), &["follow", "kind", "limit"]) {
        if let Ok(n) = query::limit(p.get("limit"), EVENTS_LIMIT) {
            assert!((1..=EVENTS_LIMIT.1).contains(&n));
        }
        let _ = Kinds::parse(p.get("kind").map(String::as_str));
    }
});
