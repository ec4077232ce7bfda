//! The independent oracle for `sync`: what a backup tree must hold after a series of
//! inventory dates, computed naively from the fixture generator's model (the rows of each
//! date and the MD5 of every body it uploaded), with path strings and maps only -- no code
//! from the crate.
//!
//! Rules (DESIGN §4, in plain words): every version ever listed is kept; the latest version
//! of a key, if not a delete marker, is at the key's path; every other version is at
//! `<path>.old.<versionId>.<etag>` in the directory it was in when it stopped being current
//! (or, if never current, its key's directory); when a key becomes a file where a directory
//! stood, that directory's old contents move to `<path>.old.<stem>` and stay there.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use md5::{Digest, Md5};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id {
    pub key: String,
    pub version_id: String,
    pub last_modified: String,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: Id,
    pub size: u64,
    pub etag: Option<String>,
    pub latest: bool,
    pub delete_marker: bool,
    pub body_md5: Option<String>,
}

impl Row {
    pub fn from_json(v: &Value) -> Row {
        Row {
            id: Id {
                key: v["key"].as_str().unwrap().into(),
                version_id: v["version_id"].as_str().unwrap().into(),
                last_modified: v["last_modified"].as_str().unwrap().into(),
            },
            size: v["size"].as_u64().unwrap_or(0),
            etag: v["etag"].as_str().map(String::from),
            latest: v["is_latest"].as_bool().unwrap(),
            delete_marker: v["is_delete_marker"].as_bool().unwrap(),
            body_md5: v["body_md5"].as_str().map(String::from),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFile {
    pub id: Id,
    pub body_md5: Option<String>,
    pub mtime_ms: i64,
}

#[derive(Debug, Default)]
pub struct Expected {
    pub files: BTreeMap<String, ExpectedFile>,
    pub versions_json: BTreeMap<String, Value>,
    pub marker_dirs: BTreeSet<String>,
}

pub struct Model {
    stem: String,
    bad_keys: HashSet<String>,
    /// Every version held, with its row as last listed.
    held: BTreeMap<Id, Row>,
    location: BTreeMap<Id, String>,
    latest_rows: Vec<Row>,
}

pub fn millis(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

impl Model {
    pub fn new(stem: &str, bad_keys: &[&str]) -> Model {
        Model {
            stem: stem.into(),
            bad_keys: bad_keys.iter().map(|k| k.to_string()).collect(),
            held: BTreeMap::new(),
            location: BTreeMap::new(),
            latest_rows: Vec::new(),
        }
    }

    /// `<key>.old.<vid>.<etag>`; a `null` version (one id S3 reuses) is `null-<LastModified
    /// in ms>`, so that each distinct one has its own name (the backup's format 2).
    fn old_path(&self, row: &Row) -> String {
        let key = &row.id.key;
        let vid = if row.id.version_id == "null" {
            format!("null-{}", millis(&row.id.last_modified))
        } else {
            row.id.version_id.clone()
        };
        format!("{key}.old.{vid}.{}", row.etag.as_deref().unwrap_or(""))
    }

    /// Applies one date's rows. `fetchable` says which versions the bucket still serves.
    pub fn apply(&mut self, rows: &[Value], fetchable: impl Fn(&Row) -> bool) {
        let rows: Vec<Row> = rows
            .iter()
            .map(Row::from_json)
            .filter(|r| !self.bad_keys.contains(&r.id.key))
            .collect();
        for r in &rows {
            if r.delete_marker || r.id.key.ends_with('/') {
                continue;
            }
            if self.held.contains_key(&r.id) || fetchable(r) {
                self.held.insert(r.id.clone(), r.clone());
            }
        }
        // A key that is a file and a directory prefix of a live key at once is not stored as
        // a file (the directory wins): its latest version is kept as an old one.
        let live: Vec<&str> = rows
            .iter()
            .filter(|r| r.latest && !r.delete_marker)
            .map(|r| r.id.key.as_str())
            .collect();
        let is_dir = |key: &str| {
            let prefix = format!("{key}/");
            live.iter().any(|k| k.starts_with(&prefix))
        };
        let current: HashSet<&Id> = rows
            .iter()
            .filter(|r| r.latest && !r.delete_marker && !r.id.key.ends_with('/'))
            .filter(|r| !is_dir(&r.id.key))
            .map(|r| &r.id)
            .collect();
        let current_keys: BTreeSet<&str> = current.iter().map(|id| id.key.as_str()).collect();
        let mut location = BTreeMap::new();
        for (id, row) in &self.held {
            let path = if current.contains(id) {
                id.key.clone()
            } else {
                match self.location.get(id) {
                    Some(p) if *p != id.key => p.clone(),
                    _ => self.old_path(row),
                }
            };
            location.insert(id.clone(), path);
        }
        for p in current_keys {
            let prefix = format!("{p}/");
            for path in location.values_mut() {
                if let Some(rest) = path.strip_prefix(&prefix) {
                    *path = format!("{p}.old.{}/{rest}", self.stem);
                }
            }
        }
        self.location = location;
        self.latest_rows = rows;
    }

    /// Where each held version must be.
    pub fn locations(&self) -> &BTreeMap<Id, String> {
        &self.location
    }

    pub fn expected(&self) -> Expected {
        let mut e = Expected::default();
        for (id, path) in &self.location {
            let row = &self.held[id];
            e.files.insert(
                path.clone(),
                ExpectedFile {
                    id: id.clone(),
                    body_md5: row.body_md5.clone(),
                    mtime_ms: millis(&id.last_modified),
                },
            );
        }
        let live: Vec<&str> = self
            .latest_rows
            .iter()
            .filter(|r| r.latest && !r.delete_marker)
            .map(|r| r.id.key.as_str())
            .collect();
        for r in &self.latest_rows {
            if !r.latest || r.delete_marker {
                continue;
            }
            let prefix = format!("{}/", r.id.key);
            if live.iter().any(|k| k.starts_with(&prefix)) {
                continue; // shadowed by a directory of the same name
            }
            if let Some(dir) = r.id.key.strip_suffix('/') {
                e.marker_dirs.insert(dir.to_string());
                continue;
            }
            if !self.held.contains_key(&r.id) {
                continue;
            }
            let dir = parent(&r.id.key).to_string();
            let name = r.id.key[if dir.is_empty() { 0 } else { dir.len() + 1 }..].to_string();
            let entry = json!({
                "version_id": r.id.version_id,
                "etag": r.etag,
                "size": r.size,
                "last_modified": r.id.last_modified,
            });
            let obj = e.versions_json.entry(dir).or_insert_with(|| json!({}));
            obj.as_object_mut().unwrap().insert(name, entry);
        }
        e
    }
}

/// Every way the tree at `root` differs from `expected` (empty: identical).
pub fn differences(root: &Path, stem: &str, expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    let mut found = BTreeSet::new();
    let versions_file = format!(".{stem}-versions.json");
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_str().unwrap().to_string();
            let rel = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                if rel != format!(".{stem}") {
                    stack.push(rel);
                }
                continue;
            }
            if name == versions_file {
                match expected.versions_json.get(&dir) {
                    None => problems.push(format!("{rel}: unexpected versions JSON")),
                    Some(want) => {
                        let got: Value =
                            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
                        if &got != want {
                            problems.push(format!("{rel}: is {got}, expected {want}"));
                        }
                    }
                }
                continue;
            }
            found.insert(rel.clone());
            let Some(want) = expected.files.get(&rel) else {
                problems.push(format!("{rel}: not expected in the tree"));
                continue;
            };
            let bytes = std::fs::read(entry.path()).unwrap();
            let md5: String = Md5::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if let Some(body) = &want.body_md5
                && *body != md5
            {
                problems.push(format!("{rel}: content MD5 {md5}, expected {body}"));
            }
            let mtime = meta
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            if mtime != want.mtime_ms {
                problems.push(format!("{rel}: mtime {mtime}, expected {}", want.mtime_ms));
            }
        }
    }
    for (path, want) in &expected.files {
        if !found.contains(path) {
            problems.push(format!("{path}: missing (version {:?})", want.id));
        }
    }
    for dir in expected.versions_json.keys() {
        let path = root.join(dir).join(&versions_file);
        if !path.is_file() {
            problems.push(format!("{}: missing versions JSON", path.display()));
        }
    }
    for dir in &expected.marker_dirs {
        if !root.join(dir).is_dir() {
            problems.push(format!("{dir}/: folder marker's directory missing"));
        }
    }
    problems
}

/// (path, size, mtime, inode) of every entry under `root`: proves a run changed nothing.
pub fn snapshot(root: &Path) -> Vec<(String, u64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((
                entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string(),
                meta.len(),
                meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
                meta.ino(),
            ));
        }
    }
    out.sort();
    out
}
