//! S3's additional checksums (CRC64NVME, CRC32, CRC32C, SHA1, SHA256), as S3 sends them with
//! `x-amz-checksum-mode: ENABLED`: base64 of the big-endian digest, `-N` after a composite
//! (multipart) one. A full-object CRC can be checked from ranges fetched in any order, by
//! combining their CRCs; a composite one is the checksum of the parts' checksums. They are
//! cheaper than MD5 and, unlike the ETag, mean the same thing under SSE-KMS.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crc_fast::CrcAlgorithm;
use sha1::Digest as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Crc64Nvme,
    Crc32c,
    Crc32,
    Sha256,
    Sha1,
}

impl Algorithm {
    /// Cheapest first: the one to use when S3 offers several.
    const PREFERENCE: [Algorithm; 5] = [
        Algorithm::Crc64Nvme,
        Algorithm::Crc32c,
        Algorithm::Crc32,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc32 => "CRC32",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha1 => "SHA1",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
        }
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Algorithm::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            Algorithm::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Algorithm::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            _ => None,
        }
    }

    fn width(self) -> usize {
        match self {
            Algorithm::Crc64Nvme => 8,
            Algorithm::Crc32c | Algorithm::Crc32 => 4,
            Algorithm::Sha256 => 32,
            Algorithm::Sha1 => 20,
        }
    }

    /// A CRC: ranges hashed apart can be combined into the whole's checksum.
    pub fn combinable(self) -> bool {
        self.crc().is_some()
    }
}

/// The checksum S3 says an object (or a part) has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub algorithm: Algorithm,
    /// The digest, raw.
    pub value: Vec<u8>,
    /// `Some(n)`: a composite checksum over `n` parts (the checksum of their checksums).
    pub parts: Option<u32>,
}

impl Expected {
    /// From response headers (`get` looks one up by lowercase name).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Expected> {
        let composite_type = get("x-amz-checksum-type").is_some_and(|t| t == "COMPOSITE");
        Algorithm::PREFERENCE.iter().find_map(|&algorithm| {
            let text = get(algorithm.header())?;
            let (b64, parts) = match text.rsplit_once('-') {
                Some((b64, n)) => (b64, Some(n.parse::<u32>().ok()?)),
                None => (text, None),
            };
            let value = B64.decode(b64).ok()?;
            if value.len() != algorithm.width() {
                return None;
            }
            // The `-N` suffix is what marks a composite value; the type header, when sent,
            // must agree.
            if composite_type && parts.is_none() {
                return None;
            }
            Some(Expected {
                algorithm,
                value,
                parts,
            })
        })
    }

    /// As S3 prints it: `CRC64NVME q+8F1t5YGYo=`.
    pub fn describe(&self) -> String {
        let mut text = format!("{} {}", self.algorithm.name(), B64.encode(&self.value));
        if let Some(n) = self.parts {
            text.push_str(&format!("-{n}"));
        }
        text
    }
}

/// A running checksum of bytes in order.
#[derive(Clone)]
pub enum Hasher {
    Crc(Algorithm, crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm.crc() {
            Some(crc) => Hasher::Crc(algorithm, crc_fast::Digest::new(crc)),
            None if algorithm == Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            None => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Crc(_, d) => d.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => sha2::Digest::update(h, bytes),
        }
    }

    /// The digest, big-endian, as S3 encodes it.
    pub fn finish(&self) -> Vec<u8> {
        match self {
            Hasher::Crc(a, d) => {
                let v = d.finalize();
                v.to_be_bytes()[8 - a.width()..].to_vec()
            }
            Hasher::Sha1(h) => h.clone().finalize().to_vec(),
            Hasher::Sha256(h) => sha2::Digest::finalize(h.clone()).to_vec(),
        }
    }
}

/// The checksum of a whole from the CRCs of its consecutive pieces `(crc, len)`, in order.
pub fn combine_crcs(algorithm: Algorithm, pieces: &[(Vec<u8>, u64)]) -> Option<Vec<u8>> {
    let crc = algorithm.crc()?;
    let as_u64 = |b: &[u8]| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let mut iter = pieces.iter();
    let (first, _) = iter.next()?;
    let mut acc = as_u64(first);
    for (value, len) in iter {
        acc = crc_fast::checksum_combine(crc, acc, as_u64(value), *len);
    }
    Some(acc.to_be_bytes()[8 - algorithm.width()..].to_vec())
}

/// A composite checksum: the checksum of the parts' checksums, concatenated.
pub fn composite(algorithm: Algorithm, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut h = Hasher::new(algorithm);
    for p in parts {
        h.update(p);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(a: Algorithm, bytes: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(a);
        h.update(bytes);
        h.finish()
    }

    /// Check values from the CRC catalogue (RevEng) and FIPS 180 for "123456789" / "abc".
    #[test]
    fn known_values() {
        assert_eq!(
            of(Algorithm::Crc32, b"123456789"),
            0xcbf43926u32.to_be_bytes()
        );
        assert_eq!(
            of(Algorithm::Crc32c, b"123456789"),
            0xe3069283u32.to_be_bytes()
        );
        assert_eq!(
            of(Algorithm::Crc64Nvme, b"123456789"),
            0xae8b14860a799888u64.to_be_bytes()
        );
        assert_eq!(
            B64.encode(of(Algorithm::Sha1, b"abc")),
            "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="
        );
        assert_eq!(
            B64.encode(of(Algorithm::Sha256, b"abc")),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn ranges_combine_into_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for a in [Algorithm::Crc64Nvme, Algorithm::Crc32, Algorithm::Crc32c] {
            let pieces: Vec<(Vec<u8>, u64)> = data
                .chunks(30_001)
                .map(|c| (of(a, c), c.len() as u64))
                .collect();
            assert_eq!(combine_crcs(a, &pieces).unwrap(), of(a, &data), "{a:?}");
        }
        assert!(combine_crcs(Algorithm::Sha256, &[]).is_none());
    }

    #[test]
    fn headers() {
        let h = |name: &str| match name {
            "x-amz-checksum-crc32" => Some("yZRlqg=="),
            "x-amz-checksum-crc64nvme" => Some("rosUhgp5mIg="),
            _ => None,
        };
        let e = Expected::from_headers(h).unwrap();
        assert_eq!(e.algorithm, Algorithm::Crc64Nvme);
        assert_eq!(e.value, 0xae8b14860a799888u64.to_be_bytes());
        assert_eq!(e.parts, None);
        let composite = |name: &str| match name {
            "x-amz-checksum-sha256" => Some("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=-3"),
            "x-amz-checksum-type" => Some("COMPOSITE"),
            _ => None,
        };
        let e = Expected::from_headers(composite).unwrap();
        assert_eq!((e.algorithm, e.parts), (Algorithm::Sha256, Some(3)));
        // Wrong length, not base64: ignored rather than trusted.
        assert!(
            Expected::from_headers(|n| (n == "x-amz-checksum-crc32").then_some("AAAA")).is_none()
        );
        assert!(
            Expected::from_headers(|n| (n == "x-amz-checksum-crc32").then_some("!!")).is_none()
        );
    }
}
