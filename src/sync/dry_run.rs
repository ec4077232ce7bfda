//! `sync --dry-run`: every date is planned into a temporary directory, chaining catalogs,
//! and each plan's steps are handed to the caller; the backup (which may not exist yet) is
//! not touched.

use anyhow::Result;
use regex::Regex;

use crate::backup::Backup;
use crate::backup::catalog::{self, Catalog, store::Counts};
use crate::backup::layout::{KeyRules, NameStem};
use crate::backup::run_dir::{RunDir, Step};
use crate::inventory::{Inventory, InventoryDate};
use crate::sync::plan::Planner;
use crate::sync::{DateReport, RowSource, SyncOptions, SyncReport, plan_date};

pub(super) fn dry_run(
    opts: &SyncOptions,
    inventory: &Inventory,
    existing: Option<&Backup>,
    dates: &[InventoryDate],
    path_filter: Option<Regex>,
    mut report: SyncReport,
    on_step: &mut dyn FnMut(&Step) -> Result<()>,
) -> Result<SyncReport> {
    let tmp = tempfile::Builder::new()
        .prefix("s3invbackup-dry-run-")
        .tempdir()?;
    let stem = match existing {
        Some(b) => b.stem.clone(),
        None => NameStem::new(&opts.name_stem).map_err(anyhow::Error::msg)?,
    };
    let rules = KeyRules::new(stem.clone());
    let shards = existing.and_then(Backup::shards);
    let shard = match (&shards, existing.map(|b| b.part)) {
        (Some(s), Some(crate::backup::PartOf::Shard(i))) => Some((s, i)),
        _ => None,
    };
    let start = existing.map_or(Ok(None), |b| {
        b.read_state().map(|s| s.last_applied().map(String::from))
    })?;
    let mut catalog = match existing {
        Some(b) => b.catalog()?,
        None => {
            let p = tmp.path().join("empty.s3inv");
            catalog::write_empty(&p, "")?;
            Catalog::single(&p)?
        }
    };
    for date in dates
        .iter()
        .filter(|d| start.as_deref().is_none_or(|l| d.as_str() > l))
    {
        let manifest = inventory.manifest(date)?;
        let run_dir = RunDir::at(tmp.path().join(date.as_str()));
        let planner = Planner {
            stem: &stem,
            rules: &rules,
            root: &opts.backup,
            date: date.as_str(),
            date_time: date.timestamp(),
            source_bucket: &manifest.manifest.source_bucket,
            path_filter: path_filter.as_ref(),
            on_bad_key: opts.on_bad_key,
            try_archived: opts.try_archived,
            progress: opts.progress,
            shard,
        };
        // Streamed like a real run's plan (no index, unless the files are not sorted: then
        // one is built in the temporary directory, never reused).
        let source = RowSource {
            inventory,
            index: &opts.index,
            index_dir: tmp.path(),
            scratch: tmp.path(),
            shared_index: None,
        };
        let summary = plan_date(&source, &planner, &catalog, date, &run_dir)?;
        for step in run_dir.read_steps()? {
            on_step(&step?)?;
        }
        catalog = catalog.with_delta(
            &run_dir.planned_delta(),
            Counts {
                keys: summary.keys,
                records: summary.versions,
            },
        )?;
        report.dates.push(DateReport {
            plan: summary,
            outcome: None,
        });
    }
    Ok(report)
}
