//! The planner in process against the independent model (tests/support/backup_model.rs),
//! over random bucket histories: keys that flip between file and directory, a key that is
//! a file and a directory prefix at once, overwrites, delete markers, undeletes,
//! expirations, null versions of a suspended bucket, versions written within one second
//! and multipart uploads whose LastModified (when they began) precedes versions they
//! replaced. Every date is planned as `sync` plans it (the tree the model says the last
//! date left on disk, the catalog of every version so far), and then:
//! - the path the new catalog gives each held version is the one the model gives it;
//! - `restore --at` of every date so far, at that date's moment, answers each key with
//!   exactly the version that date's inventory listed as latest (or nothing, deleted).

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use md5::{Digest, Md5};
use proptest::prelude::*;
use s3invbackup::backup::catalog::{self, Catalog};
use s3invbackup::backup::layout::{KeyRules, NameStem};
use s3invbackup::backup::run_dir::RunDir;
use s3invbackup::index::{IndexMeta, IndexReader, IndexWriter};
use s3invbackup::maintain::history::Timeline;
use s3invbackup::model::etag::ETag;
use s3invbackup::model::record::Flags;
use s3invbackup::model::timestamp::Timestamp;
use s3invbackup::model::version_id;
use s3invbackup::sync::plan::{OnBadKey, Planner};
use s3invbackup::{Progress, VersionRecord as Rec};
use serde_json::json;
use support::backup_model::Model;

const STEM: &str = "s3invbackup";
const DAY_MS: i64 = 86_400_000;
/// 2024-11-01T01:00:00Z.
const FIRST_DATE_MS: i64 = 1_730_422_800_000;
/// Keys chosen to collide: `a` and `a/b` and `a/b/c` flip between file and directory, and
/// can be a file and a directory prefix at once; `n` lives in a suspended bucket (null).
const KEYS: [&str; 6] = ["a", "a/b", "a/b/c", "d/e", "d/e/f", "n"];

#[derive(Debug, Clone)]
enum Op {
    /// A new version: written now, in the same second as the key's last version, or a
    /// multipart upload begun two hours ago and completed now.
    Put {
        key: usize,
        body: u8,
        when: When,
    },
    Delete {
        key: usize,
    },
    /// A version permanently deleted (an undelete when it is the top delete marker, an
    /// expiration otherwise).
    Remove {
        key: usize,
        which: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum When {
    Now,
    SameSecond,
    BegunEarlier,
    /// Begun before the previous date and completed after it: the previous date did not
    /// list it although its LastModified precedes that date.
    BegunBeforeLastDate,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..KEYS.len(), any::<u8>(), prop_oneof![
            3 => Just(When::Now), 1 => Just(When::SameSecond), 1 => Just(When::BegunEarlier),
            1 => Just(When::BegunBeforeLastDate)
        ]).prop_map(|(key, body, when)| Op::Put { key, body, when }),
        2 => (0..KEYS.len()).prop_map(|key| Op::Delete { key }),
        2 => (0..KEYS.len(), any::<usize>()).prop_map(|(key, which)| Op::Remove { key, which }),
    ]
}

#[derive(Debug, Clone)]
struct Ver {
    vid: String,
    lm: i64,
    dm: bool,
    md5: String,
}

/// The bucket: each key's versions in S3's order (oldest first; the last is the latest).
#[derive(Default)]
struct Bucket {
    keys: BTreeMap<String, Vec<Ver>>,
    next_id: u32,
}

impl Bucket {
    fn apply(&mut self, op: &Op, clock: i64) {
        match *op {
            Op::Put { key, body, when } => {
                let key = KEYS[key];
                let versions = self.keys.entry(key.to_string()).or_default();
                let null = key == "n";
                if null {
                    // A suspended bucket: the new null version replaces the old one.
                    versions.retain(|v| v.vid != "null");
                }
                let lm = match when {
                    When::SameSecond if !null => versions.last().map_or(clock, |v| v.lm),
                    When::BegunEarlier => clock - 2 * 3_600_000,
                    When::BegunBeforeLastDate => clock - 30 * 3_600_000,
                    _ => clock,
                };
                self.next_id += 1;
                let vid = if null {
                    "null".to_string()
                } else {
                    format!("v{:04}", self.next_id)
                };
                let md5 = hex(&Md5::digest([body % 4]));
                versions.push(Ver {
                    vid,
                    lm,
                    dm: false,
                    md5,
                });
            }
            Op::Delete { key } => {
                let key = KEYS[key];
                let versions = self.keys.entry(key.to_string()).or_default();
                if versions.last().is_some_and(|v| !v.dm) {
                    self.next_id += 1;
                    versions.push(Ver {
                        vid: format!("v{:04}", self.next_id),
                        lm: clock,
                        dm: true,
                        md5: String::new(),
                    });
                }
            }
            Op::Remove { key, which } => {
                if let Some(versions) = self.keys.get_mut(KEYS[key])
                    && !versions.is_empty()
                {
                    let i = which % versions.len();
                    versions.remove(i);
                }
            }
        }
    }

    /// (key, version) pairs with whether each is latest, in no particular order.
    fn listing(&self) -> Vec<(&str, &Ver, bool)> {
        self.keys
            .iter()
            .flat_map(|(k, vs)| {
                vs.iter()
                    .enumerate()
                    .map(move |(i, v)| (k.as_str(), v, i + 1 == vs.len()))
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap()
}

fn date_name(day: usize) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(FIRST_DATE_MS + day as i64 * DAY_MS) * 1_000_000,
    )
    .unwrap();
    format!(
        "{:04}-{:02}-{:02}T01-00Z",
        t.year(),
        t.month() as u8,
        t.day()
    )
}

fn record(key: &str, v: &Ver, latest: bool) -> Rec {
    let mut flags = 0;
    if latest {
        flags |= Flags::LATEST;
    }
    if v.dm {
        flags |= Flags::DELETE_MARKER;
    } else {
        flags |= Flags::ETAG_IS_MD5;
    }
    Rec {
        key: key.to_string(),
        version_id: version_id::from_s3(&v.vid).to_string(),
        last_modified: Timestamp(v.lm),
        size: if v.dm { 0 } else { 1 },
        etag: (!v.dm).then(|| ETag::parse(v.md5.as_bytes()).unwrap()),
        flags: Flags(flags),
        ..Rec::default()
    }
}

fn sorted(mut recs: Vec<Rec>) -> Vec<Rec> {
    recs.sort_by(|a, b| a.cmp_order(b));
    recs
}

fn write_inventory(path: &Path, date: &str, recs: &[Rec]) -> IndexReader {
    let meta = IndexMeta {
        kind: "inventory".into(),
        source_bucket: "bucket".into(),
        date: date.into(),
        creation_timestamp: "0".into(),
        file_schema: "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModified, ETag"
            .into(),
        manifest_md5: String::new(),
    };
    let mut w = IndexWriter::create(path, &meta).unwrap();
    for r in recs {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    IndexReader::open(path).unwrap()
}

fn write_catalog(path: &Path, date: &str, held: &BTreeMap<(String, i64, String), Rec>) -> Catalog {
    let mut w = catalog::create(path, "bucket", date).unwrap();
    for r in sorted(held.values().cloned().collect()) {
        w.push(&r).unwrap();
    }
    w.finish().unwrap();
    Catalog::single(path).unwrap()
}

fn read_all(path: &Path) -> Vec<Rec> {
    let reader = catalog::open(path).unwrap();
    let mut s = reader.stream();
    let mut out = Vec::new();
    while let Some(r) = s.next_record().unwrap() {
        out.push(r.clone());
    }
    out
}

/// The tree the model says a date left: every held version's file (empty: the planner
/// only asks which paths are directories).
fn materialize(root: &Path, model: &Model) {
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    std::fs::create_dir_all(root).unwrap();
    for path in model.locations().values() {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"").unwrap();
    }
}

fn id_of(r: &Rec) -> (String, String, i64) {
    (
        r.key.clone(),
        version_id::to_s3(&r.version_id).to_string(),
        r.last_modified.0,
    )
}

/// Each key's latest as a date listed it: version id, LastModified, delete marker.
type Latest = BTreeMap<String, (String, i64, bool)>;

fn check_history(history: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let stem = NameStem::new(STEM).unwrap();
    let rules = KeyRules::new(stem.clone());
    let root = tmp.path().join("tree");
    let mut bucket = Bucket::default();
    let mut model = Model::new(STEM, &[]);
    let mut held: BTreeMap<(String, i64, String), Rec> = BTreeMap::new();
    // Each applied date: its moment and what it listed as each key's latest.
    let mut applied: Vec<(i64, Latest)> = Vec::new();
    for (day, ops) in history.iter().enumerate() {
        let date = date_name(day);
        let date_ms = FIRST_DATE_MS + day as i64 * DAY_MS;
        for (i, op) in ops.iter().enumerate() {
            // Writes during the day before the date, a minute apart.
            bucket.apply(op, date_ms - 12 * 3_600_000 + i as i64 * 60_000);
        }
        let listing = bucket.listing();
        let rows: Vec<serde_json::Value> = listing
            .iter()
            .map(|(k, v, latest)| {
                json!({
                    "key": k,
                    "version_id": v.vid,
                    "last_modified": rfc3339(v.lm),
                    "size": if v.dm { 0 } else { 1 },
                    "etag": (!v.dm).then(|| v.md5.clone()),
                    "is_latest": latest,
                    "is_delete_marker": v.dm,
                    "body_md5": (!v.dm).then(|| v.md5.clone()),
                })
            })
            .collect();
        let latest: Latest = listing
            .iter()
            .filter(|(_, _, latest)| *latest)
            .map(|(k, v, _)| (k.to_string(), (v.vid.clone(), v.lm, v.dm)))
            .collect();
        let recs = sorted(listing.iter().map(|(k, v, l)| record(k, v, *l)).collect());

        materialize(&root, &model);
        let catalog = write_catalog(&tmp.path().join(format!("catalog-{day}")), &date, &held);
        let inventory = write_inventory(&tmp.path().join(format!("inv-{day}")), &date, &recs);
        let run = RunDir::at(tmp.path().join(format!("run-{day}")));
        let planner = Planner {
            stem: &stem,
            rules: &rules,
            root: &root,
            date: &date,
            date_time: Timestamp(date_ms),
            source_bucket: "bucket",
            path_filter: None,
            on_bad_key: OnBadKey::Skip,
            try_archived: false,
            progress: Progress::quiet(),
            shard: None,
        };
        planner.plan(&catalog, &inventory, &run).unwrap();
        for r in read_all(&run.planned_delta()) {
            held.insert((r.key.clone(), r.last_modified.0, r.version_id.clone()), r);
        }
        model.apply(&rows, |_| true);
        applied.push((date_ms, latest));

        // Every held version where the model puts it.
        let planned: BTreeMap<(String, String, i64), String> = held
            .values()
            .filter_map(|r| catalog::file_path(&stem, r).map(|p| (id_of(r), p)))
            .collect();
        let want: BTreeMap<(String, String, i64), String> = model
            .locations()
            .iter()
            .map(|(id, p)| {
                (
                    (
                        id.key.clone(),
                        id.version_id.clone(),
                        support::backup_model::millis(&id.last_modified),
                    ),
                    p.clone(),
                )
            })
            .collect();
        prop_assert_eq!(&planned, &want, "paths after {}", date);

        // Every date so far, at its moment, answered with what it listed as latest.
        let timeline = Timeline::new(applied.iter().map(|(t, _)| Timestamp(*t)).collect());
        for key in KEYS {
            let versions: Vec<Rec> =
                sorted(held.values().filter(|r| r.key == key).cloned().collect());
            for (t, latest) in &applied {
                let got = timeline.version_at(&versions, Timestamp(*t)).map(|v| {
                    (
                        version_id::to_s3(&v.version_id).to_string(),
                        v.last_modified.0,
                        v.is_delete_marker(),
                    )
                });
                prop_assert_eq!(
                    got.as_ref(),
                    latest.get(key),
                    "{} at {} (planned through {})",
                    key,
                    rfc3339(*t),
                    date
                );
            }
        }
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES=N runs a longer campaign.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_planner_places_every_version_as_the_model_does(
        history in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..7)
    ) {
        check_history(history)?;
    }
}
