//! External sort of version records in a memory budget counted in bytes.
//!
//! Records are appended to [`SortBuffer`]s (one per parsing thread) in their compact encoded
//! form, with a 4-byte offset each; a full buffer is sorted and spilled as a *run* — an
//! ordinary index file in `--tmp-dir`, so runs are compressed, checksummed and read back by
//! the same code as any index. [`merge`] then joins runs and the last in-memory buffers with
//! a k-way heap merge. At most [`MAX_OPEN_RUNS`] runs are open at once: beyond that, runs
//! are first merged in groups into bigger runs.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::index::{
    IndexMeta, IndexReader, IndexWriter, RecordStream, compare_encoded, decode_record,
    encode_record,
};
use crate::model::record::VersionRecord;

/// Runs open at once during a merge: bounds file descriptors and buffer memory
/// (each open run holds a few decoded blocks, ~0.5 MiB).
pub const MAX_OPEN_RUNS: usize = 64;

/// Sorts records in a fixed number of bytes.
pub struct SortBuffer {
    arena: Vec<u8>,
    offsets: Vec<u32>,
    arena_limit: usize,
    offsets_limit: usize,
}

impl SortBuffer {
    /// A buffer that will never hold more than about `bytes` (arena plus offsets).
    pub fn with_budget(bytes: usize) -> SortBuffer {
        let bytes = bytes.max(64 * 1024);
        // Records encode to ~60-120 bytes, so offsets need ~5% of the arena; give them 1/9.
        let offsets_limit = bytes / 9 / 4;
        let arena_limit = bytes - offsets_limit * 4;
        SortBuffer {
            arena: Vec::new(),
            offsets: Vec::new(),
            arena_limit,
            offsets_limit,
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Appends a record; false (and nothing appended) when the buffer is full.
    pub fn push(&mut self, rec: &VersionRecord) -> bool {
        let start = self.arena.len();
        if self.offsets.len() >= self.offsets_limit || start >= self.arena_limit {
            return false;
        }
        if self.arena.capacity() == 0 {
            // Allocated once, in full: growth by doubling would briefly need 1.5x the budget.
            self.arena.reserve_exact(self.arena_limit + 64 * 1024);
            self.offsets.reserve_exact(self.offsets_limit);
        }
        encode_record(&mut self.arena, "", rec);
        if self.arena.len() > self.arena_limit && !self.offsets.is_empty() {
            self.arena.truncate(start);
            return false;
        }
        self.offsets.push(start as u32);
        true
    }

    /// Sorts the offsets by index order.
    pub fn sort(&mut self) {
        let arena = &self.arena;
        self.offsets
            .sort_unstable_by(|&a, &b| compare_encoded(&arena[a as usize..], &arena[b as usize..]));
    }

    /// Writes the sorted contents as a run in `dir` and empties the buffer. Returns the run
    /// and the number of exact duplicates dropped.
    pub fn spill(&mut self, dir: &Path, seq: usize) -> Result<(PathBuf, u64)> {
        self.sort();
        let path = dir.join(format!("run-{seq:06}.s3inv"));
        let meta = IndexMeta {
            kind: "run".into(),
            ..IndexMeta::default()
        };
        let mut writer = IndexWriter::create(&path, &meta)?.without_sync();
        let mut rec = VersionRecord::default();
        let mut dedup = Dedup::default();
        for i in 0..self.offsets.len() {
            self.record(i, &mut rec);
            if dedup.accept(&rec)? {
                writer.push(&rec)?;
            }
        }
        writer
            .finish()
            .with_context(|| format!("spilling a sort run to {}", dir.display()))?;
        self.clear();
        Ok((path, dedup.duplicates))
    }

    pub fn clear(&mut self) {
        self.arena.clear();
        self.offsets.clear();
    }

    /// Decodes the `i`th record (in sorted order once [`SortBuffer::sort`] has run).
    pub fn record(&self, i: usize, rec: &mut VersionRecord) {
        let mut pos = self.offsets[i] as usize;
        rec.key.clear();
        decode_record(&self.arena, &mut pos, rec)
            .expect("sort buffer holds records this process encoded");
    }
}

/// Drops exact duplicate rows (an inventory listing one version twice) and refuses two
/// different records for one version: that is a broken inventory, not something to guess at.
#[derive(Default)]
pub struct Dedup {
    prev: VersionRecord,
    has_prev: bool,
    /// Version ids already seen for the current key (a key's versions are contiguous); the
    /// first `seen` entries are live, the rest are buffers kept for reuse.
    key_versions: Vec<String>,
    seen: usize,
    pub duplicates: u64,
}

/// Long version chains (a key rewritten every night for years) would make the per-key scan
/// quadratic; past this many versions the same-id check is dropped for that key.
const MAX_TRACKED_VERSIONS: usize = 256;

impl Dedup {
    pub fn accept(&mut self, rec: &VersionRecord) -> Result<bool> {
        if self.has_prev && self.prev.key == rec.key {
            if self.prev.cmp_order(rec) == Ordering::Equal {
                if self.prev == *rec {
                    self.duplicates += 1;
                    return Ok(false);
                }
                bail!(
                    "key {:?} version {} is listed twice with different metadata (size {} vs {}, etag {:?} vs {:?})",
                    rec.key,
                    rec.version_id_or_null(),
                    self.prev.size,
                    rec.size,
                    self.prev.etag.map(|e| e.to_string()),
                    rec.etag.map(|e| e.to_string())
                );
            }
            if self.key_versions[..self.seen].contains(&rec.version_id) {
                bail!(
                    "key {:?} version {} is listed twice with different LastModifiedDate",
                    rec.key,
                    rec.version_id_or_null()
                );
            }
        } else {
            self.seen = 0;
        }
        if self.seen < MAX_TRACKED_VERSIONS {
            if self.seen == self.key_versions.len() {
                self.key_versions.push(String::new());
            }
            let slot = &mut self.key_versions[self.seen];
            slot.clear();
            slot.push_str(&rec.version_id);
            self.seen += 1;
        }
        self.prev.copy_from(rec);
        self.has_prev = true;
        Ok(true)
    }
}

/// One sorted input of a merge.
enum Source<'a> {
    Memory {
        buffer: &'a SortBuffer,
        next: usize,
        current: VersionRecord,
    },
    Run {
        stream: Box<RecordStream<'a>>,
        current: VersionRecord,
    },
}

impl Source<'_> {
    fn advance(&mut self) -> Result<bool> {
        match self {
            Source::Memory {
                buffer,
                next,
                current,
            } => {
                if *next >= buffer.len() {
                    return Ok(false);
                }
                buffer.record(*next, current);
                *next += 1;
                Ok(true)
            }
            Source::Run { stream, current } => match stream.next_record()? {
                Some(rec) => {
                    current.copy_from(rec);
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }

    fn current(&self) -> &VersionRecord {
        match self {
            Source::Memory { current, .. } | Source::Run { current, .. } => current,
        }
    }
}

/// Merges sorted runs (files) and sorted in-memory buffers, calling `sink` with each
/// record in index order, exact duplicates dropped. Returns the number of duplicates.
pub fn merge(
    mut runs: Vec<PathBuf>,
    buffers: &[SortBuffer],
    tmp_dir: &Path,
    sink: &mut dyn FnMut(&VersionRecord) -> Result<()>,
) -> Result<u64> {
    // Pre-merge runs in groups until the rest fit in one merge with the buffers.
    let mut seq = 1_000_000;
    while runs.len() + buffers.len() > MAX_OPEN_RUNS {
        let group: Vec<PathBuf> = runs.drain(..MAX_OPEN_RUNS.min(runs.len())).collect();
        let path = tmp_dir.join(format!("run-{seq:06}.s3inv"));
        seq += 1;
        let meta = IndexMeta {
            kind: "run".into(),
            ..IndexMeta::default()
        };
        let mut writer = IndexWriter::create(&path, &meta)?.without_sync();
        merge_once(&group, &[], &mut |rec| writer.push(rec))?;
        writer.finish()?;
        for p in &group {
            let _ = std::fs::remove_file(p);
        }
        runs.push(path);
    }
    merge_once(&runs, buffers, sink)
}

fn merge_once(
    runs: &[PathBuf],
    buffers: &[SortBuffer],
    sink: &mut dyn FnMut(&VersionRecord) -> Result<()>,
) -> Result<u64> {
    let readers = runs
        .iter()
        .map(|p| IndexReader::open(p))
        .collect::<Result<Vec<_>>>()?;
    let mut sources: Vec<Source<'_>> = Vec::with_capacity(readers.len() + buffers.len());
    for r in &readers {
        sources.push(Source::Run {
            stream: Box::new(r.stream_with_readahead(2)),
            current: VersionRecord::default(),
        });
    }
    for b in buffers {
        sources.push(Source::Memory {
            buffer: b,
            next: 0,
            current: VersionRecord::default(),
        });
    }
    let mut heap: Vec<usize> = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter_mut().enumerate() {
        if s.advance()? {
            heap.push(i);
        }
    }
    for i in (0..heap.len() / 2).rev() {
        sift_down(&mut heap, i, &sources);
    }
    let mut dedup = Dedup::default();
    while let Some(&top) = heap.first() {
        if dedup.accept(sources[top].current())? {
            sink(sources[top].current())?;
        }
        if !sources[top].advance()? {
            let last = heap.pop().expect("non-empty");
            if !heap.is_empty() {
                heap[0] = last;
            }
        }
        sift_down(&mut heap, 0, &sources);
    }
    Ok(dedup.duplicates)
}

/// Ties between sources break by source index, so equal records come out in a fixed order.
fn less(sources: &[Source<'_>], a: usize, b: usize) -> bool {
    sources[a]
        .current()
        .cmp_order(sources[b].current())
        .then(a.cmp(&b))
        == Ordering::Less
}

fn sift_down(heap: &mut [usize], mut i: usize, sources: &[Source<'_>]) {
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut smallest = i;
        if l < heap.len() && less(sources, heap[l], heap[smallest]) {
            smallest = l;
        }
        if r < heap.len() && less(sources, heap[r], heap[smallest]) {
            smallest = r;
        }
        if smallest == i {
            return;
        }
        heap.swap(i, smallest);
        i = smallest;
    }
}
