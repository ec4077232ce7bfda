//! Writes an index file from records given in index order.
//!
//! The caller's thread encodes records into blocks; a second thread compresses and writes
//! them. Compression is a fifth of the CPU an index build spends, and during the final merge
//! of an external sort the caller's thread is otherwise the only busy one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail};
use crossbeam_channel::{Receiver, Sender, bounded};

use super::codec::{encode_record, put_varint};
use super::{BLOCK_TARGET, FORMAT_VERSION, IndexMeta, IndexStats, MAGIC, TRAILER_MAGIC};
use crate::model::record::VersionRecord;

/// zstd level 3 compresses blocks at several hundred MB/s per core; higher levels cost far
/// more time than the few percent they save on random version ids and ETags.
const ZSTD_LEVEL: i32 = 3;

/// Blocks in flight between the encoding and the compressing thread.
const BLOCKS_IN_FLIGHT: usize = 4;

struct DirectoryEntry {
    offset: u64,
    compressed_len: u64,
    raw_len: u64,
    records: u64,
    crc: u32,
    first_key: String,
}

/// A block on its way to the compressing thread.
struct RawBlock {
    bytes: Vec<u8>,
    records: u64,
    first_key: String,
}

/// What the compressing thread hands back at the end.
struct Written {
    out: BufWriter<File>,
    offset: u64,
    directory: Vec<DirectoryEntry>,
}

/// Streams records into `path`. The file is complete only after [`IndexWriter::finish`];
/// callers write to a temporary name and rename, so a failed build leaves nothing behind.
pub struct IndexWriter {
    path: PathBuf,
    block: Vec<u8>,
    block_records: u64,
    block_first_key: String,
    prev: VersionRecord,
    has_prev: bool,
    stats: IndexStats,
    blocks: Option<Sender<RawBlock>>,
    /// Emptied block buffers coming back for reuse.
    recycled: Receiver<Vec<u8>>,
    sink: Option<JoinHandle<Result<Written>>>,
    sync: bool,
}

impl IndexWriter {
    pub fn create(path: &Path, meta: &IndexMeta) -> Result<IndexWriter> {
        IndexWriter::create_with_level(path, meta, ZSTD_LEVEL)
    }

    /// `create` with another zstd level: a backup's catalog is rewritten by every run, where
    /// level 1's speed matters more than a few percent of size.
    pub fn create_with_level(path: &Path, meta: &IndexMeta, level: i32) -> Result<IndexWriter> {
        let file =
            File::create(path).with_context(|| format!("creating index {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let meta_json = serde_json::to_vec(meta)?;
        let mut header = Vec::with_capacity(meta_json.len() + 20);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
        header.extend_from_slice(&meta_json);
        header.extend_from_slice(&crc32fast::hash(&meta_json).to_le_bytes());
        out.write_all(&header)
            .with_context(|| format!("writing index {}", path.display()))?;
        let (blocks_tx, blocks_rx) = bounded::<RawBlock>(BLOCKS_IN_FLIGHT);
        let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(BLOCKS_IN_FLIGHT + 1);
        let sink_path = path.to_path_buf();
        let offset = header.len() as u64;
        let sink = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || {
                compress_and_write(blocks_rx, recycle_tx, out, offset, &sink_path, level)
            })
            .context("starting the index writer thread")?;
        Ok(IndexWriter {
            path: path.to_path_buf(),
            block: Vec::with_capacity(BLOCK_TARGET + 4096),
            block_records: 0,
            block_first_key: String::new(),
            prev: VersionRecord::default(),
            has_prev: false,
            stats: IndexStats::default(),
            blocks: Some(blocks_tx),
            recycled: recycle_rx,
            sink: Some(sink),
            sync: true,
        })
    }

    /// Appends one record. Records must come in strictly increasing index order; a
    /// violation is a bug in the caller (the sort), reported rather than written.
    pub fn push(&mut self, rec: &VersionRecord) -> Result<()> {
        let new_key = !self.has_prev || self.prev.key != rec.key;
        if self.has_prev && self.prev.cmp_order(rec).is_ge() {
            bail!(
                "index {}: records out of order: {:?}/{} after {:?}/{}",
                self.path.display(),
                rec.key,
                rec.version_id_or_null(),
                self.prev.key,
                self.prev.version_id_or_null()
            );
        }
        if self.block_records == 0 {
            self.block_first_key.clear();
            self.block_first_key.push_str(&rec.key);
            encode_record(&mut self.block, "", rec);
        } else {
            encode_record(&mut self.block, &self.prev.key, rec);
        }
        self.block_records += 1;
        self.stats.add(rec, new_key);
        self.prev.copy_from(rec);
        self.has_prev = true;
        if self.block.len() >= BLOCK_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Skips the final fsync: for spill runs, which die with the process anyway.
    pub fn without_sync(mut self) -> IndexWriter {
        self.sync = false;
        self
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block_records == 0 {
            return Ok(());
        }
        let fresh = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BLOCK_TARGET + 4096));
        let block = RawBlock {
            bytes: std::mem::replace(&mut self.block, fresh),
            records: self.block_records,
            first_key: self.block_first_key.clone(),
        };
        self.block.clear();
        self.block_records = 0;
        let sent = self.blocks.as_ref().map(|tx| tx.send(block).is_ok());
        if sent != Some(true) {
            // The writing thread stopped: its error says why.
            return Err(self.join_sink().err().unwrap_or_else(|| {
                anyhow!("index {}: the writer thread stopped", self.path.display())
            }));
        }
        Ok(())
    }

    fn join_sink(&mut self) -> Result<Written> {
        self.blocks = None;
        let handle = self
            .sink
            .take()
            .ok_or_else(|| anyhow!("index {}: writer already finished", self.path.display()))?;
        handle
            .join()
            .map_err(|_| anyhow!("index {}: the writer thread panicked", self.path.display()))?
    }

    /// Writes the directory, stats and trailer and flushes the file to disk.
    pub fn finish(mut self) -> Result<IndexStats> {
        self.flush_block()?;
        let Written {
            mut out,
            offset: dir_offset,
            directory,
        } = self.join_sink()?;
        self.stats.blocks = directory.len() as u64;
        let mut dir = Vec::new();
        for b in &directory {
            put_varint(&mut dir, b.offset);
            put_varint(&mut dir, b.compressed_len);
            put_varint(&mut dir, b.raw_len);
            put_varint(&mut dir, b.records);
            dir.extend_from_slice(&b.crc.to_le_bytes());
            put_varint(&mut dir, b.first_key.len() as u64);
            dir.extend_from_slice(b.first_key.as_bytes());
        }
        let dir = zstd::bulk::compress(&dir, ZSTD_LEVEL)?;
        let stats_json = serde_json::to_vec(&self.stats)?;
        let mut tail = Vec::with_capacity(dir.len() + stats_json.len() + super::TRAILER_LEN);
        tail.extend_from_slice(&dir);
        tail.extend_from_slice(&stats_json);
        tail.extend_from_slice(&dir_offset.to_le_bytes());
        tail.extend_from_slice(&(dir.len() as u32).to_le_bytes());
        tail.extend_from_slice(&crc32fast::hash(&dir).to_le_bytes());
        tail.extend_from_slice(&(stats_json.len() as u32).to_le_bytes());
        tail.extend_from_slice(&crc32fast::hash(&stats_json).to_le_bytes());
        tail.extend_from_slice(TRAILER_MAGIC);
        let context = || format!("writing index {}", self.path.display());
        out.write_all(&tail).with_context(context)?;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(context)?;
        if self.sync {
            file.sync_all()
                .with_context(|| format!("syncing index {}", self.path.display()))?;
        }
        Ok(std::mem::take(&mut self.stats))
    }
}

impl Drop for IndexWriter {
    fn drop(&mut self) {
        // Abandoned (an error elsewhere): stop the writing thread; the caller deletes the file.
        self.blocks = None;
        if let Some(h) = self.sink.take() {
            let _ = h.join();
        }
    }
}

/// The writing thread: compresses blocks in arrival order and appends them.
fn compress_and_write(
    blocks: Receiver<RawBlock>,
    recycle: Sender<Vec<u8>>,
    mut out: BufWriter<File>,
    mut offset: u64,
    path: &Path,
    level: i32,
) -> Result<Written> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    let mut compressed = Vec::new();
    let mut directory = Vec::new();
    for mut block in blocks {
        compressed.clear();
        compressed.reserve(zstd::zstd_safe::compress_bound(block.bytes.len()));
        compressor
            .compress_to_buffer(&block.bytes, &mut compressed)
            .context("compressing an index block")?;
        out.write_all(&compressed)
            .with_context(|| format!("writing index {}", path.display()))?;
        directory.push(DirectoryEntry {
            offset,
            compressed_len: compressed.len() as u64,
            raw_len: block.bytes.len() as u64,
            records: block.records,
            crc: crc32fast::hash(&compressed),
            first_key: block.first_key,
        });
        offset += compressed.len() as u64;
        block.bytes.clear();
        let _ = recycle.try_send(block.bytes);
    }
    Ok(Written {
        out,
        offset,
        directory,
    })
}
