//! Synthetic inventories for tests and benchmarks: rows that look like a real archive's
//! (Zarr chunk keys, NWB files with awkward names, ~3 versions per key, delete markers,
//! random 32-character version ids and MD5 ETags), written in AWS's exact CSV.gz format with
//! a manifest and checksum. Deterministic for a seed.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use md5::{Digest, Md5};
use rayon::prelude::*;

use crate::inventory::hex;
use crate::model::etag::ETag;
use crate::model::key::encode_form_key;
use crate::model::record::{Flags, StorageClass, VersionRecord};
use crate::model::timestamp::Timestamp;

/// SplitMix64: tiny, fast, and good enough to make test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Approximate number of rows (versions and delete markers).
    pub rows: u64,
    pub files: usize,
    /// Rows shuffled within and across files; otherwise each file holds a contiguous,
    /// key-sorted range (as AWS writes them).
    pub shuffle: bool,
    pub seed: u64,
    pub source_bucket: String,
    pub date: String,
}

const VID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";

/// The rows of a synthetic bucket in AWS order: sorted by key, a key's versions newest first.
pub fn generate(spec: &SynthSpec) -> Vec<VersionRecord> {
    let mut rng = Rng::new(spec.seed);
    let keys_wanted = (spec.rows / 3).max(1);
    let mut keys = Vec::with_capacity(keys_wanted as usize + 16);
    let per_store = 10_000u64;
    let stores = keys_wanted.div_ceil(per_store);
    for _ in 0..stores {
        let store = format!(
            "zarr/{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            rng.next_u64() as u32,
            rng.below(1 << 16),
            rng.below(1 << 12),
            rng.below(1 << 16),
            rng.below(1 << 48)
        );
        let n = per_store.min(keys_wanted - keys.len() as u64);
        for i in 0..n {
            keys.push(format!(
                "{store}/0/{}/{}/{}/{}",
                i / 1000,
                i / 100 % 10,
                i / 10 % 10,
                i % 10
            ));
        }
        keys.push(format!("{store}/.zattrs"));
        // A few keys that need form encoding.
        keys.push(format!(
            "sub-{:04}/sub-{:04}_ses 1+ü obj-{:x}.nwb",
            rng.below(1000),
            rng.below(1000),
            rng.below(1 << 20)
        ));
    }
    keys.sort();
    keys.dedup();
    let mut rows = Vec::with_capacity(keys.len() * 3);
    for key in keys {
        let versions = 1 + rng.below(5);
        let mut mtime = 1_600_000_000_000i64 + rng.below(100_000_000_000) as i64;
        let mut chain = Vec::with_capacity(versions as usize);
        for v in 0..versions {
            let mut vid = String::with_capacity(32);
            for _ in 0..32 {
                vid.push(VID_CHARS[rng.below(VID_CHARS.len() as u64) as usize] as char);
            }
            let latest = v + 1 == versions;
            let delete_marker = latest && versions > 1 && rng.below(20) == 0;
            let mut md5 = [0u8; 16];
            md5[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            md5[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            let parts = if rng.below(50) == 0 {
                1 + rng.below(100) as u32
            } else {
                0
            };
            let mut flags = Flags::default();
            flags.set(Flags::LATEST, latest);
            flags.set(Flags::DELETE_MARKER, delete_marker);
            flags.set(Flags::MULTIPART, !delete_marker && parts > 0);
            flags.set(Flags::ETAG_IS_MD5, !delete_marker);
            chain.push(VersionRecord {
                key: key.clone(),
                version_id: vid,
                last_modified: Timestamp(mtime),
                size: if delete_marker {
                    0
                } else {
                    500 + rng.below(2_000_000)
                },
                etag: (!delete_marker).then_some(ETag { md5, parts }),
                flags,
                storage_class: if delete_marker {
                    StorageClass::NONE
                } else {
                    StorageClass(1)
                },
                local: Default::default(),
            });
            mtime += 1 + rng.below(10_000_000_000) as i64;
        }
        rows.extend(chain.into_iter().rev());
    }
    rows
}

pub const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, EncryptionStatus";

/// One row as AWS writes it (every field quoted, key form-encoded).
pub fn csv_line(bucket: &str, r: &VersionRecord, out: &mut String) {
    let dm = r.is_delete_marker();
    let b = |v: bool| if v { "true" } else { "false" };
    let _ = write!(
        out,
        "\"{bucket}\",\"{}\",\"{}\",\"{}\",\"{}\",",
        encode_form_key(&r.key),
        r.version_id,
        b(r.is_latest()),
        b(dm)
    );
    if dm {
        let _ = writeln!(out, "\"\",\"{}\",\"\",\"\",\"\",\"\"", r.last_modified);
    } else {
        let etag = r.etag.map(|e| e.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "\"{}\",\"{}\",\"{etag}\",\"{}\",\"{}\",\"SSE-S3\"",
            r.size,
            r.last_modified,
            r.storage_class.name(),
            b(r.is_multipart())
        );
    }
}

/// Writes `rows` as an inventory for `spec.date` under `dir` (dir is the inventory root).
/// Returns the total compressed size of the data files.
pub fn write_inventory(dir: &Path, spec: &SynthSpec, rows: &[VersionRecord]) -> Result<u64> {
    let files = spec.files.max(1);
    let mut order: Vec<u32> = (0..rows.len() as u32).collect();
    let mut rng = Rng::new(spec.seed.wrapping_add(1));
    if spec.shuffle {
        rng.shuffle(&mut order);
    }
    let chunks: Vec<&[u32]> = (0..files)
        .map(|i| &order[i * order.len() / files..(i + 1) * order.len() / files])
        .collect();
    let names: Vec<String> = (0..files)
        .map(|_| format!("{:016x}{:016x}.csv.gz", rng.next_u64(), rng.next_u64()))
        .collect();
    std::fs::create_dir_all(dir.join("data"))?;
    let entries = chunks
        .par_iter()
        .zip(names.par_iter())
        .map(|(chunk, name)| -> Result<(String, u64, String)> {
            let path = dir.join("data").join(name);
            let file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut gz = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(file),
                flate2::Compression::default(),
            );
            let mut line = String::new();
            for &i in chunk.iter() {
                line.clear();
                csv_line(&spec.source_bucket, &rows[i as usize], &mut line);
                gz.write_all(line.as_bytes())?;
            }
            gz.finish()?.flush()?;
            let bytes = std::fs::read(&path)?;
            Ok((
                format!("synthetic/{}/all/data/{name}", spec.source_bucket),
                bytes.len() as u64,
                hex(&Md5::digest(&bytes)),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let total = entries.iter().map(|e| e.1).sum();
    let files_json: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(key, size, md5)| serde_json::json!({"key": key, "size": size, "MD5checksum": md5}))
        .collect();
    let manifest = serde_json::json!({
        "sourceBucket": spec.source_bucket,
        "destinationBucket": "arn:aws:s3:::synthetic-inventory",
        "version": "2016-11-30",
        "creationTimestamp": "1730854800000",
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": files_json,
    });
    let body = serde_json::to_vec_pretty(&manifest)?;
    let date_dir = dir.join(&spec.date);
    std::fs::create_dir_all(&date_dir)?;
    std::fs::write(date_dir.join("manifest.json"), &body)?;
    std::fs::write(
        date_dir.join("manifest.checksum"),
        format!("{}\n", hex(&Md5::digest(&body))),
    )?;
    Ok(total)
}
