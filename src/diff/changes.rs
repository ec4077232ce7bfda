//! What changed for one key between two listings (A older, B newer), version by version.

use std::collections::HashMap;

use crate::index::merge::KeyGroup;
use crate::model::record::VersionRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// A new content version.
    Added,
    /// A new delete marker: the key was deleted (if it is the latest).
    AddedDeleteMarker,
    /// A version that was the latest no longer is (overwritten or deleted).
    NowNoncurrent,
    /// A version became the latest again (e.g. a delete marker was removed).
    NowCurrent,
    /// The version is no longer listed: expired by a lifecycle rule or permanently deleted.
    Removed,
    /// Same version, other storage class (a lifecycle transition, a restore).
    MetadataChanged,
    /// Same key and version id with a different size, ETag or LastModified: S3 never does
    /// this for a real version id, so one of the listings is wrong.
    Anomaly,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 7] = [
        ChangeKind::Added,
        ChangeKind::AddedDeleteMarker,
        ChangeKind::NowNoncurrent,
        ChangeKind::NowCurrent,
        ChangeKind::Removed,
        ChangeKind::MetadataChanged,
        ChangeKind::Anomaly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::AddedDeleteMarker => "added-delete-marker",
            ChangeKind::NowNoncurrent => "now-noncurrent",
            ChangeKind::NowCurrent => "now-current",
            ChangeKind::Removed => "removed",
            ChangeKind::MetadataChanged => "metadata-changed",
            ChangeKind::Anomaly => "anomaly",
        }
    }
}

/// One change: `version` is the version as B lists it (as A listed it for `removed`);
/// `old` is A's record where both list the version.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub kind: ChangeKind,
    pub version: &'a VersionRecord,
    pub old: Option<&'a VersionRecord>,
}

/// Groups this small are matched by scanning; bigger ones through a hash map.
const SCAN_LIMIT: usize = 32;

/// Calls `emit` for every change of one key: B's versions in index order, then A's
/// versions that B no longer lists.
pub fn classify<'a>(group: &'a KeyGroup, emit: impl FnMut(Change<'a>)) {
    classify_versions(group.a(), group.b(), emit);
}

/// [`classify`] of one key's versions as A and B list them (the sync planner's A is the
/// catalog's versions that the last applied date listed).
pub fn classify_versions<'a>(
    a: &'a [VersionRecord],
    b: &'a [VersionRecord],
    mut emit: impl FnMut(Change<'a>),
) {
    let mut matched = Matched::new(a.len());
    let index: Option<HashMap<&str, usize>> = (a.len() > SCAN_LIMIT).then(|| {
        a.iter()
            .enumerate()
            .map(|(i, r)| (r.version_id.as_str(), i))
            .collect()
    });
    for new in b {
        let found = match &index {
            Some(map) => map.get(new.version_id.as_str()).copied(),
            None => a.iter().position(|r| r.version_id == new.version_id),
        };
        let Some(i) = found else {
            emit(Change {
                kind: added_kind(new),
                version: new,
                old: None,
            });
            continue;
        };
        let old = &a[i];
        let same_content = old.size == new.size
            && old.etag == new.etag
            && old.last_modified == new.last_modified
            && old.is_delete_marker() == new.is_delete_marker();
        if !same_content {
            if new.version_id.is_empty() {
                // The `null` version is the one id S3 reuses: writing a key while versioning
                // is suspended replaces it. That is a removal and an addition, not an anomaly;
                // the old record stays unmatched and is reported as removed below.
                emit(Change {
                    kind: added_kind(new),
                    version: new,
                    old: None,
                });
                continue;
            }
            matched.set(i);
            emit(Change {
                kind: ChangeKind::Anomaly,
                version: new,
                old: Some(old),
            });
            continue;
        }
        matched.set(i);
        match (old.is_latest(), new.is_latest()) {
            (true, false) => emit(Change {
                kind: ChangeKind::NowNoncurrent,
                version: new,
                old: Some(old),
            }),
            (false, true) => emit(Change {
                kind: ChangeKind::NowCurrent,
                version: new,
                old: Some(old),
            }),
            _ => {}
        }
        if old.storage_class != new.storage_class {
            emit(Change {
                kind: ChangeKind::MetadataChanged,
                version: new,
                old: Some(old),
            });
        }
    }
    for (i, old) in a.iter().enumerate() {
        if !matched.get(i) {
            emit(Change {
                kind: ChangeKind::Removed,
                version: old,
                old: None,
            });
        }
    }
}

/// Which of A's versions B also lists: a bit mask for the usual handful of versions, so a
/// diff of 10^8 keys does not allocate once per key.
enum Matched {
    Few(u64),
    Many(Vec<bool>),
}

impl Matched {
    fn new(n: usize) -> Matched {
        if n <= 64 {
            Matched::Few(0)
        } else {
            Matched::Many(vec![false; n])
        }
    }
    fn set(&mut self, i: usize) {
        match self {
            Matched::Few(bits) => *bits |= 1 << i,
            Matched::Many(v) => v[i] = true,
        }
    }
    fn get(&self, i: usize) -> bool {
        match self {
            Matched::Few(bits) => bits & (1 << i) != 0,
            Matched::Many(v) => v[i],
        }
    }
}

fn added_kind(r: &VersionRecord) -> ChangeKind {
    if r.is_delete_marker() {
        ChangeKind::AddedDeleteMarker
    } else {
        ChangeKind::Added
    }
}
