//! Plaintext UDP: bare 32-byte frames. The observer treats these as
//! network-unverified (tracked, alerted on, never trusted for recovery).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use super::{udp_connect, BeatTransport};

/// Plaintext UDP transport.
#[derive(Debug)]
pub struct UdpTransport {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl UdpTransport {
    /// Binds an ephemeral port and connects it to `addr` (non-blocking).
    pub fn connect(addr: SocketAddr) -> io::Result<UdpTransport> {
        Ok(UdpTransport {
            sock: udp_connect(addr)?,
            addr,
        })
    }
}

impl BeatTransport for UdpTransport {
    #[inline]
    fn send(&mut self, frame: &[u8; 32]) -> io::Result<usize> {
        self.sock.send(frame)
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.sock = udp_connect(self.addr)?;
        Ok(())
    }
}
