//! The run journal: every change to the tree is appended here before it is made, so that an
//! interrupted run can be resumed (or, with `rollback`, undone) knowing exactly what was
//! done. Entries are written to the file (one `write` each: a killed process loses none)
//! and synced to disk in batches (a power loss may lose the last batch; the steps it names
//! are idempotent and the plan is replayed from the start, so nothing is lost either way).
//!
//! Every append is a crash point for the crash campaign ([`crate::sys::failpoint`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
        /// How it was verified, for the catalog (the commit records it there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check: Option<PlacedCheck>,
    },
    /// Versions JSON files of the run's directories are being rewritten.
    Versions,
    /// The new catalog is about to replace the old one.
    Commit,
}

/// How a placed file was verified (the catalog's `Local::check`, `part_size`, `checksum`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedCheck {
    /// `Check::name()`.
    pub how: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part_size: u64,
    /// Hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

pub struct Journal {
    path: PathBuf,
    file: File,
    line: Vec<u8>,
    written: u64,
}

impl Journal {
    /// Opens a run's journal (`RunDir::journal_path`) for appending (a resumed run
    /// continues it).
    pub fn open(path: &Path) -> Result<Journal> {
        let path = path.to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        Ok(Journal {
            path,
            file,
            line: Vec::with_capacity(256),
            written: 0,
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
        crate::sys::failpoint::journal_appended();
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("syncing journal {}", self.path.display()))
    }
}

/// Every entry of a run's journal, in order (for rollback and status).
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
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
