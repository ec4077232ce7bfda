//! `s3invbackup status BACKUP`: what a backup holds and whether a run is pending.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use s3invbackup::backup::{Backup, PartOf};
use s3invbackup::maintain::health::{self, Severity};
use s3invbackup::maintain::prune::parse_duration;
use s3invbackup::model::timestamp::Timestamp;
use s3invbackup::sys::progress::{human_bytes, human_secs};

use super::{Outcome, output};

/// The backup's source, name stem and path filter, every applied date with its counts, the
/// versions not held (missing, archived: retried by the next sync) and any interrupted run
/// (and how to continue it). Reads only the state directory; needs no lock.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The backup directory
    pub backup: PathBuf,
    /// One JSON document (for monitoring)
    #[arg(long)]
    pub json: bool,
    /// Exit 1 with a one-line reason if the backup needs attention (the last sync failed, a
    /// run is interrupted, the newest applied date is older than --max-age), 2 if versions
    /// only wait for the next sync's retry, else 0
    #[arg(long)]
    pub check: bool,
    /// With --check: the newest applied date may be this old (e.g. 36h, 2d)
    #[arg(long, value_parser = parse_duration, requires = "check")]
    pub max_age: Option<std::time::Duration>,
    /// How many of the latest runs to show
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

pub fn run(args: &StatusArgs) -> Result<Outcome> {
    let backup = Backup::open_existing(&args.backup)?;
    if args.check {
        return check(&backup, args);
    }
    show(&backup, args)?;
    Ok(Outcome::Done)
}

/// One line: OK, or every finding (worst first); the exit status is the worst's.
fn check(backup: &Backup, args: &StatusArgs) -> Result<Outcome> {
    let found = health::check(backup, args.max_age, Timestamp::now())?;
    let mut out = output(None)?;
    if found.is_empty() {
        let state = backup.read_state()?;
        let last = state.last_applied().unwrap_or("none");
        let running = backup
            .lock_holder()
            .map_or(String::new(), |h| format!("; a sync is running ({h})"));
        writeln!(
            out,
            "OK: {} is up to date with {last}{running}",
            backup.root.display()
        )?;
        out.flush()?;
        return Ok(Outcome::Done);
    }
    for f in &found {
        let tag = match f.severity {
            Severity::Alert => "CRITICAL",
            Severity::Retry => "WARNING",
        };
        writeln!(out, "{tag}: {}: {}", backup.root.display(), f.reason)?;
    }
    out.flush()?;
    Ok(match found[0].severity {
        Severity::Alert => Outcome::Problems,
        Severity::Retry => Outcome::Partial,
    })
}

/// Each shard's progress: its range, the last date it applied, what its catalog holds,
/// its run in progress or interrupted. Empty for a one-writer backup.
fn shard_rows(backup: &Backup) -> Result<Vec<serde_json::Value>> {
    let Some(map) = &backup.config.shards else {
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    for part in backup.parts() {
        let PartOf::Shard(i) = part.part else {
            continue;
        };
        let state = part.read_state()?;
        let catalog = part.catalog()?;
        let pending = part.pending_run(&state)?.map(|r| r.summary.date);
        let from = if i == 0 {
            String::new()
        } else {
            map.cuts[i as usize - 1].clone()
        };
        rows.push(json!({
            "shard": i,
            "from": from,
            "to": map.cuts.get(i as usize),
            "last_applied": state.last_applied(),
            "versions": catalog.records(),
            "keys": catalog.keys(),
            "deltas": catalog.manifest().map_or(0, |m| m.deltas.len()),
            "pending_run": pending,
            "running": part.lock_holder(),
        }));
    }
    Ok(rows)
}

fn show(backup: &Backup, args: &StatusArgs) -> Result<()> {
    let state = backup.read_state()?;
    let running = backup.lock_holder();
    let mut pending = Vec::new();
    for part in backup.parts() {
        if let Some(run) = part.pending_run(&part.read_state()?)? {
            let s = &run.summary;
            pending.push(json!({"date": s.date, "fetches": s.fetches, "renames": s.renames,
                                "journal_entries": run.dir.read_journal()?.len(),
                                "shard": match part.part { PartOf::Shard(i) => Some(i), PartOf::Whole => None }}));
        }
    }
    let shards = shard_rows(backup)?;
    let last = state.applied.last();
    // The catalog's shape: base and deltas (none for a backup from before deltas).
    let shape = backup.catalog()?.manifest().cloned();
    let all_runs = backup.read_runs()?;
    let runs = &all_runs[all_runs.len().saturating_sub(args.runs)..];
    let mut out = output(None)?;
    if args.json {
        let doc = json!({
            "backup": backup.root.display().to_string(),
            "config": backup.config,
            "applied": state.applied,
            "last_applied": last.map(|a| a.date.clone()),
            "not_held": last.map_or(0, |a| a.totals.not_held),
            "retryable": last.map_or(0, |a| a.totals.retryable),
            "archived": last.map_or(0, |a| a.totals.archived),
            "needs_key": last.map_or(0, |a| a.totals.needs_key),
            "vanished": last.map_or(0, |a| a.totals.vanished),
            "bytes_held": last.map_or(0, |a| a.totals.bytes_held),
            "catalog": shape,
            "pending_runs": pending,
            // A sync (or prune, fsck --repair, rollback) holds the lock now: its holder.
            "running": running,
            "runs": runs,
            "shards": shards,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    let c = &backup.config;
    writeln!(out, "backup       {}", backup.root.display())?;
    writeln!(
        out,
        "source       s3://{} (inventory {})",
        c.source_bucket, c.inventory
    )?;
    writeln!(out, "name stem    {}", c.name_stem)?;
    if let Some(f) = &c.path_filter {
        writeln!(out, "path filter  {f}")?;
    }
    writeln!(out, "dates        {} applied", state.applied.len())?;
    writeln!(
        out,
        "  {:<19} {:>10} {:>11} {:>10} {:>12} {:>8} {:>8}",
        "date", "keys", "versions", "fetched", "bytes", "renamed", "failed"
    )?;
    for a in &state.applied {
        writeln!(
            out,
            "  {:<19} {:>10} {:>11} {:>10} {:>12} {:>8} {:>8}",
            a.date,
            a.keys,
            a.versions,
            a.downloaded,
            human_bytes(a.downloaded_bytes),
            a.renamed,
            a.failed
        )?;
    }
    if let Some(a) = last {
        writeln!(
            out,
            "held         {} in files",
            human_bytes(a.totals.bytes_held)
        )?;
        writeln!(
            out,
            "not held     {} version(s) missing or archived ({} still listed: the next sync retries them)",
            a.totals.not_held, a.totals.retryable
        )?;
        if a.totals.vanished > 0 {
            writeln!(
                out,
                "vanished     {} version(s) deleted from the bucket before they could be backed up",
                a.totals.vanished
            )?;
        }
        if a.totals.archived + a.totals.needs_key > 0 {
            writeln!(
                out,
                "             of those, {} archived (restore in S3, then sync --try-archived), {} SSE-C (not fetchable)",
                a.totals.archived, a.totals.needs_key
            )?;
        }
    }
    if let Some(m) = &shape {
        let delta_bytes: u64 = m.deltas.iter().map(|d| d.bytes).sum();
        writeln!(
            out,
            "catalog      {} versions of {} keys: a base of {} ({} records) and {} delta(s) of {} ({} records){}",
            m.records,
            m.keys,
            human_bytes(m.base.bytes),
            m.base.records,
            m.deltas.len(),
            human_bytes(delta_bytes),
            m.deltas.iter().map(|d| d.records).sum::<u64>(),
            if m.deltas.is_empty() {
                String::new()
            } else {
                format!(
                    "; compacted when the deltas reach {:.0}% of the base or number more than {}",
                    100.0 * s3invbackup::backup::catalog::store::COMPACT_FRACTION,
                    s3invbackup::backup::catalog::store::MAX_DELTAS
                )
            }
        )?;
    }
    if !runs.is_empty() {
        writeln!(
            out,
            "runs         the last {} of {}",
            runs.len(),
            all_runs.len()
        )?;
        writeln!(
            out,
            "  {:<24} {:<14} {:<11} {:>5} {:>10} {:>12} {:>7} {:>9}",
            "started", "command", "result", "dates", "fetched", "bytes", "failed", "took"
        )?;
        for r in runs {
            let result = r.result.map_or("?", |r| r.as_str());
            let command = if r.retry { "sync (retry)" } else { &r.command };
            writeln!(
                out,
                "  {:<24} {:<14} {:<11} {:>5} {:>10} {:>12} {:>7} {:>9}",
                r.started,
                command,
                result,
                r.dates.len(),
                r.fetched,
                human_bytes(r.fetched_bytes),
                r.failed,
                human_secs(r.duration_secs)
            )?;
            if let Some(e) = &r.error {
                writeln!(out, "    error: {}", e.lines().next().unwrap_or(""))?;
            }
        }
    }
    if let Some(map) = &c.shards {
        writeln!(
            out,
            "shards       {} processes (`sync --shard I/{}`), cut at directories when created",
            map.count, map.count
        )?;
        writeln!(
            out,
            "  {:<5} {:<32} {:<19} {:>11} {:>8} state",
            "shard", "keys from", "last applied", "versions", "deltas"
        )?;
        for row in &shards {
            let state = if let Some(h) = row["running"].as_str() {
                format!("running ({h})")
            } else if let Some(d) = row["pending_run"].as_str() {
                format!("interrupted in {d}: rerun its sync to resume")
            } else {
                "idle".to_string()
            };
            writeln!(
                out,
                "  {:<5} {:<32} {:<19} {:>11} {:>8} {state}",
                row["shard"],
                row["from"].as_str().unwrap_or(""),
                row["last_applied"].as_str().unwrap_or("none"),
                row["versions"],
                row["deltas"],
            )?;
        }
    }
    if let Some(holder) = &running {
        writeln!(out, "running      a writer holds the backup ({holder})")?;
    }
    for p in &pending {
        if running.is_some() {
            writeln!(
                out,
                "in progress  run of {}: {} of {} steps done ({} fetches, {} moves planned)",
                p["date"].as_str().unwrap_or("?"),
                p["journal_entries"],
                p["fetches"].as_u64().unwrap_or(0) + p["renames"].as_u64().unwrap_or(0),
                p["fetches"],
                p["renames"]
            )?;
        } else {
            writeln!(
                out,
                "interrupted  run of {} ({} journal entries): run `s3invbackup sync` to resume it",
                p["date"].as_str().unwrap_or("?"),
                p["journal_entries"]
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

use std::io::Write;
