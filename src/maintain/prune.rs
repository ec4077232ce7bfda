//! `prune`: the one command that deletes backed-up data. It removes the files of versions
//! that stopped being current (or left the bucket) longer ago than a given duration. The
//! catalog keeps their records, marked pruned, so that no later sync fetches them again;
//! it is rewritten before any file goes (a crash in between leaves strays that fsck moves
//! to quarantine, never a version the catalog claims and the tree lacks).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::catalog::{self, file_path, is_current};
use crate::error::Refusal;
use crate::model::record::{LocalState, VersionRecord};
use crate::model::timestamp::Timestamp;

pub struct PruneOptions {
    pub noncurrent_older_than: Option<Duration>,
    pub gone_older_than: Option<Duration>,
    pub dry_run: bool,
    /// "Now" (tests pass a fixed time).
    pub now: Timestamp,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub files: Vec<String>,
    pub bytes: u64,
    pub dry_run: bool,
}

/// `90d`, `12h`, `2w`, `30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use e.g. 90d, 12h, 2w"))?;
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("bad duration {s:?}: the unit is m, h, d or w")),
    };
    Ok(Duration::from_secs(n * secs))
}

fn older(t: Timestamp, limit: Option<Duration>, now: Timestamp) -> bool {
    limit.is_some_and(|d| t.0 != 0 && t.0 < now.0 - d.as_millis() as i64)
}

/// Not current, and has a file (delete and folder markers have none).
fn prunable(rec: &VersionRecord, opts: &PruneOptions) -> bool {
    !is_current(rec)
        && rec.local.state == LocalState::Present
        && !rec.is_delete_marker()
        && !catalog::is_folder_marker(&rec.key)
        && (older(
            rec.local.noncurrent_since,
            opts.noncurrent_older_than,
            opts.now,
        ) || older(rec.local.gone_since, opts.gone_older_than, opts.now))
}

pub fn prune(backup: &Backup, opts: &PruneOptions) -> Result<PruneReport> {
    if opts.noncurrent_older_than.is_none() && opts.gone_older_than.is_none() {
        bail!("say what to prune: --noncurrent-older-than and/or --gone-older-than");
    }
    let _lock = backup.lock()?;
    if let Some(run) = backup.pending_run(&backup.read_state()?)? {
        return Err(Refusal::RunPending {
            date: run.summary.date,
            backup: backup.root.clone(),
            command: "prune",
        }
        .into());
    }
    // A backup from before deltas is moved to them before anything writes a delta.
    catalog::store::upgrade(backup)?;
    let reader = backup.catalog()?;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    let mut stream = reader.stream();
    while let Some(rec) = stream.next_record()? {
        if prunable(rec, opts) {
            report
                .files
                .push(file_path(&backup.stem, rec).expect("held"));
            report.bytes += rec.size;
        }
    }
    drop(stream);
    drop(reader);
    // Nothing is deleted through a symbolic link (a directory moved to another disk and
    // linked back, or planted): a file there is not the backup's to delete. Checked for
    // every file before the catalog changes, so a refusal changes nothing.
    let mut real = crate::backup::layout::RealDirs::default();
    for path in &report.files {
        real.check(&backup.root, path).map_err(anyhow::Error::msg)?;
    }
    if opts.dry_run {
        return Ok(report);
    }
    // The catalog says "pruned" (durably: a delta of the pruned records) before any file
    // goes. The lock is held, so the second pass sees the catalog the first one did.
    let totals = catalog::store::edit(backup, |rec| {
        if prunable(rec, opts) {
            rec.local.state = LocalState::Pruned;
        }
    })?;
    for path in &report.files {
        let p = backup.root.join(path);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    backup.record_totals(totals)?;
    Ok(report)
}
