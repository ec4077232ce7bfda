//! The per-directory versions JSON (`.<stem>-versions.json`): what each current file of a
//! directory is. A view of the catalog, rendered from it (by sync for the directories a run
//! changed, by fsck to check and rebuild them).

use std::collections::HashSet;

use anyhow::{Context, Result, anyhow};

use crate::backup::Backup;
use crate::backup::catalog::{self, Catalog, is_current, is_under};
use crate::model::record::{LocalState, VersionRecord};

/// One current file as its directory's versions JSON describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionsEntry {
    pub version_id: String,
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: String,
}

/// Rewrites `.<stem>-versions.json` in each of `dirs` from `catalog`
/// (removing it where a directory has no current file). A few directories are read with
/// prefix seeks (a nightly run touches a few hundred); many, or the top directory, with one
/// pass over the catalog. Memory holds the entries of the directories on the current path.
pub fn write_versions_files(backup: &Backup, reader: &Catalog, dirs: &[String]) -> Result<u64> {
    if dirs.is_empty() {
        return Ok(0);
    }
    let mut writer = Renderer {
        wanted: Some(dirs.iter().map(String::as_str).collect()),
        open: Vec::new(),
        done: HashSet::new(),
    };
    let mut sink = |dir: &str, text: &[u8]| write_versions_file(backup, dir, Some(text));
    let seek = dirs.len() * 8 < reader.blocks() && !dirs.iter().any(String::is_empty);
    if seek {
        let (mut t_read, mut t_write) = (0.0, 0.0);
        for dir in dirs {
            let t = std::time::Instant::now();
            let mut stream = reader.stream_prefix(&format!("{dir}/"));
            while let Some(rec) = stream.next_record()? {
                writer.add(rec, &mut sink)?;
            }
            t_read += t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            writer.close_all(&mut sink)?;
            t_write += t.elapsed().as_secs_f64();
        }
        tracing::debug!("versions JSON: reading {t_read:.2} s, writing {t_write:.2} s");
    } else {
        let t = std::time::Instant::now();
        let mut stream = reader.stream();
        while let Some(rec) = stream.next_record()? {
            writer.add(rec, &mut sink)?;
        }
        writer.close_all(&mut sink)?;
        tracing::debug!(
            "versions JSON: one pass over {} blocks in {:.2} s",
            reader.blocks(),
            t.elapsed().as_secs_f64()
        );
    }
    for dir in dirs {
        if !writer.done.contains(dir) {
            write_versions_file(backup, dir, None)?;
        }
    }
    Ok(writer.done.len() as u64)
}

/// Rewrites the versions JSON of a sharded backup's spine directories (see
/// [`crate::backup::shards`]) from the merged catalog of `whole`, under `spine.lock` so
/// that two shards committing at once do not interleave. Only each directory's own files
/// are read: a subdirectory's records are skipped, by a seek past it when there are many.
/// Idempotent: any shard may run it at any time, and the last to commit leaves the view
/// of the whole.
pub fn write_spine_versions_files(whole: &Backup) -> Result<u64> {
    let Some(shards) = whole.shards() else {
        return Ok(0);
    };
    let lock_path = whole.state_dir().join("shards").join("spine.lock");
    let lock = crate::backup::lock_file(&lock_path)?;
    let t = std::time::Instant::now();
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let waited = t.elapsed().as_secs_f64();
    let catalog = whole.catalog()?;
    let mut written = 0;
    for dir in shards.spine() {
        let mut writer = Renderer::new(Some(std::iter::once(dir.as_str()).collect()));
        let mut sink = |d: &str, text: &[u8]| write_versions_file(whole, d, Some(text));
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut from = prefix.clone();
        'seek: loop {
            let mut stream = catalog.stream_from(&from, &prefix);
            let mut skipped = 0u32;
            while let Some(rec) = stream.next_record()? {
                if rec.key.as_str() < from.as_str() {
                    continue;
                }
                let rest = &rec.key[prefix.len()..];
                if let Some(j) = rest.find('/') {
                    skipped += 1;
                    if skipped >= SKIP_BEFORE_SEEK {
                        // Past everything under `rest[..j]/` ('0' follows '/').
                        from = format!("{prefix}{}0", &rest[..j]);
                        continue 'seek;
                    }
                    continue;
                }
                skipped = 0;
                writer.add(rec, &mut sink)?;
            }
            break;
        }
        writer.close_all(&mut sink)?;
        if writer.done.contains(&dir) {
            written += 1;
        } else {
            write_versions_file(whole, &dir, None)?;
        }
    }
    drop(lock);
    tracing::info!(
        "spine versions JSON: {written} of {} directories in {:.3} s ({waited:.3} s waiting for spine.lock)",
        shards.spine().len(),
        t.elapsed().as_secs_f64()
    );
    Ok(written)
}

/// Records of one subdirectory read in a row before the walk seeks past it.
const SKIP_BEFORE_SEEK: u32 = 4096;

/// Renders the versions JSON of directories from catalog records in key order. A
/// directory's files come in name order (key order), interleaved only with its
/// subdirectories' records, so each open directory is one growing buffer of JSON text,
/// handed to a sink when the walk leaves the directory.
pub struct Renderer<'a> {
    /// Directories to render; None: every directory with a current file.
    pub wanted: Option<HashSet<&'a str>>,
    /// Open directories, outermost first: (directory, JSON text so far).
    open: Vec<(String, Vec<u8>)>,
    /// Directories rendered.
    pub done: HashSet<String>,
}

impl<'a> Renderer<'a> {
    pub fn new(wanted: Option<HashSet<&'a str>>) -> Renderer<'a> {
        Renderer {
            wanted,
            open: Vec::new(),
            done: HashSet::new(),
        }
    }

    pub fn add(
        &mut self,
        rec: &VersionRecord,
        sink: &mut impl FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if !is_current(rec) || rec.local.state != LocalState::Present {
            return Ok(());
        }
        // A current file is at its key's own path.
        let dir = catalog::parent_dir(&rec.key);
        if self.wanted.as_ref().is_some_and(|w| !w.contains(dir)) {
            return Ok(());
        }
        while let Some((d, _)) = self.open.last() {
            if d.as_str() == dir || d.is_empty() || is_under(dir, d) {
                break;
            }
            let (d, e) = self.open.pop().expect("non-empty");
            self.flush(d, e, sink)?;
        }
        if self.open.last().is_none_or(|(d, _)| d.as_str() != dir) {
            self.open.push((dir.to_string(), Vec::with_capacity(4096)));
        }
        let name = &rec.key[if dir.is_empty() { 0 } else { dir.len() + 1 }..];
        let out = &mut self.open.last_mut().expect("pushed").1;
        versions_json_entry(out, name, rec)
    }

    pub fn close_all(&mut self, sink: &mut impl FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
        while let Some((d, e)) = self.open.pop() {
            self.flush(d, e, sink)?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        dir: String,
        mut text: Vec<u8>,
        sink: &mut impl FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        text.extend_from_slice(b"\n}\n");
        sink(&dir, &text)?;
        self.done.insert(dir);
        Ok(())
    }
}

/// Appends `"name":{...}` (with the separator a previous entry needs), one file per line:
/// compact enough to rewrite a 50,000-file Zarr directory's JSON every night, still
/// greppable. The same fields as [`VersionsEntry`].
fn versions_json_entry(out: &mut Vec<u8>, name: &str, rec: &VersionRecord) -> Result<()> {
    use std::io::Write;
    out.extend_from_slice(if out.is_empty() { b"{\n" } else { b",\n" });
    serde_json::to_writer(&mut *out, name)?;
    out.extend_from_slice(b":{\"version_id\":");
    serde_json::to_writer(&mut *out, rec.version_id_or_null())?;
    match rec.etag {
        Some(e) => write!(out, ",\"etag\":\"{e}\"")?,
        None => out.extend_from_slice(b",\"etag\":null"),
    }
    write!(
        out,
        ",\"size\":{},\"last_modified\":\"{}\"}}",
        rec.size, rec.last_modified
    )?;
    Ok(())
}

/// Writes (or, with `None`, removes) one directory's versions JSON. Not synced one by one:
/// the commit syncs the filesystem once, and the file is rebuildable from the catalog.
pub fn write_versions_file(backup: &Backup, dir: &str, text: Option<&[u8]>) -> Result<()> {
    let file = if dir.is_empty() {
        backup.stem.versions_file()
    } else {
        format!("{dir}/{}", backup.stem.versions_file())
    };
    crate::backup::layout::no_symlink_on_the_way(&backup.root, &file).map_err(|e| anyhow!(e))?;
    let dir_path = backup.root.join(dir);
    let path = dir_path.join(backup.stem.versions_file());
    let Some(bytes) = text else {
        return match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            // No JSON to remove where there is no directory: `dir` is a file again (a
            // rollback of a file -> directory run, killed before the directory was made).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        };
    };
    if !dir_path.is_dir() {
        return Err(anyhow!(
            "{} has current files in the catalog but is not a directory",
            dir_path.display()
        ));
    }
    let tmp = dir_path.join(format!("{}.tmp", backup.stem.versions_file()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        // A full disk must not leave a half-written file among the user's.
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Renders, during the plan's walk, the versions JSON of the directories the run changes,
/// from the very records the plan keeps: the commit then writes them without reading the
/// catalog again. A directory's files come in key order, contiguous with its
/// subdirectories', so each directory on the current path buffers its current files (as
/// record copies: cheap, and only rendered if the directory turns out changed) until the
/// walk leaves it. A directory with more than [`PLANNED_DIR_LIMIT`] current files is not
/// buffered (memory stays bounded): its JSON is rendered at commit by a seek instead, as
/// are the directories of versions whose fetch failed.
pub struct PlannedVersions {
    /// Open directories, outermost first: (directory, its current files, overflowed).
    open: Vec<(String, Vec<VersionRecord>, usize, bool)>,
    depth: usize,
    /// zstd: the file is a second copy of JSON the commit writes into the tree, and JSON
    /// compresses ~10x, so the plan adds a tenth to the night's writes, not a double.
    out: zstd::Encoder<'static, std::io::BufWriter<std::fs::File>>,
    path: std::path::PathBuf,
    /// Directories rendered into `out`.
    pub rendered: u64,
}

/// Current files a directory may buffer during the plan (see [`PlannedVersions`]).
pub const PLANNED_DIR_LIMIT: usize = 16_384;

impl PlannedVersions {
    pub fn create(path: &std::path::Path) -> Result<PlannedVersions> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(PlannedVersions {
            open: Vec::new(),
            depth: 0,
            out: zstd::Encoder::new(std::io::BufWriter::with_capacity(1 << 16, file), 1)?,
            path: path.to_path_buf(),
            rendered: 0,
        })
    }

    /// Takes the next record the plan keeps (all of them, in key order); `dirty` says which
    /// directories the run changes (complete for a directory once the walk has left it).
    pub fn add(
        &mut self,
        rec: &VersionRecord,
        dirty: &std::collections::BTreeSet<String>,
    ) -> Result<()> {
        if !is_current(rec) || rec.local.state != LocalState::Present {
            return Ok(());
        }
        let dir = catalog::parent_dir(&rec.key);
        while self.depth > 0 {
            let d = &self.open[self.depth - 1].0;
            if d.as_str() == dir || d.is_empty() || is_under(dir, d) {
                break;
            }
            self.close_top(dirty)?;
        }
        if self.depth == 0 || self.open[self.depth - 1].0 != dir {
            if self.depth == self.open.len() {
                self.open.push((String::new(), Vec::new(), 0, false));
            }
            let e = &mut self.open[self.depth];
            e.0.clear();
            e.0.push_str(dir);
            e.2 = 0;
            e.3 = false;
            self.depth += 1;
        }
        let e = &mut self.open[self.depth - 1];
        if e.3 {
            return Ok(());
        }
        if e.2 == PLANNED_DIR_LIMIT {
            e.3 = true;
            return Ok(());
        }
        if e.2 == e.1.len() {
            e.1.push(VersionRecord::default());
        }
        e.1[e.2].copy_from(rec);
        e.2 += 1;
        Ok(())
    }

    fn close_top(&mut self, dirty: &std::collections::BTreeSet<String>) -> Result<()> {
        use std::io::Write;
        self.depth -= 1;
        let (dir, records, len, overflowed) = &self.open[self.depth];
        if *overflowed || !dirty.contains(dir.as_str()) {
            return Ok(());
        }
        let mut text = Vec::with_capacity(64 * len + 8);
        for rec in &records[..*len] {
            let name = &rec.key[if dir.is_empty() { 0 } else { dir.len() + 1 }..];
            versions_json_entry(&mut text, name, rec)?;
        }
        text.extend_from_slice(b"\n}\n");
        let write = |out: &mut zstd::Encoder<'static, std::io::BufWriter<std::fs::File>>| -> std::io::Result<()> {
            out.write_all(&(dir.len() as u32).to_le_bytes())?;
            out.write_all(dir.as_bytes())?;
            out.write_all(&(text.len() as u32).to_le_bytes())?;
            out.write_all(&text)
        };
        write(&mut self.out).with_context(|| format!("writing {}", self.path.display()))?;
        self.rendered += 1;
        Ok(())
    }

    /// Closes every directory (the walk is over) and makes the file durable.
    pub fn finish(mut self, dirty: &std::collections::BTreeSet<String>) -> Result<()> {
        use std::io::Write;
        while self.depth > 0 {
            self.close_top(dirty)?;
        }
        let path = self.path;
        self.out
            .finish()
            .and_then(|mut w| {
                w.flush()?;
                w.get_ref().sync_all()
            })
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Writes the versions JSON of `dirs`: those [`PlannedVersions`] rendered (at `planned`)
/// as they are, unless `rerender` names them; the rest from `catalog` (by seeks). Returns
/// the files written or removed, and how many came from the plan.
pub fn write_planned_versions_files(
    backup: &Backup,
    planned: &std::path::Path,
    catalog: &Catalog,
    dirs: &[String],
    rerender: &HashSet<String>,
) -> Result<(u64, u64)> {
    use std::io::Read;
    let mut left: HashSet<&str> = dirs.iter().map(String::as_str).collect();
    let mut from_plan = 0u64;
    match std::fs::File::open(planned) {
        Ok(f) => {
            let mut r =
                zstd::Decoder::new(f).with_context(|| format!("reading {}", planned.display()))?;
            let corrupt = || anyhow!("{} is damaged (truncated?)", planned.display());
            let mut len = [0u8; 4];
            loop {
                match r.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => {
                        return Err(e).with_context(|| format!("reading {}", planned.display()));
                    }
                }
                let mut dir = vec![0u8; u32::from_le_bytes(len) as usize];
                r.read_exact(&mut dir).map_err(|_| corrupt())?;
                r.read_exact(&mut len).map_err(|_| corrupt())?;
                let mut text = vec![0u8; u32::from_le_bytes(len) as usize];
                r.read_exact(&mut text).map_err(|_| corrupt())?;
                let dir = String::from_utf8(dir).map_err(|_| corrupt())?;
                if rerender.contains(&dir) || !left.contains(dir.as_str()) {
                    continue;
                }
                write_versions_file(backup, &dir, Some(&text))?;
                left.remove(dir.as_str());
                from_plan += 1;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("opening {}", planned.display())),
    }
    let rest: Vec<String> = dirs
        .iter()
        .filter(|d| left.contains(d.as_str()))
        .cloned()
        .collect();
    let by_seek = write_versions_files(backup, catalog, &rest)?;
    Ok((from_plan + by_seek, from_plan))
}
