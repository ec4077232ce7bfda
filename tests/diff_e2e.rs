//! `diff` end to end: three simulated days of a real (SeaweedFS) bucket with uploads,
//! overwrites, deletes, an undelete and an expiration. The changes reported between two
//! dates are exactly those a naive comparison of boto3's listings gives, in all formats,
//! whether the dates are read from S3 or from the local copy.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::*;

type ChangeSet = BTreeSet<(String, String, String)>;

/// The oracle: compares two listings from the fixture model by (key, version id).
fn naive_changes(old: &serde_json::Value, new: &serde_json::Value) -> ChangeSet {
    let index = |v: &serde_json::Value| -> BTreeMap<(String, String), serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    (
                        r["key"].as_str().unwrap().to_string(),
                        r["version_id"].as_str().unwrap().to_string(),
                    ),
                    r.clone(),
                )
            })
            .collect()
    };
    let (a, b) = (index(old), index(new));
    let mut out = ChangeSet::new();
    for (id, r) in &b {
        let entry = |kind: &str| (kind.to_string(), id.0.clone(), id.1.clone());
        match a.get(id) {
            None if r["is_delete_marker"].as_bool().unwrap() => {
                out.insert(entry("added-delete-marker"))
            }
            None => out.insert(entry("added")),
            Some(o) if o["is_latest"] == true && r["is_latest"] == false => {
                out.insert(entry("now-noncurrent"))
            }
            Some(o) if o["is_latest"] == false && r["is_latest"] == true => {
                out.insert(entry("now-current"))
            }
            Some(_) => false,
        };
    }
    for id in a.keys().filter(|id| !b.contains_key(*id)) {
        out.insert(("removed".into(), id.0.clone(), id.1.clone()));
    }
    out
}

fn jsonl_changes(stdout: &[u8]) -> ChangeSet {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["change"].as_str().unwrap().to_string(),
                v["key"].as_str().unwrap().to_string(),
                v["version_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn csv_changes(stdout: &[u8]) -> ChangeSet {
    let mut r = csv::Reader::from_reader(stdout);
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[0].to_string(), rec[1].to_string(), rec[2].to_string())
        })
        .collect()
}

fn diff(cache: &std::path::Path, a: &str, b: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    cli()
        .arg("diff")
        .arg(a)
        .arg(b)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--progress", "none"])
        .args(extra)
        .assert()
}

#[test]
fn diff_reports_exactly_the_scenarios_changes() {
    use_server();
    let fx = fixture("diff-basic", &["--files", "2"]);
    let cache = tempfile::tempdir().unwrap();
    let dates = fx.dates();
    let local = fx.local_arg();
    for pair in dates.windows(2) {
        let (d1, d2) = (&pair[0], &pair[1]);
        let expected = naive_changes(&fx.model[d1], &fx.model[d2]);
        assert!(!expected.is_empty());

        let from_s3 = diff(
            cache.path(),
            &format!("{}@{d1}", fx.s3_url),
            &format!("{}@{d2}", fx.s3_url),
            &["--format", "jsonl"],
        )
        .success();
        assert_eq!(
            jsonl_changes(&from_s3.get_output().stdout),
            expected,
            "{d1} -> {d2} (s3)"
        );
        let from_local = diff(
            cache.path(),
            &format!("{local}@{d1}"),
            &format!("{local}@{d2}"),
            &["--format", "jsonl"],
        )
        .success();
        assert_eq!(
            from_local.get_output().stdout,
            from_s3.get_output().stdout,
            "s3 and local disagree"
        );
        let csv = diff(
            cache.path(),
            &format!("{local}@{d1}"),
            &format!("{local}@{d2}"),
            &["--format", "csv"],
        )
        .success();
        assert_eq!(csv_changes(&csv.get_output().stdout), expected);

        let summary = diff(
            cache.path(),
            &format!("{local}@{d1}"),
            &format!("{local}@{d2}"),
            &[],
        )
        .success();
        let text = String::from_utf8_lossy(&summary.get_output().stdout).into_owned();
        for kind in [
            "added",
            "added-delete-marker",
            "now-noncurrent",
            "now-current",
            "removed",
        ] {
            let n = expected.iter().filter(|c| c.0 == kind).count();
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(kind))
                .unwrap();
            assert_eq!(
                line.split_whitespace().nth(1).unwrap(),
                n.to_string(),
                "{kind} in:\n{text}"
            );
        }
        let total = text.lines().find(|l| l.starts_with("total")).unwrap();
        assert_eq!(
            total.split_whitespace().nth(1).unwrap(),
            expected.len().to_string(),
            "{text}"
        );
    }

    // Landmarks of day 2 -> day 3, spelled out.
    let d = diff(
        cache.path(),
        &format!("{local}@{}", dates[1]),
        &format!("{local}@{}", dates[2]),
        &["--format", "jsonl"],
    )
    .success();
    let changes = jsonl_changes(&d.get_output().stdout);
    let kinds_of = |key: &str| -> Vec<String> {
        changes
            .iter()
            .filter(|c| c.1 == key)
            .map(|c| c.0.clone())
            .collect()
    };
    let mut b = kinds_of("dir/b.txt");
    b.sort();
    assert_eq!(
        b,
        ["now-current", "removed"],
        "undelete: the marker is gone, v1 is current again"
    );
    assert_eq!(
        kinds_of("to-expire.txt"),
        ["removed"],
        "expiration of the noncurrent version"
    );
    let mut x = kinds_of("x");
    x.sort();
    assert_eq!(x, ["added-delete-marker", "now-noncurrent"]);
    assert_eq!(kinds_of("x/y"), ["added"]);
    let mut a = kinds_of("a.txt");
    a.sort();
    assert_eq!(a, ["added", "now-noncurrent"]);
}

#[test]
fn filters_exit_codes_and_index_files() {
    use_server();
    let fx = fixture("diff-filters", &["--files", "1"]);
    let cache = tempfile::tempdir().unwrap();
    let dates = fx.dates();
    let local = fx.local_arg();
    let (a, b) = (
        format!("{local}@{}", dates[0]),
        format!("{local}@{}", dates[2]),
    );
    let all = jsonl_changes(
        &diff(cache.path(), &a, &b, &["--format", "jsonl"])
            .success()
            .get_output()
            .stdout,
    );

    let x_only = jsonl_changes(
        &diff(
            cache.path(),
            &a,
            &b,
            &["--format", "jsonl", "--prefix", "x"],
        )
        .success()
        .get_output()
        .stdout,
    );
    let expected: ChangeSet = all
        .iter()
        .filter(|c| c.1.starts_with('x'))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(x_only, expected);

    let txt = jsonl_changes(
        &diff(
            cache.path(),
            &a,
            &b,
            &["--format", "jsonl", "--path-filter", r"\.txt$"],
        )
        .success()
        .get_output()
        .stdout,
    );
    let expected: ChangeSet = all
        .iter()
        .filter(|c| c.1.ends_with(".txt"))
        .cloned()
        .collect();
    assert_eq!(txt, expected);

    // Cached indexes are plain index files and can be named directly.
    let cached: Vec<_> = walk(cache.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "s3inv"))
        .collect();
    assert_eq!(cached.len(), 2, "{cached:?}");
    let same = cached
        .iter()
        .find(|p| p.to_string_lossy().contains(&dates[0]))
        .unwrap()
        .display()
        .to_string();
    diff(cache.path(), &same, &a, &["--exit-code"]).code(0);
    diff(cache.path(), &a, &b, &["--exit-code"]).code(1);
    diff(cache.path(), &a, &b, &[]).code(0);
    diff(
        cache.path(),
        &a,
        &format!("{local}@2030-01-01"),
        &["--exit-code"],
    )
    .code(2)
    .stderr(predicates::str::contains(
        "no complete inventory for 2030-01-01",
    ));
    diff(cache.path(), &a, "no-such-file", &[])
        .code(1)
        .stderr(predicates::str::contains(
            "neither an index file nor INVENTORY@DATE",
        ));
    diff(cache.path(), &a, &b, &["--path-filter", "("])
        .code(1)
        .stderr(predicates::str::contains("bad --path-filter"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// A backup as side A is what its last applied date listed: `diff BACKUP INVENTORY@NEXT`
/// gives exactly the oracle's changes, the same bytes as `diff INVENTORY@LAST
/// INVENTORY@NEXT` — also over a catalog of a base and deltas, whose versions gone from the
/// bucket are held but no longer listed.
#[test]
fn diff_against_a_backup_is_diff_against_its_last_date() {
    use_server();
    // The sync scenario: versions expire (held by the backup, gone from the bucket).
    let fx = fixture("diff-backup", &["--scenario", "sync"]);
    let cache = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let dates = fx.dates();
    let local = fx.local_arg();
    for pair in dates.windows(2) {
        let (d1, d2) = (&pair[0], &pair[1]);
        let code = cli()
            .arg("sync")
            .arg(&local)
            .arg(&backup)
            .args([
                "--progress",
                "none",
                "--end-date",
                d1,
                "--on-bad-key",
                "skip",
            ])
            .env("S3INVBACKUP_NO_COMPACTION", "1")
            .output()
            .unwrap()
            .status
            .code();
        assert!(matches!(code, Some(0 | 2)), "sync to {d1}: {code:?}");
        let from_backup = diff(
            cache.path(),
            backup.to_str().unwrap(),
            &format!("{local}@{d2}"),
            &["--format", "jsonl"],
        )
        .success();
        assert_eq!(
            jsonl_changes(&from_backup.get_output().stdout),
            naive_changes(&fx.model[d1], &fx.model[d2]),
            "backup at {d1} -> {d2}"
        );
        let from_dates = diff(
            cache.path(),
            &format!("{local}@{d1}"),
            &format!("{local}@{d2}"),
            &["--format", "jsonl"],
        )
        .success();
        assert_eq!(
            from_backup.get_output().stdout,
            from_dates.get_output().stdout
        );
        let summary = diff(
            cache.path(),
            backup.to_str().unwrap(),
            &format!("{local}@{d2}"),
            &[],
        )
        .success();
        let text = String::from_utf8_lossy(&summary.get_output().stdout).into_owned();
        assert!(text.contains(&format!("(as of {d1})")), "{text}");
    }
}
