//! The totals a backup reports for its last applied date (bytes held, versions not held,
//! of those the retryable ones): one definition, counted from the records as a catalog is
//! written. Every writer of a catalog (the planner, a commit that marks failures, fsck's
//! missing marks, prune, and a run resumed after its commit) counts the same way, so
//! `state.json` can never drift from the catalog it describes.

use serde::{Deserialize, Serialize};

use crate::backup::catalog;
use crate::model::record::{LocalState, VersionRecord};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of every file the catalog holds.
    #[serde(default)]
    pub bytes_held: u64,
    /// Versions listed as missing or archived.
    #[serde(default)]
    pub not_held: u64,
    /// Of those, the ones the bucket still lists (the next sync retries them).
    #[serde(default)]
    pub retryable: u64,
    /// Of those, in an archive storage class (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering's
    /// archive tiers): they need a restore in S3 first.
    #[serde(default)]
    pub archived: u64,
    /// Of those, encrypted with a customer-provided key (SSE-C): never fetchable here.
    #[serde(default)]
    pub needs_key: u64,
    /// Deleted from the bucket before the backup got them (not counted as not held: there
    /// is nothing left to hold).
    #[serde(default)]
    pub vanished: u64,
}

impl Totals {
    /// `self` with `before` taken out and `after` put in: the totals of a catalog some of
    /// whose records were edited, from the totals of the edited records.
    pub fn replaced(self, before: &Totals, after: &Totals) -> Totals {
        let f = |t: u64, b: u64, a: u64| t.saturating_sub(b) + a;
        Totals {
            bytes_held: f(self.bytes_held, before.bytes_held, after.bytes_held),
            not_held: f(self.not_held, before.not_held, after.not_held),
            retryable: f(self.retryable, before.retryable, after.retryable),
            archived: f(self.archived, before.archived, after.archived),
            needs_key: f(self.needs_key, before.needs_key, after.needs_key),
            vanished: f(self.vanished, before.vanished, after.vanished),
        }
    }

    /// The totals of two disjoint catalogs together (a sharded backup's shards).
    pub fn plus(&self, o: &Totals) -> Totals {
        Totals {
            bytes_held: self.bytes_held + o.bytes_held,
            not_held: self.not_held + o.not_held,
            retryable: self.retryable + o.retryable,
            archived: self.archived + o.archived,
            needs_key: self.needs_key + o.needs_key,
            vanished: self.vanished + o.vanished,
        }
    }

    /// Counts one catalog record.
    pub fn add(&mut self, rec: &VersionRecord) {
        match rec.local.state {
            LocalState::Present if catalog::has_content(rec) => self.bytes_held += rec.size,
            LocalState::Missing | LocalState::Archived => {
                self.not_held += 1;
                self.retryable += u64::from(rec.local.gone_since.0 == 0);
                self.archived += u64::from(rec.local.state == LocalState::Archived);
            }
            LocalState::NeedsKey => {
                self.not_held += 1;
                self.needs_key += 1;
            }
            LocalState::Vanished => self.vanished += 1,
            _ => {}
        }
    }
}
