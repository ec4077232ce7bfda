//! `restore`: the bucket as it was at a time, materialized from a backup into a directory.
//!
//! One pass over the catalog (or the part under a prefix, found by a seek): for each key, the
//! version that was current at the time ([`history::Timeline::version_at`]); its file is hard-linked
//! (same filesystem: no bytes copied, mtime shared) or copied (mtime set) to `DEST/<key>`.
//! Keys deleted by then are absent; versions the backup does not hold are reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::catalog::{file_path, is_folder_marker};
use crate::maintain::history::{Timeline, is_held};
use crate::model::record::VersionRecord;
use crate::model::timestamp::Timestamp;
use crate::sys::progress::{Counters, Phase, Progress, Reporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Hard links where DEST is on the backup's filesystem, copies elsewhere.
    Auto,
    Hard,
    Copy,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub at: String,
    /// `hard` or `copy`: what the files are (auto resolves to one before the first).
    pub link: &'static str,
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
    /// Keys deleted (latest version a delete marker) at that time.
    pub deleted: u64,
    /// Keys whose version at that time the backup does not hold (missing, archived, skipped).
    pub not_held: Vec<NotHeld>,
    /// Keys that were a file while keys under `key/` existed: a path cannot be both, so (as
    /// in the backup) the directory wins and the file is left out.
    pub shadowed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NotHeld {
    pub key: String,
    pub version_id: String,
    pub state: &'static str,
}

pub struct RestoreOptions {
    pub at: Timestamp,
    pub prefix: Option<String>,
    pub link: Link,
    pub progress: Progress,
}

pub fn restore(backup: &Backup, dest: &Path, opts: &RestoreOptions) -> Result<RestoreReport> {
    let link = check_destination(backup, dest, opts.link)?;
    let opts = &RestoreOptions {
        at: opts.at,
        prefix: opts.prefix.clone(),
        link,
        progress: opts.progress,
    };
    let reader = backup.catalog()?;
    let timeline = Timeline::of(backup)?;
    let counters = Arc::new(Counters::default());
    let _reporter = Reporter::start(
        Phase::new("restore", "files", 0, 0),
        Arc::clone(&counters),
        &opts.progress,
    );
    let mut report = RestoreReport {
        at: opts.at.to_string(),
        link: if link == Link::Hard { "hard" } else { "copy" },
        ..RestoreReport::default()
    };
    let mut stream = match &opts.prefix {
        Some(p) => reader.stream_prefix(p),
        None => reader.stream(),
    };
    let mut group: Vec<VersionRecord> = Vec::new();
    let mut made_dir = PathBuf::new();
    let mut real = crate::backup::layout::RealDirs::default();
    loop {
        let next = stream.next_record()?;
        if let Some(rec) = next
            && group.first().is_none_or(|g| g.key == rec.key)
        {
            group.push(rec.clone());
            continue;
        }
        if let Some(first) = group.first()
            && opts
                .prefix
                .as_deref()
                .is_none_or(|p| first.key.starts_with(p))
        {
            restore_key(
                backup,
                dest,
                opts,
                &timeline,
                &group,
                &mut report,
                &mut made_dir,
                &mut real,
            )?;
            counters.files_done.store(report.files, Ordering::Relaxed);
            counters.bytes.store(report.bytes, Ordering::Relaxed);
        }
        group.clear();
        match next {
            Some(rec) => group.push(rec.clone()),
            None => break,
        }
    }
    Ok(report)
}

/// DEST must be new or empty, and outside the backup (links into the tree would become
/// files the backup does not know).
/// Refuses a destination inside the backup or not empty, and resolves `link`: hard links
/// cannot cross filesystems, which is found here (by device numbers) rather than as EXDEV
/// at the first file, with a half-made directory left behind.
fn check_destination(backup: &Backup, dest: &Path, link: Link) -> Result<Link> {
    // Where DEST is (or will be), through its nearest existing ancestor: checked before
    // anything is created.
    let mut existing = dest.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
            break;
        };
        rest.push(name);
        if !existing.pop() || existing.as_os_str().is_empty() {
            existing = PathBuf::from(".");
            break;
        }
    }
    let mut dest_abs = std::fs::canonicalize(&existing)
        .with_context(|| format!("resolving {}", existing.display()))?;
    dest_abs.extend(rest.iter().rev());
    let root = std::fs::canonicalize(&backup.root)?;
    if dest_abs.starts_with(&root) {
        bail!(
            "{} is inside the backup {}: restore somewhere else",
            dest.display(),
            backup.root.display()
        );
    }
    let same_fs = {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        dev(&existing).is_some() && dev(&existing) == dev(&root)
    };
    let link = match link {
        Link::Auto if same_fs => Link::Hard,
        Link::Auto => {
            tracing::warn!(
                "{} is on another filesystem than the backup: copying the files (hard links \
                 cannot cross filesystems)",
                dest.display()
            );
            Link::Copy
        }
        Link::Hard if !same_fs => bail!(
            "{} is on another filesystem than the backup {}: hard links cannot cross \
             filesystems; use --link copy (or a destination beside the backup)",
            dest.display(),
            backup.root.display()
        ),
        other => other,
    };
    if dest.exists() {
        if std::fs::read_dir(dest)
            .with_context(|| format!("reading {}", dest.display()))?
            .next()
            .is_some()
        {
            bail!(
                "{} is not empty: restore writes into a new or empty directory",
                dest.display()
            );
        }
    } else {
        std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    }
    Ok(link)
}

/// Creates `dir` under `dest`. A file in the way is one this restore made for a key that
/// is also a directory prefix (keys sort `a` before `a/...`): the directory wins, as in the
/// backup, and the file is taken out again and reported.
fn make_dir(dest: &Path, dir: &Path, report: &mut RestoreReport) -> Result<()> {
    if std::fs::create_dir_all(dir).is_ok() {
        return Ok(());
    }
    let mut ancestor = dir.to_path_buf();
    while ancestor.starts_with(dest) && ancestor != dest {
        if let Ok(meta) = std::fs::symlink_metadata(&ancestor)
            && meta.is_file()
        {
            report.bytes -= meta.len().min(report.bytes);
            std::fs::remove_file(&ancestor)
                .with_context(|| format!("removing {}", ancestor.display()))?;
            let key = ancestor
                .strip_prefix(dest)
                .unwrap_or(&ancestor)
                .to_string_lossy()
                .into_owned();
            report.files -= 1;
            report.shadowed.push(key);
            break;
        }
        ancestor.pop();
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[allow(clippy::too_many_arguments)]
fn restore_key(
    backup: &Backup,
    dest: &Path,
    opts: &RestoreOptions,
    timeline: &Timeline,
    versions: &[VersionRecord],
    report: &mut RestoreReport,
    made_dir: &mut PathBuf,
    real: &mut crate::backup::layout::RealDirs,
) -> Result<()> {
    let Some(v) = timeline.version_at(versions, opts.at) else {
        return Ok(()); // not created yet
    };
    if v.is_delete_marker() {
        report.deleted += 1;
        return Ok(());
    }
    let target = dest.join(&v.key);
    if is_folder_marker(&v.key) {
        make_dir(dest, &target, report)?;
        report.directories += 1;
        return Ok(());
    }
    if !is_held(v) {
        report.not_held.push(NotHeld {
            key: v.key.clone(),
            version_id: v.version_id_or_null().to_string(),
            state: v.local.state.name(),
        });
        return Ok(());
    }
    let rel = file_path(&backup.stem, v).expect("a held version has a file");
    // A file reached through a symbolic link is not the backup's: never handed out.
    real.check(&backup.root, &rel).map_err(anyhow::Error::msg)?;
    let source = backup.root.join(rel);
    if let Some(parent) = target.parent()
        && parent != made_dir.as_path()
    {
        make_dir(dest, parent, report)?;
        *made_dir = parent.to_path_buf();
    }
    match opts.link {
        Link::Hard | Link::Auto => std::fs::hard_link(&source, &target)
            .with_context(|| format!("linking {} to {}", source.display(), target.display()))?,
        Link::Copy => {
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
            std::fs::File::options()
                .write(true)
                .open(&target)
                .and_then(|f| f.set_modified(v.last_modified.as_system_time()))
                .with_context(|| format!("setting the mtime of {}", target.display()))?;
        }
    }
    report.files += 1;
    report.bytes += v.size;
    Ok(())
}
