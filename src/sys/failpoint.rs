//! Named crash points for the crash campaign, compiled in only with the `failpoints` cargo
//! feature (CI's test build has it; a release build or `cargo install` does not, so no
//! environment variable can make a production run abort).
//!
//! - `S3INVBACKUP_FAILPOINT=NAME` or `NAME:N` aborts the process (as `kill -9` would) the
//!   N-th time (default: first) it reaches [`hit`]`(NAME)`. Points: `index-built`, `planned`,
//!   `catalog-replaced`, `state-written` (each reached once per applied date);
//!   `plan-batch` (each batch of records a streamed plan receives: the middle of a walk);
//!   `compaction-written`, `compaction-committed` (each catalog compaction: its new part
//!   written, then its manifest); `upgrade-config` (moving a format-2 catalog).
//! - `S3INVBACKUP_FAILPOINT_LOG=FILE` appends the name of every point reached to FILE: a
//!   campaign counts, on an uninterrupted run, how often each point is reached.
//! - `S3INVBACKUP_CRASH_AFTER=N` aborts right after the N-th journal entry of the process
//!   is written, before its change is made.

/// A named crash point.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    static HITS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());
    if let Ok(log) = std::env::var("S3INVBACKUP_FAILPOINT_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{name}");
        }
    }
    let Ok(spec) = std::env::var("S3INVBACKUP_FAILPOINT") else {
        return;
    };
    let (want, nth) = match spec.split_once(':') {
        Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    if want != name {
        return;
    }
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    let count = match hits.iter_mut().find(|(n, _)| n == name) {
        Some((_, c)) => {
            *c += 1;
            *c
        }
        None => {
            hits.push((name.to_string(), 1));
            1
        }
    };
    if count == nth {
        eprintln!("s3invbackup: S3INVBACKUP_FAILPOINT={spec} reached; aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Called after each journal entry is written.
#[cfg(feature = "failpoints")]
pub fn journal_appended() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Counted over the whole process: a sync writes several journals (one per date).
    static IN_PROCESS: AtomicU64 = AtomicU64::new(0);
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let limit = LIMIT.get_or_init(|| {
        std::env::var("S3INVBACKUP_CRASH_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let n = IN_PROCESS.fetch_add(1, Ordering::SeqCst) + 1;
    if *limit == Some(n) {
        eprintln!("s3invbackup: S3INVBACKUP_CRASH_AFTER={n} reached; aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn journal_appended() {}
