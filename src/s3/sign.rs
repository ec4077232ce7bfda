//! SigV4 in headers, by AWS's own `aws-sigv4`: the signature travels in `Authorization`,
//! never in the URL, so no URL this tool handles (or logs) can be replayed. The signing time
//! is our clock corrected by the offset S3's `Date` header showed when S3 said the clock
//! was off.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;

/// Milliseconds to add to our clock to get S3's (process-wide: one clock, every client).
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The time to sign with.
pub(super) fn now() -> SystemTime {
    let offset = CLOCK_OFFSET_MS.load(Ordering::Relaxed);
    let t = SystemTime::now();
    if offset >= 0 {
        t + Duration::from_millis(offset as u64)
    } else {
        t - Duration::from_millis(offset.unsigned_abs())
    }
}

/// S3 says its time is `server`: sign with that from now on. Returns the offset, in
/// seconds, for the log.
pub(super) fn correct_clock(server: SystemTime) -> i64 {
    let local = SystemTime::now();
    let offset_ms = match server.duration_since(local) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    CLOCK_OFFSET_MS.store(offset_ms, Ordering::Relaxed);
    offset_ms / 1000
}

/// The headers that sign a request with no body (`x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token`, `Authorization`). `headers` are the ones the request will send,
/// all of them signed (S3 requires every `x-amz-*` header to be).
pub(super) fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    creds: &Credentials,
    region: &str,
) -> Result<Vec<(&'static str, String)>> {
    let mut settings = SigningSettings::default();
    // S3 signs the path as sent (each key byte encoded once) and never normalizes it.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(now())
        .settings(settings)
        .build()
        .map_err(|e| anyhow!("signing parameters: {e}"))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| anyhow!("signing {method} request: {e}"))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| anyhow!("signing {method} request: {e}"))?
        .into_parts();
    let (signed, _params) = instructions.into_parts();
    Ok(signed
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own worked example ("GET Object", Signature Calculations for the Authorization
    /// Header, S3 API reference): the signature printed there.
    #[test]
    fn matches_the_s3_documentation_example() {
        let creds = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let request = SignableRequest::new(
            "GET",
            "https://examplebucket.s3.amazonaws.com/test.txt",
            [("range", "bytes=0-9")].into_iter(),
            SignableBody::Precomputed(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            ),
        )
        .unwrap();
        let (_, signature) = sign(request, &params).unwrap().into_parts();
        assert_eq!(
            signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }
}
