//! Reading an S3 Inventory from `s3://bucket/prefix/` or from a local copy with the same
//! layout: date folders, verified manifests, and verified data-file streams.

mod columnar;
mod csv_rows;
mod date;
mod manifest;
mod rows;
mod schema;
pub mod synth;

pub use columnar::read_file as read_columnar_file;
pub use date::{DateSpec, InventoryDate};
pub use manifest::{Manifest, ManifestFile, data_file_path, hex};
pub use rows::{DataFile, Mismatch, RowReader, is_mismatch};
pub use schema::{Columns, Field, Format, RowError, RowParser, Values};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use md5::{Digest, Md5};

use crate::s3::{S3Client, S3Config};

/// How many times a file read from S3 is read whole when it does not match its checksum
/// (a damaged transfer) before that is an error.
pub const READ_ATTEMPTS: u32 = 3;

/// Where an inventory lives: the folder that holds the dated folders, `data/` and `hive/`.
pub enum Location {
    Local(PathBuf),
    S3 {
        client: Box<S3Client>,
        bucket: String,
        prefix: String,
    },
}

pub struct Inventory {
    location: Location,
}

/// A date folder and whether it is usable (both manifest.json and manifest.checksum exist;
/// AWS writes the checksum last, so a folder without it is still being delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateEntry {
    pub date: InventoryDate,
    pub has_manifest: bool,
    pub has_checksum: bool,
}

impl DateEntry {
    pub fn is_complete(&self) -> bool {
        self.has_manifest && self.has_checksum
    }
}

/// A verified manifest of one date, ready to read.
pub struct DatedManifest {
    pub date: InventoryDate,
    /// Lowercase hex MD5 of manifest.json (verified against manifest.checksum).
    pub md5: String,
    pub manifest: Manifest,
    pub columns: Columns,
    pub data_files: Vec<DataFile>,
}

impl Inventory {
    /// `spec` is `s3://bucket/prefix/` or a local directory.
    pub fn open(spec: &str, s3: &S3Config) -> Result<Inventory> {
        let location = if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("bad inventory location {spec:?}: no bucket");
            }
            let prefix = prefix.trim_end_matches('/');
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            Location::S3 {
                client: Box::new(S3Client::new(s3)?),
                bucket: bucket.to_string(),
                prefix,
            }
        } else {
            let dir = PathBuf::from(spec);
            if !dir.is_dir() {
                bail!("inventory {spec}: not a directory (and not an s3:// URL)");
            }
            Location::Local(dir)
        };
        Ok(Inventory { location })
    }

    /// The full name of a file of this inventory, for messages.
    pub fn describe(&self, rel: &str) -> String {
        match &self.location {
            Location::Local(dir) => dir.join(rel).display().to_string(),
            Location::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}{rel}"),
        }
    }

    /// Every date folder, oldest first, complete or not.
    pub fn dates(&self) -> Result<Vec<DateEntry>> {
        Ok(self.scan(None)?.0)
    }

    /// The date folders from `from` on (that one included), oldest first: what a backup
    /// that has applied `from` still needs to know. On S3 that is one listing request
    /// however many years of dates lie before it, where [`Inventory::dates`] pays a listing
    /// of the top level and one per year.
    pub fn dates_from(&self, from: &InventoryDate) -> Result<Vec<DateEntry>> {
        Ok(self.scan(Some(from))?.0)
    }

    /// The date folders, and the folders shaped like a date that are not one (month 13,
    /// hour 24, Feb 29 of a common year: skipped by every command, listed by `dates`).
    pub fn dates_with_invalid(&self) -> Result<(Vec<DateEntry>, Vec<String>)> {
        self.scan(None)
    }

    fn scan(&self, from: Option<&InventoryDate>) -> Result<(Vec<DateEntry>, Vec<String>)> {
        let mut invalid = Vec::new();
        let mut date_folder = |name: &str, under: &dyn std::fmt::Debug| {
            let date = date_folder(name, under);
            if date.is_none() && InventoryDate::has_shape(name) {
                invalid.push(name.to_string());
            }
            date
        };
        let mut found: BTreeMap<InventoryDate, DateEntry> = BTreeMap::new();
        let mut note = |date: InventoryDate, file: Option<&str>| {
            let e = found.entry(date.clone()).or_insert(DateEntry {
                date,
                has_manifest: false,
                has_checksum: false,
            });
            match file {
                Some("manifest.json") => e.has_manifest = true,
                Some("manifest.checksum") => e.has_checksum = true,
                _ => {}
            }
        };
        match &self.location {
            Location::Local(dir) => {
                let entries =
                    std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
                for entry in entries {
                    let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                    let name = entry.file_name();
                    let Some(date) = name.to_str().and_then(|n| date_folder(n, dir)) else {
                        continue;
                    };
                    if from.is_some_and(|f| date < *f) {
                        continue;
                    }
                    note(date.clone(), None);
                    for name in ["manifest.json", "manifest.checksum"] {
                        if entry.path().join(name).is_file() {
                            note(date.clone(), Some(name));
                        }
                    }
                }
            }
            Location::S3 {
                client,
                bucket,
                prefix,
            } => {
                if let Some(from) = from {
                    // The date folders sort before `data/` and `hive/` (a digit is below
                    // any letter): keys from `from` on, until the first that does not
                    // begin with a digit, are every later folder's files, on one page per
                    // 500 dates.
                    let dated = |key: &str| {
                        key.as_bytes()
                            .get(prefix.len())
                            .is_some_and(u8::is_ascii_digit)
                    };
                    let listing = client.list_while(
                        bucket,
                        prefix,
                        None,
                        Some(&format!("{prefix}{from}")),
                        |l| l.keys.last().is_none_or(|(k, _)| dated(k)),
                    )?;
                    // Each folder parsed once (a folder not a real date is warned of, and
                    // kept for `dates`), then each of its files noted.
                    let mut folder: (&str, Option<InventoryDate>) = ("", None);
                    for (key, _) in listing.keys.iter().take_while(|(k, _)| dated(k)) {
                        let Some((name, file)) = key[prefix.len()..].split_once('/') else {
                            continue;
                        };
                        if name != folder.0 {
                            folder = (name, date_folder(name, prefix));
                        }
                        if let Some(date) = &folder.1 {
                            note(date.clone(), Some(file));
                        }
                    }
                } else {
                    let top = client.list(bucket, prefix, Some("/"))?;
                    let mut years = std::collections::BTreeSet::new();
                    for p in &top.prefixes {
                        let name = p[prefix.len()..].trim_end_matches('/');
                        if let Some(date) = date_folder(name, prefix) {
                            years.insert(date.as_str()[..4].to_string());
                            note(date, None);
                        }
                    }
                    // One listing per year finds the files of every date folder without a
                    // request per folder (dandiarchive has thousands of dates), the years
                    // all at once: one round trip, not one per year.
                    let listings: Vec<Result<crate::s3::Listing>> = std::thread::scope(|s| {
                        let asked: Vec<_> = years
                            .iter()
                            .map(|year| {
                                let year_prefix = format!("{prefix}{year}-");
                                s.spawn(move || client.list(bucket, &year_prefix, None))
                            })
                            .collect();
                        asked
                            .into_iter()
                            .map(|h| {
                                h.join()
                                    .unwrap_or_else(|_| bail!("a listing thread panicked"))
                            })
                            .collect()
                    });
                    for listing in listings {
                        for (key, _) in listing?.keys {
                            if let Some((folder, file)) = key[prefix.len()..].split_once('/')
                                && let Some(date) = InventoryDate::parse(folder)
                            {
                                note(date, Some(file));
                            }
                        }
                    }
                }
            }
        }
        invalid.sort();
        Ok((found.into_values().collect(), invalid))
    }

    /// The complete dates, oldest first.
    pub fn complete_dates(&self) -> Result<Vec<InventoryDate>> {
        Ok(self
            .dates()?
            .into_iter()
            .filter(DateEntry::is_complete)
            .map(|e| e.date)
            .collect())
    }

    /// Resolves a user's date to a complete inventory date.
    pub fn resolve_date(&self, spec: &DateSpec) -> Result<InventoryDate> {
        let dates = self.complete_dates()?;
        match spec.select(&dates) {
            Some(d) => Ok(d.clone()),
            None => {
                let latest = dates
                    .last()
                    .map(|d| format!("; the latest complete date is {d}"))
                    .unwrap_or_default();
                bail!(
                    "inventory {}: no complete inventory for {spec}{latest}",
                    self.describe("")
                )
            }
        }
    }

    /// True when the inventory is read over the network, where a read that does not match
    /// its checksum is worth repeating.
    pub fn is_remote(&self) -> bool {
        matches!(self.location, Location::S3 { .. })
    }

    /// The MD5 that `date`'s manifest.checksum announces (lowercase hex): one small read, to
    /// tell whether an index built earlier is of this very manifest.
    pub fn manifest_checksum(&self, date: &InventoryDate) -> Result<String> {
        let bytes = self.read_small(&format!("{date}/manifest.checksum"))?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_ascii_lowercase())
    }

    /// Reads and verifies the manifest of `date`, and maps its columns.
    pub fn manifest(&self, date: &InventoryDate) -> Result<DatedManifest> {
        let manifest_rel = format!("{date}/manifest.json");
        let name = self.describe(&manifest_rel);
        let mut attempt = 0;
        let manifest = loop {
            attempt += 1;
            let (manifest_bytes, checksum) =
                self.read_two(&manifest_rel, &format!("{date}/manifest.checksum"))?;
            match Manifest::parse_verified(&manifest_bytes, &checksum, &name) {
                Err(e) if self.is_remote() && is_mismatch(&e) && attempt < READ_ATTEMPTS => {
                    tracing::warn!(
                        "{e:#}; reading it again (attempt {attempt} of {READ_ATTEMPTS})"
                    );
                }
                result => break (result?, hex(&Md5::digest(&manifest_bytes))),
            }
        };
        let (manifest, md5) = manifest;
        let format = Format::from_manifest(&manifest.file_format).expect("checked by the parser");
        let columns = Columns::from_file_schema(format, &manifest.file_schema)
            .with_context(|| name.clone())?;
        if !columns.has_versions() {
            tracing::warn!(
                "{name}: the inventory lists current versions only (no VersionId column); \
                 history will hold only what consecutive inventories showed"
            );
        }
        let mut data_files = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            let rel = data_file_path(&f.key).with_context(|| name.clone())?;
            data_files.push(DataFile {
                display: self.describe(&rel),
                rel,
                size: f.size,
                md5: f.md5_checksum.to_ascii_lowercase(),
            });
        }
        Ok(DatedManifest {
            date: date.clone(),
            md5,
            manifest,
            columns,
            data_files,
        })
    }

    /// Two small files at once: on S3 one round trip instead of two (the manifest and its
    /// checksum, on every date a sync applies).
    fn read_two(&self, a: &str, b: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        if !self.is_remote() {
            return Ok((self.read_small(a)?, self.read_small(b)?));
        }
        std::thread::scope(|s| {
            let second = s.spawn(|| self.read_small(b));
            let first = self.read_small(a);
            let second = second
                .join()
                .unwrap_or_else(|_| bail!("reading {}: the thread panicked", self.describe(b)));
            Ok((first?, second?))
        })
    }

    pub fn read_small(&self, rel: &str) -> Result<Vec<u8>> {
        match &self.location {
            Location::Local(dir) => {
                let path = dir.join(rel);
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
            }
            Location::S3 {
                client,
                bucket,
                prefix,
            } => client.get_bytes(bucket, &format!("{prefix}{rel}")),
        }
    }

    /// The first `len` bytes of a file of this inventory (fewer if it is shorter).
    pub fn open_head(&self, rel: &str, len: u64) -> Result<Box<dyn Read + Send + '_>> {
        self.open_range(rel, 0, len)
    }

    /// `len` bytes of a file of this inventory from `start` (fewer if it is shorter): one
    /// Range GET on S3.
    pub fn open_range(&self, rel: &str, start: u64, len: u64) -> Result<Box<dyn Read + Send + '_>> {
        match &self.location {
            Location::Local(dir) => {
                use std::io::{Seek, SeekFrom};
                let path = dir.join(rel);
                let mut f =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                f.seek(SeekFrom::Start(start))
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(Box::new(f.take(len)))
            }
            Location::S3 {
                client,
                bucket,
                prefix,
            } => {
                let key = format!("{prefix}{rel}");
                Ok(Box::new(client.get(&crate::s3::Get {
                    range: Some((start, Some(start + len.max(1) - 1))),
                    patience: crate::s3::Patience::Listing,
                    ..crate::s3::Get::object(bucket, &key)
                })?))
            }
        }
    }

    /// The path of a file of a local inventory (None for one on S3).
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        match &self.location {
            Location::Local(dir) => Some(dir.join(rel)),
            Location::S3 { .. } => None,
        }
    }

    /// A raw byte stream of a file of this inventory.
    pub fn open_stream(&self, rel: &str) -> Result<Box<dyn Read + Send + '_>> {
        match &self.location {
            Location::Local(dir) => {
                let path = dir.join(rel);
                Ok(Box::new(
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?,
                ))
            }
            Location::S3 {
                client,
                bucket,
                prefix,
            } => Ok(Box::new(
                client.get_reader(bucket, &format!("{prefix}{rel}"))?,
            )),
        }
    }
}

/// A listed folder name as an inventory date; one shaped like a date that is not a real time
/// (month 13, hour 24) is skipped with a warning, since a writer meant it as one.
fn date_folder(name: &str, under: impl std::fmt::Debug) -> Option<InventoryDate> {
    let date = InventoryDate::parse(name);
    if date.is_none() && InventoryDate::has_shape(name) {
        tracing::warn!("inventory folder {name:?} under {under:?} is not a valid date: ignored");
    }
    date
}
