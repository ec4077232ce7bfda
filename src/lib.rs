//! s3invbackup: a versioned, verified, crash-safe local backup of an S3 bucket, driven by
//! the bucket's daily S3 Inventory instead of listing the bucket.
//!
//! The library is the pipeline, one module per stage; the binary (`src/main.rs`, `src/cmd/`)
//! only wires flags to it.
//!
//! - [`inventory`]: dated manifests (checked against manifest.checksum) and data files
//!   (checked against their MD5), columns mapped by name, rows parsed into records.
//! - [`sort`] and [`indexer`]: rows → a sorted index in bounded memory.
//! - [`index`]: the index file format, writer and reader.
//! - [`s3`]: the HTTP layer (SigV4 by rusty-s3, retries, resumable bodies).

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
