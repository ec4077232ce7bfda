//! `fsck`: proves the tree matches the catalog, without network access, and repairs it.
//!
//! Checks: every version the catalog holds has its file at its path with its size and mtime
//! (and, with content verification, its MD5 or multipart ETag); every file in the tree is one
//! the catalog knows (else a stray); every directory's versions JSON is exactly what the
//! catalog renders; no run is left unfinished. Repairs never delete user data: strays and
//! damaged files move into `.<stem>/quarantine/<time>/`, damaged or missing versions are
//! marked missing in the catalog (the `fsck` command then fetches them with
//! [`crate::sync::refetch`], unless told not to; else the next `sync` does), wrong mtimes are
//! set, versions JSON files are rewritten.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use md5::{Digest, Md5};
use rayon::prelude::*;
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::catalog::{self, file_path};
use crate::model::etag::ETag;
use crate::sync::plan;
use crate::model::record::LocalState;
use crate::model::timestamp::Timestamp;
use crate::backup::versions_json::{Renderer, write_versions_file};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// A held version's file is not there.
    Missing {
        path: String,
        key: String,
        version_id: String,
    },
    WrongSize {
        path: String,
        expected: u64,
        actual: u64,
    },
    WrongMtime {
        path: String,
        expected: String,
        actual: String,
    },
    /// The bytes do not match the ETag (content verification).
    Corrupt { path: String, reason: String },
    /// A file the catalog does not know.
    Stray { path: String },
    /// A stray that is a missing version's file (same size and mtime, and bytes that match
    /// its ETag where it can tell), found elsewhere in the tree.
    Misplaced { path: String, belongs: String },
    /// A versions JSON that is not what the catalog says (or should not exist).
    VersionsJson { dir: String, reason: String },
    /// A sync run was interrupted; `sync` resumes it.
    UnfinishedRun {
        date: String,
        journal_entries: usize,
    },
}

impl Problem {
    /// What `--repair` does about it.
    pub fn repair(&self) -> &'static str {
        match self {
            Problem::Missing { .. } => {
                "mark missing in the catalog, download it again (with --no-fetch: the next sync does)"
            }
            Problem::WrongSize { .. } | Problem::Corrupt { .. } => {
                "move to quarantine, mark missing, download it again (with --no-fetch: the next sync does)"
            }
            Problem::WrongMtime { .. } => "set the mtime",
            Problem::Stray { .. } => "move to quarantine",
            Problem::Misplaced { .. } => "move it back where it belongs",
            Problem::VersionsJson { .. } => "rewrite it from the catalog",
            Problem::UnfinishedRun { .. } => {
                "roll it back (or run `s3invbackup sync` to finish it instead)"
            }
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub files_checked: u64,
    pub bytes_verified: u64,
    /// Files whose bytes the ETag cannot check: SSE-KMS/SSE-C ETags, or multipart uploads
    /// whose part size is not a whole number of MiB (checked by size only).
    pub unverifiable: u64,
    pub problems: Vec<Problem>,
    pub repaired: bool,
}

pub struct FsckOptions {
    pub verify_content: bool,
    pub repair: bool,
    pub progress: crate::sys::progress::Mode,
    pub progress_interval: std::time::Duration,
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

struct Held {
    path: String,
    key: String,
    version_id: String,
    size: u64,
    etag: Option<ETag>,
    etag_is_md5: bool,
    last_modified: Timestamp,
}

pub fn fsck(backup: &Backup, opts: &FsckOptions) -> Result<FsckReport> {
    let mut report = FsckReport::default();
    for run in pending_runs(backup)? {
        report.problems.push(run);
    }
    if opts.repair && !report.problems.is_empty() {
        // An unfinished run is rolled back first (`sync` would finish it instead); the
        // rest of the check then sees the tree as the last applied date left it.
        if let Some(r) = crate::maintain::rollback::rollback(backup)? {
            tracing::warn!("rolled back the unfinished run of {}", r.date);
        }
        report.repaired = true;
    }
    let reader = catalog::open(&backup.catalog_path())?;
    let mut held: Vec<Held> = Vec::new();
    let mut expected_json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut renderer = Renderer::new(None);
    let mut collect = |dir: &str, text: &[u8]| {
        expected_json.insert(dir.to_string(), text.to_vec());
        Ok(())
    };
    let mut stream = reader.stream();
    while let Some(rec) = stream.next_record()? {
        renderer.add(rec, &mut collect)?;
        if let Some(path) = file_path(&backup.stem, rec) {
            held.push(Held {
                path,
                key: rec.key.clone(),
                version_id: rec.version_id.clone(),
                size: rec.size,
                etag: rec.etag,
                etag_is_md5: rec.etag_is_md5(),
                last_modified: rec.last_modified,
            });
        }
    }
    renderer.close_all(&mut collect)?;

    // Metadata of every held file, in parallel (a stat each).
    let metadata_problems: Vec<Problem> = held
        .par_iter()
        .filter_map(|h| {
            let p = backup.root.join(&h.path);
            match std::fs::symlink_metadata(&p) {
                Err(_) => Some(Problem::Missing {
                    path: h.path.clone(),
                    key: h.key.clone(),
                    version_id: h.version_id.clone(),
                }),
                Ok(m) if !m.is_file() || m.len() != h.size => Some(Problem::WrongSize {
                    path: h.path.clone(),
                    expected: h.size,
                    actual: m.len(),
                }),
                Ok(m) if mtime_ms(&m) != h.last_modified.0 => Some(Problem::WrongMtime {
                    path: h.path.clone(),
                    expected: h.last_modified.to_string(),
                    actual: Timestamp(mtime_ms(&m)).to_string(),
                }),
                Ok(_) => None,
            }
        })
        .collect();
    let bad_paths: HashSet<String> = metadata_problems
        .iter()
        .filter_map(|p| match p {
            Problem::Missing { path, .. } | Problem::WrongSize { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    report.files_checked = held.len() as u64;
    report.problems.extend(metadata_problems);

    if opts.verify_content {
        verify_all(backup, &held, &bad_paths, opts, &mut report)?;
    }

    // The tree: strays and versions JSON.
    let known: HashSet<&str> = held.iter().map(|h| h.path.as_str()).collect();
    let versions_file = backup.stem.versions_file();
    let state_dir = backup.stem.state_dir();
    let mut seen_json = HashSet::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(backup.root.join(&dir))
            .with_context(|| format!("reading {}", backup.root.join(&dir).display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if rel != state_dir {
                    stack.push(rel);
                }
            } else if name == versions_file {
                seen_json.insert(dir.clone());
                let actual = std::fs::read(entry.path())?;
                match expected_json.get(&dir) {
                    Some(want) if *want == actual => {}
                    Some(_) => report.problems.push(Problem::VersionsJson {
                        dir: dir.clone(),
                        reason: "differs from the catalog".into(),
                    }),
                    None => report.problems.push(Problem::VersionsJson {
                        dir: dir.clone(),
                        reason: "the directory has no current file".into(),
                    }),
                }
            } else if !known.contains(rel.as_str()) {
                report.problems.push(Problem::Stray { path: rel });
            }
        }
    }
    find_misplaced(backup, &held, &mut report.problems);
    for dir in expected_json.keys() {
        if !seen_json.contains(dir) {
            report.problems.push(Problem::VersionsJson {
                dir: dir.clone(),
                reason: "missing".into(),
            });
        }
    }
    report.problems.sort_by_key(|p| format!("{p:?}"));

    let to_repair: Vec<Problem> = report
        .problems
        .iter()
        .filter(|p| !matches!(p, Problem::UnfinishedRun { .. }))
        .cloned()
        .collect();
    if opts.repair && !to_repair.is_empty() {
        repair(backup, &to_repair, &expected_json)?;
        report.repaired = true;
    }
    Ok(report)
}

/// Hashes every held file (all cores), with progress. Resumable: verified paths are
/// appended to `.<stem>/verify-progress` (keyed to the catalog it checked), so an interrupted
/// run skips them next time; the file goes when a run completes.
fn verify_all(
    backup: &Backup,
    held: &[Held],
    bad_paths: &HashSet<String>,
    opts: &FsckOptions,
    report: &mut FsckReport,
) -> Result<()> {
    use std::io::{BufRead, Write};
    use std::sync::Mutex;
    use std::sync::atomic::Ordering::Relaxed;

    let progress_path = backup.state_dir().join("verify-progress");
    let catalog_meta = std::fs::metadata(backup.catalog_path())?;
    let identity = {
        use std::os::unix::fs::MetadataExt;
        format!(
            "catalog {} {}.{:09}",
            catalog_meta.len(),
            catalog_meta.mtime(),
            catalog_meta.mtime_nsec()
        )
    };
    let mut done_before: HashSet<String> = HashSet::new();
    if let Ok(f) = std::fs::File::open(&progress_path) {
        let mut lines = std::io::BufReader::new(f).lines();
        if lines.next().and_then(|l| l.ok()).as_deref() == Some(identity.as_str()) {
            done_before.extend(lines.map_while(|l| l.ok()));
        }
    }
    let resumed = !done_before.is_empty();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(&progress_path)
        .with_context(|| format!("opening {}", progress_path.display()))?;
    if !resumed {
        writeln!(file, "{identity}")?;
    } else {
        tracing::warn!(
            "resuming content verification: {} files were verified by an interrupted run",
            done_before.len()
        );
    }
    let log = Mutex::new(std::io::BufWriter::new(file));
    let todo: Vec<&Held> = held
        .iter()
        .filter(|h| !bad_paths.contains(&h.path) && !done_before.contains(&h.path))
        .collect();
    let counters = std::sync::Arc::new(crate::sys::progress::Counters::default());
    let _reporter = crate::sys::progress::Reporter::start(
        "fsck --verify-content",
        todo.len() as u64,
        todo.iter().map(|h| h.size).sum(),
        std::sync::Arc::clone(&counters),
        opts.progress,
        opts.progress_interval,
    );
    let outcomes: Vec<(Option<Problem>, bool)> = todo
        .par_iter()
        .map(|h| {
            let outcome = match verify_content(&backup.root.join(&h.path), h) {
                Ok(verified) => {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(log, "{}", h.path);
                    (None, verified)
                }
                Err(reason) => (
                    Some(Problem::Corrupt {
                        path: h.path.clone(),
                        reason,
                    }),
                    true,
                ),
            };
            counters.files_done.fetch_add(1, Relaxed);
            counters.bytes.fetch_add(h.size, Relaxed);
            outcome
        })
        .collect();
    drop(log);
    let _ = std::fs::remove_file(&progress_path);
    report.bytes_verified = todo.iter().map(|h| h.size).sum();
    report.unverifiable = outcomes.iter().filter(|(_, v)| !v).count() as u64;
    report
        .problems
        .extend(outcomes.into_iter().filter_map(|(p, _)| p));
    Ok(())
}

/// Pairs strays with missing versions: a file moved by hand (or left by an old layout) is
/// put back instead of being quarantined and fetched again.
fn find_misplaced(backup: &Backup, held: &[Held], problems: &mut Vec<Problem>) {
    let missing: HashMap<&str, &Held> = held.iter().map(|h| (h.path.as_str(), h)).collect();
    let mut by_shape: HashMap<(u64, i64), Vec<&Held>> = HashMap::new();
    for p in problems.iter() {
        if let Problem::Missing { path, .. } = p
            && let Some(h) = missing.get(path.as_str())
        {
            by_shape
                .entry((h.size, h.last_modified.0))
                .or_default()
                .push(h);
        }
    }
    if by_shape.is_empty() {
        return;
    }
    let mut found: Vec<(String, String)> = Vec::new();
    for p in problems.iter() {
        let Problem::Stray { path } = p else { continue };
        let full = backup.root.join(path);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            continue;
        };
        let Some(candidates) = by_shape.get_mut(&(meta.len(), mtime_ms(&meta))) else {
            continue;
        };
        if let Some(i) = candidates
            .iter()
            .position(|h| verify_content(&full, h).is_ok())
        {
            let h = candidates.remove(i);
            found.push((path.clone(), h.path.clone()));
        }
    }
    for (stray, belongs) in found {
        problems.retain(|p| {
            !matches!(p, Problem::Stray { path } if *path == stray)
                && !matches!(p, Problem::Missing { path, .. } if *path == belongs)
        });
        problems.push(Problem::Misplaced {
            path: stray,
            belongs,
        });
    }
}

fn pending_runs(backup: &Backup) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    let state = backup.read_state()?;
    if let Ok(entries) = std::fs::read_dir(backup.runs_dir()) {
        for e in entries.flatten() {
            if let Some(s) = plan::read_summary(&e.path())?
                && state.last_applied().is_none_or(|l| s.date.as_str() > l)
            {
                out.push(Problem::UnfinishedRun {
                    date: s.date,
                    journal_entries: crate::backup::journal::read(&e.path())?.len(),
                });
            }
        }
    }
    Ok(out)
}

/// The MD5 of the bytes (single part), or the MD5 of the part MD5s for a multipart ETag,
/// trying the part sizes uploaders use (whole MiB between size/parts and size/(parts-1)).
/// `Ok(false)`: the ETag cannot check these bytes (opaque ETag, or a multipart upload with
/// an unusual part size: the catalog does not record part sizes).
fn verify_content(path: &Path, h: &Held) -> Result<bool, String> {
    let Some(etag) = h.etag.filter(|_| h.etag_is_md5) else {
        return Ok(false); // size already checked; the ETag says nothing more
    };
    let bytes = std::fs::read(path).map_err(|e| format!("reading: {e}"))?;
    if etag.parts == 0 {
        let md5: [u8; 16] = Md5::digest(&bytes).into();
        return if md5 == etag.md5 {
            Ok(true)
        } else {
            Err(format!(
                "MD5 {} is not the ETag {etag}",
                crate::inventory::hex(&md5)
            ))
        };
    }
    let parts = u64::from(etag.parts);
    let size = bytes.len() as u64;
    const MIB: u64 = 1 << 20;
    let low = size.div_ceil(parts);
    let high = if parts > 1 {
        (size - 1) / (parts - 1)
    } else {
        size
    };
    let mut candidate = low.div_ceil(MIB).max(1) * MIB;
    let mut tried = 0;
    while candidate <= high.max(low) && tried < 64 {
        let mut outer = Md5::new();
        for chunk in bytes.chunks(candidate as usize) {
            outer.update(Md5::digest(chunk));
        }
        let md5: [u8; 16] = outer.finalize().into();
        if bytes.chunks(candidate as usize).count() as u64 == parts && md5 == etag.md5 {
            return Ok(true);
        }
        candidate += MIB;
        tried += 1;
    }
    if tried == 0 {
        // No whole-MiB part size fits the part count: the catalog does not record part
        // sizes, so only the size was checked.
        return Ok(false);
    }
    // Whole-MiB sizes fit but none gives the ETag: corrupt (or, rarely, an uploader with
    // an odd part size: repair then costs one verified re-download, and the file is kept
    // in quarantine).
    Err(format!(
        "no part size of whole MiB between {low} and {high} bytes gives the multipart ETag {etag}"
    ))
}

fn repair(
    backup: &Backup,
    problems: &[Problem],
    expected_json: &HashMap<String, Vec<u8>>,
) -> Result<()> {
    let _lock = backup.lock()?;
    let quarantine = backup
        .state_dir()
        .join("quarantine")
        .join(Timestamp::now().to_string().replace(':', "-"));
    let to_quarantine = |rel: &str| -> Result<()> {
        let from = backup.root.join(rel);
        let to = quarantine.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))
    };
    let mut now_missing: HashSet<String> = HashSet::new();
    for p in problems {
        match p {
            Problem::Missing { path, .. } => {
                now_missing.insert(path.clone());
            }
            Problem::WrongSize { path, .. } | Problem::Corrupt { path, .. } => {
                if backup.root.join(path).exists() {
                    to_quarantine(path)?;
                }
                now_missing.insert(path.clone());
            }
            Problem::WrongMtime { path, expected, .. } => {
                let t = Timestamp::parse(expected.as_bytes()).expect("formatted by us");
                std::fs::File::options()
                    .write(true)
                    .open(backup.root.join(path))
                    .and_then(|f| f.set_modified(t.as_system_time()))
                    .with_context(|| format!("setting the mtime of {path}"))?;
            }
            Problem::Stray { path } => to_quarantine(path)?,
            Problem::Misplaced { path, belongs } => {
                let (from, to) = (backup.root.join(path), backup.root.join(belongs));
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::rename(&from, &to)
                    .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
            }
            Problem::VersionsJson { dir, .. } => {
                write_versions_file(backup, dir, expected_json.get(dir).map(Vec::as_slice))?;
            }
            Problem::UnfinishedRun { .. } => {}
        }
    }
    if !now_missing.is_empty() {
        mark_missing(backup, &now_missing)?;
        // Their directories' JSON must no longer list them.
        let dirs: HashSet<String> = now_missing
            .iter()
            .map(|p| catalog::parent_dir(p).to_string())
            .collect();
        let dirs: Vec<String> = dirs.into_iter().collect();
        crate::backup::versions_json::write_versions_files(backup, &backup.catalog_path(), &dirs)?;
    }
    crate::sync::apply::sync_filesystem(&backup.root)
}

/// Rewrites the catalog with the versions whose files are at `paths` marked missing, and
/// records them in the state as retryable, so that the next sync fetches them again.
fn mark_missing(backup: &Backup, paths: &HashSet<String>) -> Result<()> {
    let tmp = backup.state_dir().join("catalog.fsck.s3inv");
    let mut marked = 0u64;
    catalog::rewrite(&backup.catalog_path(), &tmp, |rec| {
        if file_path(&backup.stem, rec).is_some_and(|p| paths.contains(&p)) {
            rec.local.state = LocalState::Missing;
            marked += 1;
        }
    })?;
    std::fs::rename(&tmp, backup.catalog_path())
        .with_context(|| format!("replacing {}", backup.catalog_path().display()))?;
    let mut state = backup.read_state()?;
    if let Some(last) = state.applied.last_mut() {
        last.not_held += marked;
        last.retryable += marked;
    }
    backup.write_state(&state)
}

/// Where fsck --repair puts what it moves out of the tree.
pub fn quarantine_dir(backup: &Backup) -> PathBuf {
    backup.state_dir().join("quarantine")
}
