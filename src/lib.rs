//! s3invbackup: a versioned, verified, crash-safe local backup of an S3 bucket, driven by
//! the bucket's daily S3 Inventory instead of listing the bucket.
//!
//! The pipeline, one folder a stage: an [`inventory`] date (manifest checked against
//! manifest.checksum, data files against their MD5, columns mapped by name) is turned by
//! [`index`] into a sorted, compact index in bounded memory; [`diff`] merge-joins two indexes
//! into a change report; [`sync`] merge-joins the backup's catalog with the day's index into a
//! plan, fetches and verifies what changed, applies the plan to the tree under a journal and
//! commits the new catalog; [`maintain`] holds what is done between syncs (fsck, rollback,
//! prune, restore, locate). The shared concerns have one owner each: [`model`] (records,
//! ETags, keys, timestamps), [`s3`] (the HTTP layer), [`backup`] (the backup's on-disk state:
//! config, lock, state.json, catalog, run directory, journal, names, versions JSON), [`sys`]
//! (progress, the stop token, failpoints) and [`error`] (the refusals).
//!
//! The library prints nothing but progress and log lines: it returns reports, and the
//! binary (`src/main.rs`, `src/cli/`) turns them into text and exit codes.

pub mod backup;
pub mod diff;
pub mod error;
pub mod index;
pub mod inventory;
pub mod maintain;
pub mod model;
pub mod s3;
pub mod sync;
pub mod sys;

pub use backup::Backup;
pub use diff::{DiffOptions, diff};
pub use error::Refusal;
pub use index::build::{IndexOptions, build_index};
pub use index::{IndexReader, IndexWriter};
pub use inventory::Inventory;
pub use maintain::fsck::{FsckOptions, FsckReport, fsck};
pub use model::record::VersionRecord;
pub use sync::{SyncOptions, SyncReport, sync};
pub use sys::progress::Progress;
pub use sys::stop::Stop;
