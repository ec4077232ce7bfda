//! `s3invbackup changes BACKUP [--date D]`: what an applied date changed in the bucket,
//! from the backup alone (the inventories may be long gone).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use s3invbackup::backup::Backup;
use s3invbackup::diff::changes::ChangeKind;
use s3invbackup::diff::row::ChangeRow;
use s3invbackup::sys::progress::human_bytes;

use super::output;

/// Every version a date added, made noncurrent or current, removed (expired, permanently
/// deleted) or saw change storage class, against the date applied before it: the change
/// list the sync planner recorded when it applied the date, in `diff`'s formats. The
/// backup's first date has none (everything was new).
#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// The backup directory
    pub backup: PathBuf,
    /// The applied date (YYYY-MM-DD: its last applied date that day; or the full
    /// YYYY-MM-DDTHH-MMZ) [default: the last applied]
    #[arg(long)]
    pub date: Option<String>,
    /// summary (counts and bytes per kind), jsonl or csv (the fields of `diff`)
    #[arg(long, default_value = "summary", value_parser = ["summary", "jsonl", "csv"])]
    pub format: String,
    /// Only changes of this kind (added, added-delete-marker, now-noncurrent, now-current,
    /// removed, metadata-changed, anomaly)
    #[arg(long)]
    pub kind: Option<String>,
    /// Only keys starting with this
    #[arg(long, default_value = "")]
    pub prefix: String,
}

pub fn run(args: &ChangesArgs) -> Result<()> {
    let backup = Backup::open_existing(&args.backup)?;
    let state = backup.read_state()?;
    let applied: Vec<&str> = state.applied.iter().map(|a| a.date.as_str()).collect();
    let date = match &args.date {
        None => *applied.last().context("no date applied yet")?,
        Some(d) => applied
            .iter()
            .rev()
            .find(|a| **a == d.as_str() || a.starts_with(&format!("{d}T")))
            .copied()
            .with_context(|| {
                format!(
                    "{d} is not an applied date of this backup (applied: {})",
                    applied.join(", ")
                )
            })?,
    };
    if let Some(k) = &args.kind
        && !ChangeKind::ALL.iter().any(|c| c.name() == k)
    {
        bail!("unknown change kind {k:?}");
    }
    // One list per shard of a sharded backup, each in key order: merged by key here.
    let paths: Vec<PathBuf> = backup
        .parts()
        .iter()
        .map(|p| p.changes_path(date))
        .collect();
    let mut lists = Vec::new();
    for path in &paths {
        match std::fs::File::open(path) {
            Ok(f) => lists.push((path.clone(), f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        }
    }
    if lists.is_empty() {
        if applied.first() == Some(&date) {
            bail!("{date} is this backup's first date: everything in it was new (no change list)");
        }
        bail!(
            "no change list was recorded for {date} ({} does not exist: the date was applied by a version that kept none)",
            paths[0].display()
        );
    }
    let mut lines: Vec<Result<(String, ChangeRow<'static>)>> = Vec::new();
    let single = lists.len() == 1;
    let mut streams = Vec::new();
    for (path, file) in lists {
        let reader = std::io::BufReader::new(
            zstd::Decoder::new(file).with_context(|| format!("reading {}", path.display()))?,
        );
        streams.push((path, reader.lines()));
    }
    let parse = |path: &std::path::Path, n: usize, line: std::io::Result<String>| {
        line.with_context(|| format!("reading {}", path.display()))
            .and_then(|line| {
                let row: ChangeRow<'static> = serde_json::from_str(&line)
                    .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
                Ok((line, row))
            })
    };
    let merged: Box<dyn Iterator<Item = Result<(String, ChangeRow<'static>)>>> = if single {
        let (path, it) = streams.pop().expect("one");
        Box::new(it.enumerate().map(move |(n, l)| parse(&path, n, l)))
    } else {
        for (path, it) in streams {
            lines.extend(it.enumerate().map(|(n, l)| parse(&path, n, l)));
        }
        lines.sort_by(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => a.1.key.cmp(&b.1.key),
            _ => std::cmp::Ordering::Equal,
        });
        Box::new(lines.into_iter())
    };
    let mut out = output(None)?;
    let rows = merged.filter_map(|parsed| match parsed {
        Ok((_, row))
            if !row.key.starts_with(&args.prefix)
                || args.kind.as_deref().is_some_and(|k| k != row.change) =>
        {
            None
        }
        other => Some(other),
    });
    let mut counts: Vec<(u64, u64)> = vec![(0, 0); ChangeKind::ALL.len()];
    match args.format.as_str() {
        "jsonl" => {
            for r in rows {
                writeln!(out, "{}", r?.0)?;
            }
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(&mut out);
            for r in rows {
                w.serialize(&r?.1)?;
            }
            w.flush()?;
        }
        _ => {
            for r in rows {
                let row = r?.1;
                if let Some(i) = ChangeKind::ALL.iter().position(|k| k.name() == row.change) {
                    counts[i].0 += 1;
                    counts[i].1 += row.size;
                }
            }
        }
    }
    if args.format == "summary" {
        writeln!(
            out,
            "changes of {date} (against the date applied before it)"
        )?;
        writeln!(out, "{:<22} {:>12} {:>16}", "change", "versions", "bytes")?;
        for (kind, (n, bytes)) in ChangeKind::ALL.iter().zip(&counts) {
            writeln!(
                out,
                "{:<22} {:>12} {:>16}",
                kind.name(),
                n,
                human_bytes(*bytes)
            )?;
        }
        writeln!(
            out,
            "{:<22} {:>12}",
            "total",
            counts.iter().map(|c| c.0).sum::<u64>()
        )?;
    }
    out.flush()?;
    Ok(())
}
