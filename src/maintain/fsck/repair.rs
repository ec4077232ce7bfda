//! `fsck --repair`: each problem fixed without deleting user data.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};

use super::Problem;
use crate::backup::Backup;
use crate::backup::catalog;
use crate::backup::durable::sync_filesystem;
use crate::backup::versions_json::write_versions_file;
use crate::model::record::LocalState;
use crate::model::timestamp::Timestamp;

pub(super) fn repair(
    backup: &Backup,
    problems: &[Problem],
    expected_json: &HashMap<String, Vec<u8>>,
) -> Result<()> {
    let _lock = backup.lock()?;
    let quarantine =
        super::quarantine_dir(backup).join(Timestamp::now().to_string().replace(':', "-"));
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
    // Rewritten last, from the catalog as the repair leaves it: a directory removed by hand
    // (`rm -rf BACKUP/ds`) has a versions JSON problem *and* missing files, and its JSON must
    // be rendered after those are marked missing (it then lists nothing and is not written
    // into a directory that is not there).
    let mut json_dirs: HashSet<String> = HashSet::new();
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
            // Never repaired (fsck::repairable): listed for the operator.
            Problem::Symlink { .. } => {}
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
                json_dirs.insert(dir.clone());
            }
            // Handled before the check (`fsck`): never among the problems repaired here.
            Problem::UnfinishedRun { .. } | Problem::DamagedShard { .. } => {}
        }
    }
    if now_missing.is_empty() {
        for dir in &json_dirs {
            write_versions_file(backup, dir, expected_json.get(dir).map(Vec::as_slice))?;
        }
    } else {
        mark_missing(backup, &now_missing)?;
        // Their directories' JSON must no longer list them.
        json_dirs.extend(
            now_missing
                .iter()
                .map(|p| catalog::parent_dir(p).to_string()),
        );
        let dirs: Vec<String> = json_dirs.into_iter().collect();
        crate::backup::versions_json::write_versions_files(backup, &backup.catalog()?, &dirs)?;
    }
    sync_filesystem(&backup.root)
}

/// Marks the versions whose files are at `paths` missing in the catalog (a delta of just
/// them), and records the new totals (the ones still listed are retryable), so that the
/// next sync, or fsck's own refetch, downloads them again.
fn mark_missing(backup: &Backup, paths: &HashSet<String>) -> Result<()> {
    // A backup from before deltas is moved to them before anything writes a delta (any
    // unfinished run was rolled back before the repair).
    catalog::store::upgrade(backup)?;
    let totals = catalog::store::edit(backup, |rec| {
        if catalog::expected_path(&backup.stem, rec).is_some_and(|p| paths.contains(&p)) {
            rec.local.state = LocalState::Missing;
        }
    })?;
    backup.record_totals(totals)
}
