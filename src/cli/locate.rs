//! `s3invbackup locate BACKUP KEY`: every version the backup holds of a key, and where.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use s3invbackup::backup::Backup;
use s3invbackup::maintain::history::{self, describe, parse_time, version_at, versions_of};
use s3invbackup::model::version_id;

use super::output;

/// Every version the backup holds of KEY (oldest first): version id, last modified, size,
/// ETag, status (current, noncurrent, delete-marker, gone-from-bucket), local state and path.
/// A seek in the catalog, not a walk of the tree; needs no lock.
///
/// With --version-id or --at, prints only the path of that one version (exit 1 if the
/// backup does not hold it, or if the key was deleted or did not exist at that time).
#[derive(Debug, Args)]
pub struct LocateArgs {
    /// The backup directory
    pub backup: PathBuf,
    /// The S3 key, as in the bucket (decoded: spaces, not '+')
    pub key: String,
    /// The path of this version (`null` for the pre-versioning one)
    #[arg(long, conflicts_with = "at")]
    pub version_id: Option<String>,
    /// The path of the version that was current at this time (RFC 3339 with a zone, or a
    /// date: the end of that day, UTC)
    #[arg(long)]
    pub at: Option<String>,
    /// One JSON object per version instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &LocateArgs) -> Result<()> {
    let backup = Backup::open_existing(&args.backup)?;
    let versions = versions_of(&backup, &args.key)?;
    if versions.is_empty() {
        bail!("the backup holds no version of {:?}", args.key);
    }
    let one = if let Some(vid) = &args.version_id {
        let want = version_id::from_s3(vid);
        Some(
            versions
                .iter()
                .find(|v| v.version_id == want)
                .with_context(|| format!("the backup holds no version {vid} of {:?}", args.key))?,
        )
    } else if let Some(at) = &args.at {
        let t = parse_time(at)?;
        let v = version_at(&versions, t)
            .with_context(|| format!("{:?} did not exist yet at {t}", args.key))?;
        if v.is_delete_marker() {
            bail!(
                "{:?} was deleted at {t} (delete marker of {})",
                args.key,
                v.last_modified
            );
        }
        Some(v)
    } else {
        None
    };
    let mut out = output(None)?;
    if let Some(v) = one {
        if !history::is_held(v) {
            bail!(
                "version {} of {:?} is {} in this backup (no file)",
                v.version_id_or_null(),
                args.key,
                v.local.state.name()
            );
        }
        let d = describe(&backup, v);
        writeln!(out, "{}", backup.root.join(d.path.expect("held")).display())?;
        out.flush()?;
        return Ok(());
    }
    for v in &versions {
        let d = describe(&backup, v);
        if args.json {
            serde_json::to_writer(&mut out, &d)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{}  {}  {:>12}  {}  {} ({}{})  {}",
                d.version_id,
                d.last_modified,
                d.size,
                d.etag.as_deref().unwrap_or("-"),
                d.status,
                d.local,
                d.verified
                    .map(|v| format!(", verified: {v}"))
                    .unwrap_or_default(),
                d.path
                    .map(|p| backup.root.join(p).display().to_string())
                    .unwrap_or_else(|| "-".into())
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

use std::io::Write;
