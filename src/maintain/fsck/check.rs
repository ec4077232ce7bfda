//! The offline checks: what the catalog says the tree holds, each held file's metadata, and
//! a walk of the tree for files the catalog does not know and versions JSON that disagree.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::Problem;
use crate::backup::Backup;
use crate::backup::catalog;
use crate::backup::versions_json::Renderer;
use crate::model::etag::ETag;
use crate::model::record::Local;
use crate::model::timestamp::Timestamp;

pub(super) fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// A version whose file the catalog says is in the tree.
pub(super) struct Held {
    pub path: String,
    pub key: String,
    pub version_id: String,
    pub size: u64,
    pub etag: Option<ETag>,
    pub etag_is_md5: bool,
    pub last_modified: Timestamp,
    /// What the fetch recorded: how it verified the file, the multipart part size, and S3's
    /// checksum where the ETag is no MD5.
    pub local: Local,
}

/// What the catalog says the tree holds: every file, and every directory's versions JSON
/// as it must read.
pub(super) struct Expected {
    pub held: Vec<Held>,
    pub json: HashMap<String, Vec<u8>>,
}

pub(super) fn expected(backup: &Backup) -> Result<Expected> {
    let reader = backup.catalog()?;
    let mut held: Vec<Held> = Vec::new();
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut renderer = Renderer::new(None);
    let mut collect = |dir: &str, text: &[u8]| {
        json.insert(dir.to_string(), text.to_vec());
        Ok(())
    };
    let mut stream = reader.stream();
    while let Some(rec) = stream.next_record()? {
        renderer.add(rec, &mut collect)?;
        if let Some(path) = catalog::expected_path(&backup.stem, rec) {
            held.push(Held {
                path,
                key: rec.key.clone(),
                version_id: rec.version_id.clone(),
                size: rec.size,
                etag: rec.etag,
                etag_is_md5: rec.etag_is_md5(),
                last_modified: rec.last_modified,
                local: rec.local.clone(),
            });
        }
    }
    renderer.close_all(&mut collect)?;
    Ok(Expected { held, json })
}

/// Metadata of every held file, in parallel (a stat each).
pub(super) fn metadata(backup: &Backup, held: &[Held]) -> Vec<Problem> {
    held.par_iter()
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
        .collect()
}

/// Walks the tree (not the state directory): files the catalog does not know, and versions
/// JSON files that are not what the catalog renders, or are missing.
pub(super) fn tree(backup: &Backup, expected: &Expected) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let known: HashSet<&str> = expected.held.iter().map(|h| h.path.as_str()).collect();
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
            if kind.is_symlink() {
                // Never followed: what it points to is outside what fsck vouches for.
                let target = std::fs::read_link(entry.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                problems.push(Problem::Symlink { path: rel, target });
            } else if kind.is_dir() {
                if rel != state_dir {
                    stack.push(rel);
                }
            } else if name == versions_file {
                seen_json.insert(dir.clone());
                let actual = std::fs::read(entry.path())?;
                let reason = match expected.json.get(&dir) {
                    Some(want) if *want == actual => continue,
                    Some(_) => "differs from the catalog",
                    None => "the directory has no current file",
                };
                problems.push(Problem::VersionsJson {
                    dir: dir.clone(),
                    reason: reason.into(),
                });
            } else if !known.contains(rel.as_str()) {
                problems.push(Problem::Stray { path: rel });
            }
        }
    }
    for dir in expected.json.keys() {
        if !seen_json.contains(dir) {
            problems.push(Problem::VersionsJson {
                dir: dir.clone(),
                reason: "missing".into(),
            });
        }
    }
    Ok(problems)
}

/// Pairs strays with missing versions: a file moved by hand (or left by an old layout) is
/// put back instead of being quarantined and fetched again.
pub(super) fn find_misplaced(backup: &Backup, held: &[Held], problems: &mut Vec<Problem>) {
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
            .position(|h| super::verify::verify_content(&full, h).is_ok())
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
