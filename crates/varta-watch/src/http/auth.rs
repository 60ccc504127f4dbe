//! Bearer-token check for `/metrics`: 32-byte token given as 64 hex
//! characters, compared in constant time.

use subtle::ConstantTimeEq;
use varta_audit::secret_file::decode_hex_32;
use zeroize::Zeroizing;

/// The token the server accepts.
pub struct Token(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Parses a token file's content: 64 hex characters, either case, with
    /// an optional trailing newline.
    pub fn from_file_text(text: &[u8]) -> Result<Token, String> {
        varta_config::parse_token(text).map(Token)
    }

    /// A token already parsed (by [`varta_config::read_token_file`]).
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Token {
        Token(bytes)
    }

    /// Whether an `Authorization` header value carries this token:
    /// scheme `Bearer` in any case, one or more spaces, 64 hex characters in
    /// any case. Every wrong value costs the same comparison.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else {
            return false;
        };
        let Some(space) = h.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, rest) = h.split_at(space);
        let given = rest.trim_ascii();
        let (candidate, well_formed) = match decode_hex_32(given) {
            Some(b) => (b, true),
            None => ([0u8; 32], false),
        };
        let ok: bool = candidate[..].ct_eq(&self.0[..]).into();
        // Non-short-circuiting `&`: every check is evaluated every time.
        ok & well_formed & scheme.eq_ignore_ascii_case(b"bearer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn scheme_and_hex_are_case_insensitive() {
        let t = Token::from_file_text(format!("{HEX}\n").as_bytes()).unwrap();
        assert!(t.accepts(Some(format!("Bearer {HEX}").as_bytes())));
        assert!(t.accepts(Some(format!("bearer {}", HEX.to_uppercase()).as_bytes())));
        assert!(t.accepts(Some(format!("BEARER   {HEX}").as_bytes())));
    }

    #[test]
    fn wrong_or_missing_values_are_refused() {
        let t = Token::from_file_text(HEX.as_bytes()).unwrap();
        assert!(!t.accepts(None));
        assert!(!t.accepts(Some(b"")));
        assert!(!t.accepts(Some(HEX.as_bytes())));
        assert!(!t.accepts(Some(format!("Basic {HEX}").as_bytes())));
        assert!(!t.accepts(Some(format!("Bearer {}", &HEX[..62]).as_bytes())));
        let mut other = HEX.to_string();
        other.replace_range(0..1, "1");
        assert!(!t.accepts(Some(format!("Bearer {other}").as_bytes())));
        // An all-zero guess must not match a non-zero token through the
        // fallback used for malformed input.
        assert!(!t.accepts(Some(b"Bearer zz")));
        let zero = Token::from_file_text("0".repeat(64).as_bytes()).unwrap();
        assert!(!zero.accepts(Some(format!("Bearer {}", "z".repeat(64)).as_bytes())));
    }

    #[test]
    fn token_file_errors_say_how_to_fix() {
        let e = Token::from_file_text(b"abc").unwrap_err();
        assert!(e.contains("openssl rand -hex 32"), "{e}");
        assert!(Token::from_file_text(format!("{HEX}\r\n").as_bytes()).is_ok());
        assert!(Token::from_file_text(format!("{HEX}\n\n").as_bytes()).is_err());
    }
}
