//! `s3invbackup prune BACKUP --noncurrent-older-than 90d`: delete old versions.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use s3invbackup::backup::Backup;
use s3invbackup::backup::runs::RunResult;
use s3invbackup::maintain::prune::{PruneOptions, parse_duration, prune};
use s3invbackup::model::timestamp::Timestamp;
use s3invbackup::sys::progress::human_bytes;

use super::output;

/// DELETES BACKED-UP DATA: the only command that does. Removes the files of versions that
/// became noncurrent (overwritten, deleted) longer ago than --noncurrent-older-than, and/or
/// left the bucket longer ago than --gone-older-than (dates as recorded by sync, to the
/// inventory date). Current files are never pruned. The catalog keeps the versions' records,
/// marked pruned, so that no later sync fetches them again. --dry-run lists the files and the
/// bytes that would be freed.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The backup directory
    pub backup: PathBuf,
    /// e.g. 90d, 12h, 2w
    #[arg(long, value_parser = parse_duration)]
    pub noncurrent_older_than: Option<std::time::Duration>,
    #[arg(long, value_parser = parse_duration)]
    pub gone_older_than: Option<std::time::Duration>,
    /// List what would be deleted; delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: &PruneArgs) -> Result<()> {
    let backup = Backup::open_existing(&args.backup)?;
    let options = PruneOptions {
        noncurrent_older_than: args.noncurrent_older_than,
        gone_older_than: args.gone_older_than,
        dry_run: args.dry_run,
        now: Timestamp::now(),
    };
    let report = if args.dry_run {
        prune(&backup, &options)?
    } else {
        super::recorded(&backup, "prune", || {
            Ok((prune(&backup, &options)?, RunResult::Done))
        })?
    };
    let mut out = output(None)?;
    for f in &report.files {
        writeln!(out, "{f}")?;
    }
    out.flush()?;
    s3invbackup::say!(
        "{} {} files, {}",
        if args.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        report.files.len(),
        human_bytes(report.bytes)
    );
    Ok(())
}

use std::io::Write;
