//! The merge-join and the change classification against a naive in-memory diff (hash maps
//! keyed by (key, version id)), over random version sets written to real index files.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use s3invbackup::diff::changes::{ChangeKind, classify};
use s3invbackup::index::merge::MergeJoin;
use s3invbackup::index::{IndexMeta, IndexReader, IndexWriter};
use s3invbackup::model::etag::ETag;
use s3invbackup::model::record::{Flags, StorageClass, VersionRecord};
use s3invbackup::model::timestamp::Timestamp;

/// Keys that are prefixes of one another, and ones that sort between them.
const KEYS: [&str; 7] = ["a", "a/b", "a/b/c", "ab", "a b", "b", "é"];

fn arb_version() -> impl Strategy<Value = VersionRecord> {
    (
        0..KEYS.len(),
        prop_oneof![Just(String::new()), "[A-Za-z0-9._]{4}"],
        0i64..4,
        0u64..3,
        any::<bool>(),
        any::<bool>(),
        1u8..3,
    )
        .prop_map(|(k, vid, mtime, size, latest, dm, class)| {
            let mut flags = Flags::default();
            flags.set(Flags::LATEST, latest);
            flags.set(Flags::DELETE_MARKER, dm);
            VersionRecord {
                key: KEYS[k].to_string(),
                version_id: vid,
                last_modified: Timestamp(mtime * 1000),
                size: if dm { 0 } else { size },
                etag: (!dm).then_some(ETag {
                    md5: [size as u8; 16],
                    parts: 0,
                }),
                flags,
                storage_class: if dm {
                    StorageClass::NONE
                } else {
                    StorageClass(class)
                },
                local: Default::default(),
            }
        })
}

/// A listing: at most one record per (key, version id), as in any real inventory.
fn listing(v: Vec<VersionRecord>) -> Vec<VersionRecord> {
    let mut by_id: BTreeMap<(String, String), VersionRecord> = BTreeMap::new();
    for r in v {
        by_id
            .entry((r.key.clone(), r.version_id.clone()))
            .or_insert(r);
    }
    let mut out: Vec<_> = by_id.into_values().collect();
    out.sort_by(|a, b| a.cmp_order(b));
    out
}

type Seen = BTreeSet<(String, String, &'static str)>;

fn naive(a: &[VersionRecord], b: &[VersionRecord]) -> Seen {
    let am: BTreeMap<_, _> = a
        .iter()
        .map(|r| ((r.key.clone(), r.version_id.clone()), r))
        .collect();
    let bm: BTreeMap<_, _> = b
        .iter()
        .map(|r| ((r.key.clone(), r.version_id.clone()), r))
        .collect();
    let mut out = Seen::new();
    let added = |r: &VersionRecord| {
        if r.is_delete_marker() {
            "added-delete-marker"
        } else {
            "added"
        }
    };
    for (id, new) in &bm {
        let entry = |kind| (id.0.clone(), id.1.clone(), kind);
        match am.get(id) {
            None => {
                out.insert(entry(added(new)));
            }
            Some(old) => {
                let same = old.size == new.size
                    && old.etag == new.etag
                    && old.last_modified == new.last_modified
                    && old.is_delete_marker() == new.is_delete_marker();
                if !same && id.1.is_empty() {
                    out.insert(entry(added(new)));
                    out.insert(entry("removed"));
                } else if !same {
                    out.insert(entry("anomaly"));
                } else {
                    if old.is_latest() && !new.is_latest() {
                        out.insert(entry("now-noncurrent"));
                    }
                    if !old.is_latest() && new.is_latest() {
                        out.insert(entry("now-current"));
                    }
                    if old.storage_class != new.storage_class {
                        out.insert(entry("metadata-changed"));
                    }
                }
            }
        }
    }
    for id in am.keys().filter(|id| !bm.contains_key(*id)) {
        out.insert((id.0.clone(), id.1.clone(), "removed"));
    }
    out
}

fn write(dir: &std::path::Path, name: &str, recs: &[VersionRecord]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut w = IndexWriter::create(&path, &IndexMeta::default()).unwrap();
    for r in recs {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    path
}

fn joined(a: &[VersionRecord], b: &[VersionRecord]) -> (Seen, usize) {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (write(dir.path(), "a", a), write(dir.path(), "b", b));
    let (ra, rb) = (
        IndexReader::open(&pa).unwrap(),
        IndexReader::open(&pb).unwrap(),
    );
    let mut join = MergeJoin::new(ra.stream(), rb.stream()).unwrap();
    let mut seen = Seen::new();
    let mut count = 0;
    let mut last_key: Option<String> = None;
    while let Some(group) = join.next_group().unwrap() {
        assert!(!group.a().is_empty() || !group.b().is_empty());
        assert!(
            group
                .a()
                .iter()
                .chain(group.b())
                .all(|r| r.key == group.key)
        );
        if let Some(k) = &last_key {
            assert!(k.as_bytes() < group.key.as_bytes(), "keys out of order");
        }
        last_key = Some(group.key.clone());
        classify(group, |c| {
            count += 1;
            seen.insert((
                c.version.key.clone(),
                c.version.version_id.clone(),
                c.kind.name(),
            ));
        });
    }
    (seen, count)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn merge_join_matches_the_naive_diff(
        a in proptest::collection::vec(arb_version(), 0..30),
        b_new in proptest::collection::vec(arb_version(), 0..30),
        keep in proptest::collection::vec(0u8..6, 30),
    ) {
        let a = listing(a);
        // B keeps, changes or drops each of A's versions, then adds its own.
        let mut b: Vec<VersionRecord> = Vec::new();
        for (r, k) in a.iter().zip(keep.iter().cycle()) {
            let mut r = r.clone();
            match k {
                0 => continue,
                1 => r.flags.set(Flags::LATEST, !r.is_latest()),
                2 if !r.is_delete_marker() => r.storage_class = StorageClass(3),
                3 => r.size += 1,
                _ => {}
            }
            b.push(r);
        }
        b.extend(b_new);
        let b = listing(b);
        let expected = naive(&a, &b);
        let (actual, count) = joined(&a, &b);
        prop_assert_eq!(count, actual.len(), "a change was reported twice");
        prop_assert_eq!(actual, expected);
    }

    #[test]
    fn identical_listings_have_no_changes(a in proptest::collection::vec(arb_version(), 0..40)) {
        let a = listing(a);
        prop_assert_eq!(joined(&a, &a).1, 0);
    }
}

#[test]
fn empty_and_disjoint_indexes() {
    let v = |key: &str, vid: &str| VersionRecord {
        key: key.into(),
        version_id: vid.into(),
        last_modified: Timestamp(1),
        size: 1,
        etag: Some(ETag {
            md5: [1; 16],
            parts: 0,
        }),
        flags: Flags(Flags::LATEST),
        storage_class: StorageClass(1),
        local: Default::default(),
    };
    let a = vec![v("a", "1"), v("c", "1")];
    let b = vec![v("b", "1"), v("d", "2")];
    assert_eq!(joined(&[], &[]).1, 0);
    let (all_added, _) = joined(&[], &b);
    assert!(all_added.iter().all(|c| c.2 == "added") && all_added.len() == 2);
    let (all_removed, _) = joined(&a, &[]);
    assert!(all_removed.iter().all(|c| c.2 == "removed") && all_removed.len() == 2);
    let (mixed, _) = joined(&a, &b);
    assert_eq!(mixed.len(), 4);
    let _ = ChangeKind::ALL;
}
