//! The data model every stage shares: one object version as an inventory row lists it
//! ([`record::VersionRecord`], with the local half a backup adds), its ETag, its key as
//! S3 spells it in CSV (percent-encoded), millisecond timestamps, and [`version_id`]: the
//! `null` version rules.
//!
//! Invariants: a record's key is the decoded UTF-8 key; a `null` version is stored as the
//! empty version id (S3's own spelling, "null", only at the edges: inventory rows, requests,
//! file names); timestamps are milliseconds since the epoch, UTC.

pub mod checksum;
pub mod etag;
pub mod key;
pub mod record;
pub mod timestamp;
pub mod version_id;
