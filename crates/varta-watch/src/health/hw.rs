//! `--hw-watchdog PATH`: a Linux watchdog device kicked from the event
//! loop, so a wedged or dead observer ends in a hardware reset unless it is
//! restarted within the device's timeout.
//!
//! Startup checks (any failure stops the start, exit 1): the path is a
//! character device; `WDIOC_GETSUPPORT` answers (so it is a watchdog);
//! the timeout is at least [`MIN_TIMEOUT_SECS`] (raised with
//! `WDIOC_SETTIMEOUT` when lower). A device without magic close, or with
//! `nowayout`, cannot be disarmed by a clean exit: that is a warning.
//! The device sits behind [`WatchdogDevice`] so the logic is tested
//! without hardware.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::hw_sys;

/// Shortest hardware timeout accepted. A hardware reset is the last
/// resort: systemd's watchdog and the self-watchdog (seconds) must get
/// their chance first, and a brief stall (swap storm, VM steal) must not
/// reboot the host.
pub const MIN_TIMEOUT_SECS: u32 = 30;

/// `WDIOF_SETTIMEOUT`: the timeout can be changed.
pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// `WDIOF_MAGICCLOSE`: writing `V` before close disarms the device.
pub const WDIOF_MAGICCLOSE: u32 = 0x0100;
/// `WDIOF_KEEPALIVEPING`: `WDIOC_KEEPALIVE` is supported.
pub const WDIOF_KEEPALIVEPING: u32 = 0x8000;

/// What `WDIOC_GETSUPPORT` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchdogInfo {
    /// `WDIOF_*` flags.
    pub options: u32,
    /// Driver-defined firmware version.
    pub firmware_version: u32,
    /// The driver's name for the device.
    pub identity: String,
}

/// The operations the observer needs from a watchdog device.
pub trait WatchdogDevice: Send {
    /// `WDIOC_GETSUPPORT`.
    fn support(&mut self) -> io::Result<WatchdogInfo>;
    /// `WDIOC_GETTIMEOUT`, seconds.
    fn timeout(&mut self) -> io::Result<u32>;
    /// `WDIOC_SETTIMEOUT`; returns the timeout the driver actually set.
    fn set_timeout(&mut self, secs: u32) -> io::Result<u32>;
    /// Restarts the timer.
    fn keepalive(&mut self) -> io::Result<()>;
    /// Whether the driver was loaded with `nowayout` (None: unknown).
    fn nowayout(&self) -> Option<bool>;
    /// Writes the magic `V`; the device is closed when dropped right after.
    fn magic_close(&mut self) -> io::Result<()>;
}

/// Why the hardware watchdog could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HwWatchdogError {
    /// The path is missing or unreadable.
    #[error("hw-watchdog {}: {source}", path.display())]
    Stat {
        /// The device path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The path is not a character device.
    #[error("hw-watchdog {}: is {what}, not a character device; name a watchdog device such as /dev/watchdog0", path.display())]
    NotCharDevice {
        /// The device path.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// The device could not be opened for writing.
    #[error("hw-watchdog {}: cannot open for writing: {source}", path.display())]
    Open {
        /// The device path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `WDIOC_GETSUPPORT` failed: not a watchdog.
    #[error("hw-watchdog {}: not a watchdog device (WDIOC_GETSUPPORT failed: {source})", path.display())]
    NotWatchdog {
        /// The device path.
        path: PathBuf,
        /// What the driver said.
        source: io::Error,
    },
    /// Reading or setting the timeout failed.
    #[error("hw-watchdog {}: {what} failed: {source}", path.display())]
    Timeout {
        /// The device path.
        path: PathBuf,
        /// Which ioctl.
        what: &'static str,
        /// What the driver said.
        source: io::Error,
    },
    /// The timeout is below the minimum and cannot be raised.
    #[error("hw-watchdog {}: timeout is {secs} s and {why}; at least {MIN_TIMEOUT_SECS} s is required so a brief stall cannot reset the host", path.display())]
    TimeoutTooShort {
        /// The device path.
        path: PathBuf,
        /// The timeout the device keeps.
        secs: u32,
        /// Why it could not be raised.
        why: &'static str,
    },
}

/// A checked, armed watchdog device.
pub struct HwWatchdog {
    dev: Box<dyn WatchdogDevice>,
    path: PathBuf,
    timeout_secs: u32,
    /// The next failing kick that may be logged (observer ns), and how many
    /// failures were held back since the last logged one.
    log_after_ns: u64,
    suppressed: u64,
}

/// Kick failures are logged at most this often.
const KICK_LOG_EVERY_NS: u64 = 10_000_000_000;

impl HwWatchdog {
    /// Opens the device at `path` (which arms it) and checks it.
    pub fn open(path: &Path) -> Result<HwWatchdog, HwWatchdogError> {
        let dev = LinuxWatchdog::open(path)?;
        HwWatchdog::with_device(Box::new(dev), path)
    }

    /// Checks an opened device: identity, timeout (raised to the minimum),
    /// magic close. A device that fails a check is closed with `V` so the
    /// refused start does not leave it counting down.
    pub fn with_device(
        mut dev: Box<dyn WatchdogDevice>,
        path: &Path,
    ) -> Result<HwWatchdog, HwWatchdogError> {
        match Self::check(dev.as_mut(), path) {
            Ok(timeout_secs) => Ok(HwWatchdog {
                dev,
                path: path.to_path_buf(),
                timeout_secs,
                log_after_ns: 0,
                suppressed: 0,
            }),
            Err(e) => {
                let _ = dev.magic_close();
                Err(e)
            }
        }
    }

    fn check(dev: &mut dyn WatchdogDevice, path: &Path) -> Result<u32, HwWatchdogError> {
        let p = || path.to_path_buf();
        let info = dev
            .support()
            .map_err(|source| HwWatchdogError::NotWatchdog { path: p(), source })?;
        let mut secs = dev.timeout().map_err(|source| HwWatchdogError::Timeout {
            path: p(),
            what: "WDIOC_GETTIMEOUT",
            source,
        })?;
        if secs < MIN_TIMEOUT_SECS {
            if info.options & WDIOF_SETTIMEOUT == 0 {
                return Err(HwWatchdogError::TimeoutTooShort {
                    path: p(),
                    secs,
                    why: "the driver cannot change it (no WDIOF_SETTIMEOUT)",
                });
            }
            let set =
                dev.set_timeout(MIN_TIMEOUT_SECS)
                    .map_err(|source| HwWatchdogError::Timeout {
                        path: p(),
                        what: "WDIOC_SETTIMEOUT",
                        source,
                    })?;
            if set < MIN_TIMEOUT_SECS {
                return Err(HwWatchdogError::TimeoutTooShort {
                    path: p(),
                    secs: set,
                    why: "the driver would not raise it",
                });
            }
            tracing::info!(
                device = %path.display(),
                from_secs = secs,
                to_secs = set,
                "hardware watchdog timeout raised"
            );
            secs = set;
        }
        tracing::info!(
            device = %path.display(),
            identity = %info.identity,
            firmware_version = info.firmware_version,
            options = format_args!("{:#06x}", info.options),
            timeout_secs = secs,
            "hardware watchdog armed"
        );
        if info.options & WDIOF_MAGICCLOSE == 0 {
            tracing::warn!(device = %path.display(), "hardware watchdog has no magic close: a clean exit cannot disarm it, so the host resets {secs} s after the observer stops unless it is restarted");
        } else if dev.nowayout() == Some(true) {
            tracing::warn!(device = %path.display(), "hardware watchdog driver is in nowayout mode: a clean exit cannot disarm it, so the host resets {secs} s after the observer stops unless it is restarted");
        }
        Ok(secs)
    }

    /// The enforced timeout.
    pub fn timeout_secs(&self) -> u32 {
        self.timeout_secs
    }

    /// Restarts the device timer. A failure is logged (at most once per
    /// 10 s, with the count held back); the next tick tries again, and
    /// persistent failure ends in the reset the device exists for.
    pub fn kick(&mut self, now_ns: u64) {
        if let Err(e) = self.dev.keepalive() {
            if now_ns >= self.log_after_ns {
                tracing::error!(device = %self.path.display(), error = %e, suppressed = self.suppressed, "hardware watchdog kick failed");
                self.suppressed = 0;
                self.log_after_ns = now_ns.saturating_add(KICK_LOG_EVERY_NS);
            } else {
                self.suppressed += 1;
            }
        }
    }

    /// Clean exit: magic close, so the host is not reset.
    pub fn disarm(mut self) {
        match self.dev.magic_close() {
            Ok(()) => tracing::info!(device = %self.path.display(), "hardware watchdog disarmed"),
            Err(e) => {
                tracing::error!(device = %self.path.display(), error = %e, "cannot disarm the hardware watchdog; the host will reset when it expires")
            }
        }
    }
}

/// A real `/dev/watchdog*` device.
struct LinuxWatchdog {
    file: File,
    rdev: u64,
    keepalive_ping: bool,
}

impl LinuxWatchdog {
    fn open(path: &Path) -> Result<LinuxWatchdog, HwWatchdogError> {
        let p = || path.to_path_buf();
        // Checked before open(2): opening a FIFO for writing would block.
        let meta = std::fs::metadata(path)
            .map_err(|source| HwWatchdogError::Stat { path: p(), source })?;
        check_char_device(&meta, path)?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| HwWatchdogError::Open { path: p(), source })?;
        // Re-checked on the descriptor: the path may have changed since.
        let meta = file
            .metadata()
            .map_err(|source| HwWatchdogError::Stat { path: p(), source })?;
        check_char_device(&meta, path)?;
        Ok(LinuxWatchdog {
            file,
            rdev: meta.rdev(),
            keepalive_ping: false,
        })
    }
}

fn check_char_device(meta: &std::fs::Metadata, path: &Path) -> Result<(), HwWatchdogError> {
    let t = meta.file_type();
    let what = if t.is_char_device() {
        return Ok(());
    } else if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a device"
    };
    Err(HwWatchdogError::NotCharDevice {
        path: path.to_path_buf(),
        what,
    })
}

impl WatchdogDevice for LinuxWatchdog {
    fn support(&mut self) -> io::Result<WatchdogInfo> {
        let raw = hw_sys::get_support(self.file.as_fd())?;
        self.keepalive_ping = raw.options & WDIOF_KEEPALIVEPING != 0;
        let end = raw.identity.iter().position(|&b| b == 0).unwrap_or(32);
        Ok(WatchdogInfo {
            options: raw.options,
            firmware_version: raw.firmware_version,
            identity: String::from_utf8_lossy(&raw.identity[..end]).into_owned(),
        })
    }

    fn timeout(&mut self) -> io::Result<u32> {
        let s = hw_sys::get_timeout(self.file.as_fd())?;
        Ok(u32::try_from(s).unwrap_or(0))
    }

    fn set_timeout(&mut self, secs: u32) -> io::Result<u32> {
        let want = i32::try_from(secs).unwrap_or(i32::MAX);
        let got = hw_sys::set_timeout(self.file.as_fd(), want)?;
        Ok(u32::try_from(got).unwrap_or(0))
    }

    fn keepalive(&mut self) -> io::Result<()> {
        if self.keepalive_ping {
            hw_sys::keepalive(self.file.as_fd())
        } else {
            // Without WDIOF_KEEPALIVEPING the driver only knows writes; any
            // byte but 'V' is a kick.
            self.file.write_all(b"\0")
        }
    }

    fn nowayout(&self) -> Option<bool> {
        // Exposed by the watchdog core under the device's sysfs node
        // (CONFIG_WATCHDOG_SYSFS); absent on older kernels and for the
        // legacy misc node, in which case we cannot tell.
        let (major, minor) = (
            nix::sys::stat::major(self.rdev),
            nix::sys::stat::minor(self.rdev),
        );
        let text =
            std::fs::read_to_string(format!("/sys/dev/char/{major}:{minor}/nowayout")).ok()?;
        Some(text.trim() == "1")
    }

    fn magic_close(&mut self) -> io::Result<()> {
        self.file.write_all(b"V")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Debug, PartialEq)]
    enum Call {
        Support,
        GetTimeout,
        SetTimeout(u32),
        Keepalive,
        MagicClose,
    }

    /// A watchdog in memory: records every call.
    struct Fake {
        calls: Arc<Mutex<Vec<Call>>>,
        options: u32,
        timeout: u32,
        /// What SETTIMEOUT ends at, whatever was asked (driver rounding).
        settable_max: u32,
        nowayout: Option<bool>,
        fail_support: bool,
        fail_keepalive: bool,
    }

    impl Fake {
        fn new(options: u32, timeout: u32) -> (Fake, Arc<Mutex<Vec<Call>>>) {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let fake = Fake {
                calls: calls.clone(),
                options,
                timeout,
                settable_max: u32::MAX,
                nowayout: Some(false),
                fail_support: false,
                fail_keepalive: false,
            };
            (fake, calls)
        }
        fn log(&self, c: Call) {
            self.calls.lock().unwrap().push(c);
        }
    }

    impl WatchdogDevice for Fake {
        fn support(&mut self) -> io::Result<WatchdogInfo> {
            self.log(Call::Support);
            if self.fail_support {
                return Err(io::Error::from_raw_os_error(nix::libc::ENOTTY));
            }
            Ok(WatchdogInfo {
                options: self.options,
                firmware_version: 1,
                identity: "fake".into(),
            })
        }
        fn timeout(&mut self) -> io::Result<u32> {
            self.log(Call::GetTimeout);
            Ok(self.timeout)
        }
        fn set_timeout(&mut self, secs: u32) -> io::Result<u32> {
            self.log(Call::SetTimeout(secs));
            self.timeout = secs.min(self.settable_max);
            Ok(self.timeout)
        }
        fn keepalive(&mut self) -> io::Result<()> {
            self.log(Call::Keepalive);
            if self.fail_keepalive {
                return Err(io::Error::from_raw_os_error(nix::libc::EIO));
            }
            Ok(())
        }
        fn nowayout(&self) -> Option<bool> {
            self.nowayout
        }
        fn magic_close(&mut self) -> io::Result<()> {
            self.log(Call::MagicClose);
            Ok(())
        }
    }

    const FULL: u32 = WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING;

    fn calls(c: &Arc<Mutex<Vec<Call>>>) -> Vec<Call> {
        c.lock().unwrap().clone()
    }

    #[test]
    fn short_timeout_is_raised_to_30_and_kicks_reach_the_device() {
        let (fake, log) = Fake::new(FULL, 10);
        let mut wd = HwWatchdog::with_device(Box::new(fake), Path::new("/dev/fake")).unwrap();
        assert_eq!(wd.timeout_secs(), 30);
        wd.kick(1);
        wd.kick(2);
        wd.disarm();
        assert_eq!(
            calls(&log),
            [
                Call::Support,
                Call::GetTimeout,
                Call::SetTimeout(30),
                Call::Keepalive,
                Call::Keepalive,
                Call::MagicClose
            ]
        );
    }

    #[test]
    fn a_long_enough_timeout_is_left_alone() {
        let (fake, log) = Fake::new(FULL, 60);
        let wd = HwWatchdog::with_device(Box::new(fake), Path::new("/dev/fake")).unwrap();
        assert_eq!(wd.timeout_secs(), 60);
        assert!(!calls(&log).iter().any(|c| matches!(c, Call::SetTimeout(_))));
        // Dropped without disarm (crash path): no magic close.
        drop(wd);
        assert!(!calls(&log).contains(&Call::MagicClose));
    }

    #[test]
    fn a_timeout_that_cannot_reach_30_is_refused_and_the_device_closed() {
        let (fake, log) = Fake::new(WDIOF_MAGICCLOSE, 10);
        let e = HwWatchdog::with_device(Box::new(fake), Path::new("/dev/fake"))
            .err()
            .unwrap();
        assert!(
            matches!(e, HwWatchdogError::TimeoutTooShort { secs: 10, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("at least 30 s"), "{e}");
        assert_eq!(calls(&log).last(), Some(&Call::MagicClose));

        let (mut fake, _) = Fake::new(FULL, 10);
        fake.settable_max = 20;
        let e = HwWatchdog::with_device(Box::new(fake), Path::new("/dev/fake"))
            .err()
            .unwrap();
        assert!(
            matches!(e, HwWatchdogError::TimeoutTooShort { secs: 20, .. }),
            "{e}"
        );
    }

    #[test]
    fn not_a_watchdog_is_refused() {
        let (mut fake, _) = Fake::new(FULL, 60);
        fake.fail_support = true;
        let e = HwWatchdog::with_device(Box::new(fake), Path::new("/dev/null"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a watchdog device"), "{e}");
    }

    #[test]
    fn without_magic_close_or_with_nowayout_it_still_runs() {
        let (fake, _) = Fake::new(WDIOF_SETTIMEOUT | WDIOF_KEEPALIVEPING, 60);
        assert!(HwWatchdog::with_device(Box::new(fake), Path::new("/dev/fake")).is_ok());
        let (mut fake, _) = Fake::new(FULL, 60);
        fake.nowayout = Some(true);
        assert!(HwWatchdog::with_device(Box::new(fake), Path::new("/dev/fake")).is_ok());
    }

    #[test]
    fn failing_kicks_keep_trying() {
        let (mut fake, log) = Fake::new(FULL, 60);
        fake.fail_keepalive = true;
        let mut wd = HwWatchdog::with_device(Box::new(fake), Path::new("/dev/fake")).unwrap();
        for t in 0..5 {
            wd.kick(t);
        }
        assert_eq!(wd.suppressed, 4, "one logged, the rest held back");
        let kicks = calls(&log)
            .iter()
            .filter(|c| **c == Call::Keepalive)
            .count();
        assert_eq!(kicks, 5);
    }

    #[test]
    fn real_paths_that_are_not_watchdogs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("regular");
        std::fs::write(&file, "").unwrap();
        let e = HwWatchdog::open(&file).err().unwrap();
        assert!(
            e.to_string()
                .contains("a regular file, not a character device"),
            "{e}"
        );
        let e = HwWatchdog::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = HwWatchdog::open(&dir.path().join("absent")).err().unwrap();
        assert!(matches!(e, HwWatchdogError::Stat { .. }), "{e}");
        // A character device whose driver is not a watchdog: the ioctl fails.
        let e = HwWatchdog::open(Path::new("/dev/null")).err().unwrap();
        assert!(matches!(e, HwWatchdogError::NotWatchdog { .. }), "{e}");
    }
}
