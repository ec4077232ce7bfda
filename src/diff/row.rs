//! One change as a line of output: the fields of `diff --format jsonl|csv`, and of the
//! change log a backup keeps per applied date (`.<stem>/changes/`, read by `changes`). One
//! struct for both, so the two can never drift apart.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::diff::changes::Change;

/// One change as printed; field names are stable (scripts rely on them). `old_*` fields
/// are A's values where both sides list the version. Borrowed when written from a
/// [`Change`]; owned when read back from a change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRow<'a> {
    pub change: Cow<'a, str>,
    pub key: Cow<'a, str>,
    pub version_id: Cow<'a, str>,
    pub is_latest: bool,
    pub is_delete_marker: bool,
    pub size: u64,
    pub last_modified: String,
    pub etag: String,
    pub storage_class: Cow<'a, str>,
    pub old_size: Option<u64>,
    pub old_last_modified: Option<String>,
    pub old_etag: Option<String>,
    pub old_storage_class: Option<Cow<'a, str>>,
}

impl<'a> ChangeRow<'a> {
    pub fn new(c: &Change<'a>) -> ChangeRow<'a> {
        let v = c.version;
        ChangeRow {
            change: Cow::Borrowed(c.kind.name()),
            key: Cow::Borrowed(&v.key),
            version_id: Cow::Borrowed(v.version_id_or_null()),
            is_latest: v.is_latest(),
            is_delete_marker: v.is_delete_marker(),
            size: v.size,
            last_modified: v.last_modified.to_string(),
            etag: v.etag.map(|e| e.to_string()).unwrap_or_default(),
            storage_class: Cow::Borrowed(v.storage_class.name()),
            old_size: c.old.map(|o| o.size),
            old_last_modified: c.old.map(|o| o.last_modified.to_string()),
            old_etag: c
                .old
                .map(|o| o.etag.map(|e| e.to_string()).unwrap_or_default()),
            old_storage_class: c.old.map(|o| Cow::Borrowed(o.storage_class.name())),
        }
    }
}
