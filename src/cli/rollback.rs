//! `s3invbackup rollback BACKUP`: undo an unfinished sync run.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use s3invbackup::backup::Backup;
use s3invbackup::maintain::rollback::rollback;

/// Undo an interrupted sync run, back to the last applied date: the run's moves are
/// reversed from its journal, the files it downloaded are removed, displaced directories
/// return, versions JSON is rendered again from the catalog. (The alternative, `sync`,
/// finishes the run instead.) A run that already replaced the catalog cannot be rolled back.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The backup directory
    pub backup: PathBuf,
}

pub fn run(args: &RollbackArgs) -> Result<()> {
    let backup = Backup::open_existing(&args.backup)?;
    let undone = match backup.pending_run(&backup.read_state()?)? {
        // Nothing to undo changes nothing: not a run.
        None => None,
        Some(_) => super::recorded(&backup, "rollback", || {
            Ok((
                rollback(&backup)?,
                s3invbackup::backup::runs::RunResult::Done,
            ))
        })?,
    };
    match undone {
        None => s3invbackup::say!(
            "{}: no unfinished run; nothing to undo",
            backup.root.display()
        ),
        Some(r) => {
            s3invbackup::say!(
                "rolled back the run of {}: {} files moved back, {} downloads removed, {} directories restored",
                r.date,
                r.moved_back,
                r.removed,
                r.directories_restored
            );
            for d in &r.left_merged {
                s3invbackup::say!("  left in place (merged into an existing one): {d}");
            }
        }
    }
    Ok(())
}
