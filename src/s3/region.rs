//! Which region each bucket is in, asked once per bucket per process. `--region` decides;
//! otherwise an unsigned `HEAD` of the bucket answers with `x-amz-bucket-region` whatever its
//! status (200, 301, 400, 403), as the AWS SDKs rely on. A region from the environment or
//! the config (`AWS_REGION`: AWS Batch sets it to the *job's* region) is only where to ask.

use std::collections::HashMap;
use std::sync::Mutex;

/// (endpoint, bucket) → region, shared by every client of the process (the inventory's and
/// the fetcher's ask about the same buckets).
static REGIONS: Mutex<Option<HashMap<(String, String), String>>> = Mutex::new(None);

pub(super) fn cached(endpoint: &str, bucket: &str) -> Option<String> {
    let regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
    regions
        .as_ref()?
        .get(&(endpoint.to_string(), bucket.to_string()))
        .cloned()
}

pub(super) fn remember(endpoint: &str, bucket: &str, region: &str) {
    let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
    regions.get_or_insert_with(HashMap::new).insert(
        (endpoint.to_string(), bucket.to_string()),
        region.to_string(),
    );
}

/// A plausible AWS region name (`us-east-2`, `us-gov-west-1`, `cn-north-1`): a header that
/// is anything else is not trusted to build a host name from.
pub(super) fn is_region_name(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && r.contains('-')
}

/// The region hint from the environment, for where to ask first.
pub(super) fn hint() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|r| is_region_name(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        assert!(is_region_name("us-east-2"));
        assert!(is_region_name("us-gov-west-1"));
        assert!(!is_region_name("evil.example.com/"));
        assert!(!is_region_name(""));
        assert!(!is_region_name("EU"));
    }
}
