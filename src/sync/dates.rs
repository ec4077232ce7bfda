//! Which inventory dates a sync applies, and what it says about the ones it skips.

use anyhow::{Context, Result, bail};

use crate::backup::{AppliedDate, State};
use crate::inventory::{DateEntry, DateSpec, InventoryDate};
use crate::sync::SyncOptions;

/// An incomplete date between the ones applied is a hole in the history (AWS failed to
/// finish that day's inventory, or a copy of it is partial): say so. One after them is
/// usually today's, still being written.
pub(super) fn warn_incomplete(
    entries: &[DateEntry],
    last_applied: Option<&str>,
    newest_selected: Option<&InventoryDate>,
) {
    for e in entries.iter().filter(|e| !e.is_complete()) {
        if last_applied.is_some_and(|l| e.date.as_str() <= l) {
            continue;
        }
        let missing = if e.has_manifest {
            "manifest.checksum"
        } else {
            "manifest.json"
        };
        if newest_selected.is_some_and(|n| e.date.as_str() < n.as_str()) {
            tracing::warn!(
                "inventory date {} is incomplete (no {missing}): skipped",
                e.date
            );
        } else {
            // S3 writes manifest.checksum last; a date without it is still being delivered
            // (or its delivery failed): the operator should know the backup is a day behind.
            tracing::warn!(
                "the newest inventory date {} is not complete yet (no {missing}): not applied",
                e.date
            );
        }
    }
}

/// A daily inventory's newest date is from yesterday or today: older, and the inventory
/// configuration may be broken (deleted, or its destination unwritable).
pub(super) fn warn_stale(newest: &InventoryDate, age_ms: i64) {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    if age_ms > 2 * DAY_MS {
        tracing::warn!(
            "the newest complete inventory date, {newest}, is {} days old: is the bucket's \
             inventory configuration still delivering?",
            age_ms / DAY_MS
        );
    }
}

/// The dates a sync applies: those after the last applied (or resumed) one, up to
/// --end-date. `--start-date` chooses where a new backup begins; given again to a backup
/// that began there (the same command run again after an interruption) it changes nothing,
/// and any other start at or before the last applied date is refused.
pub(super) fn select_dates(
    complete: &[InventoryDate],
    state: &State,
    pending: Option<&str>,
    opts: &SyncOptions,
) -> Result<Vec<InventoryDate>> {
    let mut state = state.clone();
    if let Some(p) = pending {
        state.applied.push(AppliedDate {
            date: p.to_string(),
            ..AppliedDate::default()
        });
    }
    let state = &state;
    let pick = |spec: &str, what: &str| -> Result<InventoryDate> {
        DateSpec::parse(spec)?
            .select(complete)
            .cloned()
            .with_context(|| format!("{what} {spec}: no complete inventory of that date"))
    };
    let end = opts
        .end_date
        .as_deref()
        .map(|d| pick(d, "--end-date"))
        .transpose()?;
    let began = state.applied.first().map(|a| a.date.as_str());
    let start = opts
        .start_date
        .as_deref()
        .map(|d| pick(d, "--start-date"))
        .transpose()?
        .filter(|s| Some(s.as_str()) != began);
    if let Some(last) = state.last_applied() {
        if let Some(s) = &start
            && s.as_str() <= last
        {
            bail!(
                "--start-date {s} is not after the last applied date {last}: a backup only goes \
                 forward"
            );
        }
        if let Some(e) = &end
            && e.as_str() < last
        {
            bail!(
                "--end-date {e} is before the last applied date {last}: a backup only goes forward"
            );
        }
    }
    let first = match (state.last_applied(), &start) {
        (_, Some(s)) => Some(s.clone()),
        (Some(_), None) => None,
        // A new backup starts at the latest date (each inventory lists every version).
        (None, None) => Some(
            end.clone()
                .unwrap_or_else(|| complete.last().expect("non-empty").clone()),
        ),
    };
    Ok(complete
        .iter()
        .filter(|d| state.last_applied().is_none_or(|l| d.as_str() > l))
        .filter(|d| first.as_ref().is_none_or(|f| *d >= f))
        .filter(|d| end.as_ref().is_none_or(|e| *d <= e))
        .cloned()
        .collect())
}
