//! The process around the pipeline: progress display, the stop token that Ctrl-C and
//! SIGTERM set, and named failpoints for the crash campaign.
//!
//! Nothing here decides anything about a backup; the stages only read the stop token and
//! bump progress counters, so that a library caller (a test, a bench) can run them with no
//! signal handler and no display at all.

pub mod boot;
pub mod failpoint;
pub mod progress;
pub mod stop;

/// A line on standard error that never panics: `eprintln!` panics when stderr is a closed
/// pipe (`sync … 2>&1 | head -1`), and a message to a reader who has gone is not a reason
/// to stop a run half-way.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
