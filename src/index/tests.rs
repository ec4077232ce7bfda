//! Index round trips: everything written is read back identically, seeks find exactly the
//! records a scan would, and corruption is reported.

use proptest::prelude::*;

use super::*;
use crate::model::etag::ETag;
use crate::model::record::{Flags, StorageClass, VersionRecord};
use crate::model::timestamp::Timestamp;

fn record(key: &str, vid: &str, mtime: i64) -> VersionRecord {
    VersionRecord {
        key: key.into(),
        version_id: vid.into(),
        last_modified: Timestamp(mtime),
        size: mtime as u64 % 1000,
        etag: Some(ETag {
            md5: [mtime as u8; 16],
            parts: 0,
        }),
        flags: Flags(Flags::LATEST | Flags::ETAG_IS_MD5),
        storage_class: StorageClass(1),
        local: Default::default(),
    }
}

fn write_index(records: &[VersionRecord]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.s3inv");
    let meta = IndexMeta {
        kind: "inventory".into(),
        source_bucket: "b".into(),
        date: "2024-01-01T00-00Z".into(),
        ..Default::default()
    };
    let mut w = IndexWriter::create(&path, &meta).unwrap();
    for r in records {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    (dir, path)
}

fn sorted_unique(mut recs: Vec<VersionRecord>) -> Vec<VersionRecord> {
    recs.sort_by(|a, b| a.cmp_order(b));
    recs.dedup_by(|a, b| a.cmp_order(b).is_eq());
    recs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_and_prefix_seek(
        keys in proptest::collection::vec("[ab/é]{1,6}", 1..40),
        n in 0usize..3000,
        prefix in "[ab/é]{0,3}",
    ) {
        // Enough records for several blocks: long shared keys make blocks hold many.
        let recs: Vec<_> = (0..n).map(|i| {
            let k = format!("zarr/{}/{:05}", keys[i % keys.len()], i / 7);
            record(&k, &format!("v{i}"), (i * 7919 % 1000) as i64)
        }).collect();
        let recs = sorted_unique(recs);
        let (_dir, path) = write_index(&recs);
        let reader = IndexReader::open(&path).unwrap();
        let back: Vec<_> = reader.stream().collect::<anyhow::Result<_>>().unwrap();
        prop_assert_eq!(&back, &recs);
        prop_assert_eq!(reader.stats().records, recs.len() as u64);
        let p = format!("zarr/{prefix}");
        let seek: Vec<_> = reader.stream_prefix(&p).collect::<anyhow::Result<_>>().unwrap();
        let scan: Vec<_> = recs.iter().filter(|r| r.key.starts_with(&p)).cloned().collect();
        prop_assert_eq!(seek, scan);
    }
}

#[test]
fn refuses_out_of_order_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexWriter::create(&dir.path().join("x"), &IndexMeta::default()).unwrap();
    w.push(&record("b", "1", 1)).unwrap();
    assert!(w.push(&record("a", "1", 1)).is_err());
}

#[test]
fn corrupted_block_is_reported() {
    let recs: Vec<_> = (0..5000)
        .map(|i| record(&format!("k/{i:06}"), "v", i))
        .collect();
    let (_dir, path) = write_index(&recs);
    let reader = IndexReader::open(&path).unwrap();
    assert!(reader.blocks().len() > 2);
    let target = reader.blocks()[1].offset + 10;
    drop(reader);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[target as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let reader = IndexReader::open(&path).unwrap();
    let err = reader
        .stream()
        .find_map(|r| r.err())
        .expect("corruption must surface");
    let msg = format!("{err:#}");
    assert!(msg.contains("block 1") && msg.contains("checksum"), "{msg}");
}

#[test]
fn truncated_index_is_reported() {
    let recs: Vec<_> = (0..100)
        .map(|i| record(&format!("k/{i:06}"), "v", i))
        .collect();
    let (_dir, path) = write_index(&recs);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let msg = format!("{:#}", IndexReader::open(&path).err().unwrap());
    assert!(msg.contains("trailer"), "{msg}");
}

/// Found by the index_reader fuzz target: a damaged header length made `open` allocate
/// whatever the length said (4 GiB) before noticing anything.
#[test]
fn a_damaged_header_length_is_an_error_not_an_allocation() {
    let (_dir, path) = write_index(&[record("a", "1", 1)]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12..16].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = IndexReader::open(&path).err().expect("must fail");
    assert!(
        format!("{err:#}").contains("header length exceeds the file"),
        "{err:#}"
    );
}
