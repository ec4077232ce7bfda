//! The S3 HTTP layer: one pooled blocking client, SigV4 presigning by rusty-s3, credentials
//! and endpoint resolved the way the AWS CLI does, retries for transient failures, and
//! bodies that resume with a Range request when a connection drops mid-stream.

mod credentials;
mod retry;

pub use retry::backoff;

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

/// How to reach S3: collected from flags and the environment once, at the edge.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// A custom endpoint (S3-compatible server); implies path-style addressing.
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Never sign, even when credentials are configured (`--no-sign-request`).
    pub anonymous: bool,
}

/// An S3 failure with its HTTP status and S3 error code, so callers can tell a missing
/// object from a denied one from a transient error.
#[derive(Debug, thiserror::Error)]
#[error("{method} s3://{bucket}/{key}: HTTP {status}{}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct S3Error {
    pub method: &'static str,
    pub bucket: String,
    pub key: String,
    pub status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
}

impl S3Error {
    pub fn is_transient(&self) -> bool {
        self.status >= 500 || self.status == 429 || self.code.as_deref() == Some("SlowDown")
    }
}

pub struct S3Client {
    http: reqwest::blocking::Client,
    endpoint: Url,
    custom_endpoint: bool,
    region: String,
    credentials: Option<Credentials>,
}

const PRESIGN_FOR: Duration = Duration::from_secs(3600);
const ATTEMPTS: u32 = 6;

impl S3Client {
    pub fn new(config: &S3Config) -> Result<S3Client> {
        let region = config
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint_text = config
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty());
        let custom_endpoint = endpoint_text.is_some();
        let endpoint_text =
            endpoint_text.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = Url::parse(&endpoint_text)
            .with_context(|| format!("bad endpoint URL {endpoint_text:?}"))?;
        let credentials = if config.anonymous {
            None
        } else {
            credentials::find_credentials()?
        };
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(256)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("s3invbackup/", env!("CARGO_PKG_VERSION")));
        if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE").filter(|b| !b.is_empty()) {
            let pem = std::fs::read(&bundle).with_context(|| {
                format!("reading AWS_CA_BUNDLE {}", PathBuf::from(&bundle).display())
            })?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).context("parsing AWS_CA_BUNDLE")?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(S3Client {
            http: builder.build()?,
            endpoint,
            custom_endpoint,
            region,
            credentials,
        })
    }

    fn bucket(&self, name: &str) -> Result<Bucket> {
        // Virtual-hosted style is AWS's default, but bucket names with dots break TLS
        // host matching there; custom endpoints (SeaweedFS, MinIO) want path style.
        let style = if self.custom_endpoint || name.contains('.') {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        Bucket::new(
            self.endpoint.clone(),
            style,
            name.to_string(),
            self.region.clone(),
        )
        .with_context(|| format!("bad bucket {name:?} for endpoint {}", self.endpoint))
    }

    /// GET an object (optionally a version and a byte range), retrying transient failures.
    pub fn get(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<reqwest::blocking::Response> {
        let b = self.bucket(bucket)?;
        let mut action = b.get_object(self.credentials.as_ref(), key);
        if let Some(v) = version_id {
            action.query_mut().insert("versionId", v.to_string());
        }
        let url = action.sign(PRESIGN_FOR);
        let range_header = range.map(|(start, end)| match end {
            Some(end) => format!("bytes={start}-{end}"),
            None => format!("bytes={start}-"),
        });
        self.send_with_retries("GET", bucket, key, || {
            let mut req = self.http.get(url.clone());
            if let Some(r) = &range_header {
                req = req.header(reqwest::header::RANGE, r);
            }
            req.send()
        })
    }

    /// HEAD an object (optionally a version, optionally one part of a multipart upload).
    pub fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        part_number: Option<u32>,
    ) -> Result<HeadInfo> {
        let b = self.bucket(bucket)?;
        let mut action = rusty_s3::actions::HeadObject::new(&b, self.credentials.as_ref(), key);
        if let Some(v) = version_id {
            action.query_mut().insert("versionId", v.to_string());
        }
        if let Some(n) = part_number {
            action.query_mut().insert("partNumber", n.to_string());
        }
        let url = action.sign(PRESIGN_FOR);
        let response =
            self.send_with_retries("HEAD", bucket, key, || self.http.head(url.clone()).send())?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(HeadInfo {
            // The header, not content_length(): that is the (empty) body's length for a HEAD.
            size: header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: header("etag").unwrap_or_default(),
            last_modified: header("last-modified"),
            parts_count: header("x-amz-mp-parts-count").and_then(|v| v.parse().ok()),
            server_side_encryption: header("x-amz-server-side-encryption"),
            version_id: header("x-amz-version-id"),
        })
    }

    /// Reads a whole (small) object into memory.
    pub fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        self.get_reader(bucket, key)?
            .read_to_end(&mut body)
            .with_context(|| format!("reading s3://{bucket}/{key}"))?;
        Ok(body)
    }

    /// A reader over an object's body that resumes with a Range request from where it
    /// stopped when the connection fails mid-body.
    pub fn get_reader<'a>(&'a self, bucket: &str, key: &str) -> Result<ResumingBody<'a>> {
        let response = self.get(bucket, key, None, None)?;
        let length = response.content_length();
        Ok(ResumingBody {
            client: self,
            bucket: bucket.to_string(),
            key: key.to_string(),
            response,
            offset: 0,
            length,
            resumes: 0,
        })
    }

    /// Lists keys and common prefixes under `prefix`, following continuation tokens.
    pub fn list(&self, bucket: &str, prefix: &str, delimiter: Option<&str>) -> Result<Listing> {
        let b = self.bucket(bucket)?;
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let mut action = b.list_objects_v2(self.credentials.as_ref());
            action.with_prefix(prefix);
            if let Some(d) = delimiter {
                action.with_delimiter(d);
            }
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(PRESIGN_FOR);
            // A page whose body breaks off or does not parse is asked for again, like a
            // page that failed with a 5xx.
            let mut attempt = 0;
            let page = loop {
                attempt += 1;
                let response = self.send_with_retries("LIST", bucket, prefix, || {
                    self.http.get(url.clone()).send()
                })?;
                let page = response
                    .bytes()
                    .with_context(|| format!("listing s3://{bucket}/{prefix}"))
                    .and_then(|body| {
                        rusty_s3::actions::ListObjectsV2::parse_response(&body).with_context(|| {
                            format!("listing s3://{bucket}/{prefix}: unreadable response")
                        })
                    });
                match page {
                    Err(e) if attempt < ATTEMPTS => {
                        tracing::warn!("{e:#}; retrying (attempt {attempt} of {ATTEMPTS})");
                        std::thread::sleep(backoff(attempt));
                    }
                    page => break page?,
                }
            };
            for c in page.contents {
                listing.keys.push((url_decode(&c.key)?, c.size));
            }
            for p in page.common_prefixes {
                listing.prefixes.push(url_decode(&p.prefix)?);
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(listing),
            }
        }
    }

    fn send_with_retries(
        &self,
        method: &'static str,
        bucket: &str,
        key: &str,
        send: impl Fn() -> reqwest::Result<reqwest::blocking::Response>,
    ) -> Result<reqwest::blocking::Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match send() {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let e = s3_error(method, bucket, key, r);
                    if !e.is_transient() || attempt >= ATTEMPTS {
                        return Err(e.into());
                    }
                    anyhow::Error::from(e)
                }
                Err(e)
                    if attempt < ATTEMPTS
                        && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()) =>
                {
                    anyhow::Error::from(e)
                }
                Err(e) => return Err(anyhow!(e).context(format!("{method} s3://{bucket}/{key}"))),
            };
            tracing::warn!(
                "{method} s3://{bucket}/{key}: {error:#}; retrying (attempt {attempt} of {ATTEMPTS})"
            );
            std::thread::sleep(backoff(attempt));
        }
    }
}

fn s3_error(
    method: &'static str,
    bucket: &str,
    key: &str,
    response: reqwest::blocking::Response,
) -> S3Error {
    let status = response.status().as_u16();
    let body = response.text().unwrap_or_default();
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    S3Error {
        method,
        bucket: bucket.to_string(),
        key: key.to_string(),
        status,
        code: field("Code"),
        message: field("Message"),
    }
}

fn url_decode(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .with_context(|| format!("listing returned a key that is not UTF-8: {s:?}"))
}

/// What a HEAD says about an object (or one part of it).
#[derive(Debug, Clone, Default)]
pub struct HeadInfo {
    /// Content-Length: of the object, or of the part asked for.
    pub size: u64,
    /// As sent, with quotes.
    pub etag: String,
    pub last_modified: Option<String>,
    pub parts_count: Option<u32>,
    /// `AES256`, `aws:kms`, `aws:kms:dsse`; None for plaintext.
    pub server_side_encryption: Option<String>,
    pub version_id: Option<String>,
}

#[derive(Debug, Default)]
pub struct Listing {
    /// (key, size)
    pub keys: Vec<(String, u64)>,
    pub prefixes: Vec<String>,
}

/// An object body that survives dropped connections: on a read error it asks again for the
/// bytes from its current offset, up to a bounded number of times.
pub struct ResumingBody<'a> {
    client: &'a S3Client,
    bucket: String,
    key: String,
    response: reqwest::blocking::Response,
    offset: u64,
    length: Option<u64>,
    resumes: u32,
}

impl Read for ResumingBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let error = match self.response.read(buf) {
                Ok(0) if self.length.is_some_and(|l| self.offset < l) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "body ended at byte {} of {}",
                        self.offset,
                        self.length.unwrap_or(0)
                    ),
                ),
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) => e,
            };
            self.resumes += 1;
            if self.resumes > ATTEMPTS {
                return Err(io::Error::other(format!(
                    "s3://{}/{}: {error} (gave up after {ATTEMPTS} resumes)",
                    self.bucket, self.key
                )));
            }
            tracing::warn!(
                "s3://{}/{}: {error}; resuming at byte {}",
                self.bucket,
                self.key,
                self.offset
            );
            std::thread::sleep(backoff(self.resumes));
            self.response = self
                .client
                .get(&self.bucket, &self.key, None, Some((self.offset, None)))
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
        }
    }
}
