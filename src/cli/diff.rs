//! `s3invbackup diff A B`: what changed between two inventory dates, without downloading.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use s3invbackup::Backup;
use s3invbackup::backup::catalog::Catalog;
use s3invbackup::diff::changes::ChangeKind;
use s3invbackup::diff::row::ChangeRow;
use s3invbackup::diff::{DiffOptions, DiffTotals, diff_streams};
use s3invbackup::index::IndexReader;
use s3invbackup::index::cache::{Operand, default_cache_dir, resolve};
use s3invbackup::index::merge::{Kept, SortedRecords};
use s3invbackup::model::record::VersionRecord;
use s3invbackup::sys::progress::{human_bytes, parse_bytes};

use super::{ProgressArgs, S3Args, output};

/// Compare two listings of a bucket, A (older) and B (newer), version by version: what was
/// added, deleted, overwritten, undeleted, expired, or changed storage class, and how many
/// bytes a sync would download. A and B are index files, INVENTORY@DATE (built on the fly
/// and cached), or a BACKUP directory (what its last applied date listed: its catalog,
/// without the versions gone from the bucket). Nothing is downloaded but the inventories.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older side: an index file, INVENTORY@DATE (e.g. s3://bucket/inv/@2024-11-05) or
    /// a backup directory
    pub a: String,
    /// The newer side, likewise
    pub b: String,
    /// summary (counts, bytes, top prefixes), jsonl (one change per line), csv
    #[arg(long, default_value = "summary", value_parser = ["summary", "jsonl", "csv"])]
    pub format: String,
    /// Only keys matching this regular expression (searched anywhere in the key)
    #[arg(long)]
    pub path_filter: Option<String>,
    /// Only keys under this prefix (a seek, not a scan)
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Summary: how many prefixes to list
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Summary: prefix depth in `/`-separated components
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    /// Write here instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Exit with 1 when there are changes (and 2 on errors), like `git diff --exit-code`
    #[arg(long)]
    pub exit_code: bool,
    /// Where INVENTORY@DATE indexes are kept [default: ~/.cache/s3invbackup]
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Memory budget when an index must be built
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory: u64,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

/// Returns whether there were changes.
pub fn run(args: &DiffArgs, s3: &S3Args) -> Result<bool> {
    let cache = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let opts = super::index_options(args.memory, &args.progress);
    let open = |arg: &str| -> Result<Side> {
        let path = std::path::Path::new(arg);
        if path.is_dir()
            && let Some(backup) = Backup::open(path)?
        {
            let last = backup.read_state()?.last_applied().map(String::from);
            return Ok(Side::Backup {
                label: format!(
                    "backup {} (as of {})",
                    path.display(),
                    last.as_deref().unwrap_or("no date applied")
                ),
                catalog: backup.catalog()?,
            });
        }
        let index = resolve(&Operand::parse(arg)?, &s3.config(), &cache, &opts)?;
        Ok(Side::Index(IndexReader::open(&index)?))
    };
    let a = open(&args.a)?;
    let b = open(&args.b)?;
    let path_filter = args
        .path_filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("bad --path-filter")?;
    let diff_opts = DiffOptions {
        prefix: args.prefix.clone(),
        path_filter,
        prefix_depth: if args.format == "summary" {
            args.depth
        } else {
            0
        },
    };
    let mut out = output(args.output.as_ref())?;
    let totals = match args.format.as_str() {
        "jsonl" => diff_streams(
            a.stream(&args.prefix),
            b.stream(&args.prefix),
            &diff_opts,
            |c| {
                serde_json::to_writer(&mut out, &ChangeRow::new(c))?;
                out.write_all(b"\n")?;
                Ok(())
            },
        )?,
        "csv" => {
            let mut csv = csv::Writer::from_writer(&mut out);
            let totals = diff_streams(
                a.stream(&args.prefix),
                b.stream(&args.prefix),
                &diff_opts,
                |c| Ok(csv.serialize(ChangeRow::new(c))?),
            )?;
            csv.flush()?;
            totals
        }
        _ => {
            let totals = diff_streams(
                a.stream(&args.prefix),
                b.stream(&args.prefix),
                &diff_opts,
                |_| Ok(()),
            )?;
            write_summary(&mut out, &a, &b, &totals, args)?;
            totals
        }
    };
    out.flush()?;
    Ok(totals.changes() > 0)
}

/// One side of a diff.
enum Side {
    Index(IndexReader),
    Backup { catalog: Catalog, label: String },
}

impl Side {
    fn label(&self) -> String {
        match self {
            Side::Index(r) => {
                let m = r.meta();
                if m.date.is_empty() {
                    r.path().display().to_string()
                } else {
                    format!("{} {}", m.source_bucket, m.date)
                }
            }
            Side::Backup { label, .. } => label.clone(),
        }
    }

    fn stream(&self, prefix: &str) -> Box<dyn SortedRecords + '_> {
        match self {
            Side::Index(r) => Box::new(r.stream_prefix(prefix)),
            // What the last applied date listed: versions gone from the bucket are held,
            // but the bucket no longer has them.
            Side::Backup { catalog, .. } => Box::new(Kept::new(
                catalog.stream_prefix(prefix),
                |r: &VersionRecord| r.local.gone_since.0 == 0,
            )),
        }
    }
}

fn write_summary(
    out: &mut dyn Write,
    a: &Side,
    b: &Side,
    t: &DiffTotals,
    args: &DiffArgs,
) -> Result<()> {
    writeln!(out, "A: {}\nB: {}", a.label(), b.label())?;
    if !args.prefix.is_empty() {
        writeln!(out, "prefix: {}", args.prefix)?;
    }
    if let Some(f) = &args.path_filter {
        writeln!(out, "path filter: {f}")?;
    }
    writeln!(out)?;
    writeln!(out, "{:<22} {:>12} {:>16}", "change", "versions", "bytes")?;
    for kind in ChangeKind::ALL {
        let n = t.count.get(&kind).copied().unwrap_or(0);
        let bytes = t.bytes.get(&kind).copied().unwrap_or(0);
        writeln!(
            out,
            "{:<22} {:>12} {:>16}",
            kind.name(),
            n,
            human_bytes(bytes)
        )?;
    }
    writeln!(out, "{:<22} {:>12}", "total", t.changes())?;
    writeln!(out)?;
    writeln!(
        out,
        "a sync would download {} versions, {} ({} bytes)",
        t.download_versions,
        human_bytes(t.download_bytes),
        t.download_bytes
    )?;
    writeln!(
        out,
        "keys compared {}; records read {} (A) + {} (B)",
        t.keys, t.records_a, t.records_b
    )?;
    if let Some(n) = t.count.get(&ChangeKind::Anomaly).filter(|n| **n > 0) {
        writeln!(
            out,
            "WARNING: {n} versions changed size, ETag or date under the same version id; S3 never does that: one of the inventories is wrong (see --format jsonl)"
        )?;
    }
    if args.top > 0 && !t.by_prefix.is_empty() {
        let mut prefixes: Vec<(&String, &(u64, u64))> = t.by_prefix.iter().collect();
        prefixes.sort_by(|x, y| y.1.1.cmp(&x.1.1).then(y.1.0.cmp(&x.1.0)).then(x.0.cmp(y.0)));
        writeln!(out)?;
        writeln!(
            out,
            "top {} prefixes (depth {}) by bytes changed:",
            args.top.min(prefixes.len()),
            args.depth
        )?;
        writeln!(out, "{:>16} {:>12}  prefix", "bytes", "changes")?;
        for (p, (n, bytes)) in prefixes.into_iter().take(args.top) {
            writeln!(out, "{:>16} {:>12}  {p}", human_bytes(*bytes), n)?;
        }
    }
    Ok(())
}
