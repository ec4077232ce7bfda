//! ETags held as binary: 16 bytes of MD5 plus the part count of a multipart upload.
//!
//! Half the size of the hex text, and comparing two of them is a 20-byte compare. S3 ETags
//! are always 32 hex digits, optionally followed by `-N` for multipart uploads; anything else
//! is refused at the inventory edge instead of being carried along as an opaque string.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ETag {
    pub md5: [u8; 16],
    /// 0 for a single-part upload, N for `...-N`.
    pub parts: u32,
}

impl ETag {
    /// Parses `"hex"`, `hex` or `hex-N` (quotes as S3 sends them in headers are accepted).
    pub fn parse(s: &[u8]) -> Option<ETag> {
        let s = s
            .strip_prefix(b"\"")
            .and_then(|s| s.strip_suffix(b"\""))
            .unwrap_or(s);
        if s.len() < 32 {
            return None;
        }
        let (hex, rest) = s.split_at(32);
        let mut md5 = [0u8; 16];
        let mut bad = 0u8;
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
            bad |= (hi | lo) & 0xf0;
            md5[i] = hi << 4 | (lo & 0x0f);
        }
        if bad != 0 {
            return None;
        }
        let parts = match rest {
            [] => 0,
            [b'-', digits @ ..] if !digits.is_empty() && digits.len() <= 5 => {
                let mut n = 0u32;
                for &d in digits {
                    n = n * 10 + u32::from(hex_digit(d).filter(|&v| v < 10)?);
                }
                if n == 0 {
                    return None;
                }
                n
            }
            _ => return None,
        };
        Some(ETag { md5, parts })
    }

    pub fn is_multipart(&self) -> bool {
        self.parts > 0
    }
}

/// The S3 text form, without quotes: `627c47efe292876b91978324485cd2ec` or `...-12`.
impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.md5 {
            write!(f, "{b:02x}")?;
        }
        if self.parts > 0 {
            write!(f, "-{}", self.parts)?;
        }
        Ok(())
    }
}

/// Hex digit values, 0xff for anything else: one lookup per digit on a path that runs once
/// per inventory row.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[inline]
fn hex_digit(b: u8) -> Option<u8> {
    let v = HEX[usize::from(b)];
    (v != 0xff).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_single_and_multipart() {
        let e = ETag::parse(b"627c47efe292876b91978324485cd2ec").unwrap();
        assert_eq!(e.parts, 0);
        assert_eq!(e.to_string(), "627c47efe292876b91978324485cd2ec");
        let m = ETag::parse(b"\"b80965183800174acbfed42ed19781c2-2\"").unwrap();
        assert_eq!(m.parts, 2);
        assert_eq!(m.to_string(), "b80965183800174acbfed42ed19781c2-2");
    }

    #[test]
    fn rejects_non_etags() {
        for bad in [
            &b""[..],
            b"abc",
            b"627c47efe292876b91978324485cd2eg",
            b"627c47efe292876b91978324485cd2ec-",
            b"627c47efe292876b91978324485cd2ec-0",
            b"627c47efe292876b91978324485cd2ec-x",
            b"627c47efe292876b91978324485cd2ec0",
        ] {
            assert_eq!(ETag::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn round_trips(md5 in any::<[u8; 16]>(), parts in 0u32..10_001) {
            let e = ETag { md5, parts };
            prop_assert_eq!(ETag::parse(e.to_string().as_bytes()), Some(e));
        }
    }
}
