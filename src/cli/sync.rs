//! `s3invbackup sync INVENTORY BACKUP`: bring a backup up to date, date by date.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use std::io::Write;

use s3invbackup::backup::Backup;
use s3invbackup::backup::run_dir::Step;
use s3invbackup::backup::runs::{RunRecord, RunResult};
use s3invbackup::backup::shards::ShardId;
use s3invbackup::inventory::InventoryDate;
use s3invbackup::model::timestamp::Timestamp;
use s3invbackup::model::version_id;
use s3invbackup::sync::concurrency::{self, Jobs};
use s3invbackup::sync::metrics::Metrics;
use s3invbackup::sync::plan::OnBadKey;
use s3invbackup::sync::{SyncOptions, SyncReport, dry_run, interrupted_run, sync};
use s3invbackup::sys::progress::{human_bytes, parse_bytes};

use super::{Outcome, ProgressArgs, S3Args};

/// Apply every complete inventory date after the last applied one (up to --end-date), in
/// order: new and changed versions are downloaded and verified, replaced and deleted ones
/// become `<name>.old.<versionId>.<etag>` beside the current file. Nothing that was ever
/// backed up is deleted. A new backup starts at the latest date unless --start-date says
/// otherwise. An interrupted sync is resumed by the next one.
///
/// Exit status: 0 done; 1 error (the backup is consistent: resume by running sync again);
/// 2 done, but some versions could not be fetched (listed; retried by the next sync);
/// 130 interrupted (resumable).
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// [INVENTORY] BACKUP: the inventory, s3://bucket/prefix/ (the folder holding the dated
    /// folders) or a local copy, then the backup directory (created if absent; must then be
    /// empty). An existing backup alone uses the inventory recorded when it was created
    #[arg(required = true, num_args = 1..=2, value_names = ["INVENTORY", "BACKUP"])]
    pub locations: Vec<String>,
    /// First date for a new backup (YYYY-MM-DD or YYYY-MM-DDTHH-MMZ) [default: the latest]
    #[arg(long)]
    pub start_date: Option<String>,
    /// Last date to apply [default: the latest complete one]
    #[arg(long)]
    pub end_date: Option<String>,
    /// Only keys matching this regex; recorded at creation and used by every later run
    #[arg(long)]
    pub path_filter: Option<String>,
    /// Stem of every name the backup reserves (fixed at creation)
    #[arg(long, default_value = "s3invbackup")]
    pub name_stem: String,
    /// Mode of the files placed (octal; fixed at creation)
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub file_mode: u32,
    /// Keys that cannot be stored as paths: stop (list them, change nothing) or skip
    /// (record them as skipped and report them every run)
    #[arg(long, default_value = "stop", value_parser = ["stop", "skip"])]
    pub on_bad_key: String,
    /// Also GET versions whose storage class is an archive tier (GLACIER, DEEP_ARCHIVE,
    /// Intelligent-Tiering's archive tiers): for copies restored in S3. Otherwise they are
    /// recorded as archived without a request
    #[arg(long)]
    pub try_archived: bool,
    /// Downloads in flight: `auto` finds how many the link and S3 take (starting at 32,
    /// growing while the run gets faster, backing off when S3 throttles), or a fixed number
    #[arg(long, default_value = "auto")]
    pub jobs: Jobs,
    /// The most downloads in flight `--jobs auto` may reach
    #[arg(long, default_value_t = concurrency::DEFAULT_MAX)]
    pub max_jobs: usize,
    /// Objects bigger than this are fetched as parallel ranges
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub part_size: u64,
    /// Memory budget for sorting an inventory, e.g. 256MiB, 4GiB
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory: u64,
    /// Print what would be downloaded and moved; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write one shard of a backup written by N processes: `I/N` (I from 0 to N-1),
    /// `slurm` (a job array's task, of the array's N tasks) or `k8s/N` (an Indexed Job's
    /// completion index, of N). N is fixed when the backup is created; all N may start at
    /// once. See README, "Running on a cluster"
    #[arg(long, value_parser = ShardId::parse)]
    pub shard: Option<ShardId>,
    /// Write the run's report (JSON) here (checked before the run starts)
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write Prometheus metrics here at the end of every run, failed ones too (for
    /// node_exporter's textfile collector; replaced atomically)
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("bad mode {s:?}: expected octal, e.g. 644"))
}

impl SyncArgs {
    /// The backup directory (the last location given).
    pub fn backup(&self) -> PathBuf {
        PathBuf::from(self.locations.last().expect("clap requires one"))
    }

    /// The inventory given, or the one the existing backup recorded at creation.
    fn inventory(&self) -> Result<String> {
        if let [inventory, _] = self.locations.as_slice() {
            return Ok(inventory.clone());
        }
        let backup = self.backup();
        match Backup::open(&backup)? {
            Some(b) => Ok(b.config.inventory),
            None => anyhow::bail!(
                "{} is not a backup yet: a new backup needs its inventory, \
                 `s3invbackup sync s3://BUCKET/PREFIX/ {}`",
                backup.display(),
                backup.display()
            ),
        }
    }
}

pub fn run(args: &SyncArgs, s3: &S3Args) -> Result<Outcome> {
    let started = Timestamp::now();
    let backup_dir = args.backup();
    // A report or metrics path that cannot be written is found now, not after the night.
    for path in [&args.report, &args.metrics_file].into_iter().flatten() {
        super::check_output_path(path)?;
    }
    let result = args
        .inventory()
        .and_then(|inventory| run_sync(args, s3, inventory));
    // A run refused because another holds the lock never started: the holder's run is the
    // one to record (a "failed" row here would alarm while that run is fine).
    let locked = result.as_ref().err().is_some_and(super::is_lock_refusal);
    if !args.dry_run && !locked {
        record_run(args, &backup_dir, started, &result)?;
    }
    let (report, outcome) = result?;
    if let Some(path) = &args.report {
        let mut bytes = serde_json::to_vec_pretty(&report)?;
        bytes.push(b'\n');
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(outcome)
}

/// Appends the run to the backup's history and writes the metrics file, whatever the
/// run's end: a failed night is exactly what monitoring must see.
fn record_run(
    args: &SyncArgs,
    backup_dir: &std::path::Path,
    started: Timestamp,
    result: &Result<(SyncReport, Outcome)>,
) -> Result<()> {
    let ended = Timestamp::now();
    let mut run = RunRecord::timed("sync", started, ended);
    match result {
        Ok((report, outcome)) => {
            run.result = Some(match outcome {
                Outcome::Interrupted => RunResult::Interrupted,
                Outcome::Partial => RunResult::Partial,
                _ => RunResult::Done,
            });
            run.dates = report.dates.iter().map(|d| d.plan.date.clone()).collect();
            run.retry = report.retried;
            (run.fetched, run.fetched_bytes, run.renamed, run.failed) = report.fetched();
            run.newest_inventory = report.newest_inventory.clone();
        }
        Err(e) => {
            run.result = Some(RunResult::Failed);
            run.error = Some(format!("{e:#}"));
        }
    }
    let backup = written_part(args);
    if let Some(b) = &backup
        && let Err(e) = b.append_run(&run)
    {
        tracing::warn!("could not record the run in the backup's history: {e:#}");
    }
    if let Some(path) = &args.metrics_file {
        let state = backup.as_ref().and_then(|b| b.read_state().ok());
        let last = state.as_ref().and_then(|s| s.applied.last());
        Metrics {
            backup: &backup_dir.display().to_string(),
            run: &run,
            report: result.as_ref().ok().map(|(r, _)| r),
            totals: last.map(|a| a.totals),
            last_applied: last
                .and_then(|a| InventoryDate::parse(&a.date))
                .map(|d| d.timestamp().as_millis() / 1000),
            ended: ended.as_millis() / 1000,
        }
        .write(path)?;
    }
    Ok(())
}

/// The part of the backup the run wrote (its shard, with --shard), if the backup exists.
fn written_part(args: &SyncArgs) -> Option<Backup> {
    let b = Backup::open(&args.backup()).ok().flatten()?;
    Some(match (args.shard, &b.config.shards) {
        (Some(id), Some(map)) if id.count == map.count => b.shard(id.index),
        _ => b,
    })
}

fn run_sync(args: &SyncArgs, s3: &S3Args, inventory: String) -> Result<(SyncReport, Outcome)> {
    let stop = super::signals::stop_token();
    let opts = SyncOptions {
        inventory,
        backup: args.backup(),
        start_date: args.start_date.clone(),
        end_date: args.end_date.clone(),
        path_filter: args.path_filter.clone(),
        name_stem: args.name_stem.clone(),
        file_mode: args.file_mode,
        on_bad_key: if args.on_bad_key == "skip" {
            OnBadKey::Skip
        } else {
            OnBadKey::Stop
        },
        try_archived: args.try_archived,
        fetch: super::limits::fetch_options(args.jobs, args.max_jobs, args.part_size),
        index: super::index_options(args.memory, &args.progress),
        progress: args.progress.options(),
        s3: s3.config(),
        stop,
        shard: args.shard,
    };
    let result = if args.dry_run {
        let mut out = std::io::stdout().lock();
        dry_run(&opts, &mut |step| print_step(&mut out, step))
    } else {
        sync(&opts)
    };
    let report = result.map_err(|e| {
        // Said once, where the operator looks: what state the failure left behind.
        let pending = written_part(args).and_then(|b| interrupted_run(&b).ok().flatten());
        match pending {
            Some(date) => e.context(format!(
                "the run of {date} stopped part-way (the backup is consistent: run sync again \
                 to finish it, or `s3invbackup rollback {}` to undo it)",
                args.backup().display()
            )),
            None => e,
        }
    })?;
    print_summary(&report);
    // 2: the backup does not hold everything listed, or a fetch of this run failed, or a
    // date of this run found versions gone from the bucket before they were backed up (a
    // resumed run reports its date's plan, so an interrupted run's loss is still said).
    let failed_here = !report.dry_run
        && report.dates.iter().any(|d| {
            d.plan.missing_gone > 0 || d.outcome.as_ref().is_some_and(|o| !o.failures.is_empty())
        });
    let outcome = if report.interrupted {
        Outcome::Interrupted
    } else if failed_here || report.retryable.saturating_sub(report.archived) > 0 {
        // Only what a later sync can still get makes a run partial: archived and SSE-C
        // versions wait on the operator (status and the metrics say so), not on a retry.
        Outcome::Partial
    } else {
        Outcome::Done
    };
    Ok((report, outcome))
}

/// One line per step of a dry run.
fn print_step(out: &mut impl Write, step: &Step) -> Result<()> {
    match step {
        Step::Rename { from, to } => writeln!(out, "rename   {from} -> {to}")?,
        Step::Displace { dir, to } => writeln!(out, "displace {dir}/ -> {to}/")?,
        Step::Mkdir { dir } => writeln!(out, "mkdir    {dir}/")?,
        Step::Fetch {
            key,
            version_id,
            size,
            dest,
            ..
        } => writeln!(
            out,
            "fetch    {key} (version {}, {size} bytes) -> {dest}",
            version_id::to_s3(version_id)
        )?,
    }
    Ok(())
}

fn print_summary(report: &SyncReport) {
    if report.dates.is_empty() && !report.interrupted {
        s3invbackup::say!("{}: up to date (no new inventory date)", report.backup);
        print_not_held(report);
        return;
    }
    s3invbackup::say!(
        "{:<19} {:>10} {:>12} {:>9} {:>8} {:>8} {:>9}",
        "date",
        "fetched",
        "bytes",
        "renamed",
        "failed",
        "skipped",
        "gone"
    );
    for d in &report.dates {
        let p = &d.plan;
        let (fetched, bytes, renamed, failed) = match &d.outcome {
            Some(o) => (
                o.downloaded + o.reused_from_staging,
                o.downloaded_bytes,
                o.renamed,
                o.failures.len() as u64,
            ),
            None => (p.fetches, p.fetch_bytes, p.renames, 0),
        };
        s3invbackup::say!(
            "{:<19} {:>10} {:>12} {:>9} {:>8} {:>8} {:>9}{}",
            p.date,
            fetched,
            human_bytes(bytes),
            renamed,
            failed,
            p.bad_keys.len(),
            p.newly_gone,
            if report.dry_run {
                "  (dry run: would)"
            } else {
                ""
            }
        );
        if !p.changes.is_empty() {
            let kinds: Vec<String> = p.changes.iter().map(|(k, n)| format!("{n} {k}")).collect();
            s3invbackup::say!(
                "  in the bucket: {} (`s3invbackup changes` lists them)",
                kinds.join(", ")
            );
        }
        if let Some(o) = &d.outcome
            && o.concurrency.reached > 0
            && o.downloaded > 0
        {
            let c = &o.concurrency;
            let throttled = match c.throttled {
                0 => String::new(),
                n => format!("; S3 throttled {n} requests"),
            };
            s3invbackup::say!(
                "  downloads in flight: up to {} ({}, {} at the end){throttled}",
                c.reached,
                if c.mode == "auto" {
                    "--jobs auto"
                } else {
                    "--jobs"
                },
                c.last
            );
        }
        if let Some(o) = &d.outcome {
            for f in o.failures.iter().take(20) {
                s3invbackup::say!(
                    "  failed: {} (version {}): {}",
                    f.key,
                    version_id::to_s3(&f.version_id),
                    f.error
                );
            }
            if o.failures.len() > 20 {
                s3invbackup::say!(
                    "  ... and {} more failures (see --report)",
                    o.failures.len() - 20
                );
            }
        }
        for b in p.bad_keys.iter().take(20) {
            s3invbackup::say!("  skipped key {:?}: {}", b.key, b.reason);
        }
        if p.missing_gone > 0 {
            s3invbackup::say!(
                "  {} version(s) that could not be fetched are no longer listed: deleted from the bucket before they were backed up (not retried)",
                p.missing_gone
            );
        }
        if p.anomaly_count > 0 {
            s3invbackup::say!(
                "  ANOMALY: {} version(s) already held are listed with another size or ETag (S3 never changes a version: a damaged or forged inventory?); the held files are kept as they were",
                p.anomaly_count
            );
            for a in p.anomalies.iter().take(20) {
                s3invbackup::say!(
                    "    {} (version {}): holds {}; the inventory says {}",
                    a.key,
                    a.version_id,
                    a.held,
                    a.listed
                );
            }
        }
    }
    if report.interrupted {
        s3invbackup::say!("interrupted: run sync again to resume");
    } else {
        print_not_held(report);
    }
}

/// What the backup does not hold, by reason: each needs something else from the operator.
fn print_not_held(report: &SyncReport) {
    if report.failures > 0 {
        let missing = report.failures - report.archived - report.needs_key;
        let retried = report
            .retryable
            .saturating_sub(report.archived)
            .min(missing);
        if missing > 0 {
            s3invbackup::say!(
                "{missing} version(s) could not be fetched ({retried} still listed: the next sync retries them; the others are gone from the bucket)"
            );
        }
        if report.archived > 0 {
            s3invbackup::say!(
                "{} version(s) are in an archive storage class (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering archive): restore them in S3, then run sync --try-archived",
                report.archived
            );
        }
        if report.needs_key > 0 {
            s3invbackup::say!(
                "{} version(s) are encrypted with a customer-provided key (SSE-C): they cannot be backed up without it",
                report.needs_key
            );
        }
    }
}
