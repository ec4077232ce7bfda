//! A backup written by N cooperating processes (`sync --shard I/N`, one per host of a Slurm
//! job array or a Kubernetes Indexed Job): who owns which key.
//!
//! The key space is cut into N ranges when the backup is created, balanced by version count
//! over the first date's index; the cuts are directory paths (`zarr/5a1c…/`), recorded in
//! config.json and never changed. Every directory in the tree must have one writer, and so
//! must every name in a directory (a key `a` and the keys under `a/` flip between a file and
//! a directory, and the planner handles that in one walk). So a key is owned by a *unit*:
//!
//! - directories that a cut passes through (the *spine*: the top, and every proper ancestor
//!   of a cut) are split: each of their entries is a unit of its own;
//! - any other directory, with everything under it, is one unit;
//! - a file directly in a spine directory is the unit of its own name, together with the
//!   directory of the same name (so its file↔directory flips stay in one shard).
//!
//! A unit goes to the range its path (with a trailing `/`) falls in. Each shard then writes
//! whole units only, and never two shards the same directory entry. What the shards share is
//! the spine: its directories are made by whoever needs them first (`mkdir` is idempotent),
//! never displaced, and their versions JSON (which lists files of several shards) is
//! rendered from the merged catalog after each shard's commit, under `spine.lock`.
//!
//! The one way a sharded backup differs from a one-host backup: a file whose key names a
//! spine directory (`zarr` beside `zarr/…`) is kept as an old version for as long as the
//! backup exists, where a one-host backup would let it displace the directory once nothing
//! under the directory is current.

use std::collections::HashSet;
use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::index::merge::SortedRecords;

/// How the key space was cut, fixed at creation (config.json's `shards`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardMap {
    pub count: u32,
    /// `count - 1` directory paths ending in `/`, in order (equal ones leave a shard empty).
    pub cuts: Vec<String>,
    /// The date every shard starts from: the one the cuts were computed on.
    pub first_date: String,
}

/// A [`ShardMap`] ready to answer who owns a key.
#[derive(Debug, Clone)]
pub struct Shards {
    count: u32,
    cuts: Vec<String>,
    /// Directories a cut passes through, as [`crate::backup::catalog::parent_dir`] names
    /// them (no trailing `/`; "" is the top).
    spine: HashSet<String>,
}

impl Shards {
    pub fn new(map: &ShardMap) -> Shards {
        let mut spine = HashSet::new();
        spine.insert(String::new());
        for cut in &map.cuts {
            let body = cut.strip_suffix('/').unwrap_or(cut);
            for (i, b) in body.bytes().enumerate() {
                if b == b'/' {
                    spine.insert(body[..i].to_string());
                }
            }
        }
        Shards {
            count: map.count,
            cuts: map.cuts.clone(),
            spine,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard that owns `key`.
    pub fn owner(&self, key: &str) -> u32 {
        let (unit, slash) = self.unit(key);
        let tail: &[u8] = if slash { b"/" } else { b"" };
        // Cuts at or below the unit's path: their count is the shard.
        let at_or_below = |c: &String| {
            c.as_bytes()
                .iter()
                .cmp(unit.as_bytes().iter().chain(tail))
                .is_le()
        };
        self.cuts.partition_point(at_or_below) as u32
    }

    /// The unit's path: a prefix of `key`, and whether a `/` follows it.
    fn unit<'k>(&self, key: &'k str) -> (&'k str, bool) {
        let mut start = 0;
        loop {
            match key[start..].find('/') {
                None => return (key, true),
                Some(j) => {
                    let dir = &key[..start + j];
                    if !self.spine.contains(dir) {
                        return (&key[..start + j + 1], false);
                    }
                    start += j + 1;
                }
            }
        }
    }

    /// `dir` (no trailing `/`) is split between shards: its versions JSON is rendered from
    /// the merged catalog, and it is never displaced.
    pub fn is_spine(&self, dir: &str) -> bool {
        self.spine.contains(dir)
    }

    /// The spine directories, in order.
    pub fn spine(&self) -> Vec<String> {
        let mut dirs: Vec<String> = self.spine.iter().cloned().collect();
        dirs.sort();
        dirs
    }

    /// `key` is a file named like a spine directory: always kept as an old version.
    pub fn names_spine(&self, key: &str) -> bool {
        !key.is_empty() && !key.ends_with('/') && self.spine.contains(key)
    }
}

/// Cuts the key space of `records` (in index order; `total` of them) into `count` ranges of
/// about equal version count. A cut is the start of a directory: when the running count
/// passes the next share inside a directory, the cut goes at the start of that directory or
/// of the next one, whichever leaves the count closer to the share. A directory is never
/// split by its own files: one holding more than a share leaves a shard short (or empty)
/// rather than cut in the middle of its files.
pub fn compute(
    records: &mut dyn SortedRecords,
    total: u64,
    count: u32,
    first_date: &str,
) -> Result<ShardMap> {
    if count == 0 {
        bail!("a backup has at least one shard");
    }
    let share = |i: usize| total * i as u64 / count as u64;
    let mut cuts: Vec<String> = Vec::new();
    let mut seen = 0u64;
    // The newest directory start (its cut, the records before it), and the directory whose
    // span passed the next share.
    let mut start: Option<(String, u64)> = None;
    let mut crossed: Option<(String, u64)> = None;
    let mut rec = crate::model::record::VersionRecord::default();
    while cuts.len() + 1 < count as usize && records.take(&mut rec)? {
        let cut = match rec.key.rfind('/') {
            Some(i) => rec.key[..=i].to_string(),
            None => format!("{}/", rec.key),
        };
        // A region that starts here: its cut is above every cut of the keys before it (a
        // directory's own files after a subdirectory's keys are not a new start).
        if start.as_ref().is_none_or(|(c, _)| cut > *c) {
            if let Some((before, at)) = crossed.take() {
                let want = share(cuts.len() + 1);
                let chosen = if want.abs_diff(at) <= want.abs_diff(seen) && at > 0 {
                    before
                } else {
                    cut.clone()
                };
                if cuts.last().is_none_or(|last| *last < chosen) {
                    cuts.push(chosen);
                }
            }
            start = Some((cut, seen));
        }
        seen += 1;
        if crossed.is_none() && cuts.len() + 1 < count as usize && seen > share(cuts.len() + 1) {
            crossed = start.clone();
        }
    }
    // The last share passed in the last directory: its start is the only cut left.
    if let Some((before, at)) = crossed
        && at > 0
        && cuts.len() + 1 < count as usize
        && cuts.last().is_none_or(|last| *last < before)
    {
        cuts.push(before);
    }
    // Fewer distinct cuts than shards (a small or flat bucket): the last shards are empty.
    let pad = cuts
        .last()
        .cloned()
        .unwrap_or_else(|| "\u{10FFFF}/".to_string());
    cuts.resize(count as usize - 1, pad);
    Ok(ShardMap {
        count,
        cuts,
        first_date: first_date.to_string(),
    })
}

/// Which shard a process writes: `I/N`, or read from the scheduler's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardId {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl ShardId {
    /// `I/N`; `slurm` (a job array: `SLURM_ARRAY_TASK_ID` counted from
    /// `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`); `k8s/N` (an Indexed Job:
    /// `JOB_COMPLETION_INDEX`, of the Job's N completions, which the pod is not told).
    pub fn parse(spec: &str) -> Result<ShardId, String> {
        Self::parse_with(spec, |name| std::env::var(name).ok())
    }

    pub fn parse_with(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<ShardId, String> {
        let number = |name: &str| -> Result<u32, String> {
            let v = env(name).ok_or_else(|| {
                format!("--shard {spec}: {name} is not set (is this a job array task?)")
            })?;
            v.trim()
                .parse()
                .map_err(|_| format!("--shard {spec}: {name}={v:?} is not a number"))
        };
        let id = if spec == "slurm" {
            let task = number("SLURM_ARRAY_TASK_ID")?;
            let min = if env("SLURM_ARRAY_TASK_MIN").is_some() {
                number("SLURM_ARRAY_TASK_MIN")?
            } else {
                0
            };
            let count = number("SLURM_ARRAY_TASK_COUNT")?;
            if task < min {
                return Err(format!(
                    "--shard slurm: SLURM_ARRAY_TASK_ID {task} is below SLURM_ARRAY_TASK_MIN {min}"
                ));
            }
            ShardId {
                index: task - min,
                count,
            }
        } else if let Some(n) = spec.strip_prefix("k8s/") {
            ShardId {
                index: number("JOB_COMPLETION_INDEX")?,
                count: n.parse().map_err(|_| {
                    format!("--shard {spec}: expected k8s/N, N the Job's completions")
                })?,
            }
        } else {
            let (i, n) = spec
                .split_once('/')
                .ok_or_else(|| format!("--shard {spec}: expected I/N, slurm or k8s/N"))?;
            ShardId {
                index: i
                    .parse()
                    .map_err(|_| format!("--shard {spec}: {i:?} is not a shard number"))?,
                count: n
                    .parse()
                    .map_err(|_| format!("--shard {spec}: {n:?} is not a shard count"))?,
            }
        };
        if id.count == 0 || id.index >= id.count {
            return Err(format!(
                "--shard {spec}: shard {} of {} does not exist (shards are 0 to N-1)",
                id.index, id.count
            ));
        }
        if id.count > MAX_SHARDS {
            return Err(format!("--shard {spec}: at most {MAX_SHARDS} shards"));
        }
        Ok(id)
    }
}

/// More would make every reader merge too many catalog parts.
pub const MAX_SHARDS: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn map(cuts: &[&str]) -> Shards {
        Shards::new(&ShardMap {
            count: cuts.len() as u32 + 1,
            cuts: cuts.iter().map(|c| c.to_string()).collect(),
            first_date: "2026-01-01".into(),
        })
    }

    #[test]
    fn a_directory_and_its_files_have_one_owner() {
        let s = map(&["a/b/", "c/"]);
        // `a` is spine (a cut passes through it), so its entries are units of their own.
        assert!(s.is_spine("") && s.is_spine("a") && !s.is_spine("a/b") && !s.is_spine("c"));
        assert_eq!(s.owner("a/a.txt"), 0);
        assert_eq!(s.owner("a/b/x"), 1);
        assert_eq!(s.owner("a/b/y/z"), 1);
        // A file named like a unit directory goes with that directory (its flips).
        assert_eq!(s.owner("a/b"), s.owner("a/b/x"));
        assert_eq!(s.owner("a/c.txt"), 1);
        assert_eq!(s.owner("a/c/d"), 1);
        assert_eq!(s.owner("b"), 1);
        assert_eq!(s.owner("c/x"), 2);
        assert_eq!(s.owner("c"), 2);
        assert_eq!(s.owner("z/z"), 2);
        // Every file of a non-spine directory has the owner of the directory.
        for k in ["c/1", "c/zz", "c/d/e", "c/0/1"] {
            assert_eq!(s.owner(k), 2, "{k}");
        }
        assert!(s.names_spine("a") && !s.names_spine("a/b") && !s.names_spine("a/"));
    }

    #[test]
    fn keys_of_one_directory_never_straddle_a_cut() {
        // Every key of every non-spine directory has one owner, whatever the cuts.
        let keys = [
            "a", "a-1", "a.b", "a/x", "a/y/z", "a/y.z", "a/y/z/w", "b/c", "b/c/d", "b0", "b/",
        ];
        for cuts in [
            vec!["a/"],
            vec!["a/y/"],
            vec!["a/y/", "b/"],
            vec!["b/c/", "b/c/"],
        ] {
            let s = map(&cuts);
            for k in keys {
                let dir = crate::backup::catalog::parent_dir(k);
                if s.is_spine(dir) {
                    continue;
                }
                for other in keys {
                    if crate::backup::catalog::parent_dir(other) == dir {
                        assert_eq!(s.owner(k), s.owner(other), "{k} {other} {cuts:?}");
                    }
                }
            }
        }
    }

    /// Records of `keys`, each with `n` versions, in index order.
    struct Listed(Vec<crate::model::record::VersionRecord>);
    impl SortedRecords for Listed {
        fn peek(&mut self) -> Result<Option<&crate::model::record::VersionRecord>> {
            Ok(self.0.first())
        }
        fn take(&mut self, slot: &mut crate::model::record::VersionRecord) -> Result<bool> {
            if self.0.is_empty() {
                return Ok(false);
            }
            *slot = self.0.remove(0);
            Ok(true)
        }
    }
    fn listed(dirs: &[(&str, usize)]) -> (Listed, u64) {
        let mut recs = Vec::new();
        for (dir, n) in dirs {
            for i in 0..*n {
                recs.push(crate::model::record::VersionRecord {
                    key: format!("{dir}/{i:05}"),
                    ..Default::default()
                });
            }
        }
        let total = recs.len() as u64;
        (Listed(recs), total)
    }

    #[test]
    fn cuts_balance_at_directory_starts() {
        // Four directories of 3,000 versions and 12,000 in all: two shards cut at `c/`.
        let (mut r, total) = listed(&[("a", 3000), ("b", 3000), ("c", 3000), ("d", 3000)]);
        let m = compute(&mut r, total, 2, "d").unwrap();
        assert_eq!(m.cuts, ["c/"]);
        // 3 shards of 4,000: the share passes in `b/` (at 4,000, 1,000 in) -> its start
        // (3,000) is closer than `c/`'s (6,000); then 8,000 passes in `c/` (2,000 in):
        // `c/` at 6,000 and `d/` at 9,000 are both 2,000 and 1,000 away -> `d/`.
        let (mut r, total) = listed(&[("a", 3000), ("b", 3000), ("c", 3000), ("d", 3000)]);
        let m = compute(&mut r, total, 3, "d").unwrap();
        assert_eq!(m.cuts, ["b/", "d/"]);
        // One huge directory: no cut inside it; the shards after it are empty.
        let (mut r, total) = listed(&[("a", 10), ("big", 10000), ("z", 10)]);
        let m = compute(&mut r, total, 4, "d").unwrap();
        assert_eq!(m.cuts.len(), 3);
        let s = Shards::new(&m);
        let owners: std::collections::BTreeSet<u32> = ["big/00001", "big/09999"]
            .iter()
            .map(|k| s.owner(k))
            .collect();
        assert_eq!(owners.len(), 1, "{m:?}");
        // Nested directories: the cut goes at a subdirectory's start, never between a
        // directory's own files.
        let (mut r, total) = listed(&[("x/1", 500), ("x/2", 500), ("x/3", 500), ("x/4", 500)]);
        let m = compute(&mut r, total, 2, "d").unwrap();
        assert_eq!(m.cuts, ["x/3/"]);
    }

    #[test]
    fn shard_specs() {
        let none = |_: &str| None;
        assert_eq!(
            ShardId::parse_with("2/4", none).unwrap(),
            ShardId { index: 2, count: 4 }
        );
        assert!(ShardId::parse_with("4/4", none).is_err());
        assert!(ShardId::parse_with("0/0", none).is_err());
        assert!(ShardId::parse_with("x", none).unwrap_err().contains("I/N"));
        let slurm = |n: &str| match n {
            "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("4".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("3".to_string()),
            _ => None,
        };
        assert_eq!(
            ShardId::parse_with("slurm", slurm).unwrap(),
            ShardId { index: 1, count: 3 }
        );
        assert!(
            ShardId::parse_with("slurm", none)
                .unwrap_err()
                .contains("SLURM_ARRAY_TASK_ID is not set")
        );
        let k8s = |n: &str| (n == "JOB_COMPLETION_INDEX").then(|| "3".to_string());
        assert_eq!(
            ShardId::parse_with("k8s/8", k8s).unwrap(),
            ShardId { index: 3, count: 8 }
        );
    }
}
