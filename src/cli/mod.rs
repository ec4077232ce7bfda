//! One module per subcommand: parse arguments, call the library, print. The shared pieces
//! (S3 options, output, progress flags) live here so every command takes them the same way.

pub mod changes;
pub mod dates;
pub mod diff;
pub mod dump;
pub mod fsck;
pub mod get;
pub mod index;
pub mod kit;
pub mod limits;
pub mod locate;
pub mod prune;
pub mod restore;
pub mod rollback;
pub mod signals;
pub mod status;
pub mod sync;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use s3invbackup::index::build::IndexOptions;
use s3invbackup::inventory::Inventory;
use s3invbackup::s3::S3Config;
use s3invbackup::sys::progress;

/// What a command ended with, beyond "it ran"; `main.rs` maps each to an exit status in
/// one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `diff --exit-code`: there are changes.
    Changes,
    /// `fsck`: problems were found (repaired or not).
    Problems,
    /// Done, but some versions could not be fetched or are not held.
    Partial,
    /// Stopped by a signal; resumable.
    Interrupted,
}

/// How to reach S3 (for `s3://` inventories).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3-compatible endpoint (path-style addressing), e.g. http://127.0.0.1:8333
    /// [default: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS]
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// The buckets' region [default: asked of S3 for each bucket; AWS_REGION is only where
    /// to ask first]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Do not sign requests even if credentials are configured (public buckets)
    #[arg(long, global = true)]
    pub no_sign_request: bool,
    /// A profile of ~/.aws/config / ~/.aws/credentials [default: AWS_PROFILE, else default]
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// `requester`: pay for requests to a Requester Pays bucket
    #[arg(long, global = true, value_parser = ["requester"])]
    pub request_payer: Option<String>,
    /// Seconds without an answer or a byte of the body before a connection counts as
    /// stalled; the transfer is then resumed on a new connection
    #[arg(long, global = true, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout: u64,
}

impl S3Args {
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            anonymous: self.no_sign_request,
            profile: self.profile.clone(),
            requester_pays: self.request_payer.is_some(),
            read_timeout: Some(std::time::Duration::from_secs(self.read_timeout)),
        }
    }

    pub fn open_inventory(&self, spec: &str) -> Result<Inventory> {
        Inventory::open(spec, &self.config())
    }
}

/// How to show progress.
#[derive(Debug, Clone, Args)]
pub struct ProgressArgs {
    /// Progress display: auto (a bar on a terminal, plain lines otherwise), plain, none
    #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "none"], global = true)]
    pub progress: String,
    /// Seconds between plain progress lines
    #[arg(long, default_value_t = 30, global = true)]
    pub progress_interval: u64,
}

impl ProgressArgs {
    /// The library's options.
    pub fn options(&self) -> progress::Progress {
        progress::Progress {
            mode: self.mode(),
            interval: self.interval(),
        }
    }

    fn mode(&self) -> progress::Mode {
        match self.progress.as_str() {
            "plain" => progress::Mode::Plain,
            "none" => progress::Mode::Quiet,
            _ => progress::Mode::Auto,
        }
    }
    fn interval(&self) -> Duration {
        Duration::from_secs(self.progress_interval.max(1))
    }
}

/// The index builder's options from `--memory` and the progress flags, wired to the
/// process's stop token (its temporary files go if the process is interrupted): the one
/// conversion `index`, `diff` and `sync` share.
pub fn index_options(memory: u64, progress: &ProgressArgs) -> IndexOptions {
    IndexOptions {
        memory,
        progress: progress.options(),
        stop: signals::stop_token(),
        ..IndexOptions::default()
    }
}

/// Standard output or `-o FILE`, buffered.
pub fn output(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    })
}

/// Refuses, before any work, an output path the run could not write at its end: its
/// directory must exist and take a new file (one is made and removed).
pub fn check_output_path(path: &std::path::Path) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!("{} is a directory, not a file to write", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".s3invbackup-probe")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| {
            format!(
                "{} cannot be written (checked before the run): its directory {}",
                path.display(),
                if dir.is_dir() {
                    "is not writable"
                } else {
                    "does not exist"
                }
            )
        })
}

/// Runs `f`, a command that writes the backup, and appends it to the backup's run history
/// (`.<stem>/runs.jsonl`) however it ends, so that a repair or a prune has its own row
/// beside the nights. A refusal because another process holds the lock is not a run.
pub fn recorded<T>(
    backup: &s3invbackup::backup::Backup,
    command: &str,
    f: impl FnOnce() -> Result<(T, s3invbackup::backup::runs::RunResult)>,
) -> Result<T> {
    use s3invbackup::backup::runs::{RunRecord, RunResult};
    use s3invbackup::model::timestamp::Timestamp;
    let started = Timestamp::now();
    let result = f();
    if !result.as_ref().err().is_some_and(is_lock_refusal) {
        let record = RunRecord {
            result: Some(match &result {
                Ok((_, r)) => *r,
                Err(_) => RunResult::Failed,
            }),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            ..RunRecord::timed(command, started, Timestamp::now())
        };
        if let Err(e) = backup.append_run(&record) {
            tracing::warn!("could not record the run in the backup's history: {e:#}");
        }
    }
    result.map(|(t, _)| t)
}

/// The error is a refusal because another process holds the backup's lock: that run never
/// started, and the holder's run is the one to record.
pub fn is_lock_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<s3invbackup::error::Refusal>(),
            Some(s3invbackup::error::Refusal::Locked { .. })
        )
    })
}
