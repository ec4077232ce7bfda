//! `rollback`: undoes an unfinished sync run, back to the last applied catalog.
//!
//! The journal lists every change the run made, in order, each written before it was made;
//! rollback reverses them last to first: moves are moved back, downloaded files the run
//! placed are removed (they are in no catalog and the bucket still has them), displaced
//! directories return, directories made for folder markers go if empty. Then the versions
//! JSON of the run's directories are rendered again from the (old) catalog and the run is
//! forgotten. A run that already replaced the catalog cannot be undone this way: `sync`
//! finishes it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::durable::sync_filesystem;
use crate::backup::journal::Entry;
use crate::backup::run_dir::PendingRun;

#[derive(Debug, Default, Serialize)]
pub struct RollbackReport {
    pub date: String,
    pub moved_back: u64,
    pub removed: u64,
    pub directories_restored: u64,
    /// Displaced directories merged into an existing one: left there (named, not lost).
    pub left_merged: Vec<String>,
}

///
/// The whole of a sharded backup: each shard's run (the report sums them; its date is the
/// first undone), then the spine's versions JSON from what the catalogs hold now.
pub fn rollback(backup: &Backup) -> Result<Option<RollbackReport>> {
    if backup.is_sharded_whole() {
        let mut all: Option<RollbackReport> = None;
        for part in backup.parts() {
            if let Some(r) = rollback(&part)? {
                all = Some(match all {
                    None => r,
                    Some(mut a) => {
                        a.moved_back += r.moved_back;
                        a.removed += r.removed;
                        a.directories_restored += r.directories_restored;
                        a.left_merged.extend(r.left_merged);
                        a
                    }
                });
            }
        }
        if all.is_some() {
            crate::backup::versions_json::write_spine_versions_files(backup)?;
        }
        return Ok(all);
    }
    let _lock = backup.lock()?;
    let state = backup.read_state()?;
    let Some(PendingRun {
        dir: run_dir,
        summary,
    }) = backup.pending_run_clearing_leftovers(&state)?
    else {
        return Ok(None);
    };
    let entries = run_dir.read_journal()?;
    if entries.contains(&Entry::Commit) {
        bail!(
            "the run of {} already replaced the catalog; run `s3invbackup sync` to finish it",
            summary.date
        );
    }
    let root = &backup.root;
    // All or nothing: a symbolic link on the way of any step stops the rollback before it
    // moves anything (it would write through the link).
    for entry in &entries {
        let paths: Vec<String> = match entry {
            Entry::Rename { from, to } => vec![from.clone(), to.clone()],
            Entry::Place { dest, .. } => vec![dest.clone()],
            Entry::Displace { dir, to, .. } => vec![dir.clone(), to.clone()],
            Entry::Mkdir { dir } => vec![format!("{dir}/")],
            Entry::Versions | Entry::Commit | Entry::Attempt { .. } | Entry::Checkpoint { .. } => {
                vec![]
            }
        };
        for p in paths {
            crate::backup::layout::no_symlink_on_the_way(root, &p).map_err(anyhow::Error::msg)?;
        }
    }
    let mut report = RollbackReport {
        date: summary.date.clone(),
        ..RollbackReport::default()
    };
    for entry in entries.iter().rev() {
        match entry {
            Entry::Rename { from, to } => {
                let (src, dst) = (root.join(to), root.join(from));
                // A file that became a directory: the run moved the file to `.old.` and made
                // the directory, whose files are undone by now (later entries are undone
                // first). The directory left (holding at most its versions JSON) is the
                // run's, and the file goes back in its place.
                if exists(&src) && dst.is_dir() {
                    let _ = std::fs::remove_file(dst.join(backup.stem.versions_file()));
                    let _ = std::fs::remove_dir(&dst);
                }
                if exists(&src) && !exists(&dst) {
                    rename(&src, &dst)?;
                    report.moved_back += 1;
                }
            }
            Entry::Place { dest, .. } => {
                let path = root.join(dest);
                if exists(&path) {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    report.removed += 1;
                }
            }
            Entry::Displace { dir, to, merged } => {
                let (src, dst) = (root.join(to), root.join(dir));
                if *merged {
                    report.left_merged.push(to.clone());
                } else if src.is_dir() && !exists(&dst) {
                    rename(&src, &dst)?;
                    report.directories_restored += 1;
                }
            }
            Entry::Mkdir { dir } => {
                // Only if empty: it may hold files placed before the run.
                let _ = std::fs::remove_dir(root.join(dir));
            }
            Entry::Versions | Entry::Commit | Entry::Attempt { .. } | Entry::Checkpoint { .. } => {}
        }
    }
    let dirty = run_dir.read_dirty()?;
    crate::backup::versions_json::write_versions_files(backup, &backup.catalog()?, &dirty)?;
    remove_dirs_the_run_made(backup, &entries)?;
    sync_filesystem(root)?;
    std::fs::remove_dir_all(run_dir.path())
        .with_context(|| format!("removing {}", run_dir.path().display()))?;
    backup.clear_staging()?;
    Ok(Some(report))
}

/// The directories a run created for its downloads (`new/` for a first `new/file`) or for
/// a folder marker's parents are not journaled one by one: they are the parents of what it
/// placed, moved away or made that are
/// empty once the run is undone, but for a folder marker's directory (`dir/` in the
/// catalog), which is empty by nature. Deepest first; `remove_dir` never removes a
/// directory with anything in it.
fn remove_dirs_the_run_made(backup: &Backup, entries: &[Entry]) -> Result<()> {
    let mut dirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for entry in entries {
        let touched = match entry {
            Entry::Place { dest, .. } => dest.as_str(),
            Entry::Rename { to, .. } => to.as_str(),
            // A folder marker's directory (`nested/deep/`) made with its parents.
            Entry::Mkdir { dir } => dir.as_str(),
            _ => continue,
        };
        let mut p = touched;
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
    }
    if dirs.is_empty() {
        return Ok(());
    }
    let catalog = backup.catalog()?;
    let mut by_depth: Vec<&String> = dirs.iter().collect();
    by_depth.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for dir in by_depth {
        let path = backup.root.join(dir);
        let empty = std::fs::read_dir(&path).is_ok_and(|mut e| e.next().is_none());
        if !empty {
            continue;
        }
        let marker = format!("{dir}/");
        let mut stream = catalog.stream_prefix(&marker);
        let is_marker_dir = match stream.next_record()? {
            Some(r) => {
                r.key == marker && crate::backup::catalog::is_current(r) && !r.is_delete_marker()
            }
            None => false,
        };
        if !is_marker_dir {
            let _ = std::fs::remove_dir(&path);
        }
    }
    Ok(())
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::rename(from, to)
        .with_context(|| format!("moving {} back to {}", from.display(), to.display()))
}
