//! One sorted view of a catalog stored as a base and deltas: a k-way merge of their streams
//! in which, for one version (same key, LastModified and version id), the newest part's
//! record wins and the older ones are skipped.
//!
//! k is small (the compaction policy keeps it at most [`super::store::MAX_DELTAS`] + 1), so
//! the heads are compared by a linear scan rather than a heap; a catalog of one part (just
//! compacted, or from before deltas) streams straight through.

use anyhow::Result;

use crate::index::RecordStream;
use crate::index::merge::SortedRecords;
use crate::model::record::VersionRecord;

pub struct CatalogStream<'a> {
    /// Oldest first: the base, then the deltas in the order they were written.
    parts: Vec<RecordStream<'a>>,
    /// The part whose head is the next record, once settled.
    next: Option<usize>,
    /// Where skipped (overridden) records are copied to.
    skipped: VersionRecord,
}

impl<'a> CatalogStream<'a> {
    pub(super) fn new(parts: Vec<RecordStream<'a>>) -> CatalogStream<'a> {
        CatalogStream {
            parts,
            next: None,
            skipped: VersionRecord::default(),
        }
    }

    /// Finds the part holding the next record, skipping the records it overrides.
    fn settle(&mut self) -> Result<Option<usize>> {
        if let Some(n) = self.next {
            return Ok(Some(n));
        }
        if self.parts.len() == 1 {
            return Ok(self.parts[0].peek()?.map(|_| 0));
        }
        let mut best: Option<usize> = None;
        for i in 0..self.parts.len() {
            if self.parts[i].peek()?.is_none() {
                continue;
            }
            best = match best {
                // `<=`: among equal heads the newest part (the last) wins.
                Some(b) if head(&self.parts[b]).cmp_order(head(&self.parts[i])).is_lt() => Some(b),
                _ => Some(i),
            };
        }
        let Some(best) = best else { return Ok(None) };
        for j in 0..best {
            let older = &self.parts[j];
            if older
                .head()
                .is_some_and(|h| h.cmp_order(head(&self.parts[best])).is_eq())
            {
                RecordStream::take(&mut self.parts[j], &mut self.skipped)?;
            }
        }
        self.next = Some(best);
        Ok(Some(best))
    }

    /// The next record, lent until the next call.
    pub fn next_record(&mut self) -> Result<Option<&VersionRecord>> {
        let Some(n) = self.settle()? else {
            return Ok(None);
        };
        self.next = None;
        self.parts[n].next_record()
    }
}

fn head<'r>(s: &'r RecordStream<'_>) -> &'r VersionRecord {
    s.head().expect("peeked")
}

impl SortedRecords for CatalogStream<'_> {
    fn peek(&mut self) -> Result<Option<&VersionRecord>> {
        Ok(match self.settle()? {
            Some(n) => self.parts[n].head(),
            None => None,
        })
    }
    fn take(&mut self, slot: &mut VersionRecord) -> Result<bool> {
        let Some(n) = self.settle()? else {
            return Ok(false);
        };
        self.next = None;
        RecordStream::take(&mut self.parts[n], slot)
    }
}

impl Iterator for CatalogStream<'_> {
    type Item = Result<VersionRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut rec = VersionRecord::default();
        match SortedRecords::take(self, &mut rec) {
            Ok(true) => Some(Ok(rec)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
