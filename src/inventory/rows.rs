//! Reading the rows of one data file, whatever its format.
//!
//! CSV streams (hashed as it goes, verified at its end); Parquet and ORC are verified
//! whole before a row is read, since their footer comes last. Either way a caller gets the
//! same records and the same guarantee: a file that does not match the manifest is a
//! [`Mismatch`], never a source of rows that count.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use md5::{Digest, Md5};

use super::columnar::{self, ColumnarRows};
use super::csv_rows::CsvRows;
use super::{Format, Inventory, RowParser};
use crate::model::record::VersionRecord;

/// The rows of one data file.
pub struct RowReader<'a>(Rows<'a>);

enum Rows<'a> {
    Csv(Box<CsvRows<'a>>),
    Columnar(Box<ColumnarRows<'a>>),
}

impl<'a> RowReader<'a> {
    /// Opens `file` for reading. `progress` counts its bytes as they are read; `scratch` is
    /// where a columnar file from S3 is copied to be verified before it is read.
    pub fn open(
        inventory: &'a Inventory,
        file: &'a DataFile,
        parser: &'a RowParser,
        progress: &'a AtomicU64,
        scratch: &Path,
    ) -> Result<RowReader<'a>> {
        Ok(RowReader(match parser.columns().format {
            Format::Csv => Rows::Csv(Box::new(CsvRows::open(inventory, file, parser, progress)?)),
            Format::Parquet | Format::Orc => Rows::Columnar(Box::new(ColumnarRows::open(
                inventory, file, parser, progress, scratch,
            )?)),
        }))
    }

    /// Rows read so far (1-based number of the last row).
    pub fn row_number(&self) -> u64 {
        match &self.0 {
            Rows::Csv(r) => r.row_number(),
            Rows::Columnar(r) => r.row_number(),
        }
    }

    /// Reads the next row into `out`. Returns false at the end of the file, which has then
    /// been checked against the manifest.
    pub fn next_record(&mut self, out: &mut VersionRecord) -> Result<bool> {
        match &mut self.0 {
            Rows::Csv(r) => r.next_record(out),
            Rows::Columnar(r) => r.next_record(out),
        }
    }

    /// The key `file` starts with, cheaply and unverified: a hint for the order in which to
    /// stream files that look sorted (the full pass checks it). A CSV file's first row from
    /// the first `peek_bytes`; a columnar file's from its footer's statistics. Ok(None) for
    /// a file without rows.
    pub fn first_key(
        inventory: &Inventory,
        file: &DataFile,
        parser: &RowParser,
        peek_bytes: u64,
    ) -> Result<Option<VersionRecord>> {
        match parser.columns().format {
            Format::Csv => {
                let scratch = AtomicU64::new(0);
                let head = inventory.open_head(&file.rel, peek_bytes.min(file.size.max(1)))?;
                let mut reader = CsvRows::from_stream(head, file, parser, &scratch);
                let mut rec = VersionRecord::default();
                Ok(reader.next_record(&mut rec)?.then_some(rec))
            }
            format => Ok(
                columnar::first_key(inventory, file, format)?.map(|key| VersionRecord {
                    key,
                    ..VersionRecord::default()
                }),
            ),
        }
    }
}

/// The bytes read are not the file the inventory describes (size or MD5 differs from the
/// manifest, or the manifest from its checksum). From S3 this can be a damaged transfer, so
/// the caller reads again; a local copy that does not match is simply bad.
#[derive(Debug)]
pub struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

/// True if `e` (or what caused it) is a [`Mismatch`].
pub fn is_mismatch(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Mismatch>())
}

/// A data file as the manifest lists it.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Path relative to the inventory root (`data/<uuid>.csv.gz`).
    pub rel: String,
    /// Full name for messages (`s3://...` or a local path).
    pub display: String,
    pub size: u64,
    /// Lowercase hex MD5 from the manifest.
    pub md5: String,
}

/// Hashes and counts the compressed bytes as they pass.
pub(super) struct HashingReader<'a, R> {
    pub(super) inner: R,
    pub(super) md5: Md5,
    pub(super) bytes: u64,
    pub(super) progress: &'a AtomicU64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        self.bytes += n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
