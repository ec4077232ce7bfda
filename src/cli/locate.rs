//! `s3invbackup locate BACKUP KEY`: every version the backup holds of a key, and where.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use s3invbackup::backup::Backup;
use s3invbackup::maintain::history::{self, Timeline, describe, parse_time, versions_of};
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
        let v = Timeline::of(&backup)?
            .version_at(&versions, t)
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
    if args.json {
        for v in &versions {
            serde_json::to_writer(&mut out, &describe(&backup, v))?;
            writeln!(out)?;
        }
    } else {
        let header = [
            "version",
            "last modified",
            "size",
            "etag",
            "status",
            "local",
            "path",
        ]
        .map(String::from);
        let rows: Vec<[String; 7]> = versions
            .iter()
            .map(|v| {
                let d = describe(&backup, v);
                [
                    d.version_id.to_string(),
                    d.last_modified.to_string(),
                    d.size.to_string(),
                    d.etag.as_deref().unwrap_or("-").to_string(),
                    d.status.to_string(),
                    format!(
                        "{}{}",
                        d.local,
                        d.verified
                            .map(|v| format!(", verified: {v}"))
                            .unwrap_or_default()
                    ),
                    d.path
                        .map(|p| backup.root.join(p).display().to_string())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        // Every column as wide as its widest cell; sizes right-aligned, the path last and
        // unpadded (it is what a script cuts off with awk).
        let mut width = [0usize; 7];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            writeln!(
                out,
                "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {:<w4$}  {:<w5$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3],
                w4 = width[4],
                w5 = width[5],
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

use std::io::Write;
