//! The verified object fetcher: exact versions into staging files, in parallel, with range
//! GETs for big objects, resumption of dropped bodies, and verification of every byte.
//!
//! A pool of `jobs` threads takes *tasks* from two queues: whole objects (bounded, fed by the
//! caller) and ranges of big objects (unbounded, fed by the workers themselves, served
//! first). An object bigger than the part size is split into ranges — on its multipart part
//! boundaries when it is a multipart upload, so each part's MD5 is computed as it streams and
//! the composite ETag is checked without reading the file again. Ranges are written in place
//! with positional writes; the thread that finishes an object's last range verifies it, sets
//! its mtime and reports it. A file that fails verification is deleted and fetched once more
//! from scratch; an unverified file is never reported as fetched.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use md5::{Digest, Md5};

use crate::model::checksum::{self, Algorithm, Expected, Hasher};
use crate::model::etag::ETag;
use crate::model::timestamp::Timestamp;
use crate::s3::{Get, HeadInfo, Patience, S3Client, S3Error, backoff};
use crate::sync::concurrency::{ConcurrencyReport, Limiter, control};

/// One version to fetch, with what the inventory says it must be.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub bucket: String,
    pub key: String,
    /// `Some(id)` fetches that version; `Some("")` S3's `null` version (`?versionId=null`,
    /// objects written before versioning); `None` the latest, with no version id sent (for a
    /// current-versions-only inventory).
    pub version_id: Option<String>,
    pub size: u64,
    pub etag: Option<ETag>,
    /// The ETag is computed from MD5s of the content (plaintext or SSE-S3).
    pub etag_is_md5: bool,
    pub last_modified: Timestamp,
    /// Where the verified bytes go (on the backup's filesystem).
    pub dest: PathBuf,
}

/// How a fetched file was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The MD5 of the bytes equals the ETag.
    Md5,
    /// The MD5 of the parts' MD5s equals the multipart ETag.
    MultipartEtag,
    /// S3's additional checksum of the bytes (cheaper than MD5, and meaningful under
    /// SSE-KMS, where the ETag is not an MD5).
    Checksum(Algorithm),
    /// SSE-KMS / DSSE with no additional checksum: the ETag says nothing about the bytes;
    /// size only.
    SizeOnly,
}

impl From<Verified> for crate::model::record::Check {
    fn from(v: Verified) -> Self {
        use crate::model::record::Check;
        match v {
            Verified::Md5 => Check::Md5,
            Verified::MultipartEtag => Check::MultipartEtag,
            Verified::Checksum(Algorithm::Crc64Nvme) => Check::Crc64Nvme,
            Verified::Checksum(Algorithm::Crc32c) => Check::Crc32c,
            Verified::Checksum(Algorithm::Crc32) => Check::Crc32,
            Verified::Checksum(Algorithm::Sha1) => Check::Sha1,
            Verified::Checksum(Algorithm::Sha256) => Check::Sha256,
            Verified::SizeOnly => Check::SizeOnly,
        }
    }
}

impl Verified {
    pub fn name(self) -> &'static str {
        match self {
            Verified::Md5 => "MD5",
            Verified::MultipartEtag => "multipart ETag",
            Verified::Checksum(a) => a.name(),
            Verified::SizeOnly => "size only",
        }
    }
}

/// Why a version could not be fetched, classified so that callers can record it and retry
/// on the next run instead of aborting.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 404: the version is gone (inventories are eventually consistent).
    #[error("not found: {0}")]
    NotFound(String),
    /// 403.
    #[error("access denied: {0}")]
    Forbidden(String),
    /// InvalidObjectState: GLACIER / DEEP_ARCHIVE, must be restored first.
    #[error("archived (restore it first): {0}")]
    Archived(String),
    /// The bytes did not verify, twice.
    #[error("verification failed: {0}")]
    Corrupt(String),
    /// 412 to `If-Match`: the key now holds another object than the inventory listed (a
    /// current-versions-only inventory): fetched on a later date.
    #[error("changed since the inventory: {0}")]
    Changed(String),
    /// SSE-C: only the customer's key opens it; reported, never retried.
    #[error("encrypted with a customer-provided key (SSE-C), which this tool does not have: {0}")]
    NeedsCustomerKey(String),
    /// An answer every request would get (credentials refused, clock off, region
    /// unresolvable): the caller stops the run.
    #[error("{0:#}")]
    Fatal(anyhow::Error),
    /// Our side failed (disk full, too many open files, permissions): not the version's
    /// fault, and every other download would meet it too. The caller stops the run.
    #[error("{0:#}")]
    Local(anyhow::Error),
    #[error("{0:#}")]
    Other(anyhow::Error),
}

impl FetchError {
    fn classify(e: anyhow::Error) -> FetchError {
        if is_local_exhaustion(&e) {
            return FetchError::Local(e);
        }
        if let Some(s3) = e.downcast_ref::<S3Error>() {
            let text = s3.to_string();
            if s3.stops_run() {
                return FetchError::Fatal(e);
            }
            return match (s3.status, s3.code.as_deref()) {
                (_, Some("InvalidObjectState")) => FetchError::Archived(text),
                (412, _) => FetchError::Changed(text),
                (400, Some("InvalidRequest"))
                    if s3.message.as_deref().is_some_and(is_sse_c_message) =>
                {
                    FetchError::NeedsCustomerKey(text)
                }
                (404, _) => FetchError::NotFound(text),
                (403, _) => FetchError::Forbidden(text),
                _ => FetchError::Other(e),
            };
        }
        FetchError::Other(e)
    }
}

/// S3's words for a GET of an SSE-C object without its key.
fn is_sse_c_message(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("server side encryption") && m.contains("customer") || m.contains("sse-c")
}

/// Out of descriptors or space (a socket that cannot be opened is as much our side's
/// failure as a file that cannot be written).
fn is_local_exhaustion(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|code| {
                [libc::EMFILE, libc::ENFILE, libc::ENOSPC, libc::EDQUOT].contains(&code)
            })
    })
}

/// Descriptors the rest of a run may hold besides the downloads: stdio, the catalog and
/// index readers, the journal, the plan, the HTTP client's own.
const FD_RESERVE: u64 = 32;
/// Per download thread: its connection and its staging file, with room for a range job.
const FD_PER_JOB: u64 = 3;

/// How many download threads a descriptor limit of `limit` allows: if it is too low for
/// `jobs` threads, fewer are used, with a warning, instead of failing downloads with EMFILE.
/// (The binary raises the soft limit to the hard one first: `cli/limits.rs`.)
pub fn jobs_within_fd_limit(jobs: usize, limit: u64) -> usize {
    let allowed = (limit.saturating_sub(FD_RESERVE) / FD_PER_JOB).max(1) as usize;
    if allowed < jobs {
        tracing::warn!(
            "the open-file limit is {limit}: using {allowed} download threads instead of {jobs}"
        );
        return allowed;
    }
    jobs
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Downloads in flight: exactly this many, or, when `adaptive`, at most this many.
    pub jobs: usize,
    /// `--jobs auto`: the number in flight follows the link (`sync/concurrency.rs`).
    pub adaptive: bool,
    /// Objects bigger than this are split into ranges (multipart objects: on part
    /// boundaries, whatever this says).
    pub part_size: u64,
    /// Attempts to continue one range after its connection broke.
    pub resumes: u32,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            jobs: 32,
            adaptive: false,
            part_size: 64 << 20,
            resumes: 8,
        }
    }
}

/// Counters for progress and reports.
#[derive(Debug, Default)]
pub struct FetchCounters {
    pub objects_done: AtomicU64,
    pub bytes: AtomicU64,
    pub failures: AtomicU64,
    pub requests: AtomicU64,
    pub resumes: AtomicU64,
    pub retried_corrupt: AtomicU64,
    /// The progress display's counters: bytes as they arrive (a 10 GiB file moves the
    /// line while it downloads) and failures.
    pub display: Option<std::sync::Arc<crate::sys::progress::Counters>>,
    /// How many downloads were in flight (written when `fetch_all` returns).
    pub concurrency: Mutex<ConcurrencyReport>,
}

/// The result of one request.
pub struct FetchResult {
    pub request: FetchRequest,
    pub outcome: Result<Verified, FetchError>,
    /// What the catalog keeps so that fsck can check the file offline the same way: the
    /// part size of a multipart upload fetched on its parts (0: none), and S3's full-object
    /// checksum where the ETag is no MD5.
    pub part_size: u64,
    pub checksum: Option<Vec<u8>>,
}

/// One byte range of an object, and the MD5 it is checked against when it is a whole part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u64,
    len: u64,
}

impl Range {
    /// A part asked for by number, whose place its answer will say.
    const UNKNOWN: Range = Range {
        start: u64::MAX,
        len: u64::MAX,
    };
}

/// Whether the server answers `GET ?partNumber=N` with that part (AWS, SeaweedFS) or with
/// the whole object (moto): learnt from the first answer, for the whole process, so that
/// against the latter only the first multipart objects pay for asking.
struct PartGets;

static PART_GETS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl PartGets {
    const WORK: u8 = 1;
    const IGNORED: u8 = 2;

    fn usable() -> bool {
        PART_GETS.load(Ordering::Relaxed) != Self::IGNORED
    }

    fn learn(works: bool) {
        let was = PART_GETS.swap(
            if works { Self::WORK } else { Self::IGNORED },
            Ordering::Relaxed,
        );
        if !works && was != Self::IGNORED {
            tracing::debug!(
                "the server answers GET ?partNumber= with the whole object: multipart objects \
                 are planned by HEAD"
            );
        }
    }
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` as (first, last, total).
fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (span, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total) = (first.parse().ok()?, last.parse().ok()?, total.parse().ok()?);
    (first <= last && last < total).then_some((first, last, total))
}

/// What S3 itself said about the object (the HEAD of a ranged object, the GET of a whole
/// one): it decides how the bytes are checked.
#[derive(Debug, Clone, Default)]
struct S3Says {
    checksum: Option<Expected>,
    /// `x-amz-server-side-encryption`: under `aws:kms` / `aws:kms:dsse` the ETag is no MD5.
    sse: Option<String>,
    /// As sent, quoted.
    etag: Option<String>,
}

impl S3Says {
    fn from_head(h: &HeadInfo) -> S3Says {
        S3Says {
            checksum: h.checksum.clone(),
            sse: h.server_side_encryption.clone(),
            etag: Some(h.etag.clone()).filter(|e| !e.is_empty()),
        }
    }

    /// The ETag can be checked as an MD5: the inventory says so and S3 does not contradict
    /// it (an object re-encrypted with KMS after the inventory was written, or an
    /// inventory without an EncryptionStatus column).
    fn etag_is_md5(&self, r: &FetchRequest) -> bool {
        r.etag_is_md5
            && !self
                .sse
                .as_deref()
                .is_some_and(|s| s.starts_with("aws:kms"))
    }
}

/// Part sizes of a multipart object: from `HEAD ?partNumber=1` when all parts but the last
/// have part 1's size (what every common client does), else by asking for every part.
fn part_sizes(
    client: &S3Client,
    counters: &FetchCounters,
    r: &FetchRequest,
    parts: u32,
) -> Result<Vec<u64>> {
    let version = version_param(r);
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let first = client.head(&r.bucket, &r.key, version, Some(1))?;
    let p = first.size;
    let n = u64::from(parts);
    if p > 0 && p * (n - 1) < r.size && r.size - p * (n - 1) <= p {
        let mut sizes = vec![p; parts as usize - 1];
        sizes.push(r.size - p * (n - 1));
        return Ok(sizes);
    }
    let mut sizes = vec![p];
    for part in 2..=parts {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        sizes.push(client.head(&r.bucket, &r.key, version, Some(part))?.size);
    }
    if sizes.iter().sum::<u64>() != r.size {
        anyhow::bail!(
            "s3://{}/{}: parts add up to {} bytes, the inventory says {}",
            r.bucket,
            r.key,
            sizes.iter().sum::<u64>(),
            r.size
        );
    }
    Ok(sizes)
}

/// What one range's bytes hashed to.
#[derive(Debug, Clone, Default)]
struct RangeDigest {
    md5: Option<[u8; 16]>,
    checksum: Option<Vec<u8>>,
}

/// An object whose ranges are in flight.
struct ObjectJob {
    request: FetchRequest,
    /// Where each range lies; for parts asked for by number, learnt from each part's
    /// answer (`Range::UNKNOWN` until then).
    ranges: Mutex<Vec<Range>>,
    /// Ranges are the multipart parts: each range's MD5 is kept.
    parts_are_ranges: bool,
    /// The parts are asked for as `?partNumber=N`, all at once, with no HEAD before.
    by_part: bool,
    /// A part's answer showed this way cannot work here (the server ignores partNumber, or
    /// the object turned out to be under KMS): the object is fetched again by a HEAD plan.
    needs_head_plan: AtomicBool,
    file: File,
    s3_says: Mutex<S3Says>,
    digests: Mutex<Vec<RangeDigest>>,
    remaining: AtomicUsize,
    failed: Mutex<Option<FetchError>>,
    attempt: u32,
}

enum Task {
    Object(FetchRequest, u32),
    Range(Arc<ObjectJob>, usize),
}

/// Fetches every request from `requests` with `opts.jobs` threads (or, when
/// `opts.adaptive`, as many as `sync/concurrency.rs` finds pay, up to `opts.jobs`) and calls
/// `on_result` (on the calling thread) for each, in completion order. Returns when all are
/// done; `counters.concurrency` then says how many were in flight.
pub fn fetch_all(
    client: &S3Client,
    requests: impl IntoIterator<Item = FetchRequest>,
    opts: &FetchOptions,
    counters: &FetchCounters,
    mut on_result: impl FnMut(FetchResult),
) -> Result<()> {
    let max = opts.jobs.max(1);
    let limiter = Limiter::new(max, opts.adaptive);
    let (objects_tx, objects_rx) = bounded::<Task>(max * 2);
    let (ranges_tx, ranges_rx) = unbounded::<Task>();
    let (results_tx, results_rx) = unbounded::<FetchResult>();
    let in_flight = AtomicUsize::new(0);
    let all_sent = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| -> Result<()> {
        let (limiter, in_flight, all_sent) = (&limiter, &in_flight, &all_sent);
        // `spawn` holds clones of every channel end, and under --jobs auto it lives in the
        // controller's thread: the results channel closes (ending the loop at the bottom)
        // only when the controller has seen the run done and returned, within 20 ms.
        let spawn = {
            let (objects_rx, ranges_rx, ranges_tx, results_tx) = (
                objects_rx.clone(),
                ranges_rx.clone(),
                ranges_tx.clone(),
                results_tx.clone(),
            );
            move || -> Result<()> {
                let (objects_rx, ranges_rx, ranges_tx, results_tx) = (
                    objects_rx.clone(),
                    ranges_rx.clone(),
                    ranges_tx.clone(),
                    results_tx.clone(),
                );
                limiter.born();
                std::thread::Builder::new()
                    .name("fetch".into())
                    // Thousands may run over a long link; what they do needs little stack.
                    .stack_size(512 * 1024)
                    .spawn_scoped(scope, move || {
                        let worker = Worker {
                            buffer: std::cell::Cell::new(Vec::new()),
                            client,
                            opts,
                            counters,
                            ranges_tx,
                            results_tx,
                            in_flight,
                            limiter,
                        };
                        worker.run(&objects_rx, &ranges_rx);
                    })
                    .map(drop)
                    .map_err(|e| {
                        limiter.died();
                        anyhow!(e).context("starting a fetch thread")
                    })
            }
        };
        for _ in 0..limiter.target() {
            spawn()?;
        }
        if opts.adaptive {
            scope.spawn(move || {
                let done =
                    || all_sent.load(Ordering::SeqCst) && in_flight.load(Ordering::SeqCst) == 0;
                control(
                    limiter,
                    max,
                    || {
                        (
                            counters.objects_done.load(Ordering::Relaxed)
                                + counters.failures.load(Ordering::Relaxed),
                            counters.bytes.load(Ordering::Relaxed),
                        )
                    },
                    done,
                    |target| {
                        // Threads above the target retire by themselves; below it, start more.
                        while limiter.alive() < target && !done() {
                            if let Err(e) = spawn() {
                                tracing::warn!("{e:#}: staying at {} downloads", limiter.alive());
                                limiter.set_target(limiter.alive());
                                break;
                            }
                        }
                    },
                );
            });
        } else {
            drop(spawn);
        }
        drop(results_tx);
        let fed = (|| -> Result<()> {
            for request in requests {
                in_flight.fetch_add(1, Ordering::SeqCst);
                objects_tx
                    .send(Task::Object(request, 0))
                    .map_err(|_| anyhow!("fetch threads stopped"))?;
                // Hand results back as they come, so the caller's bookkeeping keeps pace.
                while let Ok(r) = results_rx.try_recv() {
                    on_result(r);
                }
            }
            Ok(())
        })();
        all_sent.store(true, Ordering::SeqCst);
        drop(objects_tx);
        drop(ranges_tx);
        for r in results_rx.iter() {
            on_result(r);
        }
        fed
    });
    *counters
        .concurrency
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = limiter.report();
    outcome
}

struct Worker<'a> {
    /// This thread's read buffer, reused across objects.
    buffer: std::cell::Cell<Vec<u8>>,
    client: &'a S3Client,
    opts: &'a FetchOptions,
    counters: &'a FetchCounters,
    ranges_tx: Sender<Task>,
    results_tx: Sender<FetchResult>,
    in_flight: &'a AtomicUsize,
    limiter: &'a Limiter,
}

impl Worker<'_> {
    /// Serves ranges first (they belong to objects already started), then new objects;
    /// stops when the caller has sent everything and nothing is in flight.
    fn run(&self, objects: &Receiver<Task>, ranges: &Receiver<Task>) {
        loop {
            if self.limiter.retire() {
                return;
            }
            let task = match ranges.try_recv() {
                Ok(t) => t,
                Err(_) => crossbeam_channel::select! {
                    recv(ranges) -> t => match t { Ok(t) => t, Err(_) => continue },
                    recv(objects) -> t => match t {
                        Ok(t) => t,
                        Err(_) => {
                            if self.in_flight.load(Ordering::SeqCst) == 0 {
                                self.limiter.died();
                                return;
                            }
                            match ranges.recv_timeout(std::time::Duration::from_millis(20)) {
                                Ok(t) => t,
                                Err(_) => continue,
                            }
                        }
                    },
                },
            };
            self.limiter.begin_task();
            match task {
                Task::Object(request, attempt) => self.start_object(request, attempt, false),
                Task::Range(job, idx) => self.run_range(job, idx),
            }
            self.limiter.end_task();
        }
    }

    fn finish(&self, request: FetchRequest, outcome: Result<Verified, FetchError>) {
        self.finish_with(request, outcome, 0, None);
    }

    fn finish_with(
        &self,
        request: FetchRequest,
        outcome: Result<Verified, FetchError>,
        part_size: u64,
        checksum: Option<Vec<u8>>,
    ) {
        match &outcome {
            Ok(_) => self.counters.objects_done.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                if let Some(d) = &self.counters.display {
                    d.failures.fetch_add(1, Ordering::Relaxed);
                }
                self.counters.failures.fetch_add(1, Ordering::Relaxed)
            }
        };
        let _ = self.results_tx.send(FetchResult {
            request,
            outcome,
            part_size,
            checksum,
        });
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn start_object(&self, request: FetchRequest, attempt: u32, head_plan: bool) {
        match self.plan(&request, head_plan) {
            Ok((ranges, parts_are_ranges, s3_says)) => {
                let by_part = ranges.first().is_some_and(|r| *r == Range::UNKNOWN);
                let file = match create_staging(&request.dest, request.size, ranges.len() > 1) {
                    Ok(f) => f,
                    Err(e) => return self.finish(request, Err(FetchError::Local(e))),
                };
                let n = ranges.len();
                let job = Arc::new(ObjectJob {
                    digests: Mutex::new(vec![RangeDigest::default(); n]),
                    s3_says: Mutex::new(s3_says),
                    remaining: AtomicUsize::new(n),
                    failed: Mutex::new(None),
                    request,
                    ranges: Mutex::new(ranges),
                    parts_are_ranges,
                    by_part,
                    needs_head_plan: AtomicBool::new(false),
                    file,
                    attempt,
                });
                for idx in 1..n {
                    let _ = self.ranges_tx.send(Task::Range(Arc::clone(&job), idx));
                }
                self.run_range(job, 0);
            }
            Err(e) => self.finish(request, Err(e)),
        }
    }

    /// The ranges to fetch: the multipart parts, or slices of `part_size`; and, for an
    /// object fetched in several ranges, what a HEAD says about it (its checksum cannot come
    /// with a ranged GET).
    ///
    /// A multipart object whose ETag is an MD5 of its parts' MD5s needs no HEAD: its parts
    /// are asked for by number, all at once (`Range::UNKNOWN` each, placed where each
    /// answer's `Content-Range` says), and the ETag checks them. Over a long link that
    /// saves the HEAD's round trip on every such object, and the two HEAD requests. Unless
    /// `head_plan`, or the server has shown it answers part GETs with the whole object.
    fn plan(
        &self,
        r: &FetchRequest,
        head_plan: bool,
    ) -> Result<(Vec<Range>, bool, S3Says), FetchError> {
        let whole = |parts_are_ranges| {
            Ok((
                vec![Range {
                    start: 0,
                    len: r.size,
                }],
                parts_are_ranges,
                S3Says::default(),
            ))
        };
        if r.size == 0 {
            return whole(false);
        }
        let multipart = r.etag.is_some_and(|e| e.is_multipart()) && r.etag_is_md5;
        let parts = r.etag.map_or(0, |e| e.parts);
        if multipart && parts == 1 {
            return whole(true);
        }
        if !multipart && r.size <= self.opts.part_size.max(1) {
            return whole(false);
        }
        if multipart && !head_plan && PartGets::usable() {
            return Ok((
                vec![Range::UNKNOWN; parts as usize],
                true,
                S3Says::default(),
            ));
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let head = || {
            self.client
                .head(&r.bucket, &r.key, version_param(r), None)
                .map_err(FetchError::classify)
        };
        if multipart {
            // The object's HEAD and its parts' HEADs at once: one round trip before the
            // ranges start instead of two, where the pool has an idle connection (in a
            // sync; a one-shot `get` pays a second handshake instead).
            let (client, counters) = (self.client, self.counters);
            let (head, sizes) = std::thread::scope(|scope| {
                let sizes = std::thread::Builder::new()
                    .name("fetch-head".into())
                    .spawn_scoped(scope, || part_sizes(client, counters, r, parts));
                let head = head();
                let sizes = match sizes {
                    Ok(t) => t
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("a HEAD thread panicked"))),
                    // No thread to spare: the same requests one after the other.
                    Err(_) => part_sizes(client, counters, r, parts),
                };
                (head, sizes)
            });
            let says = S3Says::from_head(&head?);
            let sizes = sizes.map_err(FetchError::classify)?;
            let mut start = 0;
            let ranges = sizes
                .into_iter()
                .map(|len| {
                    let range = Range { start, len };
                    start += len;
                    range
                })
                .collect();
            return Ok((ranges, true, says));
        }
        let says = S3Says::from_head(&head()?);
        let step = self.opts.part_size.max(1);
        let ranges = (0..r.size.div_ceil(step))
            .map(|i| Range {
                start: i * step,
                len: step.min(r.size - i * step),
            })
            .collect();
        Ok((ranges, false, says))
    }

    /// Where part `idx` lies, from its answer's `Content-Range`, recorded in the job. An
    /// answer that is not a part (a 200: the server ignored partNumber) marks the object for
    /// a HEAD plan; one whose total is not the listed size is not the listed object.
    fn place_part(
        &self,
        job: &ObjectJob,
        idx: usize,
        body: &reqwest::blocking::Response,
    ) -> Result<Range, FetchError> {
        let r = &job.request;
        let placed = body
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(content_range);
        let (first, last, total) = match (body.status().as_u16(), placed) {
            (206, Some(p)) => p,
            _ => {
                PartGets::learn(false);
                job.needs_head_plan.store(true, Ordering::Relaxed);
                return Err(FetchError::Other(anyhow!(
                    "s3://{}/{}: GET ?partNumber={} was not answered with a part",
                    r.bucket,
                    r.key,
                    idx + 1
                )));
            }
        };
        PartGets::learn(true);
        if total != r.size {
            return Err(FetchError::Corrupt(format!(
                "part {} says the object has {total} bytes, the inventory lists {}",
                idx + 1,
                r.size
            )));
        }
        let range = Range {
            start: first,
            len: last - first + 1,
        };
        job.ranges.lock().expect("lock")[idx] = range;
        Ok(range)
    }

    fn run_range(&self, job: Arc<ObjectJob>, idx: usize) {
        if job.failed.lock().expect("lock").is_none() {
            match self.download_range(&job, idx) {
                Ok(digest) => job.digests.lock().expect("lock")[idx] = digest,
                Err(e) => {
                    job.failed.lock().expect("lock").get_or_insert(e);
                }
            }
        }
        if job.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(&job);
        }
    }

    /// GETs one range into place, resuming from the last byte written when the body breaks.
    /// Returns what the range hashed to.
    fn download_range(&self, job: &ObjectJob, idx: usize) -> Result<RangeDigest, FetchError> {
        let (range, whole) = {
            let ranges = job.ranges.lock().expect("lock");
            (ranges[idx], ranges.len() == 1)
        };
        // A range's MD5 is only worth computing when it is a whole part or the whole object;
        // a single-part object fetched in slices is hashed once, front to back, at the end
        // (unless it has a CRC, which combines).
        let hash = job.parts_are_ranges || whole;
        let mut buf = self.buffer.take();
        // Sized to the range (plus one byte, to notice an object longer than listed): a
        // 1 KiB object must not cost a 256 KiB zeroed allocation.
        let want = (range.len.min(256 * 1024) + 1) as usize;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let result = self.download_range_with(job, idx, range, whole, hash, &mut buf[..want]);
        self.buffer.set(buf);
        result
    }

    fn download_range_with(
        &self,
        job: &ObjectJob,
        idx: usize,
        mut range: Range,
        whole: bool,
        hash: bool,
        buf: &mut [u8],
    ) -> Result<RangeDigest, FetchError> {
        let r = &job.request;
        let etag_text = r.etag.map(|e| format!("\"{e}\""));
        let mut hashers: Option<(Option<Md5>, Option<Hasher>)> = None;
        let mut done = 0u64;
        let mut resumes = 0;
        loop {
            let by_number = range == Range::UNKNOWN;
            let byte_range = if (whole && done == 0) || by_number {
                None
            } else {
                Some((range.start + done, Some(range.start + range.len - 1)))
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let asked = std::time::Instant::now();
            let mut body = self
                .client
                .get(&Get {
                    bucket: &r.bucket,
                    key: &r.key,
                    version_id: version_param(r),
                    range: byte_range,
                    // The bytes of a range, or of "the latest", must be of the listed object.
                    if_match: etag_text
                        .as_deref()
                        .filter(|_| byte_range.is_some() || by_number || r.version_id.is_none()),
                    checksums: byte_range.is_none() && !by_number,
                    part_number: by_number.then_some(idx as u32 + 1),
                    patience: Patience::Object,
                })
                .map_err(FetchError::classify)?;
            self.limiter.record_latency(asked.elapsed());
            if by_number {
                range = self.place_part(job, idx, &body)?;
            }
            let (md5, ck) = hashers.get_or_insert_with(|| {
                let mut says = job.s3_says.lock().expect("lock");
                if byte_range.is_none() && !job.by_part {
                    *says = S3Says::from_head(&HeadInfo::from_headers(body.headers()));
                } else if by_number {
                    // A part's answer carries the object's ETag and encryption (and no
                    // checksum: none was asked for, the ETag checks the parts).
                    let h = HeadInfo::from_headers(body.headers());
                    says.etag = Some(h.etag).filter(|e| !e.is_empty());
                    says.sse = h.server_side_encryption;
                }
                let algorithm = says.checksum.as_ref().and_then(|e| {
                    let usable = whole
                        || (e.parts.is_some() && job.parts_are_ranges)
                        || (e.parts.is_none() && e.algorithm.combinable());
                    usable.then_some(e.algorithm)
                });
                let md5 = (hash && algorithm.is_none()).then(Md5::new);
                (md5, algorithm.map(Hasher::new))
            });
            let broken = loop {
                match body.read(buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        if n as u64 > range.len - done {
                            return Err(FetchError::Corrupt(format!(
                                "the object has more than the {} bytes the inventory lists",
                                r.size
                            )));
                        }
                        job.file
                            .write_all_at(&buf[..n], range.start + done)
                            .with_context(|| format!("writing {}", r.dest.display()))
                            .map_err(FetchError::Local)?;
                        if let Some(m) = md5 {
                            m.update(&buf[..n]);
                        }
                        if let Some(c) = ck {
                            c.update(&buf[..n]);
                        }
                        done += n as u64;
                        self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if let Some(d) = &self.counters.display {
                            d.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(e),
                }
            };
            if done >= range.len {
                return Ok(RangeDigest {
                    md5: md5.take().map(|m| m.finalize().into()),
                    checksum: ck.as_ref().map(Hasher::finish),
                });
            }
            // A dropped connection or a short body: continue from the last byte written.
            resumes += 1;
            self.counters.resumes.fetch_add(1, Ordering::Relaxed);
            if resumes > self.opts.resumes {
                let why = broken.map_or("the body ended early".to_string(), |e| e.to_string());
                return Err(FetchError::Other(anyhow!(
                    "s3://{}/{}: gave up after {resumes} broken transfers at byte {} of {}: {why}",
                    r.bucket,
                    r.key,
                    range.start + done,
                    r.size
                )));
            }
            tracing::debug!(
                "s3://{}/{}: transfer broke at byte {}; resuming",
                r.bucket,
                r.key,
                range.start + done
            );
            std::thread::sleep(backoff(resumes).min(std::time::Duration::from_secs(2)));
        }
    }

    /// After the last range: check, set the mtime, report (or retry once from scratch).
    /// Other range threads may still hold the job for a moment, so it is only borrowed.
    fn complete(&self, job: &ObjectJob) {
        let request = job.request.clone();
        let ranges = job.ranges.lock().expect("lock").clone();
        // Fetched by part number but under KMS after all: its ETag is no MD5, and a HEAD
        // plan finds the checksum that can check it.
        let kms = job.by_part && !job.s3_says.lock().expect("lock").etag_is_md5(&request);
        if job.needs_head_plan.load(Ordering::Relaxed) || kms {
            let _ = std::fs::remove_file(&request.dest);
            return self.start_object(request, job.attempt, true);
        }
        let outcome = match job.failed.lock().expect("lock").take() {
            Some(e) => Err(e),
            None if job.by_part && !tiles(&ranges, request.size) => {
                Err(FetchError::Corrupt(format!(
                    "its parts do not cover its {} bytes one after the other",
                    request.size
                )))
            }
            None => {
                let digests = job.digests.lock().expect("lock");
                let says = job.s3_says.lock().expect("lock");
                verify(
                    &request,
                    &job.file,
                    &ranges,
                    job.parts_are_ranges,
                    &digests,
                    &says,
                )
            }
        };
        let outcome = outcome.and_then(|v| {
            let t = request.last_modified.as_system_time();
            // No fsync per file: durability is the caller's batch decision (one syncfs before
            // a run commits), 20,000 fsyncs would cost more than the downloads.
            job.file
                .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
                .with_context(|| format!("finishing {}", request.dest.display()))
                .map_err(FetchError::Local)?;
            Ok(v)
        });
        match outcome {
            Err(FetchError::Corrupt(why)) if job.attempt == 0 => {
                tracing::warn!(
                    "s3://{}/{}: {why}; fetching it again",
                    request.bucket,
                    request.key
                );
                let _ = std::fs::remove_file(&request.dest);
                self.counters
                    .retried_corrupt
                    .fetch_add(1, Ordering::Relaxed);
                self.start_object(request, 1, !job.by_part);
            }
            Err(e) => {
                // An unverified file is never left where a verified one is expected.
                let _ = std::fs::remove_file(&request.dest);
                self.finish(request, Err(e));
            }
            Ok(v) => {
                // Parts of one size but the last: that size is all fsck needs to check
                // the multipart ETag offline.
                let uniform = ranges.len() > 1
                    && ranges[..ranges.len() - 1]
                        .iter()
                        .all(|r| r.len == ranges[0].len);
                let part_size = if job.parts_are_ranges && uniform {
                    ranges[0].len
                } else {
                    0
                };
                let says = job.s3_says.lock().expect("lock");
                let checksum = match (&says.checksum, v) {
                    (Some(e), Verified::Checksum(_))
                        if e.parts.is_none() && !says.etag_is_md5(&request) =>
                    {
                        Some(e.value.clone())
                    }
                    _ => None,
                };
                drop(says);
                self.finish_with(request, Ok(v), part_size, checksum)
            }
        }
    }
}

/// The parts, in order, lie one after the other from byte 0 to the end: what the answers
/// said of each part's place adds up to the object (a gap would be zeros in the file that
/// no part's MD5 covered).
fn tiles(ranges: &[Range], size: u64) -> bool {
    let mut next = 0;
    for r in ranges {
        if r.start != next {
            return false;
        }
        next = r.start + r.len;
    }
    next == size
}

/// The `versionId` to send: the id, `null` for pre-versioning objects.
fn version_param(r: &FetchRequest) -> Option<&str> {
    r.version_id.as_deref().map(crate::model::version_id::to_s3)
}

/// Creates (truncating any partial file a killed process left) the staging file. Its
/// length is set up front only when ranges will land out of order; small objects, the vast
/// majority, then cost one open, one write and one close.
fn create_staging(path: &Path, size: u64, ranged: bool) -> Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    };
    let file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            open().with_context(|| format!("creating {}", path.display()))?
        }
        Err(e) => {
            return Err(anyhow::Error::from(e).context(format!("creating {}", path.display())));
        }
    };
    if ranged {
        file.set_len(size)
            .with_context(|| format!("allocating {} bytes for {}", size, path.display()))?;
    }
    Ok(file)
}

fn verify(
    r: &FetchRequest,
    file: &File,
    ranges: &[Range],
    parts_are_ranges: bool,
    digests: &[RangeDigest],
    says: &S3Says,
) -> Result<Verified, FetchError> {
    let len = file
        .metadata()
        .map_err(|e| FetchError::Local(e.into()))?
        .len();
    if len != r.size {
        return Err(FetchError::Corrupt(format!(
            "size {len}, expected {}",
            r.size
        )));
    }
    // The version S3 served is the one listed (a cheap check that keeps a checksum-only
    // verification honest about *which* object it verified).
    if let (Some(listed), Some(sent)) = (r.etag, says.etag.as_deref())
        && ETag::parse(sent.as_bytes()).is_some_and(|s| s != listed)
    {
        return Err(FetchError::Corrupt(format!(
            "S3 sent ETag {sent}, the inventory lists \"{listed}\""
        )));
    }
    if let Some(expected) = &says.checksum {
        return verify_checksum(expected, file, ranges, parts_are_ranges, digests);
    }
    let (Some(etag), true) = (r.etag, says.etag_is_md5(r)) else {
        return Ok(Verified::SizeOnly);
    };
    if parts_are_ranges && etag.is_multipart() {
        let mut outer = Md5::new();
        for d in digests {
            outer.update(d.md5.unwrap_or_default());
        }
        let actual = ETag {
            md5: outer.finalize().into(),
            parts: digests.len() as u32,
        };
        return if actual == etag {
            Ok(Verified::MultipartEtag)
        } else {
            Err(FetchError::Corrupt(format!(
                "multipart ETag {actual}, expected {etag}"
            )))
        };
    }
    let md5: [u8; 16] = match (ranges.len(), digests[0].md5) {
        (1, Some(md5)) => md5,
        // Ranges arrived in any order; hash the file front to back.
        _ => md5_of_file(file).map_err(|e| FetchError::Local(e.into()))?,
    };
    let actual = ETag { md5, parts: 0 };
    if actual == etag {
        Ok(Verified::Md5)
    } else {
        Err(FetchError::Corrupt(format!(
            "MD5 {actual}, expected ETag {etag}"
        )))
    }
}

/// Checks the bytes against S3's additional checksum: from the whole body's digest, the
/// ranges' CRCs combined, the parts' checksums (composite), or the file read again.
fn verify_checksum(
    expected: &Expected,
    file: &File,
    ranges: &[Range],
    parts_are_ranges: bool,
    digests: &[RangeDigest],
) -> Result<Verified, FetchError> {
    let a = expected.algorithm;
    let have: Option<Vec<Vec<u8>>> = digests.iter().map(|d| d.checksum.clone()).collect();
    let actual = match (have, expected.parts) {
        (Some(mut one), None) if one.len() == 1 => one.pop(),
        (Some(pieces), None) if a.combinable() => {
            let pieces: Vec<(Vec<u8>, u64)> = pieces
                .into_iter()
                .zip(ranges)
                .map(|(c, r)| (c, r.len))
                .collect();
            checksum::combine_crcs(a, &pieces)
        }
        (Some(parts), Some(n)) if parts_are_ranges && parts.len() == n as usize => {
            Some(checksum::composite(a, &parts))
        }
        (Some(mut one), Some(_)) if one.len() == 1 && ranges.len() == 1 => {
            // A composite checksum, fetched whole: the part checksums are unknown, so the
            // whole body's checksum cannot be compared with it.
            let _ = one.pop();
            None
        }
        _ => None,
    };
    let actual = match actual {
        Some(a) => a,
        None if expected.parts.is_none() => {
            checksum_of_file(a, file).map_err(|e| FetchError::Local(e.into()))?
        }
        // Composite over parts we did not fetch as parts: nothing to compare; the size
        // (checked) is all there is.
        None => return Ok(Verified::SizeOnly),
    };
    if actual == expected.value {
        Ok(Verified::Checksum(a))
    } else {
        let got = Expected {
            algorithm: a,
            value: actual,
            parts: expected.parts,
        };
        Err(FetchError::Corrupt(format!(
            "{}, expected {}",
            got.describe(),
            expected.describe()
        )))
    }
}

fn checksum_of_file(a: Algorithm, file: &File) -> io::Result<Vec<u8>> {
    let mut h = Hasher::new(a);
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
        offset += n as u64;
    }
}

fn md5_of_file(file: &File) -> io::Result<[u8; 16]> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok(md5.finalize().into());
        }
        md5.update(&buf[..n]);
        offset += n as u64;
    }
}

/// Fetches one object given only its location: HEAD learns size, ETag, encryption and date,
/// then the object is fetched and verified against them (the `get` command).
pub fn fetch_one(
    client: &S3Client,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<(FetchRequest, Verified), FetchError> {
    let head = client
        .head(bucket, key, version_id, None)
        .map_err(FetchError::classify)?;
    let etag = ETag::parse(head.etag.as_bytes());
    let encrypted_opaque = head
        .server_side_encryption
        .as_deref()
        .is_some_and(|s| s != "AES256");
    let last_modified = head
        .last_modified
        .as_deref()
        .and_then(Timestamp::parse_http_date)
        .unwrap_or_default();
    let request = FetchRequest {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version_id: version_id.map(str::to_string),
        size: head.size,
        etag,
        etag_is_md5: etag.is_some() && !encrypted_opaque,
        last_modified,
        dest: dest.to_path_buf(),
    };
    let counters = FetchCounters::default();
    let mut result = None;
    fetch_all(client, [request], opts, &counters, |r| result = Some(r))
        .map_err(FetchError::Other)?;
    let r = result.ok_or_else(|| FetchError::Other(anyhow!("no result")))?;
    r.outcome.map(|v| (r.request, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            content_range("bytes 0-5242879/10486760"),
            Some((0, 5_242_879, 10_486_760))
        );
        assert_eq!(content_range("bytes 7-7/8"), Some((7, 7, 8)));
        // Past the end, backwards, unknown total, not bytes, not numbers.
        for bad in [
            "bytes 0-8/8",
            "bytes 5-4/8",
            "bytes 0-4/*",
            "items 0-4/8",
            "bytes a-4/8",
            "bytes */8",
        ] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn parts_must_tile_the_object() {
        let r = |start, len| Range { start, len };
        assert!(tiles(&[r(0, 5), r(5, 6), r(11, 1)], 12));
        assert!(!tiles(&[r(0, 5), r(6, 6)], 12), "a gap");
        assert!(!tiles(&[r(0, 6), r(5, 7)], 12), "an overlap");
        assert!(!tiles(&[r(0, 5), r(5, 6)], 12), "short of the end");
        assert!(!tiles(&[r(5, 6), r(0, 5)], 11), "out of order");
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            Timestamp::parse_http_date("Wed, 12 Oct 2009 17:50:00 GMT")
                .unwrap()
                .to_string(),
            "2009-10-12T17:50:00.000Z"
        );
        assert!(Timestamp::parse_http_date("yesterday").is_none());
    }
}
