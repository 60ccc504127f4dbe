//! The recovery command: a template split on whitespace once, with the
//! placeholders [`PLACEHOLDERS`] substituted per spawn in every argument.
//! No shell ever sees it, so quotes, `;`, `|`, `$()` and globs are plain
//! bytes of an argument, and a substituted value is always part of one
//! argument (a name with spaces is never split). Substitution is one pass:
//! a value that itself contains `{pid}` is not expanded again.

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::config::{CommandSource, RecoveryConfig};

use super::policy::TriggerKind;

use varta_config::placeholders::pieces;
pub use varta_config::placeholders::{check_placeholders, PLACEHOLDERS};

/// What a placeholder renders when the observer does not know the value.
pub const UNKNOWN: &str = "unknown";

/// Who a recovery is for: the strings placeholders and `VARTA_AGENT_*`
/// variables come from. `None` is unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's pid (0 for `missing`).
    pub pid: u32,
    /// Its name.
    pub name: Option<Arc<str>>,
    /// Its systemd unit.
    pub unit: Option<Arc<str>>,
    /// Its container.
    pub container: Option<Arc<str>>,
    /// Its `comm`.
    pub comm: Option<Arc<str>>,
    /// Its executable.
    pub exe: Option<Arc<str>>,
}

impl AgentInfo {
    /// Only the pid known.
    pub fn pid(pid: u32) -> AgentInfo {
        AgentInfo {
            pid,
            ..AgentInfo::default()
        }
    }

    fn field(&self, placeholder: &str) -> Option<&str> {
        match placeholder {
            "name" => self.name.as_deref(),
            "unit" => self.unit.as_deref(),
            "container" => self.container.as_deref(),
            "comm" => self.comm.as_deref(),
            "exe" => self.exe.as_deref(),
            _ => None,
        }
    }
}

/// `arg` with every placeholder replaced by `who`'s value (`unknown` when
/// not known; an unknown placeholder, which validation refuses, is kept).
pub fn render(arg: &str, who: &AgentInfo) -> String {
    let mut out = String::with_capacity(arg.len());
    for p in pieces(arg) {
        match p {
            Ok(lit) => out.push_str(lit),
            Err("pid") => out.push_str(&who.pid.to_string()),
            Err(word) if PLACEHOLDERS.contains(&word) => {
                out.push_str(who.field(word).unwrap_or(UNKNOWN))
            }
            Err(word) => {
                out.push('{');
                out.push_str(word);
                out.push('}');
            }
        }
    }
    out
}

pub use varta_config::placeholders::CHILD_PATH;

/// A parsed command template plus the environment children get.
#[derive(Clone, Debug)]
pub struct CommandTemplate {
    args: Vec<String>,
    source: String,
    env: Vec<(String, String)>,
    inherit_env: bool,
    capture: bool,
}

impl CommandTemplate {
    /// Splits the configured global template; None when there is none
    /// (only rules set commands).
    pub fn new(cfg: &RecoveryConfig) -> Option<CommandTemplate> {
        let source = match &cfg.source {
            CommandSource::Inline => "inline".to_string(),
            CommandSource::File(p) => p.display().to_string(),
        };
        CommandTemplate::with_source(&cfg.template, source, cfg)
    }

    /// A rule's `recovery-exec` under the global environment and capture
    /// settings; the audit `source` is `[[agent]] #N`. None when empty.
    pub fn for_rule(template: &str, index: usize, cfg: &RecoveryConfig) -> Option<CommandTemplate> {
        CommandTemplate::with_source(
            template,
            format!("[[agent]] #{}", index.saturating_add(1)),
            cfg,
        )
    }

    fn with_source(
        template: &str,
        source: String,
        cfg: &RecoveryConfig,
    ) -> Option<CommandTemplate> {
        let args: Vec<String> = template
            .split_ascii_whitespace()
            .map(str::to_string)
            .collect();
        if args.is_empty() {
            return None;
        }
        Some(CommandTemplate {
            args,
            source,
            env: cfg.env.clone(),
            inherit_env: cfg.inherit_env,
            capture: cfg.capture,
        })
    }

    /// `argv[0]` as configured (before substitution).
    pub fn program(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }

    /// `inline`, the exec-file path or `[[agent]] #N` (the audit `source`
    /// column).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The argument vector for `who`: placeholders replaced everywhere.
    pub fn argv(&self, who: &AgentInfo) -> Vec<String> {
        self.args.iter().map(|a| render(a, who)).collect()
    }

    /// A ready-to-spawn command for `who`: exec'd directly, stdin from
    /// /dev/null, its own process group (so a timeout can kill the whole
    /// tree), an isolated environment, stdout/stderr piped when capturing
    /// and /dev/null otherwise. `VARTA_AGENT_PID` and `VARTA_EVENT` are
    /// always set, `VARTA_AGENT_NAME`, `_UNIT`, `_CONTAINER`, `_COMM` and
    /// `_EXE` when known.
    pub fn command(&self, who: &AgentInfo, kind: TriggerKind) -> (Command, usize) {
        let argv = self.argv(who);
        // Length of the argv as exec'd, separators included.
        let len = argv.iter().map(String::len).sum::<usize>() + argv.len().saturating_sub(1);
        let mut cmd = Command::new(OsString::from(&argv[0]));
        cmd.args(&argv[1..]);
        if !self.inherit_env {
            cmd.env_clear();
            cmd.env("PATH", CHILD_PATH);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("VARTA_AGENT_PID", who.pid.to_string())
            .env("VARTA_EVENT", kind.as_str());
        for (var, value) in [
            ("VARTA_AGENT_NAME", &who.name),
            ("VARTA_AGENT_UNIT", &who.unit),
            ("VARTA_AGENT_CONTAINER", &who.container),
            ("VARTA_AGENT_COMM", &who.comm),
            ("VARTA_AGENT_EXE", &who.exe),
        ] {
            if let Some(v) = value {
                cmd.env(var, &**v);
            }
        }
        cmd.stdin(Stdio::null());
        if self.capture {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        (cmd, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(t: &str) -> RecoveryConfig {
        RecoveryConfig {
            template: t.into(),
            source: CommandSource::Inline,
            debounce: Duration::ZERO,
            timeout: None,
            kill_grace: Duration::from_secs(2),
            max_attempts: 5,
            window: Duration::from_secs(300),
            backoff: Duration::from_secs(1),
            env: vec![],
            inherit_env: false,
            capture: false,
            capture_bytes: 4096,
            table_capacity: 16,
            max_children: 16,
            trusted_network_origin: None,
            rules: vec![],
        }
    }

    #[test]
    fn substitutes_pid_everywhere_and_keeps_metacharacters() {
        let t = CommandTemplate::new(&cfg("/bin/echo  {pid} a{pid}b ;rm $(x) '*'")).unwrap();
        assert_eq!(t.program(), "/bin/echo");
        assert_eq!(
            t.argv(&AgentInfo::pid(42)),
            vec!["/bin/echo", "42", "a42b", ";rm", "$(x)", "'*'"]
        );
        assert!(CommandTemplate::new(&cfg("")).is_none());
    }

    #[test]
    fn substitutes_every_field_whole_once_and_unknown_as_unknown() {
        let t = CommandTemplate::for_rule(
            "/usr/bin/systemctl restart {unit} --name={name} {comm}@{container} {exe} {} {x y} {{pid}}",
            1,
            &cfg("/bin/true"),
        )
        .unwrap();
        assert_eq!(t.source(), "[[agent]] #2");
        let who = AgentInfo {
            pid: 7,
            name: Some("my app {pid}".into()),
            unit: Some("app.service".into()),
            container: None,
            comm: Some("app".into()),
            exe: None,
        };
        assert_eq!(
            t.argv(&who),
            vec![
                "/usr/bin/systemctl",
                "restart",
                "app.service",
                // Whole, with its space, and `{pid}` in a value is not expanded.
                "--name=my app {pid}",
                "app@unknown",
                "unknown",
                "{}",
                "{x",
                "y}",
                "{7}",
            ]
        );
    }

    #[test]
    fn placeholders_are_checked() {
        assert!(check_placeholders("/bin/x {pid} {name} {unit} {container} {comm} {exe}").is_ok());
        assert!(check_placeholders("/bin/x {} { } ${ a{").is_ok());
        let e = check_placeholders("/bin/x a{foo}b").unwrap_err();
        assert!(e.starts_with("unknown placeholder {foo};"), "{e}");
        assert!(
            e.contains("{pid}, {name}, {unit}, {container}, {comm}, {exe}"),
            "{e}"
        );
        // Shell syntax stays plain bytes, as before placeholders had names.
        assert!(check_placeholders("/bin/x ${HOME} ;touch${IFS}x").is_ok());
        assert_eq!(render("${IFS}{pid}${x}", &AgentInfo::pid(3)), "${IFS}3${x}");
        assert!(check_placeholders("/bin/x ${HOME}{nope}").is_err());
    }

    #[test]
    fn environment_names_the_agent_when_known() {
        let t = CommandTemplate::new(&cfg("/bin/true")).unwrap();
        let who = AgentInfo {
            name: Some("billing".into()),
            unit: Some("billing.service".into()),
            ..AgentInfo::pid(0)
        };
        let (cmd, _) = t.command(&who, TriggerKind::Missing);
        let env: std::collections::BTreeMap<String, String> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        assert_eq!(env["VARTA_AGENT_PID"], "0");
        assert_eq!(env["VARTA_EVENT"], "missing");
        assert_eq!(env["VARTA_AGENT_NAME"], "billing");
        assert_eq!(env["VARTA_AGENT_UNIT"], "billing.service");
        assert!(!env.contains_key("VARTA_AGENT_COMM"));
        assert!(!env.contains_key("VARTA_AGENT_EXE"));
        assert!(!env.contains_key("VARTA_AGENT_CONTAINER"));
    }
}
