//! # varta-vlp — the VLP v0.2 wire protocol
//!
//! VLP (Varta Lifeline Protocol) is the 32-byte heartbeat frame every Varta
//! agent sends to the observer. This crate is the single definition of that
//! frame: encode, decode (with the spec's exact error order), CRC-32C, and —
//! behind the `secure` feature — the ChaCha20-Poly1305 sealed layouts and
//! HKDF-SHA256 derivations of spec §2.
//!
//! "Spec §N" in this crate refers to the protocol description in the
//! repository's `docs/protocol.md` (byte offsets, decode order, sealed
//! layouts, KDF labels, observer rules). The public conformance vectors are
//! vendored in `tests/data/` and run by `cargo test -p varta-vlp --test
//! conformance`.
//!
//! The crate is `no_std` and allocation-free by default so it can sit in the
//! smallest agent. Features:
//! - `std`: `std::error::Error` impls, the hardware CRC-32C path and
//!   [`default_socket_path`].
//! - `secure`: [`Key`], [`seal_shared`], [`open_shared`], [`seal_master`],
//!   [`open_master`] and the key derivations (pulls in `alloc` for
//!   [`parse_key_list`]).
//!
//! ```
//! use varta_vlp::{Frame, Status, FRAME_LEN};
//! let frame = Frame::new(Status::Ok, 4242, 10, 1, 7);
//! let mut wire = [0u8; FRAME_LEN];
//! frame.encode(&mut wire);
//! assert_eq!(Frame::decode(&wire), Ok(frame));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "secure")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod crc;
mod error;
mod frame;
#[cfg(feature = "std")]
mod paths;
#[cfg(feature = "secure")]
mod secure;
mod status;

pub use crate::crc::crc32c;
#[doc(hidden)]
pub use crate::crc::portable as crc32c_portable;
pub use crate::error::DecodeError;
pub use crate::frame::{Frame, FRAME_LEN, MAGIC, NONCE_TERMINAL, VERSION};
#[cfg(feature = "std")]
pub use crate::paths::{default_socket_path, effective_uid};
#[cfg(feature = "secure")]
pub use crate::secure::{
    derive_agent_key, derive_epoch_key, derive_iv_prefix, open_master, open_shared, parse_key_file,
    parse_key_list, seal_master, seal_master_with_agent_key, seal_shared, AuthError, Key, KeyError,
    MASTER_LEN, SHARED_LEN, TAG_LEN,
};
pub use crate::status::Status;
