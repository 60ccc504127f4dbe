//! The config file the Debian package installs as /etc/varta/varta-watch.toml
//! (packaging/etc/varta-watch.toml): the observer starts on it as shipped,
//! it names every setting of `--help`, and every default it shows is a value
//! the observer accepts. varta-watch has no check-only mode, so "accepted"
//! means: started on it (socket overridden into a temporary directory) and
//! logged that it is listening.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::Observer;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../packaging/etc/varta-watch.toml")
}

/// `# key = value` or `key = value` lines outside `[[agent]]`: (key, line
/// uncommented, marked `# example`).
fn settings(text: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.contains("[[agent]]") {
            break;
        }
        let body = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = body.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        out.push((
            key.to_string(),
            body.to_string(),
            body.contains("# example"),
        ));
    }
    out
}

/// Long flags of `--help` that are file keys: all but --config, --help,
/// --version and the compatibility section (no effect; left out of the file).
fn help_keys() -> BTreeSet<String> {
    let out = common::run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut keys = BTreeSet::new();
    for line in help.lines() {
        if line.starts_with("Compatibility") {
            break;
        }
        let t = line.trim_start();
        let t = t.strip_prefix("-h, ").unwrap_or(t);
        let t = t.strip_prefix("-V, ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !["config", "help", "version"].contains(&name.as_str()) {
                keys.insert(name);
            }
        }
    }
    assert!(
        keys.len() > 50,
        "parsed too few flags from --help: {keys:?}"
    );
    keys
}

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

#[test]
fn shipped_config_names_every_setting_once() {
    let text = std::fs::read_to_string(shipped()).unwrap();
    let in_file: Vec<String> = settings(&text).into_iter().map(|(k, _, _)| k).collect();
    let unique: BTreeSet<String> = in_file.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        in_file.len(),
        "a key appears twice: {in_file:?}"
    );
    let help = help_keys();
    let missing: Vec<_> = help.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&help).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "packaging/etc/varta-watch.toml: missing {missing:?}, not flags {unknown:?}"
    );
    // Only the socket is set; everything else shows a default or an example.
    let active: Vec<_> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(active, ["socket = \"/run/varta/varta.sock\""]);
}

#[test]
fn observer_starts_on_shipped_config() {
    let path = shipped();
    let obs = Observer::start(&["--config", path.to_str().unwrap()]);
    let stderr = obs.stderr();
    assert!(
        !stderr.contains("WARN"),
        "warnings on the shipped file:\n{stderr}"
    );
}

#[test]
fn observer_accepts_every_default_shown() {
    // Uncomment every default (not the examples) and start on that.
    let text = std::fs::read_to_string(shipped()).unwrap();
    let defaults: Vec<String> = settings(&text)
        .into_iter()
        .filter(|(key, _, example)| !example && key != "socket")
        .map(|(_, line, _)| line)
        .collect();
    assert!(defaults.len() > 35, "{defaults:?}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("defaults.toml");
    std::fs::write(&config, defaults.join("\n") + "\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    let obs = Observer::start_in(dir, &["--config", &config]);
    assert!(obs.stderr().contains("listening on"), "{}", obs.stderr());
}
