//! Finishing a run: execute its plan, commit it, record the date.
//!
//! Commit: failed versions are marked in the run's delta (retried next run), the versions
//! JSON of every directory the run changed is rewritten once from the new catalog (the old
//! one with the delta on top), the filesystem is synced, then the delta is added to the
//! catalog ([`store::commit_delta`]: the manifest names it and this run's plan id) and the
//! state records the date, in that order. A crash between the two leaves a committed run:
//! the next sync only records its state (counting the totals from the catalog). Last, the
//! catalog is compacted if its deltas have piled up.

use std::collections::HashMap;

use anyhow::{Context, Result};

use crate::backup::catalog::{self, store};
use crate::backup::durable::sync_filesystem;
use crate::backup::journal::{Entry, Journal, PlacedCheck};
use crate::backup::run_dir::{PendingRun, PlanSummary, RunDir};
use crate::backup::totals::Totals;
use crate::backup::{AppliedDate, Backup, State};
use crate::model::record::{Check, Local, LocalState, StoredChecksum};
use crate::model::timestamp::Timestamp;
use crate::sync::apply::{Executor, RunOutcome};
use crate::sync::{DateReport, SyncReport};
use crate::sys::failpoint;

/// Executes, commits and records one planned run. False if it was interrupted (left
/// resumable).
pub(super) fn finish_run(
    backup: &Backup,
    executor: &Executor,
    run: PendingRun,
    state: &mut State,
    report: &mut SyncReport,
) -> Result<bool> {
    let PendingRun { dir, summary } = run;
    let committed = dir.is_committed(&summary, backup.catalog()?.last_run())?;
    let t = std::time::Instant::now();
    let mut outcome = if committed {
        tracing::warn!(
            "{}: the catalog was already committed; recording the state",
            summary.date
        );
        RunOutcome {
            date: summary.date.clone(),
            ..RunOutcome::default()
        }
    } else {
        executor.execute(&dir, &summary)?
    };
    tracing::info!(
        "{}: executed in {:.2} s",
        summary.date,
        t.elapsed().as_secs_f64()
    );
    if outcome.interrupted {
        report.interrupted = true;
        report.dates.push(DateReport {
            plan: summary,
            outcome: Some(outcome),
        });
        return Ok(false);
    }
    let t = std::time::Instant::now();
    let totals = if committed {
        catalog::totals(&backup.catalog()?)?
    } else {
        // Versions JSON, one syncfs, the catalog: minutes at 10^9 versions, so the phase
        // shows it is alive (elapsed time) even though it counts nothing.
        let _shown = crate::sys::progress::Reporter::start(
            crate::sys::progress::Phase::new(format!("commit {}", summary.date), "dirs", 0, 0),
            std::sync::Arc::default(),
            &executor.progress,
        );
        commit(backup, &dir, &mut outcome, &summary)?
    };
    failpoint::hit("catalog-replaced");
    tracing::info!(
        "{}: committed in {:.2} s",
        summary.date,
        t.elapsed().as_secs_f64()
    );
    let catalog = backup.catalog()?;
    state.applied.push(AppliedDate {
        date: summary.date.clone(),
        applied_at: Timestamp::now().to_string(),
        keys: catalog.keys(),
        versions: catalog.records(),
        downloaded: outcome.downloaded + outcome.reused_from_staging,
        downloaded_bytes: outcome.downloaded_bytes,
        renamed: outcome.renamed,
        failed: outcome.failures.len() as u64,
        skipped: summary.bad_keys.len() as u64,
        totals,
    });
    backup.write_state(state)?;
    failpoint::hit("state-written");
    keep_changes(backup, &dir, &summary.date)?;
    std::fs::remove_dir_all(dir.path())
        .with_context(|| format!("removing finished run {}", dir.path().display()))?;
    // Whatever is left in staging belongs to no run now (failed or abandoned downloads).
    backup.clear_staging()?;
    drop(catalog);
    store::maybe_compact(backup)?;
    let mut summary = summary;
    if committed {
        // The plan's own counts were lost with the interrupted process: report the catalog's.
        summary.totals = totals;
    }
    report.dates.push(DateReport {
        plan: summary,
        outcome: Some(outcome),
    });
    Ok(true)
}

/// Keeps the run's change list as `.<stem>/changes/<date>.jsonl.zst`. A retry of the
/// last date re-plans it against itself (no change): the first night's list stays.
fn keep_changes(backup: &Backup, dir: &crate::backup::run_dir::RunDir, date: &str) -> Result<()> {
    let from = dir.changes_path();
    let to = backup.changes_path(date);
    if !from.exists() || to.exists() {
        return Ok(());
    }
    let parent = to.parent().expect("in the changes directory");
    crate::backup::durable::make_dir(parent)?;
    std::fs::rename(&from, &to)
        .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    crate::backup::durable::sync_dir(parent)
}

/// Marks failures in the run's delta, rewrites the versions JSON of the run's directories,
/// syncs the filesystem and commits the delta; returns what the new catalog holds. The
/// caller then records the date in the state and removes the run directory.
fn commit(
    backup: &Backup,
    run_dir: &RunDir,
    outcome: &mut RunOutcome,
    summary: &PlanSummary,
) -> Result<Totals> {
    let planned = run_dir.planned_delta();
    // How each file this run placed was verified (every attempt of the run: the journal
    // holds them all), for the catalog.
    let checks: HashMap<String, PlacedCheck> =
        crate::backup::journal::read(&run_dir.journal_path())?
            .into_iter()
            .filter_map(|e| match e {
                Entry::Place {
                    dest,
                    check: Some(c),
                    ..
                } => Some((dest, c)),
                _ => None,
            })
            .collect();
    let (final_path, totals) = if outcome.failures.is_empty() && checks.is_empty() {
        (planned, summary.totals)
    } else {
        let failed: HashMap<(&str, &str, i64), LocalState> = outcome
            .failures
            .iter()
            .map(|f| {
                let state = [LocalState::Archived, LocalState::NeedsKey]
                    .into_iter()
                    .find(|s| s.name() == f.state)
                    .unwrap_or(LocalState::Missing);
                (
                    (f.key.as_str(), f.version_id.as_str(), f.last_modified.0),
                    state,
                )
            })
            .collect();
        let out = run_dir.final_delta();
        // Every version this run fetched is in its delta (new, or its state changed), so
        // marking the delta marks all of them.
        let (before, after) = catalog::rewrite_part(&planned, &out, |rec| {
            let id = (
                rec.key.as_str(),
                rec.version_id.as_str(),
                rec.last_modified.0,
            );
            if let Some(state) = failed.get(&id) {
                rec.local.state = *state;
            } else if !checks.is_empty()
                && let Some(path) = catalog::file_path(&backup.stem, rec)
                && let Some(c) = checks.get(&path)
            {
                record_check(&mut rec.local, c);
            }
        })?;
        (out, summary.totals.replaced(&before, &after))
    };
    let counts = store::Counts {
        keys: summary.keys,
        records: summary.versions,
    };
    let mut journal = Journal::open(&run_dir.journal_path())?;
    journal.append(&Entry::Versions)?;
    let dirty = run_dir.read_dirty()?;
    let t = std::time::Instant::now();
    let new_catalog = backup.catalog()?.with_delta(&final_path, counts)?;
    // The plan rendered the changed directories' JSON from its own records; a directory
    // with a failed fetch lists one file less, so it is rendered again from the catalog.
    let shards = backup.shards();
    let rerender: std::collections::HashSet<String> = outcome
        .failures
        .iter()
        .map(|f| catalog::parent_dir(&f.key).to_string())
        .filter(|d| shards.as_ref().is_none_or(|s| !s.is_spine(d)))
        .collect();
    let (written, from_plan) = crate::backup::versions_json::write_planned_versions_files(
        backup,
        &run_dir.planned_versions(),
        &new_catalog,
        &dirty,
        &rerender,
    )?;
    outcome.versions_files = written;
    outcome.versions_files_planned = from_plan;
    drop(new_catalog);
    tracing::debug!(
        "{written} versions JSON files ({from_plan} as planned) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    sync_filesystem(&backup.root)?;
    tracing::debug!("filesystem synced in {:.2} s", t.elapsed().as_secs_f64());
    journal.append(&Entry::Commit)?;
    journal.sync()?;
    // Durable before the state says the date is applied.
    store::commit_delta(backup, Some(&final_path), counts, Some(&summary.plan_id))?;
    Ok(totals)
}

/// Writes what the journal says about a placed file's verification into its record.
fn record_check(local: &mut Local, c: &PlacedCheck) {
    local.check = Check::from_name(&c.how).unwrap_or_default();
    local.part_size = c.part_size;
    local.checksum = c
        .checksum
        .as_deref()
        .and_then(unhex)
        .and_then(|v| StoredChecksum::new(&v))
        .unwrap_or_default();
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
