//! Fetches the objects listed in a JSON-lines file (bucket, key, version_id, size, etag,
//! last_modified) into DIR with the library's fetcher, verifying each: the fetch benchmark.
//!
//! `fetch_many OBJECTS.jsonl DIR JOBS`  (endpoint and credentials from the environment)

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use s3invbackup::model::etag::ETag;
use s3invbackup::model::timestamp::Timestamp;
use s3invbackup::s3::{S3Client, S3Config};
use s3invbackup::sync::fetch::{FetchCounters, FetchOptions, FetchRequest, fetch_all};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: fetch_many OBJECTS.jsonl DIR JOBS");
    let dir = PathBuf::from(&args[2]);
    let jobs: usize = args[3].parse()?;
    let mut requests = Vec::new();
    for (i, line) in std::io::BufReader::new(std::fs::File::open(&args[1])?)
        .lines()
        .enumerate()
    {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        requests.push(FetchRequest {
            bucket: s("bucket"),
            key: s("key"),
            version_id: Some(s("version_id")),
            size: v["size"].as_u64().unwrap_or(0),
            etag: ETag::parse(s("etag").as_bytes()),
            etag_is_md5: true,
            last_modified: Timestamp::parse(s("last_modified").as_bytes()).unwrap_or_default(),
            // Spread over 256 directories, as a staging area should be: 32 threads creating
            // files in one directory serialize on its lock (measured: 10x the system time).
            dest: dir.join(format!("{:02x}/{i}", i % 256)),
        });
    }
    let client = S3Client::new(&S3Config::default())?;
    let counters = FetchCounters::default();
    let n = requests.len();
    let started = Instant::now();
    let mut failures = 0;
    fetch_all(
        &client,
        requests,
        &FetchOptions {
            jobs,
            ..FetchOptions::default()
        },
        &counters,
        |r| {
            if let Err(e) = r.outcome {
                failures += 1;
                eprintln!("{}: {e}", r.request.key);
            }
        },
    )?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} objects in {secs:.2}s = {:.0} objects/s, {failures} failures",
        n as f64 / secs
    );
    anyhow::ensure!(failures == 0, "{failures} objects failed");
    Ok(())
}
