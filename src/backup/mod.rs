//! A backup directory: where its state lives, its fixed configuration, the dates applied so
//! far, and the lock that keeps a second writer out; and, one module each, the files in it:
//! the [`catalog`] (every version held: the source of truth), the [`run_dir`] of a run in
//! progress with its [`journal`], the [`layout`] of names the backup reserves, the
//! [`versions_json`] views, the [`totals`] state.json reports, and the one [`durable`]
//! rename-into-place protocol every file of the state directory is replaced by.
//!
//! ```text
//! BACKUP/.<stem>/config.json   fixed at creation: stem, inventory, bucket, path filter
//!               state.json    applied dates with their counts
//!               catalog/      every version held: a base and deltas (see `catalog`)
//!               indexes/      inventory indexes, one per date applied
//!               runs/<date>/  the run in progress: plan, new catalog, journal (see `run_dir`)
//!               staging/      downloads being verified (same filesystem as the tree)
//!               lock          held by the one process writing the backup
//! ```
//!
//! Invariants: only a holder of the lock writes; the catalog and state.json change only by
//! a durable rename, so a reader needs no lock; at most one run is pending.

pub mod catalog;
pub mod durable;
pub mod journal;
pub mod layout;
pub mod run_dir;
pub mod runs;
pub mod shards;
pub mod totals;
pub mod versions_json;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::backup::layout::NameStem;
use crate::backup::totals::Totals;
use crate::error::Refusal;

/// The fixed part of a backup, written once when it is created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Layout version of the backup, for future migrations.
    pub format: u32,
    pub name_stem: String,
    /// The inventory location the backup was created from (informational: a later run may
    /// read a copy of it elsewhere, but its bucket must match).
    pub inventory: String,
    pub source_bucket: String,
    /// Only keys matching this were ever backed up; later runs use it too.
    pub path_filter: Option<String>,
    /// Mode of the files placed in the tree.
    pub file_mode: u32,
    /// 1: old versions keep [`layout::Naming::V1`] names (a format-1 backup upgraded to a
    /// later format). Absent: the format's own naming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naming: Option<u32>,
    /// A backup written by N processes (`sync --shard I/N`): how its keys are split. Absent:
    /// one writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<shards::ShardMap>,
}

/// One applied date and what its run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppliedDate {
    pub date: String,
    /// When the run committed (RFC 3339).
    pub applied_at: String,
    pub keys: u64,
    pub versions: u64,
    pub downloaded: u64,
    pub downloaded_bytes: u64,
    pub renamed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// What the catalog holds after the run (kept current by fsck and prune).
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub applied: Vec<AppliedDate>,
    /// A shard started afresh by `fsck --repair` begins at the date the others had
    /// reached (the tree is in that date's state), not at the backup's first date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
}

impl State {
    pub fn last_applied(&self) -> Option<&str> {
        self.applied.last().map(|a| a.date.as_str())
    }
}

/// 2: old versions named by [`layout::Naming::V2`] (format 1 backups keep their names).
/// 3: the catalog is a base and deltas in `catalog/` ([`catalog::store`]); a backup of an
/// older format is moved to it when a writer first opens it.
pub const FORMAT: u32 = 3;

/// An open backup (existing or just created).
#[derive(Debug, Clone)]
pub struct Backup {
    pub root: PathBuf,
    pub stem: NameStem,
    pub config: Config,
    /// What this handle writes and reads the state of: the whole backup, or one shard.
    pub part: PartOf,
}

/// The part of a backup a handle stands for. A one-writer backup has only the whole; a
/// sharded one has a state directory per shard (`.<stem>/shards/<i>/`: lock, state,
/// catalog, runs, staging), and its whole is what readers see: the shards' catalogs merged,
/// the dates every shard has applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartOf {
    Whole,
    Shard(u32),
}

impl Backup {
    /// Finds the state directory of the backup at `root`: the one `.<stem>/config.json`.
    pub fn open(root: &Path) -> Result<Option<Backup>> {
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", root.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && entry.path().join("config.json").is_file() {
                found.push(entry.path().join("config.json"));
            }
        }
        let config_path = match found.as_slice() {
            [] => return Ok(None),
            [one] => one.clone(),
            _ => bail!(
                "{} holds several backup state directories ({}); which one is meant is unclear",
                root.display(),
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let text = std::fs::read(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config: Config = serde_json::from_slice(&text)
            .with_context(|| format!("parsing {}", config_path.display()))?;
        if !(1..=FORMAT).contains(&config.format) {
            bail!(
                "{}: backup format {} is not one this version knows (1 to {FORMAT})",
                config_path.display(),
                config.format
            );
        }
        let naming = if config.format == 1 || config.naming == Some(1) {
            crate::backup::layout::Naming::V1
        } else {
            crate::backup::layout::Naming::V2
        };
        let stem = NameStem::new(&config.name_stem)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in {}", config_path.display()))?
            .with_naming(naming);
        if config_path.parent() != Some(&root.join(stem.state_dir())) {
            bail!(
                "{}: name stem does not match its directory",
                config_path.display()
            );
        }
        Ok(Some(Backup {
            root: root.to_path_buf(),
            stem,
            config,
            part: PartOf::Whole,
        }))
    }

    /// The backup at `root`, which must be one.
    pub fn open_existing(root: &Path) -> Result<Backup> {
        Backup::open(root)?.ok_or_else(|| Refusal::NotABackup(root.to_path_buf()).into())
    }

    /// Creates a new backup at `root`, which must be absent or an empty directory: a
    /// backup never adopts files it did not place. (A sharded backup's creator holds the
    /// creation lock in `.<stem>/`, which may therefore exist already; so may the state
    /// directory of a creation that was interrupted before its config.json was written.)
    pub fn create(root: &Path, config: Config) -> Result<Backup> {
        let stem = NameStem::new(&config.name_stem).map_err(anyhow::Error::msg)?;
        if root.exists() {
            let entries =
                std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("reading {}", root.display()))?;
                // A state directory without its config.json is a creation that did not finish
                // (a crash, or a power loss that kept the directories and not the config):
                // nothing was placed yet, and this creation takes it over.
                if entry.file_name().to_str() == Some(&stem.state_dir())
                    && (config.shards.is_some() || !entry.path().join("config.json").exists())
                {
                    continue;
                }
                bail!(
                    "{} is not empty and is not a backup: a new backup starts in an empty or \
                     new directory",
                    root.display()
                );
            }
        }
        let backup = Backup {
            root: root.to_path_buf(),
            stem,
            config,
            part: PartOf::Whole,
        };
        for part in backup.parts() {
            for dir in [part.part_dir(), part.runs_dir(), part.indexes_dir()] {
                durable::make_dir(&dir)?;
            }
            crate::backup::catalog::store::create_empty(&part)?;
            durable::write_json(&part.state_path(), &State::default())?;
        }
        // Written last: its presence is what makes the directory a backup.
        durable::write_json(&backup.state_dir().join("config.json"), &backup.config)?;
        Ok(backup)
    }

    /// Where files taken out of the tree go, never deleted: strays and damaged files
    /// (`fsck --repair`), torn placements a resumed run found, a damaged shard's remains.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.state_dir().join("quarantine")
    }

    /// The shard map, if the backup has more than one writer.
    pub fn shards(&self) -> Option<shards::Shards> {
        self.config.shards.as_ref().map(shards::Shards::new)
    }

    /// The handle of shard `index` (of a sharded backup).
    pub fn shard(&self, index: u32) -> Backup {
        Backup {
            part: PartOf::Shard(index),
            ..self.clone()
        }
    }

    /// The parts that hold state: each shard, or the whole of a one-writer backup.
    pub fn parts(&self) -> Vec<Backup> {
        match (&self.config.shards, self.part) {
            (Some(map), PartOf::Whole) => (0..map.count).map(|i| self.shard(i)).collect(),
            _ => vec![self.clone()],
        }
    }

    /// The whole of a sharded backup, which only readers use (a writer works on a shard).
    pub fn is_sharded_whole(&self) -> bool {
        self.config.shards.is_some() && self.part == PartOf::Whole
    }

    /// Where this part's state lives: `.<stem>/` for a one-writer backup,
    /// `.<stem>/shards/<i>/` for a shard.
    pub fn part_dir(&self) -> PathBuf {
        match self.part {
            PartOf::Whole => self.state_dir(),
            PartOf::Shard(i) => self.state_dir().join("shards").join(i.to_string()),
        }
    }

    /// `shard 2 of 4` for messages; empty for a one-writer backup.
    pub fn part_name(&self) -> String {
        match (self.part, &self.config.shards) {
            (PartOf::Shard(i), Some(map)) => format!("shard {i} of {}", map.count),
            _ => String::new(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(self.stem.state_dir())
    }
    /// The catalog, as of now (its manifest is replaced atomically: no lock needed).
    pub fn catalog(&self) -> Result<crate::backup::catalog::Catalog> {
        crate::backup::catalog::Catalog::open(self)
    }
    pub fn state_path(&self) -> PathBuf {
        self.part_dir().join("state.json")
    }
    pub fn indexes_dir(&self) -> PathBuf {
        self.part_dir().join("indexes")
    }
    /// What an applied date changed in the bucket (`changes`), one file per date (per shard
    /// of a sharded backup).
    pub fn changes_path(&self, date: &str) -> PathBuf {
        self.part_dir()
            .join("changes")
            .join(format!("{date}.jsonl.zst"))
    }

    /// The dates applied. Of a sharded backup's whole: the dates every shard has applied,
    /// with the shards' counts added up.
    pub fn read_state(&self) -> Result<State> {
        if self.is_sharded_whole() {
            let states = self
                .parts()
                .iter()
                .map(Backup::read_state)
                .collect::<Result<Vec<_>>>()?;
            return Ok(merge_states(&states));
        }
        let path = self.state_path();
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "reading {}{}",
                path.display(),
                if self.part_name().is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({}: run `s3invbackup fsck --repair` to rebuild it)",
                        self.part_name()
                    )
                }
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write_state(&self, state: &State) -> Result<()> {
        durable::write_json(&self.state_path(), state)
    }

    /// Records what the catalog now holds in the last applied date's totals (after fsck's
    /// repairs or a prune rewrote the catalog).
    /// (Nothing for the whole of a sharded backup: `catalog::store::edit` records each
    /// shard's own.)
    pub fn record_totals(&self, totals: Totals) -> Result<()> {
        if self.is_sharded_whole() {
            return Ok(());
        }
        let mut state = self.read_state()?;
        if let Some(last) = state.applied.last_mut() {
            last.totals = totals;
        }
        self.write_state(&state)
    }

    /// Takes the writer's lock, or says who holds it. The whole of a sharded backup is
    /// locked by taking every shard's lock.
    pub fn lock(&self) -> Result<Lock> {
        if self.is_sharded_whole() {
            let mut held = Vec::new();
            for part in self.parts() {
                held.extend(part.lock()?.files);
            }
            return Ok(Lock { files: held });
        }
        let path = self.part_dir().join("lock");
        let mut file = lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim().to_string();
                return Err(Refusal::Locked {
                    backup: self.root.clone(),
                    holder: match self.part_name().as_str() {
                        "" => holder,
                        part => format!("{part}: {holder}"),
                    },
                }
                .into());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let since = crate::model::timestamp::Timestamp::now();
        file.set_len(0)?;
        write!(
            file,
            "pid {} on {} since {since}",
            std::process::id(),
            host.trim()
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Lock { files: vec![file] })
    }
}

impl Backup {
    /// Who holds the writer's lock now (`pid N on HOST since T`), without taking it: a
    /// probe that took the lock, even for a moment, could make a starting sync refuse. The
    /// kernel's table of flock locks (/proc/locks) is read instead; it sees this host's
    /// holders (on a cluster filesystem, a holder on another host may not appear).
    pub fn lock_holder(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        if self.is_sharded_whole() {
            return self
                .parts()
                .iter()
                .find_map(|p| p.lock_holder().map(|h| format!("{}: {h}", p.part_name())));
        }
        let path = self.part_dir().join("lock");
        let meta = std::fs::metadata(&path).ok()?;
        let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
        let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let held = locks.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && f[1] == "FLOCK" && f[3] == "WRITE" && f[5] == id
        });
        held.then(|| {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string()
        })
    }
}

/// Opens (creating) a file that is only ever `flock`ed: the writer's lock, the spine's, the
/// creation lock of a sharded backup.
pub fn lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Held while a process writes a backup; released when dropped (or when the process dies).
pub struct Lock {
    files: Vec<File>,
}

/// The whole's dates: those up to the last date every shard has applied (a shard started
/// afresh lacks the earlier ones), each with the counts of the shards that applied it.
fn merge_states(states: &[State]) -> State {
    let Some(reached) = states
        .iter()
        .map(|s| s.last_applied())
        .min()
        .flatten()
        .map(str::to_string)
    else {
        return State::default();
    };
    let mut by_date: std::collections::BTreeMap<&str, AppliedDate> = Default::default();
    for state in states {
        for a in state.applied.iter().filter(|a| a.date <= reached) {
            let m = by_date
                .entry(a.date.as_str())
                .or_insert_with(|| AppliedDate {
                    date: a.date.clone(),
                    ..AppliedDate::default()
                });
            m.applied_at = m.applied_at.clone().max(a.applied_at.clone());
            m.keys += a.keys;
            m.versions += a.versions;
            m.downloaded += a.downloaded;
            m.downloaded_bytes += a.downloaded_bytes;
            m.renamed += a.renamed;
            m.failed += a.failed;
            m.skipped += a.skipped;
            m.totals = m.totals.plus(&a.totals);
        }
    }
    State {
        applied: by_date.into_values().collect(),
        starts_at: None,
    }
}
