//! Against something that answers as AWS does (scripts/harness/aws_s3.py: AWS's host names in
//! a private namespace, TLS from a test CA, moto behind): regions, the credential chain,
//! errors that stop a run, throttling, clock skew, KMS, archived objects, requester pays,
//! and no secret in any output. The harness itself is checked with boto3 first.

mod support;

use serde_json::json;
use support::aws::{Aws, KEY_ID, SECRET, run};

/// Uploads `spec` (put_objects.py's format) into `bucket` through moto, inside.
fn seed(aws: &Aws, bucket: &str, spec: serde_json::Value) -> Vec<serde_json::Value> {
    let mut c = aws.script("put_objects.py");
    c.args(["--endpoint", &aws.moto, "--bucket", bucket, "--out"])
        .arg(aws.dir.path().join("objects").join(bucket));
    support::run_put_objects(c, &spec)
}

/// Runs fixtures.py against the harness's moto (`args` after `--endpoint`).
fn fixtures(aws: &Aws, args: &[&str]) {
    let (o, _, stderr) = run({
        let mut c = aws.script("fixtures.py");
        c.args(["--endpoint", &aws.moto]).args(args);
        c
    });
    assert!(o.status.success(), "fixtures.py: {stderr}");
}

/// Writes a profile `name` to the harness HOME's ~/.aws/config whose credential_process is
/// aws_credential_process.py (numbered by `counter`; `extra`: more of its flags).
fn credential_process_profile(aws: &Aws, name: &str, counter: &std::path::Path, extra: &str) {
    let aws_dir = aws.home().join(".aws");
    std::fs::create_dir_all(&aws_dir).unwrap();
    let config = aws_dir.join("config");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str(&format!(
        "[profile {name}]\ncredential_process = {} {} --counter {} {extra}\n",
        support::venv().join("bin/python").display(),
        support::repo()
            .join("scripts/harness/aws_credential_process.py")
            .display(),
        counter.display()
    ));
    std::fs::write(config, text).unwrap();
}

fn with_keys(mut c: std::process::Command) -> std::process::Command {
    c.arg(format!("AWS_ACCESS_KEY_ID={KEY_ID}"))
        .arg(format!("AWS_SECRET_ACCESS_KEY={SECRET}"));
    c
}

/// `env` takes NAME=VALUE before the program: build the tool's command with them.
fn tool_with(aws: &Aws, vars: &[(&str, &str)]) -> std::process::Command {
    let mut c = aws.command("env");
    for (k, v) in vars {
        c.arg(format!("{k}={v}"));
    }
    c.arg(assert_cmd::cargo::cargo_bin("s3invbackup"));
    c
}

fn keys_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ]
}

#[test]
fn boto3_agrees_with_the_harness() {
    let aws = Aws::start(json!({
        "far-away": {"region": "eu-west-1"},
        "payer": {"region": "us-west-2", "requester_pays": true},
    }));
    seed(
        &aws,
        "far-away",
        json!([{"key": "a b/c.txt", "size": 1000}]),
    );
    seed(&aws, "payer", json!([{"key": "k", "size": 10}]));
    let check = |bucket: &str, more: &[&str]| {
        let mut c = with_keys(aws.command("env"));
        c.arg(support::venv().join("bin/python"))
            .arg(support::repo().join("scripts/harness/aws_check_boto3.py"))
            .args(["--bucket", bucket, "--key"])
            .args(more);
        let (out, stdout, stderr) = run(c);
        assert!(out.status.success(), "boto3 disagrees: {stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let seen = check("far-away", &["a b/c.txt"]);
    assert_eq!(seen["bytes"], 1000);
    assert_eq!(seen["bucket_region"], "eu-west-1");
    assert!(seen["checksum_crc32"].is_string(), "{seen}");
    let seen = check("payer", &["k", "--requester-pays"]);
    assert_eq!(seen["without_payer"], "AccessDenied");
    assert_eq!(seen["bytes"], 10);
    // botocore reads a profile's credential_process, and the harness takes its tokens.
    credential_process_profile(&aws, "proc", &aws.dir.path().join("counter"), "");
    let (out, stdout, stderr) = run({
        let mut c = aws.command(support::venv().join("bin/python"));
        c.arg(support::repo().join("scripts/harness/aws_check_boto3.py"))
            .args([
                "--bucket",
                "far-away",
                "--key",
                "a b/c.txt",
                "--profile",
                "proc",
            ]);
        c
    });
    assert!(
        out.status.success(),
        "boto3 with credential_process: {stderr}"
    );
    let seen: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(seen["credential_method"], "custom-process");
    assert_eq!(seen["bytes"], 1000);
    // The front refused botocore's first, wrong-region request and accepted its signed retry:
    // its SigV4 check agrees with botocore's signer.
    let reqs = aws.requests();
    assert!(reqs.iter().any(|r| r.3 == 400), "{reqs:?}");
    assert!(reqs.iter().any(|r| r.3 == 200));
}

#[test]
fn a_bucket_in_another_region_is_found_with_one_request() {
    let aws = Aws::start(json!({"dandiarchive": {"region": "us-east-2", "public": true}}));
    let objects = seed(
        &aws,
        "dandiarchive",
        json!([{"key": "zarr/0/0", "size": 300}, {"key": "big.nwb", "size": 3_000_000}]),
    );
    for hint in [None, Some("us-west-2")] {
        aws.clear_requests();
        let out = aws.dir.path().join("out");
        let mut c = match hint {
            Some(h) => tool_with(&aws, &[("AWS_REGION", h)]),
            None => aws.tool(),
        };
        c.args([
            "--no-sign-request",
            "get",
            "s3://dandiarchive/big.nwb",
            "-o",
        ])
        .arg(&out)
        .args(["--part-size", "1MiB"]);
        let (o, _, stderr) = run(c);
        assert!(o.status.success(), "{stderr}");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(objects[1]["file"].as_str().unwrap()).unwrap()
        );
        let reqs = aws.requests();
        let discovery: Vec<_> = reqs
            .iter()
            .filter(|r| r.0 == "HEAD" && r.2 == "/dandiarchive")
            .collect();
        assert_eq!(discovery.len(), 1, "{reqs:?}");
        // Every request after it went to the bucket's own region, virtual-hosted.
        for r in reqs.iter().filter(|r| r.2 != "/dandiarchive") {
            assert_eq!(r.1, "dandiarchive.s3.us-east-2.amazonaws.com", "{r:?}");
            assert!(r.3 < 300, "{r:?}");
        }
        // Ranged GETs (3 MB in 1 MiB ranges) are pinned to the version with If-Match: the
        // harness would answer 412 otherwise; all answered 206.
        assert!(
            reqs.iter().filter(|r| r.0 == "GET").count() >= 3,
            "{reqs:?}"
        );
    }
    // Dual-stack endpoints when asked, for the lookup and the requests alike.
    aws.clear_requests();
    let (o, _, stderr) = run({
        let mut c = tool_with(&aws, &[("AWS_USE_DUALSTACK_ENDPOINT", "true")]);
        c.args([
            "--no-sign-request",
            "get",
            "s3://dandiarchive/zarr/0/0",
            "-o",
        ])
        .arg(aws.dir.path().join("o1"));
        c
    });
    assert!(o.status.success(), "{stderr}");
    let reqs = aws.requests();
    assert!(reqs.iter().all(|r| r.1.contains(".dualstack.")), "{reqs:?}");
    assert!(
        reqs.iter()
            .any(|r| r.1 == "dandiarchive.s3.dualstack.us-east-2.amazonaws.com")
    );
    // An explicit --region wins: a wrong one is refused, naming the bucket's region.
    let mut c = aws.tool();
    c.args([
        "--no-sign-request",
        "--region",
        "eu-west-1",
        "get",
        "s3://dandiarchive/zarr/0/0",
        "-o",
    ])
    .arg(aws.dir.path().join("o2"));
    let (o, _, stderr) = run(c);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("PermanentRedirect") && stderr.contains("--region"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_secret_stops_the_run_at_once_and_names_the_fix() {
    let aws = Aws::start(json!({
        "src": {"region": "us-east-2"},
        "inv": {"region": "eu-west-1"},
    }));
    fixtures(
        &aws,
        &[
            "--bucket",
            "src",
            "--inventory-bucket",
            "inv",
            "--inventory-prefix",
            "inv/src/all",
            "--files",
            "2",
        ],
    );
    let backup = aws.dir.path().join("backup");
    // First, with the right keys: the whole backup, the two buckets in two regions.
    let (o, _, stderr) = run({
        let mut c = tool_with(&aws, &keys_env());
        c.args(["sync", "s3://inv/inv/src/all/"]).arg(&backup);
        c
    });
    assert!(o.status.success(), "{stderr}");
    let discovery = aws
        .requests()
        .iter()
        .filter(|r| r.0 == "HEAD" && (r.2 == "/src" || r.2 == "/inv"))
        .count();
    assert_eq!(discovery, 2, "one region lookup per bucket");
    let (o, _, stderr) = run({
        let mut c = tool_with(&aws, &keys_env());
        c.args(["fsck", "--verify-content"]).arg(&backup);
        c
    });
    assert!(o.status.success(), "{stderr}");

    // A wrong secret with a session token: stops at the first refusal, names the cause and
    // the fix, and never prints a secret, a token or a signature.
    let token = "FwoGZXIvYXdzEXAMPLETOKEN";
    for (key, secret, code) in [
        (KEY_ID, "not-the-secret", "SignatureDoesNotMatch"),
        ("AKIDUNKNOWN", SECRET, "InvalidAccessKeyId"),
    ] {
        aws.clear_requests();
        let report = aws.dir.path().join(format!("report-{code}.json"));
        let (o, stdout, stderr) = run({
            let mut c = tool_with(
                &aws,
                &[
                    ("AWS_ACCESS_KEY_ID", key),
                    ("AWS_SECRET_ACCESS_KEY", secret),
                    ("AWS_SESSION_TOKEN", token),
                ],
            );
            c.args(["-v", "sync", "s3://inv/inv/src/all/"])
                .arg(&backup)
                .arg("--report")
                .arg(&report);
            c
        });
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(code), "{stderr}");
        assert!(stderr.contains("check AWS_"), "{stderr}");
        let report = std::fs::read_to_string(&report).unwrap_or_default();
        for text in [&stdout, &stderr, &report] {
            assert!(!text.contains("X-Amz-"), "{text}");
            assert!(!text.contains(secret) && !text.contains(token), "{text}");
            assert!(!text.contains("Signature="), "{text}");
        }
        assert!(aws.requests().len() < 5, "{:?}", aws.requests());
    }
}

#[test]
fn temporary_credentials_are_renewed_when_s3_says_they_expired() {
    let mut aws = Aws::start(json!({"private": {"region": "eu-west-1"}}));
    seed(&aws, "private", json!([{"key": "k", "size": 100}]));
    let counter = aws.dir.path().join("counter");
    credential_process_profile(&aws, "nightly", &counter, "");
    // The first token the process hands out is already revoked on the server's side.
    aws.set("expired_below", json!(2));
    let (o, _, stderr) = run({
        let mut c = aws.tool();
        c.args(["-v", "--profile", "nightly", "get", "s3://private/k", "-o"])
            .arg(aws.dir.path().join("k"));
        c
    });
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("CredentialProcess"), "{stderr}");
    assert!(stderr.contains("credentials renewed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "2");
    // Renewal that gives nothing newer is a clear stop (exit 1), not a per-version failure.
    aws.set("expired_below", json!(1000));
    let (o, _, stderr) = run({
        let mut c = aws.tool();
        c.args(["--profile", "nightly", "get", "s3://private/k", "-o"])
            .arg(aws.dir.path().join("k2"));
        c
    });
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ExpiredToken"), "{stderr}");
}

#[test]
fn clock_skew_and_slowdown_bursts_are_ridden_out() {
    let mut aws = Aws::start(json!({"bkt": {"region": "us-east-2"}}));
    seed(&aws, "bkt", json!([{"key": "k", "size": 100}]));
    aws.set("clock_skew_s", json!(3600));
    let (o, _, stderr) = run({
        let mut c = tool_with(&aws, &keys_env());
        c.args(["get", "s3://bkt/k", "-o"])
            .arg(aws.dir.path().join("k"));
        c
    });
    assert!(o.status.success(), "{stderr}");
    // An hour, give or take: the Date header has whole seconds, and the request took time.
    let offset: i64 = stderr
        .split("S3's clock is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!((3597..=3601).contains(&offset), "{stderr}");
    aws.set("clock_skew_s", json!(0));
    aws.set("slowdown", json!(4));
    aws.set("retry_after", json!(1));
    aws.clear_requests();
    let started = std::time::Instant::now();
    let (o, _, stderr) = run({
        let mut c = tool_with(&aws, &keys_env());
        c.args(["get", "s3://bkt/k", "-o"])
            .arg(aws.dir.path().join("k2"));
        c
    });
    assert!(o.status.success(), "{stderr}");
    let slowdowns = aws.requests().iter().filter(|r| r.3 == 503).count();
    assert_eq!(slowdowns, 4);
    // Retry-After: 1 was honoured each time.
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
}

#[test]
fn kms_archived_and_checksummed_objects() {
    let aws = Aws::start(json!({"bkt": {"region": "us-east-2", "kms_prefix": "kms/"}}));
    seed(
        &aws,
        "bkt",
        json!([
            {"key": "kms/no-checksum", "size": 100, "no_checksum": true},
            {"key": "kms/with-checksum", "size": 100},
            {"key": "plain/no-checksum", "size": 100, "no_checksum": true},
            {"key": "cold", "size": 100, "storage_class": "GLACIER"},
        ]),
    );
    let get = |key: &str| {
        run({
            let mut c = tool_with(&aws, &keys_env());
            c.args(["get", &format!("s3://bkt/{key}"), "-o"])
                .arg(aws.dir.path().join("out"));
            c
        })
    };
    // SSE-KMS by the response's header: its ETag is not an MD5; S3's checksum or the size.
    let (o, _, stderr) = get("kms/no-checksum");
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("size only"), "{stderr}");
    let (o, _, stderr) = get("kms/with-checksum");
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("CRC32 checksum matches"), "{stderr}");
    let (o, _, stderr) = get("plain/no-checksum");
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("MD5 matches the ETag"), "{stderr}");
    let (o, _, stderr) = get("cold");
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("archived"), "{stderr}");
}

#[test]
fn a_long_run_of_denials_stops_the_run_and_it_resumes_with_credentials() {
    let aws = Aws::start(json!({
        "closed": {"region": "us-east-2"},
        "open": {"region": "us-east-2", "public": true},
    }));
    fixtures(
        &aws,
        &[
            "--bucket",
            "closed",
            "--inventory-bucket",
            "open",
            "--inventory-prefix",
            "inv",
            "--scenario",
            "random",
            "--keys",
            "300",
            "--days",
            "1",
            "--files",
            "1",
        ],
    );
    let backup = aws.dir.path().join("backup");
    let (o, _, stderr) = run({
        let mut c = aws.tool();
        c.args(["--no-sign-request", "sync", "s3://open/inv/", "--jobs", "4"])
            .arg(&backup);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("50 downloads in a row were denied"),
        "{stderr}"
    );
    assert!(stderr.contains("--no-sign-request"), "{stderr}");
    let gets = aws
        .requests()
        .iter()
        .filter(|r| r.1.starts_with("closed.") && r.0 == "GET")
        .count();
    assert!((50..=60).contains(&gets), "{gets} GETs");
    // The run stopped part-way and resumes, with credentials, to a verified backup.
    let (o, _, stderr) = run({
        let mut c = tool_with(&aws, &keys_env());
        c.args(["sync", "s3://open/inv/"]).arg(&backup);
        c
    });
    assert!(o.status.success(), "{stderr}");
    let (o, _, stderr) = run({
        let mut c = aws.tool();
        c.args(["fsck", "--verify-content"]).arg(&backup);
        c
    });
    assert!(o.status.success(), "{stderr}");
}

/// A backup records how each file was verified: S3's checksum for SSE-KMS files (their ETag
/// is no MD5), so that `fsck --verify-content` checks them offline the same way; the part
/// size of a multipart upload.
#[test]
fn verification_is_recorded_and_fsck_repeats_it_offline() {
    let aws = Aws::start(json!({
        "src": {"region": "us-east-2", "kms_prefix": "deep/"},
        "inv": {"region": "us-east-2"},
    }));
    fixtures(
        &aws,
        &[
            "--bucket",
            "src",
            "--inventory-bucket",
            "inv",
            "--inventory-prefix",
            "inv",
            "--files",
            "1",
        ],
    );
    let backup = aws.dir.path().join("backup");
    let tool = |args: &[&str]| {
        run({
            let mut c = tool_with(&aws, &keys_env());
            c.args(args);
            c
        })
    };
    let b = backup.to_str().unwrap();
    let (o, _, stderr) = tool(&["sync", "s3://inv/inv/", b]);
    assert!(o.status.success(), "{stderr}");
    let (o, stdout, stderr) = tool(&["locate", b, "deep/a/b/c/d/e/f/g.txt"]);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("verified: CRC32"), "{stdout}");
    // fixtures.py uploads parts without a checksum: the multipart ETag (and its part size
    // is recorded, so fsck below needs no guessing).
    let (_, stdout, _) = tool(&["locate", b, "big/multipart.bin"]);
    assert!(stdout.contains("verified: multipart ETag"), "{stdout}");
    // Offline: every file checked by what its fetch used (nothing by size only).
    let (o, stdout, stderr) = tool(&["fsck", "--verify-content", b]);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains(" 0 checkable by size only"), "{stdout}");
    // A flipped byte in the SSE-KMS file is found by its recorded checksum.
    let file = backup.join("deep/a/b/c/d/e/f/g.txt");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 1;
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (o, stdout, stderr) = tool(&["fsck", "--verify-content", b]);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        (stdout.clone() + &stderr).contains("CRC32") && (stdout + &stderr).contains("g.txt"),
        "{stderr}"
    );
}

/// A current-versions-only inventory (no VersionId column): GETs name no version and carry
/// `If-Match` with the listed ETag, so a key overwritten since the inventory answers 412 and
/// is reported as changed (fetched on a later date), never stored as the listed version.
#[test]
fn a_current_only_inventory_fetches_the_listed_object_or_nothing() {
    let aws = Aws::start(json!({
        "src": {"region": "us-east-2"},
        "inv": {"region": "us-east-2"},
    }));
    fixtures(
        &aws,
        &[
            "--bucket",
            "src",
            "--inventory-bucket",
            "inv",
            "--inventory-prefix",
            "inv",
            "--files",
            "1",
            "--current-only",
        ],
    );
    // After the last inventory was written, a.txt is overwritten.
    seed(
        &aws,
        "src",
        json!([{"key": "a.txt", "size": 77, "seed": 99}]),
    );
    aws.clear_requests();
    let backup = aws.dir.path().join("backup");
    let (o, _, stderr) = run({
        let mut c = tool_with(&aws, &keys_env());
        c.args(["sync", "s3://inv/inv/"]).arg(&backup);
        c
    });
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a.txt") && stderr.contains("changed since the inventory"),
        "{stderr}"
    );
    assert!(!backup.join("a.txt").exists());
    assert!(backup.join("x").exists());
    // No GET named a version; a.txt's was refused with 412.
    let reqs = aws.requests();
    assert!(
        reqs.iter()
            .filter(|r| r.0 == "GET")
            .all(|r| !r.2.contains("versionId"))
    );
    assert!(
        reqs.iter().any(|r| r.2 == "/a.txt" && r.3 == 412),
        "{reqs:?}"
    );
}

/// The README's dandiarchive commands, as written (paths aside), against a dandiarchive
/// bucket in us-east-2 that holds its own inventory, as the real one does.
#[test]
fn the_readme_dandiarchive_examples_work_as_written() {
    let aws = Aws::start(json!({"dandiarchive": {"region": "us-east-2", "public": true}}));
    fixtures(
        &aws,
        &[
            "--bucket",
            "dandiarchive",
            "--inventory-bucket",
            "dandiarchive",
            "--inventory-prefix",
            "dandiarchive/dandiarchive",
            "--files",
            "2",
            "--start-date",
            "2024-11-12T01:00:00",
        ],
    );
    let inv = "s3://dandiarchive/dandiarchive/dandiarchive/";
    let tmp = aws.dir.path();
    let backup = tmp.join("dandi-backup");
    let b = backup.to_str().unwrap();
    let tool = |args: &[&str]| {
        let (o, stdout, stderr) = run({
            let mut c = aws.tool();
            c.args(args);
            c
        });
        assert!(o.status.success(), "{args:?}: {stderr}");
        stdout
    };
    let dates = tool(&["dates", inv, "--no-sign-request"]);
    assert!(dates.contains("2024-11-12T01-00Z  complete"), "{dates}");
    let report = tmp.join("report.json");
    tool(&[
        "sync",
        inv,
        b,
        "--no-sign-request",
        "--name-stem",
        "dandi-s3-backup",
        "--jobs",
        "32",
    ]);
    tool(&[
        "sync",
        inv,
        b,
        "--no-sign-request",
        "--report",
        report.to_str().unwrap(),
    ]);
    let index = tmp.join("2024-11-12.s3inv");
    tool(&[
        "index",
        inv,
        "--date",
        "2024-11-12",
        "-o",
        index.to_str().unwrap(),
        "--memory",
        "4GiB",
        "--tmp-dir",
        tmp.to_str().unwrap(),
        "--no-sign-request",
    ]);
    assert!(tool(&["dump", index.to_str().unwrap()]).contains("a.txt"));
    let diff = tool(&[
        "diff",
        &format!("{inv}@2024-11-12"),
        &format!("{inv}@2024-11-13"),
        "--no-sign-request",
        "--cache-dir",
        tmp.join("cache").to_str().unwrap(),
    ]);
    assert!(diff.contains("added"), "{diff}");
}

/// Short-lived credentials are renewed before they run out (half-way through their life
/// when that is sooner than five minutes before): S3 never has to say ExpiredToken.
#[test]
fn temporary_credentials_are_renewed_before_they_expire() {
    let mut aws = Aws::start(json!({"private": {"region": "eu-west-1"}}));
    seed(&aws, "private", json!([{"key": "k", "size": 100}]));
    let counter = aws.dir.path().join("counter");
    credential_process_profile(&aws, "short", &counter, "--minutes 0.1");
    // Four SlowDowns, each asking for 2 s: the GET is sent at about 0, 2, 4, 6 and 8 s.
    aws.set("slowdown", json!(4));
    aws.set("retry_after", json!(2));
    let (o, _, stderr) = run({
        let mut c = aws.tool();
        c.args([
            "-v",
            "--profile",
            "short",
            "--region",
            "eu-west-1",
            "get",
            "s3://private/k",
            "-o",
        ])
        .arg(aws.dir.path().join("k"));
        c
    });
    assert!(o.status.success(), "{stderr}");
    let renewals: u32 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(renewals >= 2, "{renewals}: {stderr}");
    let statuses: Vec<u16> = aws.requests().iter().map(|r| r.3).collect();
    assert!(
        !statuses.contains(&400),
        "S3 had to say ExpiredToken: {statuses:?}"
    );
}
