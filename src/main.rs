//! The `s3invbackup` command line: flags to library calls, errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::Outcome;
use s3invbackup::error::Refusal;

/// Versioned, verified backups of S3 buckets, driven by S3 Inventory.
#[derive(Debug, Parser)]
#[command(name = "s3invbackup", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    s3: cli::S3Args,
    /// More log output (-v: info, -vv: debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List inventory dates (complete or not)
    Dates(cli::dates::DatesArgs),
    /// Build the sorted index of one inventory date
    Index(cli::index::IndexArgs),
    /// Print an index's records as CSV or JSON lines
    Dump(cli::dump::DumpArgs),
    /// What changed between two indexes or inventory dates (no downloads)
    Diff(cli::diff::DiffArgs),
    /// Fetch and verify one object version
    Get(cli::get::GetArgs),
    /// Bring a backup up to date with an inventory (incremental, versioned, resumable)
    Sync(cli::sync::SyncArgs),
    /// What a backup holds: applied dates, failures, an interrupted run
    Status(cli::status::StatusArgs),
    /// Prove a backup's tree matches its catalog (no network); --repair fixes it
    Fsck(cli::fsck::FsckArgs),
    /// Every version a backup holds of a key, and where (or the one at a time)
    Locate(cli::locate::LocateArgs),
    /// The bucket as it was at a time, from a backup (hard links or copies)
    Restore(cli::restore::RestoreArgs),
    /// Undo an unfinished sync run (back to the last applied date)
    Rollback(cli::rollback::RollbackArgs),
    /// DELETES backed-up data: old versions, noncurrent or gone longer than a duration
    Prune(cli::prune::PruneArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // aws-config narrates every link of the credential chain it tries at WARN; we say what
    // matters (the source found, or that the run is anonymous) ourselves.
    let quiet_sdk = if cli.verbose < 2 {
        ",aws_config=error,aws_smithy_runtime=error"
    } else {
        ""
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level}{quiet_sdk}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let result = match &cli.command {
        Command::Dates(a) => cli::dates::run(a, &cli.s3).map(|()| Outcome::Done),
        Command::Index(a) => cli::index::run(a, &cli.s3).map(|()| Outcome::Done),
        Command::Dump(a) => cli::dump::run(a).map(|()| Outcome::Done),
        Command::Get(a) => cli::get::run(a, &cli.s3).map(|()| Outcome::Done),
        Command::Sync(a) => cli::sync::run(a, &cli.s3),
        Command::Status(a) => cli::status::run(a).map(|()| Outcome::Done),
        Command::Fsck(a) => cli::fsck::run(a, &cli.s3),
        Command::Locate(a) => cli::locate::run(a).map(|()| Outcome::Done),
        Command::Restore(a) => cli::restore::run(a),
        Command::Rollback(a) => cli::rollback::run(a).map(|()| Outcome::Done),
        Command::Prune(a) => cli::prune::run(a).map(|()| Outcome::Done),
        Command::Diff(a) => cli::diff::run(a, &cli.s3).map(|changed| {
            if changed && a.exit_code {
                Outcome::Changes
            } else {
                Outcome::Done
            }
        }),
    };
    // `diff --exit-code` uses 1 for "there are changes", so its errors become 2.
    let diff_exit_code = matches!(&cli.command, Command::Diff(a) if a.exit_code);
    match result {
        Ok(outcome) => ExitCode::from(exit_status(outcome)),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3invbackup: error: {e:#}");
            ExitCode::from(error_status(&e, diff_exit_code))
        }
    }
}

/// The exit-code table, for every command (README "Exit codes"):
///
/// | status | meaning |
/// |---|---|
/// | 0 | done |
/// | 1 | an error or a refusal (the backup is unchanged or resumable); `fsck`: problems found; `diff --exit-code`: there are changes |
/// | 2 | done, but some versions could not be fetched or are not held (listed; the next sync retries them); `diff --exit-code`: an error; a usage error (clap's own exit) |
/// | 130 | interrupted (resumable) |
fn exit_status(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Done => 0,
        Outcome::Changes | Outcome::Problems => 1,
        Outcome::Partial => 2,
        Outcome::Interrupted => 130,
    }
}

fn error_status(e: &anyhow::Error, diff_exit_code: bool) -> u8 {
    if diff_exit_code {
        return 2;
    }
    match e.chain().find_map(|c| c.downcast_ref::<Refusal>()) {
        Some(Refusal::NotABackup(_) | Refusal::Locked { .. } | Refusal::RunPending { .. }) => 1,
        None => 1,
    }
}

/// `s3invbackup dump ... | head` closes our stdout early: that is a normal end.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<csv::Error>().is_some_and(|ce| matches!(ce.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}
