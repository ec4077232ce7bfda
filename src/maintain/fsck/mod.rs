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

//!
//! The jobs, one module each: [`check`] (what the catalog expects, each file's metadata, the
//! tree walk, misplaced files), [`verify`] (content, resumable) and [`repair`].

mod check;
mod repair;
pub(crate) mod verify;

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::backup::Backup;
use crate::sys::progress::Progress;

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
    /// A symbolic link in the tree: no command follows, removes or writes through one.
    Symlink { path: String, target: String },
    /// A shard's state directory is missing or damaged (its state, manifest or a catalog
    /// part): the tree cannot be checked against the catalog until it is rebuilt.
    DamagedShard { shard: u32, reason: String },
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
            Problem::Symlink { .. } => {
                "none: replace the link by the directory it points to (remove the link, move the target there), or keep the whole backup where it points"
            }
            Problem::DamagedShard { .. } => {
                "move what is left to quarantine, start the shard afresh and sync it again (its files in the tree are adopted by size and mtime, not downloaded again)"
            }
        }
    }

    /// Its name in a table: `missing`, `wrong-size`, … (the JSON's `problem`).
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Missing { .. } => "missing",
            Problem::WrongSize { .. } => "wrong-size",
            Problem::WrongMtime { .. } => "wrong-mtime",
            Problem::Corrupt { .. } => "corrupt",
            Problem::Stray { .. } => "stray",
            Problem::Misplaced { .. } => "misplaced",
            Problem::VersionsJson { .. } => "versions-json",
            Problem::UnfinishedRun { .. } => "unfinished-run",
            Problem::Symlink { .. } => "symlink",
            Problem::DamagedShard { .. } => "damaged-shard",
        }
    }

    /// What was found, beyond the path.
    pub fn detail(&self) -> String {
        match self {
            Problem::Missing { version_id, .. } => {
                format!("version {}", crate::model::version_id::to_s3(version_id))
            }
            Problem::WrongSize {
                expected, actual, ..
            } => format!("{actual} bytes, expected {expected}"),
            Problem::WrongMtime {
                expected, actual, ..
            } => format!("mtime {actual}, expected {expected}"),
            Problem::Corrupt { reason, .. } | Problem::VersionsJson { reason, .. } => {
                reason.clone()
            }
            Problem::Stray { .. } => "not in the catalog".to_string(),
            Problem::Misplaced { belongs, .. } => format!("belongs at {belongs}"),
            Problem::UnfinishedRun {
                date,
                journal_entries,
            } => format!("the run of {date} ({journal_entries} journal entries)"),
            Problem::Symlink { target, .. } => format!("-> {target}"),
            Problem::DamagedShard { shard, reason } => format!("shard {shard}: {reason}"),
        }
    }

    /// What an unfinished run's own changes look like (and resuming or rolling it back
    /// resolves); a link or corrupt bytes are never that.
    fn folds_under_a_run(&self) -> bool {
        matches!(
            self,
            Problem::Missing { .. }
                | Problem::WrongSize { .. }
                | Problem::WrongMtime { .. }
                | Problem::Stray { .. }
                | Problem::Misplaced { .. }
                | Problem::VersionsJson { .. }
        )
    }

    /// `--repair` can fix it.
    pub fn repairable(&self) -> bool {
        !matches!(self, Problem::Symlink { .. })
    }

    /// The file or directory it is about, relative to the root.
    pub fn path(&self) -> Option<&str> {
        match self {
            Problem::Missing { path, .. }
            | Problem::WrongSize { path, .. }
            | Problem::WrongMtime { path, .. }
            | Problem::Corrupt { path, .. }
            | Problem::Stray { path }
            | Problem::Misplaced { path, .. }
            | Problem::Symlink { path, .. } => Some(path),
            Problem::VersionsJson { dir, .. } => Some(dir),
            Problem::UnfinishedRun { .. } | Problem::DamagedShard { .. } => None,
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
    /// The date of the unfinished run `--repair` rolled back first.
    pub rolled_back: Option<String>,
    /// Problems at paths the unfinished run touches (its placed files look like strays,
    /// its moved ones like missing files): counted here, not listed, since resuming or
    /// rolling back the run is their one fix.
    pub unfinished_run_paths: u64,
    /// Damaged shards `--repair` started afresh: each must sync again (the `fsck` command
    /// does, unless told not to fetch).
    pub rebuilt_shards: Vec<u32>,
}

pub struct FsckOptions {
    pub verify_content: bool,
    pub repair: bool,
    pub progress: Progress,
}

pub fn fsck(backup: &Backup, opts: &FsckOptions) -> Result<FsckReport> {
    let mut report = FsckReport::default();
    // A running sync changes the tree under the walk: every file it places would look like
    // a stray. (--repair takes the lock itself, and so refuses the same way.)
    if !opts.repair
        && let Some(holder) = backup.lock_holder()
    {
        return Err(crate::error::Refusal::Locked {
            backup: backup.root.clone(),
            holder,
        }
        .into());
    }
    // A damaged shard first: without its catalog nothing in its part of the tree can be
    // told from a stray, so nothing else is checked (or repaired) until it is rebuilt.
    let damaged = damaged_shards(backup);
    if !damaged.is_empty() {
        for (shard, reason) in &damaged {
            report.problems.push(Problem::DamagedShard {
                shard: *shard,
                reason: reason.clone(),
            });
        }
        if opts.repair {
            for (shard, _) in &damaged {
                rebuild_shard(backup, *shard)?;
                report.rebuilt_shards.push(*shard);
            }
            report.repaired = true;
        }
        return Ok(report);
    }
    let mut touched: Option<HashSet<String>> = None;
    // (Each shard of a sharded backup may have a run of its own.)
    for part in backup.parts() {
        let Some(run) = part.pending_run(&part.read_state()?)? else {
            continue;
        };
        if !opts.repair {
            touched
                .get_or_insert_with(HashSet::new)
                .extend(touched_paths(&run.dir)?);
        }
        report.problems.push(Problem::UnfinishedRun {
            journal_entries: run.dir.read_journal()?.len(),
            date: run.summary.date,
        });
        if opts.repair {
            // Rolled back first (`sync` would finish it instead); the rest of the check then
            // sees the tree as the last applied date left it.
            report.rolled_back = crate::maintain::rollback::rollback(&part)?.map(|r| r.date);
            report.repaired = true;
        }
    }
    if report.rolled_back.is_some() && backup.config.shards.is_some() {
        crate::backup::versions_json::write_spine_versions_files(backup)?;
    }
    let expected = check::expected(backup)?;
    let metadata_problems = check::metadata(backup, &expected.held);
    let bad_paths: HashSet<String> = metadata_problems
        .iter()
        .filter_map(|p| match p {
            Problem::Missing { path, .. } | Problem::WrongSize { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    report.files_checked = expected.held.len() as u64;
    report.problems.extend(metadata_problems);
    if opts.verify_content {
        verify::verify_all(backup, &expected.held, &bad_paths, opts, &mut report)?;
    }
    report.problems.extend(check::tree(backup, &expected)?);
    check::find_misplaced(backup, &expected.held, &mut report.problems);
    report.problems.sort_by_key(|p| format!("{p:?}"));
    if let Some(touched) = &touched {
        let before = report.problems.len();
        report.problems.retain(|p| {
            !p.folds_under_a_run() || p.path().is_none_or(|path| !touched.contains(path))
        });
        report.unfinished_run_paths = (before - report.problems.len()) as u64;
    }

    // Nothing under a symbolic link is repaired: a repair there would write through it.
    let links: Vec<String> = report
        .problems
        .iter()
        .filter(|p| matches!(p, Problem::Symlink { .. }))
        .filter_map(|p| p.path().map(|l| format!("{l}/")))
        .collect();
    let to_repair: Vec<Problem> = report
        .problems
        .iter()
        .filter(|p| !matches!(p, Problem::UnfinishedRun { .. }) && p.repairable())
        .filter(|p| {
            p.path()
                .is_none_or(|path| !links.iter().any(|l| format!("{path}/").starts_with(l)))
        })
        .cloned()
        .collect();
    if opts.repair && !to_repair.is_empty() {
        repair::repair(backup, &to_repair, &expected.json)?;
        report.repaired = true;
    }
    if opts.repair {
        settle_totals(backup, &mut report)?;
    }
    Ok(report)
}

/// The last date's totals as the catalog counts them. A repair marks versions missing in
/// the catalog, then records the totals in state.json: two commits, and a power loss
/// between them keeps the marks without the count that makes fsck's refetch and the next
/// sync fetch them again. So a repair recounts and records what differs.
fn settle_totals(backup: &Backup, report: &mut FsckReport) -> Result<()> {
    for part in backup.parts() {
        let state = part.read_state()?;
        let Some(last) = state.applied.last() else {
            continue;
        };
        let counted = crate::backup::catalog::totals(&part.catalog()?)?;
        if counted != last.totals {
            tracing::warn!(
                "{}: state.json's totals for {} lagged the catalog (a repair was interrupted); \
                 recorded: {} version(s) to fetch again",
                part.part_dir().display(),
                last.date,
                counted.retryable
            );
            part.record_totals(counted)?;
            report.repaired = true;
        }
    }
    Ok(())
}

/// The shards whose state cannot be read: a missing directory, state.json or manifest, a
/// catalog part missing or not what the manifest says.
fn damaged_shards(backup: &Backup) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    if backup.config.shards.is_none() {
        return out;
    }
    for part in backup.parts() {
        let crate::backup::PartOf::Shard(i) = part.part else {
            continue;
        };
        let found = part
            .read_state()
            .and_then(|_| crate::backup::catalog::Catalog::open(&part).map(|_| ()));
        if let Err(e) = found {
            out.push((i, format!("{e:#}")));
        }
    }
    out
}

/// Starts shard `index` afresh: whatever is left of its state directory goes to
/// quarantine, and an empty state and catalog take its place (its lock held). Its next
/// sync applies the date the other shards reached; the files of every version that date
/// lists are still in the tree at their paths, where the run finds them (by size and
/// mtime) instead of downloading them. What the lost catalog alone knew (versions gone
/// from the bucket since, first-seen dates) is lost with it: their files show as strays.
fn rebuild_shard(backup: &Backup, index: u32) -> Result<()> {
    use anyhow::Context;
    let part = backup.shard(index);
    // The tree is in the state of the newest date any other shard applied: the shard
    // starts there (a replay from the first date would move files of later versions).
    let map = backup.config.shards.as_ref().expect("sharded");
    let reached = backup
        .parts()
        .iter()
        .filter(|p| p.part != part.part)
        .filter_map(|p| p.read_state().ok()?.last_applied().map(str::to_string))
        .max()
        .unwrap_or_else(|| map.first_date.clone());
    let dir = part.part_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = part.lock()?;
    let quarantine = quarantine_dir(backup)
        .join(
            crate::model::timestamp::Timestamp::now()
                .to_string()
                .replace(':', "-"),
        )
        .join("shards")
        .join(index.to_string());
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name() == "lock" {
            continue;
        }
        std::fs::create_dir_all(&quarantine)
            .with_context(|| format!("creating {}", quarantine.display()))?;
        let to = quarantine.join(entry.file_name());
        std::fs::rename(entry.path(), &to)
            .with_context(|| format!("moving {} to {}", entry.path().display(), to.display()))?;
    }
    for d in [part.runs_dir(), part.indexes_dir()] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    crate::backup::catalog::store::create_empty(&part)?;
    crate::backup::durable::write_json(
        &part.state_path(),
        &crate::backup::State {
            applied: Vec::new(),
            starts_at: Some(reached),
        },
    )?;
    tracing::warn!(
        "{}: started afresh (what was left is in {})",
        part.part_name(),
        quarantine.display()
    );
    Ok(())
}

/// Every path an unfinished run's steps name, and their directories (whose versions JSON
/// the run rewrites).
fn touched_paths(run: &crate::backup::run_dir::RunDir) -> Result<HashSet<String>> {
    use crate::backup::run_dir::Step;
    let mut touched = HashSet::new();
    let mut add = |path: &str| {
        let mut p = path.trim_end_matches('/');
        touched.insert(p.to_string());
        while let Some((dir, _)) = p.rsplit_once('/') {
            if !touched.insert(dir.to_string()) {
                break;
            }
            p = dir;
        }
        touched.insert(String::new());
    };
    for step in run.read_steps()? {
        match step? {
            Step::Rename { from, to } | Step::Displace { dir: from, to } => {
                add(&from);
                add(&to);
            }
            Step::Mkdir { dir } => add(&dir),
            Step::Fetch { dest, .. } => add(&dest),
        }
    }
    Ok(touched)
}

/// Where fsck --repair puts what it moves out of the tree.
pub fn quarantine_dir(backup: &Backup) -> PathBuf {
    backup.quarantine_dir()
}
