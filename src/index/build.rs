//! Inventory date → index file: the first stage of the pipeline.
//!
//! Two ways through, same result:
//! - **Presorted fast path.** AWS data files are in practice each sorted by key and cover
//!   disjoint key ranges. The first row of every file is peeked to order the files; then
//!   parsing threads stream the files in that order through bounded channels to the index
//!   writer, which checks that every record follows the previous one. Nothing is spilled.
//! - **External sort.** If a file turns out unsorted or the files overlap, the fast path
//!   is abandoned (the temporary output discarded) and the rows are re-read into
//!   per-thread sort buffers within `--memory`, spilled as runs and merged.
//!
//! The index is written under a temporary name next to its destination and renamed only
//! after every data file has passed its size and MD5 check: on any error, no index exists.
//! Parsing threads are plain scoped threads rather than rayon tasks because they block on
//! network reads and channel sends; rayon sorts the final in-memory buffers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use rayon::prelude::*;

use crate::index::sort::{self, SortBuffer};
use crate::index::{IndexMeta, IndexStats, IndexWriter};
use crate::inventory::{
    DataFile, DatedManifest, Inventory, InventoryDate, READ_ATTEMPTS, RowParser, RowReader,
    is_mismatch,
};
use crate::model::record::VersionRecord;
use crate::sys::progress::{Counters, Phase, Progress, Reporter};
use crate::sys::stop::Stop;

#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Bytes the sort may hold in memory (arena + offsets of all parsing threads).
    pub memory: u64,
    /// Where spill runs go; default: next to the output file.
    pub tmp_dir: Option<PathBuf>,
    /// Parsing threads.
    pub threads: usize,
    pub progress: Progress,
    /// Temporary files are registered here, to be removed if the process must exit at once.
    pub stop: Stop,
}

impl Default for IndexOptions {
    fn default() -> IndexOptions {
        IndexOptions {
            memory: 1 << 30,
            tmp_dir: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            progress: Progress::quiet(),
            stop: Stop::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IndexSummary {
    pub date: InventoryDate,
    pub stats: IndexStats,
    pub files: usize,
    pub compressed_bytes: u64,
    /// True when the presorted fast path produced the index.
    pub presorted: bool,
    /// Spill runs written by the external sort.
    pub runs: usize,
    /// Exact duplicate rows dropped.
    pub duplicates: u64,
    pub elapsed: Duration,
}

/// Records per batch on the fast path's channels (bytes): small enough that a few batches
/// per thread are nothing next to the budget, big enough that channel traffic is noise.
const BATCH_BYTES: usize = 1 << 20;

/// Builds the index of `date` into `out` (written under a temporary name, renamed at the end).
///
/// From S3, a data file whose bytes do not match the manifest's MD5 is a damaged transfer:
/// the build starts again (rows already sorted may have come from it), at most
/// [`READ_ATTEMPTS`] times.
pub fn build_index(
    inventory: &Inventory,
    date: &InventoryDate,
    out: &Path,
    opts: &IndexOptions,
) -> Result<IndexSummary> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match build_once(inventory, date, out, opts) {
            Err(e) if inventory.is_remote() && is_mismatch(&e) && attempt < READ_ATTEMPTS => {
                tracing::warn!(
                    "{e:#}; building the index again (attempt {attempt} of {READ_ATTEMPTS})"
                );
            }
            result => return result,
        }
    }
}

fn build_once(
    inventory: &Inventory,
    date: &InventoryDate,
    out: &Path,
    opts: &IndexOptions,
) -> Result<IndexSummary> {
    let started = Instant::now();
    let dm = inventory.manifest(date)?;
    let parser = RowParser::new(dm.columns.clone(), &dm.manifest.source_bucket);
    let meta = IndexMeta {
        kind: "inventory".into(),
        source_bucket: dm.manifest.source_bucket.clone(),
        date: date.to_string(),
        creation_timestamp: dm.manifest.creation_timestamp.clone(),
        file_schema: dm.manifest.file_schema.clone(),
        manifest_md5: dm.md5.clone(),
    };
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp_out, _cleanup_out) = opts.stop.create_registered(
        || {
            tempfile::Builder::new()
                .prefix(".s3invbackup-index-")
                // Not tempfile's default 0600: an index is as readable as any file the user
                // writes (the umask still applies).
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .tempfile_in(&out_dir)
                .with_context(|| format!("creating a temporary file in {}", out_dir.display()))
        },
        |t| t.path().to_path_buf(),
    )?;
    let threads = opts.threads.max(1);
    let compressed_bytes: u64 = dm.data_files.iter().map(|f| f.size).sum();
    let counters = Arc::new(Counters::default());
    let mut summary = IndexSummary {
        date: date.clone(),
        stats: IndexStats::default(),
        files: dm.data_files.len(),
        compressed_bytes,
        presorted: false,
        runs: 0,
        duplicates: 0,
        elapsed: Duration::ZERO,
    };

    let report = |label: &str, counters: &Arc<Counters>| {
        let files = dm.data_files.len() as u64;
        Reporter::start(
            Phase::new(format!("{label} {date}"), "files", files, compressed_bytes),
            Arc::clone(counters),
            &opts.progress,
        )
    };

    // Where a columnar data file from S3 is copied to be verified before it is read.
    let scratch = opts.tmp_dir.clone().unwrap_or_else(|| out_dir.clone());
    let input = |counters| Input {
        inventory,
        dm: &dm,
        parser: &parser,
        threads,
        counters,
        memory: opts.memory,
        scratch: &scratch,
    };
    let file_order = presorted_order(inventory, &dm, &parser);
    if let Some(order) = file_order {
        let _reporter = report("index", &counters);
        let mut writer = IndexWriter::create(tmp_out.path(), &meta)?;
        let input = input(&counters);
        let outcome = {
            let mut sink = |r: &VersionRecord| writer.push(r);
            merge_presorted(&input, &order, &mut sink, &mut summary.duplicates)?
        };
        match outcome {
            Presorted::Done => {
                summary.presorted = true;
                summary.stats = writer.finish()?;
            }
            Presorted::NotSorted(why) => {
                summary.duplicates = 0;
                tracing::info!(
                    "inventory rows are not in sorted, disjoint files ({why}); using the external sort"
                );
            }
        }
    }
    if !summary.presorted {
        let counters = Arc::new(Counters::default());
        let _reporter = report("index (sorting)", &counters);
        let input = input(&counters);
        let tmp_base = opts.tmp_dir.clone().unwrap_or_else(|| out_dir.clone());
        sort_externally(&input, tmp_out.path(), &meta, &tmp_base, opts, &mut summary)?;
    }
    tmp_out
        .persist(out)
        .map_err(|e| anyhow!(e.error))
        .with_context(|| format!("renaming the finished index to {}", out.display()))?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// How [`stream_presorted`] ended.
#[derive(Debug)]
pub enum Streamed {
    /// Every record was streamed and every data file verified; exact duplicate rows dropped.
    Done { duplicates: u64 },
    /// The files are not sorted and disjoint (why): what was streamed is a prefix of
    /// nothing useful, and the caller must start over with an index (the external sort).
    NotSorted(String),
}

/// The presorted fast path without an index file: the date's records, in index order,
/// handed to `sink` as the data files are downloaded and parsed (in parallel, ahead of the
/// sink, within `opts.memory`). The sync planner merges them straight against the catalog.
/// A record reaches the sink before its file's MD5 is checked; the result says whether
/// every file passed, so a consumer may act on the records only once this returns `Done`.
pub fn stream_presorted(
    inventory: &Inventory,
    date: &InventoryDate,
    opts: &IndexOptions,
    sink: &mut Sink<'_>,
) -> Result<Streamed> {
    let dm = inventory.manifest(date)?;
    let parser = RowParser::new(dm.columns.clone(), &dm.manifest.source_bucket);
    let Some(order) = presorted_order(inventory, &dm, &parser) else {
        return Ok(Streamed::NotSorted(
            "the data files' first rows do not order them".into(),
        ));
    };
    let counters = Arc::new(Counters::default());
    let files = dm.data_files.len() as u64;
    let compressed_bytes: u64 = dm.data_files.iter().map(|f| f.size).sum();
    let _reporter = Reporter::start(
        Phase::new(format!("read {date}"), "files", files, compressed_bytes),
        Arc::clone(&counters),
        &opts.progress,
    );
    let scratch = opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let input = Input {
        inventory,
        dm: &dm,
        parser: &parser,
        threads: opts.threads.max(1),
        counters: &counters,
        memory: opts.memory,
        scratch: &scratch,
    };
    let mut duplicates = 0;
    Ok(
        match merge_presorted(&input, &order, sink, &mut duplicates)? {
            Presorted::Done => Streamed::Done { duplicates },
            Presorted::NotSorted(why) => Streamed::NotSorted(why),
        },
    )
}

/// The fallback for any row order: memory-bounded buffers, spilled as sorted runs into a
/// temporary directory under `tmp_base`, then merged into `out`.
fn sort_externally(
    input: &Input,
    out: &Path,
    meta: &IndexMeta,
    tmp_base: &Path,
    opts: &IndexOptions,
    summary: &mut IndexSummary,
) -> Result<()> {
    let (tmp_dir, _cleanup_sort) = opts.stop.create_registered(
        || {
            tempfile::Builder::new()
                .prefix(".s3invbackup-sort-")
                .tempdir_in(tmp_base)
                .with_context(|| format!("creating a sort directory in {}", tmp_base.display()))
        },
        |t| t.path().to_path_buf(),
    )?;
    let (runs, mut buffers, spill_duplicates) = fill_and_spill(input, tmp_dir.path())?;
    summary.runs = runs.len();
    buffers.par_iter_mut().for_each(SortBuffer::sort);
    let mut writer = IndexWriter::create(out, meta)?;
    summary.duplicates = spill_duplicates
        + sort::merge(runs, &buffers, tmp_dir.path(), &mut |rec| writer.push(rec))?;
    drop(buffers);
    summary.stats = writer.finish()?;
    Ok(())
}

/// The order in which to stream the files if they look sorted by key and disjoint: files
/// sorted by their first key. None when two files start with the same key or a first row
/// can't be read (the full pass will then report the real error).
///
/// Only the first [`PEEK_BYTES`] of each file are read (a Range GET on S3), by several
/// threads at once: an inventory of a large bucket has thousands of data files.
fn presorted_order(
    inventory: &Inventory,
    dm: &DatedManifest,
    parser: &RowParser,
) -> Option<Vec<usize>> {
    let next = AtomicUsize::new(0);
    let firsts: Mutex<Vec<(Option<VersionRecord>, usize)>> =
        Mutex::new(Vec::with_capacity(dm.data_files.len()));
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..PEEK_THREADS.min(dm.data_files.len()) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = dm.data_files.get(i) else {
                        return;
                    };
                    match peek_first_row(inventory, file, parser) {
                        Some(first) => firsts.lock().expect("lock").push((first, i)),
                        None => failed.store(true, Ordering::Relaxed),
                    }
                }
            });
        }
    });
    if failed.load(Ordering::Relaxed) {
        return None;
    }
    let mut firsts = firsts.into_inner().expect("lock");
    firsts.sort_by(|a, b| match (&a.0, &b.0) {
        (None, None) => a.1.cmp(&b.1),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => x.cmp_order(y).then(a.1.cmp(&b.1)),
    });
    for pair in firsts.windows(2) {
        if let (Some(x), Some(y)) = (&pair[0].0, &pair[1].0)
            && x.key == y.key
        {
            return None;
        }
    }
    Some(firsts.into_iter().map(|(_, i)| i).collect())
}

/// Bytes read from the start of each data file to find its first row.
const PEEK_BYTES: u64 = 64 * 1024;
const PEEK_THREADS: usize = 16;

/// Some(None) for a file without rows; None if the first row can't be had. A peek that
/// fails is tried again: one damaged Range GET must not send a billion rows through the
/// external sort.
fn peek_first_row(
    inventory: &Inventory,
    file: &DataFile,
    parser: &RowParser,
) -> Option<Option<VersionRecord>> {
    let attempts = if inventory.is_remote() {
        READ_ATTEMPTS
    } else {
        1
    };
    (0..attempts).find_map(|_| RowReader::first_key(inventory, file, parser, PEEK_BYTES).ok())
}

/// Bounds how far the parsing threads run ahead of the writer, in batches.
///
/// A thread may parse files beyond the one the writer is consuming (that is where the
/// parallelism comes from), but every batch it queues for a later file costs a token, and
/// the writer hands the token back once it has written the batch: at most `tokens` batches
/// wait in memory. The file the writer is waiting for may always queue a few batches
/// without a token, so the writer can never be starved by later files holding every token.
struct Flow {
    tokens_tx: Sender<()>,
    tokens_rx: Receiver<()>,
    /// The slot (position in file order) the writer is consuming.
    head: AtomicUsize,
}

/// Batches the head file may queue without tokens.
const HEAD_QUEUE: usize = 4;

impl Flow {
    fn new(tokens: usize) -> Flow {
        let (tokens_tx, tokens_rx) = bounded(tokens);
        for _ in 0..tokens {
            tokens_tx.send(()).expect("room for every token");
        }
        Flow {
            tokens_tx,
            tokens_rx,
            head: AtomicUsize::new(0),
        }
    }

    /// Queues `batch` for `slot` once memory allows; false if the writer has gone or the
    /// build is aborting.
    fn send(&self, slot: usize, tx: &Sender<Msg>, batch: SortBuffer, abort: &AtomicBool) -> bool {
        loop {
            if self.tokens_rx.try_recv().is_ok() {
                return tx.send(Msg::Batch(batch, true)).is_ok();
            }
            if self.head.load(Ordering::Acquire) == slot && tx.len() < HEAD_QUEUE {
                return tx.send(Msg::Batch(batch, false)).is_ok();
            }
            if abort.load(Ordering::Relaxed) {
                return false;
            }
            if self
                .tokens_rx
                .recv_timeout(Duration::from_millis(2))
                .is_ok()
            {
                return tx.send(Msg::Batch(batch, true)).is_ok();
            }
        }
    }

    fn give_back(&self) {
        let _ = self.tokens_tx.try_send(());
    }
}

/// What both paths read from.
#[derive(Clone, Copy)]
struct Input<'a> {
    inventory: &'a Inventory,
    dm: &'a DatedManifest,
    parser: &'a RowParser,
    threads: usize,
    counters: &'a Counters,
    /// The memory budget in bytes.
    memory: u64,
    scratch: &'a Path,
}

enum Presorted {
    Done,
    NotSorted(String),
}

enum Msg {
    /// Records, and whether the batch holds a memory token (see [`Flow`]).
    Batch(SortBuffer, bool),
    /// The file ended and verified.
    Done,
}

/// Where the fast path's records go, in index order: the index writer, or the sync
/// planner reading them straight from the inventory.
type Sink<'s> = dyn FnMut(&VersionRecord) -> Result<()> + 's;

/// Streams files in `order` to `writer`, checking the global order as it goes.
fn merge_presorted(
    input: &Input<'_>,
    order: &[usize],
    writer: &mut Sink<'_>,
    duplicates: &mut u64,
) -> Result<Presorted> {
    let Input {
        dm,
        threads,
        counters,
        memory,
        ..
    } = *input;
    let flow = Flow::new(((memory / BATCH_BYTES as u64) as usize).max(4 * threads));
    let abort = AtomicBool::new(false);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let not_sorted: Mutex<Option<String>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let (senders, receivers): (Vec<Sender<Msg>>, Vec<Receiver<Msg>>) =
        order.iter().map(|_| unbounded()).unzip();
    let senders: Vec<Mutex<Option<Sender<Msg>>>> =
        senders.into_iter().map(|s| Mutex::new(Some(s))).collect();

    std::thread::scope(|scope| {
        for _ in 0..threads.min(order.len()) {
            scope.spawn(|| {
                while !abort.load(Ordering::Relaxed) {
                    let slot = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&file_idx) = order.get(slot) else {
                        return;
                    };
                    let tx = senders[slot]
                        .lock()
                        .expect("lock")
                        .take()
                        .expect("each file once");
                    let file = &dm.data_files[file_idx];
                    match stream_sorted_file(input, file, &tx, &abort, &flow, slot) {
                        Ok(Ok(())) => {
                            let _ = tx.send(Msg::Done);
                            counters.files_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(why)) => {
                            not_sorted.lock().expect("lock").get_or_insert(why);
                            abort.store(true, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failure.lock().expect("lock").get_or_insert(e);
                            abort.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let result = write_in_order(&receivers, writer, dm, order, duplicates, &flow);
        if !matches!(result, Ok(None)) {
            abort.store(true, Ordering::Relaxed);
        }
        // Unblock workers waiting on full channels.
        drop(receivers);
        result
    })
    .and_then(|outcome| {
        if let Some(e) = failure.lock().expect("lock").take() {
            return Err(e);
        }
        if let Some(why) = not_sorted.lock().expect("lock").take() {
            return Ok(Presorted::NotSorted(why));
        }
        Ok(match outcome {
            None => Presorted::Done,
            Some(why) => Presorted::NotSorted(why),
        })
    })
}

/// The writer's side of the fast path. Files only need to be sorted by key: the versions of
/// one key (which S3 lists newest first) are gathered and put in index order here.
/// Returns Some(reason) if the key order broke.
fn write_in_order(
    receivers: &[Receiver<Msg>],
    writer: &mut Sink<'_>,
    dm: &DatedManifest,
    order: &[usize],
    duplicates: &mut u64,
    flow: &Flow,
) -> Result<Option<String>> {
    let mut group = KeyGroup::default();
    let mut dedup = sort::Dedup::default();
    for (slot, rx) in receivers.iter().enumerate() {
        flow.head.store(slot, Ordering::Release);
        let mut finished = false;
        for msg in rx.iter() {
            match msg {
                Msg::Batch(batch, token) => {
                    for i in 0..batch.len() {
                        let rec = group.next_slot();
                        batch.record(i, rec);
                        match group.key_order() {
                            std::cmp::Ordering::Less => {
                                return Ok(Some(format!(
                                    "{:?} follows {:?} in {}",
                                    group.last().key,
                                    group.first().key,
                                    dm.data_files[order[slot]].display
                                )));
                            }
                            std::cmp::Ordering::Greater => {
                                group.flush_all_but_last(&mut dedup, writer)?
                            }
                            std::cmp::Ordering::Equal => {}
                        }
                    }
                    if token {
                        flow.give_back();
                    }
                }
                Msg::Done => finished = true,
            }
        }
        if !finished {
            // The worker stopped early: its error or reason is in the shared slots.
            return Ok(Some("a parsing thread stopped".into()));
        }
    }
    group.flush(&mut dedup, writer)?;
    *duplicates = dedup.duplicates;
    Ok(None)
}

/// The versions of the key being gathered, plus the first record of the next key. Records
/// are recycled, so steady state allocates nothing.
#[derive(Default)]
struct KeyGroup {
    records: Vec<VersionRecord>,
    len: usize,
}

impl KeyGroup {
    fn next_slot(&mut self) -> &mut VersionRecord {
        if self.len == self.records.len() {
            self.records.push(VersionRecord::default());
        }
        self.len += 1;
        &mut self.records[self.len - 1]
    }

    fn first(&self) -> &VersionRecord {
        &self.records[0]
    }

    fn last(&self) -> &VersionRecord {
        &self.records[self.len - 1]
    }

    /// How the newest record's key compares with the group's key.
    fn key_order(&self) -> std::cmp::Ordering {
        self.last().key.as_bytes().cmp(self.first().key.as_bytes())
    }

    fn flush(&mut self, dedup: &mut sort::Dedup, writer: &mut Sink<'_>) -> Result<()> {
        let group = &mut self.records[..self.len];
        if group.len() > 1 {
            group.sort_by(|a, b| a.cmp_order(b));
        }
        for rec in group.iter() {
            if dedup.accept(rec)? {
                writer(rec)?;
            }
        }
        self.len = 0;
        Ok(())
    }

    fn flush_all_but_last(&mut self, dedup: &mut sort::Dedup, writer: &mut Sink<'_>) -> Result<()> {
        let last = self.len - 1;
        self.len = last;
        self.flush(dedup, writer)?;
        self.records.swap(0, last);
        self.len = 1;
        Ok(())
    }
}

/// Parses one file into batches. Ok(Err(reason)) if the file is not sorted.
fn stream_sorted_file(
    input: &Input<'_>,
    file: &DataFile,
    tx: &Sender<Msg>,
    abort: &AtomicBool,
    flow: &Flow,
    slot: usize,
) -> Result<std::result::Result<(), String>> {
    let counters = input.counters;
    let mut reader = RowReader::open(
        input.inventory,
        file,
        input.parser,
        &counters.bytes,
        input.scratch,
    )?;
    let mut batch = SortBuffer::with_budget(BATCH_BYTES);
    let mut rec = VersionRecord::default();
    let mut prev = VersionRecord::default();
    let mut has_prev = false;
    while reader.next_record(&mut rec)? {
        if has_prev && prev.key > rec.key {
            return Ok(Err(format!(
                "{}: row {} is out of order",
                file.display,
                reader.row_number()
            )));
        }
        if !batch.push(&rec) {
            if abort.load(Ordering::Relaxed) {
                return Ok(Ok(()));
            }
            counters
                .rows
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let full = std::mem::replace(&mut batch, SortBuffer::with_budget(BATCH_BYTES));
            if !flow.send(slot, tx, full, abort) {
                return Ok(Ok(()));
            }
            assert!(batch.push(&rec), "an empty batch takes any record");
        }
        std::mem::swap(&mut prev, &mut rec);
        has_prev = true;
    }
    counters
        .rows
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    flow.send(slot, tx, batch, abort);
    Ok(Ok(()))
}

/// The external sort's first phase: every thread parses whole files into its own buffer and
/// spills it as a run whenever it fills. Returns the runs and the last, unspilled buffers.
/// Also returns the exact duplicates dropped inside runs.
fn fill_and_spill(
    input: &Input<'_>,
    tmp_dir: &Path,
) -> Result<(Vec<PathBuf>, Vec<SortBuffer>, u64)> {
    let Input {
        inventory,
        dm,
        parser,
        threads,
        counters,
        memory,
        scratch,
    } = *input;
    // Leave room for what is not sort buffer: gzip/CSV buffers per thread, the merge's open
    // runs (two blocks each) and the writer.
    let reserve = (memory / 8).min(48 << 20);
    let per_thread = ((memory - reserve) / threads as u64) as usize;
    let next = AtomicUsize::new(0);
    let seq = AtomicUsize::new(0);
    let runs = Mutex::new(Vec::new());
    let abort = AtomicBool::new(false);
    let buffers = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(dm.data_files.len().max(1)))
            .map(|_| {
                scope.spawn(|| -> Result<SortBuffer> {
                    let mut buffer = SortBuffer::with_budget(per_thread);
                    let mut rec = VersionRecord::default();
                    while !abort.load(Ordering::Relaxed) {
                        let Some(file) = dm.data_files.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            break;
                        };
                        let result = (|| -> Result<()> {
                            let mut reader =
                                RowReader::open(inventory, file, parser, &counters.bytes, scratch)?;
                            let mut rows = 0u64;
                            while reader.next_record(&mut rec)? {
                                if !buffer.push(&rec) {
                                    let run = buffer
                                        .spill(tmp_dir, seq.fetch_add(1, Ordering::Relaxed))?;
                                    runs.lock().expect("lock").push(run);
                                    assert!(buffer.push(&rec), "an empty buffer takes any record");
                                }
                                rows += 1;
                                if rows.is_multiple_of(8192) {
                                    counters.rows.fetch_add(8192, Ordering::Relaxed);
                                }
                            }
                            counters.rows.fetch_add(rows % 8192, Ordering::Relaxed);
                            counters.files_done.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        })();
                        if let Err(e) = result {
                            abort.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(buffer)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parsing thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut runs = runs.into_inner().expect("lock");
    runs.sort();
    let duplicates = runs.iter().map(|r| r.1).sum();
    Ok((runs.into_iter().map(|r| r.0).collect(), buffers, duplicates))
}
