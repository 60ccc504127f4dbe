//! Where datagrams come in: the kernel-attested Unix socket ([`uds`]) and
//! the UDP listener for network agents ([`udp`]), which feeds the same
//! tracker with a network [`crate::events::Origin`].

mod batch;
pub mod procfs;
pub mod udp;
pub mod uds;

pub use udp::{UdpBindError, UdpDrained, UdpListener};
pub(crate) use uds::check_parent as check_socket_parent;
pub use uds::{BindError, Drained, UdsListener, UdsPolicy};
