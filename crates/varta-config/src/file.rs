//! The optional TOML config file (`--config`). Keys are the long flag names
//! without dashes; snake_case spellings are accepted too. The one key that
//! is not a flag is `agent`: the `[[agent]]` per-agent rules (rules.rs).

use std::path::Path;

use clap::CommandFactory;
use serde::Deserialize;

use super::cli::{self, CompatFlag};
use super::error::ConfigError;
use super::rules::{self, Rules};
use super::settings::RawSettings;

/// What the file asked for, not yet validated.
#[derive(Debug, Default)]
pub(crate) struct FileSettings {
    /// Implemented settings.
    pub raw: RawSettings,
    /// Compatibility keys present (any value is accepted for them).
    pub compat: Vec<&'static CompatFlag>,
    /// The `[[agent]]` rules, validated (empty when there are none).
    pub rules: Rules,
}

/// Reads and parses the file at `path`.
pub(crate) fn read(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses `text` as the contents of the file at `path`.
pub(crate) fn parse(path: &Path, text: &str) -> Result<FileSettings, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let doc: toml::Table =
        toml::from_str(text).map_err(|e| err(e.to_string().trim().to_string()))?;

    let known = implemented_keys();
    let mut settings = toml::Table::new();
    let mut compat = Vec::new();
    let mut agent_rules = None;
    for (key, value) in doc {
        let canonical = key.replace('_', "-");
        if canonical == "agent" {
            agent_rules = Some(value);
        } else if let Some(flag) = cli::compat(&canonical) {
            if compat.iter().any(|f: &&CompatFlag| f.name == flag.name) {
                return Err(err(duplicate(&key, &canonical)));
            }
            compat.push(flag);
        } else if known.contains(&canonical) {
            if settings.contains_key(&canonical) {
                return Err(err(duplicate(&key, &canonical)));
            }
            settings.insert(canonical, value);
        } else if canonical == "config" {
            return Err(err(format!(
                "unknown key '{key}': a config file cannot name another config file"
            )));
        } else if canonical == "agents" {
            return Err(err(format!(
                "unknown key '{key}': per-agent rules are written as [[agent]] tables"
            )));
        } else {
            return Err(err(format!(
                "unknown key '{key}' (keys are the long flag names of --help without the leading dashes, and [[agent]] rules)"
            )));
        }
    }
    let raw = deserialize(&settings).map_err(err)?;
    let rules = match agent_rules {
        Some(value) => rules::parse(path, value)?,
        None => Rules::default(),
    };
    Ok(FileSettings { raw, compat, rules })
}

fn duplicate(key: &str, canonical: &str) -> String {
    format!("key '{key}' is given twice (as '{canonical}' and its snake_case spelling)")
}

/// Long names of the implemented flags; `--config` itself is not a file key.
fn implemented_keys() -> Vec<String> {
    cli::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config")
        .map(str::to_string)
        .collect()
}

/// Deserializes the known keys. serde reports a type error without saying
/// reliably which key it was, so on failure each key is retried alone to
/// name the culprit.
fn deserialize(settings: &toml::Table) -> Result<RawSettings, String> {
    RawSettings::deserialize(toml::Value::Table(settings.clone())).map_err(|whole| {
        for (key, value) in settings {
            let mut one = toml::Table::new();
            one.insert(key.clone(), value.clone());
            if let Err(e) = RawSettings::deserialize(toml::Value::Table(one)) {
                return format!("{key} = {value}: {}", e.message().trim());
            }
        }
        whole.to_string().trim().to_string()
    })
}
