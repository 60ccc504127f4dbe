//! Agent names: the default rule, operator templates, and the cleaning
//! every name gets before it reaches logs, metric labels and export lines.
//!
//! Names are for operators, so they say what a process is in the terms an
//! operator already uses: the systemd unit, else the container's short id
//! and the program name, else the program name. A name is at most
//! [`MAX_NAME_LEN`] bytes, cut on a character boundary, with control and
//! bidirectional-formatting characters replaced by `?`: a process chooses
//! its own `comm`, and a newline or tab in it must not forge a log or TSV
//! line, nor a right-to-left override reorder what an operator reads.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::procread::RawIdentity;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The name of a process whose identity is not known (exited before it
/// was read, no `/proc`, registry full), and what a missing template field
/// renders as.
pub const UNKNOWN: &str = "unknown";

/// What replaces a character that must not reach a log line.
const REPLACEMENT: char = '?';

/// Copies `s`, replacing control characters (C0, DEL, C1) and the
/// bidirectional formatting characters (U+200E/F, U+202A–E, U+2066–9) with
/// `?`, and cutting the result to at most `max_bytes` bytes on a character
/// boundary.
pub fn sanitize(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    for c in s.chars() {
        let c = if is_unsafe(c) { REPLACEMENT } else { c };
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A present, non-empty field (an empty `comm` is as good as none).
fn field(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The default name: the unit if there is one (`nginx.service`); else
/// `{comm}@{container short id}`; else `comm`; else `unknown`. Cleaned and
/// capped like every name.
pub fn default_name(id: &RawIdentity) -> String {
    let name = if let Some(unit) = field(&id.unit) {
        unit.to_owned()
    } else if let Some(c) = &id.container {
        format!("{}@{}", field(&id.comm).unwrap_or(UNKNOWN), c.short())
    } else if let Some(comm) = field(&id.comm) {
        comm.to_owned()
    } else {
        UNKNOWN.to_owned()
    };
    sanitize(&name, MAX_NAME_LEN)
}

/// The name of a network (UDP) agent: `peer:{IP}`, e.g. `peer:10.0.0.7`,
/// `peer:2001:db8::1`. The port is left out: a client's source port
/// changes whenever it reconnects, and the agent is the same. An
/// IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer)
/// is shown as the IPv4 address it is.
pub fn peer_name(addr: SocketAddr) -> String {
    format!("peer:{}", addr.ip().to_canonical())
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Unit,
    Comm,
    Container,
    Exe,
    Uid,
    Pid,
}

/// The placeholders, as written and as parsed.
const PLACEHOLDERS: [(&str, Part); 6] = [
    ("unit", Part::Unit),
    ("comm", Part::Comm),
    ("container", Part::Container),
    ("exe", Part::Exe),
    ("uid", Part::Uid),
    ("pid", Part::Pid),
];

/// An operator's naming rule, e.g. `"{unit}"` or `"{comm}@{container}"`.
///
/// Placeholders: `{unit}` (systemd unit), `{comm}`, `{container}` (short
/// id, 12 characters), `{exe}` (executable path), `{uid}` (real uid),
/// `{pid}`. A field the process does not have renders as `unknown`; `{{`
/// and `}}` are literal braces. The rendered name is cleaned and capped
/// like every name ([`sanitize`], [`MAX_NAME_LEN`]).
///
/// Note that `{pid}` (and, for many programs, `{exe}` of a deleted binary)
/// makes a distinct name per process, which defeats per-name aggregation
/// and fills the identity registry faster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    parts: Vec<Part>,
}

impl NameTemplate {
    /// Parses a template. Errors name the problem and where it is: an
    /// unknown placeholder, a `{` never closed, a `}` never opened, an
    /// empty template.
    pub fn parse(source: &str) -> Result<NameTemplate, String> {
        if source.is_empty() {
            return Err("empty name template".to_owned());
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let offset = source.len() - rest.len() + at;
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err(format!(
                    "name template {source:?}: unmatched `}}` at byte {offset} (write `}}}}` for a literal brace)"
                ));
            } else {
                let inner = &tail[1..];
                let close = inner.find('}').filter(|&c| !inner[..c].contains('{'));
                let Some(close) = close else {
                    return Err(format!(
                        "name template {source:?}: unclosed `{{` at byte {offset} (write `{{{{` for a literal brace)"
                    ));
                };
                let name = &inner[..close];
                let Some((_, part)) = PLACEHOLDERS.iter().find(|(n, _)| *n == name) else {
                    let known: Vec<String> = PLACEHOLDERS
                        .iter()
                        .map(|(n, _)| format!("{{{n}}}"))
                        .collect();
                    return Err(format!(
                        "name template {source:?}: unknown placeholder `{{{name}}}` at byte {offset} (known: {})",
                        known.join(", ")
                    ));
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(part.clone());
                rest = &inner[close + 1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(NameTemplate {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The name of process `pid` with identity `id`. Never empty: a
    /// template that renders to nothing but whitespace gives `unknown`.
    pub fn render(&self, id: &RawIdentity, pid: u32) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Unit => out.push_str(field(&id.unit).unwrap_or(UNKNOWN)),
                Part::Comm => out.push_str(field(&id.comm).unwrap_or(UNKNOWN)),
                Part::Container => {
                    out.push_str(id.container.as_ref().map_or(UNKNOWN, |c| c.short()))
                }
                Part::Exe => out.push_str(field(&id.exe).unwrap_or(UNKNOWN)),
                Part::Uid => match id.uid {
                    Some(uid) => out.push_str(&uid.to_string()),
                    None => out.push_str(UNKNOWN),
                },
                Part::Pid => out.push_str(&pid.to_string()),
            }
            // Long fields (an exe path) need not be copied past the cap.
            if out.len() > 4 * MAX_NAME_LEN {
                break;
            }
        }
        if out.trim().is_empty() {
            return UNKNOWN.to_owned();
        }
        sanitize(&out, MAX_NAME_LEN)
    }
}

impl FromStr for NameTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<NameTemplate, String> {
        NameTemplate::parse(s)
    }
}

impl fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Container, Runtime};
    use proptest::prelude::*;

    const ID: &str = "4c01db0b339c3d1bd6c4f3e8e5e8ba2c7b1e9f0a0d3c1b2a39485766554433ff";

    fn ident(comm: Option<&str>, unit: Option<&str>, container: bool) -> RawIdentity {
        RawIdentity {
            comm: comm.map(Into::into),
            exe: Some("/usr/sbin/nginx".into()),
            uid: Some(33),
            unit: unit.map(Into::into),
            container: container.then(|| Container {
                runtime: Runtime::Docker,
                id: ID.into(),
                pod_uid: None,
            }),
        }
    }

    #[test]
    fn default_rule() {
        let name = |c, u, k| default_name(&ident(c, u, k));
        assert_eq!(
            name(Some("nginx"), Some("nginx.service"), true),
            "nginx.service"
        );
        assert_eq!(name(Some("nginx"), None, true), "nginx@4c01db0b339c");
        assert_eq!(name(None, None, true), "unknown@4c01db0b339c");
        assert_eq!(name(Some("nginx"), None, false), "nginx");
        assert_eq!(name(Some(""), None, false), "unknown");
        assert_eq!(name(None, None, false), "unknown");
        assert_eq!(default_name(&RawIdentity::default()), "unknown");
        // Hostile comm: newline and tab cannot forge lines or columns.
        assert_eq!(name(Some("a\nb\tc\u{202e}d"), None, false), "a?b?c?d");
    }

    #[test]
    fn peer_names() {
        assert_eq!(peer_name("10.0.0.7:4242".parse().unwrap()), "peer:10.0.0.7");
        assert_eq!(
            peer_name("[2001:db8::1]:9".parse().unwrap()),
            "peer:2001:db8::1"
        );
        assert_eq!(
            peer_name("[::ffff:10.0.0.7]:9".parse().unwrap()),
            "peer:10.0.0.7"
        );
    }

    #[test]
    fn templates_render() {
        let id = ident(Some("nginx"), Some("nginx.service"), true);
        let r = |t: &str| NameTemplate::parse(t).unwrap().render(&id, 1234);
        assert_eq!(r("{unit}"), "nginx.service");
        assert_eq!(r("{comm}@{container}"), "nginx@4c01db0b339c");
        assert_eq!(
            r("{exe} as {uid} pid {pid}"),
            "/usr/sbin/nginx as 33 pid 1234"
        );
        assert_eq!(r("web"), "web");
        assert_eq!(r("{{{comm}}}"), "{nginx}");
        assert_eq!(r("a}}b{{c"), "a}b{c");
        // Missing fields.
        let bare = RawIdentity::default();
        let t = NameTemplate::parse("{unit}/{comm}/{container}/{exe}/{uid}/{pid}").unwrap();
        assert_eq!(
            t.render(&bare, 7),
            "unknown/unknown/unknown/unknown/unknown/7"
        );
        // Never empty.
        assert_eq!(
            NameTemplate::parse(" ").unwrap().render(&bare, 7),
            "unknown"
        );
        // Capped on a character boundary.
        let long = RawIdentity {
            exe: Some(format!("/{}", "é".repeat(200))),
            ..bare
        };
        let name = NameTemplate::parse("x{exe}").unwrap().render(&long, 1);
        assert!(name.len() <= MAX_NAME_LEN && name.len() >= MAX_NAME_LEN - 1);
        assert!(name.starts_with("x/é"));
        // Display and FromStr round-trip.
        let t: NameTemplate = "{comm}@{container}".parse().unwrap();
        assert_eq!(t.to_string(), "{comm}@{container}");
        assert_eq!(t.as_str(), "{comm}@{container}");
    }

    #[test]
    fn template_errors_name_the_problem() {
        let err = |t: &str| NameTemplate::parse(t).unwrap_err();
        let e = err("{comm}@{host}");
        assert!(e.contains("unknown placeholder `{host}` at byte 7"), "{e}");
        assert!(
            e.contains("{unit}, {comm}, {container}, {exe}, {uid}, {pid}"),
            "{e}"
        );
        assert!(err("{comm").contains("unclosed `{` at byte 0"));
        assert!(err("a{co{mm}").contains("unclosed `{` at byte 1"));
        assert!(err("comm}").contains("unmatched `}` at byte 4"));
        assert!(err("{}").contains("unknown placeholder `{}`"));
        assert_eq!(err(""), "empty name template");
    }

    #[test]
    fn sanitize_cuts_on_char_boundaries() {
        assert_eq!(sanitize("héllo", 2), "h");
        assert_eq!(sanitize("héllo", 3), "hé");
        assert_eq!(sanitize("a\u{0}\u{7f}\u{85}b", 10), "a???b");
        assert_eq!(sanitize("\u{2066}x\u{2069}", 10), "?x?");
        assert_eq!(sanitize("日本語", 128), "日本語");
    }

    proptest! {
        /// Any template either parses or errors; any rendering is bounded
        /// and clean.
        #[test]
        fn templates_never_panic(t in "[{}a-z@ ]{0,40}|\\PC{0,40}", comm in "\\PC{0,300}", pid in any::<u32>()) {
            if let Ok(t) = NameTemplate::parse(&t) {
                let id = RawIdentity { comm: Some(comm), ..RawIdentity::default() };
                let name = t.render(&id, pid);
                prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
                prop_assert!(!name.chars().any(is_unsafe));
            }
        }
    }
}
