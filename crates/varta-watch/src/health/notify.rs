//! The `sd_notify(3)` protocol: one datagram of `KEY=VALUE` lines to the
//! Unix socket named by `$NOTIFY_SOCKET`.
//!
//! Written on std rather than the `sd-notify` crate: that crate (0.5)
//! `connect(2)`s to `$NOTIFY_SOCKET` as a filesystem path, so the
//! abstract-namespace form (`@name`, which systemd uses in containers and
//! which `sd_notify(3)` documents) fails with ENOENT. std's
//! `SocketAddrExt::from_abstract_name` covers both forms safely in a few
//! lines.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A datagram socket aimed at the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for log lines.
    name: String,
}

impl Notifier {
    /// Aims at `target`: an absolute path, or `@name` for the abstract
    /// namespace.
    pub fn new(target: &OsStr) -> io::Result<Notifier> {
        let bytes = target.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(target)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET must be an absolute path or @abstract-name",
                ))
            }
        };
        let sock = UnixDatagram::unbound()?;
        // A backed-up service manager must never block the event loop
        // (READY=1, STOPPING=1) or the watchdog thread: a full queue is a
        // failed send, reported, not a wait.
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            sock,
            addr,
            name: target.to_string_lossy().into_owned(),
        })
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) in one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let n = self.sock.send_to_addr(state.as_bytes(), &self.addr)?;
        if n != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification datagram truncated",
            ));
        }
        Ok(())
    }

    /// `$NOTIFY_SOCKET` as given.
    pub fn target(&self) -> &str {
        &self.name
    }
}

/// What systemd asked of us through the environment.
#[derive(Debug, Default)]
pub struct SystemdEnv {
    /// Where to send `READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`.
    pub notifier: Option<Notifier>,
    /// `$WATCHDOG_USEC` when it is meant for this process: `WATCHDOG=1`
    /// must arrive at least this often (we send at half of it).
    pub watchdog: Option<Duration>,
}

impl SystemdEnv {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. Bad
    /// values are logged and ignored: the observer runs without them.
    pub fn from_env() -> SystemdEnv {
        Self::from_vars(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    /// [`Self::from_env`] on given values (for tests).
    pub fn from_vars(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> SystemdEnv {
        let notifier = notify_socket
            .filter(|s| !s.is_empty())
            .and_then(|s| match Notifier::new(s) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(notify_socket = %s.to_string_lossy(), error = %e, "ignoring NOTIFY_SOCKET; systemd will not hear from this process");
                    None
                }
            });
        let watchdog = match watchdog_usec.map(str::parse::<u64>) {
            None => None,
            Some(Ok(usec)) if usec > 0 => Some(Duration::from_micros(usec)),
            Some(_) => {
                tracing::warn!(
                    watchdog_usec = watchdog_usec.unwrap_or_default(),
                    "ignoring WATCHDOG_USEC: not a positive number of microseconds"
                );
                None
            }
        };
        // Set by systemd so that a child which inherited the variables
        // does not ping on the parent's behalf.
        let for_us = match watchdog_pid.map(str::parse::<u32>) {
            None => true,
            Some(Ok(pid)) => pid == own_pid,
            Some(Err(_)) => false,
        };
        if watchdog.is_some() && !for_us {
            tracing::info!(
                watchdog_pid = watchdog_pid.unwrap_or_default(),
                "WATCHDOG_USEC is meant for another process (WATCHDOG_PID); not pinging the systemd watchdog"
            );
        }
        SystemdEnv {
            notifier,
            watchdog: watchdog.filter(|_| for_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_targets_receive_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.as_os_str())
            .unwrap()
            .send("READY=1\n")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        let name = format!("varta-notify-unit-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.send("WATCHDOG=1").unwrap();
        let got = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"WATCHDOG=1");
        assert_eq!(n.target(), format!("@{name}"));
    }

    #[test]
    fn relative_or_empty_targets_are_refused() {
        assert!(Notifier::new(OsStr::new("relative.sock")).is_err());
        assert!(Notifier::new(OsStr::new("")).is_err());
    }

    #[test]
    fn watchdog_pid_and_usec_are_honoured() {
        let env = SystemdEnv::from_vars(None, Some("400000"), None, 7);
        assert_eq!(env.watchdog, Some(Duration::from_millis(400)));
        let env = SystemdEnv::from_vars(None, Some("400000"), Some("7"), 7);
        assert_eq!(env.watchdog, Some(Duration::from_millis(400)));
        let env = SystemdEnv::from_vars(None, Some("400000"), Some("8"), 7);
        assert_eq!(env.watchdog, None, "another process's watchdog");
        for bad in ["0", "-1", "soon"] {
            assert_eq!(
                SystemdEnv::from_vars(None, Some(bad), None, 7).watchdog,
                None
            );
        }
        assert!(SystemdEnv::from_vars(Some(OsStr::new("")), None, None, 7)
            .notifier
            .is_none());
    }
}
