//! `s3invbackup fsck BACKUP`: prove the tree matches the catalog; repair it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use s3invbackup::backup::Backup;
use s3invbackup::backup::runs::RunResult;
use s3invbackup::maintain::fsck::{FsckOptions, FsckReport, Problem, fsck};
use s3invbackup::sync::concurrency::{self, Jobs};
use s3invbackup::sys::progress::human_bytes;

use s3invbackup::sync::fetch::FetchOptions;
use s3invbackup::sync::refetch;

use super::{Outcome, ProgressArgs, S3Args, output};

/// Compare the tree with the catalog, without network access: missing files, wrong sizes or
/// mtimes, files the catalog does not know (strays), versions JSON that disagree, an
/// unfinished sync (--repair rolls it back). --verify-content also checks every file's bytes
/// against its ETag (MD5, or the MD5 of part MD5s). Each problem is listed with the fix
/// --repair applies; --repair never deletes: strays and damaged files go to
/// `.<stem>/quarantine/`, and damaged and missing versions are downloaded again from the
/// bucket (as of the last applied date; --no-fetch leaves that to the next sync).
///
/// Exit status: 0 clean; 1 problems found (or repaired: run fsck again to confirm); 2
/// repaired, but some versions could not be downloaded again (the next sync retries them).
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// The backup directory
    pub backup: PathBuf,
    /// Also recompute the MD5 / multipart ETag of every file (reads every byte)
    #[arg(long)]
    pub verify_content: bool,
    /// Fix what was found (takes the writer's lock)
    #[arg(long)]
    pub repair: bool,
    /// With --repair: do not download damaged and missing versions again (no network
    /// access); the next sync does
    #[arg(long)]
    pub no_fetch: bool,
    /// With --repair: read the inventory here instead of where the backup was created from
    #[arg(long)]
    pub inventory: Option<String>,
    /// With --repair: downloads in flight (`auto`, or a number; as for sync)
    #[arg(long, default_value = "auto")]
    pub jobs: Jobs,
    /// One JSON document instead of the table (every problem with all its fields)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

pub fn run(args: &FsckArgs, s3: &S3Args) -> Result<Outcome> {
    let backup = Backup::open_existing(&args.backup)?;
    if !args.repair {
        return check_and_repair(&backup, args, s3);
    }
    super::recorded(&backup, "fsck --repair", || {
        let outcome = check_and_repair(&backup, args, s3)?;
        let result = match outcome {
            Outcome::Done => RunResult::Done,
            Outcome::Interrupted => RunResult::Interrupted,
            Outcome::Partial => RunResult::Partial,
            // Problems --repair could not fix: the run did not do its job.
            _ => RunResult::Failed,
        };
        Ok((outcome, result))
    })
}

fn check_and_repair(backup: &Backup, args: &FsckArgs, s3: &S3Args) -> Result<Outcome> {
    let report = fsck(
        backup,
        &FsckOptions {
            verify_content: args.verify_content,
            repair: args.repair,
            progress: args.progress.options(),
        },
    )?;
    if let Some(date) = &report.rolled_back {
        s3invbackup::say!("rolled back the unfinished run of {date}");
    }
    let mut out = output(None)?;
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &report, args)?;
    }
    out.flush()?;
    let fetch = || {
        super::limits::fetch_options(
            args.jobs,
            concurrency::DEFAULT_MAX,
            FetchOptions::default().part_size,
        )
    };
    // A shard started afresh syncs again (its files are adopted where they are).
    for &shard in &report.rebuilt_shards {
        if args.no_fetch {
            s3invbackup::say!(
                "shard {shard} was started afresh: run `s3invbackup sync --shard {shard}/{}` to bring it back, then fsck again",
                backup.config.shards.as_ref().map_or(0, |m| m.count)
            );
            continue;
        }
        s3invbackup::say!("shard {shard} was started afresh: syncing it again");
        let caught_up = s3invbackup::sync::catch_up_shard(
            backup,
            shard,
            args.inventory.as_deref(),
            fetch(),
            args.progress.options(),
            s3.config(),
            super::signals::stop_token(),
        )?;
        let (fetched, ..) = caught_up.fetched();
        s3invbackup::say!(
            "shard {shard}: {} date(s) applied again, {fetched} version(s) downloaded; run fsck again to check the tree",
            caught_up.dates.len()
        );
    }
    if !report.rebuilt_shards.is_empty() {
        return Ok(if args.no_fetch {
            Outcome::Partial
        } else {
            Outcome::Done
        });
    }
    let retryable = backup
        .read_state()?
        .applied
        .last()
        .map_or(0, |a| a.totals.retryable);
    if args.repair && !args.no_fetch && retryable > 0 {
        s3invbackup::say!("downloading {retryable} version(s) the backup should hold again");
        let refetched = refetch(
            backup,
            args.inventory.as_deref(),
            fetch(),
            args.progress.options(),
            s3.config(),
            super::signals::stop_token(),
        )?;
        if refetched.failures > 0 {
            s3invbackup::say!(
                "{} version(s) could not be downloaded; the next sync retries them",
                refetched.failures
            );
            return Ok(Outcome::Partial);
        }
    }
    // With --repair: 0 when everything found was repaired, 2 when some of it waits for
    // the next sync (versions marked missing, not downloaded here), 1 when problems remain
    // (a repair that fails is an error, exit 1).
    let unrepairable = report.problems.iter().any(|p| !p.repairable());
    Ok(if report.problems.is_empty() {
        Outcome::Done
    } else if args.repair && report.repaired && !unrepairable {
        if args.no_fetch && retryable > 0 {
            s3invbackup::say!(
                "{retryable} version(s) are marked missing: the next sync (or fsck --repair without --no-fetch) downloads them"
            );
            Outcome::Partial
        } else {
            Outcome::Done
        }
    } else {
        Outcome::Problems
    })
}

/// One row per problem (path, what was found), then one line per kind of problem saying
/// what --repair does (or did) about it: the fix is the same for every row of a kind.
fn print_table(out: &mut dyn Write, report: &FsckReport, args: &FsckArgs) -> Result<()> {
    let width = report
        .problems
        .iter()
        .map(|p| p.path().map_or(0, str::len))
        .max()
        .unwrap_or(0)
        .clamp(4, 60);
    if !report.problems.is_empty() {
        writeln!(out, "{:<14} {:<width$} found", "problem", "path")?;
    }
    for p in &report.problems {
        writeln!(
            out,
            "{:<14} {:<width$} {}",
            p.kind(),
            p.path().unwrap_or("-"),
            p.detail()
        )?;
    }
    if report.unfinished_run_paths > 0 {
        writeln!(
            out,
            "{:<14} {:<width$} {} path(s) the unfinished run touches (not listed: finishing or rolling back the run resolves them)",
            "(folded)", "...", report.unfinished_run_paths
        )?;
    }
    let mut kinds: Vec<&Problem> = Vec::new();
    for p in &report.problems {
        if !kinds.iter().any(|k| k.kind() == p.kind()) {
            kinds.push(p);
        }
    }
    if !kinds.is_empty() {
        writeln!(out)?;
    }
    for k in kinds {
        let verb = if report.repaired {
            "repaired"
        } else {
            "--repair would"
        };
        writeln!(out, "{:<14} {verb}: {}", k.kind(), k.repair())?;
    }
    writeln!(
        out,
        "{} files checked{}; {} problem(s){}",
        report.files_checked,
        if args.verify_content {
            format!(
                ", {} read, {} checkable by size only",
                human_bytes(report.bytes_verified),
                report.unverifiable
            )
        } else {
            String::new()
        },
        report.problems.len(),
        if report.repaired { ", repaired" } else { "" }
    )?;
    Ok(())
}

use std::io::Write;
