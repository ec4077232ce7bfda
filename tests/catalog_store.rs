//! The catalog as a base and deltas, against a model: a map from each version (key,
//! LastModified, version id) to its newest record. Random sequences of deltas, edits and
//! compactions must always read back as the model says, in index order, with the counts
//! the manifest keeps; and a backup from before deltas must read the same before and after
//! its upgrade.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use s3invbackup::Backup;
use s3invbackup::backup::catalog::{self, Catalog, store};
use s3invbackup::backup::{Config, FORMAT};
use s3invbackup::model::record::{Flags, Local, LocalState, VersionRecord};
use s3invbackup::model::timestamp::Timestamp;

type Id = (String, i64, String);

fn new_backup(dir: &Path) -> Backup {
    Backup::create(
        &dir.join("b"),
        Config {
            format: FORMAT,
            name_stem: "s3invbackup".into(),
            inventory: "/inv".into(),
            source_bucket: "bucket".into(),
            path_filter: None,
            file_mode: 0o644,
            naming: None,
            shards: None,
        },
    )
    .unwrap()
}

fn record(key: u8, version: u8, stamp: i64) -> VersionRecord {
    VersionRecord {
        key: format!("dir{}/k{key:02}", key % 3),
        version_id: format!("v{version}"),
        last_modified: Timestamp(1_700_000_000_000 + i64::from(version)),
        size: u64::from(key) * 10,
        flags: Flags(if version == 2 { Flags::LATEST } else { 0 }),
        local: Local {
            state: LocalState::Present,
            first_seen: Timestamp(stamp),
            ..Local::default()
        },
        ..VersionRecord::default()
    }
}

fn id(r: &VersionRecord) -> Id {
    (r.key.clone(), r.last_modified.0, r.version_id.clone())
}

fn read_all(catalog: &Catalog) -> Vec<VersionRecord> {
    let mut out = Vec::new();
    let mut s = catalog.stream();
    while let Some(r) = s.next_record().unwrap() {
        out.push(r.clone());
    }
    out
}

/// The model's records in index order, and its key count.
fn expected(model: &BTreeMap<Id, VersionRecord>) -> (Vec<VersionRecord>, u64) {
    let mut recs: Vec<VersionRecord> = model.values().cloned().collect();
    recs.sort_by(|a, b| a.cmp_order(b));
    let mut keys: Vec<&str> = recs.iter().map(|r| r.key.as_str()).collect();
    keys.dedup();
    let n = keys.len() as u64;
    (recs, n)
}

/// Writes `recs` (any order, distinct versions) as a delta file and commits it.
fn commit(backup: &Backup, model: &mut BTreeMap<Id, VersionRecord>, mut recs: Vec<VersionRecord>) {
    recs.sort_by(|a, b| a.cmp_order(b));
    recs.dedup_by(|a, b| a.cmp_order(b).is_eq());
    let path = backup.state_dir().join("delta.tmp");
    let mut w = catalog::create(&path, "bucket", "").unwrap();
    for r in &recs {
        w.push(r).unwrap();
        model.insert(id(r), r.clone());
    }
    w.finish().unwrap();
    let (_, keys) = expected(model);
    let counts = store::Counts {
        keys,
        records: model.len() as u64,
    };
    store::commit_delta(backup, Some(&path), counts, Some("run")).unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    /// A delta of (key, version, stamp) records.
    Delta(Vec<(u8, u8, i64)>),
    /// Mark every record of key k pruned (an edit: a delta of what changed).
    Edit(u8),
    Compact,
    CompactDeltas,
    MaybeCompact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u8..20, 0u8..3, 0i64..1000), 0..15).prop_map(Op::Delta),
        1 => (0u8..20).prop_map(Op::Edit),
        1 => Just(Op::Compact),
        1 => Just(Op::CompactDeltas),
        1 => Just(Op::MaybeCompact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_merged_view_is_the_newest_record_of_every_version(ops in prop::collection::vec(op(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let backup = new_backup(dir.path());
        let mut model: BTreeMap<Id, VersionRecord> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Delta(recs) => {
                    let recs = recs.into_iter().map(|(k, v, s)| record(k, v, s)).collect();
                    commit(&backup, &mut model, recs);
                }
                Op::Edit(k) => {
                    let key = record(k, 0, 0).key;
                    store::edit(&backup, |r| {
                        if r.key == key {
                            r.local.state = LocalState::Pruned;
                        }
                    })
                    .unwrap();
                    for r in model.values_mut() {
                        if r.key == key {
                            r.local.state = LocalState::Pruned;
                        }
                    }
                }
                Op::Compact => store::compact(&backup, false).unwrap(),
                Op::CompactDeltas => store::compact(&backup, true).unwrap(),
                Op::MaybeCompact => {
                    store::maybe_compact(&backup).unwrap();
                }
            }
            let catalog = backup.catalog().unwrap();
            let (want, keys) = expected(&model);
            prop_assert_eq!(read_all(&catalog), want);
            prop_assert_eq!(catalog.records(), model.len() as u64);
            prop_assert_eq!(catalog.keys(), keys);
            // Only the parts the manifest names are left (plus the manifest).
            let m = catalog.manifest().unwrap();
            let files = std::fs::read_dir(backup.state_dir().join("catalog")).unwrap().count();
            prop_assert_eq!(files, 2 + m.deltas.len());
        }
    }
}

#[test]
fn a_prefix_seek_merges_the_parts() {
    let dir = tempfile::tempdir().unwrap();
    let backup = new_backup(dir.path());
    let mut model = BTreeMap::new();
    commit(
        &backup,
        &mut model,
        (0..20)
            .flat_map(|k| (0..3).map(move |v| record(k, v, 1)))
            .collect(),
    );
    store::compact(&backup, false).unwrap();
    commit(&backup, &mut model, vec![record(4, 1, 7), record(7, 2, 7)]);
    let catalog = backup.catalog().unwrap();
    let mut s = catalog.stream_prefix("dir1/");
    let mut got = Vec::new();
    while let Some(r) = s.next_record().unwrap() {
        if !r.key.starts_with("dir1/") {
            break;
        }
        got.push((r.key.clone(), r.version_id.clone(), r.local.first_seen.0));
    }
    let want: Vec<_> = expected(&model)
        .0
        .into_iter()
        .filter(|r| r.key.starts_with("dir1/"))
        .map(|r| (r.key, r.version_id, r.local.first_seen.0))
        .collect();
    assert_eq!(got, want);
    assert!(
        got.contains(&("dir1/k04".into(), "v1".into(), 7)),
        "{got:?}"
    );
    assert!(
        got.contains(&("dir1/k07".into(), "v2".into(), 7)),
        "{got:?}"
    );
}

/// A part the manifest does not name (a commit or compaction that crashed before its
/// manifest) is never read, and the next writer removes it.
#[test]
fn an_unnamed_part_is_ignored_and_collected() {
    let dir = tempfile::tempdir().unwrap();
    let backup = new_backup(dir.path());
    let mut model = BTreeMap::new();
    commit(&backup, &mut model, vec![record(1, 0, 1), record(2, 0, 1)]);
    let stray = backup.state_dir().join("catalog/delta-00000099.s3inv");
    let mut w = catalog::create(&stray, "bucket", "").unwrap();
    w.push(&record(1, 0, 999)).unwrap();
    w.finish().unwrap();
    let (want, _) = expected(&model);
    assert_eq!(read_all(&backup.catalog().unwrap()), want);
    store::upgrade(&backup).unwrap();
    assert!(!stray.exists());
}

/// A damaged manifest, or a part it names that is gone, is an error naming the file: never
/// an empty or partial catalog.
#[test]
fn a_damaged_manifest_or_missing_part_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let backup = new_backup(dir.path());
    let mut model = BTreeMap::new();
    commit(&backup, &mut model, vec![record(1, 0, 1)]);
    let manifest = backup.state_dir().join("catalog/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let m: store::Manifest = serde_json::from_str(&text).unwrap();
    let part = backup.state_dir().join("catalog").join(&m.deltas[0].file);
    let moved = part.with_extension("away");
    std::fs::rename(&part, &moved).unwrap();
    let e = format!("{:#}", backup.catalog().err().unwrap());
    assert!(
        e.contains(&m.deltas[0].file) && e.contains("manifest.json"),
        "{e}"
    );
    std::fs::rename(&moved, &part).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    let e = format!("{:#}", backup.catalog().err().unwrap());
    assert!(e.contains("manifest.json") && e.contains("damaged"), "{e}");
}

/// A backup from before deltas (format 2: one catalog.s3inv) reads the same before and
/// after its upgrade, which a rerun at any step finishes; afterwards config.json says
/// format 3, which older programs (formats 1 to 2) refuse.
#[test]
fn a_format_2_backup_is_upgraded_without_changing_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let backup = new_backup(dir.path());
    let state = backup.state_dir();
    // Make it what an older version wrote.
    std::fs::remove_dir_all(state.join("catalog")).unwrap();
    let legacy = state.join("catalog.s3inv");
    let recs: Vec<VersionRecord> = {
        let mut v: Vec<_> = (0..20)
            .flat_map(|k| (0..3).map(move |v| record(k, v, 5)))
            .collect();
        v.sort_by(|a, b| a.cmp_order(b));
        v
    };
    let mut w = catalog::create(&legacy, "bucket", "2024-11-01T01-00Z").unwrap();
    for r in &recs {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    let config_path = state.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["format"] = 2.into();
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let backup = Backup::open_existing(&dir.path().join("b")).unwrap();
    assert_eq!(read_all(&backup.catalog().unwrap()), recs);

    // A crash after the link and the config (before the manifest): still read from the
    // old file; the rerun finishes.
    std::fs::create_dir_all(state.join("catalog")).unwrap();
    std::fs::hard_link(&legacy, state.join("catalog/base-00000001.s3inv")).unwrap();
    assert_eq!(read_all(&backup.catalog().unwrap()), recs);
    store::upgrade(&backup).unwrap();
    assert!(!legacy.exists());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["format"], 3);
    let backup = Backup::open_existing(&dir.path().join("b")).unwrap();
    let catalog = backup.catalog().unwrap();
    assert_eq!(read_all(&catalog), recs);
    assert_eq!(catalog.records(), 60);
    assert_eq!(catalog.keys(), 20);
    // Idempotent.
    drop(catalog);
    store::upgrade(&backup).unwrap();
    assert_eq!(read_all(&backup.catalog().unwrap()), recs);
}
