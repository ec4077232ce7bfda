//! Writes a one-date inventory listing two big objects whose bytes are all zeros: one
//! uploaded in one part (ETag = MD5) and one multipart (16 MiB parts, ETag = MD5 of the
//! part MD5s). `seed_backup` then places them as sparse files, which are exactly those
//! bytes: a backup holding 2 x SIZE of verifiable content in no disk space, for measuring
//! `fsck --verify-content`'s memory (scripts/bench/bench-fsck-memory.sh).
//!
//!     cargo run --release --example big_inventory -- DIR SIZE

use std::path::PathBuf;

use anyhow::Result;
use md5::Digest as _;

use s3invbackup::inventory::synth::{SynthSpec, write_inventory};
use s3invbackup::model::etag::ETag;
use s3invbackup::model::record::{Flags, StorageClass, VersionRecord};
use s3invbackup::model::timestamp::Timestamp;

const PART: u64 = 16 << 20;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, size] = args.as_slice() else {
        anyhow::bail!("usage: big_inventory DIR SIZE");
    };
    let size: u64 = size.parse()?;
    let zeros = vec![0u8; 1 << 20];
    let md5_of_zeros = |n: u64| {
        let mut h = md5::Md5::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            left -= k as u64;
        }
        h.finalize()
    };
    let whole = hex(&md5_of_zeros(size));
    let (full_parts, rest) = (size / PART, size % PART);
    let part = md5_of_zeros(PART);
    let mut of_parts = md5::Md5::new();
    for _ in 0..full_parts {
        of_parts.update(part);
    }
    if rest > 0 {
        of_parts.update(md5_of_zeros(rest));
    }
    let count = full_parts + u64::from(rest > 0);
    let multipart = format!("{}-{count}", hex(&of_parts.finalize()));
    let record = |key: &str, etag: &str, flags: u8| VersionRecord {
        key: key.into(),
        version_id: "BigZerosVersion0123456789abcdefg".into(),
        last_modified: Timestamp(1_730_800_000_000),
        size,
        etag: ETag::parse(etag.as_bytes()),
        flags: Flags(Flags::LATEST | Flags::ETAG_IS_MD5 | flags),
        storage_class: StorageClass::from_name(b"STANDARD").expect("a class"),
        local: Default::default(),
    };
    let rows = vec![
        record("big/multipart.bin", &multipart, Flags::MULTIPART),
        record("big/single.bin", &whole, 0),
    ];
    let spec = SynthSpec {
        rows: rows.len() as u64,
        files: 1,
        shuffle: false,
        seed: 1,
        source_bucket: "bench".into(),
        date: "2024-11-06T01-00Z".into(),
    };
    write_inventory(&PathBuf::from(dir), &spec, &rows)?;
    eprintln!("{dir}: big/single.bin ETag {whole}, big/multipart.bin ETag {multipart}");
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
