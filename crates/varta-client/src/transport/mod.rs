//! How a frame leaves the process. [`crate::Varta`] owns nonce, clock and
//! fork handling; a transport only moves 32 bytes (sealing them first if it
//! is the secure one).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

#[cfg(feature = "secure-udp")]
mod secure;
#[cfg(feature = "udp")]
mod udp;

#[cfg(feature = "secure-udp")]
pub use secure::SecureUdpTransport;
#[cfg(feature = "udp")]
pub use udp::UdpTransport;

/// A way to deliver encoded frames. Implementations must never block in
/// `send` (return `WouldBlock` instead) and should not allocate there.
pub trait BeatTransport: Send + 'static {
    /// Sends one encoded frame; returns the bytes written on the wire.
    fn send(&mut self, frame: &[u8; 32]) -> io::Result<usize>;

    /// Replaces the connection with a fresh one (observer restart, fork).
    /// Cold path: may allocate.
    fn reconnect(&mut self) -> io::Result<()>;
}

/// Unix datagram socket to the observer (the default transport). The
/// observer reads the sender's pid and uid from the kernel, so these beats
/// are kernel-attested.
#[derive(Debug)]
pub struct UdsTransport {
    sock: UnixDatagram,
    path: PathBuf,
}

fn uds_connect(path: &Path) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

impl UdsTransport {
    /// Opens a non-blocking datagram socket connected to `path`. Fails when
    /// no observer is bound there.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UdsTransport> {
        let path = path.as_ref().to_path_buf();
        let sock = uds_connect(&path)?;
        Ok(UdsTransport { sock, path })
    }

    /// The observer socket path this transport targets.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BeatTransport for UdsTransport {
    #[inline]
    fn send(&mut self, frame: &[u8; 32]) -> io::Result<usize> {
        self.sock.send(frame)
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.sock = uds_connect(&self.path)?;
        Ok(())
    }
}

/// A non-blocking UDP socket bound to an ephemeral port of the target's
/// address family and connected to `addr`.
#[cfg(feature = "udp")]
pub(crate) fn udp_connect(addr: std::net::SocketAddr) -> io::Result<std::net::UdpSocket> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(addr)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}
