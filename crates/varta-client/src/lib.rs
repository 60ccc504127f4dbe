//! # varta-client — send Varta heartbeats
//!
//! An agent connects once and calls [`Varta::beat`] from its main loop. A
//! beat is one 32-byte VLP frame in one datagram: it never blocks, never
//! allocates in steady state, and reports what the kernel did with it as a
//! [`BeatOutcome`].
//!
//! ```no_run
//! use varta_client::{BeatOutcome, Status, Varta};
//! let mut agent = Varta::connect("/run/varta/varta.sock")?;
//! if let BeatOutcome::Failed(e) = agent.beat(Status::Ok, 0) {
//!     eprintln!("beat failed: {e}");
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Transports: Unix datagram socket (default, kernel-attested by the
//! observer), plaintext UDP (feature `udp`), ChaCha20-Poly1305 UDP (feature
//! `secure-udp`), or any [`BeatTransport`] of your own via
//! [`Varta::with_transport`]. Feature `panic-handler` adds
//! [`install_panic_handler`], which sends a terminal frame when the process
//! panics.
//!
//! `Varta` is `Send` (move it to the thread that beats) but not `Sync`: one
//! handle is one session with one nonce sequence.
// The only unsafe code is the pthread_atfork registration in fork_guard.rs.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod fork_guard;
mod outcome;
#[cfg(feature = "panic-handler")]
mod panic;
mod transport;

pub use client::Varta;
pub use outcome::{classify_send_error, BeatError, BeatOutcome, DropReason};
#[cfg(feature = "panic-handler")]
pub use panic::install_panic_handler;
#[cfg(all(feature = "panic-handler", feature = "udp"))]
pub use panic::install_panic_handler_udp;
#[cfg(all(feature = "panic-handler", feature = "secure-udp"))]
pub use panic::{install_panic_handler_secure_udp, install_panic_handler_secure_udp_with_master};
#[cfg(feature = "secure-udp")]
pub use transport::SecureUdpTransport;
#[cfg(feature = "udp")]
pub use transport::UdpTransport;
pub use transport::{BeatTransport, UdsTransport};
pub use varta_vlp::{default_socket_path, DecodeError, Frame, Status, NONCE_TERMINAL};
#[cfg(feature = "secure-udp")]
pub use varta_vlp::{Key, KeyError};
