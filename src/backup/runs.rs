//! The backup's run history: one line per run that changed (or tried to change) the backup
//! — a night's sync, a retry, a resumed run, `fsck --repair`, `prune`, `rollback` — in
//! `.<stem>/runs.jsonl`, appended and never rewritten. `state.json` says what the backup
//! holds; this says what happened to it, so a repair never overwrites the row of the night
//! it repaired and `status --check` can tell that the last night failed.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::backup::Backup;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Everything it set out to do.
    Done,
    /// Done, but some versions could not be fetched (the next sync retries them).
    Partial,
    /// Stopped by an error; the backup is consistent and the next run resumes.
    Failed,
    /// Stopped by a signal; resumable.
    Interrupted,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Done => "done",
            RunResult::Partial => "partial",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
        }
    }
}

/// One run, as `status` shows it and monitoring reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `sync`, `fsck --repair`, `prune`, `rollback`.
    pub command: String,
    /// RFC 3339, UTC.
    pub started: String,
    pub ended: String,
    pub duration_secs: f64,
    /// The tool's version that ran.
    pub version: String,
    pub result: Option<RunResult>,
    /// The error that stopped it (first line of the message chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Inventory dates applied (a resumed run's date first).
    #[serde(default)]
    pub dates: Vec<String>,
    /// Whether the run only retried versions earlier runs could not fetch.
    #[serde(default)]
    pub retry: bool,
    #[serde(default)]
    pub fetched: u64,
    #[serde(default)]
    pub fetched_bytes: u64,
    #[serde(default)]
    pub renamed: u64,
    /// Fetches of this run that failed.
    #[serde(default)]
    pub failed: u64,
    /// The newest complete inventory date the run saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_inventory: Option<String>,
    /// The shard a sharded backup's sync wrote (filled in when read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

impl RunRecord {
    /// A run of `command` between `started` and `ended`, by this version of the tool.
    pub fn timed(
        command: &str,
        started: crate::model::timestamp::Timestamp,
        ended: crate::model::timestamp::Timestamp,
    ) -> RunRecord {
        RunRecord {
            command: command.to_string(),
            started: started.to_string(),
            ended: ended.to_string(),
            duration_secs: (ended.as_millis() - started.as_millis()) as f64 / 1000.0,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..RunRecord::default()
        }
    }
}

impl Backup {
    pub fn runs_path(&self) -> PathBuf {
        self.part_dir().join("runs.jsonl")
    }

    /// Appends `record` as one line, synced: a crash may lose the line of the run it ends,
    /// never an earlier one.
    pub fn append_run(&self, record: &RunRecord) -> Result<()> {
        let path = self.runs_path();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // After a torn line (a crash mid-append), start a new one: the record stays readable.
        let mut line = Vec::new();
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut last = [0u8];
        if len > 0
            && std::os::unix::fs::FileExt::read_exact_at(&file, &mut last, len - 1).is_ok()
            && last[0] != b'\n'
        {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, record)?;
        line.push(b'\n');
        // One write of one line: O_APPEND keeps it whole even beside another appender.
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("appending to {}", path.display()))
    }

    /// Every run recorded, oldest first. A torn last line (a crash mid-append) is skipped.
    /// Of a sharded backup's whole: its own (fsck, prune, rollback) and every shard's
    /// syncs, each kept in its shard's directory (appends from several hosts to one file
    /// are not atomic on NFS).
    pub fn read_runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs = self.read_runs_here()?;
        if self.is_sharded_whole() {
            for part in self.parts() {
                let crate::backup::PartOf::Shard(i) = part.part else {
                    continue;
                };
                runs.extend(part.read_runs_here()?.into_iter().map(|mut r| {
                    r.shard = Some(i);
                    r
                }));
            }
            runs.sort_by(|a, b| a.started.cmp(&b.started));
        }
        Ok(runs)
    }

    fn read_runs_here(&self) -> Result<Vec<RunRecord>> {
        let path = self.runs_path();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut runs = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if let Ok(r) = serde_json::from_str::<RunRecord>(&line) {
                runs.push(r);
            }
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_runs_read_back_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::create(
            &dir.path().join("b"),
            crate::backup::Config {
                format: crate::backup::FORMAT,
                name_stem: "s3invbackup".into(),
                inventory: "/inv".into(),
                source_bucket: "bucket".into(),
                path_filter: None,
                file_mode: 0o644,
                naming: None,
                shards: None,
            },
        )
        .unwrap();
        assert!(backup.read_runs().unwrap().is_empty());
        let first = RunRecord {
            command: "sync".into(),
            result: Some(RunResult::Done),
            dates: vec!["2026-12-01T01-00Z".into()],
            fetched: 3,
            ..RunRecord::default()
        };
        let second = RunRecord {
            command: "fsck --repair".into(),
            result: Some(RunResult::Failed),
            error: Some("disk full".into()),
            ..RunRecord::default()
        };
        backup.append_run(&first).unwrap();
        backup.append_run(&second).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(backup.runs_path())
            .unwrap();
        f.write_all(b"{\"command\":\"sy").unwrap();
        assert_eq!(
            backup.read_runs().unwrap(),
            vec![first.clone(), second.clone()]
        );
        // The next run's line after the torn one is whole.
        backup.append_run(&first).unwrap();
        assert_eq!(
            backup.read_runs().unwrap(),
            vec![first.clone(), second, first]
        );
    }
}
