//! Content verification: every held file hashed against its ETag (all cores), resumable.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use md5::{Digest, Md5};
use rayon::prelude::*;

use super::check::Held;
use super::{FsckOptions, FsckReport, Problem};
use crate::backup::Backup;
use crate::model::etag::ETag;
use crate::model::record::Local;

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

    let progress_path = backup.part_dir().join("verify-progress");
    let identity = backup.catalog()?.identity()?;
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
        crate::sys::progress::Phase::new(
            "fsck --verify-content",
            "files",
            todo.len() as u64,
            todo.iter().map(|h| h.size).sum(),
        ),
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
    verify_bytes(path, h.etag, h.etag_is_md5, &h.local)
}

/// [`verify_content`] from what a version says of its bytes: its ETag, and what its fetch
/// recorded (`local`: the check, the part size, S3's checksum; a default `Local` where
/// nothing was recorded yet, as for a resumed run's files).
pub(crate) fn verify_bytes(
    path: &Path,
    etag: Option<ETag>,
    etag_is_md5: bool,
    local: &Local,
) -> Result<bool, String> {
    if local.checksum.len != 0 {
        return verify_checksum(path, local);
    }
    let Some(etag) = etag.filter(|_| etag_is_md5) else {
        return Ok(false); // size already checked; the ETag says nothing more
    };
    let mut file = std::fs::File::open(path).map_err(|e| format!("opening: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("reading metadata: {e}"))?
        .len();
    let parts = u64::from(etag.parts);
    let (low, high) = if parts == 0 {
        (size, size)
    } else {
        let high = if parts > 1 {
            (size - 1) / (parts - 1)
        } else {
            size
        };
        (size.div_ceil(parts), high)
    };
    // Every candidate part size is a whole number of MiB, so reading in aligned 1 MiB blocks
    // puts each block inside one part of every candidate: one pass, bounded memory.
    let mut candidates: Vec<PartHasher> = if parts == 0 {
        vec![PartHasher::new(u64::MAX)]
    } else if local.part_size != 0 {
        // The fetch recorded the part size: one candidate, whatever its alignment.
        vec![PartHasher::new(local.part_size)]
    } else {
        let first = low.div_ceil(MIB).max(1) * MIB;
        (0..64)
            .map(|i| first + i * MIB)
            .take_while(|c| *c <= high.max(low))
            .map(PartHasher::new)
            .collect()
    };
    if candidates.is_empty() {
        // No whole-MiB part size fits the part count: the catalog does not record part
        // sizes, so only the size was checked.
        return Ok(false);
    }
    let mut block = vec![0u8; MIB as usize];
    loop {
        let n = read_block(&mut file, &mut block).map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            break;
        }
        for c in &mut candidates {
            c.update(&block[..n]);
        }
        if n < block.len() {
            break;
        }
    }
    if parts == 0 {
        let md5 = candidates.remove(0).single();
        return if md5 == etag.md5 {
            Ok(true)
        } else {
            Err(format!(
                "MD5 {} is not the ETag {etag}",
                crate::inventory::hex(&md5)
            ))
        };
    }
    if candidates
        .into_iter()
        .any(|c| c.multipart() == (parts, etag.md5))
    {
        return Ok(true);
    }
    // Whole-MiB sizes fit but none gives the ETag: corrupt (or, rarely, an uploader with
    // an odd part size: repair then costs one verified re-download, and the file is kept
    // in quarantine).
    Err(format!(
        "no part size of whole MiB between {low} and {high} bytes gives the multipart ETag {etag}"
    ))
}

/// An SSE-KMS file checked against the S3 checksum its fetch recorded.
fn verify_checksum(path: &Path, local: &Local) -> Result<bool, String> {
    use crate::model::checksum::{Algorithm, Hasher};
    use crate::model::record::Check;
    let algorithm = match local.check {
        Check::Crc64Nvme => Algorithm::Crc64Nvme,
        Check::Crc32c => Algorithm::Crc32c,
        Check::Crc32 => Algorithm::Crc32,
        Check::Sha1 => Algorithm::Sha1,
        Check::Sha256 => Algorithm::Sha256,
        _ => return Ok(false),
    };
    let mut file = std::fs::File::open(path).map_err(|e| format!("opening: {e}"))?;
    let mut hasher = Hasher::new(algorithm);
    let mut block = vec![0u8; MIB as usize];
    loop {
        let n = read_block(&mut file, &mut block).map_err(|e| format!("reading: {e}"))?;
        hasher.update(&block[..n]);
        if n < block.len() {
            break;
        }
    }
    let actual = hasher.finish();
    if actual == local.checksum.value() {
        Ok(true)
    } else {
        Err(format!(
            "{} {} is not the {} S3 sent",
            algorithm.name(),
            crate::inventory::hex(&actual),
            crate::inventory::hex(local.checksum.value())
        ))
    }
}

const MIB: u64 = 1 << 20;

/// Fills `block` unless the file ends first; returns the bytes read.
fn read_block(file: &mut std::fs::File, block: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < block.len() {
        match file.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The multipart ETag of a stream split into parts of `part_size` bytes (MD5 of the part
/// MD5s), built as the bytes arrive.
struct PartHasher {
    part_size: u64,
    part: Md5,
    in_part: u64,
    outer: Md5,
    parts: u64,
}

impl PartHasher {
    fn new(part_size: u64) -> PartHasher {
        PartHasher {
            part_size,
            part: Md5::new(),
            in_part: 0,
            outer: Md5::new(),
            parts: 0,
        }
    }

    /// `bytes` may cross part boundaries (a recorded part size need not be whole MiB).
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.part_size - self.in_part).min(bytes.len() as u64) as usize;
            self.part.update(&bytes[..room]);
            self.in_part += room as u64;
            bytes = &bytes[room..];
            if self.in_part == self.part_size {
                self.close_part();
            }
        }
    }

    fn close_part(&mut self) {
        let md5 = std::mem::take(&mut self.part).finalize();
        self.outer.update(md5);
        self.parts += 1;
        self.in_part = 0;
    }

    /// The MD5 of everything (a single-part ETag: `part_size` was unbounded).
    fn single(self) -> [u8; 16] {
        self.part.finalize().into()
    }

    /// The part count and the MD5 of the part MD5s.
    fn multipart(mut self) -> (u64, [u8; 16]) {
        if self.in_part > 0 {
            self.close_part();
        }
        (self.parts, self.outer.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::etag::ETag;
    use crate::model::timestamp::Timestamp;

    fn held(size: u64, etag: ETag) -> Held {
        Held {
            path: String::new(),
            key: String::new(),
            version_id: String::new(),
            size,
            etag: Some(etag),
            etag_is_md5: true,
            last_modified: Timestamp(0),
            local: crate::model::record::Local::default(),
        }
    }

    /// The multipart ETag computed the plain way, with the whole file in memory.
    fn multipart_etag(bytes: &[u8], part: usize) -> ETag {
        let mut outer = Md5::new();
        for chunk in bytes.chunks(part) {
            outer.update(Md5::digest(chunk));
        }
        ETag {
            md5: outer.finalize().into(),
            parts: bytes.chunks(part).count() as u32,
        }
    }

    #[test]
    fn streamed_hashes_match_the_in_memory_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..(13 << 20) + 12345u32)
            .map(|i| (i * 7 + i / 977) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let size = bytes.len() as u64;
        let single = ETag {
            md5: Md5::digest(&bytes).into(),
            parts: 0,
        };
        assert_eq!(verify_content(&path, &held(size, single)), Ok(true));
        for part in [5 << 20, 8 << 20, 13 << 20] {
            let etag = multipart_etag(&bytes, part);
            assert_eq!(verify_content(&path, &held(size, etag)), Ok(true), "{part}");
        }
        // Parts too small for any whole-MiB size: checkable by size only.
        let tiny = multipart_etag(&bytes, 13_900);
        assert_eq!(verify_content(&path, &held(size, tiny)), Ok(false));
        // An odd part size where whole-MiB sizes would fit: reported (the catalog does not
        // record part sizes yet; README "fsck").
        let odd = multipart_etag(&bytes, (5 << 20) + 1);
        assert!(verify_content(&path, &held(size, odd)).is_err());
        // ... unless the fetch recorded it: then it is checked, across MiB boundaries.
        let recorded = |etag, part_size| Held {
            local: crate::model::record::Local {
                part_size,
                ..Default::default()
            },
            ..held(size, etag)
        };
        assert_eq!(
            verify_content(&path, &recorded(odd, (5 << 20) + 1)),
            Ok(true)
        );
        assert_eq!(verify_content(&path, &recorded(tiny, 13_900)), Ok(true));
        // An SSE-KMS file: its opaque ETag says nothing, the recorded CRC64NVME does.
        let mut crc =
            crate::model::checksum::Hasher::new(crate::model::checksum::Algorithm::Crc64Nvme);
        crc.update(&bytes);
        let kms = Held {
            etag_is_md5: false,
            local: crate::model::record::Local {
                check: crate::model::record::Check::Crc64Nvme,
                checksum: crate::model::record::StoredChecksum::new(&crc.finish()).unwrap(),
                ..Default::default()
            },
            ..held(size, single)
        };
        assert_eq!(verify_content(&path, &kms), Ok(true));
        // One flipped byte is found, single or multipart, by MD5 or by checksum.
        let mut bad = bytes.clone();
        bad[9 << 20] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(verify_content(&path, &held(size, single)).is_err());
        let etag = multipart_etag(&bytes, 8 << 20);
        assert!(verify_content(&path, &held(size, etag)).is_err());
        assert!(verify_content(&path, &kms).is_err());
        assert!(verify_content(&path, &recorded(odd, (5 << 20) + 1)).is_err());
    }
}
