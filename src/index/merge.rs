//! Streaming merge-join of two indexes by key: the shape every comparison takes (`diff` of
//! two dates, the sync planner's catalog × inventory).
//!
//! Both inputs are in index order, so one pass yields, for each key present in either, the
//! versions A holds and the versions B holds. Memory is bounded by the largest single key
//! group, never by the size of the indexes: record buffers are recycled between groups.

use anyhow::Result;

use crate::index::RecordStream;
use crate::model::record::VersionRecord;

/// One key's versions on each side, in index order (oldest first). Either side may be empty.
#[derive(Debug, Default)]
pub struct KeyGroup {
    pub key: String,
    a: Vec<VersionRecord>,
    a_len: usize,
    b: Vec<VersionRecord>,
    b_len: usize,
}

impl KeyGroup {
    pub fn a(&self) -> &[VersionRecord] {
        &self.a[..self.a_len]
    }
    pub fn b(&self) -> &[VersionRecord] {
        &self.b[..self.b_len]
    }
}

/// A sorted source of records: an index stream, or anything else in index order.
pub trait SortedRecords {
    /// The next record, not consumed.
    fn peek(&mut self) -> Result<Option<&VersionRecord>>;
    /// Moves the next record into `slot` (whose old contents the source may reuse).
    fn take(&mut self, slot: &mut VersionRecord) -> Result<bool>;
}

impl<T: SortedRecords + ?Sized> SortedRecords for &mut T {
    fn peek(&mut self) -> Result<Option<&VersionRecord>> {
        (**self).peek()
    }
    fn take(&mut self, slot: &mut VersionRecord) -> Result<bool> {
        (**self).take(slot)
    }
}

impl<T: SortedRecords + ?Sized> SortedRecords for Box<T> {
    fn peek(&mut self) -> Result<Option<&VersionRecord>> {
        (**self).peek()
    }
    fn take(&mut self, slot: &mut VersionRecord) -> Result<bool> {
        (**self).take(slot)
    }
}

impl SortedRecords for RecordStream<'_> {
    fn peek(&mut self) -> Result<Option<&VersionRecord>> {
        RecordStream::peek(self)
    }
    fn take(&mut self, slot: &mut VersionRecord) -> Result<bool> {
        RecordStream::take(self, slot)
    }
}

/// The records of `inner` that `keep` accepts, still in order: a path filter on the
/// planner's inventory side, a backup's catalog without the versions gone from the bucket.
pub struct Kept<S, F> {
    inner: S,
    keep: F,
    skipped: VersionRecord,
}

impl<S, F: FnMut(&VersionRecord) -> bool> Kept<S, F> {
    pub fn new(inner: S, keep: F) -> Kept<S, F> {
        Kept {
            inner,
            keep,
            skipped: VersionRecord::default(),
        }
    }
}

impl<S: SortedRecords, F: FnMut(&VersionRecord) -> bool> SortedRecords for Kept<S, F> {
    fn peek(&mut self) -> Result<Option<&VersionRecord>> {
        while self.inner.peek()?.is_some_and(|r| !(self.keep)(r)) {
            self.inner.take(&mut self.skipped)?;
        }
        self.inner.peek()
    }
    fn take(&mut self, slot: &mut VersionRecord) -> Result<bool> {
        if self.peek()?.is_none() {
            return Ok(false);
        }
        self.inner.take(slot)
    }
}

/// Moves every record of `key` from `source` into `out[*len..]`.
fn take_key(
    source: &mut impl SortedRecords,
    key: &str,
    out: &mut Vec<VersionRecord>,
    len: &mut usize,
) -> Result<()> {
    while source.peek()?.is_some_and(|r| r.key == key) {
        if *len == out.len() {
            out.push(VersionRecord::default());
        }
        source.take(&mut out[*len])?;
        *len += 1;
    }
    Ok(())
}

pub struct MergeJoin<A, B> {
    a: A,
    b: B,
    group: KeyGroup,
}

impl<A: SortedRecords, B: SortedRecords> MergeJoin<A, B> {
    pub fn new(a: A, b: B) -> Result<MergeJoin<A, B>> {
        Ok(MergeJoin {
            a,
            b,
            group: KeyGroup::default(),
        })
    }

    /// The next key present in A or B, with its versions on each side.
    pub fn next_group(&mut self) -> Result<Option<&KeyGroup>> {
        let g = &mut self.group;
        let key = match (self.a.peek()?, self.b.peek()?) {
            (None, None) => return Ok(None),
            (Some(a), None) => &a.key,
            (None, Some(b)) => &b.key,
            (Some(a), Some(b)) => {
                if a.key.as_bytes() <= b.key.as_bytes() {
                    &a.key
                } else {
                    &b.key
                }
            }
        };
        g.key.clear();
        g.key.push_str(key);
        g.a_len = 0;
        g.b_len = 0;
        take_key(&mut self.a, &g.key, &mut g.a, &mut g.a_len)?;
        take_key(&mut self.b, &g.key, &mut g.b, &mut g.b_len)?;
        Ok(Some(&self.group))
    }
}
