//! Assembles [`RecoveryConfig`] and [`AuditConfig`] from merged settings:
//! defaults, the exec-file read, cross-setting checks and the warnings an
//! operator should see at startup.

use std::path::Path;
use std::time::Duration;

use super::error::ConfigError;
use super::settings::{parse_command, Origin, Partial};
use super::types::*;

/// Builds the recovery and audit sections. `origin(given_as_flag)` says
/// where a setting came from so errors name the flag or the file key.
///
/// Without a global command, a base configuration (the global settings,
/// an empty template) is built when some `[[agent]]` rule sets
/// `recovery-exec` for agents it does not switch off: recovery then runs
/// for those agents alone. Every rule's recovery part is attached.
pub(super) fn build<'a>(
    merged: &Partial,
    from_flags: &Partial,
    origin: &dyn Fn(bool) -> Origin<'a>,
    rules: &super::rules::Rules,
    warnings: &mut Vec<String>,
) -> Result<(Option<RecoveryConfig>, Option<AuditConfig>), ConfigError> {
    let command = match (&merged.recovery_exec, &merged.recovery_exec_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid(
                "--recovery-exec and --recovery-exec-file are mutually exclusive: give the command inline or in a file, not both"
                    .into(),
            ))
        }
        (Some(cmd), None) => Some((cmd.clone(), CommandSource::Inline)),
        (None, Some(path)) => Some((
            read_exec_file(path)?,
            CommandSource::File(path.clone()),
        )),
        (None, None) => rules
            .rules
            .iter()
            .any(|r| r.recovery_exec.is_some() && r.recovery != Some(false))
            .then(|| (String::new(), CommandSource::Inline)),
    };

    let recovery = match command {
        Some((template, source)) => {
            let inherit_env = merged.recovery_inherit_env.unwrap_or(false);
            if inherit_env {
                warnings.push(format!(
                    "{} passes the observer's whole environment (secrets included) to every recovery child; prefer --recovery-env KEY=VALUE for what the command needs",
                    origin(from_flags.recovery_inherit_env.is_some()).name("recovery-inherit-env")
                ));
            }
            if let Some(w) = program_warning(&template, inherit_env) {
                warnings.push(w);
            }
            let capture = merged.recovery_capture_stdio.unwrap_or(false);
            if !capture && merged.recovery_capture_bytes.is_some() {
                warnings.push(format!(
                    "{} has no effect without --recovery-capture-stdio",
                    origin(from_flags.recovery_capture_bytes.is_some())
                        .name("recovery-capture-bytes")
                ));
            }
            Some(RecoveryConfig {
                template,
                source,
                debounce: merged
                    .recovery_debounce
                    .unwrap_or(Duration::from_millis(DEFAULT_RECOVERY_DEBOUNCE_MS)),
                timeout: merged.recovery_timeout,
                kill_grace: merged
                    .recovery_kill_grace
                    .unwrap_or(Duration::from_millis(DEFAULT_RECOVERY_KILL_GRACE_MS)),
                max_attempts: merged
                    .recovery_max_attempts
                    .unwrap_or(DEFAULT_RECOVERY_MAX_ATTEMPTS),
                window: merged
                    .recovery_window
                    .unwrap_or(Duration::from_millis(DEFAULT_RECOVERY_WINDOW_MS)),
                backoff: merged
                    .recovery_backoff
                    .unwrap_or(Duration::from_millis(DEFAULT_RECOVERY_BACKOFF_MS)),
                env: merged.recovery_env.clone().unwrap_or_default(),
                inherit_env,
                capture,
                capture_bytes: merged
                    .recovery_capture_bytes
                    .unwrap_or(DEFAULT_RECOVERY_CAPTURE_BYTES),
                table_capacity: merged
                    .recovery_table_capacity
                    .unwrap_or(DEFAULT_RECOVERY_TABLE_CAPACITY),
                max_children: merged
                    .recovery_max_children
                    .unwrap_or(DEFAULT_RECOVERY_MAX_CHILDREN),
                trusted_network_origin: None,
                rules: rules.rules.iter().map(RuleRecovery::of).collect(),
            })
        }
        None => {
            let recovery_only = [
                (
                    "recovery-debounce-ms",
                    merged.recovery_debounce.is_some(),
                    from_flags.recovery_debounce.is_some(),
                ),
                (
                    "recovery-timeout-ms",
                    merged.recovery_timeout.is_some(),
                    from_flags.recovery_timeout.is_some(),
                ),
                (
                    "recovery-kill-grace-ms",
                    merged.recovery_kill_grace.is_some(),
                    from_flags.recovery_kill_grace.is_some(),
                ),
                (
                    "recovery-max-attempts",
                    merged.recovery_max_attempts.is_some(),
                    from_flags.recovery_max_attempts.is_some(),
                ),
                (
                    "recovery-window-ms",
                    merged.recovery_window.is_some(),
                    from_flags.recovery_window.is_some(),
                ),
                (
                    "recovery-backoff-ms",
                    merged.recovery_backoff.is_some(),
                    from_flags.recovery_backoff.is_some(),
                ),
                (
                    "recovery-env",
                    merged.recovery_env.is_some(),
                    from_flags.recovery_env.is_some(),
                ),
                (
                    "recovery-inherit-env",
                    merged.recovery_inherit_env.is_some(),
                    from_flags.recovery_inherit_env.is_some(),
                ),
                (
                    "recovery-capture-stdio",
                    merged.recovery_capture_stdio.is_some(),
                    from_flags.recovery_capture_stdio.is_some(),
                ),
                (
                    "recovery-capture-bytes",
                    merged.recovery_capture_bytes.is_some(),
                    from_flags.recovery_capture_bytes.is_some(),
                ),
                (
                    "recovery-table-capacity",
                    merged.recovery_table_capacity.is_some(),
                    from_flags.recovery_table_capacity.is_some(),
                ),
                (
                    "recovery-max-children",
                    merged.recovery_max_children.is_some(),
                    from_flags.recovery_max_children.is_some(),
                ),
            ];
            for (key, given, as_flag) in recovery_only {
                if given {
                    warnings.push(format!(
                        "{} has no effect without a recovery command (--recovery-exec, --recovery-exec-file or a rule's recovery-exec)",
                        origin(as_flag).name(key)
                    ));
                }
            }
            None
        }
    };

    let audit = match &merged.recovery_audit_file {
        Some(path) => {
            let sync_every = merged.recovery_audit_sync_every.unwrap_or(1);
            if sync_every > 1 {
                warnings.push(format!(
                    "{} = {sync_every}: up to {} acknowledged audit records can be lost on a power cut; 1 (the default) makes every record durable before the next",
                    origin(from_flags.recovery_audit_sync_every.is_some())
                        .name("recovery-audit-sync-every"),
                    sync_every - 1
                ));
            }
            if recovery.is_none() {
                warnings.push(
                    "--recovery-audit-file without a recovery command records only observer boots"
                        .into(),
                );
            }
            Some(AuditConfig {
                path: path.clone(),
                max_bytes: merged.recovery_audit_max_bytes,
                sync_every,
                key_file: merged.recovery_audit_key_file.clone(),
                schema: merged.recovery_audit_schema.unwrap_or_default(),
            })
        }
        None => {
            let audit_only = [
                (
                    "recovery-audit-max-bytes",
                    merged.recovery_audit_max_bytes.is_some(),
                    from_flags.recovery_audit_max_bytes.is_some(),
                ),
                (
                    "recovery-audit-sync-every",
                    merged.recovery_audit_sync_every.is_some(),
                    from_flags.recovery_audit_sync_every.is_some(),
                ),
                (
                    "recovery-audit-key-file",
                    merged.recovery_audit_key_file.is_some(),
                    from_flags.recovery_audit_key_file.is_some(),
                ),
                (
                    "recovery-audit-schema",
                    merged.recovery_audit_schema.is_some(),
                    from_flags.recovery_audit_schema.is_some(),
                ),
            ];
            for (key, given, as_flag) in audit_only {
                if given {
                    warnings.push(format!(
                        "{} has no effect without an audit file (--recovery-audit-file)",
                        origin(as_flag).name(key)
                    ));
                }
            }
            None
        }
    };
    Ok((recovery, audit))
}

/// A recovery program that cannot be executed now would fail at every
/// stall; say so at startup (a warning, not an error: it may be installed
/// before the first stall).
pub(super) fn program_warning(template: &str, inherit_env: bool) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let program = template.split_ascii_whitespace().next()?;
    let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        let path = if inherit_env {
            std::env::var("PATH").unwrap_or_default()
        } else {
            crate::placeholders::CHILD_PATH.to_string()
        };
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    let runnable = candidates.iter().any(|c| {
        std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    (!runnable).then(|| {
        if program.contains('/') {
            format!("recovery program {program} does not exist or is not executable; every recovery will fail (spawn_failed) until it is")
        } else {
            format!("recovery program {program} is not found in the children's PATH (/usr/bin:/bin unless --recovery-inherit-env); give its absolute path")
        }
    })
}

/// Reads `--recovery-exec-file` under the secret-file rules: whoever can
/// write that file chooses what the observer executes.
fn read_exec_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = varta_audit::secret_file::read_secret_file(path).map_err(|e| {
        ConfigError::Invalid(format!("--recovery-exec-file {}: {e}", path.display()))
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        ConfigError::Invalid(format!(
            "--recovery-exec-file {}: not UTF-8 text; write the command as one line of text",
            path.display()
        ))
    })?;
    // Comment lines and blank lines are allowed so the file can say why.
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>();
    match line.as_slice() {
        [one] => parse_command(one).map_err(|reason| {
            ConfigError::Invalid(format!(
                "--recovery-exec-file {}: {reason}",
                path.display()
            ))
        }),
        [] => Err(ConfigError::Invalid(format!(
            "--recovery-exec-file {}: holds no command; write one line such as /usr/bin/systemctl restart app",
            path.display()
        ))),
        _ => Err(ConfigError::Invalid(format!(
            "--recovery-exec-file {}: holds {} command lines; it must hold exactly one (lines starting with # are comments)",
            path.display(),
            line.len()
        ))),
    }
}

/// Appends reload-diff lines for the recovery and audit sections.
pub(super) fn diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    let describe_r = |r: &Option<RecoveryConfig>| {
        match r {
        None => "none".to_string(),
        Some(r) => format!(
            "exec={:?} rules-with-recovery-keys={} debounce={}ms timeout={} kill-grace={}ms max-attempts={} window={}ms backoff={}ms env={} inherit-env={} capture={}/{}B table={} children={}",
            r.template,
            r.rules.iter().filter(|x| **x != RuleRecovery::default()).count(),
            r.debounce.as_millis(),
            r.timeout.map_or("none".into(), |t| format!("{}ms", t.as_millis())),
            r.kill_grace.as_millis(),
            r.max_attempts,
            r.window.as_millis(),
            r.backoff.as_millis(),
            r.env.len(),
            r.inherit_env,
            r.capture,
            r.capture_bytes,
            r.table_capacity,
            r.max_children
        ),
    }
    };
    let describe_a = |a: &Option<AuditConfig>| match a {
        None => "none".to_string(),
        Some(a) => format!(
            "{} max-bytes={} sync-every={} key={} schema={}",
            a.path.display(),
            a.max_bytes.map_or("none".into(), |n| n.to_string()),
            a.sync_every,
            a.key_file
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
            a.schema.as_str()
        ),
    };
    if old.recovery != new.recovery {
        out.push(format!(
            "recovery: {} -> {}",
            describe_r(&old.recovery),
            describe_r(&new.recovery)
        ));
    }
    if old.audit != new.audit {
        out.push(format!(
            "recovery-audit: {} -> {}",
            describe_a(&old.audit),
            describe_a(&new.audit)
        ));
    }
    if old.shutdown_grace != new.shutdown_grace {
        out.push(format!(
            "shutdown-grace-ms: {} -> {}",
            old.shutdown_grace.as_millis(),
            new.shutdown_grace.as_millis()
        ));
    }
}
