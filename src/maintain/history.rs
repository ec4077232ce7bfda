//! Reading a backup's history from its catalog: every version held of a key, and which one
//! was current at a given time. Readers take no lock (the catalog is replaced atomically).

use anyhow::{Result, bail};
use serde::Serialize;

use crate::backup::Backup;
use crate::backup::catalog::{file_path, is_current};
use crate::inventory::InventoryDate;
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

/// The applied dates' moments, oldest first: what `--at` needs besides a key's versions.
/// At a date's moment the backup knows the bucket exactly (that date's inventory said
/// which version was latest); between two dates only LastModified says more.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    dates: Vec<Timestamp>,
}

impl Timeline {
    pub fn of(backup: &Backup) -> Result<Timeline> {
        let state = backup.read_state()?;
        let mut dates: Vec<Timestamp> = state
            .applied
            .iter()
            .filter_map(|a| InventoryDate::parse(&a.date).map(|d| d.timestamp()))
            .collect();
        dates.sort();
        Ok(Timeline { dates })
    }

    pub fn new(mut dates: Vec<Timestamp>) -> Timeline {
        dates.sort();
        Timeline { dates }
    }

    /// The version that was the key's content at `at`: None if the key did not exist yet,
    /// a delete marker if it was deleted then.
    ///
    /// The versions that count are those the last date at or before `at` listed, and those
    /// first listed by the next date whose LastModified falls between the two dates and at
    /// or before `at`. (One first listed later, with a LastModified before the date that
    /// did not list it -- a multipart upload begun before and completed after -- counts
    /// from the date that first listed it: the inventories contradict its LastModified.)
    /// Of those, the newest in S3's order ([`crate::model::record::Local::rank`], from the
    /// inventories' IsLatest), so that at a date's moment the answer is exactly what that
    /// date listed as latest, even where its LastModified is later than the date's folder
    /// time (an inventory generated after the time its folder names): the inventory is the
    /// authority at its date. A version no longer listed (permanently deleted: a removed
    /// delete marker, an expiration) counts until the first date that did not list it.
    /// Versions of catalogs from before ranks (rank 0) are ordered by LastModified, the one
    /// last listed as latest winning ties.
    pub fn version_at<'a>(
        &self,
        versions: &'a [VersionRecord],
        at: Timestamp,
    ) -> Option<&'a VersionRecord> {
        let after = self.dates.partition_point(|d| *d <= at);
        let prev = after.checked_sub(1).map(|i| self.dates[i]);
        let next = self.dates.get(after).copied();
        versions
            .iter()
            .filter(|v| {
                let listed_then = v.local.first_seen <= at
                    && (v.local.gone_since.0 == 0 || v.local.gone_since > at);
                let arriving = next == Some(v.local.first_seen)
                    && v.last_modified <= at
                    && prev.is_none_or(|p| v.last_modified > p);
                listed_then || arriving
            })
            .max_by_key(|v| (v.local.rank, v.last_modified, v.is_latest()))
    }
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
    use crate::model::record::{Flags, Local};

    fn v(id: &str, lm: i64, rank: u32, first_seen: i64, gone: i64, latest: bool) -> VersionRecord {
        VersionRecord {
            key: "k".into(),
            version_id: id.into(),
            last_modified: Timestamp(lm),
            flags: Flags(if latest { Flags::LATEST } else { 0 }),
            local: Local {
                rank,
                first_seen: Timestamp(first_seen),
                gone_since: Timestamp(gone),
                ..Local::default()
            },
            ..VersionRecord::default()
        }
    }

    fn at<'a>(t: &Timeline, versions: &'a [VersionRecord], when: i64) -> Option<&'a str> {
        t.version_at(versions, Timestamp(when))
            .map(|v| v.version_id.as_str())
    }

    /// Dates at 100, 200, 300. Versions of one second tie on LastModified: the rank (the
    /// inventories' IsLatest) decides; a version whose LastModified precedes the date that
    /// did not list it counts from the date that did; a version no longer listed counts
    /// until that date.
    #[test]
    fn the_rank_decides_at_dates_and_last_modified_between_them() {
        let t = Timeline::new(vec![Timestamp(300), Timestamp(100), Timestamp(200)]);
        let versions = [
            v("a", 50, 1, 100, 0, false),
            // Same second as a, listed latest on date 100: newer.
            v("b", 50, 2, 100, 300, false),
            // Begun at 90, listed from date 200 only (as latest).
            v("c", 90, 3, 200, 0, false),
            // Written at 250, listed from date 300.
            v("d", 250, 4, 300, 0, true),
        ];
        assert_eq!(at(&t, &versions, 40), None);
        assert_eq!(
            at(&t, &versions, 60),
            Some("b"),
            "before the first date: LastModified"
        );
        assert_eq!(at(&t, &versions, 100), Some("b"));
        assert_eq!(
            at(&t, &versions, 150),
            Some("b"),
            "c's LastModified is contradicted"
        );
        assert_eq!(at(&t, &versions, 200), Some("c"));
        assert_eq!(at(&t, &versions, 240), Some("c"));
        assert_eq!(
            at(&t, &versions, 260),
            Some("d"),
            "d's LastModified agrees with date 300"
        );
        assert_eq!(at(&t, &versions, 300), Some("d"));
        // Without d: b is gone from date 300, c remains.
        assert_eq!(at(&t, &versions[..3], 400), Some("c"));
        // A catalog from before ranks: LastModified, the one listed latest winning ties.
        let legacy = [v("x", 50, 0, 100, 0, false), v("y", 50, 0, 100, 0, true)];
        assert_eq!(at(&t, &legacy, 100), Some("y"));
    }

    /// A date folder stamped before what it lists (an inventory generated after the time
    /// its folder names): at the date's moment the inventory decides, LastModified after.
    #[test]
    fn the_inventory_decides_at_its_date_even_before_last_modified() {
        let t = Timeline::new(vec![Timestamp(100), Timestamp(200)]);
        let versions = [
            v("a", 50, 1, 100, 0, false),
            v("b", 150, 2, 100, 0, true),
            v("c", 500, 3, 200, 0, true),
        ];
        assert_eq!(at(&t, &versions, 100), Some("b"));
        assert_eq!(at(&t, &versions, 199), Some("b"));
        assert_eq!(at(&t, &versions, 200), Some("c"));
    }

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
