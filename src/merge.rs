//! Streaming merge-join of two indexes by key: the shape every comparison takes (`diff` of
//! two dates, the sync planner's catalog × inventory).
//!
//! Both inputs are in index order, so one pass yields, for each key present in either, the
//! versions A holds and the versions B holds. Memory is bounded by the largest single key
//! group, never by the size of the indexes: record buffers are recycled between groups.

use anyhow::Result;

use crate::index::RecordStream;
use crate::record::VersionRecord;

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
    fn next_record(&mut self) -> Result<Option<&VersionRecord>>;
}

impl SortedRecords for RecordStream<'_> {
    fn next_record(&mut self) -> Result<Option<&VersionRecord>> {
        RecordStream::next_record(self)
    }
}

/// In-memory records (tests, small inputs).
pub struct VecRecords<'a> {
    records: &'a [VersionRecord],
    next: usize,
}

impl<'a> VecRecords<'a> {
    pub fn new(records: &'a [VersionRecord]) -> VecRecords<'a> {
        VecRecords { records, next: 0 }
    }
}

impl SortedRecords for VecRecords<'_> {
    fn next_record(&mut self) -> Result<Option<&VersionRecord>> {
        let r = self.records.get(self.next);
        self.next += 1;
        Ok(r)
    }
}

/// One side of the join with a one-record lookahead.
struct Side<S> {
    source: S,
    head: VersionRecord,
    has_head: bool,
}

impl<S: SortedRecords> Side<S> {
    fn new(mut source: S) -> Result<Side<S>> {
        let mut head = VersionRecord::default();
        let has_head = match source.next_record()? {
            Some(r) => {
                head.copy_from(r);
                true
            }
            None => false,
        };
        Ok(Side {
            source,
            head,
            has_head,
        })
    }

    /// Moves every record of `key` into `out[*len..]`.
    fn take_key(&mut self, key: &str, out: &mut Vec<VersionRecord>, len: &mut usize) -> Result<()> {
        while self.has_head && self.head.key == key {
            if *len == out.len() {
                out.push(VersionRecord::default());
            }
            std::mem::swap(&mut out[*len], &mut self.head);
            *len += 1;
            match self.source.next_record()? {
                Some(r) => self.head.copy_from(r),
                None => self.has_head = false,
            }
        }
        Ok(())
    }
}

pub struct MergeJoin<A, B> {
    a: Side<A>,
    b: Side<B>,
    group: KeyGroup,
}

impl<A: SortedRecords, B: SortedRecords> MergeJoin<A, B> {
    pub fn new(a: A, b: B) -> Result<MergeJoin<A, B>> {
        Ok(MergeJoin {
            a: Side::new(a)?,
            b: Side::new(b)?,
            group: KeyGroup::default(),
        })
    }

    /// The next key present in A or B, with its versions on each side.
    pub fn next_group(&mut self) -> Result<Option<&KeyGroup>> {
        let key = match (self.a.has_head, self.b.has_head) {
            (false, false) => return Ok(None),
            (true, false) => &self.a.head.key,
            (false, true) => &self.b.head.key,
            (true, true) => {
                if self.a.head.key.as_bytes() <= self.b.head.key.as_bytes() {
                    &self.a.head.key
                } else {
                    &self.b.head.key
                }
            }
        };
        let g = &mut self.group;
        g.key.clear();
        g.key.push_str(key);
        g.a_len = 0;
        g.b_len = 0;
        self.a.take_key(&g.key, &mut g.a, &mut g.a_len)?;
        self.b.take_key(&g.key, &mut g.b, &mut g.b_len)?;
        Ok(Some(&self.group))
    }
}
