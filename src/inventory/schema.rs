//! Inventory columns, mapped by name, and the rules that turn one row's values into a record.
//!
//! The column order depends on how the inventory was configured, and AWS keeps adding
//! optional fields, so nothing here assumes a position: names are looked up once per
//! manifest (CSV) or per data file (Parquet, ORC), unknown names are ignored. CSV names
//! its columns `LastModifiedDate`, the columnar formats `last_modified_date`: both map to
//! the same [`Field`]. Whatever the format, [`RowParser::assemble`] applies the same rules,
//! so the three formats of one bucket give the same records.

use anyhow::{Result, bail};

use crate::model::etag::ETag;
use crate::model::key::decode_form_key_into;
use crate::model::record::{Flags, StorageClass, VersionRecord};
use crate::model::timestamp::Timestamp;

/// The manifest's `fileFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
    Orc,
}

impl Format {
    pub fn from_manifest(name: &str) -> Option<Format> {
        match name.to_ascii_uppercase().as_str() {
            "CSV" => Some(Format::Csv),
            "PARQUET" => Some(Format::Parquet),
            "ORC" => Some(Format::Orc),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::Parquet => "Parquet",
            Format::Orc => "ORC",
        }
    }

    /// The column names a `fileSchema` of this format lists, in order: CSV's is a
    /// comma-separated list, Parquet's a message type (`optional int64 size;`), ORC's a
    /// struct type (`struct<bucket:string,...>`).
    pub fn schema_names(self, schema: &str) -> Vec<String> {
        match self {
            Format::Csv => schema.split(',').map(|n| n.trim().to_string()).collect(),
            Format::Parquet => {
                static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
                    regex::Regex::new(r"(?:required|optional|repeated)\s+\w+\s+(\w+)")
                        .expect("a valid regex")
                });
                RE.captures_iter(schema).map(|c| c[1].to_string()).collect()
            }
            Format::Orc => {
                static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
                    regex::Regex::new(r"[<,]\s*(\w+)\s*:").expect("a valid regex")
                });
                RE.captures_iter(schema).map(|c| c[1].to_string()).collect()
            }
        }
    }
}

/// The fields this program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Bucket,
    Key,
    VersionId,
    IsLatest,
    IsDeleteMarker,
    Size,
    LastModifiedDate,
    ETag,
    IsMultipartUploaded,
    StorageClass,
    EncryptionStatus,
    IntelligentTieringAccessTier,
}

impl Field {
    pub(super) const ALL: [Field; 12] = [
        Field::Bucket,
        Field::Key,
        Field::VersionId,
        Field::IsLatest,
        Field::IsDeleteMarker,
        Field::Size,
        Field::LastModifiedDate,
        Field::ETag,
        Field::IsMultipartUploaded,
        Field::StorageClass,
        Field::EncryptionStatus,
        Field::IntelligentTieringAccessTier,
    ];
    const REQUIRED: [Field; 5] = [
        Field::Bucket,
        Field::Key,
        Field::Size,
        Field::LastModifiedDate,
        Field::ETag,
    ];
    const VERSIONED: [Field; 3] = [Field::VersionId, Field::IsLatest, Field::IsDeleteMarker];

    /// (CSV name, columnar name).
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Field::Bucket => ("Bucket", "bucket"),
            Field::Key => ("Key", "key"),
            Field::VersionId => ("VersionId", "version_id"),
            Field::IsLatest => ("IsLatest", "is_latest"),
            Field::IsDeleteMarker => ("IsDeleteMarker", "is_delete_marker"),
            Field::Size => ("Size", "size"),
            Field::LastModifiedDate => ("LastModifiedDate", "last_modified_date"),
            Field::ETag => ("ETag", "e_tag"),
            Field::IsMultipartUploaded => ("IsMultipartUploaded", "is_multipart_uploaded"),
            Field::StorageClass => ("StorageClass", "storage_class"),
            Field::EncryptionStatus => ("EncryptionStatus", "encryption_status"),
            Field::IntelligentTieringAccessTier => (
                "IntelligentTieringAccessTier",
                "intelligent_tiering_access_tier",
            ),
        }
    }

    /// The name as `format` spells it, for messages.
    pub fn name(self, format: Format) -> &'static str {
        match format {
            Format::Csv => self.names().0,
            Format::Parquet | Format::Orc => self.names().1,
        }
    }

    /// True if `name` is this field's column, in either spelling.
    pub(super) fn matches(self, name: &str) -> bool {
        let wanted = self.names().0;
        let mut got = name.bytes().filter(|&b| b != b'_');
        wanted
            .bytes()
            .all(|w| got.next().is_some_and(|g| g.eq_ignore_ascii_case(&w)))
            && got.next().is_none()
    }
}

/// Where each field is among a list of column names (a CSV row's fields, or a columnar
/// file's projected columns).
#[derive(Debug, Clone)]
pub struct Columns {
    pub format: Format,
    pub count: usize,
    position: [Option<usize>; Field::ALL.len()],
}

impl Columns {
    /// Maps a CSV `fileSchema` ("Bucket, Key, VersionId, ...") to positions.
    pub fn from_schema(schema: &str) -> Result<Columns> {
        Columns::from_file_schema(Format::Csv, schema)
    }

    /// Maps the manifest's `fileSchema` of `format`. For the columnar formats this is an
    /// early check only: each data file's own schema is mapped again when it is read.
    pub fn from_file_schema(format: Format, schema: &str) -> Result<Columns> {
        let names = format.schema_names(schema);
        if names.is_empty() {
            bail!(
                "fileSchema {schema:?} is not a {} schema, as fileFormat says it is",
                format.name()
            );
        }
        Columns::from_names(format, &names)
            .map_err(|e| anyhow::anyhow!("fileSchema {e} (fileSchema: {schema:?})"))
    }

    /// Maps `names`. Missing required columns are named all at once, so a misconfigured
    /// inventory is fixed in one go.
    pub fn from_names<S: AsRef<str>>(format: Format, names: &[S]) -> Result<Columns> {
        let mut position = [None; Field::ALL.len()];
        for (slot, field) in position.iter_mut().zip(Field::ALL) {
            *slot = names.iter().position(|n| field.matches(n.as_ref()));
        }
        let columns = Columns {
            format,
            count: names.len(),
            position,
        };
        let missing = columns.names_of(
            Field::REQUIRED
                .iter()
                .filter(|f| columns.get(**f).is_none()),
        );
        if !missing.is_empty() {
            bail!("lacks required column(s) {missing}; the inventory must include them");
        }
        let present = columns.names_of(
            Field::VERSIONED
                .iter()
                .filter(|f| columns.get(**f).is_some()),
        );
        let absent = columns.names_of(
            Field::VERSIONED
                .iter()
                .filter(|f| columns.get(**f).is_none()),
        );
        if !present.is_empty() && !absent.is_empty() {
            bail!("has {present} but lacks {absent}; an all-versions inventory has all three");
        }
        Ok(columns)
    }

    fn names_of<'a>(&self, fields: impl Iterator<Item = &'a Field>) -> String {
        fields
            .map(|f| f.name(self.format))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The position of `field`, if the inventory has it.
    pub fn get(&self, field: Field) -> Option<usize> {
        // ALL lists the fields in declaration order, so the discriminant is the slot: this
        // runs a dozen times per CSV row.
        self.position[field as usize]
    }

    /// The name of `field` as this format spells it.
    pub fn name(&self, field: Field) -> &'static str {
        field.name(self.format)
    }

    /// False for a current-versions-only inventory: every row is then the latest version,
    /// and history comes only from what consecutive inventories showed.
    pub fn has_versions(&self) -> bool {
        self.get(Field::VersionId).is_some()
    }
}

/// Why a row was refused: the column (by name) and what was wrong with it.
#[derive(Debug)]
pub struct RowError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "field {}: {}", self.field, self.message)
        }
    }
}

pub(super) fn bad(field: &'static str, message: impl Into<String>) -> RowError {
    RowError {
        field,
        message: message.into(),
    }
}

fn boolean(field: &'static str, v: &[u8]) -> Result<bool, RowError> {
    match v {
        b"true" => Ok(true),
        b"false" => Ok(false),
        _ => Err(bad(
            field,
            format!(
                "expected true or false, found {:?}",
                String::from_utf8_lossy(v)
            ),
        )),
    }
}

/// One row's values, typed, before the rules that relate them are applied. A `None` is an
/// absent column or an empty (CSV) / null (columnar) value; the reader has already refused
/// a null where the column itself demands a value.
#[derive(Debug, Default)]
pub struct Values<'a> {
    pub bucket: &'a [u8],
    pub version_id: Option<&'a str>,
    pub is_latest: Option<bool>,
    pub is_delete_marker: Option<bool>,
    pub size: Option<u64>,
    pub last_modified: Timestamp,
    pub etag: Option<&'a [u8]>,
    pub is_multipart: Option<bool>,
    pub storage_class: Option<&'a [u8]>,
    pub encryption_status: Option<&'a [u8]>,
    pub intelligent_tiering_access_tier: Option<&'a [u8]>,
}

/// Turns rows of one manifest into records.
#[derive(Debug, Clone)]
pub struct RowParser {
    columns: Columns,
    source_bucket: Vec<u8>,
}

impl RowParser {
    pub fn new(columns: Columns, source_bucket: &str) -> RowParser {
        RowParser {
            columns,
            source_bucket: source_bucket.as_bytes().to_vec(),
        }
    }

    /// The columns the manifest's fileSchema names.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Fills `out` from one CSV record (its buffers are reused).
    pub fn parse(&self, row: &csv::ByteRecord, out: &mut VersionRecord) -> Result<(), RowError> {
        let c = &self.columns;
        if row.len() != c.count {
            return Err(bad(
                "",
                format!(
                    "expected {} fields (per fileSchema), found {}",
                    c.count,
                    row.len()
                ),
            ));
        }
        let field = |f: Field| c.get(f).map(|i| &row[i]);
        let text = |f: Field| field(f).filter(|v| !v.is_empty());
        let flag = |f: Field| text(f).map(|v| boolean(c.name(f), v)).transpose();
        let key = field(Field::Key).expect("a required column");
        decode_form_key_into(key, &mut out.key).map_err(|e| bad("Key", e.to_string()))?;
        let version_id = field(Field::VersionId)
            .map(|v| std::str::from_utf8(v).map_err(|_| bad("VersionId", "not UTF-8")))
            .transpose()?;
        let required_flag = |f: Field| field(f).map(|v| boolean(c.name(f), v)).transpose();
        let lm = field(Field::LastModifiedDate).expect("a required column");
        let last_modified = Timestamp::parse(lm).ok_or_else(|| {
            bad(
                "LastModifiedDate",
                format!("not a timestamp: {:?}", String::from_utf8_lossy(lm)),
            )
        })?;
        let size = text(Field::Size)
            .map(|v| {
                parse_u64(v).ok_or_else(|| {
                    bad(
                        "Size",
                        format!("not a size: {:?}", String::from_utf8_lossy(v)),
                    )
                })
            })
            .transpose()?;
        let values = Values {
            bucket: field(Field::Bucket).expect("a required column"),
            version_id,
            is_latest: required_flag(Field::IsLatest)?,
            is_delete_marker: required_flag(Field::IsDeleteMarker)?,
            size,
            last_modified,
            etag: text(Field::ETag),
            is_multipart: flag(Field::IsMultipartUploaded)?,
            storage_class: text(Field::StorageClass),
            encryption_status: text(Field::EncryptionStatus),
            intelligent_tiering_access_tier: text(Field::IntelligentTieringAccessTier),
        };
        self.assemble(&values, out)
    }

    /// Applies the rules every format shares to one row's values; `out.key` is already set.
    pub fn assemble(&self, v: &Values<'_>, out: &mut VersionRecord) -> Result<(), RowError> {
        let name = |f: Field| self.columns.name(f);
        if v.bucket != self.source_bucket.as_slice() {
            return Err(bad(
                name(Field::Bucket),
                format!(
                    "{:?} is not the manifest's sourceBucket {:?}",
                    String::from_utf8_lossy(v.bucket),
                    String::from_utf8_lossy(&self.source_bucket)
                ),
            ));
        }
        out.version_id.clear();
        if let Some(vid) = v.version_id {
            out.version_id
                .push_str(crate::model::version_id::from_s3(vid));
        }
        let mut flags = Flags::default();
        flags.set(Flags::LATEST, v.is_latest.unwrap_or(true));
        let delete_marker = v.is_delete_marker.unwrap_or(false);
        flags.set(Flags::DELETE_MARKER, delete_marker);
        out.last_modified = v.last_modified;
        if delete_marker {
            // AWS leaves these empty for delete markers; tolerate a 0 size.
            if !matches!(v.size, None | Some(0)) || v.etag.is_some() {
                return Err(bad(name(Field::Size), "a delete marker has a size or ETag"));
            }
            out.size = 0;
            out.etag = None;
        } else {
            out.size = v
                .size
                .ok_or_else(|| bad(name(Field::Size), "missing (not a delete marker)"))?;
            let etag = v.etag.unwrap_or_default();
            let e = ETag::parse(etag).ok_or_else(|| {
                bad(
                    name(Field::ETag),
                    format!("not an ETag: {:?}", String::from_utf8_lossy(etag)),
                )
            })?;
            out.etag = Some(e);
        }
        flags.set(
            Flags::MULTIPART,
            v.is_multipart.unwrap_or(false) || out.etag.is_some_and(|e| e.is_multipart()),
        );
        out.storage_class = match v.storage_class {
            None => StorageClass::NONE,
            Some(name) => StorageClass::from_name(name).unwrap_or_else(|| {
                warn_unknown_class(name);
                StorageClass::OTHER
            }),
        };
        if out.storage_class.name() == "INTELLIGENT_TIERING"
            && matches!(
                v.intelligent_tiering_access_tier,
                Some(b"ARCHIVE_ACCESS" | b"DEEP_ARCHIVE_ACCESS")
            )
        {
            out.storage_class =
                StorageClass::from_name(b"INTELLIGENT_TIERING_ARCHIVE").expect("a known class");
        }
        // Only plaintext and SSE-S3 objects have ETags computed from MD5s of the content;
        // SSE-KMS, SSE-C and DSSE ETags are opaque (checked by S3's checksum, or size).
        let md5_etag = matches!(
            v.encryption_status,
            None | Some(b"NOT-SSE") | Some(b"SSE-S3")
        );
        flags.set(Flags::SSE_C, v.encryption_status == Some(b"SSE-C"));
        flags.set(Flags::ETAG_IS_MD5, md5_etag && out.etag.is_some());
        out.flags = flags;
        Ok(())
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

fn warn_unknown_class(name: &[u8]) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "unknown storage class {:?}, recorded as OTHER",
            String::from_utf8_lossy(name)
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, IsMultipartUploaded";

    fn row(line: &str) -> csv::ByteRecord {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let mut rec = csv::ByteRecord::new();
        r.read_byte_record(&mut rec).unwrap();
        rec
    }

    /// The real dandiarchive rows quoted in DESIGN.md.
    #[test]
    fn parses_real_dandiarchive_rows() {
        let p = RowParser::new(Columns::from_schema(SCHEMA).unwrap(), "dandiarchive");
        let mut rec = VersionRecord::default();
        p.parse(&row(r#""dandiarchive","zarr/73fb586f-b58a-49fc-876e-282ba962d310/0/0/0/14/4/100","nuYD8l5blCvLV3DbAiN1IXuwo7aF3F98","true","false","1511723","2022-12-12T13:20:39.000Z","627c47efe292876b91978324485cd2ec","false""#), &mut rec).unwrap();
        assert_eq!(
            rec.key,
            "zarr/73fb586f-b58a-49fc-876e-282ba962d310/0/0/0/14/4/100"
        );
        assert_eq!(rec.version_id, "nuYD8l5blCvLV3DbAiN1IXuwo7aF3F98");
        assert!(
            rec.is_latest() && !rec.is_delete_marker() && !rec.is_multipart() && rec.etag_is_md5()
        );
        assert_eq!(rec.size, 1511723);
        assert_eq!(rec.last_modified.to_string(), "2022-12-12T13:20:39.000Z");
        assert_eq!(
            rec.etag.unwrap().to_string(),
            "627c47efe292876b91978324485cd2ec"
        );

        p.parse(&row(r#""dandiarchive","zarr/73fb586f-b58a-49fc-876e-282ba962d310/0/0/0/14/4/100","t5w9XO56_Yi1eF6HE7KUgoLumufisMyo","false","true","","2022-12-11T17:55:08.000Z","","""#), &mut rec).unwrap();
        assert_eq!(rec.version_id, "t5w9XO56_Yi1eF6HE7KUgoLumufisMyo");
        assert!(!rec.is_latest() && rec.is_delete_marker() && !rec.etag_is_md5());
        assert_eq!((rec.size, rec.etag), (0, None));
    }

    #[test]
    fn maps_columns_by_name_in_any_order() {
        let schema = "Key, Size, Bucket, StorageClass, ETag, ObjectOwner, LastModifiedDate, IsDeleteMarker, VersionId, IsLatest, EncryptionStatus";
        let p = RowParser::new(Columns::from_schema(schema).unwrap(), "b");
        let mut rec = VersionRecord::default();
        p.parse(&row(r#""a+b%2Bc","5","b","GLACIER","627c47efe292876b91978324485cd2ec-3","someone","2022-12-12T13:20:39.000Z","false","","true","SSE-KMS""#), &mut rec).unwrap();
        assert_eq!(rec.key, "a b+c");
        assert_eq!(rec.version_id_or_null(), "null");
        assert_eq!(rec.storage_class.name(), "GLACIER");
        assert!(rec.is_multipart() && !rec.etag_is_md5());
    }

    #[test]
    fn names_missing_columns() {
        let err = Columns::from_schema("Bucket, Key, VersionId, IsLatest, IsDeleteMarker")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Size, LastModifiedDate, ETag"), "{err}");
        let err = Columns::from_schema("Bucket, Key, Size, LastModifiedDate, ETag, VersionId")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks IsLatest, IsDeleteMarker"), "{err}");
        assert!(
            !Columns::from_schema("Bucket, Key, Size, LastModifiedDate, ETag")
                .unwrap()
                .has_versions()
        );
    }

    #[test]
    fn reports_the_bad_field() {
        let p = RowParser::new(Columns::from_schema(SCHEMA).unwrap(), "b");
        let mut rec = VersionRecord::default();
        let cases = [
            (
                r#""b","k","v","yes","false","1","2022-12-12T13:20:39.000Z","627c47efe292876b91978324485cd2ec","false""#,
                "IsLatest",
            ),
            (
                r#""b","k","v","true","false","x","2022-12-12T13:20:39.000Z","627c47efe292876b91978324485cd2ec","false""#,
                "Size",
            ),
            (
                r#""b","k","v","true","false","1","yesterday","627c47efe292876b91978324485cd2ec","false""#,
                "LastModifiedDate",
            ),
            (
                r#""b","k","v","true","false","1","2022-12-12T13:20:39.000Z","nope","false""#,
                "ETag",
            ),
            (
                r#""b","k%FF","v","true","false","1","2022-12-12T13:20:39.000Z","627c47efe292876b91978324485cd2ec","false""#,
                "Key",
            ),
            (
                r#""other","k","v","true","false","1","2022-12-12T13:20:39.000Z","627c47efe292876b91978324485cd2ec","false""#,
                "Bucket",
            ),
        ];
        for (line, field) in cases {
            let err = p.parse(&row(line), &mut rec).unwrap_err();
            assert_eq!(err.field, field, "{line}: {err}");
        }
        let err = p.parse(&row(r#""b","k","v""#), &mut rec).unwrap_err();
        assert!(err.to_string().contains("expected 9 fields"), "{err}");
    }

    /// AWS's own fileSchema strings for the columnar formats (from its manifest examples).
    #[test]
    fn maps_columnar_schemas_by_name() {
        let parquet = "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; optional int64 size; optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); optional binary storage_class (UTF8); optional boolean is_multipart_uploaded; optional binary encryption_status (UTF8)}";
        let orc = "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,size:bigint,last_modified_date:timestamp,e_tag:string,storage_class:string,is_multipart_uploaded:boolean,replication_status:string,encryption_status:string,intelligent_tiering_access_tier:string>";
        for (format, schema) in [(Format::Parquet, parquet), (Format::Orc, orc)] {
            let c = Columns::from_file_schema(format, schema).unwrap();
            assert!(c.has_versions(), "{format:?}");
            assert_eq!(c.get(Field::ETag), Some(7), "{format:?}");
            assert_eq!(c.get(Field::LastModifiedDate), Some(6), "{format:?}");
            assert_eq!(c.name(Field::ETag), "e_tag");
        }
        let err = Columns::from_file_schema(
            Format::Orc,
            "struct<bucket:string,key:string,size:bigint,e_tag:string>",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("lacks required column(s) last_modified_date"),
            "{err}"
        );
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i, "Field::ALL is in declaration order");
        }
        // A name must match whole: a longer name is another column.
        assert!(!Field::Key.matches("key_hash") && Field::Key.matches("KEY"));
    }
}
