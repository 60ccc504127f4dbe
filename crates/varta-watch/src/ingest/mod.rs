//! Where datagrams come in: the kernel-attested Unix socket ([`uds`]) and
//! the UDP listener for network agents ([`udp`]), which feeds the same
//! tracker with a network [`crate::events::Origin`].

mod batch;
pub mod procfs;
pub(crate) mod sockfile;
pub mod udp;
pub mod uds;

pub use udp::{UdpBindError, UdpDrained, UdpListener};
pub use uds::{BindError, Drained, UdsListener, UdsPolicy};
