//! How long to wait before trying a request again (shared by the client and the fetcher).

use std::time::Duration;

/// Exponential backoff with full jitter, capped at 20 s.
pub fn backoff(attempt: u32) -> Duration {
    let cap_ms = (100u64 << attempt.min(8)).min(20_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(u64::from(nanos) % cap_ms + 1)
}
