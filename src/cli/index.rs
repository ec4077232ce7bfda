//! `s3invbackup index INVENTORY --date D -o FILE`: build the sorted index of one date.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use s3invbackup::index::build::build_index;
use s3invbackup::inventory::DateSpec;
use s3invbackup::sys::progress::{human_bytes, parse_bytes};

use super::{ProgressArgs, S3Args};

/// Read one inventory date (every data file verified against its MD5) and write its rows as
/// a sorted, compressed index. Memory stays within --memory whatever the row count: rows
/// that do not fit are sorted in runs under --tmp-dir and merged.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// s3://bucket/prefix/ (the folder holding the dated folders) or a local copy
    pub inventory: String,
    /// YYYY-MM-DD (the latest inventory of that day) or YYYY-MM-DDTHH-MMZ
    #[arg(long)]
    pub date: String,
    /// The index file to write (replaced only when the new one is complete)
    #[arg(short, long)]
    pub output: PathBuf,
    /// Memory budget for sorting, e.g. 256MiB, 4GiB
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory: u64,
    /// Directory for sort runs [default: the output's directory]
    #[arg(long)]
    pub tmp_dir: Option<PathBuf>,
    /// Parsing threads [default: number of CPUs]
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

pub fn run(args: &IndexArgs, s3: &S3Args) -> Result<()> {
    let inventory = s3.open_inventory(&args.inventory)?;
    let date = inventory.resolve_date(&DateSpec::parse(&args.date)?)?;
    let mut opts = super::index_options(args.memory, &args.progress);
    opts.tmp_dir = args.tmp_dir.clone();
    if let Some(t) = args.threads {
        opts.threads = t.max(1);
    }
    let s = build_index(&inventory, &date, &args.output, &opts)?;
    let secs = s.elapsed.as_secs_f64();
    s3invbackup::say!(
        "indexed {} into {}",
        inventory.describe(date.as_str()),
        args.output.display()
    );
    s3invbackup::say!(
        "  rows {}  keys {}  versions {}  delete markers {}  bytes {} ({})",
        s.stats.records,
        s.stats.keys,
        s.stats.versions,
        s.stats.delete_markers,
        s.stats.total_bytes,
        human_bytes(s.stats.total_bytes)
    );
    s3invbackup::say!(
        "  current objects {} ({})  data files {} ({})  {}  {:.1}s, {:.0} rows/s",
        s.stats.current_objects,
        human_bytes(s.stats.current_bytes),
        s.files,
        human_bytes(s.compressed_bytes),
        if s.presorted {
            "presorted input (no spill)".to_string()
        } else {
            format!("external sort, {} runs", s.runs)
        },
        secs,
        s.stats.records as f64 / secs.max(1e-9)
    );
    if s.duplicates > 0 {
        s3invbackup::say!("  warning: {} duplicate rows dropped", s.duplicates);
    }
    Ok(())
}
