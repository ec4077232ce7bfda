//! The catalog: every version a backup holds, in index order, with its local half
//! ([`Local`]). It is the source of truth; the tree and the versions JSON files are views of
//! it. This module holds the one function that says where a version's file lives, so that
//! sync, fsck, locate and restore can never disagree about it.
//!
//! A catalog is stored as index files (same format, kind `catalog`) whose records carry the
//! local half: a base and the deltas later runs added, read as one merged view
//! ([`Catalog`]; how they are stored and compacted: [`store`]).

pub mod merged;
pub mod store;

pub use store::Catalog;

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::backup::layout::NameStem;
use crate::backup::totals::Totals;
use crate::index::{IndexMeta, IndexReader, IndexWriter};
use crate::model::etag::ETag;
use crate::model::record::{Displaced, LocalState, VersionRecord};

/// `IndexMeta::kind` of a catalog.
pub const KIND: &str = "catalog";

/// A key ending in `/` with no content: S3 consoles create them for "folders". They create
/// a directory and hold no file.
pub fn is_folder_marker(key: &str) -> bool {
    key.ends_with('/')
}

/// The version has bytes (a file when held): not a delete marker, not a folder marker.
pub fn has_content(rec: &VersionRecord) -> bool {
    !rec.is_delete_marker() && !is_folder_marker(&rec.key)
}

/// The version is the key's content at the key's own path: the bucket's latest version,
/// still listed, not a delete marker, not shadowed by a directory of the same name.
pub fn is_current(rec: &VersionRecord) -> bool {
    rec.is_latest()
        && !rec.is_delete_marker()
        && rec.local.gone_since.0 == 0
        && !rec.local.shadowed
        && !is_folder_marker(&rec.key)
}

/// Where `rec`'s file lives, relative to the backup root, if it has one: delete markers,
/// folder markers and versions not held (missing, archived, skipped) have none.
pub fn file_path(stem: &NameStem, rec: &VersionRecord) -> Option<String> {
    if !has_content(rec) || rec.local.state != LocalState::Present {
        return None;
    }
    Some(version_path(
        stem,
        rec,
        is_current(rec),
        &rec.local.displaced,
    ))
}

/// Where the tree must hold a file for `rec`: its file if held, and also the current path
/// of a latest version that was pruned (an old version become current again, which an
/// earlier build did not fetch back): fsck reports that file missing, and repair marks the
/// version missing so that it is downloaded.
pub fn expected_path(stem: &NameStem, rec: &VersionRecord) -> Option<String> {
    file_path(stem, rec).or_else(|| {
        (rec.local.state == LocalState::Pruned && rec.is_latest() && has_content(rec))
            .then(|| version_path(stem, rec, true, &Displaced::NONE))
    })
}

/// The path of `rec` as the current file (`current`) or as an old version, with the
/// directories whose bit is set in `displaced` renamed to `<dir>.old.<stem>`.
pub fn version_path(
    stem: &NameStem,
    rec: &VersionRecord,
    current: bool,
    displaced: &Displaced,
) -> String {
    let (dir, name) = match rec.key.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, rec.key.as_str()),
    };
    let mut out = String::with_capacity(rec.key.len() + 60);
    if let Some(dir) = dir {
        for (i, component) in dir.split('/').enumerate() {
            if current || !displaced.is_set(i) {
                out.push_str(component);
            } else {
                out.push_str(&stem.displaced_dir(component));
            }
            out.push('/');
        }
    }
    if current {
        out.push_str(name);
    } else {
        // Inventories without the ETag column name the old version with a zero ETag.
        let etag = rec.etag.unwrap_or(ETag {
            md5: [0; 16],
            parts: 0,
        });
        out.push_str(&stem.old_version_name(name, &rec.version_id, &etag, rec.last_modified));
    }
    out
}

/// `path` is strictly inside directory `dir` (`a/b` is under `a`; `a.b` and `a` are not).
pub fn is_under(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// Copies the one-file catalog part `from` to `to` (a run's delta), letting `edit` change
/// each record's local half on the way (a commit marking this run's failures); returns the
/// totals of the records before and after, so that the caller can correct the plan's
/// totals of the whole catalog.
pub fn rewrite_part(
    from: &Path,
    to: &Path,
    mut edit: impl FnMut(&mut VersionRecord),
) -> Result<(Totals, Totals)> {
    let reader = open(from)?;
    let mut writer = create(to, &reader.meta().source_bucket, &reader.meta().date)?;
    let mut stream = reader.stream();
    let mut rec = VersionRecord::default();
    let (mut before, mut after) = (Totals::default(), Totals::default());
    while let Some(r) = stream.next_record()? {
        rec.copy_from(r);
        before.add(&rec);
        edit(&mut rec);
        after.add(&rec);
        writer.push(&rec)?;
    }
    writer.finish()?;
    Ok((before, after))
}

/// The totals of a catalog: one pass (for a run resumed after its commit, whose own counts
/// were lost).
pub fn totals(catalog: &Catalog) -> Result<Totals> {
    let mut stream = catalog.stream();
    let mut totals = Totals::default();
    while let Some(rec) = stream.next_record()? {
        totals.add(rec);
    }
    Ok(totals)
}

/// The directory part of a relative path ("" for the top).
pub fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// `name` in the directory of `key` (a sibling path).
pub fn parent_join(key: &str, name: &str) -> String {
    match key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_string(),
    }
}

/// The depth (0-based component index) of directory `dir_key` (a key prefix without the
/// trailing `/`), for `Local::displaced`.
pub fn dir_depth(dir_key: &str) -> usize {
    dir_key.matches('/').count()
}

pub fn meta(source_bucket: &str, date: &str) -> IndexMeta {
    IndexMeta {
        kind: KIND.into(),
        source_bucket: source_bucket.into(),
        date: date.into(),
        ..IndexMeta::default()
    }
}

/// zstd level of catalog parts (the fastest: a compaction rewrites the whole catalog).
pub const ZSTD_LEVEL: i32 = -1;

/// Starts writing a catalog.
pub fn create(path: &Path, source_bucket: &str, date: &str) -> Result<IndexWriter> {
    IndexWriter::create_with_level(path, &meta(source_bucket, date), ZSTD_LEVEL)
}

/// Opens a one-file catalog part, refusing an index of another kind (an inventory index copied over it).
pub fn open(path: &Path) -> Result<IndexReader> {
    let r =
        IndexReader::open(path).with_context(|| format!("opening catalog {}", path.display()))?;
    if r.meta().kind != KIND {
        bail!(
            "{} is not a catalog (its kind is {:?})",
            path.display(),
            r.meta().kind
        );
    }
    Ok(r)
}

/// Writes an empty catalog (a new backup's starting point).
pub fn write_empty(path: &Path, source_bucket: &str) -> Result<()> {
    create(path, source_bucket, "")?.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{Flags, Local};

    fn rec(key: &str, latest: bool) -> VersionRecord {
        VersionRecord {
            key: key.into(),
            version_id: "v1".into(),
            etag: Some(ETag {
                md5: [0xab; 16],
                parts: 0,
            }),
            flags: Flags(if latest { Flags::LATEST } else { 0 }),
            local: Local {
                state: LocalState::Present,
                ..Local::default()
            },
            ..VersionRecord::default()
        }
    }

    #[test]
    fn paths() {
        let stem = NameStem::default();
        let etag = "ab".repeat(16);
        assert_eq!(file_path(&stem, &rec("a/b.txt", true)).unwrap(), "a/b.txt");
        assert_eq!(
            file_path(&stem, &rec("a/b.txt", false)).unwrap(),
            format!("a/b.txt.old.v1.{etag}")
        );
        let mut r = rec("a/b/c", false);
        r.local.displaced = Displaced::from_words(0b10, &[]);
        assert_eq!(
            file_path(&stem, &r).unwrap(),
            format!("a/b.old.s3invbackup/c.old.v1.{etag}")
        );
        // A current version ignores displacement: it is always at its own path.
        r.flags = Flags(Flags::LATEST);
        assert_eq!(file_path(&stem, &r).unwrap(), "a/b/c");
        r.local.shadowed = true;
        r.local.displaced = Displaced::NONE;
        assert_eq!(
            file_path(&stem, &r).unwrap(),
            format!("a/b/c.old.v1.{etag}")
        );
        assert_eq!(file_path(&stem, &rec("dir/", true)), None);
        let mut missing = rec("a", true);
        missing.local.state = LocalState::Missing;
        assert_eq!(file_path(&stem, &missing), None);
        assert_eq!(dir_depth("a/b"), 1);
        assert_eq!(parent_dir("a/b/c"), "a/b");
        assert_eq!(parent_dir("c"), "");
    }
}
