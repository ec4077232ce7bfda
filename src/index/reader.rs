//! Reads index files: whole-file streams for merges, prefix seeks through the directory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};

use anyhow::{Context, Result, bail};

use super::codec::{decode_record, get_varint};
use super::{FORMAT_VERSION, IndexMeta, IndexStats, MAGIC, TRAILER_LEN, TRAILER_MAGIC};
use crate::record::VersionRecord;

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

/// Blocks a stream's reading thread may load ahead of the decoder.
const PREFETCH_BLOCKS: usize = 4;

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
        if version != FORMAT_VERSION {
            bail!(
                "index {}: format version {version}, this program reads version {FORMAT_VERSION}; rebuild it with `s3invbackup index`",
                path.display()
            );
        }
        let meta_len = u32_at(&head, 12) as usize;
        let meta_raw = read_at(&file, path, 16, meta_len + 4)?;
        if crc32fast::hash(&meta_raw[..meta_len]) != u32_at(&meta_raw, meta_len) {
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
        if dir_offset + (dir_len + stats_len + TRAILER_LEN) as u64 != len {
            return Err(corrupt(
                "trailer does not match the file length (corrupted)",
            ));
        }
        let tail = read_at(&file, path, dir_offset, dir_len + stats_len)?;
        let (dir, stats_raw) = tail.split_at(dir_len);
        if crc32fast::hash(dir) != dir_crc || crc32fast::hash(stats_raw) != stats_crc {
            return Err(corrupt("block directory checksum mismatch (corrupted)"));
        }
        let stats: IndexStats =
            serde_json::from_slice(stats_raw).map_err(|e| corrupt(&format!("bad stats: {e}")))?;
        let dir =
            zstd::stream::decode_all(dir).map_err(|e| corrupt(&format!("bad directory: {e}")))?;
        let blocks = parse_directory(&dir).map_err(|e| corrupt(&format!("bad directory: {e}")))?;
        if blocks.len() as u64 != stats.blocks {
            return Err(corrupt("block count disagrees with the stats (corrupted)"));
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
        RecordStream::new(self, 0, None)
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
        RecordStream::new(self, first_ge.saturating_sub(1), Some(prefix.to_string()))
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
    if crc32fast::hash(compressed) != b.crc {
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

/// Loads blocks `first..` on a thread of its own, so that reading and decompressing overlap
/// with decoding. Stops when the stream is dropped.
fn spawn_prefetch(
    index: &IndexReader,
    first: usize,
) -> (Receiver<Result<Vec<u8>>>, Sender<Vec<u8>>) {
    let (blocks_tx, blocks_rx) = bounded::<Result<Vec<u8>>>(PREFETCH_BLOCKS);
    let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(PREFETCH_BLOCKS + 2);
    let (file, path, blocks) = (
        Arc::clone(&index.file),
        Arc::clone(&index.path),
        Arc::clone(&index.blocks),
    );
    std::thread::spawn(move || {
        let mut dec = match zstd::bulk::Decompressor::new() {
            Ok(d) => d,
            Err(e) => {
                let _ = blocks_tx.send(Err(e.into()));
                return;
            }
        };
        let mut compressed = Vec::new();
        for idx in first..blocks.len() {
            let mut raw = recycle_rx.try_recv().unwrap_or_default();
            let loaded = load_block(
                &file,
                &path,
                &blocks,
                idx,
                &mut compressed,
                &mut raw,
                &mut dec,
            );
            let failed = loaded.is_err();
            if blocks_tx.send(loaded.map(|()| raw)).is_err() || failed {
                return;
            }
        }
    });
    (blocks_rx, recycle_tx)
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
        let key = dir.get(pos..pos + key_len).context("truncated")?;
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

/// A forward cursor over an index's records. `next_record` lends a record that stays valid
/// until the next call, so streaming a billion records allocates nothing per record.
pub struct RecordStream<'a> {
    index: &'a IndexReader,
    next_block: usize,
    blocks: Receiver<Result<Vec<u8>>>,
    recycle: Sender<Vec<u8>>,
    raw: Vec<u8>,
    pos: usize,
    left_in_block: u64,
    rec: VersionRecord,
    prefix: Option<String>,
    done: bool,
}

impl<'a> RecordStream<'a> {
    fn new(index: &'a IndexReader, first_block: usize, prefix: Option<String>) -> RecordStream<'a> {
        let (blocks, recycle) = spawn_prefetch(index, first_block);
        RecordStream {
            index,
            next_block: first_block,
            blocks,
            recycle,
            raw: Vec::new(),
            pos: 0,
            left_in_block: 0,
            rec: VersionRecord::default(),
            prefix,
            done: false,
        }
    }

    pub fn next_record(&mut self) -> Result<Option<&VersionRecord>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.left_in_block == 0 {
                if self.pos != self.raw.len() {
                    bail!(
                        "index {}: block {} has trailing bytes (corrupted)",
                        self.index.path.display(),
                        self.next_block - 1
                    );
                }
                if self.next_block >= self.index.blocks.len() {
                    self.done = true;
                    return Ok(None);
                }
                let raw = match self.blocks.recv() {
                    Ok(loaded) => loaded?,
                    Err(_) => bail!(
                        "index {}: the block reader stopped",
                        self.index.path.display()
                    ),
                };
                let used = std::mem::replace(&mut self.raw, raw);
                let _ = self.recycle.try_send(used);
                self.left_in_block = self.index.blocks[self.next_block].records;
                self.next_block += 1;
                self.pos = 0;
                self.rec.key.clear();
            }
            decode_record(&self.raw, &mut self.pos, &mut self.rec).map_err(|e| {
                anyhow::anyhow!(
                    "index {}: block {}: {e} (corrupted)",
                    self.index.path.display(),
                    self.next_block - 1
                )
            })?;
            self.left_in_block -= 1;
            if let Some(prefix) = &self.prefix
                && !self.rec.key.starts_with(prefix.as_str())
            {
                if self.rec.key.as_str() > prefix.as_str() {
                    self.done = true;
                    return Ok(None);
                }
                continue;
            }
            return Ok(Some(&self.rec));
        }
    }
}

impl Iterator for RecordStream<'_> {
    type Item = Result<VersionRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(Some(rec)) => Some(Ok(rec.clone())),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
