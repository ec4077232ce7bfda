//! `s3invbackup dates INVENTORY`: the inventory's dates and whether each can be used.

use anyhow::Result;
use clap::Args;

use super::{S3Args, output};

/// List the inventory's dates, oldest first. A date is complete when both manifest.json and
/// manifest.checksum exist (AWS writes the checksum last); incomplete dates are marked and
/// skipped by the other commands.
#[derive(Debug, Args)]
pub struct DatesArgs {
    /// s3://bucket/prefix/ (the folder holding the dated folders) or a local copy
    pub inventory: String,
    /// One JSON object per line instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DatesArgs, s3: &S3Args) -> Result<()> {
    let inventory = s3.open_inventory(&args.inventory)?;
    let (dates, invalid) = inventory.dates_with_invalid()?;
    let mut out = output(None)?;
    for d in &dates {
        let state = match (d.has_manifest, d.has_checksum) {
            (true, true) => "complete",
            (true, false) => "incomplete (no manifest.checksum)",
            (false, true) => "incomplete (no manifest.json)",
            (false, false) => "incomplete (no manifest)",
        };
        if args.json {
            let line = serde_json::json!({"date": d.date.as_str(), "complete": d.is_complete(), "state": state});
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}  {state}", d.date)?;
        }
    }
    for name in &invalid {
        let state = "invalid (shaped like a date, but not one: skipped)";
        if args.json {
            let line = serde_json::json!({"date": name, "complete": false, "state": state});
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{name}  {state}")?;
        }
    }
    out.flush()?;
    if dates.is_empty() {
        s3invbackup::say!("no inventory dates found in {}", inventory.describe(""));
    }
    Ok(())
}

use std::io::Write;
