//! How a catalog is stored: a base and a few deltas (a log-structured merge tree of sorted
//! runs), so that a night writes what changed, not the whole catalog.
//!
//! ```text
//! .<stem>/catalog/manifest.json       which parts make the catalog, and its counts
//!                 base-00000007.s3inv every version, as of the last compaction
//!                 delta-00000008.s3inv the versions a later run added or changed
//!                 delta-00000009.s3inv ...
//! ```
//!
//! Each part is an index file of kind `catalog`. A delta holds whole records: the new
//! record of every version a run added or whose record changed; a record is never removed,
//! so a delta needs no tombstones. Readers merge the parts ([`super::merged`]).
//!
//! The manifest is the one commit point: a new part is written and fsynced under its final
//! name first, then the manifest is replaced durably (temporary file, fsync, rename,
//! directory fsync). A crash before the rename leaves an unreferenced part, which the next
//! writer removes ([`collect_garbage`]); after it, the new catalog. Compaction is the same
//! protocol with a new base replacing every part, so it needs no journal of its own.
//!
//! A backup from before deltas has one file, `.<stem>/catalog.s3inv`, and backup format 2
//! or 1: it is read as a base with no deltas, and [`upgrade`] moves it here (format 3) the
//! first time a writer takes the lock, so that an older program refuses the backup instead
//! of reading a base without its deltas.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::backup::catalog::merged::CatalogStream;
use crate::backup::catalog::{create, open};
use crate::backup::totals::Totals;
use crate::backup::{Backup, Config, durable};
use crate::index::IndexReader;
use crate::model::record::VersionRecord;
use crate::sys::failpoint;

/// Compaction merges every part into a new base once the deltas together reach this
/// fraction of the base's bytes: a night's delta at 0.1% change is ~0.1% of the base, so
/// the base is rewritten about every 250 nights and a night's amortized writes stay near
/// 0.5% of the catalog.
pub const COMPACT_FRACTION: f64 = 0.25;

/// More deltas than this are merged into one delta (cheap: only the deltas are read and
/// written), which bounds the parts a reader merges.
pub const MAX_DELTAS: usize = 8;

/// The file naming the parts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub base: Part,
    pub deltas: Vec<Part>,
    /// Keys and versions of the merged catalog.
    pub keys: u64,
    pub records: u64,
    /// The plan id of the last sync run committed into the catalog: how a resumed run tells
    /// that its commit happened.
    #[serde(default)]
    pub last_run: Option<String>,
    /// The number the next part's file is named with.
    pub next_part: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    pub file: String,
    pub records: u64,
    pub bytes: u64,
}

/// The catalog directory inside a state directory.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("catalog")
}

/// The single catalog file of a backup from before deltas.
pub fn legacy_path(state_dir: &Path) -> PathBuf {
    state_dir.join("catalog.s3inv")
}

const MANIFEST: &str = "manifest.json";

/// An open catalog: its parts, oldest first, and the counts of the merged view.
pub struct Catalog {
    parts: Vec<IndexReader>,
    manifest: Option<Manifest>,
    keys: u64,
    records: u64,
}

impl Catalog {
    /// Opens the backup's catalog: the manifest's parts, or the single file of a backup from
    /// before deltas.
    pub fn open(backup: &Backup) -> Result<Catalog> {
        if backup.is_sharded_whole() {
            return Catalog::open_shards(backup);
        }
        let state = backup.part_dir();
        let dir = dir_in(&state);
        let manifest_path = dir.join(MANIFEST);
        if !manifest_path.exists() {
            return Catalog::single(&legacy_path(&state));
        }
        let manifest: Manifest = read_manifest(&manifest_path)?;
        let mut parts = Vec::with_capacity(1 + manifest.deltas.len());
        for part in std::iter::once(&manifest.base).chain(&manifest.deltas) {
            let path = dir.join(&part.file);
            let reader = open(&path).with_context(|| {
                format!(
                    "{} names {}; run `s3invbackup fsck` to see what is damaged",
                    manifest_path.display(),
                    part.file
                )
            })?;
            if reader.stats().records != part.records {
                bail!(
                    "catalog part {} holds {} records, its manifest says {} (damaged)",
                    path.display(),
                    reader.stats().records,
                    part.records
                );
            }
            parts.push(reader);
        }
        Ok(Catalog {
            parts,
            keys: manifest.keys,
            records: manifest.records,
            manifest: Some(manifest),
        })
    }

    /// The shards' catalogs as one (their keys are disjoint, so any order of parts merges
    /// right). A shard that compacts meanwhile may remove a part between its manifest being
    /// read and the part opened: read again.
    fn open_shards(backup: &Backup) -> Result<Catalog> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut all = Catalog {
                parts: Vec::new(),
                manifest: None,
                keys: 0,
                records: 0,
            };
            let mut failed = None;
            for part in backup.parts() {
                match Catalog::open(&part) {
                    Ok(c) => {
                        all.keys += c.keys;
                        all.records += c.records;
                        all.parts.extend(c.parts);
                    }
                    Err(e) => {
                        failed = Some(e.context(format!("the catalog of {}", part.part_name())));
                        break;
                    }
                }
            }
            match failed {
                None => return Ok(all),
                Some(e) if attempt >= 5 => return Err(e),
                Some(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }

    /// A catalog of one file (a dry run's empty start, a backup from before deltas).
    pub fn single(path: &Path) -> Result<Catalog> {
        let reader = open(path)?;
        Ok(Catalog {
            keys: reader.stats().keys,
            records: reader.stats().records,
            parts: vec![reader],
            manifest: None,
        })
    }

    /// This catalog with the delta file `path` on top, not committed: what a run's commit
    /// renders versions JSON from before it commits, and what a dry run plans the next date
    /// against. `counts` are those of the merged result.
    pub fn with_delta(mut self, path: &Path, counts: Counts) -> Result<Catalog> {
        self.parts.push(open(path)?);
        self.keys = counts.keys;
        self.records = counts.records;
        Ok(self)
    }

    /// Every record, in index order.
    pub fn stream(&self) -> CatalogStream<'_> {
        CatalogStream::new(self.parts.iter().map(IndexReader::stream).collect())
    }

    /// The records whose key starts with `prefix` (a seek in each part).
    pub fn stream_prefix(&self, prefix: &str) -> CatalogStream<'_> {
        CatalogStream::new(self.parts.iter().map(|p| p.stream_prefix(prefix)).collect())
    }

    /// As [`IndexReader::stream_from`], over every part.
    pub fn stream_from(&self, from: &str, prefix: &str) -> CatalogStream<'_> {
        CatalogStream::new(
            self.parts
                .iter()
                .map(|p| p.stream_from(from, prefix))
                .collect(),
        )
    }

    pub fn keys(&self) -> u64 {
        self.keys
    }
    pub fn records(&self) -> u64 {
        self.records
    }
    /// Blocks of all parts (what a full pass reads).
    pub fn blocks(&self) -> usize {
        self.parts.iter().map(|p| p.blocks().len()).sum()
    }
    pub fn source_bucket(&self) -> &str {
        &self.parts[0].meta().source_bucket
    }
    /// The plan id of the last sync run committed (None before deltas).
    pub fn last_run(&self) -> Option<&str> {
        self.manifest.as_ref().and_then(|m| m.last_run.as_deref())
    }
    /// Names this state of the catalog: changes whenever a part is added or replaced (a
    /// resumable `fsck --verify-content` starts over when the catalog it checked changed).
    pub fn identity(&self) -> Result<String> {
        Ok(match &self.manifest {
            Some(m) => {
                let mut id = format!("catalog {}", m.base.file);
                for d in &m.deltas {
                    id.push(' ');
                    id.push_str(&d.file);
                }
                id
            }
            None => {
                use std::os::unix::fs::MetadataExt;
                let path = self.parts[0].path();
                let meta = std::fs::metadata(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                format!(
                    "catalog {} {}.{:09}",
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec()
                )
            }
        })
    }

    /// Base and deltas, for `status`; None for a backup from before deltas.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {} (damaged)", path.display()))
}

fn write_manifest(backup: &Backup, manifest: &Manifest) -> Result<()> {
    durable::write_json(&dir_in(&backup.part_dir()).join(MANIFEST), manifest)
}

fn part_name(kind: &str, n: u64) -> String {
    format!("{kind}-{n:08}.s3inv")
}

/// Writes the empty catalog of a new backup.
pub fn create_empty(backup: &Backup) -> Result<()> {
    let dir = dir_in(&backup.part_dir());
    durable::make_dir(&dir)?;
    let file = part_name("base", 1);
    create(&dir.join(&file), &backup.config.source_bucket, "")?.finish()?;
    write_manifest(
        backup,
        &Manifest {
            base: Part {
                file,
                records: 0,
                bytes: part_bytes(&dir.join(part_name("base", 1)))?,
            },
            next_part: 2,
            ..Manifest::default()
        },
    )
}

fn part_bytes(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

/// Prepares the catalog for a writer (which holds the lock): moves a backup from before
/// deltas to the catalog directory ([`upgrade`]'s steps below), or removes the parts a
/// crashed writer left unnamed.
///
/// Moves a backup from before deltas (one `catalog.s3inv`, format 1 or 2) to the catalog
/// directory and format 3. Called by writers, under the lock. Each step is durable before
/// the next, and a rerun after a crash at any point finishes the job:
/// 1. the old file is hard-linked as the first base;
/// 2. config.json says format 3 (an older program now refuses the backup; it must never
///    read a base without its deltas). A format-1 backup keeps its old-version names;
/// 3. the manifest is written (from here on, this program reads the directory);
/// 4. the old name is removed.
pub fn upgrade(backup: &Backup) -> Result<()> {
    if backup.is_sharded_whole() {
        // Sharded backups were born in format 3: only garbage to collect.
        return backup.parts().iter().try_for_each(collect_garbage);
    }
    let state = backup.part_dir();
    let legacy = legacy_path(&state);
    let dir = dir_in(&state);
    if dir.join(MANIFEST).exists() {
        if legacy.exists() {
            std::fs::remove_file(&legacy)
                .with_context(|| format!("removing {}", legacy.display()))?;
        }
        return collect_garbage(backup);
    }
    let old = Catalog::single(&legacy)?;
    durable::make_dir(&dir)?;
    let file = part_name("base", 1);
    let base = dir.join(&file);
    match std::fs::hard_link(&legacy, &base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&base)?;
            std::fs::hard_link(&legacy, &base)
                .with_context(|| format!("linking {} to {}", legacy.display(), base.display()))?;
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("linking {} to {}", legacy.display(), base.display()));
        }
    }
    durable::sync_dir(&dir)?;
    if backup.config.format < crate::backup::FORMAT {
        let config = Config {
            format: crate::backup::FORMAT,
            naming: (backup.config.format == 1)
                .then_some(1)
                .or(backup.config.naming),
            ..backup.config.clone()
        };
        durable::write_json(&state.join("config.json"), &config)?;
    }
    failpoint::hit("upgrade-config");
    write_manifest(
        backup,
        &Manifest {
            base: Part {
                file,
                records: old.records,
                bytes: part_bytes(&base)?,
            },
            keys: old.keys,
            records: old.records,
            next_part: 2,
            ..Manifest::default()
        },
    )?;
    drop(old);
    std::fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
    durable::sync_dir(&state)?;
    tracing::info!(
        "{}: catalog moved to {} (backup format {})",
        backup.root.display(),
        dir.display(),
        crate::backup::FORMAT
    );
    Ok(())
}

/// Makes the complete catalog file `path` the backup's whole catalog (a new base, no
/// deltas), durably: for tools that build a catalog outside a sync (the benchmarks' seeded
/// backups).
pub fn install_base(backup: &Backup, path: &Path) -> Result<()> {
    let dir = dir_in(&backup.part_dir());
    let reader = open(path)?;
    let stats = reader.stats().clone();
    drop(reader);
    let mut manifest = read_manifest(&dir.join(MANIFEST))?;
    let file = part_name("base", manifest.next_part);
    let to = dir.join(&file);
    durable::replace(path, &to)?;
    manifest.next_part += 1;
    manifest.base = Part {
        file,
        records: stats.records,
        bytes: part_bytes(&to)?,
    };
    manifest.deltas.clear();
    manifest.keys = stats.keys;
    manifest.records = stats.records;
    write_manifest(backup, &manifest)?;
    collect_garbage(backup)
}

/// What a delta changes in the merged view's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub keys: u64,
    pub records: u64,
}

/// Adds the finished delta file `delta` (records replacing the catalog's records of the same
/// versions, or new ones, in index order) to the catalog; afterwards the catalog holds
/// `counts` keys and versions. `run` is the sync run's plan id. `delta` is None when the run
/// changed no record. Durable when it returns.
pub fn commit_delta(
    backup: &Backup,
    delta: Option<&Path>,
    counts: Counts,
    run: Option<&str>,
) -> Result<()> {
    let dir = dir_in(&backup.part_dir());
    let manifest_path = dir.join(MANIFEST);
    let mut manifest = read_manifest(&manifest_path)?;
    if let Some(delta) = delta {
        let reader = open(delta)?;
        let records = reader.stats().records;
        drop(reader);
        if records > 0 {
            let file = part_name("delta", manifest.next_part);
            let to = dir.join(&file);
            // A link, not a rename: until the manifest names it, the run's own copy must
            // stay where a resumed run looks for it.
            std::fs::File::open(delta)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", delta.display()))?;
            if to.exists() {
                std::fs::remove_file(&to).with_context(|| format!("removing {}", to.display()))?;
            }
            std::fs::hard_link(delta, &to)
                .with_context(|| format!("linking {} to {}", delta.display(), to.display()))?;
            manifest.next_part += 1;
            manifest.deltas.push(Part {
                file,
                records,
                bytes: part_bytes(&to)?,
            });
        }
    }
    manifest.keys = counts.keys;
    manifest.records = counts.records;
    if let Some(run) = run {
        manifest.last_run = Some(run.to_string());
    }
    write_manifest(backup, &manifest)
}

/// Changes records' local halves in place (fsck marking versions missing, prune marking
/// them pruned): one pass over the catalog, and a delta of the records `edit` changed.
/// Returns what the catalog holds afterwards.
///
/// On the whole of a sharded backup each shard is edited and its own totals recorded in its
/// state (the caller's `record_totals` of the whole then has nothing left to do).
pub fn edit(backup: &Backup, mut edit: impl FnMut(&mut VersionRecord)) -> Result<Totals> {
    if backup.is_sharded_whole() {
        let mut sum = Totals::default();
        for part in backup.parts() {
            let totals = edit_part(&part, &mut edit)?;
            part.record_totals(totals)?;
            sum = sum.plus(&totals);
        }
        return Ok(sum);
    }
    edit_part(backup, &mut edit)
}

fn edit_part(backup: &Backup, edit: &mut impl FnMut(&mut VersionRecord)) -> Result<Totals> {
    let catalog = Catalog::open(backup)?;
    let dir = dir_in(&backup.part_dir());
    let tmp = dir.join(".edit.s3inv.tmp");
    let mut writer = create(&tmp, catalog.source_bucket(), "")?;
    let mut totals = Totals::default();
    let mut stream = catalog.stream();
    let mut rec = VersionRecord::default();
    let mut changed = 0u64;
    while let Some(r) = stream.next_record()? {
        rec.copy_from(r);
        edit(&mut rec);
        totals.add(&rec);
        if rec.local != r.local {
            writer.push(&rec)?;
            changed += 1;
        }
    }
    drop(stream);
    writer.finish()?;
    let counts = Counts {
        keys: catalog.keys(),
        records: catalog.records(),
    };
    drop(catalog);
    if changed > 0 {
        commit_delta(backup, Some(&tmp), counts, None)?;
    }
    std::fs::remove_file(&tmp).ok();
    Ok(totals)
}

/// Compacts when the policy says so (see [`COMPACT_FRACTION`], [`MAX_DELTAS`]); returns
/// whether it did. Called by writers, under the lock, after a run is recorded.
pub fn maybe_compact(backup: &Backup) -> Result<bool> {
    // Tests that must read a catalog of many parts (fsck, restore, locate over a base and
    // deltas) turn compaction off; a release build has no such switch.
    #[cfg(feature = "failpoints")]
    if std::env::var_os("S3INVBACKUP_NO_COMPACTION").is_some() {
        return Ok(false);
    }
    let dir = dir_in(&backup.part_dir());
    let manifest = read_manifest(&dir.join(MANIFEST))?;
    let delta_bytes: u64 = manifest.deltas.iter().map(|d| d.bytes).sum();
    if manifest.deltas.is_empty() {
        return Ok(false);
    }
    if manifest.base.records == 0 && manifest.deltas.len() == 1 {
        // A first backup: its one delta is the whole catalog. It becomes the base as it is.
        let mut next = manifest.clone();
        next.base = next.deltas.remove(0);
        write_manifest(backup, &next)?;
        collect_garbage(backup)?;
        return Ok(true);
    }
    if delta_bytes as f64 >= COMPACT_FRACTION * manifest.base.bytes as f64 {
        compact(backup, false)?;
        Ok(true)
    } else if manifest.deltas.len() > MAX_DELTAS {
        compact(backup, true)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Merges the parts: all of them into a new base, or (`deltas_only`) the deltas into one
/// delta. The new part is written and fsynced, then the manifest swapped, then the old
/// parts removed.
pub fn compact(backup: &Backup, deltas_only: bool) -> Result<()> {
    let dir = dir_in(&backup.part_dir());
    let manifest = read_manifest(&dir.join(MANIFEST))?;
    let catalog = Catalog::open(backup)?;
    let kind = if deltas_only { "delta" } else { "base" };
    let file = part_name(kind, manifest.next_part);
    let path = dir.join(&file);
    let t = std::time::Instant::now();
    let mut writer = create(&path, catalog.source_bucket(), "")?;
    let mut records = 0u64;
    let mut stream = if deltas_only {
        CatalogStream::new(catalog.parts[1..].iter().map(IndexReader::stream).collect())
    } else {
        catalog.stream()
    };
    while let Some(r) = stream.next_record()? {
        writer.push(r)?;
        records += 1;
    }
    drop(stream);
    writer.finish()?;
    drop(catalog);
    failpoint::hit("compaction-written");
    let part = Part {
        file,
        records,
        bytes: part_bytes(&path)?,
    };
    let mut next = manifest.clone();
    next.next_part += 1;
    if deltas_only {
        next.deltas = vec![part];
    } else {
        next.base = part;
        next.deltas.clear();
    }
    write_manifest(backup, &next)?;
    failpoint::hit("compaction-committed");
    tracing::info!(
        "catalog compacted into {} ({records} records) in {:.2} s",
        if deltas_only {
            "one delta"
        } else {
            "a new base"
        },
        t.elapsed().as_secs_f64()
    );
    collect_garbage(backup)
}

/// Removes files of the catalog directory that the manifest does not name: parts of a
/// compaction or commit that crashed before its manifest, or replaced by one. Writers only.
pub fn collect_garbage(backup: &Backup) -> Result<()> {
    let dir = dir_in(&backup.part_dir());
    let manifest_path = dir.join(MANIFEST);
    if !manifest_path.exists() {
        return Ok(());
    }
    let manifest = read_manifest(&manifest_path)?;
    let named: Vec<&str> = std::iter::once(&manifest.base)
        .chain(&manifest.deltas)
        .map(|p| p.file.as_str())
        .collect();
    let mut removed = false;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == MANIFEST || named.contains(&name) {
            continue;
        }
        std::fs::remove_file(entry.path())
            .with_context(|| format!("removing {}", entry.path().display()))?;
        removed = true;
    }
    if removed {
        durable::sync_dir(&dir)?;
    }
    Ok(())
}
