//! The hash chain: one link per record, plain SHA-256 (0.2.0-compatible) or
//! HMAC-SHA256 with an operator key.

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret_file::{
    decode_hex_32, hex_val, read_secret_file, strip_line_end, SecretFileError,
};

/// Raw 32-byte chain value of one record.
pub type ChainHash = [u8; 32];

/// The chain value the very first record of a fresh file is linked to.
pub const ZERO_CHAIN: ChainHash = [0u8; 32];

/// Domain-separation tag hashed in front of every link (schema v2).
pub const DOMAIN: &[u8] = b"VARTA-AUDIT-v2";

/// How links are computed.
///
/// `Plain` is what varta-watch 0.2.0 wrote: anyone can recompute it, so it
/// detects accidents and naive edits but not a careful forger. `Hmac` keys
/// the same construction; without the key a forged file cannot be re-chained.
#[derive(Clone)]
pub enum ChainKey {
    /// `SHA-256(DOMAIN 0 kind 0 prev 0 body)`.
    Plain,
    /// `HMAC-SHA256(key, DOMAIN 0 kind 0 prev 0 body)`.
    Hmac(Zeroizing<[u8; 32]>),
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, not even in debug logs.
        match self {
            ChainKey::Plain => f.write_str("Plain"),
            ChainKey::Hmac(_) => f.write_str("Hmac(<redacted>)"),
        }
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file failed the secret-file checks or could not be read.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// The content is not 64 hex characters.
    #[error("{}: {reason}; the key file must hold exactly 64 hex characters (32 bytes), e.g. from `varta keygen` or `head -c32 /dev/urandom | xxd -p -c64`", .path.display())]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong with the content.
        reason: String,
    },
}

impl ChainKey {
    /// Parses a key written as 64 hex characters with an optional trailing
    /// newline (`\n` or `\r\n`). Returns a human-readable reason on failure.
    pub fn from_hex(text: &[u8]) -> Result<ChainKey, String> {
        let t = strip_line_end(text);
        if t.len() != 64 {
            return Err(format!("found {} characters instead of 64", t.len()));
        }
        match decode_hex_32(t) {
            Some(key) => Ok(ChainKey::Hmac(Zeroizing::new(key))),
            None => {
                let at = t.iter().position(|&c| hex_val(c).is_none()).unwrap_or(0);
                Err(format!("non-hex character at position {}", at + 1))
            }
        }
    }

    /// Reads a key file (secret-file rules: regular file we own, mode ≤ 0600,
    /// not a symlink) holding 64 hex characters.
    pub fn from_key_file(path: &Path) -> Result<ChainKey, KeyFileError> {
        let bytes = read_secret_file(path)?;
        ChainKey::from_hex(&bytes).map_err(|reason| KeyFileError::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// True for [`ChainKey::Hmac`].
    pub fn is_keyed(&self) -> bool {
        matches!(self, ChainKey::Hmac(_))
    }

    /// Human name of the mode, for messages.
    pub fn mode_name(&self) -> &'static str {
        match self {
            ChainKey::Plain => "plain SHA-256",
            ChainKey::Hmac(_) => "HMAC-SHA256",
        }
    }

    /// The chain value of a record of `kind` whose line up to the chain
    /// column is `body`, following a record whose chain was `prev`.
    pub fn next(&self, prev: &ChainHash, kind: &str, body: &[u8]) -> ChainHash {
        // The four segments are 0x00-separated so distinct (kind, body)
        // pairs can never collapse to the same hashed bytes.
        let parts: [&[u8]; 7] = [DOMAIN, &[0], kind.as_bytes(), &[0], prev, &[0], body];
        match self {
            ChainKey::Plain => {
                let mut h = Sha256::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().into()
            }
            ChainKey::Hmac(key) => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key[..])
                    .expect("HMAC accepts keys of any length");
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().into()
            }
        }
    }
}

/// Lowercase hex of a chain value (the file's `chain`/`prev_chain` columns).
pub fn to_hex(h: &ChainHash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in h {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses a chain column: exactly 64 *lowercase* hex characters (the only
/// spelling the writer produces, so any other spelling is an edit).
pub fn parse_hex(s: &str) -> Option<ChainHash> {
    let b = s.as_bytes();
    if b.iter().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    decode_hex_32(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 0.2.0 construction, recomputed by hand so the test is its own
    /// oracle, against the first record of a file the original wrote
    /// (tests/data/original-0.2.0.tsv).
    #[test]
    fn plain_matches_original_first_record() {
        let body = b"1\t1796044681582\t0\tboot\t11419\t-\tfresh";
        let got = ChainKey::Plain.next(&ZERO_CHAIN, "boot", body);
        assert_eq!(
            to_hex(&got),
            "95b536f385f8f9a1b4130a7180b7c9425a46f42f7392906c034bf9c2563d5bd6"
        );
    }

    #[test]
    fn hmac_differs_from_plain_and_depends_on_key() {
        let k1 = ChainKey::from_hex(&[b'1'; 64]).unwrap();
        let k2 = ChainKey::from_hex(&[b'2'; 64]).unwrap();
        let a = ChainKey::Plain.next(&ZERO_CHAIN, "spawn", b"x");
        let b = k1.next(&ZERO_CHAIN, "spawn", b"x");
        let c = k2.next(&ZERO_CHAIN, "spawn", b"x");
        assert_ne!(a, b);
        assert_ne!(b, c);
        // RFC 4231-style independent check: HMAC over the concatenation.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&[0x11; 32]).unwrap();
        m.update(b"VARTA-AUDIT-v2\0spawn\0");
        m.update(&[0u8; 32]);
        m.update(b"\0x");
        assert_eq!(b, <[u8; 32]>::from(m.finalize().into_bytes()));
    }

    #[test]
    fn key_hex_parsing() {
        let good = [b'a'; 64];
        assert!(ChainKey::from_hex(&good).is_ok());
        let mut nl = good.to_vec();
        nl.push(b'\n');
        assert!(ChainKey::from_hex(&nl).is_ok());
        nl.extend_from_slice(b"\n");
        assert!(ChainKey::from_hex(&nl).unwrap_err().contains("65"));
        let mut bad = good;
        bad[10] = b'g';
        assert!(ChainKey::from_hex(&bad)
            .unwrap_err()
            .contains("position 11"));
        assert!(ChainKey::from_hex(&good[..63]).is_err());
        assert_eq!(
            format!("{:?}", ChainKey::from_hex(&good).unwrap()),
            "Hmac(<redacted>)"
        );
    }

    #[test]
    fn hex_round_trip_and_strictness() {
        let h: ChainHash = core::array::from_fn(|i| (i * 37) as u8);
        let s = to_hex(&h);
        assert_eq!(parse_hex(&s), Some(h));
        assert_eq!(parse_hex(&s.to_uppercase()), None);
        assert_eq!(parse_hex(&s[..62]), None);
        assert_eq!(parse_hex("-"), None);
    }
}
