//! The run directory (`.<stem>/runs/<date>/`): the one place that names its files and the
//! one policy that says which run is pending.
//!
//! A run directory is *planned* once `plan.json` is in it (written last by the planner,
//! atomically). A planned run whose date is after the last applied date is **pending**: the
//! next `sync` resumes it, `rollback` (or `fsck --repair`) undoes it, `status` and `fsck`
//! report it, and `prune` refuses to run until it is resolved (the resumed run would replace
//! the catalog with its own, planned before the prune, and list deleted files as held).
//! Any other run directory (unplanned, or already recorded in the state) is a leftover that
//! the next writer removes.
//!
//! ```text
//! runs/<date>/plan.json          the plan's summary (its presence: "planned")
//!             plan.jsonl         the steps, in order
//!             dirty.jsonl        directories whose versions JSON the run rewrites
//!             delta.s3inv        the catalog's delta: every record the run adds or
//!                                changes, as it will be if every fetch succeeds
//!             delta.final.s3inv  the same with this run's failures marked
//!             versions.planned   the changed directories' versions JSON, as planned
//!             journal.jsonl      every change made, appended before it is made
//! staging/<xx>/<md5>             a verified download waiting to be placed
//! ```

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::backup::journal::{self, Entry};
use crate::backup::totals::Totals;
use crate::backup::{Backup, State};
use crate::model::timestamp::Timestamp;

const SUMMARY: &str = "plan.json";
const STEPS: &str = "plan.jsonl";
const DIRTY: &str = "dirty.jsonl";
const PLANNED_DELTA: &str = "delta.s3inv";
const FINAL_DELTA: &str = "delta.final.s3inv";
/// The whole planned catalog of a run planned before deltas (format 2).
const LEGACY_PLANNED_CATALOG: &str = "catalog.s3inv";
const JOURNAL: &str = "journal.jsonl";
const PLANNED_VERSIONS: &str = "versions.planned";
const CHANGES: &str = "changes.jsonl.zst";
const STAGING: &str = "staging";

/// One change to the tree. Paths are relative to the backup root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// A file moves: current to old, old to current, or into a displaced directory.
    Rename { from: String, to: String },
    /// Directory `dir` is renamed to `to` (merged into it if it exists) because key `dir`
    /// became a file.
    Displace { dir: String, to: String },
    /// A folder marker: the directory exists.
    Mkdir { dir: String },
    /// Download a version, verify it, and place it at `dest`.
    Fetch {
        key: String,
        version_id: String,
        last_modified: Timestamp,
        size: u64,
        etag: Option<String>,
        etag_is_md5: bool,
        dest: String,
        /// False for a current-versions-only inventory: GET the latest (no versionId).
        #[serde(default = "yes")]
        versioned: bool,
    },
}

fn yes() -> bool {
    true
}

/// What a plan holds; written last into the run directory (its presence means "planned").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanSummary {
    pub date: String,
    /// Names this plan (the date alone does not: a retry plans the last date again). The
    /// catalog's manifest records it when the run commits. Empty in a plan written before
    /// catalogs had deltas.
    #[serde(default)]
    pub plan_id: String,
    /// Records in the plan's delta (added or changed).
    #[serde(default)]
    pub delta_records: u64,
    pub keys: u64,
    pub versions: u64,
    pub fetches: u64,
    pub fetch_bytes: u64,
    pub renames: u64,
    pub displaced: u64,
    pub mkdirs: u64,
    /// Versions that vanished from the inventory in this date (kept, marked gone).
    pub newly_gone: u64,
    /// Versions still missing and no longer listed (cannot be retried): deleted from the
    /// bucket before the backup got them (now "vanished"), or held once and lost.
    pub missing_gone: u64,
    pub shadowed: u64,
    pub dirty_dirs: u64,
    /// What the new catalog holds if every fetch succeeds (missing and archived versions
    /// counted before this run's fetches).
    #[serde(flatten)]
    pub totals: Totals,
    pub bad_keys: Vec<BadKeyEntry>,
    /// Versions already held that this inventory describes differently (size, ETag):
    /// impossible in S3; the held file is kept. The first ones by name, all counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<AnomalyEntry>,
    #[serde(default)]
    pub anomaly_count: u64,
    /// Versions per change kind (`added`, `now-noncurrent`, ...) between the last applied
    /// date and this one; empty for a backup's first date (everything is new).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub changes: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnomalyEntry {
    pub key: String,
    pub version_id: String,
    /// What the backup holds, and what the inventory now says.
    pub held: String,
    pub listed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BadKeyEntry {
    pub key: String,
    pub reason: String,
    /// Recorded as skipped by an earlier run: reported again, but never a reason to stop
    /// (`--on-bad-key stop` is about keys the operator has not seen yet).
    #[serde(default)]
    pub known: bool,
}

impl PlanSummary {
    /// Bad keys no earlier run recorded as skipped.
    pub fn new_bad_keys(&self) -> usize {
        self.bad_keys.iter().filter(|b| !b.known).count()
    }
}

/// A run directory: its files by role. Also used for a dry run's temporary plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn at(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn summary_path(&self) -> PathBuf {
        self.path.join(SUMMARY)
    }
    pub fn steps_path(&self) -> PathBuf {
        self.path.join(STEPS)
    }
    pub fn dirty_path(&self) -> PathBuf {
        self.path.join(DIRTY)
    }
    /// The catalog's delta as planned (every fetch assumed to succeed).
    pub fn planned_delta(&self) -> PathBuf {
        self.path.join(PLANNED_DELTA)
    }
    /// The planned delta with this run's failures and checks marked.
    pub fn final_delta(&self) -> PathBuf {
        self.path.join(FINAL_DELTA)
    }
    /// The run was planned by a version from before deltas: this one cannot commit it.
    pub fn is_legacy(&self, summary: &PlanSummary) -> bool {
        summary.plan_id.is_empty() || self.path.join(LEGACY_PLANNED_CATALOG).exists()
    }
    /// The versions JSON of the changed directories, rendered by the plan.
    pub fn planned_versions(&self) -> PathBuf {
        self.path.join(PLANNED_VERSIONS)
    }
    pub fn journal_path(&self) -> PathBuf {
        self.path.join(JOURNAL)
    }
    /// What the date changed in the bucket, as the planner saw it (moved into
    /// `.<stem>/changes/` when the run commits).
    pub fn changes_path(&self) -> PathBuf {
        self.path.join(CHANGES)
    }

    /// The plan's summary, if the run was planned.
    pub fn read_summary(&self) -> Result<Option<PlanSummary>> {
        let path = self.summary_path();
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The plan's steps, in order.
    pub fn read_steps(&self) -> Result<impl Iterator<Item = Result<Step>> + use<>> {
        let path = self.steps_path();
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let lines = std::io::BufReader::with_capacity(1 << 16, file).lines();
        Ok(lines.enumerate().map(move |(n, line)| {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}: not a plan step", path.display(), n + 1))
        }))
    }

    /// The directories whose versions JSON the run rewrites.
    pub fn read_dirty(&self) -> Result<Vec<String>> {
        let path = self.dirty_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .enumerate()
            .map(|(n, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not a directory", path.display(), n + 1))
            })
            .collect()
    }

    pub fn read_journal(&self) -> Result<Vec<Entry>> {
        journal::read(&self.journal_path())
    }

    /// The run got as far as committing its delta (the catalog's manifest names its plan):
    /// only the state is left to record (and it can no longer be rolled back).
    pub fn is_committed(&self, summary: &PlanSummary, last_run: Option<&str>) -> Result<bool> {
        Ok(!summary.plan_id.is_empty()
            && last_run == Some(summary.plan_id.as_str())
            && self.read_journal()?.contains(&Entry::Commit))
    }
}

/// A planned run not yet recorded in the state.
#[derive(Debug, Clone)]
pub struct PendingRun {
    pub dir: RunDir,
    pub summary: PlanSummary,
}

impl PendingRun {
    pub fn date(&self) -> &str {
        &self.summary.date
    }
}

impl Backup {
    pub fn runs_dir(&self) -> PathBuf {
        self.part_dir().join("runs")
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.part_dir().join(STAGING)
    }

    /// The run directory of `date`.
    pub fn run_dir(&self, date: &str) -> RunDir {
        RunDir::at(self.runs_dir().join(date))
    }

    /// The pending run, if any (see the module comment); read only. Two pending runs are
    /// a damaged state directory: no writer ever plans a date before recording the last.
    ///
    /// Of the whole of a sharded backup: the first shard's pending run (`state` unused).
    pub fn pending_run(&self, state: &State) -> Result<Option<PendingRun>> {
        if self.is_sharded_whole() {
            for part in self.parts() {
                if let Some(run) = part.pending_run(&part.read_state()?)? {
                    return Ok(Some(run));
                }
            }
            return Ok(None);
        }
        Ok(self.classify_runs(state)?.0)
    }

    /// As [`Backup::pending_run`], and removes the leftovers (the caller holds the lock).
    pub fn pending_run_clearing_leftovers(&self, state: &State) -> Result<Option<PendingRun>> {
        let (pending, leftovers) = self.classify_runs(state)?;
        for dir in leftovers {
            std::fs::remove_dir_all(dir.path())
                .with_context(|| format!("removing {}", dir.path().display()))?;
        }
        Ok(pending)
    }

    fn classify_runs(&self, state: &State) -> Result<(Option<PendingRun>, Vec<RunDir>)> {
        let dir = self.runs_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Vec::new())),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut pending: Option<PendingRun> = None;
        let mut leftovers = Vec::new();
        for entry in entries {
            let run = RunDir::at(
                entry
                    .with_context(|| format!("reading {}", dir.display()))?
                    .path(),
            );
            match run.read_summary()? {
                Some(s) if state.last_applied().is_none_or(|l| s.date.as_str() > l) => {
                    if let Some(other) = &pending {
                        bail!(
                            "{} holds more than one planned run ({} and {}); the state \
                             directory is damaged",
                            dir.display(),
                            other.date(),
                            s.date
                        );
                    }
                    pending = Some(PendingRun {
                        dir: run,
                        summary: s,
                    });
                }
                _ => leftovers.push(run),
            }
        }
        Ok((pending, leftovers))
    }

    /// Where a version is staged, relative to the state directory: a name derived from the
    /// version (so a resumed run finds it), spread over 256 directories (32 threads creating
    /// files in one directory serialize on its lock).
    pub fn staging_rel(key: &str, version_id: &str, last_modified: Timestamp) -> String {
        let mut h = Md5::new();
        h.update(key.as_bytes());
        h.update([0]);
        h.update(version_id.as_bytes());
        h.update([0]);
        h.update(last_modified.0.to_le_bytes());
        let hex = crate::inventory::hex(&h.finalize());
        format!("{STAGING}/{}/{}", &hex[..2], &hex[2..])
    }

    /// Removes whatever is in staging: it belongs to no run once a run is recorded or undone.
    pub fn clear_staging(&self) -> Result<()> {
        let staging = self.staging_dir();
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cleaning {}", staging.display())),
        }
    }
}
