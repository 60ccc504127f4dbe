//! The Prometheus endpoint: `--prom-addr`, `--prom-token-file`,
//! `--prom-rate-limit-per-sec`, `--prom-rate-limit-burst` (the original's
//! flags) and our `--per-agent-metrics-limit`. Restart-only: the listener
//! and its token are set up once at start, and a reload that changes them
//! says so.

use std::net::SocketAddr;
use std::path::PathBuf;

#[cfg(feature = "load")]
use clap::Args;

#[cfg(feature = "load")]
use super::error::ConfigError;
#[cfg(feature = "load")]
use super::settings::{Origin, Partial};
#[cfg(feature = "load")]
use super::types::Config;

#[cfg(feature = "load")]
/// `--help` heading of this section.
pub(crate) const H_METRICS: &str = "Prometheus endpoint";
/// Default `--per-agent-metrics-limit`.
pub const DEFAULT_PER_AGENT_METRICS_LIMIT: u32 = 10_000;
#[cfg(feature = "load")]
/// Largest `--per-agent-metrics-limit`.
pub(crate) const MAX_PER_AGENT_METRICS_LIMIT: u64 = 1_000_000;

#[cfg(feature = "load")]
/// The section's flags (flattened into the command line).
#[derive(Args, Debug, Default)]
pub(crate) struct MetricsFlags {
    /// Serve GET /metrics (Prometheus text 0.0.4, or OpenMetrics when the
    /// scraper asks), /-/healthy and /-/ready on this address, IPv4 or IPv6
    /// (e.g. 127.0.0.1:9464 or [::1]:9464; port 0 picks a free port, printed
    /// on stdout). Needs --prom-token-file. Default: none.
    #[arg(long, value_name = "IP:PORT", help_heading = H_METRICS)]
    pub prom_addr: Option<SocketAddr>,

    /// Bearer token for /metrics: 64 hex characters, in a file owned by the
    /// observer's user with mode 0600 or stricter (e.g. `openssl rand -hex
    /// 32 > FILE`). Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_METRICS)]
    pub prom_token_file: Option<PathBuf>,

    /// /metrics requests per second per source IP. Default 5. Range 1 to
    /// 10000.
    #[arg(long, value_name = "N", help_heading = H_METRICS)]
    pub prom_rate_limit_per_sec: Option<u64>,

    /// Token-bucket size per source IP for /metrics. Default 10. Range 0 to
    /// 10000; 0 disables rate limiting.
    #[arg(long, value_name = "N", help_heading = H_METRICS)]
    pub prom_rate_limit_burst: Option<u64>,

    /// Most agents with per-pid series in one scrape; the rest are counted
    /// in varta_per_agent_metrics_overflow_total. Default 10000. Range 0 to
    /// 1000000.
    #[arg(long, value_name = "N", help_heading = H_METRICS)]
    pub per_agent_metrics_limit: Option<u64>,
}

/// The Prometheus endpoint settings of a [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `--prom-addr`.
    pub addr: SocketAddr,
    /// `--prom-token-file`.
    pub token_file: PathBuf,
    /// `--prom-rate-limit-per-sec`.
    pub rate_per_sec: u32,
    /// `--prom-rate-limit-burst` (0 disables).
    pub burst: u32,
    /// `--per-agent-metrics-limit`.
    pub per_agent_limit: u32,
}

#[cfg(feature = "load")]
/// The section from merged settings (validated already). `origin` names
/// where a setting came from in errors.
pub(super) fn build<'a>(
    merged: &Partial,
    from_flags: &Partial,
    origin: &dyn Fn(bool) -> Origin<'a>,
    warnings: &mut Vec<String>,
) -> Result<Option<MetricsConfig>, ConfigError> {
    let Some(addr) = merged.prom_addr else {
        for (key, given, as_flag) in [
            (
                "prom-token-file",
                merged.prom_token_file.is_some(),
                from_flags.prom_token_file.is_some(),
            ),
            (
                "prom-rate-limit-per-sec",
                merged.prom_rate_limit_per_sec.is_some(),
                from_flags.prom_rate_limit_per_sec.is_some(),
            ),
            (
                "prom-rate-limit-burst",
                merged.prom_rate_limit_burst.is_some(),
                from_flags.prom_rate_limit_burst.is_some(),
            ),
            (
                "per-agent-metrics-limit",
                merged.per_agent_metrics_limit.is_some(),
                from_flags.per_agent_metrics_limit.is_some(),
            ),
        ] {
            if given {
                warnings.push(format!(
                    "{} has no effect without --prom-addr",
                    origin(as_flag).name(key)
                ));
            }
        }
        return Ok(None);
    };
    let Some(token_file) = merged.prom_token_file.clone() else {
        return Err(ConfigError::Invalid(format!(
            "{} requires --prom-token-file: /metrics has no anonymous access; create a token with `openssl rand -hex 32 > /etc/varta/prom.token && chmod 600 /etc/varta/prom.token`",
            origin(from_flags.prom_addr.is_some()).name("prom-addr")
        )));
    };
    // Checked now so a bad token file is a configuration error (exit 2)
    // naming the fix; the daemon reads it again when it starts serving.
    read_token_file(&token_file)?;
    if !addr.ip().is_loopback() {
        warnings.push(format!(
            "{} = {addr} listens beyond this host: /metrics is token-protected and rate-limited, but put a firewall or TLS proxy in front of it",
            origin(from_flags.prom_addr.is_some()).name("prom-addr")
        ));
    }
    Ok(Some(MetricsConfig {
        addr,
        token_file,
        rate_per_sec: merged.prom_rate_limit_per_sec.unwrap_or(5),
        burst: merged.prom_rate_limit_burst.unwrap_or(10),
        per_agent_limit: merged
            .per_agent_metrics_limit
            .unwrap_or(DEFAULT_PER_AGENT_METRICS_LIMIT),
    }))
}

/// Parses a `--prom-token-file`'s content: 64 hex characters, either
/// case, with an optional trailing newline. The HTTP server's token check
/// and validation both use it, so a file that loads is a file that serves.
pub fn parse_token(text: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
    use varta_audit::secret_file::{decode_hex_32, strip_line_end};
    let t = strip_line_end(text);
    decode_hex_32(t).map(zeroize::Zeroizing::new).ok_or_else(|| {
        format!(
            "expected exactly 64 hex characters (32 bytes), found {} bytes; generate one with `openssl rand -hex 32`",
            t.len()
        )
    })
}

#[cfg(feature = "load")]
/// Reads `--prom-token-file` under the secret-file rules.
pub fn read_token_file(
    path: &std::path::Path,
) -> Result<zeroize::Zeroizing<[u8; 32]>, ConfigError> {
    let bytes = varta_audit::secret_file::read_secret_file(path)
        .map_err(|e| ConfigError::Invalid(format!("--prom-token-file {}: {e}", path.display())))?;
    parse_token(&bytes).map_err(|reason| {
        ConfigError::Invalid(format!("--prom-token-file {}: {reason}", path.display()))
    })
}

#[cfg(feature = "load")]
/// Appends reload-diff lines for this section.
pub(super) fn diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    let describe = |m: &Option<MetricsConfig>| match m {
        None => "none".to_string(),
        Some(m) => format!(
            "{} token={} rate={}/s burst={} per-agent-limit={}",
            m.addr,
            m.token_file.display(),
            m.rate_per_sec,
            m.burst,
            m.per_agent_limit
        ),
    };
    if old.metrics != new.metrics {
        out.push(format!(
            "prometheus endpoint: {} -> {}",
            describe(&old.metrics),
            describe(&new.metrics)
        ));
    }
}
