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
    /// An attempt at the run began on `on` (host and boot, [`crate::sys::boot::this_boot`]).
    /// An attempt on another boot means a power loss (or a node crash) may have cut this one,
    /// taking bytes it wrote and did not sync.
    Attempt {
        on: String,
    },
    /// What the first `steps` steps of the plan placed is on disk (a syncfs was done): a
    /// later attempt trusts those files by size and mtime even after a power loss.
    Checkpoint {
        steps: u64,
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
        let new = !path.exists();
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        // What an interruption left after the last whole line (a torn entry, NUL bytes) is
        // cut off, so that this attempt's first entry starts a line of its own. Nothing
        // there ever parsed, so nothing is lost.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            use std::os::unix::fs::FileExt;
            let mut last = [0u8; 1];
            if file.read_at(&mut last, len - 1).is_err() || last[0] != b'\n' {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("reading journal {}", path.display()))?;
                let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                file.set_len(keep as u64)
                    .with_context(|| format!("truncating journal {}", path.display()))?;
            }
        }
        if new {
            // Its name durable before any entry counts on it.
            if let Some(dir) = path.parent() {
                crate::backup::durable::sync_dir(dir)?;
            }
        }
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
///
/// Two kinds of damage are what an interruption leaves, not corruption: a torn last line
/// (a crash mid-write: its change was never made), and NUL bytes where entries were (a power
/// loss after the file grew but before its bytes reached the disk; ext4's delayed allocation
/// and XFS leave exactly this). Those entries are lost; the ones after them still count
/// (their bytes did reach the disk), and every step is idempotent, so the resumed run does
/// the lost ones again if they were not done.
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let bytes = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut lost = 0;
    for (n, raw) in lines.iter().enumerate() {
        // Zeroed entries lose their newline too, so NULs run into the next good entry.
        let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
        let end = raw.iter().rposition(|&b| b != 0).map_or(start, |i| i + 1);
        let line = &raw[start..end.max(start)];
        if line.len() != raw.len() {
            lost += 1;
        }
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(e) => out.push(e),
            Err(_) if n + 1 == lines.len() => break,
            Err(_) if line.len() != raw.len() => {}
            Err(e) => {
                return Err(e).with_context(|| format!("{} line {}", path.display(), n + 1));
            }
        }
    }
    if lost > 0 {
        tracing::warn!(
            "{}: NUL bytes in {lost} line(s) (entries a power loss took); the {} others are used",
            path.display(),
            out.len()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdir(dir: &str) -> Entry {
        Entry::Mkdir {
            dir: dir.to_string(),
        }
    }

    /// What a power loss leaves in a journal: NUL bytes where entries were (their write
    /// reached the size, not the disk), good entries after them, a torn last line. Each
    /// counts for what it is, and the next attempt's entries start a line of their own.
    #[test]
    fn entries_a_power_loss_zeroed_are_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut j = Journal::open(&path).unwrap();
        for d in ["a", "b", "c"] {
            j.append(&mkdir(d)).unwrap();
        }
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        let third = second + bytes[second..].iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second..third].fill(0); // the second entry, newline included
        bytes.extend_from_slice(br#"{"op":"mkd"#); // torn
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap(), vec![mkdir("a"), mkdir("c")]);
        let mut j = Journal::open(&path).unwrap();
        j.append(&mkdir("d")).unwrap();
        drop(j);
        assert_eq!(
            read(&path).unwrap(),
            vec![mkdir("a"), mkdir("c"), mkdir("d")]
        );
        // Anything else unreadable is damage, named with its line.
        std::fs::write(
            &path,
            b"{\"op\":\"mkdir\",\"dir\":\"a\"}\nnot json\n{\"op\":\"commit\"}\n",
        )
        .unwrap();
        let err = read(&path).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }
}
