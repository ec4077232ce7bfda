//! Streaming one CSV data file: bytes → MD5 check → gunzip → CSV → records.
//!
//! The file is hashed as it streams, so it is read once and never stored. Its MD5 is only
//! known at the end, so callers must not treat the records as final before
//! [`CsvRows::next_record`] has returned `Ok(false)`: the index builder writes to a
//! temporary file that becomes the index only once every data file has verified.

use std::io::{self, BufReader, Read};
use std::sync::atomic::AtomicU64;

use anyhow::{Result, anyhow};
use flate2::bufread::MultiGzDecoder;
use md5::{Digest, Md5};

use super::rows::{HashingReader, Mismatch, is_mismatch};
use super::{DataFile, Inventory, RowParser, hex};
use crate::model::key::RawBytes;
use crate::model::record::VersionRecord;

type Body<'a> = HashingReader<'a, Box<dyn Read + Send + 'a>>;

pub struct CsvRows<'a> {
    file: &'a DataFile,
    csv: csv::Reader<MultiGzDecoder<BufReader<Body<'a>>>>,
    parser: &'a RowParser,
    row: csv::ByteRecord,
    row_number: u64,
    /// The stream holds the whole file (not a peek at its head), so its size and MD5 can be
    /// checked when a row turns out bad.
    whole: bool,
}

impl<'a> CsvRows<'a> {
    /// `progress` counts compressed bytes read, for progress reports.
    pub fn open(
        inventory: &'a Inventory,
        file: &'a DataFile,
        parser: &'a RowParser,
        progress: &'a AtomicU64,
    ) -> Result<CsvRows<'a>> {
        let mut reader =
            CsvRows::from_stream(inventory.open_stream(&file.rel)?, file, parser, progress);
        reader.whole = true;
        Ok(reader)
    }

    /// Reads rows from `stream`, which holds the file (or, for a peek at its first rows, the
    /// start of it: the checks at the end then fail, and the caller must not get that far).
    pub fn from_stream(
        stream: Box<dyn Read + Send + 'a>,
        file: &'a DataFile,
        parser: &'a RowParser,
        progress: &'a AtomicU64,
    ) -> CsvRows<'a> {
        let body = HashingReader {
            inner: stream,
            md5: Md5::new(),
            bytes: 0,
            progress,
        };
        let gunzip = MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, body));
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(256 * 1024)
            .from_reader(gunzip);
        CsvRows {
            file,
            csv,
            parser,
            row: csv::ByteRecord::new(),
            row_number: 0,
            whole: false,
        }
    }

    /// Rows read so far (1-based number of the last row).
    pub fn row_number(&self) -> u64 {
        self.row_number
    }

    /// Reads the next row into `out`. Returns false at the end of the file, after the
    /// file's size and MD5 have been checked against the manifest.
    pub fn next_record(&mut self, out: &mut VersionRecord) -> Result<bool> {
        let more = match self.csv.read_byte_record(&mut self.row) {
            Ok(more) => more,
            Err(e) => {
                let reason = match e.kind() {
                    csv::ErrorKind::Io(io) => {
                        format!("reading: {io} (truncated or corrupt gzip?)")
                    }
                    _ => e.to_string(),
                };
                let e = anyhow!(
                    "{}: after row {}: {reason}",
                    self.file.display,
                    self.row_number
                );
                return Err(self.blame(e));
            }
        };
        if !more {
            self.finish()?;
            return Ok(false);
        }
        self.row_number += 1;
        if let Err(e) = self.parser.parse(&self.row, out) {
            let e = anyhow!(
                "{}: row {}: {e}; row: {}",
                self.file.display,
                self.row_number,
                RawRow(&self.row)
            );
            return Err(self.blame(e));
        }
        Ok(true)
    }

    /// A bad row or a broken gzip stream is only the file's fault if the file is the one
    /// the manifest describes: read the rest and check. If it is not, the mismatch is the
    /// error (and the bad row a symptom of it).
    fn blame(&mut self, row_error: anyhow::Error) -> anyhow::Error {
        if !self.whole {
            return row_error;
        }
        match self.finish() {
            Err(e) if is_mismatch(&e) => e.context(format!("(seen first as: {row_error:#})")),
            _ => row_error,
        }
    }

    fn finish(&mut self) -> Result<()> {
        let body = self.csv.get_mut().get_mut().get_mut();
        // The gzip decoder stops after its last member; anything after it still counts.
        io::copy(body, &mut io::sink())
            .map_err(|e| anyhow!("{}: reading: {e}", self.file.display))?;
        let actual = hex(&body.md5.clone().finalize());
        if body.bytes != self.file.size {
            return Err(Mismatch(format!(
                "{}: size mismatch: manifest says {} bytes, read {}",
                self.file.display, self.file.size, body.bytes
            ))
            .into());
        }
        if actual != self.file.md5 {
            return Err(Mismatch(format!(
                "{}: MD5 mismatch: expected {} (manifest), actual {actual}",
                self.file.display, self.file.md5
            ))
            .into());
        }
        Ok(())
    }
}

/// A CSV row shown as it appeared (fields re-quoted), for error messages.
struct RawRow<'a>(&'a csv::ByteRecord);

impl std::fmt::Display for RawRow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, field) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "\"{}\"", RawBytes(field))?;
        }
        Ok(())
    }
}
