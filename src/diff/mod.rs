//! Diff of two indexes: the merge-join, the classification, the filters, and the totals a
//! change report needs. Output formats live with the `diff` command; this is the engine.
//! [`changes`] says what one key's versions did between the two sides (added, now
//! noncurrent, removed, ...), the one classification the change report and the sync planner
//! agree on.

pub mod changes;
pub mod row;

use std::collections::HashMap;

use anyhow::Result;
use regex::Regex;

use crate::diff::changes::{Change, ChangeKind, classify};
use crate::index::IndexReader;
use crate::index::merge::{MergeJoin, SortedRecords};

#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Only keys starting with this (a seek in both indexes, not a scan).
    pub prefix: String,
    /// Only keys this matches (searched anywhere in the key, as `grep` does).
    pub path_filter: Option<Regex>,
    /// Aggregate bytes changed per key prefix of this many `/`-separated components
    /// (0: no aggregation).
    pub prefix_depth: usize,
}

/// Counts and bytes per change kind, and what a sync would download.
#[derive(Debug, Clone, Default)]
pub struct DiffTotals {
    pub count: HashMap<ChangeKind, u64>,
    pub bytes: HashMap<ChangeKind, u64>,
    /// Sizes of the new content versions: what a sync would fetch.
    pub download_bytes: u64,
    pub download_versions: u64,
    /// Keys seen on either side (after filters).
    pub keys: u64,
    /// Records read from A and from B.
    pub records_a: u64,
    pub records_b: u64,
    /// Changes and bytes per key prefix (at `prefix_depth`).
    pub by_prefix: HashMap<String, (u64, u64)>,
}

impl DiffTotals {
    pub fn changes(&self) -> u64 {
        self.count.values().sum()
    }

    fn add(&mut self, c: &Change<'_>, depth: usize) {
        *self.count.entry(c.kind).or_default() += 1;
        *self.bytes.entry(c.kind).or_default() += c.version.size;
        if c.kind == ChangeKind::Added {
            self.download_bytes += c.version.size;
            self.download_versions += 1;
        }
        if depth > 0 {
            let p = key_prefix(&c.version.key, depth);
            match self.by_prefix.get_mut(p) {
                Some(e) => {
                    e.0 += 1;
                    e.1 += c.version.size;
                }
                None => {
                    self.by_prefix.insert(p.to_string(), (1, c.version.size));
                }
            }
        }
    }
}

/// The first `depth` components of a key, with their trailing `/`; a shorter key whole.
pub fn key_prefix(key: &str, depth: usize) -> &str {
    let mut end = 0;
    for _ in 0..depth {
        match key[end..].find('/') {
            Some(i) => end += i + 1,
            None => return key,
        }
    }
    &key[..end]
}

/// Runs the diff of `a` (older) and `b` (newer), calling `emit` for every change in key
/// order. `emit` may stop the diff early by returning an error (e.g. a closed pipe).
pub fn diff(
    a: &IndexReader,
    b: &IndexReader,
    opts: &DiffOptions,
    emit: impl FnMut(&Change<'_>) -> Result<()>,
) -> Result<DiffTotals> {
    diff_streams(
        a.stream_prefix(&opts.prefix),
        b.stream_prefix(&opts.prefix),
        opts,
        emit,
    )
}

/// [`diff`] of any two sorted sources (a backup's catalog, an index), each already limited
/// to `opts.prefix`.
pub fn diff_streams(
    a: impl SortedRecords,
    b: impl SortedRecords,
    opts: &DiffOptions,
    mut emit: impl FnMut(&Change<'_>) -> Result<()>,
) -> Result<DiffTotals> {
    let mut totals = DiffTotals::default();
    let mut join = MergeJoin::new(a, b)?;
    let mut failure = None;
    while let Some(group) = join.next_group()? {
        totals.records_a += group.a().len() as u64;
        totals.records_b += group.b().len() as u64;
        if let Some(re) = &opts.path_filter
            && !re.is_match(&group.key)
        {
            continue;
        }
        totals.keys += 1;
        classify(group, |c| {
            if failure.is_none() {
                totals.add(&c, opts.prefix_depth);
                if let Err(e) = emit(&c) {
                    failure = Some(e);
                }
            }
        });
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::key_prefix;

    #[test]
    fn prefixes() {
        assert_eq!(key_prefix("zarr/abc/0/1", 1), "zarr/");
        assert_eq!(key_prefix("zarr/abc/0/1", 2), "zarr/abc/");
        assert_eq!(key_prefix("top.txt", 2), "top.txt");
        assert_eq!(key_prefix("a/b", 5), "a/b");
    }
}
