//! `s3invbackup get s3://bucket/key -o FILE`: fetch and verify one object version by hand.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use s3invbackup::s3::S3Client;
use s3invbackup::sync::concurrency::Jobs;
use s3invbackup::sync::fetch::{Verified, fetch_one};
use s3invbackup::sys::progress::{human_bytes, parse_bytes};

use super::S3Args;

/// Fetch one object (one version of it) with the same verification a backup uses: the size,
/// and the MD5 or the multipart ETag (from part boundaries learnt with ?partNumber=1). FILE is
/// written only once the bytes verify; its mtime is the object's Last-Modified.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// s3://bucket/key
    pub url: String,
    /// The version to fetch (`null` for an object written before versioning) [default: latest]
    #[arg(long)]
    pub version_id: Option<String>,
    /// Where to write it
    #[arg(short, long)]
    pub output: PathBuf,
    /// Parallel range GETs for a big object (16 fill a 4 MiB TCP window's 80 MiB/s each at
    /// 50 ms)
    #[arg(long, default_value_t = 16)]
    pub jobs: usize,
    /// Split objects bigger than this into ranges (multipart objects: on their parts)
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub part_size: u64,
}

pub fn run(args: &GetArgs, s3: &S3Args) -> Result<()> {
    let rest = args
        .url
        .strip_prefix("s3://")
        .ok_or_else(|| anyhow!("{}: not an s3:// URL", args.url))?;
    let Some((bucket, key)) = rest
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
    else {
        bail!("{}: expected s3://bucket/key", args.url);
    };
    let client = S3Client::new(&s3.config())?;
    let dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (staging, _cleanup) = super::signals::stop_token().create_registered(
        || {
            Ok(tempfile::Builder::new()
                .prefix(".s3invbackup-get-")
                .tempfile_in(&dir)
                .with_context(|| format!("creating a temporary file in {}", dir.display()))?
                .into_temp_path())
        },
        |t| t.to_path_buf(),
    )?;
    let opts =
        super::limits::fetch_options(Jobs::Fixed(args.jobs.max(1)), args.jobs, args.part_size);
    let (request, verified) = fetch_one(
        &client,
        bucket,
        key,
        args.version_id.as_deref(),
        &staging,
        &opts,
    )
    .map_err(|e| {
        anyhow!(
            "{}{}: {e}",
            args.url,
            args.version_id
                .as_deref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default()
        )
    })?;
    staging
        .persist(&args.output)
        .with_context(|| format!("renaming into {}", args.output.display()))?;
    let how = match verified {
        Verified::Md5 => "MD5 matches the ETag".to_string(),
        Verified::MultipartEtag => "multipart ETag matches".to_string(),
        Verified::Checksum(a) => format!("S3's {} checksum matches", a.name()),
        Verified::SizeOnly => {
            "size only (the ETag of an SSE-KMS object says nothing about its bytes, and S3 sent no checksum)".to_string()
        }
    };
    s3invbackup::say!(
        "{} -> {}: {} ({} bytes), verified: {how}",
        args.url,
        args.output.display(),
        human_bytes(request.size),
        request.size
    );
    Ok(())
}
