//! Object keys as S3 Inventory writes them, and as the rest of the program holds them.
//!
//! Inventory CSV files URL-encode keys form-style: a space is `+`, a literal `+` is `%2B`.
//! So `+` must become a space *before* `%XX` escapes are decoded, or `%2B` would turn into
//! a space too. Keys are UTF-8 in S3; anything else is reported, never guessed at.

use std::fmt;

/// Why a raw inventory key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("bad percent escape at byte {0}")]
    BadEscape(usize),
    #[error("decoded key is not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("empty key")]
    Empty,
}

/// Decodes a form-encoded inventory key into `out` (cleared first), reusing its buffer.
///
/// A `%` not followed by two hex digits is an error rather than kept literally: AWS always
/// escapes `%` itself, so a lone one means the field is not what we think it is.
pub fn decode_form_key_into(raw: &[u8], out: &mut String) -> Result<(), KeyError> {
    out.clear();
    if raw.is_empty() {
        return Err(KeyError::Empty);
    }
    // Fast path: most keys (Zarr chunks, NWB paths) need no decoding at all.
    if !raw.iter().any(|&b| b == b'+' || b == b'%') {
        let s = std::str::from_utf8(raw).map_err(|e| KeyError::NotUtf8(e.valid_up_to()))?;
        out.push_str(s);
        return Ok(());
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&b| hex_value(b));
                let lo = raw.get(i + 2).and_then(|&b| hex_value(b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
                    _ => return Err(KeyError::BadEscape(i)),
                }
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    let s =
        String::from_utf8(bytes).map_err(|e| KeyError::NotUtf8(e.utf8_error().valid_up_to()))?;
    out.push_str(&s);
    Ok(())
}

/// Decodes a form-encoded inventory key.
pub fn decode_form_key(raw: &[u8]) -> Result<String, KeyError> {
    let mut out = String::new();
    decode_form_key_into(raw, &mut out)?;
    Ok(out)
}

/// Encodes a key the way S3 Inventory does (used by tests and the fixture tools): unreserved
/// characters and `/` stay, a space becomes `+`, every other byte becomes `%XX`.
pub fn encode_form_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Shows raw inventory bytes for an error message: printable ASCII as is, the rest escaped,
/// and cut at a length that keeps a terminal readable.
pub struct RawBytes<'a>(pub &'a [u8]);

impl fmt::Display for RawBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LIMIT: usize = 400;
        for &b in self.0.iter().take(LIMIT) {
            if (0x20..0x7f).contains(&b) {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.0.len() > LIMIT {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plus_is_space_and_escaped_plus_is_plus() {
        assert_eq!(decode_form_key(b"a+b%2Bc%3Dd").unwrap(), "a b+c=d");
        assert_eq!(decode_form_key(b"%E2%82%AC+x").unwrap(), "\u{20ac} x");
        assert_eq!(decode_form_key(b"zarr/0/0/1").unwrap(), "zarr/0/0/1");
    }

    #[test]
    fn rejects_bad_escapes_and_invalid_utf8() {
        assert_eq!(decode_form_key(b"a%2"), Err(KeyError::BadEscape(1)));
        assert_eq!(decode_form_key(b"a%zz"), Err(KeyError::BadEscape(1)));
        assert_eq!(decode_form_key(b"ab%FF"), Err(KeyError::NotUtf8(2)));
        assert_eq!(decode_form_key(b"\xff"), Err(KeyError::NotUtf8(0)));
        assert_eq!(decode_form_key(b""), Err(KeyError::Empty));
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(key in "\\PC{1,40}") {
            prop_assert_eq!(decode_form_key(encode_form_key(&key).as_bytes()).unwrap(), key);
        }

        #[test]
        fn decoding_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..60)) {
            let _ = decode_form_key(&raw);
        }
    }
}
