//! Reads index files: whole-file streams for merges, prefix seeks through the directory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};

use anyhow::{Context, Result, bail};

use super::codec::{decode_record_after, get_varint};
use super::{
    FORMAT_VERSION, IndexMeta, IndexStats, MAGIC, OLDEST_FORMAT_VERSION, TRAILER_LEN, TRAILER_MAGIC,
};
use crate::model::record::VersionRecord;

/// A fuzzing build (`cargo fuzz` sets `--cfg fuzzing`) takes every checksum as good, so
/// that mutated inputs reach the decoders the checksums guard.
fn crc_differs(bytes: &[u8], expected: u32) -> bool {
    !cfg!(fuzzing) && crc32fast::hash(bytes) != expected
}

/// Where one block lives and what it starts with.
#[derive(Debug, Clone)]
pub struct BlockEntry {
    pub offset: u64,
    pub compressed_len: u64,
    pub raw_len: u64,
    pub records: u64,
    pub crc: u32,
    pub first_key: String,
}

/// An open index: header, stats and block directory in memory, blocks read on demand.
pub struct IndexReader {
    file: Arc<File>,
    path: Arc<PathBuf>,
    meta: IndexMeta,
    stats: IndexStats,
    blocks: Arc<[BlockEntry]>,
}

/// Blocks a stream's reading thread may decode ahead of the consumer by default: enough to
/// ride out scheduling hiccups on a busy machine (~2 MiB of records per stream).
pub const READAHEAD_BLOCKS: usize = 16;

/// Bounds on what a directory may announce (a block holds ~64 KiB of records; one record
/// is at most a few KiB), so that a damaged directory cannot make the reader allocate
/// without limit.
const MAX_BLOCK_RAW: u64 = 16 << 20;
const MAX_DIR_ENTRY: usize = 2048;

fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).with_context(|| {
        format!(
            "index {}: reading {len} bytes at offset {offset} (truncated file?)",
            path.display()
        )
    })?;
    Ok(buf)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl IndexReader {
    pub fn open(path: &Path) -> Result<IndexReader> {
        let file = File::open(path).with_context(|| format!("opening index {}", path.display()))?;
        let len = file.metadata()?.len();
        let corrupt = |what: &str| anyhow::anyhow!("index {}: {what}", path.display());
        if len < (MAGIC.len() + 12 + TRAILER_LEN) as u64 {
            return Err(corrupt("too short to be an index (truncated?)"));
        }
        let head = read_at(&file, path, 0, 16)?;
        if &head[..8] != MAGIC {
            return Err(corrupt("not an s3invbackup index (bad magic)"));
        }
        let version = u32_at(&head, 8);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            bail!(
                "index {}: format version {version}, this program reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}; rebuild it with `s3invbackup index` (a catalog: with the newer program that wrote it)",
                path.display()
            );
        }
        let meta_len = u32_at(&head, 12) as usize;
        // Lengths read from the file are checked against its size before anything is
        // allocated for them: a damaged length must be an error, not a 4 GiB allocation.
        if 16 + meta_len as u64 + 4 + TRAILER_LEN as u64 > len {
            return Err(corrupt("header length exceeds the file (corrupted)"));
        }
        let meta_raw = read_at(&file, path, 16, meta_len + 4)?;
        if crc_differs(&meta_raw[..meta_len], u32_at(&meta_raw, meta_len)) {
            return Err(corrupt("header checksum mismatch (corrupted)"));
        }
        let meta: IndexMeta = serde_json::from_slice(&meta_raw[..meta_len])
            .map_err(|e| corrupt(&format!("bad header: {e}")))?;

        let trailer = read_at(&file, path, len - TRAILER_LEN as u64, TRAILER_LEN)?;
        if &trailer[24..32] != TRAILER_MAGIC {
            return Err(corrupt("missing trailer (truncated or unfinished index)"));
        }
        let dir_offset = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
        let dir_len = u32_at(&trailer, 8) as usize;
        let dir_crc = u32_at(&trailer, 12);
        let stats_len = u32_at(&trailer, 16) as usize;
        let stats_crc = u32_at(&trailer, 20);
        if dir_offset.checked_add((dir_len + stats_len + TRAILER_LEN) as u64) != Some(len) {
            return Err(corrupt(
                "trailer does not match the file length (corrupted)",
            ));
        }
        let tail = read_at(&file, path, dir_offset, dir_len + stats_len)?;
        let (dir, stats_raw) = tail.split_at(dir_len);
        if crc_differs(dir, dir_crc) || crc_differs(stats_raw, stats_crc) {
            return Err(corrupt("block directory checksum mismatch (corrupted)"));
        }
        let stats: IndexStats =
            serde_json::from_slice(stats_raw).map_err(|e| corrupt(&format!("bad stats: {e}")))?;
        // An entry is at most ~50 bytes of numbers and a key of at most 1,024 bytes.
        let dir_limit = (stats.blocks.min(len) as usize).saturating_mul(MAX_DIR_ENTRY);
        let dir = zstd::bulk::decompress(dir, dir_limit)
            .map_err(|e| corrupt(&format!("bad directory: {e}")))?;
        let blocks = parse_directory(&dir).map_err(|e| corrupt(&format!("bad directory: {e}")))?;
        if blocks.len() as u64 != stats.blocks {
            return Err(corrupt("block count disagrees with the stats (corrupted)"));
        }
        for (i, b) in blocks.iter().enumerate() {
            if b.offset
                .checked_add(b.compressed_len)
                .is_none_or(|end| end > dir_offset)
                || b.raw_len > MAX_BLOCK_RAW
            {
                return Err(corrupt(&format!(
                    "block {i} lies outside the data or is too big (corrupted)"
                )));
            }
        }
        Ok(IndexReader {
            file: Arc::new(file),
            path: Arc::new(path.to_path_buf()),
            meta,
            stats,
            blocks: blocks.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }
    pub fn stats(&self) -> &IndexStats {
        &self.stats
    }
    pub fn blocks(&self) -> &[BlockEntry] {
        &self.blocks
    }

    /// Every record, in order.
    pub fn stream(&self) -> RecordStream<'_> {
        RecordStream::new(self, 0, None, READAHEAD_BLOCKS)
    }

    /// Every record, in order, decoding at most `blocks` blocks ahead: for merges that open
    /// many streams at once within a memory budget.
    pub fn stream_with_readahead(&self, blocks: usize) -> RecordStream<'_> {
        RecordStream::new(self, 0, None, blocks)
    }

    /// The records whose key starts with `prefix`, from the block that holds key `from`
    /// on (a few before `from` may come first: the caller skips them). For walks that jump
    /// over parts of the key space.
    pub fn stream_from(&self, from: &str, prefix: &str) -> RecordStream<'_> {
        let first_ge = self.blocks.partition_point(|b| b.first_key.as_str() < from);
        RecordStream::new(
            self,
            first_ge.saturating_sub(1),
            (!prefix.is_empty()).then(|| prefix.to_string()),
            READAHEAD_BLOCKS,
        )
    }

    /// The records whose key starts with `prefix`, found by a binary search of the block
    /// directory: only the blocks that can hold such keys are read.
    pub fn stream_prefix(&self, prefix: &str) -> RecordStream<'_> {
        if prefix.is_empty() {
            return self.stream();
        }
        // The first block whose first key is >= prefix; the block before it may also hold
        // matching keys after its first one.
        let first_ge = self
            .blocks
            .partition_point(|b| b.first_key.as_str() < prefix);
        RecordStream::new(
            self,
            first_ge.saturating_sub(1),
            Some(prefix.to_string()),
            READAHEAD_BLOCKS,
        )
    }
}

/// Reads, checks and decompresses block `idx` into `raw`.
fn load_block(
    file: &File,
    path: &Path,
    blocks: &[BlockEntry],
    idx: usize,
    compressed: &mut Vec<u8>,
    raw: &mut Vec<u8>,
    dec: &mut zstd::bulk::Decompressor<'_>,
) -> Result<()> {
    let b = &blocks[idx];
    compressed.resize(b.compressed_len as usize, 0);
    file.read_exact_at(compressed, b.offset).with_context(|| {
        format!(
            "index {}: reading block {idx} at offset {}",
            path.display(),
            b.offset
        )
    })?;
    if crc_differs(compressed, b.crc) {
        bail!(
            "index {}: block {idx} at offset {} fails its checksum (corrupted); rebuild the index",
            path.display(),
            b.offset
        );
    }
    raw.clear();
    raw.reserve(b.raw_len as usize);
    let n = dec.decompress_to_buffer(compressed, raw).with_context(|| {
        format!(
            "index {}: block {idx} at offset {} does not decompress",
            path.display(),
            b.offset
        )
    })?;
    if n as u64 != b.raw_len {
        bail!(
            "index {}: block {idx} has {n} bytes, the directory says {}",
            path.display(),
            b.raw_len
        );
    }
    Ok(())
}

/// What the reading thread sends.
enum Msg {
    /// The decoded records of a block.
    Records(Batch),
    /// Everything was sent (a stream that ends without this saw its thread die).
    End,
}

/// The decoded records of one block (the first `len` are live; the rest are buffers kept
/// for reuse).
#[derive(Default)]
struct Batch {
    records: Vec<VersionRecord>,
    len: usize,
}

/// Reads, checks, decompresses and decodes blocks `first..` on a thread of its own, at most
/// `readahead` blocks ahead of the consumer, so that all of it overlaps with the consumer's
/// work (for a diff, the merge-join). With a prefix, only matching records are sent, and
/// reading stops after the last. Stops early when the stream is dropped.
fn spawn_reader(
    index: &IndexReader,
    first: usize,
    prefix: Option<String>,
    readahead: usize,
) -> (Receiver<Result<Msg>>, Sender<Batch>) {
    let (tx, rx) = bounded::<Result<Msg>>(readahead.max(1));
    let (recycle_tx, recycle_rx) = bounded::<Batch>(readahead.max(1) + 2);
    let (file, path, blocks) = (
        Arc::clone(&index.file),
        Arc::clone(&index.path),
        Arc::clone(&index.blocks),
    );
    let spawned = std::thread::Builder::new()
        .name("index-reader".into())
        .spawn(move || {
            let result = (|| -> Result<()> {
                let mut dec = zstd::bulk::Decompressor::new()?;
                let (mut compressed, mut raw) = (Vec::new(), Vec::new());
                for idx in first..blocks.len() {
                    load_block(
                        &file,
                        &path,
                        &blocks,
                        idx,
                        &mut compressed,
                        &mut raw,
                        &mut dec,
                    )?;
                    let mut batch = recycle_rx.try_recv().unwrap_or_default();
                    decode_block(&raw, blocks[idx].records, &mut batch).map_err(|e| {
                        anyhow::anyhow!("index {}: block {idx}: {e} (corrupted)", path.display())
                    })?;
                    let finished = prefix
                        .as_deref()
                        .is_some_and(|p| keep_prefix(&mut batch, p));
                    if tx.send(Ok(Msg::Records(batch))).is_err() {
                        return Ok(());
                    }
                    if finished {
                        break;
                    }
                }
                let _ = tx.send(Ok(Msg::End));
                Ok(())
            })();
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        });
    if let Err(e) = spawned {
        // No thread: the stream reports it on first use (its channel is then closed).
        tracing::error!(
            "index {}: cannot start a reading thread: {e}",
            index.path.display()
        );
    }
    (rx, recycle_tx)
}

fn decode_block(raw: &[u8], count: u64, batch: &mut Batch) -> Result<(), super::codec::CodecError> {
    let n = usize::try_from(count).map_err(|_| super::codec::CodecError("bad record count"))?;
    if batch.records.len() < n {
        batch.records.resize_with(n, VersionRecord::default);
    }
    let mut pos = 0;
    for i in 0..n {
        let (before, after) = batch.records.split_at_mut(i);
        let prev_key = before.last().map_or("", |r| r.key.as_str());
        decode_record_after(raw, &mut pos, prev_key, &mut after[0])?;
    }
    if pos != raw.len() {
        return Err(super::codec::CodecError("block has trailing bytes"));
    }
    batch.len = n;
    Ok(())
}

/// Keeps the batch's records that start with `prefix` (a contiguous run, since records are
/// sorted), moved to the front. True when the run ended inside this batch.
fn keep_prefix(batch: &mut Batch, prefix: &str) -> bool {
    let live = &batch.records[..batch.len];
    let start = live.partition_point(|r| r.key.as_str() < prefix && !r.key.starts_with(prefix));
    let end = start
        + live[start..]
            .iter()
            .take_while(|r| r.key.starts_with(prefix))
            .count();
    let ended = end < batch.len;
    batch.records[..end].rotate_left(start);
    batch.len = end - start;
    ended
}

fn parse_directory(dir: &[u8]) -> Result<Vec<BlockEntry>> {
    let mut pos = 0;
    let mut blocks = Vec::new();
    while pos < dir.len() {
        let offset = get_varint(dir, &mut pos)?;
        let compressed_len = get_varint(dir, &mut pos)?;
        let raw_len = get_varint(dir, &mut pos)?;
        let records = get_varint(dir, &mut pos)?;
        let crc_bytes = dir.get(pos..pos + 4).context("truncated")?;
        let crc = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
        pos += 4;
        let key_len = get_varint(dir, &mut pos)? as usize;
        let key = pos
            .checked_add(key_len)
            .and_then(|end| dir.get(pos..end))
            .context("truncated")?;
        pos += key_len;
        blocks.push(BlockEntry {
            offset,
            compressed_len,
            raw_len,
            records,
            crc,
            first_key: String::from_utf8(key.to_vec()).context("first key not UTF-8")?,
        });
    }
    Ok(blocks)
}

/// A forward cursor over an index's records, decoded ahead on a thread of its own.
/// `next_record` lends a record that stays valid until the next call; `take` moves it out.
/// Either way, streaming a billion records allocates nothing per record.
pub struct RecordStream<'a> {
    index: &'a IndexReader,
    blocks: Receiver<Result<Msg>>,
    recycle: Sender<Batch>,
    current: Batch,
    pos: usize,
    done: bool,
}

impl<'a> RecordStream<'a> {
    fn new(
        index: &'a IndexReader,
        first_block: usize,
        prefix: Option<String>,
        readahead: usize,
    ) -> RecordStream<'a> {
        let (blocks, recycle) = spawn_reader(index, first_block, prefix, readahead);
        RecordStream {
            index,
            blocks,
            recycle,
            current: Batch::default(),
            pos: 0,
            done: false,
        }
    }

    /// Makes `current[pos]` the next record; false at the end.
    fn fill(&mut self) -> Result<bool> {
        while self.pos >= self.current.len {
            if self.done {
                return Ok(false);
            }
            match self.blocks.recv() {
                Ok(Ok(Msg::Records(batch))) => {
                    let used = std::mem::replace(&mut self.current, batch);
                    let _ = self.recycle.try_send(used);
                    self.pos = 0;
                }
                Ok(Ok(Msg::End)) => self.done = true,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    bail!(
                        "index {}: the reading thread stopped",
                        self.index.path.display()
                    );
                }
            }
        }
        Ok(true)
    }

    pub fn next_record(&mut self) -> Result<Option<&VersionRecord>> {
        if !self.fill()? {
            return Ok(None);
        }
        self.pos += 1;
        Ok(Some(&self.current.records[self.pos - 1]))
    }

    /// The record [`RecordStream::peek`] last returned, still unconsumed (None at the end, or
    /// before the first peek): lets a merge compare the heads of several streams at once.
    pub fn head(&self) -> Option<&VersionRecord> {
        (self.pos < self.current.len).then(|| &self.current.records[self.pos])
    }

    /// The next record, not consumed.
    pub fn peek(&mut self) -> Result<Option<&VersionRecord>> {
        if !self.fill()? {
            return Ok(None);
        }
        Ok(Some(&self.current.records[self.pos]))
    }

    /// Copies the next record into `slot` (reusing its buffers) and consumes it. A copy
    /// rather than a swap: the stream's buffers then stay in place and in cache, which
    /// measured faster than moving heap buffers around.
    pub fn take(&mut self, slot: &mut VersionRecord) -> Result<bool> {
        if !self.fill()? {
            return Ok(false);
        }
        slot.copy_from(&self.current.records[self.pos]);
        self.pos += 1;
        Ok(true)
    }
}

impl Iterator for RecordStream<'_> {
    type Item = Result<VersionRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut rec = VersionRecord::default();
        match self.take(&mut rec) {
            Ok(true) => Some(Ok(rec)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
