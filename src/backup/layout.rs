//! Where things go in a backup tree, and which keys cannot go there.
//!
//! Every reserved name derives from one *name stem* (default `s3invbackup`), fixed when a
//! backup is created: the state directory `.<stem>/`, the per-directory `.<stem>-versions.json`,
//! old versions `<name>.old.<versionId>.<etag>` and displaced directories `<name>.old.<stem>`.
//! A key whose path would collide with one of those, or that a POSIX filesystem cannot hold,
//! is refused here, during planning, before anything is touched. The invariant, tested below:
//! no name this module generates is ever accepted as (part of) a key.

use std::fmt;

use regex::Regex;

use crate::model::etag::ETag;

/// POSIX NAME_MAX on every filesystem a backup is likely to live on (ext4, xfs, GPFS, Lustre).
pub const NAME_MAX: usize = 255;

/// The longest suffix an old version adds: `.old.` + a version id (S3's are 32 characters; 64
/// leaves room for other servers) + `.` + an ETag (32 hex digits + `-10000`).
const MAX_OLD_SUFFIX: usize = ".old.".len() + 64 + 1 + 38;

/// The stem of every reserved name in one backup, and the naming rules of its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameStem(String, Naming);

/// How old versions are named; fixed by the backup's format (`Config::format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Format 1: `<name>.old.<versionId|null>.<etag>`, as given. Two `null` versions with
    /// one ETag collide, and a component too long for the suffix is a bad key.
    V1,
    /// Format 2: a `null` version is `null-<LastModified ms>` (each distinct one its own
    /// name); a version id that is not plain (S3's alphabet, at most 128 bytes) is
    /// `h<hash>`; a name too long for NAME_MAX with its suffix keeps a prefix and a hash of
    /// the whole name. Every derived name is a function of the record: nothing extra is
    /// stored to find it again.
    V2,
}

impl NameStem {
    pub const DEFAULT: &'static str = "s3invbackup";

    /// A stem is a plain word: letters, digits, `-`, `_`, `.`, not starting with `.`.
    pub fn new(stem: &str) -> Result<NameStem, String> {
        let ok = !stem.is_empty()
            && stem.len() <= 64
            && !stem.starts_with('.')
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(NameStem(stem.to_string(), Naming::V2))
        } else {
            Err(format!(
                "bad name stem {stem:?}: use letters, digits, '-', '_', '.' (not first), at most 64"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same stem with the naming of an older backup format.
    pub fn with_naming(mut self, naming: Naming) -> NameStem {
        self.1 = naming;
        self
    }

    pub fn naming(&self) -> Naming {
        self.1
    }

    /// `<name>.old.<versionId>.<etag>`: an older or deleted version beside the current file
    /// (see [`Naming`] for how a `null` version, an unusual id and a long name are named).
    pub fn old_version_name(
        &self,
        name: &str,
        version_id: &str,
        etag: &ETag,
        last_modified: crate::model::timestamp::Timestamp,
    ) -> String {
        if self.1 == Naming::V1 {
            return old_version_name(name, version_id, etag);
        }
        let vid = if version_id.is_empty() {
            format!("null-{}", last_modified.as_millis())
        } else if is_plain_version_id(version_id) {
            version_id.to_string()
        } else {
            format!("h{}", short_hash(version_id))
        };
        fit(name, &format!(".old.{vid}.{etag}"))
    }

    /// `.<stem>`: the state directory at the top of the backup.
    pub fn state_dir(&self) -> String {
        format!(".{}", self.0)
    }

    /// `.<stem>-versions.json`: what each current file of a directory is.
    pub fn versions_file(&self) -> String {
        format!(".{}-versions.json", self.0)
    }

    /// `<name>.old.<stem>`: a directory displaced because key `<name>` became a file.
    pub fn displaced_dir(&self, name: &str) -> String {
        let suffix = format!(".old.{}", self.0);
        match self.1 {
            Naming::V1 => format!("{name}{suffix}"),
            Naming::V2 => fit(name, &suffix),
        }
    }
}

impl Default for NameStem {
    fn default() -> NameStem {
        NameStem(NameStem::DEFAULT.to_string(), Naming::V2)
    }
}

/// A version id S3 could have made, usable in a file name as it is: its URL-safe alphabet
/// (AWS's ids are 32 such characters), at most 128 bytes. Anything else in an inventory row
/// (`/`, `..`, NUL, spaces) is data, not a name.
pub fn is_plain_version_id(vid: &str) -> bool {
    (1..=128).contains(&vid.len())
        && vid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && vid.bytes().any(|b| b != b'.')
}

/// 16 hex digits of SHA-256: a stable short stand-in for a name or an id.
fn short_hash(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `name + suffix`, or, where that passes NAME_MAX, a prefix of `name` (at a character
/// boundary), `~`, a hash of the whole `name`, and `suffix`.
fn fit(name: &str, suffix: &str) -> String {
    if name.len() + suffix.len() <= NAME_MAX {
        return format!("{name}{suffix}");
    }
    let mut keep = NAME_MAX.saturating_sub(suffix.len() + 17);
    while keep > 0 && !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}~{}{suffix}", &name[..keep], short_hash(name))
}

/// No directory on the way to `rel` (its own last component aside) is a symbolic link:
/// nothing is created, renamed or written through one. (An absent directory is fine: the
/// tool makes it, as a real one.)
pub fn no_symlink_on_the_way(root: &std::path::Path, rel: &str) -> Result<(), String> {
    let mut end = 0;
    while let Some(i) = rel[end..].find('/') {
        end += i;
        let path = root.join(&rel[..end]);
        end += 1;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Err(link_error(&path)),
            Ok(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
    }
    Ok(())
}

fn link_error(path: &std::path::Path) -> String {
    let target = std::fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_default();
    format!(
        "{} is a symbolic link (to {target}): a backup never writes or reads through one. Make it a real directory again (e.g. remove the link and move {target} to {}), or keep the whole backup where the link points",
        path.display(),
        path.display()
    )
}

/// The directories of the tree already seen to be real (not symbolic links), so that a
/// command touching millions of files (restore, prune) checks each directory once; the
/// file itself is checked every time (one `lstat`).
#[derive(Debug, Default)]
pub struct RealDirs(std::collections::HashSet<String>);

impl RealDirs {
    /// Err (the link, and the fix) if `rel` or a directory on its way is a symbolic link.
    pub fn check(&mut self, root: &std::path::Path, rel: &str) -> Result<(), String> {
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            end += i;
            let dir = &rel[..end];
            end += 1;
            if self.0.contains(dir) {
                continue;
            }
            let path = root.join(dir);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => return Err(link_error(&path)),
                Ok(m) if m.is_dir() => {
                    self.0.insert(dir.to_string());
                }
                _ => return Ok(()),
            }
        }
        let path = root.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => Err(link_error(&path)),
            _ => Ok(()),
        }
    }
}

/// A path the tool is about to create or move into: relative, inside the root, no `.`
/// or `..` component, no empty one. Every tree mutation passes through here (the apply
/// step, rollback, repair), so a name built from inventory data can never escape.
pub fn check_inside(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(format!(
            "refusing to write {path:?}: not a relative path inside the backup (a bug, or a hostile inventory)"
        ))
    } else {
        Ok(())
    }
}

/// `<name>.old.<versionId>.<etag>`: an older or deleted version beside the current file.
/// The `null` version is named `null`.
pub fn old_version_name(name: &str, version_id: &str, etag: &ETag) -> String {
    let vid = crate::model::version_id::to_s3(version_id);
    format!("{name}.old.{vid}.{etag}")
}

/// Why a key cannot be stored as a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadKey {
    LeadingSlash,
    EmptyComponent,
    DotComponent,
    Nul,
    /// A component collides with a name the backup itself uses.
    Reserved(String),
    /// A component longer than NAME_MAX once an old-version suffix is added.
    TooLong(String),
}

impl fmt::Display for BadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadKey::LeadingSlash => f.write_str("starts with '/'"),
            BadKey::EmptyComponent => f.write_str("has an empty path component ('//')"),
            BadKey::DotComponent => f.write_str("has a '.' or '..' component"),
            BadKey::Nul => f.write_str("contains a NUL byte"),
            BadKey::Reserved(c) => write!(f, "component {c:?} is a name the backup reserves"),
            BadKey::TooLong(c) => {
                write!(
                    f,
                    "component {:?}... is {} bytes; with an old-version suffix it would pass NAME_MAX ({NAME_MAX})",
                    &c[..c.len().min(40)],
                    c.len()
                )
            }
        }
    }
}

/// Checks keys against one backup's reserved names.
#[derive(Debug, Clone)]
pub struct KeyRules {
    stem: NameStem,
    /// `*.old.<vid>.<etag>` and `*.old.<stem>`.
    old_name: Regex,
}

impl KeyRules {
    pub fn new(stem: NameStem) -> KeyRules {
        let old_name = Regex::new(&format!(
            r"\.old\.(?:[^/]+\.[0-9a-f]{{32}}(?:-[0-9]+)?|{})$",
            regex::escape(stem.as_str())
        ))
        .expect("valid regex");
        KeyRules { stem, old_name }
    }

    pub fn stem(&self) -> &NameStem {
        &self.stem
    }

    /// Ok for a key that can be stored at its own path. A folder marker (`dir/`, a key
    /// ending in `/`) is checked as the directory it creates.
    pub fn check(&self, key: &str) -> Result<(), BadKey> {
        if key.starts_with('/') {
            return Err(BadKey::LeadingSlash);
        }
        if key.contains('\0') {
            return Err(BadKey::Nul);
        }
        let path = key.strip_suffix('/').unwrap_or(key);
        let reserved_prefix = format!(".{}", self.stem.as_str());
        for component in path.split('/') {
            if component.is_empty() {
                return Err(BadKey::EmptyComponent);
            }
            if component == "." || component == ".." {
                return Err(BadKey::DotComponent);
            }
            if component.starts_with(&reserved_prefix) || self.old_name.is_match(component) {
                return Err(BadKey::Reserved(component.to_string()));
            }
            let limit = match self.stem.naming() {
                Naming::V1 => NAME_MAX - MAX_OLD_SUFFIX,
                // Old versions and displaced directories get derived names; the component
                // itself must fit.
                Naming::V2 => NAME_MAX,
            };
            if component.len() > limit {
                return Err(BadKey::TooLong(component.to_string()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> KeyRules {
        KeyRules::new(NameStem::default())
    }

    fn etag() -> ETag {
        ETag::parse(b"627c47efe292876b91978324485cd2ec").unwrap()
    }

    #[test]
    fn null_versions_with_one_etag_get_names_of_their_own() {
        use crate::model::timestamp::Timestamp;
        let stem = NameStem::default();
        let a = stem.old_version_name("n.txt", "", &etag(), Timestamp(1_700_000_000_000));
        let b = stem.old_version_name("n.txt", "", &etag(), Timestamp(1_700_000_001_000));
        assert_eq!(
            a,
            "n.txt.old.null-1700000000000.627c47efe292876b91978324485cd2ec"
        );
        assert_ne!(a, b);
        // Format 1 keeps its names (and their collision).
        let v1 = NameStem::default().with_naming(Naming::V1);
        assert_eq!(
            v1.old_version_name("n.txt", "", &etag(), Timestamp(1)),
            v1.old_version_name("n.txt", "", &etag(), Timestamp(2))
        );
        // Both kinds are names the backup reserves: no key may take them.
        for name in [&a, &b] {
            assert!(rules().check(&format!("d/{name}")).is_err(), "{name}");
        }
    }

    #[test]
    fn version_ids_are_data_and_long_names_fit() {
        use crate::model::timestamp::Timestamp;
        let stem = NameStem::default();
        let t = Timestamp(0);
        for hostile in [
            "../../etc/passwd",
            "a/b",
            "x\0y",
            "..",
            " ",
            &"v".repeat(300),
        ] {
            let name = stem.old_version_name("f", hostile, &etag(), t);
            assert!(!name.contains('/') && !name.contains('\0'), "{name:?}");
            assert!(
                name.starts_with("f.old.h") && name.len() <= NAME_MAX,
                "{name:?}"
            );
            assert!(check_inside(&format!("d/{name}")).is_ok());
        }
        // Distinct ids, distinct names; a plain id is kept as it is.
        assert_ne!(
            stem.old_version_name("f", "a/b", &etag(), t),
            stem.old_version_name("f", "a/c", &etag(), t)
        );
        assert!(
            stem.old_version_name("f", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", &etag(), t)
                .contains(".old.3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY.")
        );
        // A 250-byte component is a legal key: its current file keeps its name, its old
        // versions and displaced directory get a prefix and a hash, within NAME_MAX.
        let long = "é".repeat(125);
        assert!(rules().check(&format!("d/{long}")).is_ok());
        let old = stem.old_version_name(&long, "v1", &etag(), t);
        let other = stem.old_version_name(&format!("{long}x"), "v1", &etag(), t);
        assert!(old.len() <= NAME_MAX && other.len() <= NAME_MAX);
        assert_ne!(old, other);
        assert!(stem.displaced_dir(&long).len() <= NAME_MAX);
        assert_eq!(
            rules().check(&"x".repeat(256)),
            Err(BadKey::TooLong("x".repeat(256)))
        );
    }

    #[test]
    fn paths_outside_the_backup_are_refused() {
        for bad in ["", "/etc/passwd", "a/../../b", "./a", "a//b", "..", "a/\0"] {
            assert!(check_inside(bad).is_err(), "{bad:?}");
        }
        assert!(check_inside("a/b.txt.old.v1.x").is_ok());
    }

    #[test]
    fn bad_keys_are_named() {
        let r = rules();
        let etag = "627c47efe292876b91978324485cd2ec";
        let cases: Vec<(String, BadKey)> = vec![
            ("/abs".into(), BadKey::LeadingSlash),
            ("a//b".into(), BadKey::EmptyComponent),
            ("a/./b".into(), BadKey::DotComponent),
            ("a/../b".into(), BadKey::DotComponent),
            ("a\0b".into(), BadKey::Nul),
            (
                "a/.s3invbackup-versions.json".into(),
                BadKey::Reserved(".s3invbackup-versions.json".into()),
            ),
            (
                ".s3invbackup/state.json".into(),
                BadKey::Reserved(".s3invbackup".into()),
            ),
            (
                format!("a/b.txt.old.v1.{etag}"),
                BadKey::Reserved(format!("b.txt.old.v1.{etag}")),
            ),
            (
                format!("a/b.txt.old.null.{etag}-12"),
                BadKey::Reserved(format!("b.txt.old.null.{etag}-12")),
            ),
            (
                "dir.old.s3invbackup/x".into(),
                BadKey::Reserved("dir.old.s3invbackup".into()),
            ),
            ("x".repeat(256), BadKey::TooLong("x".repeat(256))),
        ];
        for (key, want) in cases {
            assert_eq!(r.check(&key), Err(want), "{key:?}");
        }
        for ok in [
            "a/b.txt",
            "folder/",
            "zarr/0/0/1",
            "b.txt.old",
            "notes.old.txt",
            "a b+c/ü",
            ".zattrs",
            "x.old.s3invbackupX",
        ] {
            assert_eq!(r.check(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn stems() {
        assert!(NameStem::new("dandi-s3-backup").is_ok());
        for bad in ["", ".hidden", "a/b", "a b"] {
            assert!(NameStem::new(bad).is_err(), "{bad:?}");
        }
        let s = NameStem::new("dandi-s3-backup").unwrap();
        assert_eq!(s.versions_file(), ".dandi-s3-backup-versions.json");
        assert_eq!(s.displaced_dir("x"), "x.old.dandi-s3-backup");
        assert!(
            KeyRules::new(s)
                .check("a/.dandi-s3-backup-versions.json")
                .is_err()
        );
    }

    proptest! {
        /// Nothing the backup names itself can ever be a key's component: no collision with a
        /// user's file is possible, whatever the key, version id or ETag.
        #[test]
        fn generated_names_are_never_valid_keys(
            name in "[a-zA-Z0-9 ._+-]{1,30}",
            vid in "[A-Za-z0-9._]{0,32}",
            md5 in any::<[u8; 16]>(),
            parts in 0u32..10_000,
            stem in "[a-z][a-z0-9_-]{0,20}",
        ) {
            let stem = NameStem::new(&stem).unwrap();
            let r = KeyRules::new(stem.clone());
            let old = old_version_name(&name, &vid, &ETag { md5, parts });
            let keys = [
                format!("dir/{old}"),
                format!("{}/x", stem.displaced_dir(&name)),
                format!("d/{}", stem.versions_file()),
                format!("{}/x", stem.state_dir()),
            ];
            for key in keys {
                let refused = r.check(&key).is_err();
                prop_assert!(refused, "accepted {:?}", key);
            }
        }
    }
}
