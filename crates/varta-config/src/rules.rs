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
#[cfg(feature = "load")]
use std::path::Path;
use std::time::Duration;

#[cfg(feature = "load")]
use serde::de::DeserializeOwned;
#[cfg(feature = "load")]
use serde::Deserialize;

#[cfg(feature = "load")]
use super::error::ConfigError;
#[cfg(feature = "load")]
use super::settings::{self, Origin, MAX_RECOVERY_ATTEMPTS, MAX_RECOVERY_WINDOW_MS};
#[cfg(feature = "load")]
use super::settings::{parse_command, MAX_THRESHOLD_MS};
#[cfg(feature = "load")]
use super::types::MIN_THRESHOLD_MS;
use crate::AgentOrigin;

pub use super::matcher::{AgentFacts, Cidr, Matcher, Pattern};

/// Most distinct (threshold, startup grace) policies the rules may give,
/// the global one included: the tracker keeps one deadline list per policy
/// and phase in 32 classes, one of which is reserved for agents whose rule
/// is not known yet.
pub const MAX_TIMEOUT_CLASSES: usize = 31;

#[cfg(feature = "load")]
/// Largest `startup-grace-ms` (24 h, like the largest threshold).
pub const MAX_STARTUP_GRACE_MS: u64 = MAX_THRESHOLD_MS;

/// The placeholders a `name` template may use, without braces.
pub const NAME_PLACEHOLDERS: &[&str] = &["unit", "comm", "container", "exe", "uid", "pid"];

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

/// `s` as a TOML string, as the operator would write it in the file.
#[cfg(feature = "load")]
pub(super) fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Without the TOML writer (the baked profile, whose rules are always
/// empty), a Rust-escaped string: still one line, still quoted.
#[cfg(not(feature = "load"))]
pub(super) fn quoted(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
/// A short TOML rendering of a value for a message.
fn short(value: &toml::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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

#[cfg(feature = "load")]
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
