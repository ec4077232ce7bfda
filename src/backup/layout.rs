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

/// The stem of every reserved name in one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameStem(String);

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
            Ok(NameStem(stem.to_string()))
        } else {
            Err(format!(
                "bad name stem {stem:?}: use letters, digits, '-', '_', '.' (not first), at most 64"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
        format!("{name}.old.{}", self.0)
    }
}

impl Default for NameStem {
    fn default() -> NameStem {
        NameStem(NameStem::DEFAULT.to_string())
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
            if component.len() + MAX_OLD_SUFFIX > NAME_MAX {
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
            ("x".repeat(200), BadKey::TooLong("x".repeat(200))),
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
