//! `status --check`: whether a backup needs the operator, as one verdict a monitor can alert
//! on. Reads only the state directory (the run history, the state, a pending run, the lock
//! table), so it is cheap enough to run every minute.

use std::time::Duration;

use anyhow::Result;

use crate::backup::Backup;
use crate::backup::runs::RunResult;
use crate::inventory::InventoryDate;
use crate::model::timestamp::Timestamp;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Versions wait for the next sync's retry: it will get them if the bucket lets it.
    Retry,
    /// The backup is behind or stopped: someone must look.
    Alert,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// One line, with what to do.
    pub reason: String,
}

/// Everything that needs attention, worst first; empty when healthy. A sync running now is
/// not a finding (its pending run is its own).
pub fn check(backup: &Backup, max_age: Option<Duration>, now: Timestamp) -> Result<Vec<Finding>> {
    let state = backup.read_state()?;
    let running = backup.lock_holder();
    let mut found = Vec::new();
    let alert = |reason: String| Finding {
        severity: Severity::Alert,
        reason,
    };
    if running.is_none()
        && let Some(run) = backup.pending_run(&state)?
    {
        found.push(alert(format!(
            "the run of {} was interrupted: run `s3invbackup sync {}` to finish it",
            run.summary.date,
            backup.root.display()
        )));
    }
    let runs = backup.read_runs()?;
    if let Some(last) = runs.iter().rev().find(|r| r.command == "sync")
        && last.result == Some(RunResult::Failed)
    {
        found.push(alert(format!(
            "the last sync ({}) failed: {}",
            last.started,
            last.error
                .as_deref()
                .and_then(|e| e.lines().next())
                .unwrap_or("no message recorded")
        )));
    }
    match state.applied.last() {
        None => found.push(alert("no inventory date applied yet".to_string())),
        Some(last) => {
            if let (Some(limit), Some(date)) = (max_age, InventoryDate::parse(&last.date)) {
                let age = Duration::from_millis(
                    (now.as_millis() - date.timestamp().as_millis()).max(0) as u64,
                );
                if age > limit {
                    found.push(alert(format!(
                        "the newest date applied, {}, is {} old (more than --max-age {})",
                        last.date,
                        human_duration(age),
                        human_duration(limit)
                    )));
                }
            }
            let t = last.totals;
            let retryable = t.retryable.saturating_sub(t.archived);
            if retryable > 0 {
                found.push(Finding {
                    severity: Severity::Retry,
                    reason: format!(
                        "{retryable} version(s) could not be fetched yet: the next sync retries them"
                    ),
                });
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(found)
}

/// `3d 4h`, `5h 12m`, `40m`: as an operator reads an age.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours) {
        (0, 0) => format!("{mins}m"),
        (0, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_ages() {
        assert_eq!(human_duration(Duration::from_secs(40 * 60)), "40m");
        assert_eq!(
            human_duration(Duration::from_secs(5 * 3600 + 720)),
            "5h 12m"
        );
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d 4h"
        );
    }
}
