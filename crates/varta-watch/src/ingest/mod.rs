//! Where datagrams come in. Today: the kernel-attested Unix socket
//! ([`uds`]); the UDP listeners of a later release sit beside it and feed
//! the same tracker with a different [`crate::events::Origin`].

pub mod procfs;
pub mod uds;

pub use uds::{BindError, Drained, UdsListener, UdsPolicy};
