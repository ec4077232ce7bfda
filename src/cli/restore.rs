//! `s3invbackup restore BACKUP --at TIME DEST`: the bucket as it was, from the backup.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use s3invbackup::backup::Backup;
use s3invbackup::maintain::history::parse_time;
use s3invbackup::maintain::restore::{Link, RestoreOptions, restore};
use s3invbackup::sys::progress::human_bytes;

use super::{Outcome, ProgressArgs};

/// Materialize the bucket as it was at TIME into DEST (new or empty, outside the backup):
/// for each key, the version that was current then; keys deleted by then are absent. Files
/// are hard links into the backup by default (same filesystem, nothing copied; do not edit
/// them in place) or copies (--link copy); mtimes are the versions' LastModified. Keys whose
/// version at TIME the backup does not hold are listed. Needs no lock.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory
    pub backup: PathBuf,
    /// RFC 3339 with a zone (2024-11-06T12:00:00Z, ...+02:00) or a date (the end of that
    /// day, UTC)
    #[arg(long)]
    pub at: String,
    /// Only keys starting with this (a seek in the catalog)
    #[arg(long)]
    pub prefix: Option<String>,
    /// Where to materialize it
    pub dest: PathBuf,
    /// auto (hard links on the backup's filesystem, copies elsewhere), hard (links only:
    /// refused on another filesystem) or copy
    #[arg(long, default_value = "auto", value_parser = ["auto", "hard", "copy"])]
    pub link: String,
    /// Write the report (JSON) here
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

/// Exit status: 0, or 2 if some keys' versions are not held.
pub fn run(args: &RestoreArgs) -> Result<Outcome> {
    let backup = Backup::open_existing(&args.backup)?;
    let opts = RestoreOptions {
        at: parse_time(&args.at)?,
        prefix: args.prefix.clone(),
        link: match args.link.as_str() {
            "copy" => Link::Copy,
            "hard" => Link::Hard,
            _ => Link::Auto,
        },
        progress: args.progress.options(),
    };
    if let Some(path) = &args.report {
        super::check_output_path(path)?;
    }
    let report = restore(&backup, &args.dest, &opts)?;
    if report.files + report.directories == 0 {
        let first = backup.read_state()?.applied.first().map(|a| a.date.clone());
        tracing::warn!(
            "nothing to restore: no key{} existed at {} in this backup (its first date is {})",
            args.prefix
                .as_deref()
                .map_or(String::new(), |p| format!(" under {p:?}")),
            report.at,
            first.as_deref().unwrap_or("none")
        );
    }
    s3invbackup::say!(
        "restored {} files ({}, {}) and {} folder markers as of {} into {}; {} keys were deleted then",
        report.files,
        if report.link == "hard" {
            "hard links"
        } else {
            "copies"
        },
        human_bytes(report.bytes),
        report.directories,
        report.at,
        args.dest.display(),
        report.deleted
    );
    for k in &report.shadowed {
        s3invbackup::say!("  left out: {k} (a file and a directory at once; the directory wins)");
    }
    for n in report.not_held.iter().take(20) {
        s3invbackup::say!(
            "  not held: {} (version {}, {})",
            n.key,
            n.version_id,
            n.state
        );
    }
    if let Some(path) = &args.report {
        let mut bytes = serde_json::to_vec_pretty(&report)?;
        bytes.push(b'\n');
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.not_held.is_empty() {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}
