//! The `s3invbackup` command line: flags to library calls, errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Log lines as text, or as one JSON object per line (for log pipelines)
    #[arg(long, default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
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
    #[command(override_usage = "s3invbackup sync [OPTIONS] [INVENTORY] <BACKUP>")]
    Sync(cli::sync::SyncArgs),
    /// What a backup holds: applied dates, failures, the last runs, an interrupted run
    Status(cli::status::StatusArgs),
    /// What an applied date changed in the bucket, from the backup alone
    Changes(cli::changes::ChangesArgs),
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(cli::kit::CompletionsArgs),
    /// Print the man page (roff), e.g. `s3invbackup man > s3invbackup.1`; --dir: every page
    Man(cli::kit::ManArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are answers, not errors; a usage error is EX_USAGE (64),
            // never clap's 2, which here means "done, some versions still to fetch".
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE } else { 0 });
        }
    };
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
    // Colour only for a person at a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Its report of a failed write is an eprintln!, which panics when stderr is a closed
        // pipe: a log line nobody can read is dropped instead.
        .log_internal_errors(false);
    if cli.log_format == "json" {
        logs.json().with_current_span(false).init();
    } else {
        logs.with_ansi(ansi).init();
    }

    let result = match &cli.command {
        Command::Dates(a) => cli::dates::run(a, &cli.s3).map(|()| Outcome::Done),
        Command::Index(a) => cli::index::run(a, &cli.s3).map(|()| Outcome::Done),
        Command::Dump(a) => cli::dump::run(a).map(|()| Outcome::Done),
        Command::Get(a) => cli::get::run(a, &cli.s3).map(|()| Outcome::Done),
        Command::Sync(a) => cli::sync::run(a, &cli.s3),
        Command::Status(a) => cli::status::run(a),
        Command::Changes(a) => cli::changes::run(a).map(|()| Outcome::Done),
        Command::Fsck(a) => cli::fsck::run(a, &cli.s3),
        Command::Locate(a) => cli::locate::run(a).map(|()| Outcome::Done),
        Command::Restore(a) => cli::restore::run(a),
        Command::Rollback(a) => cli::rollback::run(a).map(|()| Outcome::Done),
        Command::Prune(a) => cli::prune::run(a).map(|()| Outcome::Done),
        Command::Completions(a) => cli::kit::completions(a, Cli::command()).map(|()| Outcome::Done),
        Command::Man(a) => cli::kit::man(a, Cli::command()).map(|()| Outcome::Done),
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
            s3invbackup::say!("s3invbackup: error: {e:#}");
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
/// | 2 | done, but some versions could not be fetched (listed; the next sync retries them); `diff --exit-code`: an error; `status --check`: failures wait for a retry |
/// | 64 | usage error (EX_USAGE): a bad flag or argument; nothing was done |
/// | 130 | interrupted (resumable) |
///
/// A closed standard output or error (`… | head`) ends a command quietly, never a panic.
const USAGE: u8 = 64;

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
