//! Per-agent policy rules: the `[[agent]]` tables of the config file.
//!
//! ```toml
//! [[agent]]
//! match = { unit = "nginx.service" }   # every key must match; string keys are globs
//! name = "{unit}"                      # optional: the agent's name, from a template
//! threshold-ms = 2000
//! startup-grace-ms = 10000             # first deadline = grace + threshold
//! recovery-exec = "systemctl restart nginx.service"
//! recovery-max-attempts = 3
//! recovery-window-ms = 600000
//! # recovery = false                   # or switch recovery off for these agents
//! # required = true                    # needs a literal match.name
//! ```
//!
//! Rules exist only in the file: the flags (and their file keys) stay the
//! defaults for every agent no rule matches, and for every setting a
//! matching rule leaves out. The first rule whose `match` matches an agent
//! applies ([`Rules::first_match`]); later rules are not consulted, not even
//! for the keys the first one leaves out.
//!
//! Every key is validated when the file is read, at startup and on each
//! reload, and an error names the file, the rule (`[[agent]] #N`, counting
//! from 1 in file order) and the key. Keys are kebab-case; the snake_case
//! spelling is accepted too, as everywhere in the file.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ConfigError;
use super::settings::{self, Origin, MAX_RECOVERY_ATTEMPTS, MAX_RECOVERY_WINDOW_MS};
use super::settings::{parse_command, MAX_THRESHOLD_MS};
use super::types::MIN_THRESHOLD_MS;
use crate::events::Origin as AgentOrigin;

/// Most distinct (threshold, startup grace) policies the rules may give,
/// the global one included: the tracker keeps one deadline list per policy
/// and phase in 32 classes, one of which is reserved for agents whose rule
/// is not known yet.
pub const MAX_TIMEOUT_CLASSES: usize = 31;

/// Largest `startup-grace-ms` (24 h, like the largest threshold).
pub const MAX_STARTUP_GRACE_MS: u64 = MAX_THRESHOLD_MS;

/// The placeholders a `name` template may use, without braces.
pub const NAME_PLACEHOLDERS: &[&str] = &["unit", "comm", "container", "exe", "uid", "pid"];

/// Keys of one `[[agent]]` table (canonical, kebab-case).
const RULE_KEYS: &[&str] = &[
    "match",
    "name",
    "threshold-ms",
    "startup-grace-ms",
    "recovery-exec",
    "recovery-max-attempts",
    "recovery-window-ms",
    "recovery",
    "required",
];

/// Keys of a rule's `match` table.
const MATCH_KEYS: &[&str] = &[
    "name",
    "unit",
    "comm",
    "exe",
    "container",
    "uid",
    "origin",
    "peer",
];

/// Characters that make a `match` string a glob rather than a literal.
const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

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
#[derive(Clone, Debug)]
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

/// One `[[agent]]` table, validated. `None` means "not set by this rule":
/// the global setting (flag or top-level file key) applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// 0-based position in the file; messages say `[[agent]] #N`, N = index + 1.
    pub index: usize,
    /// Which agents the rule applies to.
    pub matcher: Matcher,
    /// `name`: the name matched agents get, from a template with
    /// placeholders [`NAME_PLACEHOLDERS`] in braces (`"{comm}@{container}"`);
    /// validated: no unknown placeholder, no unbalanced brace, no control
    /// character, not empty.
    pub name_template: Option<String>,
    /// `threshold-ms`: silence before a stall (10 ms to 24 h).
    pub threshold: Option<Duration>,
    /// `startup-grace-ms`: extra time before the first deadline of a new
    /// agent (first deadline = grace + threshold; 0 to 24 h). For a
    /// required rule, also how long after observer start an agent of the
    /// required name may take to beat before `missing` is raised.
    pub startup_grace: Option<Duration>,
    /// `recovery-exec`: the command for matched agents, with the rules of
    /// `--recovery-exec` (split on whitespace, never run by a shell; not
    /// empty, no NUL). Allowed without a global recovery command: the rule
    /// then enables recovery for its agents alone, under the global
    /// recovery settings (debounce, timeout, environment, …).
    pub recovery_exec: Option<String>,
    /// `recovery-max-attempts`: storm cap for matched agents (1 to 1000).
    pub recovery_max_attempts: Option<u32>,
    /// `recovery-window-ms`: the storm cap's window (1 s to 7 days).
    pub recovery_window: Option<Duration>,
    /// `recovery`: `false` switches recovery off for matched agents (even
    /// with a global command); `true` is the default and changes nothing.
    pub recovery: Option<bool>,
    /// `required`: an agent of the literal `match.name` must be alive: the
    /// observer raises `missing` when none has beaten within
    /// `startup-grace-ms` (mandatory here) of its start, and `present` when
    /// one appears.
    pub required: bool,
}

impl Rule {
    /// The stall threshold for matched agents.
    pub fn threshold_or(&self, global_threshold: Duration) -> Duration {
        self.threshold.unwrap_or(global_threshold)
    }

    /// (threshold, startup grace) of matched agents: the tracker's policy
    /// class.
    pub fn timeouts(&self, global_threshold: Duration) -> (Duration, Duration) {
        (
            self.threshold_or(global_threshold),
            self.startup_grace.unwrap_or(Duration::ZERO),
        )
    }

    /// The first deadline of a new matched agent: startup grace + threshold.
    pub fn first_deadline(&self, global_threshold: Duration) -> Duration {
        self.startup_grace
            .unwrap_or(Duration::ZERO)
            .saturating_add(self.threshold_or(global_threshold))
    }

    /// Whether matched agents are recovered, given whether a global recovery
    /// command is configured. (The UDP listener's recovery opt-in still
    /// gates network agents, as for the global command.)
    pub fn recovery_enabled(&self, global_recovery: bool) -> bool {
        self.recovery != Some(false) && (self.recovery_exec.is_some() || global_recovery)
    }

    /// The name an agent must be alive under, for a `required = true` rule
    /// (validation guarantees it is a literal `match.name`).
    pub fn required_name(&self) -> Option<&str> {
        if !self.required {
            return None;
        }
        self.matcher.name.as_ref().and_then(Pattern::literal)
    }

    /// `[[agent]] #N` (1-based), as messages name the rule.
    pub fn label(&self) -> String {
        label(self.index)
    }
}

impl fmt::Display for Rule {
    /// The rule's settings on one line, in TOML spelling, for reload diffs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "match = {}", self.matcher)?;
        if let Some(n) = &self.name_template {
            write!(f, " name = {}", quoted(n))?;
        }
        if let Some(t) = self.threshold {
            write!(f, " threshold-ms = {}", t.as_millis())?;
        }
        if let Some(g) = self.startup_grace {
            write!(f, " startup-grace-ms = {}", g.as_millis())?;
        }
        if let Some(e) = &self.recovery_exec {
            write!(f, " recovery-exec = {}", quoted(e))?;
        }
        if let Some(n) = self.recovery_max_attempts {
            write!(f, " recovery-max-attempts = {n}")?;
        }
        if let Some(w) = self.recovery_window {
            write!(f, " recovery-window-ms = {}", w.as_millis())?;
        }
        if let Some(r) = self.recovery {
            write!(f, " recovery = {r}")?;
        }
        if self.required {
            f.write_str(" required = true")?;
        }
        Ok(())
    }
}

/// Every `[[agent]]` rule of the config file, in file order (empty without
/// a file or without rules).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    /// The rules; `rules[i].index == i`.
    pub rules: Vec<Rule>,
}

impl Rules {
    /// No rule: every agent uses the global settings.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule (in file order) whose `match` matches `facts`; `None`
    /// when no rule does and the global settings apply.
    pub fn first_match(&self, facts: &AgentFacts<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matcher.matches(facts))
    }

    /// The distinct timeouts agents can get: `global_threshold` (agents no
    /// rule matches), and every rule's (threshold, startup grace) pair.
    /// Loading refuses rules that make this set larger than
    /// [`MAX_TIMEOUT_CLASSES`]. The `missing` deadlines of required rules
    /// are not in it.
    pub fn distinct_timeouts(&self, global_threshold: Duration) -> BTreeSet<(Duration, Duration)> {
        let mut set = BTreeSet::from([(global_threshold, Duration::ZERO)]);
        for rule in &self.rules {
            set.insert(rule.timeouts(global_threshold));
        }
        set
    }

    /// The `required = true` rules, in file order.
    pub fn required(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.required)
    }

    /// Whether some rule can enable recovery for agents of a network origin
    /// (it has `recovery-exec`, does not say `recovery = false`, and its
    /// `match.origin` is absent or a network origin). The UDP listener's
    /// recovery opt-in is then required as for a global command.
    pub fn may_recover_network_agents(&self) -> bool {
        self.rules.iter().any(|r| {
            r.recovery_exec.is_some()
                && r.recovery != Some(false)
                && r.matcher.origin != Some(AgentOrigin::KernelAttested)
        })
    }
}

fn label(index: usize) -> String {
    format!("[[agent]] #{}", index.saturating_add(1))
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The rule as written, before validation; keys are canonical (kebab-case)
/// by the time it is deserialized.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRule {
    #[serde(rename = "match")]
    matcher: Option<toml::Table>,
    name: Option<String>,
    threshold_ms: Option<u64>,
    startup_grace_ms: Option<u64>,
    recovery_exec: Option<String>,
    recovery_max_attempts: Option<u64>,
    recovery_window_ms: Option<u64>,
    recovery: Option<bool>,
    required: Option<bool>,
}

/// A rule's `match` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    name: Option<String>,
    unit: Option<String>,
    comm: Option<String>,
    exe: Option<String>,
    container: Option<String>,
    /// An integer or a list of integers: checked by hand for a clear message.
    uid: Option<toml::Value>,
    origin: Option<String>,
    peer: Option<String>,
}

/// Parses the value of the top-level `agent` key (`[[agent]]` tables) of
/// the file at `path`. Errors name the file, the rule and the key.
pub(crate) fn parse(path: &Path, value: toml::Value) -> Result<Rules, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let items = match value {
        toml::Value::Array(items) => items,
        toml::Value::Table(_) => {
            return Err(err(
                "[agent] is a single table: write each per-agent rule as an [[agent]] section (double brackets)"
                    .into(),
            ))
        }
        value => {
            return Err(err(format!(
                "agent = {}: each per-agent rule is a table written [[agent]] (double brackets), one per rule",
                short(&value)
            )))
        }
    };
    let mut rules = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let toml::Value::Table(table) = item else {
            return Err(err(format!(
                "{}: must be a table; write each rule as an [[agent]] section",
                label(index)
            )));
        };
        let rule = parse_rule(path, index, table)?;
        rules.push(rule);
    }
    let rules = Rules { rules };
    check_required(&rules).map_err(err)?;
    Ok(rules)
}

/// A short TOML rendering of a value for a message.
fn short(value: &toml::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// `table` with every key in its canonical kebab-case spelling; an unknown
/// key or one given in both spellings is the error. `what` follows the key
/// in the message (`" in match"`).
fn canonical(table: toml::Table, known: &[&str], what: &str) -> Result<toml::Table, String> {
    let mut out = toml::Table::new();
    for (key, value) in table {
        let canonical = key.replace('_', "-");
        if !known.contains(&canonical.as_str()) {
            return Err(format!(
                "unknown key '{key}'{what} (expected one of: {})",
                known.join(", ")
            ));
        }
        if out.contains_key(&canonical) {
            return Err(format!(
                "key '{key}' is given twice (as '{canonical}' and its snake_case spelling)"
            ));
        }
        out.insert(canonical, value);
    }
    Ok(out)
}

/// Deserializes `table`; on a type error each key is retried alone so the
/// message can name it (`prefix` goes before the key, e.g. `match.`).
fn deserialize<T: DeserializeOwned>(table: &toml::Table, prefix: &str) -> Result<T, String> {
    T::deserialize(toml::Value::Table(table.clone())).map_err(|whole| {
        for (key, value) in table {
            let mut one = toml::Table::new();
            one.insert(key.clone(), value.clone());
            if let Err(e) = T::deserialize(toml::Value::Table(one)) {
                return format!("{prefix}{key} = {}: {}", short(value), e.message().trim());
            }
        }
        whole.message().trim().to_string()
    })
}

fn parse_rule(path: &Path, index: usize, table: toml::Table) -> Result<Rule, ConfigError> {
    let at = label(index);
    let err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message: format!("{at}: {message}"),
    };
    // Range and text checks are the flags' own (settings.rs), with the key
    // spelled `[[agent]] #N: key` so the message reads
    // `[[agent]] #N: key = value: reason`.
    let o = Origin::File(path);
    let key = |k: &str| format!("{at}: {k}");

    let table = canonical(table, RULE_KEYS, "").map_err(err)?;
    let raw: RawRule = deserialize(&table, "").map_err(err)?;
    let Some(match_table) = raw.matcher else {
        return Err(err(
            "has no 'match' key: say which agents the rule applies to, e.g. match = { unit = \"nginx.service\" }, or match = {} for every agent"
                .into(),
        ));
    };
    let match_table = canonical(match_table, MATCH_KEYS, " in match").map_err(err)?;
    let m: RawMatch = deserialize(&match_table, "match.").map_err(err)?;

    let pattern = |k: &str, v: Option<String>| settings::text(o, &key(k), v, Pattern::new);
    let matcher = Matcher {
        name: pattern("match.name", m.name)?,
        unit: pattern("match.unit", m.unit)?,
        comm: pattern("match.comm", m.comm)?,
        exe: pattern("match.exe", m.exe)?,
        container: pattern("match.container", m.container)?,
        uid: m.uid.map(|v| parse_uids(&v).map_err(err)).transpose()?,
        origin: settings::text(o, &key("match.origin"), m.origin, parse_origin)?,
        peer: settings::text(o, &key("match.peer"), m.peer, Cidr::parse)?,
    };
    let required = raw.required.unwrap_or(false);
    let rule = Rule {
        index,
        name_template: settings::text(o, &key("name"), raw.name, parse_name_template)?,
        threshold: settings::ms(
            o,
            &key("threshold-ms"),
            raw.threshold_ms,
            (MIN_THRESHOLD_MS, MAX_THRESHOLD_MS),
        )?,
        startup_grace: settings::ms(
            o,
            &key("startup-grace-ms"),
            raw.startup_grace_ms,
            (0, MAX_STARTUP_GRACE_MS),
        )?,
        recovery_exec: settings::text(o, &key("recovery-exec"), raw.recovery_exec, parse_command)?,
        recovery_max_attempts: settings::num(
            o,
            &key("recovery-max-attempts"),
            raw.recovery_max_attempts,
            (1, MAX_RECOVERY_ATTEMPTS),
            " attempts",
        )?
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        recovery_window: settings::ms(
            o,
            &key("recovery-window-ms"),
            raw.recovery_window_ms,
            (1000, MAX_RECOVERY_WINDOW_MS),
        )?,
        recovery: raw.recovery,
        required,
        matcher,
    };
    if required {
        match &rule.matcher.name {
            None => {
                return Err(err(
                    "required = true needs a name to look for: add it to the match, e.g. match = { name = \"billing\" }"
                        .into(),
                ))
            }
            Some(p) if p.literal().is_none() => {
                return Err(err(format!(
                    "required = true needs a literal match.name, but {} is a glob pattern: a required agent is looked for by its exact name",
                    quoted(p.as_str())
                )))
            }
            Some(_) => {}
        }
        if rule.startup_grace.is_none() {
            return Err(err(
                "required = true needs startup-grace-ms: how long after the observer starts an agent of that name may take to beat before `missing` is raised"
                    .into(),
            ));
        }
    }
    Ok(rule)
}

/// Two required rules for one name would raise `missing` twice.
fn check_required(rules: &Rules) -> Result<(), String> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for rule in rules.required() {
        let Some(name) = rule.required_name() else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            return Err(format!(
                "{}: required = true: the name {} is already required by {}",
                rule.label(),
                quoted(name),
                label(*first)
            ));
        }
        seen.push((name, rule.index));
    }
    Ok(())
}

/// `match.uid`: an integer or a non-empty list of integers, each a uid.
fn parse_uids(value: &toml::Value) -> Result<Vec<u32>, String> {
    let one = |v: &toml::Value| {
        match v {
        toml::Value::Integer(n) => u32::try_from(*n).map_err(|_| {
            format!(
                "match.uid = {}: {n} is not a uid: must be between 0 and {}",
                short(value),
                u32::MAX
            )
        }),
        other => Err(format!(
            "match.uid = {}: expected a uid (integer) or a list of uids, e.g. uid = [0, 1000], not {}",
            short(value),
            other.type_str()
        )),
    }
    };
    match value {
        toml::Value::Array(list) if list.is_empty() => Err(
            "match.uid = []: list at least one uid, or leave the key out to match every uid".into(),
        ),
        toml::Value::Array(list) => list.iter().map(one).collect(),
        v => one(v).map(|u| vec![u]),
    }
}

/// `match.origin`: one of the three origin labels.
fn parse_origin(s: &str) -> Result<AgentOrigin, String> {
    [
        AgentOrigin::KernelAttested,
        AgentOrigin::NetworkUnverified,
        AgentOrigin::NetworkVerified,
    ]
    .into_iter()
    .find(|o| o.as_str() == s)
    .ok_or_else(|| "expected one of: kernel_attested, network_unverified, network_verified".into())
}

/// Validates a `name` template: literal text and `{placeholder}`s from
/// [`NAME_PLACEHOLDERS`]; no other brace, no control character, not empty.
///
/// Stand-in for the identity layer's `NameTemplate::parse`, to be merged
/// with it.
pub fn parse_name_template(s: &str) -> Result<String, String> {
    let expected = || {
        NAME_PLACEHOLDERS
            .iter()
            .map(|p| format!("{{{p}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let mut rest = s;
    while let Some(at) = rest.find(['{', '}']) {
        if rest[at..].starts_with('}') {
            return Err(format!(
                "unbalanced '}}' at byte {}: a placeholder is written {{unit}}",
                s.len() - rest.len() + at
            ));
        }
        let after = &rest[at + 1..];
        let Some(close) = after
            .find(['{', '}'])
            .filter(|i| after[*i..].starts_with('}'))
        else {
            return Err(format!(
                "unbalanced '{{' at byte {}: close the placeholder with '}}' (placeholders: {})",
                s.len() - rest.len() + at,
                expected()
            ));
        };
        let placeholder = &after[..close];
        if !NAME_PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "unknown placeholder {{{placeholder}}}; expected one of: {}",
                expected()
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(s.to_string())
}

/// Load-time checks that need the rest of the configuration: the timeout
/// classes (an error), and warnings for rules that cannot work as written.
pub(super) fn check(
    rules: &Rules,
    path: Option<&Path>,
    global_threshold: Duration,
    global_recovery: bool,
    inherit_env: bool,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(path) = path else {
        return Ok(());
    };
    let timeouts = rules.distinct_timeouts(global_threshold).len();
    if timeouts > MAX_TIMEOUT_CLASSES {
        return Err(ConfigError::File {
            path: path.to_path_buf(),
            message: format!(
                "the [[agent]] rules give {timeouts} distinct (threshold-ms, startup-grace-ms) pairs, the global threshold-ms included; the tracker supports at most {MAX_TIMEOUT_CLASSES}: give rules the same values where you can"
            ),
        });
    }
    let file = path.display();
    let n = rules.rules.len();
    for rule in &rules.rules {
        let at = format!("{} (config file {file})", rule.label());
        if rule.matcher.is_catch_all() && rule.index + 1 < n {
            let unreachable = if rule.index + 2 == n {
                format!("{} never applies", label(rule.index + 1))
            } else {
                format!("{} to #{n} never apply", label(rule.index + 1))
            };
            warnings.push(format!(
                "{at} has match = {{}} and applies to every agent, so {unreachable} (the first matching rule wins); put the catch-all rule last"
            ));
        }
        let policy: Vec<&str> = [
            ("recovery-exec", rule.recovery_exec.is_some()),
            (
                "recovery-max-attempts",
                rule.recovery_max_attempts.is_some(),
            ),
            ("recovery-window-ms", rule.recovery_window.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, given)| given.then_some(k))
        .collect();
        if rule.recovery == Some(false) {
            if !policy.is_empty() {
                warnings.push(format!(
                    "{at}: {} {} no effect with recovery = false",
                    policy.join(", "),
                    if policy.len() == 1 { "has" } else { "have" }
                ));
            }
        } else if !rule.recovery_enabled(global_recovery) {
            let mut useless = policy;
            if rule.recovery == Some(true) {
                useless.push("recovery = true");
            }
            if !useless.is_empty() {
                warnings.push(format!(
                    "{at}: {} {} no effect without a recovery command (recovery-exec in the rule, or --recovery-exec / --recovery-exec-file)",
                    useless.join(", "),
                    if useless.len() == 1 { "has" } else { "have" }
                ));
            }
        }
        if let Some(cmd) = &rule.recovery_exec {
            if let Some(w) = super::recovery::program_warning(cmd, inherit_env) {
                warnings.push(format!("{at}: {w}"));
            }
        }
        if let (Some(name), Some(template)) = (rule.required_name(), &rule.name_template) {
            if template != name {
                warnings.push(format!(
                    "{at}: required = true looks for an agent named {}, but name = {} renames the agents this rule matches",
                    quoted(name),
                    quoted(template)
                ));
            }
        }
    }
    Ok(())
}

/// Appends reload-diff lines: a summary (`agent rules: 2 -> 3 rules
/// (changed: #3)`) and one `old -> new` line per changed rule.
pub(super) fn diff(old: &Rules, new: &Rules, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    let len = old.rules.len().max(new.rules.len());
    let changed: Vec<usize> = (0..len)
        .filter(|i| old.rules.get(*i) != new.rules.get(*i))
        .collect();
    out.push(format!(
        "agent rules: {} -> {} rules (changed: {})",
        old.rules.len(),
        new.rules.len(),
        changed
            .iter()
            .map(|i| format!("#{}", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let describe = |r: Option<&Rule>| r.map_or("none".to_string(), Rule::to_string);
    for i in changed {
        out.push(format!(
            "{}: {} -> {}",
            label(i),
            describe(old.rules.get(i)),
            describe(new.rules.get(i))
        ));
    }
}
