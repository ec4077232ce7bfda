//! `INVENTORY@DATE` operands: an index built on demand and kept in a cache directory, so a
//! second diff against the same date costs nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use md5::{Digest, Md5};

use crate::index::IndexReader;
use crate::index::build::{IndexOptions, build_index};
use crate::inventory::{DateSpec, Inventory, hex};
use crate::s3::S3Config;

/// What a user named: an index file, or an inventory date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    File(PathBuf),
    Inventory { inventory: String, date: DateSpec },
}

impl Operand {
    /// An existing file is an index; otherwise `INVENTORY@DATE` (split at the last `@`).
    pub fn parse(s: &str) -> Result<Operand> {
        if Path::new(s).is_file() {
            return Ok(Operand::File(PathBuf::from(s)));
        }
        match s.rsplit_once('@') {
            Some((inventory, date)) if !inventory.is_empty() => Ok(Operand::Inventory {
                inventory: inventory.to_string(),
                date: DateSpec::parse(date).with_context(|| format!("in operand {s:?}"))?,
            }),
            _ => bail!("{s:?} is neither an index file nor INVENTORY@DATE"),
        }
    }
}

/// `$XDG_CACHE_HOME/s3invbackup`, else `~/.cache/s3invbackup`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("s3invbackup");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("s3invbackup"),
        None => PathBuf::from(".s3invbackup-cache"),
    }
}

/// The index file for `op`: the file itself, or the cached index of the inventory date
/// (built first if the cache lacks it or holds an unreadable one).
pub fn resolve(
    op: &Operand,
    s3: &S3Config,
    cache_dir: &Path,
    opts: &IndexOptions,
) -> Result<PathBuf> {
    let (spec, date_spec) = match op {
        Operand::File(p) => return Ok(p.clone()),
        Operand::Inventory { inventory, date } => (inventory, date),
    };
    let inventory = Inventory::open(spec, s3)?;
    let date = inventory.resolve_date(date_spec)?;
    let dir = cache_dir.join(cache_name(spec));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating cache directory {}", dir.display()))?;
    let path = dir.join(format!("{date}.s3inv"));
    if path.exists() {
        match IndexReader::open(&path) {
            Ok(r)
                if r.meta().date == date.as_str()
                    && r.meta().manifest_md5 == inventory.manifest_checksum(&date)? =>
            {
                return Ok(path);
            }
            Ok(_) | Err(_) => tracing::info!(
                "cached index {} is not of this inventory's manifest; rebuilding it",
                path.display()
            ),
        }
    }
    build_index(&inventory, &date, &path, opts)?;
    Ok(path)
}

/// A directory name for an inventory location: readable, and unique by a hash.
fn cache_name(spec: &str) -> String {
    let trimmed = spec.trim_end_matches('/');
    let readable: String = trimmed
        .rsplit('/')
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let canonical = std::fs::canonicalize(trimmed)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| trimmed.to_string());
    format!(
        "{readable}-{}",
        &hex(&Md5::digest(canonical.as_bytes()))[..12]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operands() {
        assert_eq!(
            Operand::parse("s3://b/p/@2024-11-06").unwrap(),
            Operand::Inventory {
                inventory: "s3://b/p/".into(),
                date: DateSpec::Day("2024-11-06".into())
            }
        );
        assert!(Operand::parse("/nonexistent/file.s3inv").is_err());
        assert!(Operand::parse("s3://b/p@yesterday").is_err());
        assert_ne!(cache_name("s3://a/x/inv"), cache_name("s3://b/x/inv"));
        assert!(cache_name("s3://a/x/inv/").starts_with("x-inv-"));
    }
}
