//! The run journal: every change to the tree is appended here before it is made, so that an
//! interrupted run can be resumed (or, with `rollback`, undone) knowing exactly what was
//! done. Entries are written to the file (one `write` each: a killed process loses none)
//! and synced to disk in batches (a power loss may lose the last batch; the steps it names
//! are idempotent and the plan is replayed from the start, so nothing is lost either way).
//!
//! `S3INVBACKUP_CRASH_AFTER=N` aborts the process (as `kill -9` would) right after the N-th
//! entry of the process is written, before its change is made: the crash tests use it to stop a run at a
//! chosen point, deterministically.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Entries between two syncs of the journal to disk.
const SYNC_EVERY: u64 = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    Rename {
        from: String,
        to: String,
    },
    Displace {
        dir: String,
        to: String,
        /// `to` existed: the directory was merged into it (rollback cannot separate them).
        #[serde(default)]
        merged: bool,
    },
    Mkdir {
        dir: String,
    },
    /// A verified download moves from staging (relative to the state directory) into the tree.
    Place {
        staging: String,
        dest: String,
    },
    /// Versions JSON files of the run's directories are being rewritten.
    Versions,
    /// The new catalog is about to replace the old one.
    Commit,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    line: Vec<u8>,
    written: u64,
    crash_after: Option<u64>,
}

pub const FILE: &str = "journal.jsonl";

impl Journal {
    /// Opens the run's journal for appending (a resumed run continues it).
    pub fn open(run_dir: &Path) -> Result<Journal> {
        let path = run_dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        let crash_after = std::env::var("S3INVBACKUP_CRASH_AFTER")
            .ok()
            .and_then(|v| v.parse().ok());
        Ok(Journal {
            path,
            file,
            line: Vec::with_capacity(256),
            written: 0,
            crash_after,
        })
    }

    /// Appends `entry`; returns once the kernel has it.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, entry)?;
        self.line.push(b'\n');
        self.file
            .write_all(&self.line)
            .with_context(|| format!("writing journal {}", self.path.display()))?;
        self.written += 1;
        if self.written.is_multiple_of(SYNC_EVERY) {
            self.sync()?;
        }
        // Counted over the whole process: a sync writes several journals (one per date).
        static IN_PROCESS: AtomicU64 = AtomicU64::new(0);
        let n = IN_PROCESS.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_after == Some(n) {
            eprintln!("s3invbackup: S3INVBACKUP_CRASH_AFTER={n} reached; aborting");
            std::process::abort();
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing journal {}", self.path.display()))
    }
}

/// A named crash point for the crash campaign: `S3INVBACKUP_FAILPOINT=NAME` or `NAME:N`
/// aborts the process (as `kill -9` would) at the N-th time (default: first) this process
/// reaches `failpoint(NAME)`. Points: `index-built`, `planned`, `catalog-replaced`,
/// `state-written` (one per applied date each).
pub fn failpoint(name: &str) {
    static HITS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());
    let Ok(spec) = std::env::var("S3INVBACKUP_FAILPOINT") else {
        return;
    };
    let (want, nth) = match spec.split_once(':') {
        Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    if want != name {
        return;
    }
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    let count = match hits.iter_mut().find(|(n, _)| n == name) {
        Some((_, c)) => {
            *c += 1;
            *c
        }
        None => {
            hits.push((name.to_string(), 1));
            1
        }
    };
    if count == nth {
        eprintln!("s3invbackup: S3INVBACKUP_FAILPOINT={spec} reached; aborting");
        std::process::abort();
    }
}

/// Every entry of a run's journal, in order (for rollback and status).
pub fn read(run_dir: &Path) -> Result<Vec<Entry>> {
    let path = run_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(e) => out.push(e),
            // A torn last line is what a crash mid-write leaves: its change was never made.
            Err(_) if n + 1 == lines.len() => break,
            Err(e) => {
                return Err(e).with_context(|| format!("{} line {}", path.display(), n + 1));
            }
        }
    }
    Ok(out)
}
