//! The UDP listener: `--udp-port`, `--udp-bind-addr`, the key files that
//! make it secure, the two "I accept" gates and the recovery opt-ins (the
//! original's flags), plus our `--udp-sender-capacity` and
//! `--udp-rcvbuf-bytes`.
//!
//! Everything is compiled in and gated at runtime by the explicit
//! acknowledgement flags, so a UDP flag can never be silently ignored by a
//! build that lacks it.

use std::net::SocketAddr;
#[cfg(feature = "load")]
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

#[cfg(feature = "load")]
use clap::{ArgAction, Args};

#[cfg(feature = "load")]
use super::error::ConfigError;
#[cfg(feature = "load")]
use super::settings::{Origin, Partial};
#[cfg(feature = "load")]
use super::types::Config;

#[cfg(feature = "load")]
/// `--help` heading of this section.
pub(crate) const H_UDP: &str = "UDP listener (network agents)";
/// Default `--udp-sender-capacity`.
pub const DEFAULT_UDP_SENDER_CAPACITY: u32 = 65_536;
#[cfg(feature = "load")]
/// Largest `--udp-sender-capacity` (64 B per sender: 256 MiB).
pub(crate) const MAX_UDP_SENDER_CAPACITY: u64 = 4_194_304;
/// Default `--udp-rcvbuf-bytes`.
pub const DEFAULT_UDP_RCVBUF_BYTES: usize = 4 * 1024 * 1024;

#[cfg(feature = "load")]
/// The section's flags (flattened into the command line).
#[derive(Args, Debug, Default)]
pub(crate) struct UdpFlags {
    /// Also receive beats over UDP on this port (0 picks a free port; the
    /// bound address is printed on stdout as `udp: IP:PORT`). Secure
    /// (ChaCha20-Poly1305) with --key-file, --accepted-key-file or
    /// --master-key-file; plaintext only with --i-accept-plaintext-udp.
    /// Default: none (Unix socket only). Range 0 to 65535.
    #[arg(long, value_name = "PORT", help_heading = H_UDP)]
    pub udp_port: Option<u16>,

    /// Address of the UDP listener, IPv4 or IPv6. Default 127.0.0.1 when
    /// secure (a non-loopback address needs
    /// --i-accept-secure-udp-non-loopback), 0.0.0.0 when plaintext.
    #[arg(long, value_name = "IP", help_heading = H_UDP)]
    pub udp_bind_addr: Option<IpAddr>,

    /// Shared key for secure UDP: 64 hex characters (comments and blank
    /// lines allowed), in a file owned by the observer's user with mode
    /// 0600 or stricter (`varta keygen FILE`). Re-read on SIGHUP. Default:
    /// none.
    #[arg(long, value_name = "PATH", help_heading = H_UDP)]
    pub key_file: Option<PathBuf>,

    /// More shared keys accepted during a rotation, one 64-hex key per line
    /// (# comments allowed); repeatable. Every key is tried on every
    /// datagram. Re-read on SIGHUP. Default: none.
    #[arg(long, value_name = "PATH", action = ArgAction::Append, help_heading = H_UDP)]
    pub accepted_key_file: Vec<PathBuf>,

    /// Master key for 64-byte frames: each agent seals with a key derived
    /// from it and its pid (HKDF-SHA256). Same file rules as --key-file;
    /// re-read on SIGHUP. Default: none.
    #[arg(long, value_name = "PATH", help_heading = H_UDP)]
    pub master_key_file: Option<PathBuf>,

    /// UNSAFE: allow a UDP listener without keys. Anyone who can reach the
    /// port can forge any beat for any pid. Default: off.
    #[arg(long, help_heading = H_UDP)]
    pub i_accept_plaintext_udp: bool,

    /// Allow the secure listener on a non-loopback address (firewall it:
    /// key holders can beat for any pid). Default: off.
    #[arg(long, help_heading = H_UDP)]
    pub i_accept_secure_udp_non_loopback: bool,

    /// UNSAFE: let stalls of secure-UDP agents run the recovery command.
    /// A key holder can forge a beat, or its absence, for any pid; without
    /// this flag such agents are tracked but never recovered, and a
    /// recovery command with a secure listener is refused at startup.
    /// Default: off.
    #[arg(long, help_heading = H_UDP)]
    pub secure_udp_i_accept_recovery_on_unauthenticated_transport: bool,

    /// UNSAFE: let stalls of plaintext-UDP agents run the recovery command
    /// (anyone on the network can forge them). Without this flag a recovery
    /// command with a plaintext listener is refused at startup. Default:
    /// off.
    #[arg(long, help_heading = H_UDP)]
    pub plaintext_udp_i_accept_recovery_on_unauthenticated_transport: bool,

    /// Secure-UDP senders (pids) with replay state at once. A full table
    /// refuses new senders (counted in varta_sender_state_full_total); a
    /// live sender is never evicted, a stalled one only when room is
    /// needed, oldest first. 64 bytes each. Default 65536. Range 1 to
    /// 4194304. Restart to change.
    #[arg(long, value_name = "N", help_heading = H_UDP)]
    pub udp_sender_capacity: Option<u64>,

    /// SO_RCVBUF requested for the UDP socket, in bytes. Default 4194304.
    /// Range 0 to 1073741824; 0 keeps the kernel default. Restart to change.
    #[arg(long, value_name = "N", help_heading = H_UDP)]
    pub udp_rcvbuf_bytes: Option<u64>,
}

/// Which key files make the listener secure (paths only: keys themselves
/// are read by the listener and never live in the configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyFiles {
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `--accepted-key-file`, in order.
    pub accepted: Vec<PathBuf>,
    /// `--master-key-file`.
    pub master: Option<PathBuf>,
}

impl KeyFiles {
    /// Whether any key file is configured.
    pub fn any(&self) -> bool {
        self.key_file.is_some() || !self.accepted.is_empty() || self.master.is_some()
    }
}

/// Plaintext or secure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpSecurity {
    /// `--i-accept-plaintext-udp`: 32-byte frames, nothing verified.
    Plaintext,
    /// ChaCha20-Poly1305 with these key files.
    Secure(KeyFiles),
}

/// The UDP listener settings of a [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Bind address (port 0 = any free port).
    pub addr: SocketAddr,
    /// Plaintext or secure.
    pub security: UdpSecurity,
    /// The listener's recovery opt-in was given.
    pub recovery_opt_in: bool,
    /// Replay-table size.
    pub sender_capacity: u32,
    /// Requested SO_RCVBUF.
    pub rcvbuf_bytes: usize,
}

impl UdpConfig {
    /// `plaintext` or `secure`, for logs.
    pub fn mode(&self) -> &'static str {
        match self.security {
            UdpSecurity::Plaintext => "plaintext",
            UdpSecurity::Secure(_) => "secure",
        }
    }
}

#[cfg(feature = "load")]
const PLAINTEXT_RECOVERY: &str = "plaintext-udp-i-accept-recovery-on-unauthenticated-transport";
#[cfg(feature = "load")]
const SECURE_RECOVERY: &str = "secure-udp-i-accept-recovery-on-unauthenticated-transport";

#[cfg(feature = "load")]
/// The section from merged settings (validated already). `has_recovery`:
/// a recovery command is configured. Key files are read once here, so a
/// bad one is a configuration error (exit 2) naming the file.
pub(super) fn build<'a>(
    merged: &Partial,
    from_flags: &Partial,
    origin: &dyn Fn(bool) -> Origin<'a>,
    has_recovery: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<UdpConfig>, ConfigError> {
    let name = |key: &str, as_flag: bool| origin(as_flag).name(key);
    let keys = KeyFiles {
        key_file: merged.key_file.clone(),
        accepted: merged.accepted_key_file.clone().unwrap_or_default(),
        master: merged.master_key_file.clone(),
    };
    let flag = |v: Option<bool>| v.unwrap_or(false);
    let Some(port) = merged.udp_port else {
        let udp_only = [
            (
                "udp-bind-addr",
                merged.udp_bind_addr.is_some(),
                from_flags.udp_bind_addr.is_some(),
            ),
            (
                "key-file",
                merged.key_file.is_some(),
                from_flags.key_file.is_some(),
            ),
            (
                "accepted-key-file",
                merged.accepted_key_file.is_some(),
                from_flags.accepted_key_file.is_some(),
            ),
            (
                "master-key-file",
                merged.master_key_file.is_some(),
                from_flags.master_key_file.is_some(),
            ),
            (
                "i-accept-plaintext-udp",
                flag(merged.i_accept_plaintext_udp),
                from_flags.i_accept_plaintext_udp.is_some(),
            ),
            (
                "i-accept-secure-udp-non-loopback",
                flag(merged.i_accept_secure_udp_non_loopback),
                from_flags.i_accept_secure_udp_non_loopback.is_some(),
            ),
            (
                SECURE_RECOVERY,
                flag(merged.secure_udp_recovery),
                from_flags.secure_udp_recovery.is_some(),
            ),
            (
                PLAINTEXT_RECOVERY,
                flag(merged.plaintext_udp_recovery),
                from_flags.plaintext_udp_recovery.is_some(),
            ),
            (
                "udp-sender-capacity",
                merged.udp_sender_capacity.is_some(),
                from_flags.udp_sender_capacity.is_some(),
            ),
            (
                "udp-rcvbuf-bytes",
                merged.udp_rcvbuf_bytes.is_some(),
                from_flags.udp_rcvbuf_bytes.is_some(),
            ),
        ];
        for (key, given, as_flag) in udp_only {
            if given {
                warnings.push(format!(
                    "{} has no effect without --udp-port",
                    name(key, as_flag)
                ));
            }
        }
        return Ok(None);
    };
    let port_name = name("udp-port", from_flags.udp_port.is_some());
    let (security, bind, opt_in) = if keys.any() {
        // Read every key file now: a typo must stop the start, not surface
        // as decrypt failures once agents beat.
        crate::keys::read_keys(&keys).map_err(ConfigError::Invalid)?;
        let bind = merged
            .udp_bind_addr
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        if !bind.is_loopback() && !flag(merged.i_accept_secure_udp_non_loopback) {
            return Err(ConfigError::Invalid(format!(
                "{} = {bind} is not a loopback address: any holder of the key who can reach it can beat for any pid; bind 127.0.0.1 or ::1, or acknowledge the exposure with --i-accept-secure-udp-non-loopback (and firewall the port)",
                name("udp-bind-addr", from_flags.udp_bind_addr.is_some())
            )));
        }
        if flag(merged.i_accept_plaintext_udp) {
            warnings.push(format!(
                "{} has no effect: key files make the UDP listener secure, and it accepts only sealed frames",
                name("i-accept-plaintext-udp", from_flags.i_accept_plaintext_udp.is_some())
            ));
        }
        if flag(merged.plaintext_udp_recovery) {
            warnings.push(format!(
                "{} has no effect: the UDP listener is secure",
                name(
                    PLAINTEXT_RECOVERY,
                    from_flags.plaintext_udp_recovery.is_some()
                )
            ));
        }
        (
            UdpSecurity::Secure(keys),
            bind,
            (
                flag(merged.secure_udp_recovery),
                SECURE_RECOVERY,
                from_flags.secure_udp_recovery.is_some(),
            ),
        )
    } else {
        if !flag(merged.i_accept_plaintext_udp) {
            return Err(ConfigError::Invalid(format!(
                "{port_name} needs either keys or an explicit acknowledgement: give --key-file (or --accepted-key-file / --master-key-file; create one with `varta keygen FILE`) for authenticated ChaCha20-Poly1305 UDP, or --i-accept-plaintext-udp to accept that anyone who can reach the port can forge beats for any pid"
            )));
        }
        warnings.push(format!(
            "PLAINTEXT UDP listener ({port_name} = {port}): nothing is authenticated, anyone who can reach it can forge or suppress beats for any pid; use secure UDP (--key-file) outside a lab"
        ));
        if flag(merged.i_accept_secure_udp_non_loopback) {
            warnings.push(format!(
                "{} has no effect: the UDP listener has no keys",
                name(
                    "i-accept-secure-udp-non-loopback",
                    from_flags.i_accept_secure_udp_non_loopback.is_some()
                )
            ));
        }
        if flag(merged.secure_udp_recovery) {
            warnings.push(format!(
                "{} has no effect: the UDP listener is plaintext",
                name(SECURE_RECOVERY, from_flags.secure_udp_recovery.is_some())
            ));
        }
        if merged.udp_sender_capacity.is_some() {
            warnings.push(format!(
                "{} has no effect: plaintext UDP keeps no replay state",
                name(
                    "udp-sender-capacity",
                    from_flags.udp_sender_capacity.is_some()
                )
            ));
        }
        (
            UdpSecurity::Plaintext,
            merged
                .udp_bind_addr
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (
                flag(merged.plaintext_udp_recovery),
                PLAINTEXT_RECOVERY,
                from_flags.plaintext_udp_recovery.is_some(),
            ),
        )
    };
    let (recovery_opt_in, opt_in_key, opt_in_as_flag) = opt_in;
    if has_recovery && !recovery_opt_in {
        return Err(ConfigError::Invalid(format!(
            "a recovery command together with the {} UDP listener ({port_name}) needs --{opt_in_key}: UDP beats are not kernel-attested, so whoever can send them could make the observer run the command for any pid. Give that flag to accept it, or drop the recovery command or the UDP listener",
            match security {
                UdpSecurity::Plaintext => "plaintext",
                UdpSecurity::Secure(_) => "secure",
            }
        )));
    }
    if recovery_opt_in && !has_recovery {
        warnings.push(format!(
            "{} has no effect without a recovery command (--recovery-exec or --recovery-exec-file)",
            name(opt_in_key, opt_in_as_flag)
        ));
    }
    Ok(Some(UdpConfig {
        addr: SocketAddr::new(bind, port),
        security,
        recovery_opt_in,
        sender_capacity: merged
            .udp_sender_capacity
            .unwrap_or(DEFAULT_UDP_SENDER_CAPACITY),
        rcvbuf_bytes: merged.udp_rcvbuf_bytes.unwrap_or(DEFAULT_UDP_RCVBUF_BYTES),
    }))
}

#[cfg(feature = "load")]
/// Appends reload-diff lines for this section. Key files are re-read on
/// every reload whether or not their paths changed; the listener says what
/// the new key set is.
pub(super) fn diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    let describe = |u: &Option<UdpConfig>| match u {
        None => "none".to_string(),
        Some(u) => {
            let keys = match &u.security {
                UdpSecurity::Plaintext => String::new(),
                UdpSecurity::Secure(k) => {
                    let mut parts = Vec::new();
                    if let Some(p) = &k.key_file {
                        parts.push(format!("key-file={}", p.display()));
                    }
                    for p in &k.accepted {
                        parts.push(format!("accepted-key-file={}", p.display()));
                    }
                    if let Some(p) = &k.master {
                        parts.push(format!("master-key-file={}", p.display()));
                    }
                    format!(" {}", parts.join(" "))
                }
            };
            format!(
                "{} {}{keys} recovery-opt-in={} sender-capacity={} rcvbuf={}",
                u.mode(),
                u.addr,
                u.recovery_opt_in,
                u.sender_capacity,
                u.rcvbuf_bytes
            )
        }
    };
    if old.udp != new.udp {
        out.push(format!(
            "udp listener: {} -> {}",
            describe(&old.udp),
            describe(&new.udp)
        ));
    }
}
