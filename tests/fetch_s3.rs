//! The fetcher and `get` against SeaweedFS: every kind of object comes back byte for byte
//! with its mtime, faults in the middle of bodies are survived, corrupt bytes never reach the
//! destination, and missing or forbidden versions are told apart.

mod support;

use std::path::Path;
use std::time::UNIX_EPOCH;

use support::*;

fn get(url: &str, version: &str, out: &Path) -> assert_cmd::assert::Assert {
    cli()
        .arg("get")
        .arg(url)
        .args(["--version-id", version, "-o"])
        .arg(out)
        .args(["--part-size", "1MiB"])
        .assert()
}

fn mtime(p: &Path) -> f64 {
    std::fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn every_kind_of_object_round_trips() {
    use_server();
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!([
        {"key": "pre versioning.bin", "size": 3000, "null": true},
        {"key": "small.txt", "size": 1500},
        {"key": "empty", "size": 0},
        {"key": "exactly-two-ranges.bin", "size": 2 * 1024 * 1024},
        {"key": "spaces and+plus%percent/ünïcødé 日本.bin", "size": 777},
        {"key": "multipart/even.bin", "size": 15 * 1024 * 1024, "parts": [5 * 1024 * 1024, 5 * 1024 * 1024, 5 * 1024 * 1024]},
        {"key": "multipart/uneven.bin", "size": 12 * 1024 * 1024 + 5, "parts": [6 * 1024 * 1024, 6 * 1024 * 1024, 5]},
        {"key": "multipart/odd-sizes.bin", "size": 16 * 1024 * 1024, "parts": [5 * 1024 * 1024, 6 * 1024 * 1024, 5 * 1024 * 1024]},
        {"key": "multipart/one-part.bin", "size": 100, "parts": [100]}
    ]);
    let objects = put_objects("fetch-kinds", spec, &dir.path().join("src"));
    for o in &objects {
        let out = dir.path().join("out");
        let url = format!("s3://fetch-kinds/{}", o.key);
        let assert = get(&url, &o.version_id, &out).success();
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&o.file).unwrap(),
            "{}",
            o.key
        );
        assert!(
            (mtime(&out) - o.last_modified).abs() < 0.001,
            "{}: mtime {} vs {}",
            o.key,
            mtime(&out),
            o.last_modified
        );
        // S3's additional checksum is preferred to the ETag (it is cheaper, and holds under
        // SSE-KMS); without one, the ETag. What boto3 reads decides which.
        let expected = match (&o.checksum, o.etag.contains('-')) {
            (Some(alg), _) => format!("S3's {alg} checksum matches"),
            (None, true) => "multipart ETag matches".to_string(),
            (None, false) => "MD5 matches the ETag".to_string(),
        };
        assert!(stderr.contains(&expected), "{}: {stderr}", o.key);
        std::fs::remove_file(&out).unwrap();
    }
    assert_eq!(objects[0].version_id, "null");
}

#[test]
fn missing_and_forbidden_versions_are_classified() {
    use_server();
    let dir = tempfile::tempdir().unwrap();
    let objects = put_objects(
        "fetch-errors",
        serde_json::json!([{"key": "k", "size": 10}]),
        &dir.path().join("src"),
    );
    let out = dir.path().join("out");
    get("s3://fetch-errors/k", "no-such-version-id", &out)
        .code(1)
        .stderr(predicates::str::contains("not found"));
    get("s3://fetch-errors/absent", &objects[0].version_id, &out)
        .code(1)
        .stderr(predicates::str::contains("not found"));
    if !support::server_checks_signatures() {
        return;
    }
    cli()
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .arg("get")
        .arg("s3://fetch-errors/k")
        .arg("-o")
        .arg(&out)
        .assert()
        .code(1)
        .stderr(
            predicates::str::contains("SignatureDoesNotMatch")
                .and(predicates::str::contains("403"))
                .and(predicates::str::contains("check AWS_SECRET_ACCESS_KEY")),
        );
    assert!(!out.exists());
    assert!(
        listing(dir.path())
            .iter()
            .all(|n| !n.starts_with(".s3invbackup-get")),
        "{:?}",
        listing(dir.path())
    );
}

#[test]
fn faults_mid_body_are_resumed_and_corruption_never_lands() {
    use_server();
    let proxy = proxy();
    let dir = tempfile::tempdir().unwrap();
    let objects = put_objects(
        "fetch-faults",
        serde_json::json!([
            {"key": "single.bin", "size": 3 * 1024 * 1024 + 17},
            {"key": "multi.bin", "size": 12 * 1024 * 1024, "parts": [5 * 1024 * 1024, 5 * 1024 * 1024, 2 * 1024 * 1024]}
        ]),
        &dir.path().join("src"),
    );
    let through_proxy = || {
        let mut c = cli();
        c.env("AWS_ENDPOINT_URL", &proxy.endpoint);
        c
    };
    let fetch = |o: &Uploaded, out: &Path| {
        through_proxy()
            .arg("get")
            .arg(format!("s3://fetch-faults/{}", o.key))
            .args(["--version-id", &o.version_id, "-o"])
            .arg(out)
            .args(["--part-size", "1MiB"])
            .assert()
    };
    for o in &objects {
        for fault in ["reset", "truncate"] {
            proxy.set_rules(serde_json::json!([{"method": "GET", "path": "fetch-faults", "fault": fault, "after": 100_000, "times": 3}]));
            let out = dir.path().join(format!("{}-{fault}", o.key));
            fetch(o, &out).success();
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(&o.file).unwrap(),
                "{} after {fault}",
                o.key
            );
            assert_eq!(proxy.hits()["0"], 3, "the {fault} faults fired");
        }
        // A link that stalls mid-body (no byte for 30 s): the read timeout drops it and
        // the transfer resumes from its last byte, long before the stall would end.
        proxy.set_rules(serde_json::json!([{"method": "GET", "path": "fetch-faults", "fault": "stall", "after": 100_000, "delay_ms": 30_000, "times": 2}]));
        let out = dir.path().join(format!("{}-stall", o.key));
        let started = std::time::Instant::now();
        through_proxy()
            .arg("get")
            .arg(format!("s3://fetch-faults/{}", o.key))
            .args(["--version-id", &o.version_id, "-o"])
            .arg(&out)
            .args(["--part-size", "1MiB", "--read-timeout", "1"])
            .assert()
            .success();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(25),
            "{}: the stalled transfer was waited out ({:?}), not resumed",
            o.key,
            started.elapsed()
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&o.file).unwrap(),
            "{} after stalls",
            o.key
        );
        assert_eq!(proxy.hits()["0"], 2, "the stalls happened");

        proxy.set_rules(serde_json::json!([
            {"method": "GET", "path": "fetch-faults", "fault": "status", "status": 503, "code": "SlowDown", "times": 2},
            {"method": "GET", "path": "fetch-faults", "fault": "status", "status": 500, "code": "InternalError", "times": 2}
        ]));
        let out = dir.path().join(format!("{}-5xx", o.key));
        fetch(o, &out).success();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&o.file).unwrap()
        );

        // One flipped byte: caught, fetched again, right in the end.
        proxy.set_rules(serde_json::json!([{"method": "GET", "path": "fetch-faults", "fault": "flip", "after": 1000, "times": 1}]));
        let out = dir.path().join(format!("{}-flip-once", o.key));
        fetch(o, &out).success();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&o.file).unwrap()
        );

        // Flipped every time: a failure, and nothing at the destination.
        proxy.set_rules(serde_json::json!([{"method": "GET", "path": "fetch-faults", "fault": "flip", "after": 1000}]));
        let out = dir.path().join(format!("{}-flip-always", o.key));
        fetch(o, &out)
            .code(1)
            .stderr(predicates::str::contains("verification failed"));
        assert!(!out.exists());
    }
    proxy.set_rules(serde_json::json!([]));
    assert!(
        listing(dir.path())
            .iter()
            .all(|n| !n.starts_with(".s3invbackup-get")),
        "{:?}",
        listing(dir.path())
    );
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn one_gib_object_in_parallel_ranges() {
    use_server();
    let dir = tempfile::tempdir().unwrap();
    let mib = 1024 * 1024;
    // The server keeps both objects and the output lands beside them: ~3 GiB on the one
    // disk. A CI machine has run out of space here, so on a small disk the same test runs on
    // 128 MiB objects (still 16 parts, still ranged), and says so.
    let part = if free_bytes(dir.path()) >= 8 * 1024 * mib {
        64 * mib
    } else {
        eprintln!(
            "one_gib_object_in_parallel_ranges: under 8 GiB free at {}, testing 128 MiB objects",
            dir.path().display()
        );
        8 * mib
    };
    let parts: Vec<u64> = std::iter::repeat_n(part, 16).collect();
    let objects = put_objects(
        "fetch-gib",
        serde_json::json!([
            {"key": "one-gib-multipart.bin", "size": 16 * part, "parts": parts, "no_file": true},
            {"key": "one-gib-single.bin", "size": 16 * part, "no_file": true}
        ]),
        &dir.path().join("src"),
    );
    for o in &objects {
        let out = dir.path().join("out");
        cli()
            .arg("get")
            .arg(format!("s3://fetch-gib/{}", o.key))
            .args(["--version-id", &o.version_id, "-o"])
            .arg(&out)
            .args(["--part-size", &format!("{}MiB", part / mib), "--jobs", "8"])
            .assert()
            .success();
        assert_eq!(md5_file(&out), o.md5, "{}", o.key);
        std::fs::remove_file(&out).unwrap();
    }
}

/// Bytes free to an unprivileged writer on the filesystem holding `p`.
fn free_bytes(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", p.display());
    st.f_bavail as u64 * st.f_frsize as u64
}

fn md5_file(p: &Path) -> String {
    use md5::Digest as _;
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = md5::Md5::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A multipart object's parts are asked for by number, all at once, with no HEAD before
/// them (over a long link that HEAD was a round trip per object): the parts land where each
/// answer's Content-Range puts them, whatever their sizes, and the ETag checks them. A server
/// that ignores part GETs (moto) gets the HEAD plan after its first answer.
#[test]
fn multipart_parts_are_fetched_by_number_without_a_head() {
    use_server();
    let dir = tempfile::tempdir().unwrap();
    let objects = put_objects(
        "fetch-by-part",
        serde_json::json!([
            {"key": "odd-sizes.bin", "size": 16 * 1024 * 1024 + 3, "parts": [5 * 1024 * 1024, 6 * 1024 * 1024, 5 * 1024 * 1024 + 3]}
        ]),
        &dir.path().join("src"),
    );
    let o = &objects[0];
    let out = dir.path().join("out");
    let assert = cli()
        .env("RUST_LOG", "warn,s3invbackup::requests=trace")
        .arg("get")
        .arg(format!("s3://fetch-by-part/{}", o.key))
        .args(["--version-id", &o.version_id, "-o"])
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&o.file).unwrap()
    );
    let requests: Vec<&str> = stderr.lines().filter(|l| l.contains("request: ")).collect();
    let heads: Vec<&&str> = requests.iter().filter(|l| l.contains("HEAD ")).collect();
    if server_kind() == "moto" && heads.len() > 1 {
        // moto has been seen to answer a part GET with the whole object (some runs, some
        // versions): then the object is planned by HEADs after the first answer, as before
        // part GETs (one HEAD per part: they are uneven). Where it answers with the part,
        // the checks below hold as on SeaweedFS.
        assert_eq!(heads.len(), 5, "{requests:#?}");
        assert!(stderr.contains("multipart ETag matches"), "{stderr}");
        return;
    }
    // `get` knows nothing of the object but its name: one HEAD learns its size and ETag.
    assert_eq!(heads.len(), 1, "{requests:#?}");
    assert!(!heads[0].contains("partNumber"), "{requests:#?}");
    for n in 1..=3 {
        assert!(
            requests
                .iter()
                .any(|l| l.contains("GET ") && l.contains(&format!("partNumber={n}&"))),
            "part {n} by number: {requests:#?}"
        );
    }
    assert!(stderr.contains("multipart ETag matches"), "{stderr}");
}
