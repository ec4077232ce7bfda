//! The executor: carries out a planned run on the tree, then commits it.
//!
//! All changes to the tree are made by one thread (this one), each journaled first: moves
//! and directory changes as the plan is read, placements as downloads verify. Downloads run
//! on the fetcher's pool into the staging area (same filesystem), so a file appears in the
//! tree only whole and verified, with its mtime already set. Every step is idempotent --
//! a rename whose target exists and source does not is done, a download whose destination
//! holds the right size and mtime is done, a verified file in staging is placed without
//! fetching it again -- so a resumed run replays the plan from the start.
//!
//! Commit: failed versions are marked in the new catalog (retried next run), the versions
//! JSON of every directory the run changed is rewritten once from the new catalog, the
//! filesystem is synced, and the catalog and state are replaced atomically, in that order.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use md5::{Digest, Md5};
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::catalog;
use crate::sync::fetch::{FetchCounters, FetchError, FetchOptions, FetchRequest, fetch_all};
use crate::index::IndexReader;
use crate::backup::journal::{Entry, Journal};
use crate::sync::plan::{self, Step};
use crate::sys::progress::{Counters, Mode, Reporter};
use crate::model::record::LocalState;
use crate::s3::S3Client;
use crate::model::timestamp::Timestamp;

/// The run's catalog with this run's failures marked (written only when there are some).
pub const FINAL_CATALOG: &str = "catalog.final.s3inv";

/// A version that could not be fetched in this run.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub key: String,
    pub version_id: String,
    pub last_modified: Timestamp,
    pub size: u64,
    pub state: &'static str,
    pub error: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunOutcome {
    pub date: String,
    pub downloaded: u64,
    pub downloaded_bytes: u64,
    /// Verified files found in staging from an interrupted run and placed without a GET.
    pub reused_from_staging: u64,
    pub renamed: u64,
    pub displaced: u64,
    pub versions_files: u64,
    pub requests: u64,
    pub failures: Vec<Failure>,
    pub interrupted: bool,
}

pub struct Executor<'a> {
    pub backup: &'a Backup,
    pub client: &'a S3Client,
    pub bucket: &'a str,
    pub fetch: FetchOptions,
    pub progress: Mode,
    pub progress_interval: std::time::Duration,
}

/// Where a version is staged: a name derived from the version (so a resumed run finds it),
/// spread over 256 directories (32 threads creating files in one directory serialize on
/// its lock).
pub fn staging_rel(key: &str, version_id: &str, last_modified: Timestamp) -> String {
    let mut h = Md5::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(version_id.as_bytes());
    h.update([0]);
    h.update(last_modified.0.to_le_bytes());
    let hex = crate::inventory::hex(&h.finalize());
    format!("staging/{}/{}", &hex[..2], &hex[2..])
}

/// The file at `path` has this size and mtime (to the millisecond): it is a verified copy,
/// since mtimes are set only after verification.
fn is_verified_copy(path: &Path, size: u64, last_modified: Timestamp) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.len() == size
        && meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|d| d.as_millis() as i64 == last_modified.0)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn make_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    Ok(())
}

struct Pending {
    dest: String,
    key: String,
    version_id: String,
}

impl Executor<'_> {
    /// Runs the plan in `run_dir` to the end (or to a graceful stop).
    pub fn execute(&self, run_dir: &Path, summary: &plan::PlanSummary) -> Result<RunOutcome> {
        let root = &self.backup.root;
        let state_dir = self.backup.state_dir();
        // Staging shards are made as downloads need them (a small run needs few).
        let shards_made = RefCell::new([false; 256]);
        // Moves an earlier attempt of this run made: their source path may hold a newer
        // file since (the current path, refilled by a download), so "target exists" means done.
        let moved_before: HashSet<(String, String)> = crate::backup::journal::read(run_dir)?
            .into_iter()
            .filter_map(|e| match e {
                Entry::Rename { from, to } => Some((from, to)),
                _ => None,
            })
            .collect();
        let journal = RefCell::new(Journal::open(run_dir)?);
        let outcome = RefCell::new(RunOutcome {
            date: summary.date.clone(),
            ..RunOutcome::default()
        });
        let error: RefCell<Option<anyhow::Error>> = RefCell::new(None);
        let pending: RefCell<HashMap<PathBuf, Pending>> = RefCell::new(HashMap::new());
        let counters = Arc::new(Counters::default());
        let fetch_counters = FetchCounters::default();
        let _reporter = Reporter::start(
            &format!("sync {}", summary.date),
            summary.fetches,
            summary.fetch_bytes,
            Arc::clone(&counters),
            self.progress,
            self.progress_interval,
        );
        let mode = self.backup.config.file_mode;

        let place = |staging: &Path, dest: &str| -> Result<()> {
            let staging_rel = staging
                .strip_prefix(&state_dir)
                .unwrap_or(staging)
                .to_string_lossy()
                .into_owned();
            journal.borrow_mut().append(&Entry::Place {
                staging: staging_rel,
                dest: dest.to_string(),
            })?;
            let target = root.join(dest);
            if exists(&target) {
                bail!(
                    "{} already exists where the plan places a new version; the tree does not \
                     match the catalog (run fsck)",
                    target.display()
                );
            }
            make_parent(&target)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(staging, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", staging.display()))?;
            std::fs::rename(staging, &target)
                .with_context(|| format!("moving {} to {}", staging.display(), target.display()))
        };

        let run_step = |step: Step| -> Result<Option<FetchRequest>> {
            match step {
                Step::Rename { from, to } => {
                    let (src, dst) = (root.join(&from), root.join(&to));
                    if exists(&dst) && moved_before.contains(&(from.clone(), to.clone())) {
                        return Ok(None);
                    }
                    if exists(&src) {
                        if exists(&dst) {
                            bail!(
                                "cannot move {from} to {to}: the target exists; the tree does \
                                 not match the catalog (run fsck)"
                            );
                        }
                        journal.borrow_mut().append(&Entry::Rename {
                            from: from.clone(),
                            to: to.clone(),
                        })?;
                        make_parent(&dst)?;
                        std::fs::rename(&src, &dst).with_context(|| {
                            format!("moving {} to {}", src.display(), dst.display())
                        })?;
                        outcome.borrow_mut().renamed += 1;
                    } else if !exists(&dst) {
                        bail!(
                            "{} is missing: the catalog says it holds a version; run fsck \
                             --repair to fetch it again",
                            src.display()
                        );
                    }
                    Ok(None)
                }
                Step::Displace { dir, to } => {
                    let src = root.join(&dir);
                    if src.is_dir() {
                        journal.borrow_mut().append(&Entry::Displace {
                            dir: dir.clone(),
                            to: to.clone(),
                            merged: exists(&root.join(&to)),
                        })?;
                        merge_dir(&src, &root.join(&to), &self.backup.stem)?;
                        outcome.borrow_mut().displaced += 1;
                    }
                    Ok(None)
                }
                Step::Mkdir { dir } => {
                    let path = root.join(&dir);
                    if !path.is_dir() {
                        journal
                            .borrow_mut()
                            .append(&Entry::Mkdir { dir: dir.clone() })?;
                        std::fs::create_dir_all(&path)
                            .with_context(|| format!("creating directory {}", path.display()))?;
                    }
                    Ok(None)
                }
                Step::Fetch {
                    key,
                    version_id,
                    last_modified,
                    size,
                    etag,
                    etag_is_md5,
                    dest,
                } => {
                    if is_verified_copy(&root.join(&dest), size, last_modified) {
                        counters.files_done.fetch_add(1, Ordering::Relaxed);
                        return Ok(None);
                    }
                    let staging = state_dir.join(staging_rel(&key, &version_id, last_modified));
                    if is_verified_copy(&staging, size, last_modified) {
                        place(&staging, &dest)?;
                        outcome.borrow_mut().reused_from_staging += 1;
                        counters.files_done.fetch_add(1, Ordering::Relaxed);
                        return Ok(None);
                    }
                    let shard = staging.parent().expect("sharded");
                    let id = usize::from_str_radix(
                        &shard.file_name().unwrap_or_default().to_string_lossy(),
                        16,
                    )
                    .unwrap_or(0)
                        & 255;
                    if !shards_made.borrow()[id] {
                        std::fs::create_dir_all(shard)
                            .with_context(|| format!("creating {}", shard.display()))?;
                        shards_made.borrow_mut()[id] = true;
                    }
                    pending.borrow_mut().insert(
                        staging.clone(),
                        Pending {
                            dest,
                            key: key.clone(),
                            version_id: version_id.clone(),
                        },
                    );
                    Ok(Some(FetchRequest {
                        bucket: self.bucket.to_string(),
                        key,
                        version_id: Some(version_id),
                        size,
                        etag: plan::parse_etag(&etag),
                        etag_is_md5,
                        last_modified,
                        dest: staging,
                    }))
                }
            }
        };

        let requests = plan::read_steps(run_dir)?
            .map_while(|step| {
                if error.borrow().is_some() {
                    return None;
                }
                if crate::sys::stop::stop_requested() {
                    outcome.borrow_mut().interrupted = true;
                    return None;
                }
                match step.and_then(&run_step) {
                    Ok(request) => Some(request),
                    Err(e) => {
                        *error.borrow_mut() = Some(e);
                        None
                    }
                }
            })
            .flatten();

        crate::sys::stop::set_graceful(true);
        let fetched = fetch_all(self.client, requests, &self.fetch, &fetch_counters, |r| {
            let Some(p) = pending.borrow_mut().remove(&r.request.dest) else {
                return;
            };
            counters.files_done.fetch_add(1, Ordering::Relaxed);
            match r.outcome {
                Ok(_) => {
                    if error.borrow().is_some() {
                        return; // stays verified in staging for the next run
                    }
                    match place(&r.request.dest, &p.dest) {
                        Ok(()) => {
                            let mut o = outcome.borrow_mut();
                            o.downloaded += 1;
                            o.downloaded_bytes += r.request.size;
                            counters.bytes.fetch_add(r.request.size, Ordering::Relaxed);
                        }
                        Err(e) => *error.borrow_mut() = Some(e),
                    }
                }
                Err(FetchError::Local(e)) => {
                    // Disk full, too many open files...: stop asking for more; what verified
                    // stays in staging for the run that resumes this one.
                    if error.borrow().is_none() {
                        *error.borrow_mut() = Some(e);
                    }
                }
                Err(e) => {
                    let state = match e {
                        FetchError::Archived(_) => LocalState::Archived,
                        _ => LocalState::Missing,
                    };
                    outcome.borrow_mut().failures.push(Failure {
                        key: p.key,
                        version_id: p.version_id,
                        last_modified: r.request.last_modified,
                        size: r.request.size,
                        state: state.name(),
                        error: e.to_string(),
                    });
                }
            }
        });
        crate::sys::stop::set_graceful(false);
        journal.borrow().sync()?;
        if let Some(e) = error.into_inner() {
            return Err(e);
        }
        fetched?;
        if crate::sys::stop::stop_requested() {
            outcome.borrow_mut().interrupted = true;
        }
        let mut outcome = outcome.into_inner();
        outcome.requests = fetch_counters.requests.load(Ordering::Relaxed);
        Ok(outcome)
    }

    /// Marks failures in the new catalog, rewrites the versions JSON of the run's
    /// directories, syncs the filesystem and replaces the catalog. The caller then records
    /// the date in the state and removes the run directory.
    pub fn commit(&self, run_dir: &Path, outcome: &mut RunOutcome) -> Result<()> {
        let planned = run_dir.join(plan::CATALOG);
        let final_path = if outcome.failures.is_empty() {
            planned
        } else {
            let failed: HashMap<(String, String, i64), LocalState> = outcome
                .failures
                .iter()
                .map(|f| {
                    let state = if f.state == LocalState::Archived.name() {
                        LocalState::Archived
                    } else {
                        LocalState::Missing
                    };
                    (
                        (f.key.clone(), f.version_id.clone(), f.last_modified.0),
                        state,
                    )
                })
                .collect();
            let out = run_dir.join(FINAL_CATALOG);
            catalog::rewrite(&planned, &out, |rec| {
                let id = (rec.key.clone(), rec.version_id.clone(), rec.last_modified.0);
                if let Some(state) = failed.get(&id) {
                    rec.local.state = *state;
                }
            })?;
            out
        };
        let mut journal = Journal::open(run_dir)?;
        journal.append(&Entry::Versions)?;
        let dirty = plan::read_dirty(run_dir)?;
        let t = std::time::Instant::now();
        outcome.versions_files =
            crate::backup::versions_json::write_versions_files(self.backup, &final_path, &dirty)?;
        tracing::debug!(
            "{} versions JSON files in {:.2} s",
            outcome.versions_files,
            t.elapsed().as_secs_f64()
        );
        let t = std::time::Instant::now();
        sync_filesystem(&self.backup.root)?;
        tracing::debug!("filesystem synced in {:.2} s", t.elapsed().as_secs_f64());
        journal.append(&Entry::Commit)?;
        journal.sync()?;
        let catalog_path = self.backup.catalog_path();
        std::fs::rename(&final_path, &catalog_path).with_context(|| {
            format!(
                "replacing {} with {}",
                catalog_path.display(),
                final_path.display()
            )
        })?;
        // The rename must be on disk before the state says the date is applied.
        let state_dir = self.backup.state_dir();
        std::fs::File::open(&state_dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", state_dir.display()))?;
        Ok(())
    }
}

/// Moves directory `src` to `dst`, merging into `dst` if it exists. The entries of a
/// displaced directory are old versions (unique names) and directories; a versions JSON is
/// derived data and may be replaced.
fn merge_dir(src: &Path, dst: &Path, stem: &crate::backup::layout::NameStem) -> Result<()> {
    if !exists(dst) {
        return std::fs::rename(src, dst)
            .with_context(|| format!("moving {} to {}", src.display(), dst.display()));
    }
    if !dst.is_dir() {
        bail!(
            "cannot move directory {} to {}: a file is in the way",
            src.display(),
            dst.display()
        );
    }
    let versions_file = stem.versions_file();
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry.with_context(|| format!("reading {}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if from.is_dir() && to.is_dir() {
            merge_dir(&from, &to, stem)?;
        } else if exists(&to) && entry.file_name().to_str() != Some(versions_file.as_str()) {
            bail!(
                "cannot merge {} into {}: {} exists in both",
                src.display(),
                dst.display(),
                entry.file_name().to_string_lossy()
            );
        } else {
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    std::fs::remove_dir(src).with_context(|| format!("removing empty {}", src.display()))
}

/// Flushes everything written to the backup's filesystem (one `syncfs`, not one `fsync`
/// per file: a first backup places millions of files).
pub fn sync_filesystem(root: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: syncfs takes a valid open file descriptor and has no other preconditions.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncing the filesystem of {}", root.display()));
    }
    Ok(())
}

/// Reads a whole catalog into memory (tests and small tools only).
pub fn read_all(path: &Path) -> Result<Vec<crate::model::record::VersionRecord>> {
    let r = IndexReader::open(path)?;
    r.stream().collect()
}
