//! Writes an index file from records given in index order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::codec::{encode_record, put_varint};
use super::{BLOCK_TARGET, FORMAT_VERSION, IndexMeta, IndexStats, MAGIC, TRAILER_MAGIC};
use crate::record::VersionRecord;

/// zstd level 3 compresses blocks at several hundred MB/s per core; higher levels cost far
/// more time than the few percent they save on random version ids and ETags.
const ZSTD_LEVEL: i32 = 3;

struct PendingBlock {
    offset: u64,
    compressed_len: u64,
    raw_len: u64,
    records: u64,
    crc: u32,
    first_key: String,
}

/// Streams records into `path`. The file is complete only after [`IndexWriter::finish`];
/// callers write to a temporary name and rename, so a failed build leaves nothing behind.
pub struct IndexWriter {
    out: BufWriter<File>,
    path: PathBuf,
    offset: u64,
    block: Vec<u8>,
    block_records: u64,
    block_first_key: String,
    prev: VersionRecord,
    has_prev: bool,
    directory: Vec<PendingBlock>,
    stats: IndexStats,
    compressor: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
    sync: bool,
}

impl IndexWriter {
    pub fn create(path: &Path, meta: &IndexMeta) -> Result<IndexWriter> {
        let file =
            File::create(path).with_context(|| format!("creating index {}", path.display()))?;
        let mut writer = IndexWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            offset: 0,
            block: Vec::with_capacity(BLOCK_TARGET + 4096),
            block_records: 0,
            block_first_key: String::new(),
            prev: VersionRecord::default(),
            has_prev: false,
            directory: Vec::new(),
            stats: IndexStats::default(),
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            compressed: Vec::new(),
            sync: true,
        };
        let meta_json = serde_json::to_vec(meta)?;
        let mut header = Vec::with_capacity(meta_json.len() + 20);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
        header.extend_from_slice(&meta_json);
        header.extend_from_slice(&crc32fast::hash(&meta_json).to_le_bytes());
        writer.write_all(&header)?;
        Ok(writer)
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

    pub fn stats(&self) -> &IndexStats {
        &self.stats
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block_records == 0 {
            return Ok(());
        }
        let bound = zstd::zstd_safe::compress_bound(self.block.len());
        self.compressed.clear();
        self.compressed.reserve(bound);
        self.compressor
            .compress_to_buffer(&self.block, &mut self.compressed)
            .context("compressing an index block")?;
        let entry = PendingBlock {
            offset: self.offset,
            compressed_len: self.compressed.len() as u64,
            raw_len: self.block.len() as u64,
            records: self.block_records,
            crc: crc32fast::hash(&self.compressed),
            first_key: std::mem::take(&mut self.block_first_key),
        };
        let compressed = std::mem::take(&mut self.compressed);
        self.write_all(&compressed)?;
        self.compressed = compressed;
        self.directory.push(entry);
        self.block.clear();
        self.block_records = 0;
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("writing index {}", self.path.display()))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes the directory, stats and trailer and flushes the file to disk.
    pub fn finish(mut self) -> Result<IndexStats> {
        self.flush_block()?;
        self.stats.blocks = self.directory.len() as u64;
        let mut dir = Vec::new();
        for b in &self.directory {
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
        let dir_offset = self.offset;
        let mut tail = Vec::with_capacity(dir.len() + stats_json.len() + super::TRAILER_LEN);
        tail.extend_from_slice(&dir);
        tail.extend_from_slice(&stats_json);
        tail.extend_from_slice(&dir_offset.to_le_bytes());
        tail.extend_from_slice(&(dir.len() as u32).to_le_bytes());
        tail.extend_from_slice(&crc32fast::hash(&dir).to_le_bytes());
        tail.extend_from_slice(&(stats_json.len() as u32).to_le_bytes());
        tail.extend_from_slice(&crc32fast::hash(&stats_json).to_le_bytes());
        tail.extend_from_slice(TRAILER_MAGIC);
        self.write_all(&tail)?;
        let path = self.path.clone();
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing index {}", path.display()))?;
        if self.sync {
            file.sync_all()
                .with_context(|| format!("syncing index {}", path.display()))?;
        }
        Ok(self.stats)
    }

    /// Skips the final fsync: for spill runs, which die with the process anyway.
    pub fn without_sync(mut self) -> IndexWriter {
        self.sync = false;
        self
    }
}
