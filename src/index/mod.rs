//! The index: a sorted, compact, checksummed file of version records, and the ways one is
//! made and read: [`build`] turns an inventory date into an index (the presorted fast path,
//! or [`sort`]'s external sort in a byte-counted memory budget), [`merge`] joins two sorted
//! record streams key by key (diff and the sync planner both stand on it), and [`cache`]
//! keeps built indexes between runs, keyed by the manifest they came from.
//!
//! One index holds one inventory date (or, inside the external sort, one spilled run). It is
//! read front to back for merges and diffs, and by block for seeks to a key prefix.
//!
//! # Format (version 1; all integers little-endian)
//!
//! ```text
//! header    "S3INVIDX" | u32 format version | u32 meta_len | meta (JSON, IndexMeta) | u32 crc32(meta)
//! blocks    one zstd frame per block, back to back
//! directory zstd frame; per block: varint offset | varint compressed_len | varint raw_len
//!           | varint record_count | u32 crc32(compressed bytes) | varint first_key_len | first_key
//! stats     JSON (IndexStats)
//! trailer   u64 directory_offset | u32 directory_len | u32 directory_crc | u32 stats_len
//!           | u32 stats_crc | "S3INVEND"                                       (32 bytes)
//! ```
//!
//! Records are sorted by `(key bytes, last_modified, version_id)`, every part immutable for a
//! version, so indexes of two dates merge-join exactly. Inside a block each record is
//!
//! ```text
//! varint shared | varint suffix_len | suffix | varint vid_len | vid | varint last_modified_ms
//! | varint size | u8 flags (bit 7: an ETag follows) | u8 storage_class | [16 bytes MD5 | varint parts]
//! ```
//!
//! where `shared` is the number of leading key bytes taken from the previous record of the
//! same block (front coding: Zarr chunk keys share nearly all their bytes). Each block starts
//! with a full key, so any block decodes on its own; the directory holds every block's first
//! key, which makes a prefix seek one binary search plus one block read.
//!
//! Every block carries a CRC-32 of its compressed bytes, checked before decompression: a
//! corrupted index is reported with its file, block and offset, never silently read. The
//! header holds no path, host or time of writing: the same inventory read from S3 or from a
//! local copy gives a byte-identical index, whatever order its rows came in.
//!
//! Readers use positional reads rather than a memory map for whole-file streams: mapped
//! pages count toward a process's RSS, and a diff of two multi-GB indexes must stay within
//! tens of MiB.

pub mod build;
pub mod cache;
mod codec;
pub mod merge;
mod reader;
pub mod sort;
mod writer;

pub use codec::{compare_encoded, decode_record, decode_record_after, encode_record, sort_fields};
pub use reader::{BlockEntry, IndexReader, RecordStream};
pub use writer::IndexWriter;

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"S3INVIDX";
pub const TRAILER_MAGIC: &[u8; 8] = b"S3INVEND";
/// 2: catalog records may carry how each file was verified (codec.rs). Format 1 files are
/// read as they are; a program that reads only format 1 refuses format 2 by this number.
/// 3: catalog records may carry an extension (a version's rank in S3's order, displacement
/// deeper than 64 directories); older programs refuse such files by this number.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this program reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
pub const TRAILER_LEN: usize = 32;
/// Raw bytes per block before compression: big enough for zstd to find the repetition in
/// keys and storage classes, small enough that a prefix seek reads little.
pub const BLOCK_TARGET: usize = 64 * 1024;

/// What an index describes. Written at creation, before any record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// "inventory" for an index of one inventory date, "run" for an external-sort spill.
    pub kind: String,
    /// The bucket the inventory lists (manifest `sourceBucket`).
    pub source_bucket: String,
    /// The inventory date folder, `YYYY-MM-DDTHH-MMZ`.
    pub date: String,
    /// Manifest `creationTimestamp` (epoch milliseconds, as text).
    pub creation_timestamp: String,
    /// Manifest `fileSchema`, for the record: which columns this index was built from.
    pub file_schema: String,
    /// The MD5 of the manifest (its `manifest.checksum`): an index kept between runs is
    /// only reused for the very inventory it was built from. Empty in a spill run.
    #[serde(default)]
    pub manifest_md5: String,
}

/// Totals over an index, written at the end so that `diff` and `dump` summaries need no scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    pub records: u64,
    pub keys: u64,
    /// Records that are object versions (not delete markers).
    pub versions: u64,
    pub delete_markers: u64,
    /// Sum of the sizes of all versions.
    pub total_bytes: u64,
    /// Keys whose latest version is not a delete marker, and their bytes: the bucket as seen.
    pub current_objects: u64,
    pub current_bytes: u64,
    pub blocks: u64,
}

impl IndexStats {
    pub fn add(&mut self, rec: &crate::model::record::VersionRecord, new_key: bool) {
        self.records += 1;
        self.keys += u64::from(new_key);
        if rec.is_delete_marker() {
            self.delete_markers += 1;
        } else {
            self.versions += 1;
            self.total_bytes += rec.size;
            if rec.is_latest() {
                self.current_objects += 1;
                self.current_bytes += rec.size;
            }
        }
    }
}

#[cfg(test)]
mod tests;
