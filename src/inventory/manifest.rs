//! manifest.json, checked against manifest.checksum before a byte of it is believed.

use anyhow::{Context, Result, bail};
use md5::{Digest, Md5};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub source_bucket: String,
    /// An ARN (`arn:aws:s3:::bucket`); see [`Manifest::destination_bucket_name`].
    #[serde(default)]
    pub destination_bucket: String,
    #[serde(default)]
    pub version: String,
    /// Epoch milliseconds, as a string (as AWS writes it).
    #[serde(default)]
    pub creation_timestamp: String,
    pub file_format: String,
    #[serde(default)]
    pub file_schema: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestFile {
    pub key: String,
    pub size: u64,
    #[serde(rename = "MD5checksum")]
    pub md5_checksum: String,
}

impl Manifest {
    /// Parses `manifest` after checking its MD5 against `checksum` (hex, whitespace trimmed).
    /// `name` says where the files came from, for error messages.
    pub fn parse_verified(manifest: &[u8], checksum: &[u8], name: &str) -> Result<Manifest> {
        let expected = String::from_utf8_lossy(checksum)
            .trim()
            .to_ascii_lowercase();
        let actual = hex(&Md5::digest(manifest));
        if expected != actual {
            return Err(super::rows::Mismatch(format!(
                "{name}: MD5 mismatch against manifest.checksum: expected {expected}, actual {actual}"
            ))
            .into());
        }
        let manifest: Manifest = serde_json::from_slice(manifest)
            .with_context(|| format!("{name}: not a valid S3 Inventory manifest"))?;
        if super::Format::from_manifest(&manifest.file_format).is_none() {
            bail!(
                "{name}: unknown fileFormat {:?}; S3 Inventory writes CSV, ORC or Parquet",
                manifest.file_format
            );
        }
        for f in &manifest.files {
            if f.md5_checksum.len() != 32 || !f.md5_checksum.bytes().all(|b| b.is_ascii_hexdigit())
            {
                bail!(
                    "{name}: file {} has a malformed MD5checksum {:?}",
                    f.key,
                    f.md5_checksum
                );
            }
        }
        Ok(manifest)
    }

    pub fn destination_bucket_name(&self) -> &str {
        self.destination_bucket
            .strip_prefix("arn:aws:s3:::")
            .unwrap_or(&self.destination_bucket)
    }
}

/// Where a data file lives relative to the inventory root (the folder holding the dated
/// folders): `data/<name>`. Mapping by the `data/` component rather than by the full key
/// means an inventory copied elsewhere (another bucket, a local disk) still resolves.
pub fn data_file_path(key: &str) -> Result<String> {
    let rel = match key.rfind("/data/") {
        Some(i) => &key[i + 1..],
        None if key.starts_with("data/") => key,
        None => bail!("manifest lists data file {key:?}, which is not under a data/ folder"),
    };
    if rel.len() <= "data/".len() || rel.contains("/../") || rel.ends_with('/') {
        bail!("manifest lists an unusable data file key {key:?}");
    }
    Ok(rel.to_string())
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
  "sourceBucket" : "dandiarchive",
  "destinationBucket" : "arn:aws:s3:::dandiarchive",
  "version" : "2016-11-30",
  "creationTimestamp" : "1730854800000",
  "fileFormat" : "CSV",
  "fileSchema" : "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, IsMultipartUploaded",
  "files" : [ {
    "key" : "dandiarchive/dandiarchive/data/15a3a67a-6dec-44b6-9800-f8ddf5a44870.csv.gz",
    "size" : 169006021,
    "MD5checksum" : "bf6060d5dbf25c6443712b9846e812c2"
  } ]
}"#;

    #[test]
    fn parses_a_real_manifest() {
        let sum = hex(&Md5::digest(MANIFEST.as_bytes())) + "\n";
        let m = Manifest::parse_verified(MANIFEST.as_bytes(), sum.as_bytes(), "m").unwrap();
        assert_eq!(m.source_bucket, "dandiarchive");
        assert_eq!(m.destination_bucket_name(), "dandiarchive");
        assert_eq!(m.files[0].size, 169006021);
        assert_eq!(
            data_file_path(&m.files[0].key).unwrap(),
            "data/15a3a67a-6dec-44b6-9800-f8ddf5a44870.csv.gz"
        );
    }

    #[test]
    fn refuses_bad_checksums_and_formats() {
        let err = Manifest::parse_verified(
            MANIFEST.as_bytes(),
            b"00000000000000000000000000000000",
            "m",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("expected 00000000000000000000000000000000, actual"),
            "{err}"
        );
        for (format, ok) in [("ORC", true), ("Parquet", true), ("JSON", false)] {
            let m = MANIFEST.replace("\"CSV\"", &format!("{format:?}"));
            let sum = hex(&Md5::digest(m.as_bytes()));
            let result = Manifest::parse_verified(m.as_bytes(), sum.as_bytes(), "m");
            match result {
                Ok(m) => assert!(ok, "{format} accepted: {m:?}"),
                Err(e) => {
                    assert!(!ok, "{format}: {e}");
                    assert!(e.to_string().contains("unknown fileFormat \"JSON\""), "{e}");
                }
            }
        }
    }
}
