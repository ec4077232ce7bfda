//! `--metrics-file`: the run in Prometheus' text exposition format, for node_exporter's
//! textfile collector (the usual way a cron or Slurm job reports to Prometheus). Written at
//! the end of every run, failed ones included — a run that stops writing it is the alert —
//! and replaced atomically, since the collector may read it at any moment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::backup::runs::{RunRecord, RunResult};
use crate::backup::totals::Totals;
use crate::sync::SyncReport;

/// What the metrics describe: the run, its report when it got one, and the backup's state
/// after it (absent when no backup exists yet).
pub struct Metrics<'a> {
    pub backup: &'a str,
    pub run: &'a RunRecord,
    pub report: Option<&'a SyncReport>,
    pub totals: Option<Totals>,
    /// The last applied date, as seconds since the epoch.
    pub last_applied: Option<i64>,
    /// When the run ended, as seconds since the epoch.
    pub ended: i64,
}

impl Metrics<'_> {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label = format!("backup=\"{}\"", escape(self.backup));
        let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP s3invbackup_{name} {help}");
            let _ = writeln!(out, "# TYPE s3invbackup_{name} gauge");
            for (extra, v) in samples {
                let labels = if extra.is_empty() {
                    label.clone()
                } else {
                    format!("{label},{extra}")
                };
                let _ = writeln!(out, "s3invbackup_{name}{{{labels}}} {v}");
            }
        };
        let one = |v: f64| vec![(String::new(), v)];
        let result = self.run.result.unwrap_or(RunResult::Failed);
        gauge(
            "last_run_timestamp_seconds",
            "When the last run ended.",
            &one(self.ended as f64),
        );
        gauge(
            "last_run_duration_seconds",
            "How long the last run took.",
            &one(self.run.duration_secs),
        );
        let results = [
            RunResult::Done,
            RunResult::Partial,
            RunResult::Failed,
            RunResult::Interrupted,
        ];
        gauge(
            "last_run_result",
            "1 for how the last run ended: done, partial (some versions not fetched), failed, interrupted.",
            &results
                .iter()
                .map(|r| {
                    (
                        format!("result=\"{}\"", r.as_str()),
                        f64::from(u8::from(*r == result)),
                    )
                })
                .collect::<Vec<_>>(),
        );
        gauge(
            "last_run_dates_applied",
            "Inventory dates the last run applied.",
            &one(self.run.dates.len() as f64),
        );
        gauge(
            "last_run_versions_fetched",
            "Object versions the last run downloaded and verified.",
            &one(self.run.fetched as f64),
        );
        gauge(
            "last_run_bytes_fetched",
            "Bytes the last run downloaded.",
            &one(self.run.fetched_bytes as f64),
        );
        let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
        for o in self
            .report
            .iter()
            .flat_map(|r| &r.dates)
            .filter_map(|d| d.outcome.as_ref())
        {
            for f in &o.failures {
                *failures.entry(f.state).or_default() += 1;
            }
        }
        gauge(
            "last_run_fetch_failures",
            "Fetches of the last run that failed, by what the version became.",
            &["missing", "archived", "needs_key"]
                .iter()
                .map(|k| {
                    (
                        format!("kind=\"{k}\""),
                        failures.get(k).copied().unwrap_or(0) as f64,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let mut changes: BTreeMap<&str, u64> = crate::diff::changes::ChangeKind::ALL
            .iter()
            .map(|k| (k.name(), 0))
            .collect();
        for d in self.report.iter().flat_map(|r| &r.dates) {
            for (k, n) in &d.plan.changes {
                if let Some(c) = changes.get_mut(k.as_str()) {
                    *c += n;
                }
            }
        }
        gauge(
            "last_run_changes",
            "Versions the dates of the last run changed in the bucket, by kind (as `changes` lists them).",
            &changes
                .iter()
                .map(|(k, n)| (format!("kind=\"{k}\""), *n as f64))
                .collect::<Vec<_>>(),
        );
        let outcomes = || {
            self.report
                .iter()
                .flat_map(|r| &r.dates)
                .filter_map(|d| d.outcome.as_ref())
        };
        gauge(
            "last_run_downloads_in_flight_max",
            "The most downloads the last run had in flight (--jobs auto: what the link took).",
            &one(outcomes().map(|o| o.concurrency.reached).max().unwrap_or(0) as f64),
        );
        gauge(
            "last_run_throttled_requests",
            "Requests of the last run that S3 throttled (503 SlowDown, 429) and that were retried.",
            &one(outcomes().map(|o| o.concurrency.throttled).sum::<u64>() as f64),
        );
        if let Some(age) = self.report.and_then(|r| r.inventory_age_secs) {
            gauge(
                "inventory_age_seconds",
                "Age of the newest complete inventory date when the run started.",
                &one(age as f64),
            );
        }
        if let Some(t) = self.last_applied {
            gauge(
                "last_applied_date_timestamp_seconds",
                "The newest inventory date the backup holds.",
                &one(t as f64),
            );
        }
        if let Some(t) = self.totals {
            gauge(
                "bytes_held",
                "Bytes of every file the backup holds.",
                &one(t.bytes_held as f64),
            );
            let missing = t.not_held - t.archived - t.needs_key;
            gauge(
                "versions_not_held",
                "Versions listed but not held, by reason (missing ones are retried).",
                &[
                    ("reason=\"missing\"".to_string(), missing as f64),
                    ("reason=\"archived\"".to_string(), t.archived as f64),
                    ("reason=\"needs_key\"".to_string(), t.needs_key as f64),
                ],
            );
            gauge(
                "versions_vanished",
                "Versions deleted from the bucket before they could be backed up.",
                &one(t.vanished as f64),
            );
        }
        out
    }

    /// Replaces `path` with the metrics: a temporary file beside it, then a rename.
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".s3invbackup-metrics")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .with_context(|| format!("writing the metrics file {}", path.display()))?;
        std::io::Write::write_all(&mut tmp, self.render().as_bytes())
            .with_context(|| format!("writing the metrics file {}", path.display()))?;
        tmp.persist(path)
            .with_context(|| format!("writing the metrics file {}", path.display()))?;
        Ok(())
    }
}

/// A label value as the exposition format quotes it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_its_type_and_labels_are_escaped() {
        let run = RunRecord {
            command: "sync".into(),
            result: Some(RunResult::Partial),
            fetched: 7,
            ..RunRecord::default()
        };
        let m = Metrics {
            backup: "/data/a \"b\"",
            run: &run,
            report: None,
            totals: Some(Totals {
                not_held: 3,
                archived: 1,
                ..Totals::default()
            }),
            last_applied: Some(1_700_000_000),
            ended: 1_700_000_100,
        };
        let text = m.render();
        assert!(text.contains(
            "s3invbackup_last_run_result{backup=\"/data/a \\\"b\\\"\",result=\"partial\"} 1\n"
        ));
        assert!(text.contains("result=\"done\"} 0\n"));
        assert!(text.contains(
            "s3invbackup_versions_not_held{backup=\"/data/a \\\"b\\\"\",reason=\"missing\"} 2\n"
        ));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split('{').next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{line}");
        }
    }
}
