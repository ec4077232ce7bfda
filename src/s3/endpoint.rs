//! Where a request goes: AWS's regional endpoint for the bucket's region
//! (`s3[-fips][.dualstack].<region>.amazonaws.com`), virtual-hosted as AWS prefers, or path
//! style for dotted bucket names (TLS wildcards match one label) and for custom endpoints
//! (SeaweedFS, MinIO, moto). The key and query are encoded here, once, as S3 signs them.

use anyhow::{Context, Result, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

/// Everything but RFC 3986's unreserved characters (S3's canonical URI encoding).
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same, keeping `/` (key path separators).
const PATH: &AsciiSet = &STRICT.remove(b'/');

#[derive(Debug, Clone)]
pub(super) struct Endpoints {
    /// `--endpoint-url`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, in that order.
    custom: Option<Url>,
    dualstack: bool,
    fips: bool,
}

impl Endpoints {
    pub fn new(flag: Option<&str>) -> Result<Endpoints> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let truthy = |name: &str| env(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let configured = if truthy("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
            None
        } else {
            env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"))
        };
        let custom = match flag.map(str::to_string).or(configured) {
            Some(text) => {
                let url =
                    Url::parse(&text).with_context(|| format!("bad endpoint URL {text:?}"))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    bail!("bad endpoint URL {text:?}: expected http(s)://host[:port]");
                }
                Some(url)
            }
            None => None,
        };
        Ok(Endpoints {
            custom,
            dualstack: truthy("AWS_USE_DUALSTACK_ENDPOINT"),
            fips: truthy("AWS_USE_FIPS_ENDPOINT"),
        })
    }

    /// An S3-compatible server rather than AWS: no region discovery, path style.
    pub fn is_custom(&self) -> bool {
        self.custom.is_some()
    }

    /// For logs and the region cache's key.
    pub fn describe(&self) -> String {
        match &self.custom {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => "AWS".to_string(),
        }
    }

    /// AWS's S3 host for a region.
    fn aws_host(&self, region: &str) -> String {
        let service = if self.fips { "s3-fips" } else { "s3" };
        let dualstack = if self.dualstack { ".dualstack" } else { "" };
        let domain = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("{service}{dualstack}.{region}.{domain}")
    }

    /// The URL of `key` in `bucket` (`key` empty: the bucket itself), with `query` (names
    /// and values as S3 defines them, unencoded).
    pub fn url(
        &self,
        bucket: &str,
        region: &str,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<Url> {
        let key = utf8_percent_encode(key, PATH).to_string();
        let mut text = match &self.custom {
            Some(base) => {
                let base = base.as_str().trim_end_matches('/');
                format!("{base}/{bucket}/{key}")
            }
            None if virtual_hostable(bucket) => {
                format!("https://{bucket}.{}/{key}", self.aws_host(region))
            }
            None => format!("https://{}/{bucket}/{key}", self.aws_host(region)),
        };
        for (i, (name, value)) in query.iter().enumerate() {
            text.push(if i == 0 { '?' } else { '&' });
            text.push_str(&utf8_percent_encode(name, STRICT).to_string());
            if !value.is_empty() || !matches!(*name, "uploads" | "versioning") {
                text.push('=');
                text.push_str(&utf8_percent_encode(value, STRICT).to_string());
            }
        }
        Url::parse(&text).with_context(|| format!("bad request URL for s3://{bucket}/"))
    }

    /// Where to ask, unsigned, which region a bucket is in: path style, so that any bucket
    /// name works, on the hinted region's endpoint.
    pub fn discovery_url(&self, bucket: &str, region: &str) -> Result<Url> {
        let text = format!(
            "https://{}/{}",
            self.aws_host(region),
            utf8_percent_encode(bucket, STRICT)
        );
        Url::parse(&text).with_context(|| format!("bad bucket name {bucket:?}"))
    }
}

/// A bucket name that can be a DNS label of AWS's wildcard certificate: lowercase letters,
/// digits and hyphens (no dots, which would need a deeper wildcard).
fn virtual_hostable(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> Endpoints {
        Endpoints {
            custom: None,
            dualstack: false,
            fips: false,
        }
    }

    #[test]
    fn virtual_hosted_on_aws_path_style_for_dots_and_custom_endpoints() {
        let q = [("versionId", "a+b/c".to_string())];
        assert_eq!(
            aws()
                .url("dandiarchive", "us-east-2", "zarr/0 1/é", &q)
                .unwrap()
                .as_str(),
            "https://dandiarchive.s3.us-east-2.amazonaws.com/zarr/0%201/%C3%A9?versionId=a%2Bb%2Fc"
        );
        assert_eq!(
            aws()
                .url("my.bucket", "eu-west-1", "k", &[])
                .unwrap()
                .as_str(),
            "https://s3.eu-west-1.amazonaws.com/my.bucket/k"
        );
        let custom = Endpoints {
            custom: Some(Url::parse("http://127.0.0.1:8333/").unwrap()),
            ..aws()
        };
        assert_eq!(
            custom.url("b", "us-east-1", "k", &[]).unwrap().as_str(),
            "http://127.0.0.1:8333/b/k"
        );
        let both = Endpoints {
            dualstack: true,
            fips: true,
            ..aws()
        };
        assert_eq!(
            both.url("bucket", "us-gov-west-1", "", &[])
                .unwrap()
                .as_str(),
            "https://bucket.s3-fips.dualstack.us-gov-west-1.amazonaws.com/"
        );
        assert_eq!(
            aws()
                .url("bucket", "cn-north-1", "k", &[])
                .unwrap()
                .as_str(),
            "https://bucket.s3.cn-north-1.amazonaws.com.cn/k"
        );
    }
}
