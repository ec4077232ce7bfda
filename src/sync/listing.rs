//! What the planner merges the catalog with: one date's records in index order, either from
//! an index file or streamed straight from the inventory's data files.
//!
//! The streamed listing is the nightly path: AWS writes each data file sorted and the files
//! disjoint, so the records can go from the parsing threads to the planner through a small
//! bounded queue, and no index of the date (~50 GB at 10^9 rows) is ever written. Any other
//! order is found out while streaming ([`Streamed::NotSorted`]); the planner's walk is then
//! abandoned (it wrote nothing the run uses: `plan.json` comes last) and the date is
//! indexed by the external sort and planned again from the index.

use anyhow::{Result, anyhow};
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::index::IndexReader;
use crate::index::build::{IndexOptions, Streamed, stream_presorted};
use crate::index::merge::SortedRecords;
use crate::inventory::{Inventory, InventoryDate};
use crate::model::record::VersionRecord;

/// A date's records in index order, as many passes as the planner needs (a second walk
/// when it finds file/directory conflicts).
pub trait Listing {
    /// Runs `walk` over one pass of the records.
    fn walk<R>(&self, walk: impl FnOnce(&mut dyn SortedRecords) -> Result<R>) -> Result<R>;
    /// The inventory's fileSchema (does it list version ids?).
    fn file_schema(&self) -> &str;
    /// Keys, if known ahead (for the progress display); 0 if not.
    fn keys_hint(&self) -> u64;
}

impl Listing for IndexReader {
    fn walk<R>(&self, walk: impl FnOnce(&mut dyn SortedRecords) -> Result<R>) -> Result<R> {
        walk(&mut self.stream())
    }
    fn file_schema(&self) -> &str {
        &self.meta().file_schema
    }
    fn keys_hint(&self) -> u64 {
        self.stats().keys
    }
}

/// The date's data files, parsed as they stream in, without an index.
pub struct StreamedListing<'a> {
    pub inventory: &'a Inventory,
    pub date: &'a InventoryDate,
    pub opts: IndexOptions,
    pub file_schema: String,
}

/// The error a streamed walk fails with when the files turn out not to be presorted.
#[derive(Debug, thiserror::Error)]
#[error("inventory rows are not in sorted, disjoint files ({0})")]
pub struct NotPresorted(pub String);

/// Records per message between the parsing side and the planner.
const BATCH: usize = 4096;
/// Messages queued: with [`BATCH`], a few MB of records ahead of the planner, on top of
/// the parsing threads' own read-ahead (bounded by `opts.memory`).
const QUEUE: usize = 8;

enum Msg {
    Batch(Vec<VersionRecord>, usize),
    End(Result<Streamed>),
}

impl Listing for StreamedListing<'_> {
    fn walk<R>(&self, walk: impl FnOnce(&mut dyn SortedRecords) -> Result<R>) -> Result<R> {
        let (tx, rx) = bounded::<Msg>(QUEUE);
        let (recycle_tx, recycle_rx) = bounded::<Vec<VersionRecord>>(QUEUE + 2);
        std::thread::scope(|scope| {
            let producer = scope.spawn(move || {
                let mut batch: Vec<VersionRecord> = Vec::new();
                let mut len = 0;
                let mut sink = |rec: &VersionRecord| -> Result<()> {
                    if batch.is_empty() {
                        batch = recycle_rx.try_recv().unwrap_or_default();
                    }
                    if len == batch.len() {
                        batch.push(VersionRecord::default());
                    }
                    batch[len].copy_from(rec);
                    len += 1;
                    if len == BATCH {
                        let full = std::mem::take(&mut batch);
                        if tx.send(Msg::Batch(full, len)).is_err() {
                            return Err(anyhow!("the planner stopped reading"));
                        }
                        len = 0;
                    }
                    Ok(())
                };
                let result = stream_presorted(self.inventory, self.date, &self.opts, &mut sink);
                if len > 0 && result.is_ok() {
                    let _ = tx.send(Msg::Batch(std::mem::take(&mut batch), len));
                }
                let _ = tx.send(Msg::End(result));
            });
            let mut records = Received {
                rx,
                recycle: recycle_tx,
                current: Vec::new(),
                len: 0,
                pos: 0,
                ended: false,
            };
            let result = walk(&mut records);
            drop(records);
            producer
                .join()
                .map_err(|_| anyhow!("the inventory reading thread panicked"))?;
            result
        })
    }
    fn file_schema(&self) -> &str {
        &self.file_schema
    }
    fn keys_hint(&self) -> u64 {
        0
    }
}

/// The planner's end of the queue.
struct Received {
    rx: Receiver<Msg>,
    recycle: Sender<Vec<VersionRecord>>,
    current: Vec<VersionRecord>,
    len: usize,
    pos: usize,
    ended: bool,
}

impl Received {
    /// Makes `current[pos]` the next record; false at the end (every file verified).
    fn fill(&mut self) -> Result<bool> {
        while self.pos >= self.len {
            if self.ended {
                return Ok(false);
            }
            match self.rx.recv() {
                Ok(Msg::Batch(batch, len)) => {
                    crate::sys::failpoint::hit("plan-batch");
                    let used = std::mem::replace(&mut self.current, batch);
                    let _ = self.recycle.try_send(used);
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Msg::End(result)) => {
                    self.ended = true;
                    match result? {
                        Streamed::Done { duplicates } => {
                            if duplicates > 0 {
                                tracing::info!("{duplicates} duplicate inventory rows dropped");
                            }
                        }
                        Streamed::NotSorted(why) => return Err(NotPresorted(why).into()),
                    }
                }
                Err(_) => {
                    self.ended = true;
                    return Err(anyhow!("the inventory reading thread stopped"));
                }
            }
        }
        Ok(true)
    }
}

impl SortedRecords for Received {
    fn peek(&mut self) -> Result<Option<&VersionRecord>> {
        Ok(if self.fill()? {
            Some(&self.current[self.pos])
        } else {
            None
        })
    }
    fn take(&mut self, slot: &mut VersionRecord) -> Result<bool> {
        if !self.fill()? {
            return Ok(false);
        }
        slot.copy_from(&self.current[self.pos]);
        self.pos += 1;
        Ok(true)
    }
}
