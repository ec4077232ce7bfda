//! The S3 HTTP layer: one pooled blocking client; each bucket's region discovered once and
//! each request addressed and SigV4-signed (in headers) for it; credentials from aws-config's
//! default chain, renewed before they expire; retries with a throttle shared by the whole
//! process; and the answers that stop a run told apart from those that fail one version.
//!
//! No URL reaches a message: a request is named `METHOD s3://bucket/key?versionId=…`.

mod credentials;
mod endpoint;
mod error;
mod region;
mod retry;
mod sign;

pub use error::S3Error;
pub use retry::{Patience, backoff, set_shared_pause, throttle_events};

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use reqwest::blocking::Response;

use credentials::CredentialSource;
use endpoint::Endpoints;
use retry::THROTTLE;

/// How to reach S3: collected from flags and the environment once, at the edge.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// A custom endpoint (S3-compatible server); implies path-style addressing. Else
    /// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint_url: Option<String>,
    /// Every bucket's region (no discovery).
    pub region: Option<String>,
    /// Never sign, even when credentials are configured (`--no-sign-request`).
    pub anonymous: bool,
    /// A profile of `~/.aws/config` (`--profile`; else `AWS_PROFILE`).
    pub profile: Option<String>,
    /// Send `x-amz-request-payer: requester` (`--request-payer requester`).
    pub requester_pays: bool,
    /// How long a request may wait for its answer, or a body for its next bytes, before
    /// the connection counts as stalled: it is dropped and the transfer resumed from its
    /// last byte (`--read-timeout`; `None`: 120 s).
    pub read_timeout: Option<Duration>,
}

pub struct S3Client {
    http: reqwest::blocking::Client,
    endpoints: Endpoints,
    /// `--region`: wins over discovery.
    region: Option<String>,
    credentials: CredentialSource,
    requester_pays: bool,
    /// Regions this client has resolved, by bucket.
    known_regions: std::sync::RwLock<std::collections::HashMap<String, String>>,
}

/// One GET.
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// `Some("null")` is S3's null version; None the latest (no versionId sent).
    pub version_id: Option<&'a str>,
    /// (first byte, last byte inclusive or to the end).
    pub range: Option<(u64, Option<u64>)>,
    /// `If-Match`: the version must still be this one (a 412 says it changed).
    pub if_match: Option<&'a str>,
    /// Ask for S3's additional checksums (`x-amz-checksum-mode: ENABLED`).
    pub checksums: bool,
    /// `?partNumber=N`: one part of a multipart upload, which S3 answers with 206 and the
    /// part's place in `Content-Range` (a server that does not know it sends the whole
    /// object with 200).
    pub part_number: Option<u32>,
    pub patience: Patience,
}

impl<'a> Get<'a> {
    pub fn object(bucket: &'a str, key: &'a str) -> Get<'a> {
        Get {
            bucket,
            key,
            version_id: None,
            range: None,
            if_match: None,
            checksums: false,
            part_number: None,
            patience: Patience::Object,
        }
    }
}

/// One request, before addressing and signing.
struct Request<'a> {
    method: Method,
    bucket: &'a str,
    key: &'a str,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    patience: Patience,
}

impl Request<'_> {
    /// `GET s3://bucket/key?versionId=…`: what messages call it (never the URL).
    fn describe(&self) -> String {
        let mut text = format!("{} s3://{}/{}", self.method, self.bucket, self.key);
        for (i, (name, value)) in self.query.iter().enumerate() {
            text.push(if i == 0 { '?' } else { '&' });
            text.push_str(name);
            if !value.is_empty() {
                text.push('=');
                text.push_str(value);
            }
        }
        text
    }
}

impl S3Client {
    pub fn new(config: &S3Config) -> Result<S3Client> {
        let endpoints = Endpoints::new(config.endpoint_url.as_deref())?;
        let region = config.region.clone().filter(|r| !r.is_empty());
        if let Some(r) = &region
            && !region::is_region_name(r)
        {
            bail!("--region {r:?} is not a region name (like us-east-2)");
        }
        let credentials = if config.anonymous {
            CredentialSource::anonymous("--no-sign-request", true)
        } else {
            CredentialSource::from_chain(
                config.profile.as_deref(),
                region.as_deref().or(region::hint().as_deref()),
            )?
        };
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            // reqwest's blocking timeout bounds the wait for the headers and then each
            // read of the body, not the whole transfer: a 5 GiB part may take an hour,
            // a stalled link is noticed after this long without a byte.
            .timeout(config.read_timeout.unwrap_or(Duration::from_secs(120)))
            // At least as many as `--max-jobs` allows in flight: a connection returned to
            // a full pool is closed, and the next request pays a new handshake.
            .pool_max_idle_per_host(4096)
            .tcp_keepalive(Duration::from_secs(30))
            // A 301 from S3 names a region, not a place to follow to.
            .redirect(reqwest::redirect::Policy::none())
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
            endpoints,
            region,
            credentials,
            requester_pays: config.requester_pays,
            known_regions: Default::default(),
        })
    }

    /// Where the credentials came from (or that the run is anonymous), for the log.
    pub fn credential_source(&self) -> &str {
        self.credentials.description()
    }

    /// GET an object (or a version, or a byte range of it), retrying transient failures.
    pub fn get(&self, g: &Get) -> Result<Response> {
        let mut query = Vec::new();
        if let Some(n) = g.part_number {
            query.push(("partNumber", n.to_string()));
        }
        if let Some(v) = g.version_id {
            query.push(("versionId", v.to_string()));
        }
        let mut headers = Vec::new();
        if let Some((start, end)) = g.range {
            headers.push((
                "range",
                match end {
                    Some(end) => format!("bytes={start}-{end}"),
                    None => format!("bytes={start}-"),
                },
            ));
        }
        if let Some(etag) = g.if_match {
            headers.push(("if-match", etag.to_string()));
        }
        if g.checksums {
            headers.push(("x-amz-checksum-mode", "ENABLED".to_string()));
        }
        self.send(&Request {
            method: Method::GET,
            bucket: g.bucket,
            key: g.key,
            query,
            headers,
            patience: g.patience,
        })
    }

    /// HEAD an object (optionally a version, optionally one part of a multipart upload),
    /// with its additional checksums.
    pub fn head(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        part_number: Option<u32>,
    ) -> Result<HeadInfo> {
        let mut query = Vec::new();
        if let Some(n) = part_number {
            query.push(("partNumber", n.to_string()));
        }
        if let Some(v) = version_id {
            query.push(("versionId", v.to_string()));
        }
        let response = self.send(&Request {
            method: Method::HEAD,
            bucket,
            key,
            query,
            headers: vec![("x-amz-checksum-mode", "ENABLED".to_string())],
            patience: Patience::Object,
        })?;
        Ok(HeadInfo::from_headers(response.headers()))
    }

    /// Reads a whole (small) object into memory.
    pub fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        self.get_reader(bucket, key)?
            .read_to_end(&mut body)
            .with_context(|| format!("reading s3://{bucket}/{key}"))?;
        Ok(body)
    }

    /// A reader over an object's body that resumes with a Range request (pinned to the
    /// first answer's ETag) from where it stopped when the connection fails mid-body.
    pub fn get_reader<'a>(&'a self, bucket: &str, key: &str) -> Result<ResumingBody<'a>> {
        let response = self.get(&Get {
            patience: Patience::Listing,
            ..Get::object(bucket, key)
        })?;
        let length = response.content_length();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(ResumingBody {
            client: self,
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag,
            response,
            offset: 0,
            length,
            resumes: 0,
        })
    }

    /// Lists keys and common prefixes under `prefix`, following continuation tokens.
    pub fn list(&self, bucket: &str, prefix: &str, delimiter: Option<&str>) -> Result<Listing> {
        self.list_while(bucket, prefix, delimiter, None, |_| true)
    }

    /// Lists from the first key after `start_after` (S3's own `start-after`: the keys before
    /// it cost no request), and asks for the next page only while `more(listing so far)`:
    /// a caller that knows where its keys end stops there instead of paging through the rest.
    pub fn list_while(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        mut more: impl FnMut(&Listing) -> bool,
    ) -> Result<Listing> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2".to_string())];
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            if let Some(d) = delimiter {
                query.push(("delimiter", d.to_string()));
            }
            query.push(("encoding-type", "url".to_string()));
            query.push(("prefix", prefix.to_string()));
            if let (None, Some(after)) = (&token, start_after) {
                query.push(("start-after", after.to_string()));
            }
            let request = Request {
                method: Method::GET,
                bucket,
                key: "",
                query,
                headers: Vec::new(),
                patience: Patience::Listing,
            };
            // A page whose body breaks off or does not parse is asked for again, like a
            // page that failed with a 5xx.
            let attempts = Patience::Listing.attempts();
            let mut attempt = 0;
            let page = loop {
                attempt += 1;
                let response = self.send(&request)?;
                let page = response
                    .bytes()
                    .map_err(|e| anyhow!("{}: {}", request.describe(), e.without_url()))
                    .and_then(|body| {
                        rusty_s3::actions::ListObjectsV2::parse_response(&body)
                            .with_context(|| format!("{}: unreadable response", request.describe()))
                    });
                match page {
                    Err(e) if attempt < attempts => {
                        tracing::warn!("{e:#}; retrying (attempt {attempt} of {attempts})");
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
                Some(t) if !t.is_empty() && more(&listing) => token = Some(t),
                _ => return Ok(listing),
            }
        }
    }

    /// The bucket's region: `--region`, else this client's answer (a read lock, no
    /// allocation: this runs for every request), else the process's, else asked.
    fn region_of(&self, bucket: &str) -> Result<String> {
        if let Some(r) = &self.region {
            return Ok(r.clone());
        }
        if let Some(r) = self
            .known_regions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket)
        {
            return Ok(r.clone());
        }
        let r = self.resolve_region(bucket)?;
        self.learn_region(bucket, &r);
        Ok(r)
    }

    /// Records a bucket's region for this client and the process.
    fn learn_region(&self, bucket: &str, r: &str) {
        region::remember(&self.endpoints.describe(), bucket, r);
        self.known_regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bucket.to_string(), r.to_string());
    }

    fn resolve_region(&self, bucket: &str) -> Result<String> {
        let endpoint = self.endpoints.describe();
        if let Some(r) = region::cached(&endpoint, bucket) {
            return Ok(r);
        }
        if self.endpoints.is_custom() {
            let r = region::hint().unwrap_or_else(|| "us-east-1".to_string());
            region::remember(&endpoint, bucket, &r);
            return Ok(r);
        }
        // One lookup per bucket, even when 32 fetch threads ask at once.
        static DISCOVERING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = DISCOVERING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = region::cached(&endpoint, bucket) {
            return Ok(r);
        }
        let r = self.discover_region(bucket)?;
        region::remember(&endpoint, bucket, &r);
        Ok(r)
    }

    /// An unsigned HEAD of the bucket: S3 names its region in `x-amz-bucket-region` on any
    /// answer, even a 403 or a 301.
    fn discover_region(&self, bucket: &str) -> Result<String> {
        let ask = region::hint().unwrap_or_else(|| "us-east-1".to_string());
        let url = self.endpoints.discovery_url(bucket, &ask)?;
        let attempts = Patience::Listing.attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            THROTTLE.wait();
            tracing::trace!(target: "s3invbackup::requests", "request: HEAD s3://{bucket}/ (region)");
            let error = match self.http.head(url.clone()).send() {
                Ok(r) => {
                    let header = r
                        .headers()
                        .get("x-amz-bucket-region")
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| region::is_region_name(v));
                    if let Some(region) = header {
                        tracing::debug!("s3://{bucket}/ is in {region}");
                        return Ok(region.to_string());
                    }
                    let status = r.status().as_u16();
                    if status == 404 {
                        bail!(
                            "s3://{bucket}/: no such bucket (the HEAD that finds its region answered 404): check the bucket name"
                        );
                    }
                    if status < 500 {
                        // Not AWS as we know it: sign for the hint and let redirects correct it.
                        tracing::warn!(
                            "s3://{bucket}/: HEAD answered {status} without naming a region; assuming {ask} (pass --region to choose)"
                        );
                        return Ok(ask);
                    }
                    anyhow!("HTTP {status}")
                }
                Err(e) => anyhow!(e.without_url()),
            };
            if attempt >= attempts {
                return Err(error.context(format!(
                    "HEAD s3://{bucket}/ (finding the bucket's region; pass --region to skip this)"
                )));
            }
            tracing::warn!("HEAD s3://{bucket}/ (region): {error:#}; retrying");
            std::thread::sleep(backoff(attempt));
        }
    }

    /// A HEAD's error has no body, so no code: ExpiredToken, SignatureDoesNotMatch and
    /// AccessDenied all look alike. Ask the same thing as a one-byte GET to read S3's words
    /// (one request, only on an error).
    fn explain_head_error(
        &self,
        r: &Request,
        e: &mut S3Error,
        region: &str,
        creds: Option<&aws_credential_types::Credentials>,
    ) {
        if e.status == 301 {
            e.code = Some("PermanentRedirect".to_string());
        }
        if !matches!(e.status, 400 | 403) {
            return;
        }
        let query: Vec<(&'static str, String)> = r
            .query
            .iter()
            .filter(|(k, _)| *k == "versionId")
            .cloned()
            .collect();
        let Ok(url) = self.endpoints.url(r.bucket, region, r.key, &query) else {
            return;
        };
        let mut headers = vec![("range", "bytes=0-0".to_string())];
        if self.requester_pays {
            headers.push(("x-amz-request-payer", "requester".to_string()));
        }
        let mut builder = self.http.get(url.clone());
        if let Some(c) = creds
            && let Ok(signed) = sign::sign_headers("GET", url.as_str(), &headers, c, region)
        {
            for (k, v) in signed {
                builder = builder.header(k, v);
            }
        }
        for (k, v) in &headers {
            builder = builder.header(*k, v);
        }
        if let Ok(response) = builder.send()
            && !response.status().is_success()
        {
            let get = s3_error(r, response);
            if get.status == e.status {
                e.code = get.code;
                e.message = get.message;
            }
        }
    }

    fn send(&self, r: &Request) -> Result<Response> {
        let attempts = r.patience.attempts();
        let mut attempt = 0;
        let (mut redirected, mut renewed, mut reclocked) = (false, false, false);
        loop {
            attempt += 1;
            THROTTLE.wait();
            // `RUST_LOG=s3invbackup::requests=trace`: every request as it goes out (never
            // its signature or credentials), to count a step's round trips.
            tracing::trace!(target: "s3invbackup::requests", "request: {}", r.describe());
            let region = self.region_of(r.bucket)?;
            let url = self.endpoints.url(r.bucket, &region, r.key, &r.query)?;
            let mut headers = r.headers.clone();
            if self.requester_pays {
                headers.push(("x-amz-request-payer", "requester".to_string()));
            }
            let creds = self.credentials.current()?;
            let mut builder = self.http.request(r.method.clone(), url.clone());
            if let Some(c) = &creds {
                for (k, v) in
                    sign::sign_headers(r.method.as_str(), url.as_str(), &headers, c, &region)?
                {
                    builder = builder.header(k, v);
                }
            }
            for (k, v) in &headers {
                builder = builder.header(*k, v);
            }
            let error = match builder.send() {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let retry_after = retry::retry_after(
                        response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()),
                    );
                    let server_time = response
                        .headers()
                        .get("date")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_http_time);
                    let mut e = s3_error(r, response);
                    if r.method == Method::HEAD && e.code.is_none() {
                        self.explain_head_error(r, &mut e, &region, creds.as_ref());
                    }
                    if let Some(new) = e.bucket_region.as_deref().filter(|n| {
                        *n != region && region::is_region_name(n) && self.region.is_none()
                    }) && !redirected
                        && (e.redirect_region().is_some() || e.status == 400)
                    {
                        tracing::info!(
                            "s3://{}/ is in {new}, not {region}: signing for {new}",
                            r.bucket
                        );
                        self.learn_region(r.bucket, new);
                        redirected = true;
                        attempt -= 1;
                        continue;
                    }
                    if e.is_expired_token()
                        && !renewed
                        && let Some(c) = &creds
                    {
                        renewed = true;
                        if self.credentials.renew_after_expired(c)? {
                            attempt -= 1;
                            continue;
                        }
                    }
                    if e.is_clock_skew() && !reclocked {
                        reclocked = true;
                        if let Some(t) = server_time {
                            let offset = sign::correct_clock(t);
                            tracing::warn!(
                                "S3's clock is {offset} s from ours ({}): signing with S3's time",
                                e.code()
                            );
                            attempt -= 1;
                            continue;
                        }
                    }
                    if !e.is_transient() || attempt >= attempts {
                        if let (Some(mine), Some(theirs)) = (&self.region, &e.bucket_region)
                            && mine != theirs
                        {
                            e.message = Some(format!(
                                "s3://{}/ is in {theirs}, not {mine} (--region): pass --region {theirs}, or leave it out",
                                r.bucket
                            ));
                        }
                        if e.stops_run() || e.status == 403 {
                            e.fix = error::fix_for(&e, self.credentials.signing());
                            e.credentials = Some(self.credentials.description().to_string());
                            e.region = region.clone();
                        }
                        return Err(e.into());
                    }
                    let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                    if e.is_throttle() {
                        THROTTLE.slow_down(wait, retry_after.is_some());
                        // Counted and summed up at the end ("S3 throttled N requests"):
                        // a night of them would bury the other warnings.
                        tracing::debug!("{e}; retrying (attempt {attempt} of {attempts})");
                    } else {
                        tracing::warn!("{e}; retrying (attempt {attempt} of {attempts})");
                    }
                    std::thread::sleep(wait);
                    continue;
                }
                Err(e) => {
                    let retryable =
                        e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
                    let e = anyhow!("{}: {}", r.describe(), error_text(&e));
                    if !retryable || attempt >= attempts {
                        return Err(e);
                    }
                    e
                }
            };
            tracing::warn!("{error:#}; retrying (attempt {attempt} of {attempts})");
            std::thread::sleep(backoff(attempt));
        }
    }
}

/// A reqwest error as one short line: what failed, where (host and port, never the URL:
/// the request is named by the caller), and the innermost cause, which is what tells
/// "connection refused" from "certificate unknown" (the layers between, "client error
/// (Connect)", "tcp connect error", only made the line long and pushed the cause to its end).
fn error_text(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() {
        "the body broke off"
    } else {
        "request failed"
    };
    let to = e
        .url()
        .and_then(|u| {
            let host = u.host_str()?;
            Some(match u.port_or_known_default() {
                Some(p) => format!(" to {host}:{p}"),
                None => format!(" to {host}"),
            })
        })
        .unwrap_or_default();
    let mut root: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(next) = root.and_then(|s| s.source()) {
        root = Some(next);
    }
    match root.map(|r| r.to_string()).filter(|r| !r.contains("://")) {
        Some(cause) => format!("{kind}{to}: {cause}"),
        None => format!("{kind}{to}"),
    }
}

fn s3_error(r: &Request, response: Response) -> S3Error {
    let status = response.status().as_u16();
    let bucket_region = response
        .headers()
        .get("x-amz-bucket-region")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.text().unwrap_or_default();
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    S3Error {
        what: r.describe(),
        bucket: r.bucket.to_string(),
        status,
        code: field("Code"),
        message: field("Message"),
        bucket_region,
        fix: None,
        credentials: None,
        region: String::new(),
    }
}

fn url_decode(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .with_context(|| format!("listing returned a key that is not UTF-8: {s:?}"))
}

/// `Date: Wed, 12 Oct 2009 17:50:00 GMT` as a time.
fn parse_http_time(s: &str) -> Option<std::time::SystemTime> {
    crate::model::timestamp::Timestamp::parse_http_date(s).map(|t| t.as_system_time())
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
    /// S3's additional checksum, if the object has one.
    pub checksum: Option<crate::model::checksum::Expected>,
}

impl HeadInfo {
    pub fn from_headers(h: &reqwest::header::HeaderMap) -> HeadInfo {
        let header = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        HeadInfo {
            // The header, not content_length(): that is the (empty) body's length for a HEAD.
            size: header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: header("etag").unwrap_or_default(),
            last_modified: header("last-modified"),
            parts_count: header("x-amz-mp-parts-count").and_then(|v| v.parse().ok()),
            server_side_encryption: header("x-amz-server-side-encryption"),
            version_id: header("x-amz-version-id"),
            checksum: crate::model::checksum::Expected::from_headers(|n| {
                h.get(n).and_then(|v| v.to_str().ok())
            }),
        }
    }
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
    /// The first answer's ETag: a resumed range must come from the same object.
    etag: Option<String>,
    response: Response,
    offset: u64,
    length: Option<u64>,
    resumes: u32,
}

impl Read for ResumingBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let attempts = Patience::Listing.attempts();
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
            if self.resumes > attempts {
                return Err(io::Error::other(format!(
                    "s3://{}/{}: {error} (gave up after {attempts} resumes)",
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
                .get(&Get {
                    range: Some((self.offset, None)),
                    if_match: self.etag.as_deref(),
                    patience: Patience::Listing,
                    ..Get::object(&self.bucket, &self.key)
                })
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
        }
    }
}
