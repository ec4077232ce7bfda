//! Durable replacement of the backup's own files: the one rename-into-place protocol.
//!
//! POSIX makes a rename atomic but not durable: after a power loss the directory may still
//! name the old file, or name the new one before its bytes are on disk. So every state
//! file, catalog and plan summary is replaced the same way: write a temporary file beside
//! it, fsync it and its directory (for what else the directory gained: the files the new
//! one names), rename it over the target, fsync the directory. A reader (or the process
//! that resumes after a crash) sees the old file or the new one, whole.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes `value` as pretty JSON to `path`, durably (see the module comment).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write(path, &bytes)
}

/// Writes `bytes` to `path`, durably (see the module comment). A failed write leaves no
/// temporary file behind.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    rename_synced(&tmp, path)
}

/// Replaces `path` with the complete file `new` (same directory or at least the same
/// filesystem): `new` is fsynced, renamed over `path`, and `path`'s directory fsynced.
pub fn replace(new: &Path, path: &Path) -> Result<()> {
    File::open(new)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", new.display()))?;
    rename_synced(new, path)
}

fn rename_synced(from: &Path, to: &Path) -> Result<()> {
    // The directory first, as well as after: a file the new one names (a catalog part
    // linked or written beside its manifest) must not be lost while the manifest survives,
    // and POSIX orders neither entry before the other.
    sync_dir(parent(to))?;
    std::fs::rename(from, to)
        .with_context(|| format!("replacing {} with {}", to.display(), from.display()))?;
    sync_dir(parent(to))
}

/// Creates directory `dir` and any missing parents, durably: each new directory's entry
/// in its parent is fsynced (a file fsynced inside a directory does not make the
/// directory's own name durable). For the state directory's own directories (the backup's,
/// a shard's, a run's, the catalog's), where a power loss must not take a plan or a
/// journal away with its directory's name.
pub fn make_dir(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d);
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    for new in missing.into_iter().rev() {
        match std::fs::create_dir(new) {
            Ok(()) => {}
            // Another shard of a job array made it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && new.is_dir() => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", new.display())),
        }
        sync_dir(parent(new))?;
    }
    Ok(())
}

/// Makes the entries of `dir` (names created, renamed, removed) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Flushes everything written to the backup's filesystem (one `syncfs`, not one `fsync`
/// per file: a first backup places millions of files).
pub fn sync_filesystem(root: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: syncfs takes a valid open file descriptor and has no other preconditions.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncing the filesystem of {}", root.display()));
    }
    #[cfg(feature = "failpoints")]
    mark_syncfs(&dir);
    Ok(())
}

/// The power-loss campaign's filesystem (scripts/harness/powercut.py) is a FUSE daemon, and
/// the kernel does not tell a FUSE daemon about `syncfs`. So a failpoints build announces each
/// completed one by asking for this extended attribute, which that filesystem records as the
/// syncfs (every other filesystem just answers that there is no such attribute).
#[cfg(feature = "failpoints")]
fn mark_syncfs(dir: &File) {
    use std::os::fd::AsRawFd;
    let name = c"user.s3invbackup.syncfs";
    let mut value = [0u8; 1];
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the length given.
    unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_dir_creates_every_missing_parent_and_accepts_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        make_dir(&deep).unwrap();
        assert!(deep.is_dir());
        make_dir(&deep).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let err = make_dir(&dir.path().join("file/sub")).unwrap_err();
        assert!(format!("{err:#}").contains("file/sub"), "{err:#}");
    }

    #[test]
    fn replace_and_write_leave_only_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        write_json(&target, &serde_json::json!({"a": 1})).unwrap();
        let new = dir.path().join("new");
        std::fs::write(&new, b"two").unwrap();
        replace(&new, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        // Into a directory that does not exist: an error naming the file, nothing left.
        let err = write(&dir.path().join("no/such/file"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("no/such/.file.tmp"), "{err:#}");
    }
}
