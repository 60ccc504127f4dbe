//! The recovery command: a template split on whitespace once, with `{pid}`
//! substituted per spawn. No shell ever sees it, so quotes, `;`, `|`, `$()`
//! and globs are plain bytes of an argument.

use std::ffi::OsString;
use std::process::{Command, Stdio};

use crate::config::{CommandSource, RecoveryConfig};

use super::policy::TriggerKind;

/// The only `PATH` a child gets unless `--recovery-inherit-env`.
pub const CHILD_PATH: &str = "/usr/bin:/bin";

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
    /// Splits the configured template. Config validation guarantees at
    /// least one word.
    pub fn new(cfg: &RecoveryConfig) -> CommandTemplate {
        CommandTemplate {
            args: cfg
                .template
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect(),
            source: match &cfg.source {
                CommandSource::Inline => "inline".to_string(),
                CommandSource::File(p) => p.display().to_string(),
            },
            env: cfg.env.clone(),
            inherit_env: cfg.inherit_env,
            capture: cfg.capture,
        }
    }

    /// `argv[0]` as configured (before substitution).
    pub fn program(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }

    /// `inline` or the exec-file path (the audit `source` column).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The argument vector for agent `pid`: `{pid}` replaced everywhere.
    pub fn argv(&self, pid: u32) -> Vec<String> {
        let pid = pid.to_string();
        self.args.iter().map(|a| a.replace("{pid}", &pid)).collect()
    }

    /// A ready-to-spawn command for `pid`: exec'd directly, stdin from
    /// /dev/null, its own process group (so a timeout can kill the whole
    /// tree), an isolated environment, stdout/stderr piped when capturing
    /// and /dev/null otherwise.
    pub fn command(&self, pid: u32, kind: TriggerKind) -> (Command, usize) {
        let argv = self.argv(pid);
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
        cmd.env("VARTA_AGENT_PID", pid.to_string())
            .env("VARTA_EVENT", kind.as_str());
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
        }
    }

    #[test]
    fn substitutes_pid_everywhere_and_keeps_metacharacters() {
        let t = CommandTemplate::new(&cfg("/bin/echo  {pid} a{pid}b ;rm $(x) '*'"));
        assert_eq!(t.program(), "/bin/echo");
        assert_eq!(
            t.argv(42),
            vec!["/bin/echo", "42", "a42b", ";rm", "$(x)", "'*'"]
        );
    }
}
