//! One version of one key: the unit that indexes hold, sort, merge and diff.

use std::cmp::Ordering;
use std::fmt;

use crate::model::etag::ETag;
use crate::model::timestamp::Timestamp;

/// Per-version booleans, packed as they are stored in an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const LATEST: u8 = 1;
    pub const DELETE_MARKER: u8 = 2;
    pub const MULTIPART: u8 = 4;
    /// The ETag is the MD5 of the content (or of the parts' MD5s for multipart uploads):
    /// false for SSE-KMS / SSE-C / DSSE objects, whose ETags are opaque.
    pub const ETAG_IS_MD5: u8 = 8;
    /// Encrypted with a customer-provided key (inventory EncryptionStatus `SSE-C`): a GET
    /// needs that key, which a backup does not have.
    pub const SSE_C: u8 = 16;
    /// Bits that an index may hold; others mean the file is from a newer format.
    pub const KNOWN: u8 = 0x1f;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    pub fn set(&mut self, bit: u8, on: bool) {
        if on { self.0 |= bit } else { self.0 &= !bit }
    }
}

/// S3 storage classes, stored as one byte. A class AWS adds later than this list is kept
/// as `Other` (its name is lost, its existence is not) and logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StorageClass(pub u8);

impl StorageClass {
    const NAMES: [&'static str; 14] = [
        "",
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "GLACIER",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "DEEP_ARCHIVE",
        "OUTPOSTS",
        "GLACIER_IR",
        "SNOW",
        "EXPRESS_ONEZONE",
        "OTHER",
        // INTELLIGENT_TIERING in its Archive or Deep Archive Access tier (the inventory's
        // IntelligentTieringAccessTier): restored like GLACIER before a GET succeeds.
        "INTELLIGENT_TIERING_ARCHIVE",
    ];
    pub const NONE: StorageClass = StorageClass(0);
    pub const OTHER: StorageClass = StorageClass(12);

    /// Maps an inventory field to a class; `None` for a name not in the list.
    pub fn from_name(name: &[u8]) -> Option<StorageClass> {
        Self::NAMES
            .iter()
            .position(|n| n.as_bytes() == name)
            .map(|i| StorageClass(i as u8))
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("OTHER")
    }

    pub fn is_valid(self) -> bool {
        usize::from(self.0) < Self::NAMES.len()
    }

    /// Objects in these classes must be restored before a GET succeeds.
    pub fn is_archived(self) -> bool {
        matches!(
            self.name(),
            "GLACIER" | "DEEP_ARCHIVE" | "INTELLIGENT_TIERING_ARCHIVE"
        )
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A version as listed by an inventory. Buffers are reused by the readers that fill it,
/// so a stream of 10^9 records does not mean 10^9 allocations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionRecord {
    /// The decoded key (UTF-8, as in S3).
    pub key: String,
    /// Empty for an object written before versioning was enabled (S3's `null` version).
    pub version_id: String,
    pub last_modified: Timestamp,
    /// 0 for delete markers.
    pub size: u64,
    /// None for delete markers.
    pub etag: Option<ETag>,
    pub flags: Flags,
    pub storage_class: StorageClass,
    /// What a backup holds of this version: set in a catalog, default in an inventory index.
    pub local: Local,
}

/// What the backup holds of a version (catalog records only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum LocalState {
    /// Not a catalog record (an inventory index).
    #[default]
    None = 0,
    /// The file is in the tree (or, for a delete marker, there is nothing to hold).
    Present = 1,
    /// The last fetch failed (404, 403, verification); retried by the next run.
    Missing = 2,
    /// GLACIER / DEEP_ARCHIVE: must be restored in S3 before it can be fetched; retried.
    Archived = 3,
    /// A key the backup cannot store (`--on-bad-key skip`); reported every run.
    Skipped = 4,
    /// Deleted from the backup by `prune` on purpose; never fetched again.
    Pruned = 5,
    /// SSE-C: only the customer's key opens it; reported every run, never retried.
    NeedsKey = 6,
    /// Deleted from the bucket before it could be backed up (listed, its fetch failed, and
    /// a later inventory no longer lists it): reported once, never retried.
    Vanished = 7,
}

impl LocalState {
    pub fn from_u8(v: u8) -> Option<LocalState> {
        Some(match v {
            0 => LocalState::None,
            1 => LocalState::Present,
            2 => LocalState::Missing,
            3 => LocalState::Archived,
            4 => LocalState::Skipped,
            5 => LocalState::Pruned,
            6 => LocalState::NeedsKey,
            7 => LocalState::Vanished,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LocalState::None => "none",
            LocalState::Present => "present",
            LocalState::Missing => "missing",
            LocalState::Archived => "archived",
            LocalState::Skipped => "skipped",
            LocalState::Pruned => "pruned",
            LocalState::NeedsKey => "needs-key",
            LocalState::Vanished => "vanished",
        }
    }
}

/// How a held file was verified when it was fetched, so that `fsck --verify-content` can
/// check it the same way offline. `Unknown`: fetched before this was recorded, or placed
/// from an interrupted run's staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Check {
    #[default]
    Unknown = 0,
    Md5 = 1,
    MultipartEtag = 2,
    Crc64Nvme = 3,
    Crc32c = 4,
    Crc32 = 5,
    Sha1 = 6,
    Sha256 = 7,
    SizeOnly = 8,
}

impl Check {
    pub fn from_u8(v: u8) -> Option<Check> {
        Some(match v {
            0 => Check::Unknown,
            1 => Check::Md5,
            2 => Check::MultipartEtag,
            3 => Check::Crc64Nvme,
            4 => Check::Crc32c,
            5 => Check::Crc32,
            6 => Check::Sha1,
            7 => Check::Sha256,
            8 => Check::SizeOnly,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Check::Unknown => "unknown",
            Check::Md5 => "MD5",
            Check::MultipartEtag => "multipart ETag",
            Check::Crc64Nvme => "CRC64NVME",
            Check::Crc32c => "CRC32C",
            Check::Crc32 => "CRC32",
            Check::Sha1 => "SHA1",
            Check::Sha256 => "SHA256",
            Check::SizeOnly => "size only",
        }
    }

    pub fn from_name(name: &str) -> Option<Check> {
        (0..=8)
            .filter_map(Check::from_u8)
            .find(|c| c.name() == name)
    }
}

/// S3's full-object checksum of a file, kept only where the ETag cannot check it offline
/// (SSE-KMS): up to 32 bytes (SHA256), `len` 0 for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredChecksum {
    pub len: u8,
    pub bytes: [u8; 32],
}

impl StoredChecksum {
    pub fn new(value: &[u8]) -> Option<StoredChecksum> {
        if value.is_empty() || value.len() > 32 {
            return None;
        }
        let mut bytes = [0; 32];
        bytes[..value.len()].copy_from_slice(value);
        Some(StoredChecksum {
            len: value.len() as u8,
            bytes,
        })
    }

    pub fn value(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Which directories of a key's path were displaced (renamed to `<dir>.old.<stem>` when a
/// file took their name) while an old version sat in them: bit `i` for the `i`-th
/// directory. Keys of up to 1,024 bytes have up to 511 directories; almost all have fewer
/// than 64, so the first word is inline and the rest allocated only for the rare deep key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Displaced {
    low: u64,
    deep: Option<Box<[u64]>>,
}

impl Displaced {
    pub const NONE: Displaced = Displaced { low: 0, deep: None };

    /// From its stored words, lowest first (trailing zero words dropped).
    pub fn from_words(low: u64, deep: &[u64]) -> Displaced {
        let used = deep.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
        Displaced {
            low,
            deep: (used > 0).then(|| deep[..used].into()),
        }
    }
    pub fn low(&self) -> u64 {
        self.low
    }
    /// The words above the first, lowest first; empty for keys under 64 levels.
    pub fn deep(&self) -> &[u64] {
        self.deep.as_deref().unwrap_or(&[])
    }
    fn word(&self, w: usize) -> u64 {
        if w == 0 {
            self.low
        } else {
            self.deep().get(w - 1).copied().unwrap_or(0)
        }
    }
    pub fn is_set(&self, level: usize) -> bool {
        self.word(level / 64) & (1 << (level % 64)) != 0
    }
    pub fn set(&mut self, level: usize) {
        let (w, bit) = (level / 64, 1u64 << (level % 64));
        if w == 0 {
            self.low |= bit;
            return;
        }
        let mut deep = self.deep().to_vec();
        if deep.len() < w {
            deep.resize(w, 0);
        }
        deep[w - 1] |= bit;
        self.deep = Some(deep.into());
    }
    /// No directory at levels `0..=level` is displaced.
    pub fn none_up_to(&self, level: usize) -> bool {
        let full = level / 64;
        (0..full).all(|w| self.word(w) == 0) && {
            let bits = level % 64;
            let mask = if bits == 63 {
                u64::MAX
            } else {
                (2u64 << bits) - 1
            };
            self.word(full) & mask == 0
        }
    }
    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.deep.is_none()
    }
}

/// A catalog record's local half: state, where the file sits, and the dates that matter for
/// restore and prune. Dates are inventory dates (ms since the epoch); 0 means "not yet".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Local {
    pub state: LocalState,
    /// The key's latest version, but stored as `.old.` because the key is also a directory
    /// prefix in the same inventory (a file and a directory cannot share a path).
    pub shadowed: bool,
    /// The directories of the key's path that were displaced while this noncurrent
    /// version was in them.
    pub displaced: Displaced,
    /// The version's place in S3's order of the key's versions (1 the oldest), as the
    /// inventories showed it: a version first listed on a later date is newer than every
    /// one listed before, and among those first listed together the one listed as latest is
    /// newest. LastModified is not that order (a multipart upload's is when it began; ties
    /// within a second). `restore --at` and `locate --at` answer by it. 0: not known (a
    /// catalog written before ranks, for a key no run has changed since).
    pub rank: u32,
    pub first_seen: Timestamp,
    pub noncurrent_since: Timestamp,
    pub gone_since: Timestamp,
    /// How the file was verified when fetched.
    pub check: Check,
    /// A multipart upload's part size (all parts but the last), when the fetch learned it;
    /// 0 otherwise.
    pub part_size: u64,
    /// S3's checksum, where the ETag is not an MD5.
    pub checksum: StoredChecksum,
}

impl VersionRecord {
    pub fn is_latest(&self) -> bool {
        self.flags.has(Flags::LATEST)
    }
    pub fn is_delete_marker(&self) -> bool {
        self.flags.has(Flags::DELETE_MARKER)
    }
    pub fn is_multipart(&self) -> bool {
        self.flags.has(Flags::MULTIPART)
    }
    pub fn etag_is_md5(&self) -> bool {
        self.flags.has(Flags::ETAG_IS_MD5)
    }

    /// The version id as S3 wants it in `?versionId=`: pre-versioning objects are `null`.
    pub fn version_id_or_null(&self) -> &str {
        crate::model::version_id::to_s3(&self.version_id)
    }

    /// The index order: key bytes, then last_modified, then version id. Every part is
    /// immutable for a version, so indexes of two dates merge-join exactly.
    pub fn cmp_order(&self, other: &VersionRecord) -> Ordering {
        order(
            self.key.as_bytes(),
            self.last_modified,
            self.version_id.as_bytes(),
            other.key.as_bytes(),
            other.last_modified,
            other.version_id.as_bytes(),
        )
    }

    pub fn copy_from(&mut self, other: &VersionRecord) {
        self.key.clear();
        self.key.push_str(&other.key);
        self.version_id.clear();
        self.version_id.push_str(&other.version_id);
        self.last_modified = other.last_modified;
        self.size = other.size;
        self.etag = other.etag;
        self.flags = other.flags;
        self.storage_class = other.storage_class;
        self.local = other.local.clone();
    }
}

/// The one definition of index order, shared by in-memory sort, run merge and readers.
pub fn order(
    key_a: &[u8],
    mtime_a: Timestamp,
    vid_a: &[u8],
    key_b: &[u8],
    mtime_b: Timestamp,
    vid_b: &[u8],
) -> Ordering {
    key_a
        .cmp(key_b)
        .then(mtime_a.cmp(&mtime_b))
        .then_with(|| vid_a.cmp(vid_b))
}

#[cfg(test)]
mod tests {
    use super::Displaced;

    /// Every level of a 1,024-byte key (up to 511 directories) can be displaced, and
    /// `none_up_to` sees exactly the levels at or above it.
    #[test]
    fn displacement_holds_every_level() {
        for level in [0, 1, 62, 63, 64, 69, 127, 128, 129, 510] {
            let mut d = Displaced::NONE;
            d.set(level);
            for probe in [0, 1, 62, 63, 64, 69, 127, 128, 129, 510] {
                assert_eq!(d.is_set(probe), probe == level, "{level} {probe}");
                assert_eq!(d.none_up_to(probe), probe < level, "{level} {probe}");
            }
            let back = Displaced::from_words(d.low(), d.deep());
            assert_eq!(back, d);
            assert_eq!(d.deep().len(), level / 64, "{level}");
        }
        assert!(Displaced::from_words(0, &[0, 0]).is_empty());
    }
}
