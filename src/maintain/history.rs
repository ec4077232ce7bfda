//! Reading a backup's history from its catalog: every version held of a key, and which one
//! was current at a given time. Readers take no lock (the catalog is replaced atomically).

use anyhow::{Result, bail};
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::catalog::{file_path, is_current};
use crate::model::record::{LocalState, VersionRecord};
use crate::model::timestamp::Timestamp;

/// One version of a key as the backup holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    pub key: String,
    pub version_id: String,
    pub last_modified: String,
    pub size: u64,
    pub etag: Option<String>,
    /// current / noncurrent / delete-marker, and gone-from-bucket when no longer listed.
    pub status: String,
    /// present / missing / archived / skipped.
    pub local: &'static str,
    /// The file, relative to the backup root (none for delete markers and versions not held).
    pub path: Option<String>,
    /// Inventory dates (ms) as recorded by sync.
    pub first_seen: String,
    pub noncurrent_since: Option<String>,
    pub gone_since: Option<String>,
    /// How the file was verified when fetched (MD5, multipart ETag, CRC64NVME, ..., size
    /// only; none where not recorded).
    pub verified: Option<&'static str>,
}

/// Every version of `key` in the catalog, oldest first: a seek to the key's block, not a scan.
pub fn versions_of(backup: &Backup, key: &str) -> Result<Vec<VersionRecord>> {
    let reader = backup.catalog()?;
    let mut stream = reader.stream_prefix(key);
    let mut out = Vec::new();
    while let Some(rec) = stream.next_record()? {
        if rec.key == key {
            out.push(rec.clone());
        } else if rec.key.as_str() > key && !rec.key.starts_with(key) {
            break;
        }
    }
    Ok(out)
}

pub fn describe(backup: &Backup, rec: &VersionRecord) -> Located {
    let mut status = if rec.is_delete_marker() {
        "delete-marker"
    } else if is_current(rec) {
        "current"
    } else {
        "noncurrent"
    }
    .to_string();
    if rec.local.gone_since.0 != 0 {
        status.push_str(", gone-from-bucket");
    }
    if rec.local.shadowed {
        status.push_str(", shadowed-by-directory");
    }
    let when = |t: Timestamp| (t.0 != 0).then(|| t.to_string());
    Located {
        key: rec.key.clone(),
        version_id: rec.version_id_or_null().to_string(),
        last_modified: rec.last_modified.to_string(),
        size: rec.size,
        etag: rec.etag.map(|e| e.to_string()),
        status,
        local: rec.local.state.name(),
        path: file_path(&backup.stem, rec),
        first_seen: rec.local.first_seen.to_string(),
        noncurrent_since: when(rec.local.noncurrent_since),
        gone_since: when(rec.local.gone_since),
        verified: (rec.local.check != crate::model::record::Check::Unknown)
            .then(|| rec.local.check.name()),
    }
}

/// The version that was the key's content at `at`: the newest with last_modified <= `at`.
/// None if the key did not exist yet; a delete marker if it was deleted then. Versions
/// written within one clock tick share a LastModified; among those, the one the inventory
/// marks latest (if it is one of them) is the newest. A version permanently deleted from the
/// bucket (a removed delete marker: an undelete; an expiration) stops counting from the first
/// inventory date that no longer listed it -- the backup knows deletions to the day.
pub fn version_at(versions: &[VersionRecord], at: Timestamp) -> Option<&VersionRecord> {
    versions
        .iter()
        .filter(|v| v.last_modified <= at)
        .filter(|v| v.local.gone_since.0 == 0 || v.local.gone_since > at)
        .max_by_key(|v| (v.last_modified, v.is_latest()))
}

/// Parses a point in time for `--at`: RFC 3339 with `Z` or a numeric offset
/// (`2024-11-06T12:00:00Z`, `2024-11-06T14:00:00+02:00`), or a date `YYYY-MM-DD`, which
/// means the end of that day in UTC (the bucket as the day left it).
pub fn parse_time(s: &str) -> Result<Timestamp> {
    if s.len() == 10
        && let Some(t) = Timestamp::parse(format!("{s}T23:59:59.999Z").as_bytes())
    {
        return Ok(t);
    }
    if let Some(t) = Timestamp::parse(s.as_bytes()) {
        return Ok(t);
    }
    // A numeric offset: local time minus the offset is UTC.
    if s.len() > 6 {
        let (body, offset) = s.split_at(s.len() - 6);
        let o = offset.as_bytes();
        if (o[0] == b'+' || o[0] == b'-') && o[3] == b':' {
            let digits = |r: std::ops::Range<usize>| offset[r].parse::<i64>().ok();
            if let (Some(h), Some(m), Some(t)) = (
                digits(1..3),
                digits(4..6),
                Timestamp::parse(format!("{body}Z").as_bytes()),
            ) {
                let sign = if o[0] == b'+' { 1 } else { -1 };
                return Ok(Timestamp(t.0 - sign * (h * 60 + m) * 60_000));
            }
        }
    }
    bail!(
        "bad time {s:?}: use RFC 3339 with a zone (2024-11-06T12:00:00Z, \
         2024-11-06T14:00:00+02:00) or a date (2024-11-06: the end of that day, UTC)"
    )
}

/// Is the version's content held (a file to hand out)?
pub fn is_held(rec: &VersionRecord) -> bool {
    rec.local.state == LocalState::Present && !rec.is_delete_marker()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let z = parse_time("2024-11-06T12:00:00Z").unwrap();
        assert_eq!(parse_time("2024-11-06T14:00:00+02:00").unwrap(), z);
        assert_eq!(parse_time("2024-11-06T07:30:00-04:30").unwrap(), z);
        assert_eq!(
            parse_time("2024-11-06").unwrap(),
            parse_time("2024-11-06T23:59:59.999Z").unwrap()
        );
        for bad in ["2024-11-06T12:00:00", "yesterday", "2024-13-01", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
