//! Alertmanager push: `--alertmanager-url` (repeatable), `--alert-instance`,
//! `--alertmanager-resend-ms`, `--alertmanager-timeout-ms` and one of
//! `--alertmanager-bearer-token-file` / `--alertmanager-basic-auth-file`.
//! Restart-only: the alert thread and its targets are set up once at start,
//! and a reload that changes them says so (docs/alerting.md).

#[cfg(feature = "load")]
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "load")]
use clap::{ArgAction, Args};
#[cfg(feature = "load")]
use serde::{Deserialize, Deserializer};

#[cfg(feature = "load")]
use super::error::ConfigError;
#[cfg(feature = "load")]
use super::settings::{self, Origin};
#[cfg(feature = "load")]
use super::types::Config;

#[cfg(feature = "load")]
/// `--help` heading of this section.
pub(crate) const H_ALERT: &str = "Alertmanager push";
/// Default `--alertmanager-resend-ms` (Prometheus' own resend delay).
pub const DEFAULT_ALERT_RESEND_MS: u64 = 60_000;
/// Default `--alertmanager-timeout-ms`.
pub const DEFAULT_ALERT_TIMEOUT_MS: u64 = 5000;
#[cfg(feature = "load")]
/// Most `--alertmanager-url` targets: each has its own sender thread.
pub(crate) const MAX_ALERT_TARGETS: usize = 16;

#[cfg(feature = "load")]
/// The section's flags (flattened into the command line).
#[derive(Args, Debug, Default)]
pub(crate) struct AlertFlags {
    /// Push alerts (VartaAgentStalled, VartaAgentGivenUp, VartaAgentMissing)
    /// to this Alertmanager, http:// or https:// (rustls, public CA roots),
    /// optionally with a path prefix; POSTs go to URL/api/v2/alerts.
    /// Repeatable: every target gets every alert, so an Alertmanager
    /// cluster deduplicates. Default: none. Restart to change.
    #[arg(long, value_name = "URL", action = ArgAction::Append, help_heading = H_ALERT)]
    pub alertmanager_url: Vec<String>,

    /// `instance` label of every alert. Default: this host's name
    /// (/proc/sys/kernel/hostname).
    #[arg(long, value_name = "NAME", help_heading = H_ALERT)]
    pub alert_instance: Option<String>,

    /// Re-send every firing alert this often, with endsAt four intervals
    /// ahead, so Alertmanager never resolves it by timeout. Default 60000.
    /// Range 100 to 3600000.
    #[arg(long, value_name = "MS", help_heading = H_ALERT)]
    pub alertmanager_resend_ms: Option<u64>,

    /// Timeout of one POST (connect, send and answer). Default 5000. Range
    /// 100 to 60000.
    #[arg(long, value_name = "MS", help_heading = H_ALERT)]
    pub alertmanager_timeout_ms: Option<u64>,

    /// Send `Authorization: Bearer TOKEN`, the token read from this file
    /// (one line; owned by the observer's user, mode 0600 or stricter, not
    /// a symlink). Default: none. Conflicts with
    /// --alertmanager-basic-auth-file.
    #[arg(long, value_name = "PATH", help_heading = H_ALERT)]
    pub alertmanager_bearer_token_file: Option<PathBuf>,

    /// Send HTTP basic auth, `user:password` read from this file (one line;
    /// same file rules as the bearer token). Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_ALERT)]
    pub alertmanager_basic_auth_file: Option<PathBuf>,
}

#[cfg(feature = "load")]
/// The flags' values as the config file also gives them (keys are the flag
/// names), before validation.
#[derive(Debug, Default)]
pub(crate) struct AlertRaw {
    pub urls: Option<Vec<String>>,
    pub instance: Option<String>,
    pub resend_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth_file: Option<PathBuf>,
}

#[cfg(feature = "load")]
impl AlertRaw {
    /// Moves this section's keys out of the file's (or flags') settings.
    pub(crate) fn take(raw: &mut settings::RawSettings) -> AlertRaw {
        AlertRaw {
            urls: raw.alertmanager_url.take(),
            instance: raw.alert_instance.take(),
            resend_ms: raw.alertmanager_resend_ms.take(),
            timeout_ms: raw.alertmanager_timeout_ms.take(),
            bearer_token_file: raw.alertmanager_bearer_token_file.take(),
            basic_auth_file: raw.alertmanager_basic_auth_file.take(),
        }
    }
}

#[cfg(feature = "load")]
impl AlertFlags {
    /// The flags as raw settings ("not given" stays `None`).
    pub(crate) fn into_raw(self) -> AlertRaw {
        AlertRaw {
            urls: (!self.alertmanager_url.is_empty()).then_some(self.alertmanager_url),
            instance: self.alert_instance,
            resend_ms: self.alertmanager_resend_ms,
            timeout_ms: self.alertmanager_timeout_ms,
            bearer_token_file: self.alertmanager_bearer_token_file,
            basic_auth_file: self.alertmanager_basic_auth_file,
        }
    }
}

#[cfg(feature = "load")]
/// `alertmanager-url` in the config file: one string or a list of them.
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

#[cfg(feature = "load")]
/// Validated settings from one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AlertPartial {
    pub urls: Option<Vec<String>>,
    pub instance: Option<String>,
    pub resend: Option<Duration>,
    pub timeout: Option<Duration>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth_file: Option<PathBuf>,
}

#[cfg(feature = "load")]
impl AlertPartial {
    /// Field by field, `self` where given, else `lower`.
    pub(crate) fn or(self, lower: AlertPartial) -> AlertPartial {
        AlertPartial {
            urls: self.urls.or(lower.urls),
            instance: self.instance.or(lower.instance),
            resend: self.resend.or(lower.resend),
            timeout: self.timeout.or(lower.timeout),
            bearer_token_file: self.bearer_token_file.or(lower.bearer_token_file),
            basic_auth_file: self.basic_auth_file.or(lower.basic_auth_file),
        }
    }
}

#[cfg(feature = "load")]
/// Checks every given value of one source.
pub(crate) fn validate(o: Origin<'_>, raw: AlertRaw) -> Result<AlertPartial, ConfigError> {
    let urls = match raw.urls {
        Some(list) if list.is_empty() => {
            return Err(invalid(
                o,
                "alertmanager-url",
                "[]",
                "list at least one URL, or leave the key out",
            ))
        }
        Some(list) => Some(
            list.iter()
                .map(|u| parse_url(u).map_err(|reason| invalid(o, "alertmanager-url", u, &reason)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let file = |key: &str, p: Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        match p {
            Some(p) if p.as_os_str().is_empty() => Err(invalid(o, key, "", "must not be empty")),
            other => Ok(other),
        }
    };
    Ok(AlertPartial {
        urls,
        instance: settings::text(o, "alert-instance", raw.instance, parse_instance)?,
        resend: settings::ms(o, "alertmanager-resend-ms", raw.resend_ms, (100, 3_600_000))?,
        timeout: settings::ms(o, "alertmanager-timeout-ms", raw.timeout_ms, (100, 60_000))?,
        bearer_token_file: file("alertmanager-bearer-token-file", raw.bearer_token_file)?,
        basic_auth_file: file("alertmanager-basic-auth-file", raw.basic_auth_file)?,
    })
}

#[cfg(feature = "load")]
/// An error about `key` = `value`, worded like every other setting's.
fn invalid(o: Origin<'_>, key: &str, value: &str, reason: &str) -> ConfigError {
    o.invalid(key, settings::Shown::Text(value), reason)
}

#[cfg(feature = "load")]
/// An Alertmanager base URL: http or https, a host, no credentials (they
/// would sit in the process list; use the auth files), no query or
/// fragment. Returned without a trailing `/`.
pub(crate) fn parse_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| {
        format!("not a URL ({e}); expected e.g. http://127.0.0.1:9093 or https://am.example.org")
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "scheme {other}:// is not supported; use http:// or https://"
            ))
        }
        None => {
            return Err("has no scheme; write http://HOST:PORT or https://HOST".into());
        }
    }
    let Some(authority) = uri.authority() else {
        return Err("has no host; write http://HOST:PORT or https://HOST".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not contain credentials (they would be visible in the process list); put them in --alertmanager-basic-auth-file".into());
    }
    if uri.query().is_some() || s.contains('#') {
        return Err("must not have a query or fragment; give the Alertmanager's base URL (POSTs go to URL/api/v2/alerts)".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(feature = "load")]
fn parse_instance(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_string())
}

/// How the observer authenticates to the Alertmanagers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertAuth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer` with the token in this file.
    BearerFile(PathBuf),
    /// HTTP basic auth with `user:password` in this file.
    BasicFile(PathBuf),
}

/// The Alertmanager push settings of a [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    /// Base URLs, without a trailing `/`, in the order given.
    pub targets: Vec<String>,
    /// `instance` label.
    pub instance: String,
    /// Resend interval of firing alerts.
    pub resend: Duration,
    /// Timeout of one POST.
    pub timeout: Duration,
    /// Credentials (paths only: the secret is read when the thread starts).
    pub auth: AlertAuth,
}

#[cfg(feature = "load")]
/// This host's name, for the default `instance` label.
fn hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(feature = "load")]
/// The section from merged settings.
pub(super) fn build<'a>(
    merged: &AlertPartial,
    from_flags: &AlertPartial,
    origin: &dyn Fn(bool) -> Origin<'a>,
    warnings: &mut Vec<String>,
) -> Result<Option<AlertmanagerConfig>, ConfigError> {
    let name = |key: &str, as_flag: bool| origin(as_flag).name(key);
    let Some(urls) = merged.urls.clone() else {
        for (key, given, as_flag) in [
            (
                "alert-instance",
                merged.instance.is_some(),
                from_flags.instance.is_some(),
            ),
            (
                "alertmanager-resend-ms",
                merged.resend.is_some(),
                from_flags.resend.is_some(),
            ),
            (
                "alertmanager-timeout-ms",
                merged.timeout.is_some(),
                from_flags.timeout.is_some(),
            ),
            (
                "alertmanager-bearer-token-file",
                merged.bearer_token_file.is_some(),
                from_flags.bearer_token_file.is_some(),
            ),
            (
                "alertmanager-basic-auth-file",
                merged.basic_auth_file.is_some(),
                from_flags.basic_auth_file.is_some(),
            ),
        ] {
            if given {
                warnings.push(format!(
                    "{} has no effect without --alertmanager-url",
                    name(key, as_flag)
                ));
            }
        }
        return Ok(None);
    };
    let mut targets: Vec<String> = Vec::new();
    for u in urls {
        if !targets.contains(&u) {
            targets.push(u);
        }
    }
    if targets.len() > MAX_ALERT_TARGETS {
        return Err(ConfigError::Invalid(format!(
            "{} is given {} times; at most {MAX_ALERT_TARGETS} Alertmanager targets are supported",
            name("alertmanager-url", from_flags.urls.is_some()),
            targets.len()
        )));
    }
    let auth = match (&merged.bearer_token_file, &merged.basic_auth_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid(format!(
                "{} conflicts with {}: choose one way to authenticate to Alertmanager",
                name(
                    "alertmanager-bearer-token-file",
                    from_flags.bearer_token_file.is_some()
                ),
                name(
                    "alertmanager-basic-auth-file",
                    from_flags.basic_auth_file.is_some()
                ),
            )))
        }
        (Some(p), None) => AlertAuth::BearerFile(p.clone()),
        (None, Some(p)) => AlertAuth::BasicFile(p.clone()),
        (None, None) => AlertAuth::None,
    };
    // Read now so a bad file is a configuration error (exit 2) naming the
    // fix; the alert thread reads it again when it starts.
    read_auth(&auth)?;
    let instance = match &merged.instance {
        Some(i) => i.clone(),
        None => hostname().unwrap_or_else(|| {
            warnings.push(
                "cannot read this host's name from /proc/sys/kernel/hostname; alerts carry instance=\"localhost\" (set --alert-instance)".into(),
            );
            "localhost".into()
        }),
    };
    if targets.iter().any(|t| t.starts_with("http://")) && !matches!(auth, AlertAuth::None) {
        warnings.push(format!(
            "{}: credentials are sent over plain http:// to at least one Alertmanager; use https:// beyond this host",
            name("alertmanager-url", from_flags.urls.is_some())
        ));
    }
    Ok(Some(AlertmanagerConfig {
        targets,
        instance,
        resend: merged
            .resend
            .unwrap_or(Duration::from_millis(DEFAULT_ALERT_RESEND_MS)),
        timeout: merged
            .timeout
            .unwrap_or(Duration::from_millis(DEFAULT_ALERT_TIMEOUT_MS)),
        auth,
    }))
}

#[cfg(feature = "load")]
/// The `Authorization` header value for `auth` (None: no header), read
/// under the secret-file rules. The value is wiped from memory on drop.
pub fn read_auth(auth: &AlertAuth) -> Result<Option<zeroize::Zeroizing<String>>, ConfigError> {
    let read = |flag: &str, path: &Path| -> Result<zeroize::Zeroizing<String>, ConfigError> {
        let bad =
            |reason: String| ConfigError::Invalid(format!("--{flag} {}: {reason}", path.display()));
        let bytes = varta_audit::secret_file::read_secret_file(path)
            .map_err(|e| ConfigError::Invalid(format!("--{flag}: {e}")))?;
        let line = varta_audit::secret_file::strip_line_end(&bytes);
        let text = std::str::from_utf8(line).map_err(|_| bad("is not UTF-8 text".into()))?;
        if text.is_empty() {
            return Err(bad("is empty; write the secret on one line".into()));
        }
        if text.chars().any(|c| c.is_control()) {
            return Err(bad(
                "must hold one line without control characters (a second line or a tab is not allowed)".into(),
            ));
        }
        Ok(zeroize::Zeroizing::new(text.to_string()))
    };
    match auth {
        AlertAuth::None => Ok(None),
        AlertAuth::BearerFile(p) => {
            let token = read("alertmanager-bearer-token-file", p)?;
            if token.contains(' ') {
                return Err(ConfigError::Invalid(format!(
                    "--alertmanager-bearer-token-file {}: the token must not contain spaces",
                    p.display()
                )));
            }
            Ok(Some(zeroize::Zeroizing::new(format!("Bearer {}", *token))))
        }
        AlertAuth::BasicFile(p) => {
            let pair = read("alertmanager-basic-auth-file", p)?;
            if !pair.contains(':') {
                return Err(ConfigError::Invalid(format!(
                    "--alertmanager-basic-auth-file {}: expected user:password on one line",
                    p.display()
                )));
            }
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
            Ok(Some(zeroize::Zeroizing::new(format!("Basic {encoded}"))))
        }
    }
}

#[cfg(feature = "load")]
/// Appends reload-diff lines for this section.
pub(super) fn diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    let describe = |a: &Option<AlertmanagerConfig>| match a {
        None => "none".to_string(),
        Some(a) => format!(
            "{} instance={} resend={}ms timeout={}ms auth={}",
            a.targets.join(","),
            a.instance,
            a.resend.as_millis(),
            a.timeout.as_millis(),
            match &a.auth {
                AlertAuth::None => "none".to_string(),
                AlertAuth::BearerFile(p) => format!("bearer:{}", p.display()),
                AlertAuth::BasicFile(p) => format!("basic:{}", p.display()),
            }
        ),
    };
    if old.alertmanager != new.alertmanager {
        out.push(format!(
            "alertmanager: {} -> {}",
            describe(&old.alertmanager),
            describe(&new.alertmanager)
        ));
    }
}

#[cfg(feature = "load")]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:9093/").unwrap(),
            "http://127.0.0.1:9093"
        );
        assert_eq!(
            parse_url("https://am.example.org/prefix").unwrap(),
            "https://am.example.org/prefix"
        );
        assert!(parse_url("ftp://x").unwrap_err().contains("http://"));
        assert!(parse_url("127.0.0.1:9093").is_err());
        assert!(parse_url("http://u:p@h:1")
            .unwrap_err()
            .contains("credentials"));
        assert!(parse_url("http://h:1/?a=b").unwrap_err().contains("query"));
    }

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("varta-watch")
            .chain(args.iter().copied())
            .map(std::ffi::OsString::from);
        match super::super::load(argv)? {
            super::super::Loaded::Run(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    fn secret(dir: &Path, name: &str, text: &str, mode: u32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    }

    #[test]
    fn flags_file_defaults_and_auth() {
        let c = load(&[
            "--alertmanager-url",
            "http://127.0.0.1:9093/",
            "--alertmanager-url",
            "https://am2.example.org",
        ])
        .unwrap();
        let a = c.alertmanager.unwrap();
        assert_eq!(
            a.targets,
            ["http://127.0.0.1:9093", "https://am2.example.org"]
        );
        assert_eq!(a.resend, Duration::from_millis(DEFAULT_ALERT_RESEND_MS));
        assert_eq!(a.timeout, Duration::from_millis(DEFAULT_ALERT_TIMEOUT_MS));
        assert_eq!(a.auth, AlertAuth::None);
        assert_eq!(Some(a.instance), hostname());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("varta.toml");
        std::fs::write(
            &file,
            "alertmanager-url = \"http://h:1\"\nalert_instance = \"web-1\"\nalertmanager-resend-ms = 1000\n",
        )
        .unwrap();
        let c = load(&[
            "--config",
            file.to_str().unwrap(),
            "--alertmanager-timeout-ms",
            "250",
        ])
        .unwrap();
        let a = c.alertmanager.unwrap();
        assert_eq!(a.targets, ["http://h:1"]);
        assert_eq!(a.instance, "web-1");
        assert_eq!(a.resend, Duration::from_secs(1));
        assert_eq!(a.timeout, Duration::from_millis(250));

        let token = secret(dir.path(), "tok", "s3cret\n", 0o600);
        let c = load(&[
            "--alertmanager-url",
            "https://h",
            "--alertmanager-bearer-token-file",
            &token,
        ])
        .unwrap();
        let auth = c.alertmanager.unwrap().auth;
        assert_eq!(read_auth(&auth).unwrap().unwrap().as_str(), "Bearer s3cret");
        let basic = secret(dir.path(), "basic", "alice:pw\n", 0o600);
        let auth = AlertAuth::BasicFile(basic.clone().into());
        assert_eq!(
            read_auth(&auth).unwrap().unwrap().as_str(),
            "Basic YWxpY2U6cHc="
        );

        let e = load(&[
            "--alertmanager-url",
            "https://h",
            "--alertmanager-bearer-token-file",
            &token,
            "--alertmanager-basic-auth-file",
            &basic,
        ])
        .unwrap_err();
        assert!(e.to_string().contains("conflicts"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let open = secret(dir.path(), "open", "tok\n", 0o644);
        let e = load(&[
            "--alertmanager-url",
            "https://h",
            "--alertmanager-bearer-token-file",
            &open,
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--alertmanager-bearer-token-file") && e.contains("chmod 600"),
            "{e}"
        );
        let nocolon = secret(dir.path(), "nocolon", "alice\n", 0o600);
        let e = load(&[
            "--alertmanager-url",
            "https://h",
            "--alertmanager-basic-auth-file",
            &nocolon,
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("user:password"), "{e}");
    }

    #[test]
    fn settings_without_a_url_warn_and_bad_values_are_errors() {
        let c = load(&["--alert-instance", "x"]).unwrap();
        assert!(c.alertmanager.is_none());
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("--alert-instance has no effect without --alertmanager-url")),
            "{:?}",
            c.warnings
        );
        for (args, needle) in [
            (
                vec!["--alertmanager-url", "udp://h:1"],
                "--alertmanager-url",
            ),
            (
                vec![
                    "--alertmanager-url",
                    "http://h",
                    "--alertmanager-timeout-ms",
                    "0",
                ],
                "--alertmanager-timeout-ms",
            ),
            (
                vec!["--alertmanager-url", "http://h", "--alert-instance", ""],
                "--alert-instance",
            ),
        ] {
            let e = load(&args).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn errors_name_the_flag() {
        let e = validate(
            Origin::Flag,
            AlertRaw {
                urls: Some(vec!["gopher://x".into()]),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--alertmanager-url"), "{e}");
        assert!(e.contains("gopher://x"), "{e}");
        let e = validate(
            Origin::Flag,
            AlertRaw {
                resend_ms: Some(5),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--alertmanager-resend-ms"), "{e}");
    }
}
