//! How long to wait before asking again, and how patient to be: exponential backoff with
//! full jitter (as AWS's SDKs do), and one throttle shared by every thread of the process,
//! so that when S3 says SlowDown the whole pool slows down, not only the thread that heard
//! it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Exponential backoff with full jitter, capped at 20 s.
pub fn backoff(attempt: u32) -> Duration {
    let cap_ms = (100u64 << attempt.min(8)).min(20_000);
    Duration::from_millis(jitter() % cap_ms + 1)
}

fn jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A fresh RandomState per call is seeded from the OS; cheap next to a failed request.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// How many times a request is tried before its failure is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// One version's GET or HEAD: a failure is recorded and retried on the next run.
    Object,
    /// Listings, manifests and data files: a failure stops the run, so try harder.
    Listing,
}

impl Patience {
    pub fn attempts(self) -> u32 {
        match self {
            Patience::Object => 10,
            Patience::Listing => 15,
        }
    }
}

/// The process-wide pause after S3 throttled us: no request starts before `until`.
pub(super) struct Throttle {
    until: Mutex<Option<Instant>>,
}

pub(super) static THROTTLE: Throttle = Throttle {
    until: Mutex::new(None),
};

/// Throttling answers heard since the process started: the fetcher's concurrency control
/// reads it as its strongest signal (`sync/concurrency.rs`).
static THROTTLE_EVENTS: AtomicU64 = AtomicU64::new(0);

/// How many times S3 has throttled this process (503 SlowDown, 429).
pub fn throttle_events() -> u64 {
    THROTTLE_EVENTS.load(Ordering::Relaxed)
}

/// Whether a throttled request pauses every thread (see [`set_shared_pause`]).
static SHARED_PAUSE: AtomicBool = AtomicBool::new(true);

/// Off while `--jobs auto` controls the downloads: the controller then slows the pool down
/// by having fewer requests in flight, and a pause of every thread at each SlowDown (5% of
/// requests at 500/s: 25 pauses a second) would stop the run instead. A `Retry-After` is
/// honoured by every thread either way.
pub fn set_shared_pause(on: bool) {
    SHARED_PAUSE.store(on, Ordering::SeqCst);
}

impl Throttle {
    /// Pause every thread for `wait` (the later of any two pauses wins); `asked`: S3 said
    /// how long (`Retry-After`).
    pub fn slow_down(&self, wait: Duration, asked: bool) {
        THROTTLE_EVENTS.fetch_add(1, Ordering::Relaxed);
        if !asked && !SHARED_PAUSE.load(Ordering::SeqCst) {
            return;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let t = Instant::now() + wait;
        if until.is_none_or(|u| u < t) {
            *until = Some(t);
        }
    }

    /// Waits out the current pause, if any.
    pub fn wait(&self) {
        let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = until {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
        }
    }
}

/// `Retry-After: <seconds>` (S3 sends it with some 503s), capped at a minute.
pub(super) fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..40 {
            let cap = Duration::from_millis((100u64 << attempt.min(8)).min(20_000) + 1);
            assert!(backoff(attempt) <= cap);
        }
        // Jittered: not the same every time.
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff(8)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some("3600")), Some(Duration::from_secs(60)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
