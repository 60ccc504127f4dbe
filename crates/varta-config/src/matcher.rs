//! The `match` side of `[[agent]]` rules: what is known about an agent
//! ([`AgentFacts`]), glob patterns, networks and the [`Matcher`] that
//! combines them. Compiled once when the file is read.

use std::fmt;
use std::net::IpAddr;

use globset::{GlobBuilder, GlobMatcher};

use super::rules::quoted;
use crate::AgentOrigin;

/// Characters that make a `match` string a glob rather than a literal.
pub(super) const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// What is known about one agent, for matching. `None` is "unknown here"
/// (no systemd unit, not in a container, a Unix-socket agent's peer, …):
/// an unknown fact never matches a pattern, not even `*`, so a rule that
/// names a key only applies to agents where that fact is known. Pass
/// `None`, not `""`, for an unknown fact (`*` matches the empty string).
#[derive(Clone, Copy, Debug)]
pub struct AgentFacts<'a> {
    /// The agent's name, as it announced it or as the identity layer set it.
    pub name: Option<&'a str>,
    /// Its systemd unit, e.g. `nginx.service`.
    pub unit: Option<&'a str>,
    /// Its `comm` (`/proc/PID/comm`).
    pub comm: Option<&'a str>,
    /// Its executable path (`/proc/PID/exe`).
    pub exe: Option<&'a str>,
    /// Its container id or name.
    pub container: Option<&'a str>,
    /// Its uid (kernel-attested for Unix-socket agents).
    pub uid: Option<u32>,
    /// How it reached us: [`AgentOrigin::as_str`], i.e. `kernel_attested`,
    /// `network_unverified` or `network_verified`.
    pub origin: &'a str,
    /// The UDP source address of a network agent.
    pub peer: Option<IpAddr>,
}

/// A glob pattern of a `match` key, compiled once when the file is read.
///
/// Syntax is `globset`'s: `*`, `?`, `[abc]`, `[!abc]`, `{a,b}`, `**`, and
/// `\` to escape. Matching is case-sensitive and `*` also matches `/`
/// (`literal_separator` is off), so `exe = "/usr/*"` matches
/// `/usr/sbin/nginx`. A pattern without metacharacters matches only that
/// exact string.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    glob: GlobMatcher,
}

impl Pattern {
    /// Compiles `text`; the error is the reason, for a message.
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err(
                "must not be empty (leave the key out to match every agent, or use \"*\" to match any known value)"
                    .into(),
            );
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("not a valid glob pattern: {}", e.kind()))?;
        Ok(Pattern {
            text: text.to_string(),
            glob: glob.compile_matcher(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.glob.is_match(value)
    }

    /// The pattern itself when it has no glob metacharacter (so it matches
    /// exactly one string).
    pub fn literal(&self) -> Option<&str> {
        (!self.text.contains(GLOB_META)).then_some(self.text.as_str())
    }
}

/// The pattern as written: the compiled matcher is derived from it (and
/// its `Debug` holds per-thread caches, so two equal patterns would not
/// print alike).
impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.text).finish()
    }
}

/// Two patterns are equal when written the same (compiling is deterministic).
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// An IP network for `match.peer`: `10.0.0.0/8`, `fd00::/8`, or one address
/// (`192.0.2.7`, the same as `/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`. Host bits set under the prefix are
    /// an error (`10.1.0.0/8` is more likely a typo of `/16` than meant).
    /// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is stored as the
    /// IPv4 network it is.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        const HINT: &str = "expected an IP address or network, e.g. 10.0.0.0/8 or fd00::/8";
        let (addr, prefix) = match s.split_once('/') {
            None => {
                let addr: IpAddr = s.parse().map_err(|_| HINT.to_string())?;
                (addr, max_prefix(addr))
            }
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| HINT.to_string())?;
                let max = max_prefix(addr);
                let prefix =
                    if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) {
                        p.parse::<u8>().ok().filter(|n| *n <= max)
                    } else {
                        None
                    };
                let Some(prefix) = prefix else {
                    return Err(format!("the prefix length must be between 0 and {max}"));
                };
                (addr, prefix)
            }
        };
        let network = mask(addr, prefix);
        if network != addr {
            return Err(format!(
                "has host bits set below the /{prefix} prefix; write {network}/{prefix} for that network, or a longer prefix"
            ));
        }
        let cidr = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Cidr { addr, prefix },
            },
            _ => Cidr { addr, prefix },
        };
        Ok(cidr)
    }

    /// Whether `ip` is in the network. An IPv4-mapped IPv6 peer (what a
    /// dual-stack listener reports) is compared as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let inside = |ip: IpAddr| {
            matches!(
                (ip, self.addr),
                (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
            ) && mask(ip, self.prefix) == self.addr
        };
        inside(ip) || inside(ip.to_canonical())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == max_prefix(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit below the first `prefix` bits cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

/// The `match` table of a rule: every key given must match the agent (AND);
/// an empty table matches every agent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matcher {
    /// `name`: glob on the agent's name.
    pub name: Option<Pattern>,
    /// `unit`: glob on its systemd unit.
    pub unit: Option<Pattern>,
    /// `comm`: glob on its `comm`.
    pub comm: Option<Pattern>,
    /// `exe`: glob on its executable path (`*` crosses `/`).
    pub exe: Option<Pattern>,
    /// `container`: glob on its container id or name.
    pub container: Option<Pattern>,
    /// `uid`: one uid or a list (`uid = 0`, `uid = [0, 1000]`); the agent's
    /// uid must be one of them.
    pub uid: Option<Vec<u32>>,
    /// `origin`: `kernel_attested`, `network_unverified` or
    /// `network_verified`.
    pub origin: Option<AgentOrigin>,
    /// `peer`: the network agent's source address is in this network.
    pub peer: Option<Cidr>,
}

impl Matcher {
    /// `match = {}`: matches every agent.
    pub fn is_catch_all(&self) -> bool {
        *self == Matcher::default()
    }

    /// Whether every given key matches `facts`. An unknown fact (`None`)
    /// never matches a key that is given.
    pub fn matches(&self, facts: &AgentFacts<'_>) -> bool {
        let glob = |p: &Option<Pattern>, fact: Option<&str>| match p {
            None => true,
            Some(p) => fact.is_some_and(|v| p.is_match(v)),
        };
        glob(&self.name, facts.name)
            && glob(&self.unit, facts.unit)
            && glob(&self.comm, facts.comm)
            && glob(&self.exe, facts.exe)
            && glob(&self.container, facts.container)
            && self
                .uid
                .as_ref()
                .is_none_or(|list| facts.uid.is_some_and(|u| list.contains(&u)))
            && self.origin.is_none_or(|o| o.as_str() == facts.origin)
            && self
                .peer
                .is_none_or(|net| facts.peer.is_some_and(|ip| net.contains(ip)))
    }
}

impl fmt::Display for Matcher {
    /// TOML inline-table form, e.g. `{ unit = "nginx.service", uid = [0, 1000] }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let patterns = [
            ("name", &self.name),
            ("unit", &self.unit),
            ("comm", &self.comm),
            ("exe", &self.exe),
            ("container", &self.container),
        ];
        for (key, p) in patterns {
            if let Some(p) = p {
                parts.push(format!("{key} = {}", quoted(p.as_str())));
            }
        }
        match self.uid.as_deref() {
            Some([one]) => parts.push(format!("uid = {one}")),
            Some(list) => parts.push(format!(
                "uid = [{}]",
                list.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => {}
        }
        if let Some(o) = self.origin {
            parts.push(format!("origin = {}", quoted(o.as_str())));
        }
        if let Some(p) = self.peer {
            parts.push(format!("peer = {}", quoted(&p.to_string())));
        }
        if parts.is_empty() {
            f.write_str("{}")
        } else {
            write!(f, "{{ {} }}", parts.join(", "))
        }
    }
}
