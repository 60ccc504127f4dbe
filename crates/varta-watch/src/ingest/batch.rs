//! One `recvmmsg` call, shared by the Unix and UDP listeners: up to
//! [`BATCH`] datagrams into preallocated buffers, with a per-datagram
//! summary taken by the caller's function while the kernel's headers are
//! at hand.

use std::io::IoSliceMut;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, RecvMsg, SockaddrLike};

/// Datagrams per `recvmmsg` call.
pub const BATCH: usize = 32;

/// Receives up to [`BATCH`] datagrams from the non-blocking socket `fd`
/// into `bufs`, writing `summarize(msg)` into `meta[i]` for each; returns
/// how many arrived. `MSG_TRUNC` makes the kernel report an over-long
/// datagram's real length, so a wrong-size drop is counted with its size.
/// `EINTR` is retried; `EAGAIN` (nothing queued) and other errors are the
/// caller's to handle.
pub fn recv_batch<S: SockaddrLike + Copy, M>(
    fd: RawFd,
    headers: &mut MultiHeaders<S>,
    bufs: &mut [[u8; 64]; BATCH],
    meta: &mut [M; BATCH],
    summarize: impl Fn(&RecvMsg<'_, '_, S>) -> M,
) -> Result<usize, Errno> {
    loop {
        let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
        match recvmmsg(
            fd,
            headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            None,
        ) {
            Ok(results) => {
                let mut n = 0;
                for (m, msg) in meta.iter_mut().zip(results) {
                    *m = summarize(&msg);
                    n += 1;
                }
                return Ok(n);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
