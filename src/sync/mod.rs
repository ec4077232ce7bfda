//! `sync`: brings a backup up to date with an inventory, one date at a time, in order.
//!
//! For each date: build (or reuse) its index, [`plan`] against the catalog, execute it
//! ([`apply`], downloads by [`fetch`]), [`commit`] it and record the date in the state. A run
//! interrupted anywhere is picked up by the next `sync`: the pending run (see
//! [`crate::backup::run_dir`]) is executed again (its steps are idempotent) before any new
//! date. [`dates`] chooses which dates a run applies; [`dry_run`] plans them without
//! touching the backup.

pub mod apply;
mod commit;
pub mod concurrency;
mod dates;
mod dry_run;
pub mod fetch;
pub mod listing;
pub mod metrics;
pub mod plan;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use regex::Regex;
use serde::Serialize;

use crate::backup::catalog;
use crate::backup::layout::{KeyRules, NameStem};
use crate::backup::run_dir::{PendingRun, PlanSummary, Step};
use crate::backup::shards::{self, ShardId, Shards};
use crate::backup::{Backup, Config, State};
use crate::index::IndexReader;
use crate::index::build::{IndexOptions, build_index};
use crate::inventory::{DateEntry, DateSpec, Inventory, InventoryDate};
use crate::s3::{S3Client, S3Config};
use crate::sync::apply::{Executor, RunOutcome};
use crate::sync::fetch::FetchOptions;
use crate::sync::plan::{OnBadKey, Planner};
use crate::sys::failpoint;
use crate::sys::progress::Progress;
use crate::sys::stop::Stop;

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
    /// GET versions whose storage class is an archive tier (`--try-archived`).
    pub try_archived: bool,
    pub fetch: FetchOptions,
    pub index: IndexOptions,
    pub progress: Progress,
    pub s3: S3Config,
    /// Checked between steps: a requested stop leaves the run resumable.
    pub stop: Stop,
    /// The shard this process writes (`--shard I/N`); None: the whole backup.
    pub shard: Option<ShardId>,
}

/// What a sync did, date by date (the `--report` JSON).
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    pub backup: String,
    pub inventory: String,
    pub dry_run: bool,
    pub resumed: Option<String>,
    pub dates: Vec<DateReport>,
    /// Versions not held after the run (missing, archived, SSE-C).
    pub failures: u64,
    /// Of those, archived (restore them in S3, then `--try-archived`) and SSE-C (never).
    pub archived: u64,
    pub needs_key: u64,
    /// Of the missing and archived, those the bucket still lists (retried).
    pub retryable: u64,
    pub interrupted: bool,
    /// The run only retried versions earlier runs could not fetch (no new date).
    pub retried: bool,
    /// The newest complete inventory date, and a newer one not complete yet.
    pub newest_inventory: Option<String>,
    pub newest_incomplete: Option<String>,
    /// How old the newest complete date is, when the run started (seconds).
    pub inventory_age_secs: Option<i64>,
    /// RFC 3339, UTC; the tool's version.
    pub started: String,
    pub ended: String,
    pub duration_secs: f64,
    pub version: String,
}

impl SyncReport {
    /// Versions this run fetched (and bytes), moved, and fetches of it that failed.
    pub fn fetched(&self) -> (u64, u64, u64, u64) {
        self.dates.iter().filter_map(|d| d.outcome.as_ref()).fold(
            (0, 0, 0, 0),
            |(n, b, r, f), o| {
                (
                    n + o.downloaded + o.reused_from_staging,
                    b + o.downloaded_bytes,
                    r + o.renamed,
                    f + o.failures.len() as u64,
                )
            },
        )
    }
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
    progress: Progress,
    s3: S3Config,
    stop: Stop,
) -> Result<SyncReport> {
    let state = backup.read_state()?;
    let Some(last) = state.last_applied() else {
        bail!("{}: no date applied yet", backup.root.display());
    };
    let shard_ids: Vec<Option<ShardId>> = match &backup.config.shards {
        Some(map) => (0..map.count)
            .map(|index| {
                Some(ShardId {
                    index,
                    count: map.count,
                })
            })
            .collect(),
        None => vec![None],
    };
    let mut all: Option<SyncReport> = None;
    for shard in shard_ids {
        let report = refetch_part(backup, inventory, &fetch, progress, &s3, &stop, last, shard)?;
        all = Some(match all {
            None => report,
            Some(mut a) => {
                a.dates.extend(report.dates);
                a.failures += report.failures;
                a.archived += report.archived;
                a.needs_key += report.needs_key;
                a.retryable += report.retryable;
                a.interrupted |= report.interrupted;
                a.retried |= report.retried;
                a
            }
        });
        if stop.requested() {
            break;
        }
    }
    Ok(all.expect("at least one part"))
}

/// Brings shard `index` (just started afresh by `fsck --repair`, its state beginning at the
/// date the other shards reached: `State::starts_at`) up to that date. What it held is
/// still in the tree: every file found at its path with its size and mtime is kept, not
/// downloaded again.
pub fn catch_up_shard(
    backup: &Backup,
    index: u32,
    inventory: Option<&str>,
    fetch: FetchOptions,
    progress: Progress,
    s3: S3Config,
    stop: Stop,
) -> Result<SyncReport> {
    let Some(map) = &backup.config.shards else {
        bail!("{} has no shards", backup.root.display());
    };
    let mut reached: Option<String> = None;
    for part in backup.parts() {
        if let Some(l) = part.read_state()?.last_applied()
            && reached.as_deref().is_none_or(|r| l > r)
        {
            reached = Some(l.to_string());
        }
    }
    let end = reached.unwrap_or_else(|| map.first_date.clone());
    let id = ShardId {
        index,
        count: map.count,
    };
    refetch_part(
        backup,
        inventory,
        &fetch,
        progress,
        &s3,
        &stop,
        &end,
        Some(id),
    )
}

#[allow(clippy::too_many_arguments)]
fn refetch_part(
    backup: &Backup,
    inventory: Option<&str>,
    fetch: &FetchOptions,
    progress: Progress,
    s3: &S3Config,
    stop: &Stop,
    last: &str,
    shard: Option<ShardId>,
) -> Result<SyncReport> {
    sync(&SyncOptions {
        inventory: inventory.unwrap_or(&backup.config.inventory).to_string(),
        backup: backup.root.clone(),
        start_date: None,
        end_date: Some(last.to_string()),
        path_filter: None,
        name_stem: backup.stem.as_str().to_string(),
        file_mode: backup.config.file_mode,
        on_bad_key: OnBadKey::Stop,
        try_archived: false,
        fetch: fetch.clone(),
        index: IndexOptions {
            stop: stop.clone(),
            ..IndexOptions::default()
        },
        progress,
        s3: s3.clone(),
        stop: stop.clone(),
        shard,
    })
}

/// What both a sync and a dry run start from.
struct Prepared {
    inventory: Inventory,
    existing: Option<Backup>,
    dates: Vec<InventoryDate>,
    path_filter: Option<Regex>,
    report: SyncReport,
}

fn prepare(opts: &SyncOptions, dry_run: bool) -> Result<Prepared> {
    let started = crate::model::timestamp::Timestamp::now();
    let inventory = Inventory::open(&opts.inventory, &opts.s3)?;
    let mut report = SyncReport {
        backup: opts.backup.display().to_string(),
        inventory: opts.inventory.clone(),
        dry_run,
        started: started.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..SyncReport::default()
    };
    let mut existing = Backup::open(&opts.backup)?
        .map(|b| part_to_write(b, opts.shard, dry_run))
        .transpose()?;
    // Read once, before the listing (whose start it decides) and for the dates to apply.
    let progress = existing.as_ref().map(progress).transpose()?;
    let entries: Vec<DateEntry> = match listing_start(progress.as_ref(), opts) {
        Some(from) => inventory.dates_from(&from)?,
        None => inventory.dates()?,
    };
    let complete: Vec<InventoryDate> = entries
        .iter()
        .filter(|e| e.is_complete())
        .map(|e| e.date.clone())
        .collect();
    if complete.is_empty() {
        bail!("{}: no complete inventory date", opts.inventory);
    }
    let newest = complete.last().expect("not empty");
    report.newest_inventory = Some(newest.to_string());
    report.newest_incomplete = entries
        .iter()
        .filter(|e| !e.is_complete() && e.date.as_str() > newest.as_str())
        .map(|e| e.date.to_string())
        .next_back();
    let age_ms = started.as_millis() - newest.timestamp().as_millis();
    report.inventory_age_secs = Some(age_ms / 1000);
    dates::warn_stale(newest, age_ms);
    let path_filter = effective_filter(existing.as_ref(), opts)?;
    if existing.is_none()
        && !dry_run
        && let Some(id) = opts.shard.filter(|id| id.count > 1)
    {
        // Every shard of a job array starts at once: one creates the backup, the others
        // wait for it and then write their shard.
        let none = State::default();
        let first = dates::select_dates(&complete, &none, None, opts)?;
        let whole = create_sharded(opts, &inventory, &first, path_filter.as_ref(), id)?;
        existing = Some(part_to_write(whole, opts.shard, dry_run)?);
    }
    let (state, pending) = match (progress, &existing) {
        (Some(p), _) => p,
        // Created just now, by the first shard.
        (None, Some(b)) => self::progress(b)?,
        (None, None) => (State::default(), None),
    };
    // A shard starts where the backup began, whenever it first runs.
    let mut opts_here;
    let mut opts = opts;
    if let Some(map) = existing.as_ref().and_then(|b| b.config.shards.as_ref())
        && state.applied.is_empty()
        && pending.is_none()
    {
        let start = state.starts_at.as_ref().unwrap_or(&map.first_date);
        if let Some(s) = &opts.start_date
            && DateSpec::parse(s)?.select(&complete).map(|d| d.as_str()) != Some(start)
        {
            bail!(
                "--start-date {s}: this shard of {} starts at {start}{}",
                opts.backup.display(),
                if state.starts_at.is_some() {
                    " (where the other shards were when it was started afresh)"
                } else {
                    ", where the backup began"
                }
            );
        }
        opts_here = opts.clone();
        opts_here.start_date = Some(start.clone());
        opts = &opts_here;
    }
    let dates = dates::select_dates(&complete, &state, pending.as_deref(), opts)?;
    dates::warn_incomplete(&entries, state.last_applied(), dates.last());
    Ok(Prepared {
        inventory,
        existing,
        dates,
        path_filter,
        report,
    })
}

/// Where the date listing may start: a backup that has applied (or begun) a date needs no
/// folder before it, and over a long link the listing of years of dates is most of a quiet
/// night's fixed cost. `--start-date` and `--end-date` are checked against every date (a
/// start given again, or a date before the last applied, must be told apart), so with
/// either the whole inventory is listed.
fn listing_start(
    progress: Option<&(State, Option<String>)>,
    opts: &SyncOptions,
) -> Option<InventoryDate> {
    let (state, pending) = progress?;
    if opts.start_date.is_some() || opts.end_date.is_some() {
        return None;
    }
    state
        .last_applied()
        .into_iter()
        .chain(pending.as_deref())
        .min()
        .and_then(InventoryDate::parse)
}

/// A backup's state and the date of the run still pending in it, if any.
fn progress(b: &Backup) -> Result<(State, Option<String>)> {
    let state = b.read_state()?;
    let pending = b.pending_run(&state)?.map(|p| p.summary.date);
    Ok((state, pending))
}

/// Plans every date the sync would apply and hands each step to `on_step`; changes nothing.
pub fn dry_run(
    opts: &SyncOptions,
    on_step: &mut dyn FnMut(&Step) -> Result<()>,
) -> Result<SyncReport> {
    let p = prepare(opts, true)?;
    dry_run::dry_run(
        opts,
        &p.inventory,
        p.existing.as_ref(),
        &p.dates,
        p.path_filter,
        p.report,
        on_step,
    )
    .map(finished)
}

pub fn sync(opts: &SyncOptions) -> Result<SyncReport> {
    let Prepared {
        inventory,
        existing,
        dates,
        path_filter,
        mut report,
    } = prepare(opts, false)?;
    let root_existed = opts.backup.exists();
    let created = existing.is_none();
    let backup = match existing {
        Some(b) => b,
        None => create(opts, &inventory, &dates, path_filter.as_ref())?,
    };
    let result = apply_dates(
        opts,
        &inventory,
        &backup,
        &dates,
        path_filter.as_ref(),
        &mut report,
    );
    // (A sharded backup is never taken back: other shards may be writing it already.)
    if result.is_err() && created && backup.config.shards.is_none() {
        forget_if_untouched(&backup, root_existed);
    }
    result?;
    let totals = backup
        .read_state()?
        .applied
        .last()
        .map(|a| a.totals)
        .unwrap_or_default();
    report.failures = totals.not_held;
    report.archived = totals.archived;
    report.needs_key = totals.needs_key;
    report.retryable = totals.retryable;
    Ok(finished(report))
}

/// Stamps the end of a run on its report.
fn finished(mut report: SyncReport) -> SyncReport {
    let ended = crate::model::timestamp::Timestamp::now();
    let started = crate::model::timestamp::Timestamp::parse(report.started.as_bytes());
    report.duration_secs =
        started.map_or(0.0, |s| (ended.as_millis() - s.as_millis()) as f64 / 1000.0);
    report.ended = ended.to_string();
    report
}

/// The date of a run that stopped part-way and that the next sync resumes, if any.
pub fn interrupted_run(backup: &Backup) -> Result<Option<String>> {
    Ok(backup
        .pending_run(&backup.read_state()?)?
        .map(|p| p.summary.date))
}

/// The inventory location as the backup records it: a local copy by its absolute path, so
/// that a later `fsck --repair` run from another directory still finds it.
fn recorded_location(spec: &str) -> Result<String> {
    if spec.starts_with("s3://") {
        return Ok(spec.to_string());
    }
    let path = std::path::absolute(spec)
        .with_context(|| format!("resolving the inventory path {spec:?}"))?;
    Ok(path.display().to_string())
}

fn create(
    opts: &SyncOptions,
    inventory: &Inventory,
    dates: &[InventoryDate],
    path_filter: Option<&Regex>,
) -> Result<Backup> {
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
            inventory: recorded_location(&opts.inventory)?,
            source_bucket: manifest.manifest.source_bucket.clone(),
            path_filter: path_filter.map(|r| r.as_str().to_string()),
            file_mode: opts.file_mode,
            naming: None,
            shards: None,
        },
    )
}

/// The part of `backup` this run writes: the shard `--shard` names (which must be one of
/// the backup's: its shards are fixed when it is created), or the whole of a one-writer
/// backup. A dry run of a sharded backup without `--shard` plans the whole of it.
fn part_to_write(backup: Backup, shard: Option<ShardId>, dry_run: bool) -> Result<Backup> {
    let root = backup.root.display().to_string();
    match (&backup.config.shards, shard) {
        (Some(map), Some(id)) if id.count == map.count => Ok(backup.shard(id.index)),
        (Some(map), Some(id)) => bail!(
            "--shard {id}: {root} was created in {} shards, and its shards are fixed for good;              run --shard I/{} for I from 0 to {}",
            map.count,
            map.count,
            map.count - 1
        ),
        (Some(_), None) if dry_run => Ok(backup),
        (Some(map), None) => bail!(
            "{root} is written by {} processes: run `sync --shard I/{}` (I from 0 to {}; e.g.              --shard slurm in a job array of {})",
            map.count,
            map.count,
            map.count - 1,
            map.count
        ),
        (None, Some(id)) if id.count > 1 => bail!(
            "--shard {id}: {root} was created for one process (no shards), and its shards are              fixed for good; run sync without --shard"
        ),
        (None, _) => Ok(backup),
    }
}

/// Creates a sharded backup, or waits for the shard that is creating it. The creation
/// lock (`.<stem>/create.lock`, taken blocking) makes the N processes of a job array
/// agree on one shard map: the first builds the first date's index (kept in
/// `.<stem>/indexes/` for every shard to plan that date from), cuts it into N ranges of
/// about equal version count and writes the config; the others find it when the lock is
/// theirs.
fn create_sharded(
    opts: &SyncOptions,
    inventory: &Inventory,
    dates: &[InventoryDate],
    path_filter: Option<&Regex>,
    id: ShardId,
) -> Result<Backup> {
    let stem = NameStem::new(&opts.name_stem).map_err(anyhow::Error::msg)?;
    let state_dir = opts.backup.join(stem.state_dir());
    crate::backup::durable::make_dir(&state_dir)?;
    let lock_path = state_dir.join("create.lock");
    let lock = crate::backup::lock_file(&lock_path)?;
    let t = std::time::Instant::now();
    if lock.try_lock().is_err() {
        tracing::info!(
            "shard {id}: another shard is creating {}; waiting for it",
            opts.backup.display()
        );
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    if let Some(b) = Backup::open(&opts.backup)? {
        tracing::info!(
            "shard {id}: the backup was created by another shard ({:.3} s waited)",
            t.elapsed().as_secs_f64()
        );
        return Ok(b);
    }
    let Some(first) = dates.first() else {
        bail!("no inventory date to start the backup from");
    };
    let manifest = inventory.manifest(first)?;
    let index_path = shared_index_path(&state_dir, first.as_str());
    ensure_index(inventory, first, &index_path, &opts.index)?;
    let reader = IndexReader::open(&index_path)?;
    let keep =
        |r: &crate::model::record::VersionRecord| path_filter.is_none_or(|re| re.is_match(&r.key));
    let total = match path_filter {
        None => reader.stats().records,
        Some(_) => {
            let mut n = 0u64;
            let mut s = crate::index::merge::Kept::new(reader.stream(), keep);
            let mut rec = crate::model::record::VersionRecord::default();
            while crate::index::merge::SortedRecords::take(&mut s, &mut rec)? {
                n += 1;
            }
            n
        }
    };
    let mut stream = crate::index::merge::Kept::new(reader.stream(), keep);
    let map = shards::compute(&mut stream, total, id.count, first.as_str())?;
    drop(stream);
    tracing::info!(
        "{}: {} shards cut at {} ({total} versions, {:.3} s)",
        opts.backup.display(),
        map.count,
        map.cuts.join(" "),
        t.elapsed().as_secs_f64()
    );
    Backup::create(
        &opts.backup,
        Config {
            format: crate::backup::FORMAT,
            name_stem: stem.as_str().to_string(),
            inventory: recorded_location(&opts.inventory)?,
            source_bucket: manifest.manifest.source_bucket.clone(),
            path_filter: path_filter.map(|r| r.as_str().to_string()),
            file_mode: opts.file_mode,
            naming: None,
            shards: Some(map),
        },
    )
}

/// The first date's index a sharded backup's creator builds for every shard.
fn shared_index_path(state_dir: &Path, date: &str) -> PathBuf {
    state_dir.join("indexes").join(format!("{date}.s3inv"))
}

/// After a shard's run: the spine's versions JSON from the merged catalog (see
/// [`shards`]), and the first date's shared index removed once every shard planned it.
fn after_shard_run(backup: &Backup) -> Result<()> {
    let Some(map) = &backup.config.shards else {
        return Ok(());
    };
    let whole = Backup {
        part: crate::backup::PartOf::Whole,
        ..backup.clone()
    };
    crate::backup::versions_json::write_spine_versions_files(&whole)?;
    let index = shared_index_path(&backup.state_dir(), &map.first_date);
    if index.exists()
        && whole
            .read_state()?
            .last_applied()
            .is_some_and(|l| l >= map.first_date.as_str())
    {
        std::fs::remove_file(&index).ok();
    }
    Ok(())
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
        stop: opts.stop.clone(),
    };

    // An interrupted run first.
    let mut state = backup.read_state()?;
    let pending = backup.pending_run_clearing_leftovers(&state)?;
    if let Some(run) = &pending
        && run.dir.is_legacy(&run.summary)
    {
        bail!(
            "the interrupted run of {} in {} was planned by an older version of s3invbackup, \
             which kept the catalog in one file; finish it with that version, or undo it with \
             `s3invbackup rollback {}` and sync again",
            run.summary.date,
            backup.root.display(),
            backup.root.display()
        );
    }
    catalog::store::upgrade(backup)?;
    if let Some(run) = pending {
        report.resumed = Some(run.summary.date.clone());
        tracing::warn!("resuming the interrupted run of {}", run.summary.date);
        if !commit::finish_run(backup, &executor, run, &mut state, report)? {
            return Ok(());
        }
        after_shard_run(backup)?;
    }
    let shards = backup.shards();
    let ctx = RunContext {
        opts,
        inventory,
        backup,
        executor: &executor,
        rules: KeyRules::new(backup.stem.clone()),
        path_filter,
        shard: match (&shards, backup.part) {
            (Some(s), crate::backup::PartOf::Shard(i)) => Some((s, i)),
            _ => None,
        },
    };
    let last = state.last_applied().map(String::from);
    let mut applied_any = false;
    for date in dates
        .iter()
        .filter(|d| last.as_deref().is_none_or(|l| d.as_str() > l))
    {
        if opts.stop.requested() {
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
        after_shard_run(backup)?;
        applied_any = true;
    }
    // Nothing new: retry what earlier runs could not fetch, against the last date's index.
    if !applied_any
        && !opts.stop.requested()
        && let Some(last) = state.last_applied().and_then(InventoryDate::parse)
        && state.applied.last().is_some_and(|a| a.totals.retryable > 0)
    {
        tracing::warn!("retrying versions that earlier runs could not fetch ({last})");
        report.retried = true;
        if plan_and_run(&ctx, &last, &mut state, report, true)? {
            after_shard_run(backup)?;
        }
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
    /// The shard map and the shard this run writes.
    shard: Option<(&'a Shards, u32)>,
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
    let t = std::time::Instant::now();
    let run_dir = backup.run_dir(date.as_str());
    let planner = Planner {
        stem: &backup.stem,
        rules: &ctx.rules,
        root: &backup.root,
        date: date.as_str(),
        date_time: date.timestamp(),
        source_bucket: &backup.config.source_bucket,
        path_filter: ctx.path_filter,
        on_bad_key: ctx.opts.on_bad_key,
        try_archived: ctx.opts.try_archived,
        progress: ctx.opts.progress,
        shard: ctx.shard,
    };
    // Indexes left by an older version or an interrupted fallback.
    if let Ok(entries) = std::fs::read_dir(backup.indexes_dir()) {
        for old in entries.flatten() {
            std::fs::remove_file(old.path()).ok();
        }
    }
    // A sharded backup's first date was indexed once, by its creator, for every shard.
    let shared = backup
        .config
        .shards
        .as_ref()
        .filter(|m| m.first_date == date.as_str())
        .map(|_| shared_index_path(&backup.state_dir(), date.as_str()))
        .filter(|p| p.exists());
    let source = RowSource {
        inventory: ctx.inventory,
        index: &ctx.opts.index,
        index_dir: &backup.indexes_dir(),
        scratch: &backup.part_dir(),
        shared_index: shared.as_deref(),
    };
    let summary = plan_date(&source, &planner, &backup.catalog()?, date, &run_dir)?;
    tracing::info!(
        "{date}: planned in {:.2} s ({} keys, {} fetches, {} moves)",
        t.elapsed().as_secs_f64(),
        summary.keys,
        summary.fetches,
        summary.renames
    );
    if ctx.opts.on_bad_key == OnBadKey::Stop && summary.new_bad_keys() > 0 {
        std::fs::remove_dir_all(run_dir.path()).ok();
        return Err(bad_keys_error(date, &summary));
    }
    failpoint::hit("planned");
    let mut summary = summary;
    let mut night = None;
    if retry {
        night = state.applied.pop();
        // The date against its own index changes nothing: its first run's list is the one.
        std::fs::remove_file(run_dir.changes_path()).ok();
        summary.changes.clear();
    }
    let run = PendingRun {
        dir: run_dir,
        summary,
    };
    let done = commit::finish_run(backup, ctx.executor, run, state, report)?;
    // A retry's row is still the night's: what the night did, with what the catalog holds
    // now (the retry itself is a row of the run history).
    if done
        && let Some(night) = night
        && let Some(row) = state.applied.last_mut()
        && row.date == night.date
    {
        *row = crate::backup::AppliedDate {
            totals: row.totals,
            ..night
        };
        backup.write_state(state)?;
    }
    Ok(done)
}

/// Where [`plan_date`] reads a date's rows from.
#[derive(Clone, Copy)]
pub(crate) struct RowSource<'a> {
    pub inventory: &'a Inventory,
    pub index: &'a IndexOptions,
    /// Where the fallback's index is built.
    pub index_dir: &'a Path,
    /// Where columnar files copied from S3 are verified (unless `--tmp-dir` says).
    pub scratch: &'a Path,
    /// An index of the date built already (a sharded backup's first date), used if valid.
    pub shared_index: Option<&'a Path>,
}

/// Plans `date` into `run_dir` against `catalog`: streamed straight from the inventory when
/// its data files are sorted and disjoint (no index written); otherwise from an index built
/// by the external sort in `index_dir` (removed once the plan is made). A data file that
/// fails its MD5 check on S3 is a damaged transfer: the walk starts again, as an index
/// build would.
pub(crate) fn plan_date(
    source: &RowSource,
    planner: &Planner,
    catalog: &crate::backup::catalog::Catalog,
    date: &InventoryDate,
    run_dir: &crate::backup::run_dir::RunDir,
) -> Result<PlanSummary> {
    let RowSource {
        inventory,
        index: index_opts,
        index_dir,
        scratch,
        shared_index,
    } = *source;
    let fresh = |run_dir: &crate::backup::run_dir::RunDir| -> Result<()> {
        if run_dir.path().exists() {
            std::fs::remove_dir_all(run_dir.path()).with_context(|| {
                format!("removing the unplanned run {}", run_dir.path().display())
            })?;
        }
        Ok(())
    };
    if let Some(shared) = shared_index
        && let Ok(reader) = IndexReader::open(shared)
        && reader.meta().date == date.as_str()
        && reader.meta().manifest_md5 == inventory.manifest_checksum(date)?
    {
        fresh(run_dir)?;
        return planner.plan(catalog, &reader, run_dir);
    }
    let manifest = inventory.manifest(date)?;
    let mut opts = index_opts.clone();
    if opts.tmp_dir.is_none() {
        opts.tmp_dir = Some(scratch.to_path_buf());
    }
    // The queue ahead of the planner: enough to keep the parsers busy, far below a sort's
    // budget (nothing is sorted here).
    opts.memory = opts.memory.min(STREAM_MEMORY);
    let listing = listing::StreamedListing {
        inventory,
        date,
        opts,
        file_schema: manifest.manifest.file_schema.clone(),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        fresh(run_dir)?;
        match planner.plan(catalog, &listing, run_dir) {
            Ok(summary) => {
                failpoint::hit("index-built");
                return Ok(summary);
            }
            Err(e) if e.downcast_ref::<listing::NotPresorted>().is_some() => {
                tracing::info!("{e}; indexing the date with the external sort");
                break;
            }
            Err(e)
                if inventory.is_remote()
                    && crate::inventory::is_mismatch(&e)
                    && attempt < crate::inventory::READ_ATTEMPTS =>
            {
                tracing::warn!(
                    "{e:#}; reading the inventory again (attempt {attempt} of {})",
                    crate::inventory::READ_ATTEMPTS
                );
            }
            Err(e) => {
                fresh(run_dir).ok();
                return Err(e);
            }
        }
    }
    fresh(run_dir)?;
    let index_path = index_dir.join(format!("{date}.s3inv"));
    let t = std::time::Instant::now();
    ensure_index(inventory, date, &index_path, index_opts)?;
    failpoint::hit("index-built");
    tracing::info!("{date}: index ready in {:.2} s", t.elapsed().as_secs_f64());
    let summary = planner.plan(catalog, &IndexReader::open(&index_path)?, run_dir);
    std::fs::remove_file(&index_path).ok();
    summary
}

/// Memory for the records parsed ahead of a streamed plan.
const STREAM_MEMORY: u64 = 64 << 20;

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
pub(crate) fn ensure_index(
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
