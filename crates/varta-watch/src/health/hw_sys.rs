//! The Linux watchdog ioctls (`linux/watchdog.h`), the crate's only
//! `unsafe`: neither std, nix nor rustix wraps them safely, so nix's ioctl
//! macros generate the raw calls and each gets one safe wrapper here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc::c_int;

/// `struct watchdog_info` as the kernel lays it out.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct WatchdogInfoRaw {
    pub options: u32,
    pub firmware_version: u32,
    pub identity: [u8; 32],
}

const WATCHDOG_IOCTL_BASE: u8 = b'W';
nix::ioctl_read!(wdioc_getsupport, WATCHDOG_IOCTL_BASE, 0, WatchdogInfoRaw);
nix::ioctl_read!(wdioc_keepalive, WATCHDOG_IOCTL_BASE, 5, c_int);
nix::ioctl_readwrite!(wdioc_settimeout, WATCHDOG_IOCTL_BASE, 6, c_int);
nix::ioctl_read!(wdioc_gettimeout, WATCHDOG_IOCTL_BASE, 7, c_int);

/// `WDIOC_GETSUPPORT`: options, firmware version and identity.
pub(super) fn get_support(fd: BorrowedFd<'_>) -> io::Result<WatchdogInfoRaw> {
    let mut info = WatchdogInfoRaw {
        options: 0,
        firmware_version: 0,
        identity: [0; 32],
    };
    // SAFETY: `fd` is a live descriptor for the duration of the borrow, and
    // `info` is a writable `struct watchdog_info` of exactly the size the
    // request code encodes; the kernel writes at most that many bytes.
    unsafe { wdioc_getsupport(fd.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// `WDIOC_GETTIMEOUT`: the current timeout in seconds.
pub(super) fn get_timeout(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    let mut secs: c_int = 0;
    // SAFETY: live descriptor; `secs` is a writable int, the size encoded
    // in the request.
    unsafe { wdioc_gettimeout(fd.as_raw_fd(), &mut secs) }?;
    Ok(secs)
}

/// `WDIOC_SETTIMEOUT`: asks for `secs`; returns what the driver set (it
/// may round).
pub(super) fn set_timeout(fd: BorrowedFd<'_>, secs: c_int) -> io::Result<c_int> {
    let mut value = secs;
    // SAFETY: live descriptor; `value` is a readable and writable int, the
    // size encoded in the request.
    unsafe { wdioc_settimeout(fd.as_raw_fd(), &mut value) }?;
    Ok(value)
}

/// `WDIOC_KEEPALIVE`: restarts the timer.
pub(super) fn keepalive(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut unused: c_int = 0;
    // SAFETY: live descriptor; the kernel ignores the argument, which still
    // points at a writable int of the encoded size.
    unsafe { wdioc_keepalive(fd.as_raw_fd(), &mut unused) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request codes `<linux/watchdog.h>` defines (checked against the
    /// C header): a wrong struct size would silently change them.
    #[test]
    fn request_codes_match_the_kernel_header() {
        use std::mem::size_of;
        assert_eq!(size_of::<WatchdogInfoRaw>(), 40);
        let codes = [
            nix::request_code_read!(b'W', 0, size_of::<WatchdogInfoRaw>()),
            nix::request_code_read!(b'W', 5, size_of::<c_int>()),
            nix::request_code_readwrite!(b'W', 6, size_of::<c_int>()),
            nix::request_code_read!(b'W', 7, size_of::<c_int>()),
        ];
        // The request type is c_ulong on Linux glibc.
        let codes = codes.map(u64::from);
        assert_eq!(codes, [0x8028_5700, 0x8004_5705, 0xc004_5706, 0x8004_5707]);
    }
}
