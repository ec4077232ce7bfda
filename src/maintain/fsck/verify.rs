//! Content verification: every held file hashed against its ETag (all cores), resumable.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use md5::{Digest, Md5};
use rayon::prelude::*;

use super::check::Held;
use super::{FsckOptions, FsckReport, Problem};
use crate::backup::Backup;

/// Hashes every held file (all cores), with progress. Resumable: verified paths are
/// appended to `.<stem>/verify-progress` (keyed to the catalog it checked), so an interrupted
/// run skips them next time; the file goes when a run completes.
pub(super) fn verify_all(
    backup: &Backup,
    held: &[Held],
    bad_paths: &HashSet<String>,
    opts: &FsckOptions,
    report: &mut FsckReport,
) -> Result<()> {
    use std::io::{BufRead, Write};
    use std::sync::Mutex;
    use std::sync::atomic::Ordering::Relaxed;

    let progress_path = backup.state_dir().join("verify-progress");
    let catalog_meta = std::fs::metadata(backup.catalog_path())?;
    let identity = {
        use std::os::unix::fs::MetadataExt;
        format!(
            "catalog {} {}.{:09}",
            catalog_meta.len(),
            catalog_meta.mtime(),
            catalog_meta.mtime_nsec()
        )
    };
    let mut done_before: HashSet<String> = HashSet::new();
    if let Ok(f) = std::fs::File::open(&progress_path) {
        let mut lines = std::io::BufReader::new(f).lines();
        if lines.next().and_then(|l| l.ok()).as_deref() == Some(identity.as_str()) {
            done_before.extend(lines.map_while(|l| l.ok()));
        }
    }
    let resumed = !done_before.is_empty();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(&progress_path)
        .with_context(|| format!("opening {}", progress_path.display()))?;
    if !resumed {
        writeln!(file, "{identity}")?;
    } else {
        tracing::warn!(
            "resuming content verification: {} files were verified by an interrupted run",
            done_before.len()
        );
    }
    let log = Mutex::new(std::io::BufWriter::new(file));
    let todo: Vec<&Held> = held
        .iter()
        .filter(|h| !bad_paths.contains(&h.path) && !done_before.contains(&h.path))
        .collect();
    let counters = std::sync::Arc::new(crate::sys::progress::Counters::default());
    let _reporter = crate::sys::progress::Reporter::start(
        "fsck --verify-content",
        todo.len() as u64,
        todo.iter().map(|h| h.size).sum(),
        std::sync::Arc::clone(&counters),
        &opts.progress,
    );
    let outcomes: Vec<(Option<Problem>, bool)> = todo
        .par_iter()
        .map(|h| {
            let outcome = match verify_content(&backup.root.join(&h.path), h) {
                Ok(verified) => {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(log, "{}", h.path);
                    (None, verified)
                }
                Err(reason) => (
                    Some(Problem::Corrupt {
                        path: h.path.clone(),
                        reason,
                    }),
                    true,
                ),
            };
            counters.files_done.fetch_add(1, Relaxed);
            counters.bytes.fetch_add(h.size, Relaxed);
            outcome
        })
        .collect();
    drop(log);
    let _ = std::fs::remove_file(&progress_path);
    report.bytes_verified = todo.iter().map(|h| h.size).sum();
    report.unverifiable = outcomes.iter().filter(|(_, v)| !v).count() as u64;
    report
        .problems
        .extend(outcomes.into_iter().filter_map(|(p, _)| p));
    Ok(())
}

/// The MD5 of the bytes (single part), or the MD5 of the part MD5s for a multipart ETag,
/// trying the part sizes uploaders use (whole MiB between size/parts and size/(parts-1)).
/// `Ok(false)`: the ETag cannot check these bytes (opaque ETag, or a multipart upload with
/// an unusual part size: the catalog does not record part sizes).
pub(super) fn verify_content(path: &Path, h: &Held) -> Result<bool, String> {
    let Some(etag) = h.etag.filter(|_| h.etag_is_md5) else {
        return Ok(false); // size already checked; the ETag says nothing more
    };
    let bytes = std::fs::read(path).map_err(|e| format!("reading: {e}"))?;
    if etag.parts == 0 {
        let md5: [u8; 16] = Md5::digest(&bytes).into();
        return if md5 == etag.md5 {
            Ok(true)
        } else {
            Err(format!(
                "MD5 {} is not the ETag {etag}",
                crate::inventory::hex(&md5)
            ))
        };
    }
    let parts = u64::from(etag.parts);
    let size = bytes.len() as u64;
    const MIB: u64 = 1 << 20;
    let low = size.div_ceil(parts);
    let high = if parts > 1 {
        (size - 1) / (parts - 1)
    } else {
        size
    };
    let mut candidate = low.div_ceil(MIB).max(1) * MIB;
    let mut tried = 0;
    while candidate <= high.max(low) && tried < 64 {
        let mut outer = Md5::new();
        for chunk in bytes.chunks(candidate as usize) {
            outer.update(Md5::digest(chunk));
        }
        let md5: [u8; 16] = outer.finalize().into();
        if bytes.chunks(candidate as usize).count() as u64 == parts && md5 == etag.md5 {
            return Ok(true);
        }
        candidate += MIB;
        tried += 1;
    }
    if tried == 0 {
        // No whole-MiB part size fits the part count: the catalog does not record part
        // sizes, so only the size was checked.
        return Ok(false);
    }
    // Whole-MiB sizes fit but none gives the ETag: corrupt (or, rarely, an uploader with
    // an odd part size: repair then costs one verified re-download, and the file is kept
    // in quarantine).
    Err(format!(
        "no part size of whole MiB between {low} and {high} bytes gives the multipart ETag {etag}"
    ))
}
