//! Parquet and ORC data files: verified whole, then read a row group (stripe) at a time.
//!
//! Both formats keep their index in a footer at the end of the file, so a file cannot be
//! read as it streams the way a CSV file is. It is verified first instead: a local file is
//! hashed in place, one from S3 is streamed into an anonymous temporary file while it is
//! hashed; only a file whose size and MD5 match the manifest is handed to the reader. The
//! reader then decodes only the columns this program needs (a projection), a batch of rows
//! at a time, so memory holds one row group's pages of those columns, not the file.
//!
//! Columns are found by name in each file's own schema: the manifest's `fileSchema` was
//! checked early, but the file is what is read.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, LargeBinaryArray,
    LargeStringArray, PrimitiveArray, RecordBatch, StringArray, StringViewArray,
};
use arrow_schema::{ArrowError, DataType, TimeUnit};
use md5::{Digest, Md5};

use super::schema::{Field, Format, RowError, RowParser, Values, bad};
use super::{DataFile, Inventory, Mismatch, hex};
use crate::model::record::VersionRecord;
use crate::model::timestamp::Timestamp;

/// Rows decoded per batch: large enough that per-batch work vanishes, small enough that a
/// batch of the projected columns stays in the low megabytes.
const BATCH_ROWS: usize = 8192;

type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

pub struct ColumnarRows<'a> {
    file: &'a DataFile,
    parser: &'a RowParser,
    format: Format,
    batches: Batches,
    batch: Option<BatchColumns>,
    batch_len: usize,
    next_in_batch: usize,
    /// Rows handed out so far.
    row_number: u64,
    /// Rows in each row group (stripe), to name where a bad row is.
    groups: Vec<u64>,
}

impl<'a> ColumnarRows<'a> {
    /// Verifies `file` against the manifest, then opens it for reading. A file from S3 is
    /// copied into an anonymous temporary file in `scratch` (gone when the reader is).
    pub fn open(
        inventory: &'a Inventory,
        file: &'a DataFile,
        parser: &'a RowParser,
        progress: &AtomicU64,
        scratch: &Path,
    ) -> Result<ColumnarRows<'a>> {
        let local = match inventory.local_path(&file.rel) {
            Some(path) => {
                let mut f =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                verify(&mut f, &mut io::sink(), file, progress)?;
                f
            }
            None => {
                let mut tmp = tempfile::tempfile_in(scratch).with_context(|| {
                    format!(
                        "creating a temporary file in {} for {}",
                        scratch.display(),
                        file.display
                    )
                })?;
                let mut body = inventory.open_stream(&file.rel)?;
                let mut out = io::BufWriter::with_capacity(1 << 20, &mut tmp);
                verify(&mut body, &mut out, file, progress)?;
                out.flush()
                    .with_context(|| format!("writing a temporary copy of {}", file.display))?;
                drop(out);
                tmp.rewind()?;
                tmp
            }
        };
        ColumnarRows::from_verified(file, parser, local)
    }

    /// Reads `local`, a copy of `file` whose size and MD5 have been checked.
    fn from_verified(
        file: &'a DataFile,
        parser: &'a RowParser,
        local: File,
    ) -> Result<ColumnarRows<'a>> {
        let format = parser.columns().format;
        let opened = guarded(format, || match format {
            Format::Parquet => open_parquet(local, file),
            Format::Orc => open_orc(local),
            Format::Csv => unreachable!("CSV files are read by the CSV reader"),
        })
        .and_then(|r| r)
        .map(|(batches, groups)| {
            (
                Box::new(Guarded {
                    inner: Some(batches),
                    format,
                }) as Batches,
                groups,
            )
        });
        let (batches, groups) = opened.with_context(|| {
            format!(
                "{}: not a readable {} file (its size and MD5 match the manifest)",
                file.display,
                format.name()
            )
        })?;
        Ok(ColumnarRows {
            file,
            parser,
            format,
            batches,
            batch: None,
            batch_len: 0,
            next_in_batch: 0,
            row_number: 0,
            groups,
        })
    }

    pub fn row_number(&self) -> u64 {
        self.row_number
    }

    /// Reads the next row into `out`; false at the end of the file.
    pub fn next_record(&mut self, out: &mut VersionRecord) -> Result<bool> {
        while self.batch.is_none() || self.next_in_batch == self.batch_len {
            match self.batches.next() {
                None => return Ok(false),
                Some(Err(e)) => {
                    return Err(anyhow!(
                        "{}: {}: reading: {e}",
                        self.file.display,
                        self.place(self.row_number)
                    ));
                }
                Some(Ok(batch)) => {
                    let columns = BatchColumns::new(&batch, self.format).map_err(|e| {
                        anyhow!(
                            "{}: {}: {e}",
                            self.file.display,
                            self.place(self.row_number)
                        )
                    })?;
                    self.batch_len = batch.num_rows();
                    self.batch = Some(columns);
                    self.next_in_batch = 0;
                }
            }
        }
        let columns = self.batch.as_ref().expect("a batch");
        let i = self.next_in_batch;
        self.next_in_batch += 1;
        self.row_number += 1;
        if let Err(e) = columns.row(i, self.parser, out) {
            bail!(
                "{}: {}: {e}",
                self.file.display,
                self.place(self.row_number - 1)
            );
        }
        Ok(true)
    }

    /// "row group 2 of 3, row 17" for the 0-based row `row` of the file.
    fn place(&self, row: u64) -> String {
        let unit = match self.format {
            Format::Orc => "stripe",
            _ => "row group",
        };
        let mut start = 0;
        for (g, &n) in self.groups.iter().enumerate() {
            if row < start + n {
                return format!(
                    "{unit} {} of {}, row {} (row {} of the file)",
                    g + 1,
                    self.groups.len(),
                    row - start + 1,
                    row + 1
                );
            }
            start += n;
        }
        format!("after row {row}")
    }
}

/// Reads every row of `f`, a Parquet or ORC file (per `parser`'s format) that needs no
/// verification, calling `each` with each record: the row count, or the first error. For
/// the fuzz targets, which give it arbitrary bytes.
pub fn read_file(f: File, parser: &RowParser, mut each: impl FnMut(&VersionRecord)) -> Result<u64> {
    let file = DataFile {
        rel: "data/file".into(),
        display: "data/file".into(),
        size: f.metadata()?.len(),
        md5: String::new(),
    };
    let mut rows = ColumnarRows::from_verified(&file, parser, f)?;
    let mut rec = VersionRecord::default();
    while rows.next_record(&mut rec)? {
        each(&rec);
    }
    Ok(rows.row_number())
}

/// Runs a call into a format's reader, turning a panic into an error. The file's MD5 matched,
/// so a panic means a file damaged at its writer, or a reader bug (fuzzing found one in
/// orc-rust's stripe footer decoding): either way that file's error, not a crash of the
/// whole run with every other thread's work.
fn guarded<T>(format: Format, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        anyhow!(
            "the {} reader failed on this file ({why}): it is damaged in a way its MD5 \
             could not show, or the reader has a bug",
            format.name()
        )
    })
}

/// A reader's batches with its panics turned into errors; nothing is read after one.
struct Guarded {
    inner: Option<Batches>,
    format: Format,
}

impl Iterator for Guarded {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = self.inner.as_mut()?;
        match guarded(self.format, || inner.next()) {
            Ok(next) => next,
            Err(e) => {
                self.inner = None;
                Some(Err(ArrowError::ExternalError(e.into())))
            }
        }
    }
}

/// Copies `from` to `to` while hashing, then checks size and MD5 against the manifest.
fn verify(
    from: &mut dyn Read,
    to: &mut dyn Write,
    file: &DataFile,
    progress: &AtomicU64,
) -> Result<()> {
    let mut md5 = Md5::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow!("{}: reading: {e}", file.display)),
        };
        md5.update(&buf[..n]);
        to.write_all(&buf[..n])
            .with_context(|| format!("writing a temporary copy of {}", file.display))?;
        bytes += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    if bytes != file.size {
        return Err(Mismatch(format!(
            "{}: size mismatch: manifest says {} bytes, read {bytes}",
            file.display, file.size
        ))
        .into());
    }
    let actual = hex(&md5.finalize());
    if actual != file.md5 {
        return Err(Mismatch(format!(
            "{}: MD5 mismatch: expected {} (manifest), actual {actual}",
            file.display, file.md5
        ))
        .into());
    }
    Ok(())
}

/// The names of the file's top-level columns this program reads.
fn wanted<'n>(names: impl Iterator<Item = &'n str>) -> Vec<(usize, String)> {
    names
        .enumerate()
        .filter(|(_, n)| Field::ALL.iter().any(|f| f.matches(n)))
        .map(|(i, n)| (i, n.to_string()))
        .collect()
}

fn open_parquet(mut f: File, file: &DataFile) -> Result<(Batches, Vec<u64>)> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::basic::Compression;

    // An encrypted footer ends in "PARE"; say so rather than "invalid magic".
    let mut magic = [0u8; 4];
    if file.size >= 4 {
        f.seek(io::SeekFrom::End(-4))?;
        f.read_exact(&mut magic)?;
        f.rewind()?;
        if &magic == b"PARE" {
            bail!(
                "the file uses Parquet modular encryption (an encrypted footer), which this \
                 program does not read; S3 Inventory encrypts with SSE-S3 or SSE-KMS instead"
            );
        }
    }
    // The file's own Parquet schema decides the Arrow types, not a writer's embedded hint.
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(f, options)?;
    let roots = wanted(builder.schema().fields().iter().map(|f| f.name().as_str()));
    super::Columns::from_names(
        Format::Parquet,
        &roots.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
    )
    .map_err(|e| anyhow!("the file's schema {e}"))?;
    let meta = builder.metadata().clone();
    let schema = builder.parquet_schema();
    for (g, rg) in meta.row_groups().iter().enumerate() {
        for chunk in rg.columns() {
            let codec = chunk.compression();
            let readable = matches!(
                codec,
                Compression::UNCOMPRESSED
                    | Compression::SNAPPY
                    | Compression::GZIP(_)
                    | Compression::ZSTD(_)
                    | Compression::LZ4
                    | Compression::LZ4_RAW
            );
            let root = chunk
                .column_path()
                .parts()
                .first()
                .cloned()
                .unwrap_or_default();
            if !readable && roots.iter().any(|(_, n)| *n == root) {
                bail!(
                    "row group {} of {}: column {root} is compressed with {codec}, which this \
                     program does not read (it reads uncompressed, Snappy, gzip, zstd and LZ4)",
                    g + 1,
                    meta.num_row_groups()
                );
            }
        }
    }
    let mask = ProjectionMask::roots(schema, roots.iter().map(|(i, _)| *i));
    let groups = meta
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows().max(0) as u64)
        .collect();
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()?;
    Ok((Box::new(reader), groups))
}

fn open_orc(f: File) -> Result<(Batches, Vec<u64>)> {
    use orc_rust::projection::ProjectionMask;

    let builder = orc_rust::ArrowReaderBuilder::try_new(f)?;
    let root = builder.file_metadata().root_data_type().clone();
    let roots = wanted(root.children().iter().map(|c| c.name()));
    super::Columns::from_names(
        Format::Orc,
        &roots.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
    )
    .map_err(|e| anyhow!("the file's schema {e}"))?;
    let groups = builder
        .file_metadata()
        .stripe_metadatas()
        .iter()
        .map(|s| s.number_of_rows())
        .collect();
    let names: Vec<&str> = roots.iter().map(|(_, n)| n.as_str()).collect();
    let reader = builder
        .with_projection(ProjectionMask::named_roots(&root, &names))
        .with_batch_size(BATCH_ROWS)
        .build();
    Ok((Box::new(reader), groups))
}

/// The first key of a data file, from the footer's statistics alone (the minimum of the key
/// column in the first non-empty row group or stripe): a hint for the presorted order, which
/// the full pass checks row by row. Ok(None) for a file without rows; Err if the footer has
/// no usable statistics.
pub fn first_key(inventory: &Inventory, file: &DataFile, format: Format) -> Result<Option<String>> {
    match inventory.local_path(&file.rel) {
        Some(path) => {
            let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            first_key_of(f, format)
        }
        None => first_key_of(
            Ranged {
                inventory,
                rel: &file.rel,
                len: file.size,
            },
            format,
        ),
    }
}

fn first_key_of<R>(mut source: R, format: Format) -> Result<Option<String>>
where
    R: parquet::file::reader::ChunkReader + orc_rust::reader::ChunkReader,
{
    let min: Option<Vec<u8>> = match format {
        Format::Parquet => {
            let meta = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .parse_and_finish(&source)?;
            let schema = meta.file_metadata().schema_descr();
            let col = (0..schema.num_columns())
                .find(|&i| {
                    let c = schema.column(i);
                    c.path().parts().len() == 1 && Field::Key.matches(c.name())
                })
                .ok_or_else(|| anyhow!("no key column"))?;
            let Some(rg) = meta.row_groups().iter().find(|rg| rg.num_rows() > 0) else {
                return Ok(None);
            };
            let stats = rg.column(col).statistics();
            Some(
                stats
                    .and_then(|s| s.min_bytes_opt())
                    .ok_or_else(|| anyhow!("no statistics for the key column"))?
                    .to_vec(),
            )
        }
        Format::Orc => {
            let meta = orc_rust::reader::metadata::read_metadata(&mut source)?;
            let col = meta
                .root_data_type()
                .children()
                .iter()
                .find(|c| Field::Key.matches(c.name()))
                .ok_or_else(|| anyhow!("no key column"))?
                .data_type()
                .column_index();
            let Some(stripe) = meta
                .stripe_metadatas()
                .iter()
                .find(|s| s.number_of_rows() > 0)
            else {
                return Ok(None);
            };
            match stripe
                .column_statistics()
                .get(col)
                .and_then(|s| s.type_statistics())
            {
                Some(orc_rust::statistics::TypeStatistics::String { lower_bound, .. }) => {
                    Some(lower_bound.clone().into_bytes())
                }
                _ => bail!("no statistics for the key column"),
            }
        }
        Format::Csv => unreachable!("CSV files are peeked at by the CSV reader"),
    };
    Ok(min.map(|m| String::from_utf8_lossy(&m).into_owned()))
}

/// A data file on S3 read by ranges, for a footer: a few small requests, not the file.
struct Ranged<'a> {
    inventory: &'a Inventory,
    rel: &'a str,
    len: u64,
}

impl Ranged<'_> {
    fn read(&self, start: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        self.inventory
            .open_range(self.rel, start, len)
            .map_err(|e| io::Error::other(format!("{e:#}")))?
            .read_to_end(&mut out)?;
        if out.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {} bytes of {len} at {start}", out.len()),
            ));
        }
        Ok(out)
    }
}

impl parquet::file::reader::Length for Ranged<'_> {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for Ranged<'_> {
    type T = io::Cursor<Vec<u8>>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(io::Cursor::new(
            self.read(start, self.len.saturating_sub(start))?,
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        Ok(self.read(start, length as u64)?.into())
    }
}

impl orc_rust::reader::ChunkReader for Ranged<'_> {
    type T = io::Cursor<Vec<u8>>;

    fn len(&self) -> u64 {
        self.len
    }

    fn get_read(&self, start: u64) -> io::Result<Self::T> {
        Ok(io::Cursor::new(
            self.read(start, self.len.saturating_sub(start))?,
        ))
    }

    fn get_bytes(&self, start: u64, length: u64) -> io::Result<bytes::Bytes> {
        Ok(self.read(start, length)?.into())
    }
}

/// A string (or binary) column, whichever Arrow layout the reader chose.
enum Text {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    Binary(BinaryArray),
    LargeBinary(LargeBinaryArray),
    BinaryView(BinaryViewArray),
}

impl Text {
    fn of(a: &ArrayRef) -> Option<Text> {
        Some(match a.data_type() {
            DataType::Utf8 => Text::Utf8(a.as_string::<i32>().clone()),
            DataType::LargeUtf8 => Text::LargeUtf8(a.as_string::<i64>().clone()),
            DataType::Utf8View => Text::Utf8View(a.as_string_view().clone()),
            DataType::Binary => Text::Binary(a.as_binary::<i32>().clone()),
            DataType::LargeBinary => Text::LargeBinary(a.as_binary::<i64>().clone()),
            DataType::BinaryView => Text::BinaryView(a.as_binary_view().clone()),
            _ => return None,
        })
    }

    /// None for a null.
    fn get(&self, i: usize) -> Option<&[u8]> {
        match self {
            Text::Utf8(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
            Text::LargeUtf8(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
            Text::Utf8View(a) => a.is_valid(i).then(|| a.value(i).as_bytes()),
            Text::Binary(a) => a.is_valid(i).then(|| a.value(i)),
            Text::LargeBinary(a) => a.is_valid(i).then(|| a.value(i)),
            Text::BinaryView(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// An integer column of any width the writers use.
enum Integer {
    I64(PrimitiveArray<Int64Type>),
    I32(PrimitiveArray<Int32Type>),
    U64(PrimitiveArray<UInt64Type>),
    U32(PrimitiveArray<UInt32Type>),
}

impl Integer {
    fn of(a: &ArrayRef) -> Option<Integer> {
        Some(match a.data_type() {
            DataType::Int64 => Integer::I64(a.as_primitive().clone()),
            DataType::Int32 => Integer::I32(a.as_primitive().clone()),
            DataType::UInt64 => Integer::U64(a.as_primitive().clone()),
            DataType::UInt32 => Integer::U32(a.as_primitive().clone()),
            _ => return None,
        })
    }

    fn get(&self, i: usize) -> Option<i128> {
        match self {
            Integer::I64(a) => a.is_valid(i).then(|| i128::from(a.value(i))),
            Integer::I32(a) => a.is_valid(i).then(|| i128::from(a.value(i))),
            Integer::U64(a) => a.is_valid(i).then(|| i128::from(a.value(i))),
            Integer::U32(a) => a.is_valid(i).then(|| i128::from(a.value(i))),
        }
    }
}

/// A timestamp column in any unit, read as milliseconds since the epoch (UTC).
enum Time {
    Seconds(PrimitiveArray<TimestampSecondType>),
    Millis(PrimitiveArray<TimestampMillisecondType>),
    Micros(PrimitiveArray<TimestampMicrosecondType>),
    Nanos(PrimitiveArray<TimestampNanosecondType>),
}

impl Time {
    fn of(a: &ArrayRef) -> Option<Time> {
        Some(match a.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => Time::Seconds(a.as_primitive().clone()),
            DataType::Timestamp(TimeUnit::Millisecond, _) => Time::Millis(a.as_primitive().clone()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Time::Micros(a.as_primitive().clone()),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => Time::Nanos(a.as_primitive().clone()),
            _ => return None,
        })
    }

    /// Sub-millisecond parts are dropped, as the CSV parser drops them.
    fn get(&self, i: usize) -> Option<i64> {
        match self {
            Time::Seconds(a) => a.is_valid(i).then(|| a.value(i).saturating_mul(1000)),
            Time::Millis(a) => a.is_valid(i).then(|| a.value(i)),
            Time::Micros(a) => a.is_valid(i).then(|| a.value(i).div_euclid(1000)),
            Time::Nanos(a) => a.is_valid(i).then(|| a.value(i).div_euclid(1_000_000)),
        }
    }
}

/// The needed columns of one batch, typed once per batch.
struct BatchColumns {
    format: Format,
    bucket: Text,
    key: Text,
    version_id: Option<Text>,
    is_latest: Option<BooleanArray>,
    is_delete_marker: Option<BooleanArray>,
    size: Integer,
    last_modified: Time,
    etag: Text,
    is_multipart: Option<BooleanArray>,
    storage_class: Option<Text>,
    encryption_status: Option<Text>,
    intelligent_tiering_access_tier: Option<Text>,
}

impl BatchColumns {
    fn new(batch: &RecordBatch, format: Format) -> Result<BatchColumns> {
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let columns = super::Columns::from_names(format, &names)
            .map_err(|e| anyhow!("the file's schema {e}"))?;
        let column = |f: Field| columns.get(f).map(|i| batch.column(i));
        fn typed<T>(
            f: Field,
            format: Format,
            a: Option<&ArrayRef>,
            of: fn(&ArrayRef) -> Option<T>,
            expected: &str,
        ) -> Result<Option<T>> {
            a.map(|a| {
                of(a).ok_or_else(|| {
                    anyhow!(
                        "column {} has type {}; expected {expected}",
                        f.name(format),
                        a.data_type()
                    )
                })
            })
            .transpose()
        }
        let text = |f: Field| typed(f, format, column(f), Text::of, "a string");
        let flag = |f: Field| {
            typed(
                f,
                format,
                column(f),
                |a| a.as_boolean_opt().cloned(),
                "a boolean",
            )
        };
        let required = |v: Option<Text>| v.expect("a required column");
        Ok(BatchColumns {
            format,
            bucket: required(text(Field::Bucket)?),
            key: required(text(Field::Key)?),
            version_id: text(Field::VersionId)?,
            is_latest: flag(Field::IsLatest)?,
            is_delete_marker: flag(Field::IsDeleteMarker)?,
            size: typed(
                Field::Size,
                format,
                column(Field::Size),
                Integer::of,
                "an integer",
            )?
            .expect("a required column"),
            last_modified: typed(
                Field::LastModifiedDate,
                format,
                column(Field::LastModifiedDate),
                Time::of,
                "a timestamp",
            )?
            .expect("a required column"),
            etag: required(text(Field::ETag)?),
            is_multipart: flag(Field::IsMultipartUploaded)?,
            storage_class: text(Field::StorageClass)?,
            encryption_status: text(Field::EncryptionStatus)?,
            intelligent_tiering_access_tier: text(Field::IntelligentTieringAccessTier)?,
        })
    }

    fn row(&self, i: usize, parser: &RowParser, out: &mut VersionRecord) -> Result<(), RowError> {
        let name = |f: Field| f.name(self.format);
        let null = |f: Field| bad(name(f), "null where a value is required");
        let flag = |f: Field, a: &Option<BooleanArray>| -> Result<Option<bool>, RowError> {
            match a {
                None => Ok(None),
                Some(a) if a.is_null(i) => Err(null(f)),
                Some(a) => Ok(Some(a.value(i))),
            }
        };
        let key = self.key.get(i).ok_or_else(|| null(Field::Key))?;
        if key.is_empty() {
            return Err(bad(name(Field::Key), "empty key"));
        }
        let key = std::str::from_utf8(key).map_err(|e| {
            bad(
                name(Field::Key),
                format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
            )
        })?;
        out.key.clear();
        out.key.push_str(key);
        let version_id = self
            .version_id
            .as_ref()
            .and_then(|a| a.get(i))
            .map(|v| std::str::from_utf8(v).map_err(|_| bad(name(Field::VersionId), "not UTF-8")))
            .transpose()?;
        let size = match self.size.get(i) {
            None => None,
            Some(n) => Some(
                u64::try_from(n).map_err(|_| bad(name(Field::Size), format!("not a size: {n}")))?,
            ),
        };
        let values = Values {
            bucket: self.bucket.get(i).ok_or_else(|| null(Field::Bucket))?,
            version_id,
            is_latest: flag(Field::IsLatest, &self.is_latest)?,
            is_delete_marker: flag(Field::IsDeleteMarker, &self.is_delete_marker)?,
            size,
            last_modified: Timestamp(
                self.last_modified
                    .get(i)
                    .ok_or_else(|| null(Field::LastModifiedDate))?,
            ),
            etag: self.etag.get(i).filter(|v| !v.is_empty()),
            is_multipart: self
                .is_multipart
                .as_ref()
                .and_then(|a| a.is_valid(i).then(|| a.value(i))),
            storage_class: optional(&self.storage_class, i),
            encryption_status: optional(&self.encryption_status, i),
            intelligent_tiering_access_tier: optional(&self.intelligent_tiering_access_tier, i),
        };
        parser.assemble(&values, out)
    }
}

/// An optional text value; an empty string counts as absent, as an empty CSV field does.
fn optional(a: &Option<Text>, i: usize) -> Option<&[u8]> {
    a.as_ref().and_then(|a| a.get(i)).filter(|v| !v.is_empty())
}
