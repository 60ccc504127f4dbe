//! Configuration: the typed [`Config`], flags, TOML file and validation
//! live in the `varta-config` crate (shared with the `baked-config` build
//! script); this module re-exports it and adds what needs the daemon's own
//! types.

pub use varta_config::*;

#[cfg(feature = "http")]
/// Reads `--prom-token-file` under the secret-file rules, for the HTTP
/// server (validation has already read it once at load).
pub fn read_token(path: &std::path::Path) -> Result<crate::http::Token, ConfigError> {
    read_token_file(path).map(crate::http::Token::from_bytes)
}
