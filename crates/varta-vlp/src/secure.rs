//! Secure UDP layouts (spec §2): ChaCha20-Poly1305 sealing, HKDF-SHA256 key
//! derivation and key-file parsing. All primitives come from RustCrypto; this
//! module only lays bytes out as the spec says.

use alloc::vec::Vec;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::FRAME_LEN;

/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Shared-key datagram: `iv_random[8] ‖ iv_counter[4] ‖ ct[32] ‖ tag[16]`.
pub const SHARED_LEN: usize = 12 + FRAME_LEN + TAG_LEN;
/// Master-key datagram: `agent_pid[4] ‖ iv_random[8] ‖ iv_counter[4] ‖ ct[32] ‖ tag[16]`.
pub const MASTER_LEN: usize = 4 + SHARED_LEN;

const INFO_AGENT: &[u8] = b"varta-agent-v1\0";
const INFO_IV_PREFIX: &[u8] = b"varta-iv-prefix-v1\0";
const INFO_EPOCH: &[u8] = b"varta-epoch-v1\0";

/// A 32-byte symmetric key. Wiped on drop, never printed, never cloned
/// implicitly: a copy of a secret should be a visible decision.
#[derive(Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The raw key bytes (for handing to a cipher).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters; surrounding whitespace is ignored. Errors
    /// name the problem and position, never the key.
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        parse_hex_line(text, 1)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.0))
    }
}

/// What is wrong with a key or key file. `line` is 1-based; `column` counts
/// characters from the first non-blank one of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// No key at all (empty text, or only blank lines and comments).
    Empty,
    /// A key line holds the wrong number of characters.
    WrongLength {
        /// Line of the offending key.
        line: usize,
        /// Characters found (64 expected).
        found: usize,
    },
    /// A character that is not a hex digit.
    InvalidChar {
        /// Line of the offending key.
        line: usize,
        /// 1-based character position within the key.
        column: usize,
        /// The non-hex character (never part of a valid key).
        character: char,
    },
    /// A single-key file holds more than one key.
    MultipleKeys {
        /// Key lines found.
        count: usize,
    },
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::Empty => f.write_str(
                "no key found: expected 64 hex characters (generate one with `openssl rand -hex 32`)",
            ),
            KeyError::WrongLength { line, found } => write!(
                f,
                "line {line}: key has {found} characters, expected exactly 64 hex characters (32 bytes)"
            ),
            KeyError::InvalidChar {
                line,
                column,
                character,
            } => write!(
                f,
                "line {line}, character {column}: {character:?} is not a hex digit (0-9, a-f, A-F)"
            ),
            KeyError::MultipleKeys { count } => write!(
                f,
                "found {count} keys where exactly one is expected; put rotation keys in a key list file instead"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyError {}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_hex_line(text: &str, line: usize) -> Result<Key, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    // Report the first non-hex character before the length: "character 17 is
    // 'x'" is a better hint than "63 characters" for a typo.
    for (i, ch) in text.chars().enumerate() {
        if !ch.is_ascii_hexdigit() {
            return Err(KeyError::InvalidChar {
                line,
                column: i + 1,
                character: ch,
            });
        }
    }
    if text.len() != 64 {
        return Err(KeyError::WrongLength {
            line,
            found: text.len(),
        });
    }
    let mut key = Key([0u8; 32]);
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        // Both digits were validated above.
        key.0[i] = (hex_val(pair[0]).unwrap_or(0) << 4) | hex_val(pair[1]).unwrap_or(0);
    }
    Ok(key)
}

fn key_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses a single-key file: exactly one key line; blank lines and `#`
/// comments are allowed around it.
pub fn parse_key_file(text: &str) -> Result<Key, KeyError> {
    let mut lines = key_lines(text);
    let (line, first) = lines.next().ok_or(KeyError::Empty)?;
    let extra = lines.count();
    if extra > 0 {
        return Err(KeyError::MultipleKeys { count: extra + 1 });
    }
    parse_hex_line(first, line)
}

/// Parses a key list (accepted keys during rotation): one key per line,
/// blank lines and `#` comments skipped, at least one key.
pub fn parse_key_list(text: &str) -> Result<Vec<Key>, KeyError> {
    let keys = key_lines(text)
        .map(|(line, l)| parse_hex_line(l, line))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(keys)
}

/// Why a sealed datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The Poly1305 tag did not verify (wrong key, tampering, or corruption).
    BadTag,
    /// Master-key layout: the decrypted frame's pid is not the cleartext pid.
    PidMismatch {
        /// pid in wire bytes 0..4.
        wire_pid: u32,
        /// pid inside the decrypted frame.
        frame_pid: u32,
    },
}

impl core::fmt::Display for AuthError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AuthError::BadTag => f.write_str("authentication tag did not verify"),
            AuthError::PidMismatch {
                wire_pid,
                frame_pid,
            } => write!(
                f,
                "sealed frame pid {frame_pid} does not match the cleartext agent pid {wire_pid}"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AuthError {}

fn hkdf_expand(salt: Option<&[u8]>, ikm: &[u8], info: &[&[u8]], out: &mut [u8]) {
    // Output lengths here (8 and 32) are far below HKDF's 255*32 limit, so
    // expand cannot fail.
    let expanded = Hkdf::<Sha256>::new(salt, ikm).expand_multi_info(info, out);
    debug_assert!(expanded.is_ok());
}

/// Per-agent key for master-key mode: HKDF-SHA256(master, info
/// `"varta-agent-v1\0" ‖ LE32(pid)`).
pub fn derive_agent_key(master: &Key, pid: u32) -> Key {
    let mut out = Key([0u8; 32]);
    hkdf_expand(
        None,
        &master.0,
        &[INFO_AGENT, &pid.to_le_bytes()],
        &mut out.0,
    );
    out
}

/// The 8-byte `iv_random` for prefix `index` of a session: HKDF-SHA256 with
/// the session salt as IKM, empty extract salt, info
/// `"varta-iv-prefix-v1\0" ‖ LE32(index)` (spec §2; pinned by the
/// `kdf_iv_prefix` conformance vector).
pub fn derive_iv_prefix(session_salt: &[u8; 16], index: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    hkdf_expand(
        None,
        session_salt,
        &[INFO_IV_PREFIX, &index.to_le_bytes()],
        &mut out,
    );
    out
}

/// Reserved epoch key: HKDF-SHA256(agent_key, info `"varta-epoch-v1\0" ‖ LE64(epoch)`).
pub fn derive_epoch_key(agent_key: &Key, epoch: u64) -> Key {
    let mut out = Key([0u8; 32]);
    hkdf_expand(
        None,
        &agent_key.0,
        &[INFO_EPOCH, &epoch.to_le_bytes()],
        &mut out.0,
    );
    out
}

fn seal_into(key: &Key, aad: &[u8], iv: &[u8], plaintext: &[u8; FRAME_LEN], out: &mut [u8]) {
    // out = iv[12] ‖ ct[32] ‖ tag[16]
    out[..12].copy_from_slice(iv);
    out[12..12 + FRAME_LEN].copy_from_slice(plaintext);
    let nonce = *Nonce::from_slice(iv);
    // Encryption only fails for inputs longer than the cipher's ~256 GiB limit.
    let tag = key
        .cipher()
        .encrypt_in_place_detached(&nonce, aad, &mut out[12..12 + FRAME_LEN])
        .unwrap_or_default();
    out[12 + FRAME_LEN..].copy_from_slice(&tag);
}

fn open_from(key: &Key, aad: &[u8], sealed: &[u8]) -> Result<[u8; FRAME_LEN], AuthError> {
    let nonce = *Nonce::from_slice(&sealed[..12]);
    let tag = *Tag::from_slice(&sealed[12 + FRAME_LEN..]);
    let mut buf = [0u8; FRAME_LEN];
    buf.copy_from_slice(&sealed[12..12 + FRAME_LEN]);
    match key
        .cipher()
        .decrypt_in_place_detached(&nonce, aad, &mut buf, &tag)
    {
        Ok(()) => Ok(buf),
        Err(_) => {
            buf.zeroize();
            Err(AuthError::BadTag)
        }
    }
}

fn iv(iv_random: [u8; 8], iv_counter: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&iv_random);
    iv[8..].copy_from_slice(&iv_counter.to_le_bytes());
    iv
}

/// Seals a plaintext frame under a shared key into the 60-byte layout.
/// The caller owns nonce discipline: `(key, iv_random, iv_counter)` must never
/// repeat.
pub fn seal_shared(
    key: &Key,
    iv_random: [u8; 8],
    iv_counter: u32,
    plaintext: &[u8; FRAME_LEN],
) -> [u8; SHARED_LEN] {
    let mut out = [0u8; SHARED_LEN];
    seal_into(key, &[], &iv(iv_random, iv_counter), plaintext, &mut out);
    out
}

/// Opens a 60-byte shared-key datagram. The result still needs
/// [`crate::Frame::decode`].
pub fn open_shared(key: &Key, sealed: &[u8; SHARED_LEN]) -> Result<[u8; FRAME_LEN], AuthError> {
    open_from(key, &[], sealed)
}

/// Seals under the agent key derived from `master` and `pid` into the 64-byte
/// layout; the cleartext pid is bound as associated data.
pub fn seal_master(
    master: &Key,
    pid: u32,
    iv_random: [u8; 8],
    iv_counter: u32,
    plaintext: &[u8; FRAME_LEN],
) -> [u8; MASTER_LEN] {
    seal_master_with_agent_key(
        &derive_agent_key(master, pid),
        pid,
        iv_random,
        iv_counter,
        plaintext,
    )
}

/// [`seal_master`] with the agent key already derived (a sender caches it
/// for its pid instead of running HKDF per beat).
pub fn seal_master_with_agent_key(
    agent_key: &Key,
    pid: u32,
    iv_random: [u8; 8],
    iv_counter: u32,
    plaintext: &[u8; FRAME_LEN],
) -> [u8; MASTER_LEN] {
    let mut out = [0u8; MASTER_LEN];
    let pid_bytes = pid.to_le_bytes();
    out[..4].copy_from_slice(&pid_bytes);
    seal_into(
        agent_key,
        &pid_bytes,
        &iv(iv_random, iv_counter),
        plaintext,
        &mut out[4..],
    );
    out
}

/// Opens a 64-byte master-key datagram: derives the agent key for the
/// cleartext pid, verifies the tag (pid as associated data), then checks the
/// decrypted frame carries the same pid. Returns `(pid, plaintext)`.
pub fn open_master(
    master: &Key,
    sealed: &[u8; MASTER_LEN],
) -> Result<(u32, [u8; FRAME_LEN]), AuthError> {
    let pid_bytes = [sealed[0], sealed[1], sealed[2], sealed[3]];
    let wire_pid = u32::from_le_bytes(pid_bytes);
    let agent = derive_agent_key(master, wire_pid);
    let plain = open_from(&agent, &pid_bytes, &sealed[4..])?;
    let frame_pid = u32::from_le_bytes([plain[4], plain[5], plain[6], plain[7]]);
    if frame_pid != wire_pid {
        return Err(AuthError::PidMismatch {
            wire_pid,
            frame_pid,
        });
    }
    Ok((wire_pid, plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, Status};
    use std::format;
    use std::string::ToString;

    const K: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn key_errors_name_problem_not_key() {
        let e = Key::from_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeXf")
            .unwrap_err();
        assert_eq!(
            e,
            KeyError::InvalidChar {
                line: 1,
                column: 63,
                character: 'X'
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("character 63"), "{msg}");
        assert!(!msg.contains("00112233"), "{msg}");
        assert_eq!(
            Key::from_hex(&K[..62]).unwrap_err(),
            KeyError::WrongLength { line: 1, found: 62 }
        );
        assert_eq!(Key::from_hex("  \n").unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = Key::from_hex(K).unwrap();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("01"), "{dbg}");
        assert_eq!(k.as_bytes()[31], 0x1f);
    }

    #[test]
    fn key_files() {
        let text = format!("# rotation list\n\n{K}\n  {}  \n", K.to_uppercase());
        assert_eq!(parse_key_list(&text).unwrap().len(), 2);
        assert_eq!(
            parse_key_file(&text).unwrap_err(),
            KeyError::MultipleKeys { count: 2 }
        );
        assert!(parse_key_file(&format!("\n{K}\n")).is_ok());
        assert_eq!(parse_key_list("# nothing\n").unwrap_err(), KeyError::Empty);
        let bad = format!("{K}\nzz\n");
        assert_eq!(
            parse_key_list(&bad).unwrap_err(),
            KeyError::InvalidChar {
                line: 2,
                column: 1,
                character: 'z'
            }
        );
    }

    #[test]
    fn master_rejects_pid_swap() {
        let master = Key::from_hex(K).unwrap();
        // Sealed honestly for pid 7 but carrying a frame that claims pid 8.
        let frame = Frame::new(Status::Ok, 8, 1, 1, 0).to_bytes();
        let sealed = seal_master(&master, 7, [1; 8], 0, &frame);
        assert_eq!(
            open_master(&master, &sealed),
            Err(AuthError::PidMismatch {
                wire_pid: 7,
                frame_pid: 8
            })
        );
        // Rewriting the cleartext pid breaks the tag (it is the AAD).
        let mut forged = seal_master(&master, 8, [1; 8], 0, &frame);
        forged[0] = 9;
        assert_eq!(open_master(&master, &forged), Err(AuthError::BadTag));
    }
}
