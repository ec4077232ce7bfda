//! Everything done to a backup between syncs: [`fsck`] proves the tree matches the catalog
//! (and repairs it), [`rollback`] undoes an unfinished run, [`prune`] is the one deleter,
//! [`history`] answers "which version of this key, when" for `locate` and [`restore`].
//!
//! Invariant: none of these writes while a sync run is pending unless it resolves that run
//! first (fsck --repair rolls it back; prune refuses); the readers need no lock, since the
//! catalog is only ever replaced whole by a rename.

pub mod fsck;
pub mod health;
pub mod history;
pub mod prune;
pub mod restore;
pub mod rollback;
