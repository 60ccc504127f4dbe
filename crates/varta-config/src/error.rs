//! The one error type configuration loading returns.

use std::io;
use std::path::PathBuf;

/// Why a configuration could not be built. The `Display` text is the whole
/// message for the operator; the binary prints it after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line was rejected by the parser (unknown flag, missing
    /// value, not a number). Holds clap's rendered message, usage included.
    #[error("{0}")]
    Usage(String),
    /// A flag or config-file value is outside its allowed range or set, or
    /// two settings contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The config file is not valid TOML, or has an unknown or mistyped key.
    #[error("config file {}: {message}", path.display())]
    File {
        /// The file named by `--config`.
        path: PathBuf,
        /// What is wrong, naming the key where there is one.
        message: String,
    },
}

impl ConfigError {
    /// Process exit status for this error. Every variant is an operator
    /// mistake in flags or the file, which by convention (and like clap and
    /// the original) is a usage error: 2.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Usage(_)
            | ConfigError::Invalid(_)
            | ConfigError::Read { .. }
            | ConfigError::File { .. } => 2,
        }
    }
}
