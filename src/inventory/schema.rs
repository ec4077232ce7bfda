//! Inventory columns, mapped by name from the manifest's fileSchema, and the row parser.
//!
//! The column order depends on how the inventory was configured, and AWS keeps adding
//! optional fields, so nothing here assumes a position: names are looked up once per
//! manifest, unknown names are ignored.

use anyhow::{Result, bail};

use crate::model::etag::ETag;
use crate::model::key::decode_form_key_into;
use crate::model::record::{Flags, StorageClass, VersionRecord};
use crate::model::timestamp::Timestamp;

/// Column positions of the fields this program reads.
#[derive(Debug, Clone)]
pub struct Columns {
    pub count: usize,
    bucket: usize,
    key: usize,
    size: usize,
    last_modified: usize,
    etag: usize,
    version_id: Option<usize>,
    is_latest: Option<usize>,
    is_delete_marker: Option<usize>,
    is_multipart: Option<usize>,
    storage_class: Option<usize>,
    encryption_status: Option<usize>,
    intelligent_tiering_access_tier: Option<usize>,
}

impl Columns {
    /// Maps `fileSchema` ("Bucket, Key, VersionId, ...") to positions. Missing required
    /// columns are named all at once, so a misconfigured inventory is fixed in one go.
    pub fn from_schema(schema: &str) -> Result<Columns> {
        let names: Vec<&str> = schema.split(',').map(str::trim).collect();
        let find = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
        let required = ["Bucket", "Key", "Size", "LastModifiedDate", "ETag"];
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|n| find(n).is_none())
            .collect();
        if !missing.is_empty() {
            bail!(
                "fileSchema lacks required column(s) {}; the inventory must include them (fileSchema: {schema:?})",
                missing.join(", ")
            );
        }
        let versioned = ["VersionId", "IsLatest", "IsDeleteMarker"];
        let present: Vec<&str> = versioned
            .iter()
            .copied()
            .filter(|n| find(n).is_some())
            .collect();
        if !present.is_empty() && present.len() != versioned.len() {
            let absent: Vec<&str> = versioned
                .iter()
                .copied()
                .filter(|n| find(n).is_none())
                .collect();
            bail!(
                "fileSchema has {} but lacks {}; an all-versions inventory has all three (fileSchema: {schema:?})",
                present.join(", "),
                absent.join(", ")
            );
        }
        Ok(Columns {
            count: names.len(),
            bucket: find("Bucket").expect("checked"),
            key: find("Key").expect("checked"),
            size: find("Size").expect("checked"),
            last_modified: find("LastModifiedDate").expect("checked"),
            etag: find("ETag").expect("checked"),
            version_id: find("VersionId"),
            is_latest: find("IsLatest"),
            is_delete_marker: find("IsDeleteMarker"),
            is_multipart: find("IsMultipartUploaded"),
            storage_class: find("StorageClass"),
            encryption_status: find("EncryptionStatus"),
            intelligent_tiering_access_tier: find("IntelligentTieringAccessTier"),
        })
    }

    /// False for a current-versions-only inventory: every row is then the latest version,
    /// and history comes only from what consecutive inventories showed.
    pub fn has_versions(&self) -> bool {
        self.version_id.is_some()
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

fn bad(field: &'static str, message: impl Into<String>) -> RowError {
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

/// Parses CSV rows of one manifest into records.
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
        let field = |i: usize| &row[i];
        if field(c.bucket) != self.source_bucket.as_slice() {
            return Err(bad(
                "Bucket",
                format!(
                    "{:?} is not the manifest's sourceBucket {:?}",
                    String::from_utf8_lossy(field(c.bucket)),
                    String::from_utf8_lossy(&self.source_bucket)
                ),
            ));
        }
        decode_form_key_into(field(c.key), &mut out.key).map_err(|e| bad("Key", e.to_string()))?;
        out.version_id.clear();
        let mut flags = Flags::default();
        if let Some(i) = c.version_id {
            let vid = std::str::from_utf8(field(i)).map_err(|_| bad("VersionId", "not UTF-8"))?;
            out.version_id
                .push_str(crate::model::version_id::from_s3(vid));
        }
        match c.is_latest {
            Some(i) => flags.set(Flags::LATEST, boolean("IsLatest", field(i))?),
            None => flags.set(Flags::LATEST, true),
        }
        let delete_marker = match c.is_delete_marker {
            Some(i) => boolean("IsDeleteMarker", field(i))?,
            None => false,
        };
        flags.set(Flags::DELETE_MARKER, delete_marker);
        out.last_modified = Timestamp::parse(field(c.last_modified)).ok_or_else(|| {
            bad(
                "LastModifiedDate",
                format!(
                    "not a timestamp: {:?}",
                    String::from_utf8_lossy(field(c.last_modified))
                ),
            )
        })?;
        let size = field(c.size);
        let etag = field(c.etag);
        if delete_marker {
            // AWS leaves these empty for delete markers; tolerate a 0 size.
            if !(size.is_empty() || size == b"0") || !etag.is_empty() {
                return Err(bad("Size", "a delete marker has a size or ETag"));
            }
            out.size = 0;
            out.etag = None;
        } else {
            out.size = parse_u64(size).ok_or_else(|| {
                bad(
                    "Size",
                    format!("not a size: {:?}", String::from_utf8_lossy(size)),
                )
            })?;
            let e = ETag::parse(etag).ok_or_else(|| {
                bad(
                    "ETag",
                    format!("not an ETag: {:?}", String::from_utf8_lossy(etag)),
                )
            })?;
            out.etag = Some(e);
        }
        let multipart = match c.is_multipart.map(field) {
            Some(b"") | None => false,
            Some(v) => boolean("IsMultipartUploaded", v)?,
        };
        flags.set(
            Flags::MULTIPART,
            multipart || out.etag.is_some_and(|e| e.is_multipart()),
        );
        out.storage_class = match c.storage_class.map(field) {
            None | Some(b"") => StorageClass::NONE,
            Some(name) => StorageClass::from_name(name).unwrap_or_else(|| {
                warn_unknown_class(name);
                StorageClass::OTHER
            }),
        };
        if out.storage_class.name() == "INTELLIGENT_TIERING"
            && matches!(
                c.intelligent_tiering_access_tier.map(field),
                Some(b"ARCHIVE_ACCESS" | b"DEEP_ARCHIVE_ACCESS")
            )
        {
            out.storage_class =
                StorageClass::from_name(b"INTELLIGENT_TIERING_ARCHIVE").expect("a known class");
        }
        // Only plaintext and SSE-S3 objects have ETags computed from MD5s of the content;
        // SSE-KMS, SSE-C and DSSE ETags are opaque (checked by S3's checksum, or size).
        let encryption = c.encryption_status.map(field);
        let md5_etag = matches!(
            encryption,
            None | Some(b"") | Some(b"NOT-SSE") | Some(b"SSE-S3")
        );
        flags.set(Flags::SSE_C, encryption == Some(b"SSE-C"));
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
}
