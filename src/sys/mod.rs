//! The process around the pipeline: progress display, the stop token that Ctrl-C and
//! SIGTERM set, and named failpoints for the crash campaign.
//!
//! Nothing here decides anything about a backup; the stages only read the stop token and
//! bump progress counters, so that a library caller (a test, a bench) can run them with no
//! signal handler and no display at all.

pub mod failpoint;
pub mod progress;
pub mod stop;
