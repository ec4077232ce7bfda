//! The refusals: errors that are a decision, not an accident. Each says what is wrong and
//! what to run instead; the binary maps each to its exit status in one table (`main.rs`).
//! Everything else (I/O, a damaged file, the network) is an `anyhow::Error` with the file,
//! row or request named in its context.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{} is not a backup (no .<stem>/config.json in it)", .0.display())]
    NotABackup(PathBuf),
    #[error("backup {} is in use by another process ({holder}); wait for it to finish", .backup.display())]
    Locked { backup: PathBuf, holder: String },
    #[error(
        "the sync run of {date} is unfinished; finish it with `s3invbackup sync` or undo it with \
         `s3invbackup rollback {}`, then run {command} again",
        .backup.display()
    )]
    RunPending {
        date: String,
        backup: PathBuf,
        command: &'static str,
    },
}
