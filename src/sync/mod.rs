//! `sync`: brings a backup up to date with an inventory, one date at a time, in order.
//!
//! For each date: build (or reuse) its index, plan against the catalog, execute, commit,
//! record the date in the state. A run interrupted anywhere is picked up by the next `sync`:
//! a planned run directory is executed again (its steps are idempotent) before any new
//! date; an unplanned one is discarded.

pub mod apply;
pub mod fetch;
pub mod plan;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use regex::Regex;
use serde::Serialize;

use crate::sync::apply::{Executor, RunOutcome};
use crate::backup::{AppliedDate, Backup, Config, State};
use crate::backup::catalog;
use crate::sync::fetch::FetchOptions;
use crate::index::IndexReader;
use crate::index::build::{IndexOptions, build_index};
use crate::inventory::{DateSpec, Inventory, InventoryDate};
use crate::backup::layout::{KeyRules, NameStem};
use crate::sync::plan::{OnBadKey, PlanSummary, Planner};
use crate::sys::progress::Mode;
use crate::s3::{S3Client, S3Config};
use crate::model::timestamp::Timestamp;

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub inventory: String,
    pub backup: PathBuf,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub path_filter: Option<String>,
    /// Only used when the backup is created.
    pub name_stem: String,
    pub file_mode: u32,
    pub on_bad_key: OnBadKey,
    pub dry_run: bool,
    pub fetch: FetchOptions,
    pub index: IndexOptions,
    pub progress: Mode,
    pub progress_interval: std::time::Duration,
    pub s3: S3Config,
}

/// What a sync did, date by date (the `--report` JSON).
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    pub backup: String,
    pub inventory: String,
    pub dry_run: bool,
    pub resumed: Option<String>,
    pub dates: Vec<DateReport>,
    /// Versions not held after the run (missing, archived), retried by the next run.
    pub failures: u64,
    pub interrupted: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct DateReport {
    pub plan: PlanSummary,
    pub outcome: Option<RunOutcome>,
}

impl SyncReport {
    pub fn bad_keys(&self) -> u64 {
        self.dates
            .iter()
            .map(|d| d.plan.bad_keys.len() as u64)
            .sum()
    }
}

/// Fetches again what the backup does not hold but could (versions marked missing by a
/// failed download or by `fsck --repair`), against the last applied date: no new date is
/// applied. `inventory` overrides the location recorded at creation (a copy elsewhere).
pub fn refetch(
    backup: &Backup,
    inventory: Option<&str>,
    fetch: FetchOptions,
    progress: Mode,
    progress_interval: std::time::Duration,
    s3: S3Config,
) -> Result<SyncReport> {
    let state = backup.read_state()?;
    let Some(last) = state.last_applied() else {
        bail!("{}: no date applied yet", backup.root.display());
    };
    sync(&SyncOptions {
        inventory: inventory.unwrap_or(&backup.config.inventory).to_string(),
        backup: backup.root.clone(),
        start_date: None,
        end_date: Some(last.to_string()),
        path_filter: None,
        name_stem: backup.stem.as_str().to_string(),
        file_mode: backup.config.file_mode,
        on_bad_key: OnBadKey::Stop,
        dry_run: false,
        fetch,
        index: IndexOptions::default(),
        progress,
        progress_interval,
        s3,
    })
}

pub fn sync(opts: &SyncOptions) -> Result<SyncReport> {
    let inventory = Inventory::open(&opts.inventory, &opts.s3)?;
    let mut report = SyncReport {
        backup: opts.backup.display().to_string(),
        inventory: opts.inventory.clone(),
        dry_run: opts.dry_run,
        ..SyncReport::default()
    };
    let existing = Backup::open(&opts.backup)?;
    let entries = inventory.dates()?;
    let complete: Vec<InventoryDate> = entries
        .iter()
        .filter(|e| e.is_complete())
        .map(|e| e.date.clone())
        .collect();
    if complete.is_empty() {
        bail!("{}: no complete inventory date", opts.inventory);
    }
    let state = match &existing {
        Some(b) => b.read_state()?,
        None => State::default(),
    };
    let pending = match &existing {
        Some(b) => planned_run_date(b, &state)?,
        None => None,
    };
    let dates = select_dates(&complete, &state, pending.as_deref(), opts)?;
    warn_incomplete(&entries, state.last_applied(), dates.last());
    let path_filter = effective_filter(existing.as_ref(), opts)?;

    if opts.dry_run {
        return dry_run(
            opts,
            &inventory,
            existing.as_ref(),
            &dates,
            path_filter,
            report,
        );
    }

    let root_existed = opts.backup.exists();
    let created = existing.is_none();
    let backup = match existing {
        Some(b) => b,
        None => {
            let Some(first) = dates.first() else {
                bail!("no inventory date to start the backup from");
            };
            let manifest = inventory.manifest(first)?;
            Backup::create(
                &opts.backup,
                Config {
                    format: crate::backup::FORMAT,
                    name_stem: NameStem::new(&opts.name_stem)
                        .map_err(anyhow::Error::msg)?
                        .as_str()
                        .to_string(),
                    inventory: opts.inventory.clone(),
                    source_bucket: manifest.manifest.source_bucket.clone(),
                    path_filter: path_filter.as_ref().map(|r| r.as_str().to_string()),
                    file_mode: opts.file_mode,
                },
            )?
        }
    };
    let result = apply_dates(
        opts,
        &inventory,
        &backup,
        &dates,
        path_filter.as_ref(),
        &mut report,
    );
    if result.is_err() && created {
        forget_if_untouched(&backup, root_existed);
    }
    result?;
    report.failures = backup
        .read_state()?
        .applied
        .last()
        .map_or(0, |a| a.not_held);
    Ok(report)
}

/// A backup created by a run that failed before placing anything (bad keys, a bad
/// inventory) is removed again: the directory is left as the user gave it.
fn forget_if_untouched(backup: &Backup, root_existed: bool) {
    let only_state = std::fs::read_dir(&backup.root).is_ok_and(|entries| {
        entries
            .flatten()
            .all(|e| e.file_name().to_str() == Some(backup.stem.state_dir().as_str()))
    });
    if only_state && std::fs::remove_dir_all(backup.state_dir()).is_ok() && !root_existed {
        let _ = std::fs::remove_dir(&backup.root);
    }
}

fn apply_dates(
    opts: &SyncOptions,
    inventory: &Inventory,
    backup: &Backup,
    dates: &[InventoryDate],
    path_filter: Option<&Regex>,
    report: &mut SyncReport,
) -> Result<()> {
    let _lock = backup.lock()?;
    let client = S3Client::new(&opts.s3)?;
    let executor = Executor {
        backup,
        client: &client,
        bucket: &backup.config.source_bucket,
        fetch: opts.fetch.clone(),
        progress: opts.progress,
        progress_interval: opts.progress_interval,
    };

    // An interrupted run first.
    let mut state = backup.read_state()?;
    if let Some((run_dir, summary)) = pending_run(backup, &state)? {
        report.resumed = Some(summary.date.clone());
        eprintln!("resuming the interrupted run of {}", summary.date);
        let done = run_one(backup, &executor, &run_dir, summary, &mut state, report)?;
        if !done {
            return Ok(());
        }
    }
    let ctx = RunContext {
        opts,
        inventory,
        backup,
        executor: &executor,
        rules: KeyRules::new(backup.stem.clone()),
        path_filter,
    };
    let last = state.last_applied().map(String::from);
    let mut applied_any = false;
    for date in dates
        .iter()
        .filter(|d| last.as_deref().is_none_or(|l| d.as_str() > l))
    {
        if crate::sys::stop::stop_requested() {
            report.interrupted = true;
            break;
        }
        let manifest = inventory.manifest(date)?;
        if manifest.manifest.source_bucket != backup.config.source_bucket {
            bail!(
                "inventory {} lists bucket {:?}, but this backup is of {:?}",
                inventory.describe(date.as_str()),
                manifest.manifest.source_bucket,
                backup.config.source_bucket
            );
        }
        if !plan_and_run(&ctx, date, &mut state, report, false)? {
            return Ok(());
        }
        applied_any = true;
    }
    // Nothing new: retry what earlier runs could not fetch, against the last date's index.
    if !applied_any
        && !crate::sys::stop::stop_requested()
        && let Some(last) = state.last_applied().and_then(InventoryDate::parse)
        && state.applied.last().is_some_and(|a| a.retryable > 0)
    {
        eprintln!("retrying versions that earlier runs could not fetch ({last})");
        plan_and_run(&ctx, &last, &mut state, report, true)?;
    }
    Ok(())
}

/// What planning a date needs, gathered once per sync.
struct RunContext<'a> {
    opts: &'a SyncOptions,
    inventory: &'a Inventory,
    backup: &'a Backup,
    executor: &'a Executor<'a>,
    rules: KeyRules,
    path_filter: Option<&'a Regex>,
}

/// Plans `date` against the catalog, executes and commits it. False if interrupted.
fn plan_and_run(
    ctx: &RunContext,
    date: &InventoryDate,
    state: &mut State,
    report: &mut SyncReport,
    retry: bool,
) -> Result<bool> {
    let backup = ctx.backup;
    let index_path = backup.indexes_dir().join(format!("{date}.s3inv"));
    let t = std::time::Instant::now();
    ensure_index(ctx.inventory, date, &index_path, &ctx.opts.index)?;
    crate::backup::journal::failpoint("index-built");
    tracing::info!("{date}: index ready in {:.2} s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let run_dir = backup.runs_dir().join(date.as_str());
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing the unplanned run {}", run_dir.display()))?;
    }
    let planner = Planner {
        stem: &backup.stem,
        rules: &ctx.rules,
        root: &backup.root,
        date: date.as_str(),
        date_time: date.timestamp(),
        source_bucket: &backup.config.source_bucket,
        path_filter: ctx.path_filter,
        on_bad_key: ctx.opts.on_bad_key,
    };
    let summary = planner.plan(
        &catalog::open(&backup.catalog_path())?,
        &IndexReader::open(&index_path)?,
        &run_dir,
    )?;
    tracing::info!(
        "{date}: planned in {:.2} s ({} keys, {} fetches, {} moves)",
        t.elapsed().as_secs_f64(),
        summary.keys,
        summary.fetches,
        summary.renames
    );
    if ctx.opts.on_bad_key == OnBadKey::Stop && summary.new_bad_keys() > 0 {
        std::fs::remove_dir_all(&run_dir).ok();
        return Err(bad_keys_error(date, &summary));
    }
    crate::backup::journal::failpoint("planned");
    if retry {
        state.applied.pop();
    }
    let done = run_one(backup, ctx.executor, &run_dir, summary, state, report)?;
    // Older dates' indexes are no longer needed: the catalog holds what they said.
    for old in std::fs::read_dir(backup.indexes_dir())?.flatten() {
        if old.path() != index_path {
            std::fs::remove_file(old.path()).ok();
        }
    }
    Ok(done)
}

/// Executes and commits one planned run. False if it was interrupted (left resumable).
fn run_one(
    backup: &Backup,
    executor: &Executor,
    run_dir: &Path,
    summary: PlanSummary,
    state: &mut State,
    report: &mut SyncReport,
) -> Result<bool> {
    // An earlier attempt that got as far as replacing the catalog only has the state left
    // to record (its counts come from the catalog: what it did is not known any more).
    let committed = !run_dir.join(plan::CATALOG).exists()
        && !run_dir.join(crate::sync::apply::FINAL_CATALOG).exists()
        && crate::backup::journal::read(run_dir)?.contains(&crate::backup::journal::Entry::Commit);
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
        executor.execute(run_dir, &summary)?
    };
    tracing::info!(
        "{}: executed in {:.2} s",
        summary.date,
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    if outcome.interrupted {
        report.interrupted = true;
        report.dates.push(DateReport {
            plan: summary,
            outcome: Some(outcome),
        });
        return Ok(false);
    }
    let mut summary = summary;
    if committed {
        let (bytes_held, not_held, retryable) = totals_from_catalog(backup)?;
        summary.bytes_held = bytes_held;
        summary.not_held = not_held;
        summary.retryable = retryable;
    } else {
        executor.commit(run_dir, &mut outcome)?;
    }
    crate::backup::journal::failpoint("catalog-replaced");
    tracing::info!(
        "{}: committed in {:.2} s",
        summary.date,
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    let stats = IndexReader::open(&backup.catalog_path())?.stats().clone();
    let failed_bytes: u64 = outcome.failures.iter().map(|f| f.size).sum();
    let failed = outcome.failures.len() as u64;
    state.applied.push(AppliedDate {
        date: summary.date.clone(),
        applied_at: Timestamp::now().to_string(),
        keys: stats.keys,
        versions: stats.records,
        downloaded: outcome.downloaded + outcome.reused_from_staging,
        downloaded_bytes: outcome.downloaded_bytes,
        renamed: outcome.renamed,
        failed: outcome.failures.len() as u64,
        skipped: summary.bad_keys.len() as u64,
        bytes_held: summary.bytes_held - failed_bytes.min(summary.bytes_held),
        not_held: summary.not_held + failed,
        retryable: summary.retryable + failed,
    });
    backup.write_state(state)?;
    crate::backup::journal::failpoint("state-written");
    std::fs::remove_dir_all(run_dir)
        .with_context(|| format!("removing finished run {}", run_dir.display()))?;
    // Whatever is left in staging belongs to no run now (failed or abandoned downloads).
    let staging = backup.staging_dir();
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cleaning {}", staging.display()))?;
    }
    tracing::info!(
        "{}: state recorded in {:.2} s",
        summary.date,
        t.elapsed().as_secs_f64()
    );
    report.dates.push(DateReport {
        plan: summary,
        outcome: Some(outcome),
    });
    Ok(true)
}

/// The run directory left by an interrupted sync, if it was planned and not yet recorded.
/// Unplanned or already recorded ones are removed.
fn pending_run(backup: &Backup, state: &State) -> Result<Option<(PathBuf, PlanSummary)>> {
    let dir = backup.runs_dir();
    let mut found = None;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let run_dir = entry?.path();
        let summary = plan::read_summary(&run_dir)?;
        match summary {
            Some(s) if state.last_applied().is_none_or(|l| s.date.as_str() > l) => {
                if found.is_some() {
                    bail!("{} holds more than one planned run", dir.display());
                }
                found = Some((run_dir, s));
            }
            _ => std::fs::remove_dir_all(&run_dir)
                .with_context(|| format!("removing {}", run_dir.display()))?,
        }
    }
    Ok(found)
}

/// Bytes held, versions not held, and of those the ones still listed: one pass over the
/// catalog (only for a run resumed after its commit, whose own counts were lost).
fn totals_from_catalog(backup: &Backup) -> Result<(u64, u64, u64)> {
    let r = catalog::open(&backup.catalog_path())?;
    let (mut held, mut not_held, mut retryable) = (0, 0, 0);
    let mut stream = r.stream();
    while let Some(rec) = stream.next_record()? {
        if catalog::file_path(&backup.stem, rec).is_some() {
            held += rec.size;
        }
        if matches!(
            rec.local.state,
            crate::model::record::LocalState::Missing | crate::model::record::LocalState::Archived
        ) {
            not_held += 1;
            retryable += u64::from(rec.local.gone_since.0 == 0);
        }
    }
    Ok((held, not_held, retryable))
}

/// The date of a run that stopped part-way and that the next sync resumes, if any.
pub fn interrupted_run(backup: &Backup) -> Result<Option<String>> {
    planned_run_date(backup, &backup.read_state()?)
}

/// The date of an interrupted, planned run that the next sync resumes (read only).
fn planned_run_date(backup: &Backup, state: &State) -> Result<Option<String>> {
    let Ok(entries) = std::fs::read_dir(backup.runs_dir()) else {
        return Ok(None);
    };
    let mut newest: Option<String> = None;
    for entry in entries.flatten() {
        if let Some(s) = plan::read_summary(&entry.path())?
            && state.last_applied().is_none_or(|l| s.date.as_str() > l)
            && newest.as_deref().is_none_or(|n| s.date.as_str() > n)
        {
            newest = Some(s.date);
        }
    }
    Ok(newest)
}

/// An incomplete date between the ones applied is a hole in the history (AWS failed to
/// finish that day's inventory, or a copy of it is partial): say so. One after them is
/// usually today's, still being written.
fn warn_incomplete(
    entries: &[crate::inventory::DateEntry],
    last_applied: Option<&str>,
    newest_selected: Option<&InventoryDate>,
) {
    for e in entries.iter().filter(|e| !e.is_complete()) {
        if last_applied.is_some_and(|l| e.date.as_str() <= l) {
            continue;
        }
        let missing = if e.has_manifest {
            "manifest.checksum"
        } else {
            "manifest.json"
        };
        if newest_selected.is_some_and(|n| e.date.as_str() < n.as_str()) {
            tracing::warn!(
                "inventory date {} is incomplete (no {missing}): skipped",
                e.date
            );
        } else {
            tracing::info!(
                "inventory date {} is not complete yet (no {missing}): not applied",
                e.date
            );
        }
    }
}

/// The dates a sync applies: those after the last applied (or resumed) one, up to
/// --end-date. `--start-date` chooses where a new backup begins; given again to a backup
/// that began there (the same command run again after an interruption) it changes nothing,
/// and any other start at or before the last applied date is refused.
fn select_dates(
    complete: &[InventoryDate],
    state: &State,
    pending: Option<&str>,
    opts: &SyncOptions,
) -> Result<Vec<InventoryDate>> {
    let mut state = state.clone();
    if let Some(p) = pending {
        state.applied.push(AppliedDate {
            date: p.to_string(),
            ..AppliedDate::default()
        });
    }
    let state = &state;
    let pick = |spec: &str, what: &str| -> Result<InventoryDate> {
        DateSpec::parse(spec)?
            .select(complete)
            .cloned()
            .with_context(|| format!("{what} {spec}: no complete inventory of that date"))
    };
    let end = opts
        .end_date
        .as_deref()
        .map(|d| pick(d, "--end-date"))
        .transpose()?;
    let began = state.applied.first().map(|a| a.date.as_str());
    let start = opts
        .start_date
        .as_deref()
        .map(|d| pick(d, "--start-date"))
        .transpose()?
        .filter(|s| Some(s.as_str()) != began);
    if let Some(last) = state.last_applied() {
        if let Some(s) = &start
            && s.as_str() <= last
        {
            bail!(
                "--start-date {s} is not after the last applied date {last}: a backup only goes \
                 forward"
            );
        }
        if let Some(e) = &end
            && e.as_str() < last
        {
            bail!(
                "--end-date {e} is before the last applied date {last}: a backup only goes forward"
            );
        }
    }
    let first = match (state.last_applied(), &start) {
        (_, Some(s)) => Some(s.clone()),
        (Some(_), None) => None,
        // A new backup starts at the latest date (each inventory lists every version).
        (None, None) => Some(
            end.clone()
                .unwrap_or_else(|| complete.last().expect("non-empty").clone()),
        ),
    };
    Ok(complete
        .iter()
        .filter(|d| state.last_applied().is_none_or(|l| d.as_str() > l))
        .filter(|d| first.as_ref().is_none_or(|f| *d >= f))
        .filter(|d| end.as_ref().is_none_or(|e| *d <= e))
        .cloned()
        .collect())
}

/// The path filter of a run: the one recorded at creation (a different one is refused, or
/// the backup would be inconsistent), or the one given for a new backup.
fn effective_filter(existing: Option<&Backup>, opts: &SyncOptions) -> Result<Option<Regex>> {
    let text = match (existing.map(|b| &b.config.path_filter), &opts.path_filter) {
        (Some(recorded), Some(given)) if recorded.as_ref() != Some(given) => bail!(
            "--path-filter {given:?} differs from the one this backup was created with ({})",
            recorded
                .as_deref()
                .map_or("none".to_string(), |r| format!("{r:?}"))
        ),
        (Some(recorded), _) => recorded.clone(),
        (None, given) => given.clone(),
    };
    text.map(|t| Regex::new(&t).with_context(|| format!("bad --path-filter {t:?}")))
        .transpose()
}

/// Builds the date's index unless a valid one is there (a resumed or repeated run).
fn ensure_index(
    inventory: &Inventory,
    date: &InventoryDate,
    path: &Path,
    opts: &IndexOptions,
) -> Result<()> {
    if let Ok(r) = IndexReader::open(path)
        && r.meta().date == date.as_str()
        && r.meta().kind == "inventory"
        && r.meta().manifest_md5 == inventory.manifest_checksum(date)?
    {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    build_index(inventory, date, path, opts)?;
    Ok(())
}

fn bad_keys_error(date: &InventoryDate, summary: &PlanSummary) -> anyhow::Error {
    let mut msg = format!(
        "inventory {date} lists {} new key(s) that cannot be stored as paths; nothing was \
         changed. Rerun with --on-bad-key skip to record them as skipped and back up the rest:",
        summary.new_bad_keys()
    );
    let new = summary.bad_keys.iter().filter(|b| !b.known);
    for b in new.take(50) {
        msg.push_str(&format!("\n  {:?}: {}", b.key, b.reason));
    }
    if summary.new_bad_keys() > 50 {
        msg.push_str(&format!("\n  ... and {} more", summary.new_bad_keys() - 50));
    }
    anyhow::anyhow!(msg)
}

/// Plans every date into a temporary directory, chaining catalogs, and reports the plans;
/// the backup (which may not exist yet) is not touched.
fn dry_run(
    opts: &SyncOptions,
    inventory: &Inventory,
    existing: Option<&Backup>,
    dates: &[InventoryDate],
    path_filter: Option<Regex>,
    mut report: SyncReport,
) -> Result<SyncReport> {
    let tmp = tempfile::Builder::new()
        .prefix("s3invbackup-dry-run-")
        .tempdir()?;
    let stem = match existing {
        Some(b) => b.stem.clone(),
        None => NameStem::new(&opts.name_stem).map_err(anyhow::Error::msg)?,
    };
    let rules = KeyRules::new(stem.clone());
    let start = existing.map_or(Ok(None), |b| {
        b.read_state().map(|s| s.last_applied().map(String::from))
    })?;
    let mut catalog_path = match existing {
        Some(b) => b.catalog_path(),
        None => {
            let p = tmp.path().join("empty.s3inv");
            catalog::write_empty(&p, "")?;
            p
        }
    };
    for date in dates
        .iter()
        .filter(|d| start.as_deref().is_none_or(|l| d.as_str() > l))
    {
        let manifest = inventory.manifest(date)?;
        // Built afresh in the temporary directory: a cache keyed by bucket and date would
        // hand a stale index to another inventory of the same names.
        let index_path = tmp.path().join(format!("{date}.s3inv"));
        ensure_index(inventory, date, &index_path, &opts.index)?;
        let run_dir = tmp.path().join(date.as_str());
        let planner = Planner {
            stem: &stem,
            rules: &rules,
            root: &opts.backup,
            date: date.as_str(),
            date_time: date.timestamp(),
            source_bucket: &manifest.manifest.source_bucket,
            path_filter: path_filter.as_ref(),
            on_bad_key: opts.on_bad_key,
        };
        let summary = planner.plan(
            &catalog::open(&catalog_path)?,
            &IndexReader::open(&index_path)?,
            &run_dir,
        )?;
        // The steps go to stdout as they are (the caller prints them from the report).
        for step in plan::read_steps(&run_dir)? {
            crate::sync::print_step(&step?)?;
        }
        catalog_path = run_dir.join(plan::CATALOG);
        report.dates.push(DateReport {
            plan: summary,
            outcome: None,
        });
    }
    Ok(report)
}

/// One line per step of a dry run.
pub fn print_step(step: &plan::Step) -> Result<()> {
    use std::io::Write;
    let line = match step {
        plan::Step::Rename { from, to } => format!("rename   {from} -> {to}"),
        plan::Step::Displace { dir, to } => format!("displace {dir}/ -> {to}/"),
        plan::Step::Mkdir { dir } => format!("mkdir    {dir}/"),
        plan::Step::Fetch {
            key,
            version_id,
            size,
            dest,
            ..
        } => format!(
            "fetch    {key} (version {}, {size} bytes) -> {dest}",
            if version_id.is_empty() {
                "null"
            } else {
                version_id
            }
        ),
    };
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}
