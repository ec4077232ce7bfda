//! `dates`, `index` and `dump` against inventories written by the boto3 fixture generator
//! into a real S3 server (SeaweedFS on loopback) and into a local copy: both sources give
//! byte-identical indexes, and the index holds exactly what ListObjectVersions returned.

mod support;

use s3invbackup::index::IndexReader;
use support::*;

fn dump_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = cli()
        .arg("dump")
        .arg(path)
        .args(["--format", "jsonl"])
        .assert()
        .success();
    String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The fields both the model (boto3's listing; delete markers have null size and ETag) and
/// `dump --format jsonl` have, in comparable form.
fn version_fields(v: &serde_json::Value) -> (String, String, bool, bool, u64, String, String) {
    (
        v["key"].as_str().unwrap().to_string(),
        v["version_id"].as_str().unwrap().to_string(),
        v["is_latest"].as_bool().unwrap(),
        v["is_delete_marker"].as_bool().unwrap(),
        v["size"].as_u64().unwrap_or(0),
        v["last_modified"].as_str().unwrap().to_string(),
        v["etag"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn s3_and_local_sources_agree_and_match_the_model() {
    use_server();
    let fx = fixture("basic-agree", &["--files", "3"]);
    let dates = fx.model.as_object().unwrap();
    assert_eq!(dates.len(), 3);

    let dates_of = |inventory: &dyn AsRef<std::ffi::OsStr>| {
        cli()
            .arg("dates")
            .arg(inventory)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    let local_dates = dates_of(&fx.local);
    let s3_dates = dates_of(&fx.s3_url);
    assert_eq!(local_dates, s3_dates);
    for date in dates.keys() {
        assert!(String::from_utf8_lossy(&local_dates).contains(&format!("{date}  complete")));
    }

    let dir = tempfile::tempdir().unwrap();
    for (date, versions) in dates {
        let local_idx = dir.path().join(format!("{date}.local"));
        let s3_idx = dir.path().join(format!("{date}.s3"));
        for (inventory, out) in [
            (fx.local.display().to_string(), &local_idx),
            (fx.s3_url.clone(), &s3_idx),
        ] {
            cli()
                .arg("index")
                .arg(&inventory)
                .args(["--date", date, "-o"])
                .arg(out)
                .assert()
                .success();
        }
        assert_eq!(
            std::fs::read(&local_idx).unwrap(),
            std::fs::read(&s3_idx).unwrap(),
            "{date}: sources differ"
        );
        assert_eq!(IndexReader::open(&s3_idx).unwrap().meta().date, *date);

        // The oracle: what boto3's ListObjectVersions returned, independent of our parser.
        let mut expected: Vec<_> = versions
            .as_array()
            .unwrap()
            .iter()
            .map(version_fields)
            .collect();
        let dumped = dump_jsonl(&s3_idx);
        assert!(
            dumped
                .iter()
                .all(|v| v["size"].is_u64() && v["etag"].is_string())
        );
        let mut actual: Vec<_> = dumped.iter().map(version_fields).collect();
        expected.sort();
        actual.sort();
        assert_eq!(actual, expected, "{date}");
    }

    // The scenario's landmarks, spelled out.
    let last = dump_jsonl(&dir.path().join("2024-11-03T01-00Z.s3"));
    let keys: Vec<&str> = last.iter().map(|v| v["key"].as_str().unwrap()).collect();
    for k in [
        "with space/and+plus.txt",
        "percent%25/equals=sign&amp.txt",
        "unicode/ünïcødé-日本.txt",
        "x/y",
        "folder/",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let pre = last
        .iter()
        .find(|v| v["key"] == "pre-versioning.txt")
        .unwrap();
    assert_eq!(pre["version_id"], "null");
    let big = last
        .iter()
        .find(|v| v["key"] == "big/multipart.bin")
        .unwrap();
    assert_eq!(big["is_multipart"], true);
    assert!(big["etag"].as_str().unwrap().ends_with("-2"));
    assert_eq!(keys.iter().filter(|k| **k == "a.txt").count(), 3);
    assert_eq!(
        keys.iter().filter(|k| **k == "to-expire.txt").count(),
        1,
        "expired version still listed"
    );
}

#[test]
fn shuffled_inventory_from_s3_uses_the_external_sort() {
    use_server();
    let fx = fixture(
        "shuffled",
        &[
            "--files",
            "4",
            "--shuffle",
            "--scenario",
            "random",
            "--keys",
            "120",
            "--days",
            "2",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let date = fx
        .model
        .as_object()
        .unwrap()
        .keys()
        .next_back()
        .unwrap()
        .clone();
    let s3_idx = dir.path().join("s3");
    let local_idx = dir.path().join("local");
    cli()
        .arg("index")
        .arg(&fx.s3_url)
        .args(["--date", &date, "--memory", "64KiB", "-o"])
        .arg(&s3_idx)
        .assert()
        .success()
        .stderr(predicates::str::contains("external sort"));
    cli()
        .arg("index")
        .arg(&fx.local)
        .args(["--date", &date, "-o"])
        .arg(&local_idx)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(&local_idx).unwrap(),
        std::fs::read(&s3_idx).unwrap()
    );
    let n = fx.model[&date].as_array().unwrap().len() as u64;
    assert_eq!(IndexReader::open(&s3_idx).unwrap().stats().records, n);
}

#[test]
fn wrong_secret_is_a_clear_403() {
    use_server();
    if !support::server_checks_signatures() {
        return;
    }
    let fx = fixture("wrong-secret", &["--files", "1"]);
    cli()
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .arg("dates")
        .arg(&fx.s3_url)
        .assert()
        .failure()
        .code(1)
        .stderr(predicates::str::contains("HTTP 403"));
}

#[test]
fn profile_credentials_are_used() {
    use_server();
    let fx = fixture("profile", &["--files", "1"]);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!("[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[backup]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    let run = || {
        let mut c = cli();
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("HOME", home.path());
        c
    };
    run()
        .env("AWS_PROFILE", "backup")
        .arg("dates")
        .arg(&fx.s3_url)
        .assert()
        .success()
        .stdout(predicates::str::contains("complete"));
    if support::server_checks_signatures() {
        run()
            .arg("dates")
            .arg(&fx.s3_url)
            .assert()
            .failure()
            .stderr(predicates::str::contains("403"));
    }
    run()
        .env("AWS_PROFILE", "missing")
        .arg("dates")
        .arg(&fx.s3_url)
        .assert()
        .failure()
        .stderr(predicates::str::contains("profile \"missing\" not found"));
}

#[test]
fn dump_into_a_closed_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = s3invbackup::inventory::synth::SynthSpec {
        rows: 50_000,
        files: 2,
        shuffle: false,
        seed: 1,
        source_bucket: "b".into(),
        date: "2024-11-06T01-00Z".into(),
    };
    let rows = s3invbackup::inventory::synth::generate(&spec);
    s3invbackup::inventory::synth::write_inventory(dir.path(), &spec, &rows).unwrap();
    let idx = dir.path().join("x.idx");
    cli()
        .arg("index")
        .arg(dir.path())
        .args(["--date", "2024-11-06", "-o"])
        .arg(&idx)
        .assert()
        .success();
    let bin = assert_cmd::cargo::cargo_bin("s3invbackup");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' dump '{}' | head -n 2 >/dev/null",
            bin.display(),
            idx.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "dump | head failed: {status}");
}

/// A transfer that damages bytes without breaking the connection (the proxy flips one byte)
/// is caught by the manifest's checksum or the data file's MD5, and the file is read again:
/// the index comes out identical to the one built from the local copy. A file that never
/// arrives intact is an MD5 mismatch after three attempts, and no index is left behind.
#[test]
fn damaged_inventory_transfers_are_read_again() {
    use_server();
    let fx = fixture("flipped-transfer", &["--files", "2", "--days", "1"]);
    let date = fx.model.as_object().unwrap().keys().next().unwrap().clone();
    let tmp = tempfile::tempdir().unwrap();
    let local_idx = tmp.path().join("local.s3inv");
    cli()
        .arg("index")
        .arg(&fx.local)
        .args(["--date", &date, "-o"])
        .arg(&local_idx)
        .assert()
        .success();
    let proxy = proxy();
    let data = "/inventories/inv/flipped-transfer/all-versions/data/";
    let manifest = "/inventories/inv/flipped-transfer/all-versions/.*/manifest.json";
    proxy.set_rules(serde_json::json!([
        {"method": "GET", "path": manifest, "fault": "flip", "after": 10, "times": 1},
        // A flipped byte early in the gzip stream breaks the decoder before the end of the
        // file: the error must still be blamed on the transfer, not the inventory.
        {"method": "GET", "path": data, "fault": "flip", "after": 20, "times": 2},
    ]));
    let index_through_proxy = |out: &std::path::Path| {
        cli()
            .env("AWS_ENDPOINT_URL", &proxy.endpoint)
            .arg("index")
            .arg(&fx.s3_url)
            .args(["--date", &date, "-o"])
            .arg(out)
            .assert()
    };
    let s3_idx = tmp.path().join("s3.s3inv");
    index_through_proxy(&s3_idx)
        .success()
        .stderr(predicates::str::contains("MD5 mismatch"));
    let hits = proxy.hits();
    assert_eq!((hits["0"].as_u64(), hits["1"].as_u64()), (Some(1), Some(2)));
    assert_eq!(
        std::fs::read(&local_idx).unwrap(),
        std::fs::read(&s3_idx).unwrap()
    );

    proxy.set_rules(serde_json::json!([
        {"method": "GET", "path": data, "fault": "flip", "after": 20},
    ]));
    let never = tmp.path().join("never.s3inv");
    index_through_proxy(&never)
        .code(1)
        .stderr(predicates::str::contains("MD5 mismatch: expected"))
        .stderr(predicates::str::contains("attempt 2 of 3"));
    proxy.set_rules(serde_json::json!([]));
    assert!(!never.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".s3invbackup"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The same damage met by a sync, whose plan reads the data files straight (no index): the
/// walk starts again and the backup is the one a local copy gives; a file that never
/// arrives intact stops the run with the MD5 mismatch and leaves no backup behind.
#[test]
fn a_sync_reads_a_damaged_inventory_transfer_again() {
    use_server();
    let fx = fixture("flipped-sync", &["--files", "2", "--days", "1"]);
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let code = cli()
        .arg("sync")
        .arg(&fx.local)
        .arg(&local)
        .args(["--progress", "none", "--on-bad-key", "skip"])
        .output()
        .unwrap()
        .status
        .code();
    assert!(matches!(code, Some(0 | 2)), "{code:?}");
    let proxy = proxy();
    let data = "/inventories/inv/flipped-sync/all-versions/data/";
    proxy.set_rules(serde_json::json!([
        // Not the first-row peeks (Range GETs): the full reads the plan streams.
        {"method": "GET", "path": data, "ranged": false, "fault": "flip", "after": 20, "times": 1},
    ]));
    let via_proxy = tmp.path().join("via-proxy");
    let out = cli()
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .arg("sync")
        .arg(&fx.s3_url)
        .arg(&via_proxy)
        .args(["--progress", "none", "--on-bad-key", "skip"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{err}");
    assert!(
        err.contains("MD5 mismatch") && err.contains("reading the inventory again"),
        "{err}"
    );
    let files = |root: &std::path::Path| -> Vec<(String, u64)> {
        let mut v: Vec<_> = support::backup_model::snapshot(root)
            .into_iter()
            .filter(|(p, ..)| !p.starts_with(".s3invbackup"))
            .map(|(p, size, ..)| (p, size))
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(&via_proxy), files(&local));
    cli().arg("fsck").arg(&via_proxy).assert().code(0);

    proxy.set_rules(serde_json::json!([
        {"method": "GET", "path": data, "ranged": false, "fault": "flip", "after": 20},
    ]));
    let never = tmp.path().join("never");
    cli()
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .arg("sync")
        .arg(&fx.s3_url)
        .arg(&never)
        .args(["--progress", "none", "--on-bad-key", "skip"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("MD5 mismatch: expected"));
    proxy.set_rules(serde_json::json!([]));
    assert!(!never.exists(), "a refused first sync left a backup behind");
}

/// A backup that has applied a date lists the inventory from that date on, in one request,
/// however many earlier folders there are; what it finds after it (a newer date, one still
/// being delivered, a folder that is not a date) is what the whole listing finds.
#[test]
fn a_sync_lists_the_inventory_from_its_last_applied_date() {
    use_server();
    let fx = fixture("list-from-last", &["--days", "3"]);
    let dates = fx.dates();
    assert!(dates.len() >= 3, "{dates:?}");
    // Years of earlier reports (one in 2019), a folder after the last date with only its
    // manifest (still being delivered), and one shaped like a date that is not one.
    let prefix = fx
        .s3_url
        .trim_start_matches("s3://inventories/")
        .to_string();
    let put = std::process::Command::new(venv().join("bin/python"))
        .args([
            "-c",
            r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="testkey",
                  aws_secret_access_key="testsecret", region_name="us-east-1")
p, first = sys.argv[2], sys.argv[3]
for n in ("manifest.json", "manifest.checksum"):
    body = s3.get_object(Bucket="inventories", Key=f"{p}{first}/{n}")["Body"].read()
    s3.put_object(Bucket="inventories", Key=f"{p}2019-03-01T01-00Z/{n}", Body=body)
s3.put_object(Bucket="inventories", Key=f"{p}2030-01-01T01-00Z/manifest.json", Body=b"{}")
s3.put_object(Bucket="inventories", Key=f"{p}2029-13-01T01-00Z/manifest.json", Body=b"{}")
"#,
        ])
        .arg(&server().endpoint)
        .arg(&prefix)
        .arg(&dates[0])
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    // The fixture holds a version that cannot be fetched (exit 2: the rest is backed up).
    let fine = |a: &assert_cmd::assert::Assert| matches!(a.get_output().status.code(), Some(0 | 2));
    let first = cli()
        .args(["sync", &fx.s3_url])
        .arg(&backup)
        .args(["--end-date", &dates[1], "--progress", "none"])
        .assert();
    assert!(fine(&first), "{first:?}");
    let night = cli()
        .env("RUST_LOG", "warn,s3invbackup::requests=trace")
        .args(["sync", &fx.s3_url])
        .arg(&backup)
        .args(["--progress", "none"])
        .assert();
    assert!(fine(&night), "{night:?}");
    let stderr = String::from_utf8_lossy(&night.get_output().stderr).into_owned();
    let listings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("request: GET s3://inventories/?list-type=2"))
        .collect();
    assert_eq!(listings.len(), 1, "{listings:#?}");
    assert!(
        listings[0].contains(&format!("start-after={prefix}{}", dates[1])),
        "{listings:#?}"
    );
    assert!(
        stderr.contains("2030-01-01T01-00Z is not complete yet"),
        "{stderr}"
    );
    assert!(stderr.contains("\"2029-13-01T01-00Z\""), "{stderr}");
    assert_eq!(applied_dates(&backup), dates[1..]);
    // The whole listing (`dates`) still sees every folder, the one from 2019 first.
    let all = cli().args(["dates", &fx.s3_url]).assert().success();
    let all = String::from_utf8_lossy(&all.get_output().stdout).into_owned();
    assert!(all.starts_with("2019-03-01T01-00Z"), "{all}");
    assert!(all.contains(&dates[0]), "{all}");
}
