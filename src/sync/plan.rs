//! The sync planner: merge-joins the catalog with one inventory date and decides, key by
//! key, what the tree must become. It touches nothing: its output is the catalog's delta
//! (every record the run adds or changes, as it will be if every download succeeds), the
//! list of steps, and the directories whose versions JSON must be rewritten, all written
//! into the run's directory. An unchanged key writes nothing at all.
//!
//! Where each version's file lives is decided by [`catalog::file_path`] on the new record,
//! where it lives now by the same function on the old record (moved along if its directory
//! is displaced in this run); a step is planned exactly where the two differ. So the plan
//! is a pure function of (catalog, inventory, which paths are directories), and an
//! unchanged key costs no filesystem work at all.
//!
//! Files and directories: a key `a` whose latest version is a file and a key `a/...` that is
//! current in the same inventory cannot both be stored; the directory wins and `a`'s latest
//! version is kept as an old version ("shadowed") until the conflict goes away. Old
//! versions under a path that is now a file live in the displaced directory `a.old.<stem>`.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use regex::Regex;

use crate::backup::catalog::{
    self, Catalog, file_path, has_content, is_current, is_folder_marker, is_under,
};
use crate::backup::durable;
use crate::backup::layout::{KeyRules, NameStem};
use crate::backup::run_dir::{AnomalyEntry, BadKeyEntry, PlanSummary, RunDir, Step};
use crate::diff::row::ChangeRow;
use crate::index::IndexWriter;
use crate::index::merge::{Kept, MergeJoin, SortedRecords};
use crate::model::etag::ETag;
use crate::model::record::{Check, Displaced, Flags, Local, LocalState, VersionRecord};
use crate::model::timestamp::Timestamp;
use crate::model::version_id;
use crate::sync::listing::Listing;
use crate::sys::progress::{Counters, Phase, Progress, Reporter};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What to do with keys that cannot be stored as paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadKey {
    /// Refuse the run, listing them, before anything is touched.
    Stop,
    /// Record them in the catalog as skipped and report them every run.
    Skip,
}

pub struct Planner<'a> {
    pub stem: &'a NameStem,
    pub rules: &'a KeyRules,
    /// The backup root, asked only whether a path is a directory (for displacement).
    pub root: &'a Path,
    pub date: &'a str,
    pub date_time: Timestamp,
    pub source_bucket: &'a str,
    pub path_filter: Option<&'a Regex>,
    pub on_bad_key: OnBadKey,
    /// GET versions whose storage class says they are archived (some may have been
    /// restored); otherwise they are recorded as archived without a request.
    pub try_archived: bool,
    /// The plan's progress display (keys merged): at 10^9 keys the longest quiet phase.
    pub progress: Progress,
    /// A sharded backup's map and the shard planned: only its keys are planned, the
    /// spine's versions JSON is left to [`crate::backup::versions_json::write_spine_versions_files`],
    /// and a file named like a spine directory stays an old version.
    pub shard: Option<(&'a crate::backup::shards::Shards, u32)>,
}

/// A key that is a current file in the new catalog, whose range of the key order (the keys
/// under `key/`) is still ahead.
#[derive(Default)]
struct FileKey {
    key: String,
    depth: usize,
    /// Its directory was renamed away in this run: paths under `key/` moved to `to/`.
    displaced_to: Option<String>,
}

/// The file keys whose range is still ahead, innermost last. Entries' buffers are reused:
/// a run pushes one per current file (hundreds of millions), and allocating each would
/// cost more than the rest of the walk.
#[derive(Default)]
struct FileStack {
    entries: Vec<FileKey>,
    len: usize,
}

impl FileStack {
    /// Drops the keys whose range `key` has passed.
    fn advance(&mut self, key: &str) {
        while self.len > 0 && !in_range(key, &self.entries[self.len - 1].key) {
            self.len -= 1;
        }
    }
    fn push(&mut self, key: &str, displaced_to: Option<String>) {
        if self.len == self.entries.len() {
            self.entries.push(FileKey::default());
        }
        let e = &mut self.entries[self.len];
        e.key.clear();
        e.key.push_str(key);
        e.depth = catalog::dir_depth(key);
        e.displaced_to = displaced_to;
        self.len += 1;
    }
    fn active(&self) -> &[FileKey] {
        &self.entries[..self.len]
    }
    /// Some key of the stack is a directory above `key`.
    fn has_ancestor_of(&self, key: &str) -> bool {
        self.active().iter().any(|f| is_under(key, &f.key))
    }
}

/// Is `key` still within the part of the key order that can hold `prefix/...`? Keys that
/// extend `prefix` with a byte below `/` (`a-x`, `a.b` after `a`) come before `a/...`.
fn in_range(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix) && key.as_bytes().get(prefix.len()).is_none_or(|&b| b <= b'/')
}

/// Keys live in the inventory as files (latest version not a delete marker) or directories
/// (folder markers): what the tree must show at their paths.
fn is_live(versions: &[VersionRecord]) -> bool {
    versions
        .iter()
        .any(|r| r.is_latest() && !r.is_delete_marker())
}

impl Planner<'_> {
    /// Plans one date into `run_dir`. Returns the summary (also written as `plan.json`
    /// unless there are bad keys and the mode is Stop, in which case nothing is planned).
    pub fn plan(
        &self,
        catalog_index: &Catalog,
        inventory_index: &impl Listing,
        run_dir: &RunDir,
    ) -> Result<PlanSummary> {
        let counters = Arc::new(Counters::default());
        let _reporter = Reporter::start(
            Phase::new(
                format!("plan {}", self.date),
                "keys",
                inventory_index.keys_hint(),
                0,
            ),
            Arc::clone(&counters),
            &self.progress,
        );
        // Conflicts are rare: plan assuming none, and if the walk finds some, plan again
        // knowing them (a second walk finds no new ones: the same rule, the same keys).
        match self.plan_with(
            catalog_index,
            inventory_index,
            run_dir,
            &HashSet::new(),
            &counters,
        )? {
            Ok(summary) => Ok(summary),
            Err(shadowed) => {
                tracing::info!(
                    "{} key(s) are both a file and a directory; planning again",
                    shadowed.len()
                );
                counters.files_done.store(0, Ordering::Relaxed);
                match self.plan_with(
                    catalog_index,
                    inventory_index,
                    run_dir,
                    &shadowed,
                    &counters,
                )? {
                    Ok(summary) => Ok(summary),
                    Err(more) => anyhow::bail!(
                        "planning found new file/directory conflicts on its second walk ({} keys); \
                         this is a bug",
                        more.len()
                    ),
                }
            }
        }
    }

    /// One walk. `Err(conflicts)` if keys not in `shadowed` turned out to be a file and a
    /// directory at once (the plan written is then discarded).
    fn plan_with(
        &self,
        catalog_index: &Catalog,
        inventory_index: &impl Listing,
        run_dir: &RunDir,
        shadowed: &HashSet<String>,
        counters: &Counters,
    ) -> Result<Result<PlanSummary, HashSet<String>>> {
        let mut out = PlanOutput::create(run_dir, self.source_bucket, self.date)?;
        // A backup's first date has nothing to compare with: no change list.
        if catalog_index.records() > 0 {
            out.changes = Some(ChangeLog::create(&run_dir.changes_path())?);
        }
        out.versioned = lists_versions(inventory_index.file_schema());
        out.summary.shadowed = shadowed.len() as u64;
        let conflicts = inventory_index
            .walk(|records| self.walk(catalog_index, records, shadowed, counters, &mut out))?;
        if !conflicts.is_empty() {
            return Ok(Err(conflicts));
        }
        out.finish(self.on_bad_key).map(Ok)
    }

    /// The merge-join itself: returns the keys found to be a file and a directory at once
    /// that `shadowed` did not name.
    fn walk(
        &self,
        catalog_index: &Catalog,
        records: &mut dyn SortedRecords,
        shadowed: &HashSet<String>,
        counters: &Counters,
        out: &mut PlanOutput,
    ) -> Result<HashSet<String>> {
        let mut conflicts = HashSet::new();
        // The keys a path filter excludes are dropped.
        let filter = self.path_filter;
        let shard = self.shard;
        let inventory = Kept::new(records, |r: &VersionRecord| {
            filter.is_none_or(|re| re.is_match(&r.key))
                && shard.is_none_or(|(s, i)| s.owner(&r.key) == i)
        });
        out.spine = shard.map(|(s, _)| s.clone());
        let shadowed_here =
            |key: &str| shadowed.contains(key) || shard.is_some_and(|(s, _)| s.names_spine(key));
        let mut join = MergeJoin::new(catalog_index.stream(), inventory)?;
        let mut files = FileStack::default();
        let mut new_versions: Vec<VersionRecord> = Vec::new();
        let mut fetch: Vec<bool> = Vec::new();
        while let Some(group) = join.next_group()? {
            let key = group.key.as_str();
            files.advance(key);
            out.summary.keys += 1;
            counters.files_done.fetch_add(1, Ordering::Relaxed);
            // The common case: the inventory lists exactly what the catalog holds. The
            // records are copied as they are; no step, no allocation.
            if is_unchanged(group.a(), group.b())
                && !shadowed_here(key)
                && !files.has_ancestor_of(key)
            {
                self.keep_unchanged(key, group.a(), &mut files, out)?;
                continue;
            }
            // Keys the catalog already holds were checked when they first came.
            let known = group
                .a()
                .iter()
                .any(|c| c.local.state != LocalState::Skipped);
            let skipped_before = !known && !group.a().is_empty();
            // A folder marker (`dir/`) that has bytes cannot be a directory and a file at
            // once: a bad key, never silently dropped.
            let folder_with_bytes = catalog::is_folder_marker(key)
                && group
                    .b()
                    .iter()
                    .any(|r| !r.is_delete_marker() && r.size > 0);
            let verdict = self.rules.check(key).map_err(|e| e.to_string()).and_then(|()| {
                if folder_with_bytes {
                    Err("a folder marker (a key ending in '/') with bytes: it cannot be stored as both a directory and a file".to_string())
                } else {
                    Ok(())
                }
            });
            if !group.b().is_empty()
                && !known
                && let Err(reason) = verdict
            {
                out.summary.bad_keys.push(BadKeyEntry {
                    key: key.to_string(),
                    reason: reason.to_string(),
                    known: skipped_before,
                });
                if self.on_bad_key == OnBadKey::Stop && !skipped_before {
                    continue;
                }
            }
            let bad = (self.on_bad_key == OnBadKey::Skip || skipped_before)
                && out.summary.bad_keys.last().is_some_and(|b| b.key == key);
            if let Some(log) = &mut out.changes {
                // What the last applied date listed of the key, against what this one lists.
                let listed_before: Vec<VersionRecord> = group
                    .a()
                    .iter()
                    .filter(|c| c.local.gone_since.0 == 0)
                    .cloned()
                    .collect();
                log.write(&listed_before, group.b(), &mut out.summary.changes)?;
            }
            if is_live(group.b()) {
                for f in files.active() {
                    if is_under(key, &f.key) {
                        conflicts.insert(f.key.clone());
                    }
                }
            }
            self.merge_versions(
                group.a(),
                group.b(),
                bad,
                shadowed_here(key),
                &mut new_versions,
                &mut fetch,
                &mut out.summary,
            );
            for n in new_versions.iter_mut() {
                self.displace_bits(n, files.active());
            }
            // Key `key` becomes a file where a directory stands: move the directory away.
            let now_file = new_versions.iter().any(is_current);
            let was_file = group.a().iter().any(is_current);
            let mut displaced_to = None;
            if now_file && !was_file && !bad && self.root.join(key).is_dir() {
                let to = catalog::parent_join(key, &self.stem.displaced_dir(last_name(key)));
                out.step(&Step::Displace {
                    dir: key.to_string(),
                    to: to.clone(),
                })?;
                out.summary.displaced += 1;
                displaced_to = Some(to);
            }
            self.plan_key(group.a(), &new_versions, &fetch, files.active(), out)?;
            if now_file {
                files.push(key, displaced_to);
            }
            keep_changed(key, group.a(), &new_versions, out)?;
        }
        Ok(conflicts)
    }

    /// A key the inventory lists exactly as the catalog holds it: its records are copied as
    /// they are.
    fn keep_unchanged(
        &self,
        key: &str,
        held: &[VersionRecord],
        files: &mut FileStack,
        out: &mut PlanOutput,
    ) -> Result<()> {
        if held.iter().any(is_current) {
            files.push(key, None);
        }
        // Skipped keys are reported by every run, not only the first.
        if held.iter().any(|c| c.local.state == LocalState::Skipped)
            && let Err(reason) = self.rules.check(key)
        {
            out.summary.bad_keys.push(BadKeyEntry {
                key: key.to_string(),
                reason: reason.to_string(),
                known: true,
            });
        }
        for c in held {
            out.keep(c, false)?;
        }
        Ok(())
    }

    /// The key's versions in the new catalog (`out`), and which of them must be fetched.
    #[allow(clippy::too_many_arguments)]
    fn merge_versions(
        &self,
        held: &[VersionRecord],
        listed: &[VersionRecord],
        bad: bool,
        shadowed: bool,
        out: &mut Vec<VersionRecord>,
        fetch: &mut Vec<bool>,
        summary: &mut PlanSummary,
    ) {
        out.clear();
        fetch.clear();
        let date = self.date_time;
        let (mut i, mut j) = (0, 0);
        while i < held.len() || j < listed.len() {
            let order = match (held.get(i), listed.get(j)) {
                (Some(c), Some(l)) => c.cmp_order(l),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let mut n;
            let mut needs_fetch = false;
            match order {
                std::cmp::Ordering::Equal => {
                    let c = &held[i];
                    n = listed[j].clone();
                    n.local = c.local.clone();
                    // Same key, version id and LastModified: the same version, whose bytes
                    // S3 never changes. A row saying otherwise is an anomaly (a forged or
                    // broken inventory): the held file and what it was verified as stay.
                    let immutable = Flags::DELETE_MARKER | Flags::MULTIPART | Flags::ETAG_IS_MD5;
                    if n.etag != c.etag
                        || n.size != c.size
                        || (n.flags.0 & immutable) != (c.flags.0 & immutable)
                    {
                        if summary.anomalies.len() < MAX_LISTED_ANOMALIES {
                            summary.anomalies.push(AnomalyEntry {
                                key: n.key.clone(),
                                version_id: version_id::to_s3(&n.version_id).to_string(),
                                held: describe_content(c),
                                listed: describe_content(&n),
                            });
                        }
                        summary.anomaly_count += 1;
                        n.etag = c.etag;
                        n.size = c.size;
                        n.flags.0 = (n.flags.0 & !immutable) | (c.flags.0 & immutable);
                    }
                    n.local.gone_since = Timestamp(0);
                    if n.is_latest() {
                        n.local.noncurrent_since = Timestamp(0);
                    } else if n.local.noncurrent_since.0 == 0 {
                        n.local.noncurrent_since = date;
                    }
                    if matches!(n.local.state, LocalState::Missing | LocalState::Archived)
                        && has_content(&n)
                    {
                        needs_fetch = true;
                    }
                    // Pruned as an old version, and now current again (its delete marker
                    // removed): the mirror must hold the key's latest version, so it is
                    // fetched back. (Pruning never touches current files.)
                    if n.local.state == LocalState::Pruned && n.is_latest() && has_content(&n) {
                        needs_fetch = true;
                    }
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    n = held[i].clone();
                    if n.local.gone_since.0 == 0 {
                        n.local.gone_since = date;
                        summary.newly_gone += 1;
                    }
                    if n.is_latest() {
                        n.flags.set(Flags::LATEST, false);
                    }
                    if n.local.noncurrent_since.0 == 0 {
                        n.local.noncurrent_since = date;
                    }
                    if n.local.state == LocalState::Missing {
                        summary.missing_gone += 1;
                        // Never placed by a fetch (nothing verified it): it left the bucket
                        // before the backup got it. One the backup held and then lost
                        // (fsck marked it missing) stays missing: that is a loss to report.
                        if n.local.check == Check::Unknown {
                            n.local.state = LocalState::Vanished;
                        }
                    }
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    n = listed[j].clone();
                    n.local = Local {
                        state: if bad {
                            LocalState::Skipped
                        } else {
                            LocalState::Present
                        },
                        first_seen: date,
                        noncurrent_since: if n.is_latest() { Timestamp(0) } else { date },
                        ..Local::default()
                    };
                    needs_fetch = !bad && has_content(&n);
                    j += 1;
                }
            }
            if needs_fetch && n.flags.has(Flags::SSE_C) {
                // Only the customer's key opens it: say so every run, never ask S3.
                needs_fetch = false;
                n.local.state = LocalState::NeedsKey;
            } else if needs_fetch && n.storage_class.is_archived() && !self.try_archived {
                // A GET would answer InvalidObjectState: record it without asking, and
                // ask again on a later night (or with --try-archived once restored).
                needs_fetch = false;
                n.local.state = LocalState::Archived;
            } else if needs_fetch {
                n.local.state = LocalState::Present;
            }
            n.local.shadowed = shadowed && n.is_latest() && !n.is_delete_marker();
            out.push(n);
            fetch.push(needs_fetch);
        }
        rank_versions(out, date);
    }

    /// Old versions under a path that is a file in the new catalog live in that path's
    /// displaced directory.
    /// A current version is at its own path, wherever it was before: an undeleted version
    /// comes back from a displaced directory with no file above it, and must not go back
    /// there when it is replaced.
    fn displace_bits(&self, n: &mut VersionRecord, files: &[FileKey]) {
        if is_current(n) {
            n.local.displaced = Displaced::NONE;
            return;
        }
        for f in files {
            if !is_under(&n.key, &f.key) {
                continue;
            }
            let through_real_dir = n.local.displaced.none_up_to(f.depth);
            if through_real_dir {
                n.local.displaced.set(f.depth);
            }
        }
    }

    /// Steps for one key: vacate the current path, other moves, then downloads.
    fn plan_key(
        &self,
        held: &[VersionRecord],
        new_versions: &[VersionRecord],
        fetch: &[bool],
        files: &[FileKey],
        out: &mut PlanOutput,
    ) -> Result<()> {
        let mut renames: Vec<(bool, String, String)> = Vec::new();
        let mut fetches = Vec::new();
        let mut hi = 0;
        for (n, &needs_fetch) in new_versions.iter().zip(fetch) {
            // The held record of the same version, if any (both lists in index order).
            while hi < held.len() && held[hi].cmp_order(n).is_lt() {
                hi += 1;
            }
            let c = held.get(hi).filter(|c| c.cmp_order(n).is_eq());
            let to = file_path(self.stem, n);
            if needs_fetch {
                if let Some(dest) = to {
                    if is_current(n) {
                        out.dirty(catalog::parent_dir(&dest));
                    }
                    fetches.push(Step::Fetch {
                        key: n.key.clone(),
                        version_id: n.version_id.clone(),
                        last_modified: n.last_modified,
                        size: n.size,
                        etag: n.etag.map(|e| e.to_string()),
                        etag_is_md5: n.etag_is_md5(),
                        dest,
                        versioned: out.versioned,
                    });
                }
                continue;
            }
            let Some(c) = c else { continue };
            let Some(from) = file_path(self.stem, c) else {
                continue;
            };
            let from = moved_by_displacement(from, files);
            let Some(to) = to else { continue };
            if from != to {
                let vacates = is_current(c);
                if vacates {
                    out.dirty(catalog::parent_dir(&from));
                }
                if is_current(n) {
                    out.dirty(catalog::parent_dir(&to));
                }
                renames.push((vacates, from, to));
            }
        }
        // Folder markers: the directory exists while the marker is current.
        for n in new_versions {
            if is_folder_marker(&n.key)
                && n.is_latest()
                && !n.is_delete_marker()
                && n.local.state == LocalState::Present
                && !held.iter().any(|c| c.cmp_order(n).is_eq() && c.is_latest())
            {
                out.step(&Step::Mkdir {
                    dir: n.key.trim_end_matches('/').to_string(),
                })?;
                out.summary.mkdirs += 1;
            }
        }
        renames.sort_by_key(|(vacates, _, _)| !vacates);
        for (_, from, to) in renames {
            out.step(&Step::Rename { from, to })?;
            out.summary.renames += 1;
        }
        for f in fetches {
            if let Step::Fetch { size, .. } = &f {
                out.summary.fetches += 1;
                out.summary.fetch_bytes += size;
            }
            out.step(&f)?;
        }
        Ok(())
    }
}

/// Keeps a changed key's new records, putting into the delta those that differ from the
/// held record of the same version (or have none). Every held version must be among them:
/// a catalog never forgets a version.
fn keep_changed(
    key: &str,
    held: &[VersionRecord],
    new_versions: &[VersionRecord],
    out: &mut PlanOutput,
) -> Result<()> {
    let (mut hi, mut matched) = (0, 0);
    for n in new_versions {
        while hi < held.len() && held[hi].cmp_order(n).is_lt() {
            hi += 1;
        }
        let same = held.get(hi).filter(|c| c.cmp_order(n).is_eq());
        matched += usize::from(same.is_some());
        out.keep(n, same != Some(n))?;
    }
    if matched != held.len() {
        anyhow::bail!(
            "the plan would drop {} held version(s) of {key:?}; this is a bug, nothing was changed",
            held.len() - matched
        );
    }
    Ok(())
}

fn last_name(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, n)| n)
}

/// Where a file is after this run's displacements (which happen before its key's steps).
fn moved_by_displacement(path: String, files: &[FileKey]) -> String {
    for f in files {
        if let Some(to) = &f.displaced_to
            && is_under(&path, &f.key)
        {
            return format!("{to}{}", &path[f.key.len()..]);
        }
    }
    path
}

/// The inventory lists exactly the versions the catalog holds, with the same metadata, all
/// held (nothing to retry) and none gone: the key needs nothing.
fn is_unchanged(held: &[VersionRecord], listed: &[VersionRecord]) -> bool {
    held.len() == listed.len()
        && held.iter().zip(listed).all(|(c, l)| {
            c.last_modified == l.last_modified
                && c.version_id == l.version_id
                && c.flags == l.flags
                && c.size == l.size
                && c.etag == l.etag
                && c.storage_class == l.storage_class
                && c.local.gone_since.0 == 0
                && !c.local.shadowed
                && matches!(
                    c.local.state,
                    LocalState::Present | LocalState::Skipped | LocalState::Pruned
                )
        })
}

/// The date's changes as `diff --format jsonl` lines, zstd-compressed: what `changes`
/// prints from the backup alone, with no inventory left to diff.
struct ChangeLog {
    path: std::path::PathBuf,
    out: zstd::Encoder<'static, BufWriter<File>>,
}

impl ChangeLog {
    fn create(path: &Path) -> Result<ChangeLog> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ChangeLog {
            path: path.to_path_buf(),
            out: zstd::Encoder::new(BufWriter::with_capacity(1 << 16, file), 3)?,
        })
    }

    fn write(
        &mut self,
        before: &[VersionRecord],
        now: &[VersionRecord],
        counts: &mut std::collections::BTreeMap<String, u64>,
    ) -> Result<()> {
        let mut failed = None;
        crate::diff::changes::classify_versions(before, now, |c| {
            *counts.entry(c.kind.name().to_string()).or_default() += 1;
            if failed.is_none()
                && let Err(e) = serde_json::to_writer(&mut self.out, &ChangeRow::new(&c))
                    .map_err(anyhow::Error::from)
                    .and_then(|()| Ok(self.out.write_all(b"\n")?))
            {
                failed = Some(e);
            }
        });
        match failed {
            Some(e) => Err(e).with_context(|| format!("writing {}", self.path.display())),
            None => Ok(()),
        }
    }

    fn finish(self) -> Result<()> {
        let path = self.path;
        self.out
            .finish()
            .map_err(anyhow::Error::from)
            .and_then(|mut w| {
                w.flush()?;
                Ok(w.get_ref().sync_all()?)
            })
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The files a plan is written to.
struct PlanOutput {
    run_dir: RunDir,
    delta: IndexWriter,
    steps: BufWriter<File>,
    dirty: BTreeSet<String>,
    versions: Option<crate::backup::versions_json::PlannedVersions>,
    summary: PlanSummary,
    /// The inventory has a VersionId column: fetches name their version. A
    /// current-versions-only inventory's rows say "the latest", not the `null` version.
    versioned: bool,
    changes: Option<ChangeLog>,
    /// A shard's spine directories: never marked dirty (their JSON lists several shards).
    spine: Option<crate::backup::shards::Shards>,
}

/// Whether an inventory's schema (CSV column names, or a columnar format's field names)
/// has the version id column.
fn lists_versions(file_schema: &str) -> bool {
    file_schema
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|name| name.replace('_', "").eq_ignore_ascii_case("versionid"))
}

/// Anomalies listed by name in a plan (all are counted).
const MAX_LISTED_ANOMALIES: usize = 1000;

fn describe_content(r: &VersionRecord) -> String {
    if r.is_delete_marker() {
        return "a delete marker".to_string();
    }
    format!(
        "{} bytes, ETag {}",
        r.size,
        r.etag.map_or("-".to_string(), |e| e.to_string())
    )
}

impl PlanOutput {
    fn create(run_dir: &RunDir, source_bucket: &str, date: &str) -> Result<PlanOutput> {
        // Durably: the plan and the journal must not lose their directory's name.
        durable::make_dir(run_dir.path())?;
        let steps_path = run_dir.steps_path();
        Ok(PlanOutput {
            run_dir: run_dir.clone(),
            delta: catalog::create(&run_dir.planned_delta(), source_bucket, date)?,
            steps: BufWriter::with_capacity(
                1 << 16,
                File::create(&steps_path)
                    .with_context(|| format!("creating {}", steps_path.display()))?,
            ),
            dirty: BTreeSet::new(),
            versions: Some(crate::backup::versions_json::PlannedVersions::create(
                &run_dir.planned_versions(),
            )?),
            summary: PlanSummary {
                date: date.to_string(),
                plan_id: format!(
                    "{date}/{}/{}",
                    Timestamp::now().as_millis(),
                    std::process::id()
                ),
                ..PlanSummary::default()
            },
            versioned: true,
            changes: None,
            spine: None,
        })
    }

    fn step(&mut self, step: &Step) -> Result<()> {
        serde_json::to_writer(&mut self.steps, step)
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(self.steps.write_all(b"\n")?))
            .with_context(|| format!("writing {}", self.run_dir.steps_path().display()))
    }

    /// Counts a record of the new catalog, and appends it to the delta if `changed`.
    fn keep(&mut self, r: &VersionRecord, changed: bool) -> Result<()> {
        if changed {
            self.delta.push(r)?;
            self.summary.delta_records += 1;
        }
        self.summary.versions += 1;
        if let Some(v) = &mut self.versions {
            v.add(r, &self.dirty)?;
        }
        self.summary.totals.add(r);
        Ok(())
    }

    fn dirty(&mut self, dir: &str) {
        if self.spine.as_ref().is_some_and(|s| s.is_spine(dir)) {
            return;
        }
        if !self.dirty.contains(dir) {
            self.dirty.insert(dir.to_string());
        }
    }

    fn finish(mut self, on_bad_key: OnBadKey) -> Result<PlanSummary> {
        self.delta.finish()?;
        if let Some(v) = self.versions.take() {
            v.finish(&self.dirty)?;
        }
        if let Some(log) = self.changes.take() {
            log.finish()?;
        }
        let steps_path = self.run_dir.steps_path();
        self.steps
            .flush()
            .and_then(|()| self.steps.get_ref().sync_all())
            .with_context(|| format!("writing {}", steps_path.display()))?;
        let dirty_path = self.run_dir.dirty_path();
        let write_dirty = || -> Result<()> {
            let mut dirty = BufWriter::new(File::create(&dirty_path)?);
            for d in &self.dirty {
                serde_json::to_writer(&mut dirty, d)?;
                dirty.write_all(b"\n")?;
            }
            dirty.flush()?;
            dirty.get_ref().sync_all()?;
            Ok(())
        };
        write_dirty().with_context(|| format!("writing {}", dirty_path.display()))?;
        self.summary.dirty_dirs = self.dirty.len() as u64;
        if on_bad_key == OnBadKey::Stop && self.summary.new_bad_keys() > 0 {
            return Ok(self.summary);
        }
        durable::write_json(&self.run_dir.summary_path(), &self.summary)?;
        Ok(self.summary)
    }
}

/// Parses a step's ETag back.
pub fn parse_etag(s: &Option<String>) -> Option<ETag> {
    s.as_deref().and_then(|s| ETag::parse(s.as_bytes()))
}

/// Gives the key's versions first listed on `date` their place in S3's order
/// ([`Local::rank`]): above every version listed before (S3 puts a new version on top),
/// the one listed as latest newest among them, the rest by LastModified. Versions from a
/// catalog written before ranks are ranked first, by LastModified (the order `restore --at`
/// used for them). If the listed latest is not the newest of what is listed (versions first
/// listed together, ranked by LastModified, whose newest was a multipart upload begun
/// first; a server that orders otherwise), it is moved just above what is listed: at this
/// date's moment the inventory is the authority, and earlier dates keep their answers.
fn rank_versions(versions: &mut [VersionRecord], date: Timestamp) {
    let is_new = |v: &VersionRecord| v.local.first_seen == date;
    if versions.iter().any(|v| !is_new(v) && v.local.rank == 0) {
        rank_in_order(versions, |v| !is_new(v), |v| (v.last_modified, false), 0);
    }
    let top = versions
        .iter()
        .filter(|v| !is_new(v))
        .map(|v| v.local.rank)
        .max()
        .unwrap_or(0);
    if versions.iter().any(is_new) {
        rank_in_order(versions, is_new, |v| (v.is_latest(), v.last_modified), top);
    }
    let listed = |v: &VersionRecord| v.local.gone_since.0 == 0;
    if let Some(latest) = versions.iter().rposition(|v| v.is_latest() && listed(v)) {
        let newest_listed = versions
            .iter()
            .filter(|v| listed(v))
            .map(|v| v.local.rank)
            .max()
            .unwrap_or(0);
        if versions[latest].local.rank < newest_listed
            || versions
                .iter()
                .enumerate()
                .any(|(i, v)| i != latest && listed(v) && v.local.rank == newest_listed)
        {
            // Just above everything listed, below the versions no longer listed that
            // ranked higher (they were newer on the dates that listed them).
            let place = newest_listed.saturating_add(1);
            for v in versions.iter_mut() {
                if v.local.rank >= place {
                    v.local.rank = v.local.rank.saturating_add(1);
                }
            }
            versions[latest].local.rank = place;
        }
    }
}

/// Ranks the versions `pick` chooses `from + 1`, `from + 2`, ... in the order of `key`
/// (index order among equals).
fn rank_in_order<K: Ord>(
    versions: &mut [VersionRecord],
    pick: impl Fn(&VersionRecord) -> bool,
    key: impl Fn(&VersionRecord) -> K,
    from: u32,
) {
    let mut idx: Vec<usize> = (0..versions.len())
        .filter(|&i| pick(&versions[i]))
        .collect();
    idx.sort_by_key(|&i| (key(&versions[i]), i));
    for (r, i) in idx.into_iter().enumerate() {
        versions[i].local.rank = from.saturating_add(r as u32 + 1);
    }
}
