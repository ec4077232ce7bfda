//! `sync` end to end on SeaweedFS: five generated dates covering every transition of the
//! layout, each backed up while the bucket is in that date's state, the tree checked after
//! every date against the independent model in `support/backup_model.rs`.

mod support;

use std::path::{Path, PathBuf};

use support::backup_model::{Model, differences, snapshot};
use support::{applied_dates, cli, fixture, fixture_stepper, hold_lock, use_server};

const STEM: &str = "s3invbackup";
const BAD_KEYS: [&str; 2] = [
    "bad/.s3invbackup-versions.json",
    "bad/file.old.v1.0123456789abcdef0123456789abcdef",
];

thread_local! {
    /// This test's syncs leave the catalog uncompacted (a base and one delta per date).
    static NO_COMPACTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The CLI, with compaction off where the test asked for it.
fn sync_cli() -> assert_cmd::Command {
    let mut cmd = cli();
    if NO_COMPACTION.get() {
        cmd.env("S3INVBACKUP_NO_COMPACTION", "1");
    }
    cmd
}

fn sync(inventory: &str, backup: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    sync_cli()
        .arg("sync")
        .arg(inventory)
        .arg(backup)
        .args(["--progress", "none", "--jobs", "8"])
        .args(extra)
        .assert()
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn assert_tree(backup: &Path, model: &Model, when: &str) {
    let problems = differences(backup, STEM, &model.expected());
    assert!(
        problems.is_empty(),
        "after {when}: the tree differs from the model:\n  {}",
        problems.join("\n  ")
    );
}

/// The tree without the state directory (whose lock file changes on every run); the top
/// directory's `.<stem>-versions.json` is part of the tree.
fn tree_snapshot(backup: &Path) -> Vec<(String, u64, i64, u64)> {
    snapshot(backup)
        .into_iter()
        .filter(|(p, ..)| *p != format!(".{STEM}") && !p.starts_with(&format!(".{STEM}/")))
        .collect()
}

#[test]
fn every_date_matches_the_model() {
    every_date_matches_the_model_with("sync-e2e", false);
}

/// The same over a catalog that is a base and a delta per date (compaction off): the tree,
/// the versions JSON, fsck and restore at every moment must be the same.
#[cfg(feature = "failpoints")]
#[test]
fn every_date_matches_the_model_over_uncompacted_deltas() {
    every_date_matches_the_model_with("sync-e2e-deltas", true);
}

fn every_date_matches_the_model_with(fixture: &str, no_compaction: bool) {
    NO_COMPACTION.set(no_compaction);
    use_server();
    let mut generator = fixture_stepper(fixture, &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let report_path = tmp.path().join("report.json");
    let mut model = Model::new(STEM, &BAD_KEYS);
    let mut moments = Vec::new();
    let mut planned_json = 0;
    let mut day = 0;
    while let Some(date) = generator.next_date() {
        day += 1;
        let inventory = if day % 2 == 0 {
            generator.s3_url.clone()
        } else {
            generator.local.display().to_string()
        };
        if day == 1 {
            // Bad keys stop the first run: listed, and the directory left as it was.
            let out = sync(&inventory, &backup, &[]).code(1);
            let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
            for k in BAD_KEYS {
                assert!(stderr.contains(k), "{k} not listed in: {stderr}");
            }
            assert!(
                !backup.exists(),
                "a refused first run left {backup:?} behind"
            );
        }
        if day == 3 && cfg!(feature = "failpoints") {
            // Killed (as by kill -9) right after the 2nd journal entry, then resumed.
            sync_cli()
                .arg("sync")
                .arg(&inventory)
                .arg(&backup)
                .args(["--progress", "none", "--on-bad-key", "skip"])
                .env("S3INVBACKUP_CRASH_AFTER", "2")
                .assert()
                .failure();
            assert!(
                std::fs::read_dir(backup.join(format!(".{STEM}/runs")))
                    .unwrap()
                    .next()
                    .is_some(),
                "the killed run left no run directory to resume"
            );
        }
        // The bad keys come on day 1; later days run with the default `--on-bad-key stop`,
        // which only stops for bad keys no earlier run recorded as skipped.
        let on_bad_key = if day == 1 { "skip" } else { "stop" };
        sync(
            &inventory,
            &backup,
            &[
                "--on-bad-key",
                on_bad_key,
                "--report",
                report_path.to_str().unwrap(),
            ],
        )
        .code(0);
        let rows = generator.model()[&date].as_array().unwrap().clone();
        model.apply(&rows, |_| true);
        assert_tree(&backup, &model, &date);
        // restore at this moment (the bucket is paused in this date's state) gives exactly
        // the bucket's current files, byte for byte, with their mtimes.
        let paused_at = std::time::Instant::now();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let restored = tmp.path().join(format!("restored-{day}"));
        cli()
            .args(["restore", "--progress", "none"])
            .arg(&backup)
            .args(["--at", &now])
            .arg(&restored)
            .assert()
            .code(2); // the two skipped keys
        let want: Vec<(String, i64, Option<String>)> = model
            .expected()
            .files
            .into_iter()
            .filter(|(path, f)| *path == f.id.key)
            .map(|(path, f)| (path, f.mtime_ms, f.body_md5))
            .collect();
        let got: Vec<(String, i64, Option<String>)> = content_snapshot(&restored)
            .into_iter()
            .map(|(p, _, mtime, md5)| (p, mtime, Some(md5)))
            .collect();
        assert_eq!(got, want, "restore at {now} (date {date})");
        moments.push((date.clone(), want));
        let r = report(&report_path);
        assert_eq!(r["dates"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r["dates"][0]["plan"]["date"], date.as_str());
        assert_eq!(
            r["dates"][0]["plan"]["bad_keys"].as_array().unwrap().len(),
            2
        );
        if day == 3 {
            assert_eq!(r["resumed"], date.as_str(), "{r}");
        }
        // The changed directories' versions JSON (checked against the model above) came
        // from the plan's own records, except where a fetch failed.
        let outcome = &r["dates"][0]["outcome"];
        planned_json += outcome["versions_files_planned"].as_u64().unwrap();
        assert!(
            outcome["versions_files_planned"].as_u64() <= outcome["versions_files"].as_u64(),
            "{outcome}"
        );
        // LastModified has one-second resolution: the next date's first write must come a
        // whole second after `now`, or restoring at `now` later could not tell them apart.
        std::thread::sleep(
            std::time::Duration::from_millis(1100).saturating_sub(paused_at.elapsed()),
        );
        generator.go_on();
    }
    assert_eq!(day, 5);
    assert!(planned_json > 0, "no versions JSON came from the plan");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(backup.join(format!(".{STEM}/catalog/manifest.json"))).unwrap(),
    )
    .unwrap();
    let deltas = manifest["deltas"].as_array().unwrap().len();
    if no_compaction {
        assert_eq!(deltas, 5, "one delta per date: {manifest}");
    }

    // The final backup restores the bucket as it was at each date: versions replaced or
    // deleted since are still held, and come back for their date; versions and delete
    // markers later deleted from the bucket count until the first date that no longer
    // listed them. (The fixture stamps its dates in 2024, before the LastModified of what
    // they list: so the moments are the dates', where the inventories decide.)
    for (i, (date, want)) in moments.iter().enumerate() {
        let at = &support::date_moment(date);
        let restored = tmp.path().join(format!("restored-from-final-{i}"));
        cli()
            .args(["restore", "--progress", "none"])
            .arg(&backup)
            .args(["--at", at])
            .arg(&restored)
            .assert()
            .code(2);
        let got: Vec<(String, i64, Option<String>)> = content_snapshot(&restored)
            .into_iter()
            .map(|(p, _, mtime, md5)| (p, mtime, Some(md5)))
            .collect();
        assert!(want.len() > 10, "too few keys to compare: {want:?}");
        assert_eq!(
            &got, want,
            "restore from the final backup at {at} (date {date})"
        );
    }

    // No new date: nothing fetched, nothing changed.
    let before = tree_snapshot(&backup);
    let inventory = generator.local.display().to_string();
    sync(
        &inventory,
        &backup,
        &[
            "--on-bad-key",
            "skip",
            "--report",
            report_path.to_str().unwrap(),
        ],
    )
    .code(0);
    let r = report(&report_path);
    assert!(r["dates"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(tree_snapshot(&backup), before);

    // State: five dates applied, in order.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join(format!(".{STEM}/state.json"))).unwrap())
            .unwrap();
    let applied: Vec<&str> = state["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["date"].as_str().unwrap())
        .collect();
    assert_eq!(applied.len(), 5);
    assert!(applied.windows(2).all(|w| w[0] < w[1]));
    // locate finds every version where the model says it is; --at a time after the last
    // date gives the current file; status reports the five dates.
    for (id, path) in model.locations() {
        let out = cli()
            .args(["locate"])
            .arg(&backup)
            .arg(&id.key)
            .args(["--version-id", &id.version_id])
            .assert()
            .code(0);
        let printed = String::from_utf8_lossy(&out.get_output().stdout)
            .trim()
            .to_string();
        assert_eq!(printed, backup.join(path).display().to_string(), "{id:?}");
        if path == &id.key {
            let out = cli()
                .args(["locate"])
                .arg(&backup)
                .arg(&id.key)
                .args(["--at", "2100-01-01T00:00:00+01:00"])
                .assert()
                .code(0);
            let printed = String::from_utf8_lossy(&out.get_output().stdout)
                .trim()
                .to_string();
            assert_eq!(
                printed,
                backup.join(path).display().to_string(),
                "{id:?} --at"
            );
        }
    }
    let listing = cli()
        .args(["locate"])
        .arg(&backup)
        .args(["a.txt", "--json"])
        .assert()
        .code(0);
    let lines = String::from_utf8_lossy(&listing.get_output().stdout).into_owned();
    assert_eq!(lines.lines().count(), 4, "a.txt has four versions: {lines}");
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.contains("\"status\":\"current\""))
            .count(),
        1
    );
    cli()
        .args(["locate"])
        .arg(&backup)
        .arg("no/such/key")
        .assert()
        .code(1);
    let status = cli()
        .args(["status", "--json"])
        .arg(&backup)
        .assert()
        .code(0);
    let status: serde_json::Value = serde_json::from_slice(&status.get_output().stdout).unwrap();
    assert_eq!(status["applied"].as_array().unwrap().len(), 5);
    assert_eq!(status["not_held"], 0);
    assert!(status["pending_runs"].as_array().unwrap().is_empty());

    // restore after the last date gives the bucket as it is now: every current file, hard
    // linked (same inode), nothing else; --link copy with a prefix gives copies of that part;
    // a time before every version gives nothing.
    let current: Vec<(&String, &support::backup_model::Id)> = model
        .locations()
        .iter()
        .filter(|(id, path)| **path == id.key)
        .map(|(id, path)| (path, id))
        .collect();
    let restored = tmp.path().join("restored");
    let restore_report = tmp.path().join("restore.json");
    cli()
        .args(["restore", "--progress", "none", "--report"])
        .arg(&restore_report)
        .arg(&backup)
        .args(["--at", "2100-01-01"])
        .arg(&restored)
        .assert()
        .code(2); // the two skipped keys are in the bucket but not in the backup
    let r = report(&restore_report);
    let mut not_held: Vec<&str> = r["not_held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    not_held.sort();
    assert_eq!(not_held, BAD_KEYS);
    let files = content_snapshot(&restored);
    let want: Vec<&str> = current.iter().map(|(p, _)| p.as_str()).collect();
    let got: Vec<&str> = files.iter().map(|(p, ..)| p.as_str()).collect();
    assert_eq!(got, want);
    for (path, id) in &current {
        use std::os::unix::fs::MetadataExt;
        let a = std::fs::metadata(restored.join(path)).unwrap();
        let b = std::fs::metadata(backup.join(path)).unwrap();
        assert_eq!(a.ino(), b.ino(), "{id:?} is not a hard link");
    }
    assert!(
        restored.join("nested/deep").is_dir(),
        "folder marker not restored"
    );
    let copied = tmp.path().join("copied");
    cli()
        .args([
            "restore",
            "--progress",
            "none",
            "--link",
            "copy",
            "--prefix",
            "zarr/",
        ])
        .arg(&backup)
        .args(["--at", "2100-01-01T00:00:00Z"])
        .arg(&copied)
        .assert()
        .code(0);
    let copies = content_snapshot(&copied);
    let linked: Vec<_> = files
        .iter()
        .filter(|(p, ..)| p.starts_with("zarr/"))
        .cloned()
        .collect();
    assert!(!copies.is_empty());
    assert_eq!(copies, linked, "copies differ in bytes or mtime");
    let empty = tmp.path().join("empty");
    cli()
        .args(["restore", "--progress", "none"])
        .arg(&backup)
        .args(["--at", "2000-01-01"])
        .arg(&empty)
        .assert()
        .code(0);
    assert!(content_snapshot(&empty).is_empty());
    // Into a non-empty directory or into the backup: refused.
    cli()
        .args(["restore"])
        .arg(&backup)
        .args(["--at", "2100-01-01"])
        .arg(&copied)
        .assert()
        .code(1);
    cli()
        .args(["restore"])
        .arg(&backup)
        .args(["--at", "2100-01-01"])
        .arg(backup.join("inside"))
        .assert()
        .code(1);

    // The first command line again changes nothing; going backwards is refused.
    sync(
        &inventory,
        &backup,
        &["--start-date", applied[0], "--on-bad-key", "skip"],
    )
    .code(0);
    assert_eq!(tree_snapshot(&backup), before);
    let out = sync(&inventory, &backup, &["--start-date", applied[1]]).code(1);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("only goes forward"));
}

/// All five dates generated first, then applied in one run: versions deleted from the
/// bucket before the backup saw them cannot be fetched; they are reported (exit 2), kept as
/// missing in the catalog, and the rest of the tree is still exactly the model.
#[test]
fn unfetchable_versions_are_reported_and_the_rest_is_backed_up() {
    use_server();
    let fx = fixture("sync-late", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let report_path = tmp.path().join("report.json");
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let last = &fx.model[dates.last().unwrap()];
    let in_bucket: std::collections::HashSet<(String, String)> = last
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["version_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let out = sync(
        &inventory,
        &backup,
        &[
            "--start-date",
            &dates[0],
            "--on-bad-key",
            "skip",
            "--report",
            report_path.to_str().unwrap(),
        ],
    )
    .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("could not be fetched"), "{stderr}");
    let mut model = Model::new(STEM, &BAD_KEYS);
    for date in &dates {
        model.apply(fx.model[date].as_array().unwrap(), |r| {
            in_bucket.contains(&(r.id.key.clone(), r.id.version_id.clone()))
        });
    }
    assert_tree(&backup, &model, "one run over all dates");
    let r = report(&report_path);
    assert_eq!(r["dates"].as_array().unwrap().len(), 5);
    // The report lists each failed fetch under its date.
    assert!(r["dates"].as_array().unwrap().iter().any(|d| {
        d["outcome"]["failures"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    }));

    // They left the bucket before they were backed up: said once, in the run that lost
    // them, then "vanished": never retried, and no reason for the next run to exit 2.
    assert!(
        stderr.contains("deleted from the bucket before they were backed up"),
        "{stderr}"
    );
    let before = tree_snapshot(&backup);
    sync(&inventory, &backup, &["--on-bad-key", "skip"]).code(0);
    assert_eq!(tree_snapshot(&backup), before);
    let status: serde_json::Value = serde_json::from_slice(
        &cli()
            .args(["status", "--json"])
            .arg(&backup)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(status["vanished"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["not_held"], 0, "{status}");
}

fn set_mtime(path: impl AsRef<Path>, t: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// (path, size, mtime, content MD5) of every file of the tree, state directory excluded.
/// Versions JSON files are compared by content only (they are written at run time).
fn content_snapshot(backup: &Path) -> Vec<(String, u64, i64, String)> {
    let versions_file = format!(".{STEM}-versions.json");
    tree_snapshot(backup)
        .into_iter()
        .filter(|(p, ..)| backup.join(p).is_file())
        .map(|(p, size, mtime, _)| {
            let mtime = if p.ends_with(&versions_file) {
                0
            } else {
                mtime
            };
            let md5 = support::md5_hex(&std::fs::read(backup.join(&p)).unwrap());
            (p, size, mtime, md5)
        })
        .collect()
}

/// A run killed (abort, as kill -9) after the N-th journal entry, for N spread over every
/// phase of a five-date run (moves, placements, versions JSON, commit), then resumed, ends
/// with the tree and state of an uninterrupted run.
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn killed_runs_resume_to_the_uninterrupted_tree() {
    use_server();
    let fx = fixture("sync-crash", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let first = fx.dates()[0].clone();
    let args = ["--start-date", first.as_str(), "--on-bad-key", "skip"];
    let reference = tmp.path().join("reference");
    let report_path = tmp.path().join("reference.json");
    let mut with_report = args.to_vec();
    with_report.extend(["--report", report_path.to_str().unwrap()]);
    sync(&inventory, &reference, &with_report).code(2);
    let want = content_snapshot(&reference);
    let want_dates = applied_dates(&reference);
    // Journal entries of the uninterrupted run: one per change, two per commit.
    let total: u64 = report(&report_path)["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let o = &d["outcome"];
            ["renamed", "downloaded", "reused_from_staging", "displaced"]
                .iter()
                .map(|k| o[k].as_u64().unwrap())
                .sum::<u64>()
                + d["plan"]["mkdirs"].as_u64().unwrap()
                + 2
        })
        .sum();
    let points: std::collections::BTreeSet<u64> =
        (0..14).map(|i| 1 + i * (total - 1) / 13).collect();
    let mut crashed = 0;
    for &n in &points {
        let backup = tmp.path().join(format!("crash-{n}"));
        let out = cli()
            .arg("sync")
            .arg(&inventory)
            .arg(&backup)
            .args(["--progress", "none"])
            .args(args)
            .env("S3INVBACKUP_CRASH_AFTER", n.to_string())
            .output()
            .unwrap();
        if out.status.code().is_none() {
            crashed += 1;
            // A second crash in the resumed run, at its first entry, must not hurt either.
            cli()
                .arg("sync")
                .arg(&inventory)
                .arg(&backup)
                .args(["--progress", "none"])
                .args(args)
                .env("S3INVBACKUP_CRASH_AFTER", "1")
                .output()
                .unwrap();
            let resumed = cli()
                .arg("sync")
                .arg(&inventory)
                .arg(&backup)
                .args(["--progress", "none", "--on-bad-key", "skip"])
                .output()
                .unwrap();
            assert!(
                matches!(resumed.status.code(), Some(0 | 2)),
                "resume after a crash at entry {n} failed: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
        }
        assert_eq!(
            content_snapshot(&backup),
            want,
            "crash at journal entry {n}"
        );
        assert_eq!(
            applied_dates(&backup),
            want_dates,
            "crash at journal entry {n}"
        );
    }
    assert_eq!(crashed, points.len(), "crash points {points:?} of {total}");
}

/// --dry-run lists what a run would do and touches nothing, for a new backup and an
/// existing one.
#[test]
fn dry_run_changes_nothing() {
    use_server();
    let fx = fixture("sync-dry", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let report_path = tmp.path().join("dry.json");
    let out = sync(
        &inventory,
        &backup,
        &[
            "--start-date",
            &dates[0],
            "--end-date",
            &dates[1],
            "--on-bad-key",
            "skip",
            "--dry-run",
            "--report",
            report_path.to_str().unwrap(),
        ],
    )
    .code(0);
    assert!(!backup.exists(), "a dry run created the backup");
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let dry = report(&report_path);
    let planned_fetches: u64 = dry["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["plan"]["fetches"].as_u64().unwrap())
        .sum();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("fetch ")).count() as u64,
        planned_fetches
    );
    assert!(stdout.contains("rename   a.txt -> a.txt.old."), "{stdout}");

    // The real run does what the dry run said.
    let real_path = tmp.path().join("real.json");
    sync(
        &inventory,
        &backup,
        &[
            "--start-date",
            &dates[0],
            "--end-date",
            &dates[1],
            "--on-bad-key",
            "skip",
            "--report",
            real_path.to_str().unwrap(),
        ],
    );
    let mut real = report(&real_path);
    // The first date's plan is the same; later ones differ only by the versions that
    // turned out to be unfetchable (the dry run assumes every download succeeds). Each
    // plan has an id of its own.
    let mut dry = dry;
    for r in [&mut dry, &mut real] {
        r["dates"][0]["plan"]
            .as_object_mut()
            .unwrap()
            .remove("plan_id");
    }
    assert_eq!(dry["dates"][0]["plan"], real["dates"][0]["plan"]);
    assert_eq!(real["dates"].as_array().unwrap().len(), 2);

    // A dry run of the remaining dates on the existing backup changes nothing.
    let before = snapshot(&backup);
    sync(&inventory, &backup, &["--on-bad-key", "skip", "--dry-run"]).code(0);
    assert_eq!(snapshot(&backup), before);
}

/// One writer at a time: a second sync is refused and says who holds the backup.
#[test]
fn second_writer_is_refused() {
    use_server();
    let fx = fixture("sync-lock", &["--scenario", "sync", "--days", "1"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let inventory = fx.local_arg();
    sync(&inventory, &backup, &["--on-bad-key", "skip"]);
    let lock = hold_lock(&backup.join(format!(".{STEM}/lock")));
    let before = snapshot(&backup);
    let out = sync(&inventory, &backup, &["--on-bad-key", "skip"]).code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(
        stderr.contains("pid ") && stderr.contains(" since "),
        "{stderr}"
    );
    assert_eq!(snapshot(&backup), before);
    // status sees the holder without taking the lock.
    let status = |json: bool| {
        let mut c = cli();
        c.arg("status").arg(&backup);
        if json {
            c.arg("--json");
        }
        String::from_utf8(c.assert().success().get_output().stdout.clone()).unwrap()
    };
    assert!(status(false).contains("running      a writer holds the backup"));
    let doc: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    assert!(
        doc["running"]
            .as_str()
            .is_some_and(|h| h.starts_with("pid ")),
        "{doc}"
    );
    drop(lock);
    let doc: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    assert!(doc["running"].is_null(), "{doc}");
    assert!(!status(false).contains("running"));
    sync(&inventory, &backup, &["--on-bad-key", "skip"]).code(0);
}

/// --path-filter limits the backup, is recorded, and a different one later is refused.
#[test]
fn path_filter_is_recorded() {
    use_server();
    let fx = fixture("sync-filter", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let inventory = fx.local_arg();
    let dates = fx.dates();
    sync(
        &inventory,
        &backup,
        &[
            "--start-date",
            &dates[0],
            "--end-date",
            &dates[0],
            "--path-filter",
            "^zarr/",
        ],
    )
    .code(0);
    let files = content_snapshot(&backup);
    assert!(!files.is_empty());
    assert!(
        files.iter().all(|(p, ..)| p.starts_with("zarr/")),
        "{files:?}"
    );
    let out = sync(&inventory, &backup, &["--path-filter", "^other/"]).code(1);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("differs"));
    // Without the flag, the recorded filter applies.
    sync(&inventory, &backup, &[]).code(0);
    assert!(
        content_snapshot(&backup)
            .iter()
            .all(|(p, ..)| p.starts_with("zarr/"))
    );
}

/// SIGINT stops a run gracefully (downloads in flight finish, exit 130, resumable); three
/// within five seconds stop it at once (also resumable). Downloads are slowed by the fault
/// proxy so that the signals land mid-run.
#[test]
fn interrupted_runs_resume() {
    use_server();
    let proxy = support::proxy();
    let fx = fixture("sync-sigint", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let first = fx.dates()[0].clone();
    let args = ["--start-date", first.as_str(), "--on-bad-key", "skip"];
    let reference = tmp.path().join("reference");
    sync(&inventory, &reference, &args).code(2);
    let want = content_snapshot(&reference);
    proxy.set_rules(serde_json::json!([
        {"method": "GET", "query": "versionId", "fault": "latency", "delay_ms": 300}
    ]));
    for signals in [1, 3] {
        let backup = tmp.path().join(format!("sigint-{signals}"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_s3invbackup"))
            .arg("sync")
            .arg(&inventory)
            .arg(&backup)
            .args(["--progress", "none", "--jobs", "2"])
            .args(args)
            .env("AWS_ENDPOINT_URL", &proxy.endpoint)
            .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
            .env("HOME", "/nonexistent")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until some files are placed.
        let runs = backup.join(format!(".{STEM}/runs"));
        let started = std::time::Instant::now();
        loop {
            let placed = std::fs::read_dir(&runs)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| std::fs::read_to_string(e.unwrap().path().join("journal.jsonl")).ok())
                .is_some_and(|j| j.lines().count() >= 3);
            if placed {
                break;
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "the run never placed a file"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for _ in 0..signals {
            // SAFETY: kill(2) with a valid pid and signal number.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{signals} SIGINT: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = if signals == 1 {
            "interrupted: run sync again to resume" // the graceful path's summary
        } else {
            "interrupted; temporary files removed" // the immediate exit
        };
        assert!(stderr.contains(expected), "{signals} SIGINT: {stderr}");
        assert!(
            runs.read_dir().unwrap().next().is_some(),
            "an interrupted run must stay resumable"
        );
        assert!(content_snapshot(&backup).len() < want.len());
        proxy.set_rules(serde_json::json!([]));
        sync(&inventory, &backup, &args).code(2);
        assert_eq!(content_snapshot(&backup), want, "{signals} SIGINT, resumed");
        proxy.set_rules(serde_json::json!([
            {"method": "GET", "query": "versionId", "fault": "latency", "delay_ms": 300}
        ]));
    }
    proxy.set_rules(serde_json::json!([]));
}

/// A bucket of `keys` small objects with its inventory (local copy), made by the benchmark's
/// setup script: returns the inventory's path.
fn many_small_objects(bucket: &str, keys: usize, out: &Path) -> String {
    let srv = use_server();
    let status = std::process::Command::new(support::venv().join("bin/python"))
        .arg(support::repo().join("scripts/bench/bench_sync_setup.py"))
        .args(["--endpoint", &srv.endpoint, "--bucket", bucket])
        .args([
            "--keys",
            &keys.to_string(),
            "--versions",
            "1",
            "--layout",
            "spread",
        ])
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
    out.join("inventory").to_string_lossy().into_owned()
}

/// [`many_small_objects`] in `dir/src`, and a reference backup of them in `dir/reference`
/// made without faults: returns the inventory and the reference.
fn many_small_objects_backed_up(
    bucket: &str,
    keys: usize,
    dir: &Path,
) -> (String, std::path::PathBuf) {
    let inventory = many_small_objects(bucket, keys, &dir.join("src"));
    let reference = dir.join("reference");
    sync(&inventory, &reference, &[]).success();
    (inventory, reference)
}

/// Ctrl-C with over a thousand downloads in flight (each held 3 s by the proxy, as a slow
/// link would) stops the run within seconds, and the run resumes to the same tree.
#[test]
fn interrupted_with_a_thousand_in_flight_stops_promptly_and_resumes() {
    let proxy = support::proxy();
    let tmp = tempfile::tempdir().unwrap();
    let (inventory, reference) = many_small_objects_backed_up("sigint-many", 1500, tmp.path());
    let want = content_snapshot(&reference);
    assert_eq!(
        want.len(),
        1500 + 2,
        "1500 objects and two versions JSON files"
    );
    proxy.set_rules(serde_json::json!([
        {"method": "GET", "path": "^/sigint-many/", "fault": "latency", "delay_ms": 3000}
    ]));
    let backup = tmp.path().join("backup");
    let before = proxy.requests();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_s3invbackup"))
        .arg("sync")
        .arg(&inventory)
        .arg(&backup)
        .args(["--progress", "none", "--jobs", "1500"])
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
        .env("HOME", "/nonexistent")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while proxy.requests() - before < 1000 {
        assert!(
            started.elapsed().as_secs() < 60,
            "never 1000 requests in flight"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let in_flight = proxy.requests() - before;
    // SAFETY: kill(2) with a valid pid and signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let signalled = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: run sync again to resume"),
        "{stderr}"
    );
    // The downloads in flight finish (3 s each), none is started after the signal.
    assert!(
        took < std::time::Duration::from_secs(15),
        "{in_flight} in flight: stopping took {took:?}"
    );
    assert!(content_snapshot(&backup).len() < want.len());
    proxy.set_rules(serde_json::json!([]));
    sync(&inventory, &backup, &[]).success();
    assert_eq!(content_snapshot(&backup), want, "resumed");
}

/// A server that throttles a third of all GETs: the run slows down (the throttling is
/// counted and the concurrency backs off) but completes, every version verified.
#[test]
fn a_throttling_server_slows_the_run_down_but_it_completes() {
    let proxy = support::proxy();
    let tmp = tempfile::tempdir().unwrap();
    let (inventory, reference) = many_small_objects_backed_up("slowdown-many", 600, tmp.path());
    proxy.set_rules(serde_json::json!([
        {"method": "GET", "path": "^/slowdown-many/", "fault": "status", "status": 503, "code": "SlowDown", "probability": 0.33}
    ]));
    let backup = tmp.path().join("backup");
    let report_path = tmp.path().join("report.json");
    cli()
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .arg("sync")
        .arg(&inventory)
        .arg(&backup)
        .args(["--progress", "none", "--report"])
        .arg(&report_path)
        .assert()
        .success()
        .stderr(predicates::str::contains("S3 throttled"))
        .stderr(predicates::str::contains("downloads in flight: up to"));
    proxy.set_rules(serde_json::json!([]));
    assert_eq!(content_snapshot(&backup), content_snapshot(&reference));
    let r = report(&report_path);
    let c = &r["dates"][0]["outcome"]["concurrency"];
    assert_eq!(c["mode"], "auto", "{c}");
    assert!(c["throttled"].as_u64().unwrap() > 100, "{c}");
    // Every window heard SlowDown: the limit only went down from where it started.
    assert!(c["last"].as_u64().unwrap() < 32, "{c}");
    assert!(c["reached"].as_u64().unwrap() <= 32, "{c}");
}

/// fsck finds each injected defect (missing, truncated, flipped byte with --verify-content,
/// wrong mtime, strays, a stale and a superfluous versions JSON), --repair makes a fresh fsck
/// clean without deleting anything (--no-fetch), and `fsck --repair` fetches the damaged
/// versions again: the tree is what it was before the damage.
#[test]
fn fsck_finds_and_repairs_every_defect() {
    let (_fx, tmp, _inventory) = first_date_backed_up("sync-fsck");
    let backup = tmp.path().join("backup");
    let fsck = |extra: &[&str]| cli().arg("fsck").arg(&backup).args(extra).assert();
    fsck(&[]).code(0);
    fsck(&["--verify-content"]).code(0);
    let before = content_snapshot(&backup);

    std::fs::remove_file(backup.join("a.txt")).unwrap();
    let truncated = std::fs::File::options()
        .write(true)
        .open(backup.join("dir/b.txt"))
        .unwrap();
    truncated.set_len(3).unwrap();
    drop(truncated);
    // A flipped byte in a multipart object is caught through its part MD5s too.
    let big = backup.join("big/multipart.bin");
    let big_mtime = std::fs::metadata(&big).unwrap().modified().unwrap();
    let mut big_bytes = std::fs::read(&big).unwrap();
    big_bytes[6 << 20] ^= 1;
    std::fs::write(&big, &big_bytes).unwrap();
    set_mtime(&big, big_mtime);
    let flipped = backup.join("zarr/0/1");
    let mtime = std::fs::metadata(&flipped).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&flipped, &bytes).unwrap();
    set_mtime(&flipped, mtime);
    set_mtime(backup.join("fast.txt"), std::time::SystemTime::now());
    std::fs::write(backup.join("stray.txt"), b"not from the bucket").unwrap();
    // A version's file moved by hand: found and put back, not fetched again.
    std::fs::rename(
        backup.join("empty.bin"),
        backup.join("zarr/moved-empty.bin"),
    )
    .unwrap();
    let moved_old = all_old_file(&backup, "pre-versioning.txt.old.");
    std::fs::rename(backup.join(&moved_old), backup.join("new/moved-by-hand")).unwrap();
    std::fs::write(backup.join("zarr/0/stray"), b"nor this").unwrap();
    std::fs::write(backup.join(format!("new/.{STEM}-versions.json")), b"{}\n").unwrap();
    std::fs::write(
        backup.join(format!("x.old.{STEM}/.{STEM}-versions.json")),
        b"{}\n",
    )
    .unwrap();

    let kinds = |out: &assert_cmd::assert::Assert| -> Vec<(String, String)> {
        let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        let mut v: Vec<(String, String)> = report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let place = p["path"].as_str().or(p["dir"].as_str()).unwrap_or("");
                (
                    p["problem"].as_str().unwrap().to_string(),
                    place.to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let found = kinds(&fsck(&["--json"]).code(1));
    let expected_metadata = vec![
        ("misplaced".to_string(), "new/moved-by-hand".to_string()),
        ("misplaced".to_string(), "zarr/moved-empty.bin".to_string()),
        ("missing".to_string(), "a.txt".to_string()),
        ("stray".into(), "stray.txt".into()),
        ("stray".into(), "zarr/0/stray".into()),
        ("versions-json".into(), "new".into()),
        ("versions-json".into(), format!("x.old.{STEM}")),
        ("wrong-mtime".into(), "fast.txt".into()),
        ("wrong-size".into(), "dir/b.txt".into()),
    ];
    assert_eq!(found, expected_metadata);
    let found = kinds(&fsck(&["--json", "--verify-content"]).code(1));
    let mut with_content = expected_metadata.clone();
    with_content.push(("corrupt".into(), "zarr/0/1".into()));
    with_content.push(("corrupt".into(), "big/multipart.bin".into()));
    with_content.sort();
    assert_eq!(found, with_content);

    // Content verification resumes: files an interrupted run verified (listed after the
    // catalog's identity in .<stem>/verify-progress) are not hashed again -- here the
    // corrupt one is listed, so it goes unnoticed once; the completed run removes the list.
    let progress = backup.join(format!(".{STEM}/verify-progress"));
    let identity = s3invbackup::Backup::open_existing(&backup)
        .unwrap()
        .catalog()
        .unwrap()
        .identity()
        .unwrap();
    std::fs::write(&progress, format!("{identity}\nzarr/0/1\n")).unwrap();
    let resumed = kinds(&fsck(&["--json", "--verify-content"]).code(1));
    assert!(!resumed.contains(&("corrupt".to_string(), "zarr/0/1".to_string())));
    assert!(resumed.contains(&("corrupt".to_string(), "big/multipart.bin".to_string())));
    assert!(
        !progress.exists(),
        "a completed verification left its progress file"
    );

    let snapshot_before_repair = snapshot(&backup);
    // Repaired, but the damaged versions wait for the next sync to be downloaded: exit 2.
    fsck(&["--verify-content", "--repair", "--no-fetch"]).code(2);
    fsck(&["--verify-content"]).code(0);
    // Nothing was deleted: what left the tree is in quarantine.
    let quarantine = backup.join(format!(".{STEM}/quarantine"));
    let moved: Vec<String> = snapshot(&quarantine)
        .into_iter()
        .filter(|(p, ..)| quarantine.join(p).is_file())
        .map(|(p, ..)| p.split_once('/').unwrap().1.to_string())
        .collect();
    for name in [
        "stray.txt",
        "zarr/0/stray",
        "dir/b.txt",
        "zarr/0/1",
        "big/multipart.bin",
    ] {
        assert!(
            moved.iter().any(|m| m == name),
            "{name} not in quarantine: {moved:?}"
        );
    }
    assert!(snapshot_before_repair.len() > moved.len());

    // `fsck --repair` (without --no-fetch) downloads the damaged versions again: all of
    // them, so exit 0. (The versions deleted from the bucket before the backup saw them are
    // "vanished": not retried, no reason for an exit 2.)
    let out = fsck(&["--repair"]).code(0);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("downloading 4 version(s)"), "{err}");
    assert!(!err.contains("could not be downloaded"), "{err}");
    assert_eq!(content_snapshot(&backup), before);
    fsck(&["--verify-content"]).code(0);
}

/// The "sync" scenario with a backup (`<tmp>/backup`) of its first date only; exit 2, as
/// versions deleted from the bucket later cannot be fetched. Returns the fixture (keep it
/// alive), the temporary directory and the inventory argument.
fn first_date_backed_up(bucket: &str) -> (support::Fixture, tempfile::TempDir, String) {
    use_server();
    let fx = fixture(bucket, &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let first = fx.dates()[0].clone();
    sync(
        &inventory,
        &tmp.path().join("backup"),
        &["--start-date", &first, "--on-bad-key", "skip"],
    )
    .code(2);
    (fx, tmp, inventory)
}

/// The one file at the top of the tree whose name starts with `prefix`.
fn all_old_file(backup: &Path, prefix: &str) -> String {
    let names: Vec<String> = std::fs::read_dir(backup)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

/// rollback after a run killed at several points gives the tree as it was before the run
/// (versions JSON by content), and a sync after it ends where an uninterrupted one does.
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn rollback_restores_the_pre_run_tree() {
    use_server();
    let fx = fixture("sync-rollback", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let reference = tmp.path().join("reference");
    let first_args = [
        "--start-date",
        dates[0].as_str(),
        "--end-date",
        dates[0].as_str(),
        "--on-bad-key",
        "skip",
    ];
    sync(&inventory, &reference, &first_args);
    let pre_run = content_snapshot(&reference);
    sync(&inventory, &reference, &["--on-bad-key", "skip"]).code(2);
    let want = content_snapshot(&reference);
    for n in [1, 4, 9, 16] {
        let backup = tmp.path().join(format!("rollback-{n}"));
        sync(&inventory, &backup, &first_args);
        let out = cli()
            .arg("sync")
            .arg(&inventory)
            .arg(&backup)
            .args(["--progress", "none", "--on-bad-key", "skip"])
            .env("S3INVBACKUP_CRASH_AFTER", n.to_string())
            .output()
            .unwrap();
        assert!(out.status.code().is_none(), "crash point {n} not reached");
        // fsck sees the half-applied run (and --repair leaves it to sync or rollback).
        let report = cli().args(["fsck", "--json"]).arg(&backup).assert().code(1);
        assert!(
            String::from_utf8_lossy(&report.get_output().stdout).contains("unfinished-run"),
            "fsck missed the unfinished run after entry {n}"
        );
        // The unfinished run is rolled back (repaired); the first date's unfetched versions
        // still wait for a sync (--no-fetch): exit 2.
        cli()
            .args(["fsck", "--repair", "--no-fetch"])
            .arg(&backup)
            .assert()
            .code(2);
        cli().arg("rollback").arg(&backup).assert().code(0);
        assert_eq!(
            content_snapshot(&backup),
            pre_run,
            "rollback after entry {n}"
        );
        let status = cli()
            .args(["status", "--json"])
            .arg(&backup)
            .assert()
            .code(0);
        let status: serde_json::Value =
            serde_json::from_slice(&status.get_output().stdout).unwrap();
        assert!(status["pending_runs"].as_array().unwrap().is_empty());
        cli().arg("fsck").arg(&backup).assert().code(0);
        sync(&inventory, &backup, &["--on-bad-key", "skip"]).code(2);
        assert_eq!(
            content_snapshot(&backup),
            want,
            "sync after rollback at {n}"
        );
    }
}

/// prune removes exactly the noncurrent files older than the limit (--dry-run lists them and
/// deletes nothing), keeps their records so that sync never fetches them again, and leaves
/// a tree fsck calls clean.
#[test]
fn prune_removes_exactly_the_old_versions() {
    let (_fx, tmp, inventory) = first_date_backed_up("sync-prune");
    let backup = tmp.path().join("backup");
    let all = content_snapshot(&backup);
    let old: Vec<String> = all
        .iter()
        .map(|(p, ..)| p.clone())
        .filter(|p| p.contains(".old."))
        .collect();
    assert!(old.len() > 10);
    let kept: Vec<_> = all
        .iter()
        .filter(|(p, ..)| !p.contains(".old."))
        .cloned()
        .collect();

    cli().arg("prune").arg(&backup).assert().code(1); // says what to prune
    // The fixture's inventory dates are in 2024: every noncurrent version is older than 1 day.
    let dry = cli()
        .arg("prune")
        .arg(&backup)
        .args(["--noncurrent-older-than", "1d", "--dry-run"])
        .assert()
        .code(0);
    let mut listed: Vec<String> = String::from_utf8_lossy(&dry.get_output().stdout)
        .lines()
        .map(String::from)
        .collect();
    listed.sort();
    assert_eq!(listed, old);
    assert_eq!(
        content_snapshot(&backup),
        all,
        "a dry run deleted something"
    );
    // A limit longer than the history prunes nothing.
    let none = cli()
        .arg("prune")
        .arg(&backup)
        .args(["--noncurrent-older-than", "100000d"])
        .assert()
        .code(0);
    assert!(none.get_output().stdout.is_empty());

    cli()
        .arg("prune")
        .arg(&backup)
        .args(["--noncurrent-older-than", "1d"])
        .assert()
        .code(0);
    assert_eq!(content_snapshot(&backup), kept);
    cli().arg("fsck").arg(&backup).assert().code(0);
    // Up to date: pruned versions are not fetched again, and the scenario's versions that
    // left the bucket before they were backed up are "vanished", no reason for exit 2.
    sync(&inventory, &backup, &["--on-bad-key", "skip"]).code(0);
    assert_eq!(
        content_snapshot(&backup),
        kept,
        "sync fetched pruned versions again"
    );
}

/// prune refuses while a sync run is pending (planned, not yet recorded): the resumed run
/// would replace the catalog with the one it planned before the prune, listing the deleted
/// files as held. Refused with the way out named and the tree untouched; once the run is
/// finished, prune works and fsck is clean.
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn prune_refuses_while_a_run_is_pending() {
    use_server();
    let fx = fixture("sync-prune-pending", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let first_two = [
        "--start-date",
        dates[0].as_str(),
        "--end-date",
        dates[1].as_str(),
        "--on-bad-key",
        "skip",
    ];
    let status = sync(&inventory, &backup, &first_two)
        .get_output()
        .status
        .code();
    assert!(matches!(status, Some(0 | 2)), "first sync: {status:?}");
    // The next date is planned, then the process dies before doing any of it.
    cli()
        .arg("sync")
        .arg(&inventory)
        .arg(&backup)
        .args(["--progress", "none", "--on-bad-key", "skip"])
        .env("S3INVBACKUP_FAILPOINT", "planned")
        .assert()
        .failure();
    let before = content_snapshot(&backup);
    assert!(before.iter().any(|(p, ..)| p.contains(".old.")));
    let refused = cli()
        .arg("prune")
        .arg(&backup)
        .args(["--noncurrent-older-than", "1d"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(
        stderr.contains("unfinished") && stderr.contains("rollback") && stderr.contains("sync"),
        "{stderr}"
    );
    assert_eq!(
        content_snapshot(&backup),
        before,
        "a refused prune changed the tree"
    );

    let finish = sync(&inventory, &backup, &["--on-bad-key", "skip"])
        .get_output()
        .status
        .code();
    assert!(matches!(finish, Some(0 | 2)), "finishing sync: {finish:?}");
    cli()
        .arg("prune")
        .arg(&backup)
        .args(["--noncurrent-older-than", "1d"])
        .assert()
        .code(0);
    cli().arg("fsck").arg(&backup).assert().code(0);
}

/// A local inventory given as a relative path is recorded by its absolute path: `fsck
/// --repair` run from another directory still downloads a deleted version again.
#[test]
fn a_relative_inventory_path_is_recorded_absolute() {
    use_server();
    let fx = fixture("sync-relative", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let parent = fx.local.parent().unwrap();
    let relative = fx.local.file_name().unwrap().to_str().unwrap().to_string();
    let first = cli()
        .current_dir(parent)
        .arg("sync")
        .arg(&relative)
        .arg(&backup)
        .args(["--progress", "none", "--on-bad-key", "skip"])
        .output()
        .unwrap();
    assert!(matches!(first.status.code(), Some(0 | 2)), "{first:?}");
    let status = cli()
        .arg("status")
        .arg(&backup)
        .arg("--json")
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["config"]["inventory"], fx.local_arg());

    let victim = content_snapshot(&backup)
        .into_iter()
        .map(|(p, ..)| p)
        .find(|p| !p.contains(".old."))
        .unwrap();
    let want = std::fs::read(backup.join(&victim)).unwrap();
    std::fs::remove_file(backup.join(&victim)).unwrap();
    let repair = cli()
        .current_dir("/")
        .arg("fsck")
        .arg(&backup)
        .args(["--repair", "--progress", "none"])
        .output()
        .unwrap();
    assert_ne!(repair.status.code(), Some(2), "{repair:?}");
    assert_eq!(
        std::fs::read(backup.join(&victim)).unwrap(),
        want,
        "{repair:?}"
    );
}

/// Files (path, size, mtime, MD5) and directories of a tree.
type TreeWithDirs = (Vec<(String, u64, i64, String)>, Vec<String>);

/// Files (path, size, mtime, MD5) and directories of the tree, the state directory aside.
fn tree_with_dirs(backup: &Path) -> TreeWithDirs {
    let dirs = tree_snapshot(backup)
        .into_iter()
        .filter(|(p, ..)| backup.join(p).is_dir())
        .map(|(p, ..)| p)
        .collect();
    (content_snapshot(backup), dirs)
}

/// Every journal point of every date's run of the sync scenario (file -> directory,
/// directory -> file, undelete, overwrite, delete, expiration), killed there, is undone
/// exactly: by `rollback` at even points, by `fsck --repair` (which rolls back first) at odd
/// ones. The tree, directories included, must be the one the previous date left.
#[test]
fn every_journal_point_of_every_transition_rolls_back() {
    let points = every_journal_point_is_undone("sync-every-point", "sync", false);
    assert!(points > 20, "only {points} journal points tried");
}

/// File <-> directory flips more than 64 directories down (levels 69 and 129: the
/// displacement of the second and third word): every date equals the model, and a run
/// killed at any journal point of any date is resumed by the next sync to the uninterrupted
/// run's tree, and undone by rollback or fsck --repair. (Before displacement had more than
/// 64 levels, the flip's old versions were planned under the file's path: "Not a
/// directory" on every resume.)
#[test]
fn deep_flips_match_the_model_resume_and_roll_back() {
    use_server();
    let fx = fixture("sync-deep-flips", &["--scenario", "deep"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let mut model = Model::new(STEM, &[]);
    for date in fx.dates() {
        sync(&fx.local_arg(), &backup, &["--end-date", &date]).code(0);
        model.apply(fx.model[&date].as_array().unwrap(), |_| true);
        assert_tree(&backup, &model, &date);
        cli()
            .args(["fsck", "--verify-content", "--progress", "none"])
            .arg(&backup)
            .assert()
            .code(0);
    }
    let deep = "d/".repeat(70);
    assert!(
        backup
            .join(format!("{}d.old.{STEM}/x.old.", &deep[..deep.len() - 2]))
            .parent()
            .unwrap()
            .is_dir(),
        "the level-69 directory was not displaced"
    );
    let points = every_journal_point_is_undone("sync-deep-points", "deep", true);
    assert!(points > 4, "only {points} journal points tried");
}

/// Kills each date's run (after the first) of `scenario` at every journal entry and undoes
/// it: by `rollback` at even points, by `fsck --repair` (which rolls back first) at odd ones;
/// the tree, directories included, must be the one the previous date left. With `resume`,
/// each killed run is also resumed (on a copy) by the next sync, which must give the
/// uninterrupted run's tree. Returns the points tried.
fn every_journal_point_is_undone(name: &str, scenario: &str, resume: bool) -> usize {
    use_server();
    let fx = fixture(name, &["--scenario", scenario]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let skip = ["--on-bad-key", "skip"];
    let mut points = 0;
    for k in 1..dates.len() {
        // The backup as date k-1 left it.
        let pre = tmp.path().join(format!("pre-{k}"));
        sync(
            &inventory,
            &pre,
            &[
                &["--start-date", &dates[0], "--end-date", &dates[k - 1]][..],
                &skip[..],
            ]
            .concat(),
        );
        let want = tree_with_dirs(&pre);
        let uninterrupted = resume.then(|| {
            let done = tmp.path().join(format!("uninterrupted-{k}"));
            sync(
                &inventory,
                &done,
                &[
                    &["--start-date", &dates[0], "--end-date", &dates[k]][..],
                    &skip[..],
                ]
                .concat(),
            );
            tree_with_dirs(&done)
        });
        for n in 1.. {
            let work = tmp.path().join(format!("work-{k}-{n}"));
            let copied = std::process::Command::new("cp")
                .arg("-a")
                .arg(&pre)
                .arg(&work)
                .status()
                .unwrap();
            assert!(copied.success());
            let out = cli()
                .arg("sync")
                .arg(&inventory)
                .arg(&work)
                .args(["--progress", "none", "--end-date", &dates[k]])
                .args(skip)
                .env("S3INVBACKUP_CRASH_AFTER", n.to_string())
                .output()
                .unwrap();
            if out.status.code().is_some() {
                // The run ended before its n-th entry: every point of this date was tried.
                assert!(n > 1, "{}: no journal entry at all", dates[k]);
                std::fs::remove_dir_all(&work).unwrap();
                break;
            }
            if let Some(uninterrupted) = &uninterrupted {
                let resumed = tmp.path().join(format!("resumed-{k}-{n}"));
                let copied = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(&work)
                    .arg(&resumed)
                    .status()
                    .unwrap();
                assert!(copied.success());
                sync(
                    &inventory,
                    &resumed,
                    &[&["--end-date", &dates[k]][..], &skip[..]].concat(),
                )
                .code(0);
                assert_eq!(
                    &tree_with_dirs(&resumed),
                    uninterrupted,
                    "resumed after entry {n} of {}",
                    dates[k]
                );
                std::fs::remove_dir_all(&resumed).unwrap();
            }
            let undo = if n % 2 == 0 {
                cli().arg("rollback").arg(&work).output().unwrap()
            } else {
                cli()
                    .args(["fsck", "--repair", "--no-fetch", "--progress", "none"])
                    .arg(&work)
                    .output()
                    .unwrap()
            };
            let how = if n % 2 == 0 {
                "rollback"
            } else {
                "fsck --repair"
            };
            if String::from_utf8_lossy(&undo.stderr).contains("already replaced the catalog") {
                // Killed after its commit: nothing to undo, only to finish (by design). The
                // next sync does, to the date's own tree.
                let done = tmp.path().join(format!("done-{k}"));
                sync(
                    &inventory,
                    &done,
                    &[
                        &["--start-date", &dates[0], "--end-date", &dates[k]][..],
                        &skip[..],
                    ]
                    .concat(),
                );
                sync(
                    &inventory,
                    &work,
                    &[&["--end-date", &dates[k]][..], &skip[..]].concat(),
                );
                assert_eq!(
                    tree_with_dirs(&work),
                    tree_with_dirs(&done),
                    "resumed after the commit of {}",
                    dates[k]
                );
                std::fs::remove_dir_all(&work).unwrap();
                std::fs::remove_dir_all(&done).unwrap();
                break;
            }
            assert!(
                matches!(undo.status.code(), Some(0 | 2)),
                "{how} after entry {n} of {}: {}{}",
                dates[k],
                String::from_utf8_lossy(&undo.stdout),
                String::from_utf8_lossy(&undo.stderr)
            );
            assert_eq!(
                tree_with_dirs(&work),
                want,
                "{how} after entry {n} of {}",
                dates[k]
            );
            std::fs::remove_dir_all(&work).unwrap();
            points += 1;
        }
    }
    points
}

/// A backup written before catalogs had deltas (format 2: one `catalog.s3inv`) is read as it
/// is by `status` and `locate`, and upgraded by the next `sync` (format 3, the catalog
/// directory); the rest of the dates then give the same tree as a backup that never was of
/// the old format, and fsck is clean.
#[test]
fn a_format_2_backup_is_upgraded_by_the_next_sync() {
    use_server();
    let fx = fixture("sync-upgrade", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let first_two = [
        "--start-date",
        dates[0].as_str(),
        "--end-date",
        dates[1].as_str(),
        "--on-bad-key",
        "skip",
    ];
    let reference = tmp.path().join("reference");
    let old = tmp.path().join("old");
    for b in [&reference, &old] {
        let code = sync(&inventory, b, &first_two).get_output().status.code();
        assert!(matches!(code, Some(0 | 2)), "first sync: {code:?}");
    }
    make_format_2(&old);
    let state = old.join(format!(".{STEM}"));
    let config_path = state.join("config.json");
    cli().arg("status").arg(&old).assert().code(0);
    cli().arg("fsck").arg(&old).assert().code(0);
    for b in [&reference, &old] {
        let code = sync(&inventory, b, &["--on-bad-key", "skip"])
            .get_output()
            .status
            .code();
        assert!(matches!(code, Some(0 | 2)), "second sync: {code:?}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["format"], 3);
    assert!(!state.join("catalog.s3inv").exists());
    assert!(state.join("catalog/manifest.json").exists());
    assert_eq!(content_snapshot(&old), content_snapshot(&reference));
    assert_eq!(applied_dates(&old), applied_dates(&reference));
    cli().arg("fsck").arg(&old).assert().code(0);
}

/// A run interrupted under a version from before deltas (its plan has no plan id and holds a
/// whole catalog) is not resumed by this one: sync refuses, naming the way out, and changes
/// nothing; `rollback` undoes it and the next sync goes on.
#[cfg(feature = "failpoints")]
#[test]
fn a_run_planned_by_an_older_version_is_refused_until_rolled_back() {
    use_server();
    let fx = fixture("sync-legacy-run", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let code = sync(
        &inventory,
        &backup,
        &["--end-date", dates[0].as_str(), "--on-bad-key", "skip"],
    )
    .get_output()
    .status
    .code();
    assert!(matches!(code, Some(0 | 2)), "first sync: {code:?}");
    cli()
        .arg("sync")
        .arg(&inventory)
        .arg(&backup)
        .args(["--progress", "none", "--on-bad-key", "skip"])
        .env("S3INVBACKUP_FAILPOINT", "planned")
        .assert()
        .failure();
    let run = backup.join(format!(".{STEM}/runs/{}", dates[1]));
    let plan_path = run.join("plan.json");
    let mut plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan_path).unwrap()).unwrap();
    plan.as_object_mut().unwrap().remove("plan_id");
    std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
    let before = content_snapshot(&backup);
    let out = sync(&inventory, &backup, &["--on-bad-key", "skip"]).code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("older version") && err.contains("s3invbackup rollback"),
        "{err}"
    );
    assert_eq!(content_snapshot(&backup), before);
    cli().arg("rollback").arg(&backup).assert().success();
    let code = sync(&inventory, &backup, &["--on-bad-key", "skip"])
        .get_output()
        .status
        .code();
    assert!(matches!(code, Some(0 | 2)), "sync after rollback: {code:?}");
    cli().arg("fsck").arg(&backup).assert().code(0);
}

/// Turns a backup into what a version from before catalog deltas left: the whole catalog in
/// one `catalog.s3inv`, backup format 2.
fn make_format_2(root: &Path) {
    let state = root.join(format!(".{STEM}"));
    let backup = s3invbackup::Backup::open_existing(root).unwrap();
    s3invbackup::backup::catalog::store::compact(&backup, false).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("catalog/manifest.json")).unwrap())
            .unwrap();
    std::fs::rename(
        state
            .join("catalog")
            .join(manifest["base"]["file"].as_str().unwrap()),
        state.join("catalog.s3inv"),
    )
    .unwrap();
    std::fs::remove_dir_all(state.join("catalog")).unwrap();
    let config_path = state.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["format"] = 2.into();
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// `prune` and `fsck --repair` on a format-2 backup move it to deltas first (they write
/// one), and leave it consistent.
#[test]
fn prune_and_repair_upgrade_a_format_2_backup() {
    use_server();
    let fx = fixture("sync-upgrade-maintain", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let backup = tmp.path().join("backup");
    let code = sync(&inventory, &backup, &["--on-bad-key", "skip"])
        .get_output()
        .status
        .code();
    assert!(matches!(code, Some(0 | 2)), "sync: {code:?}");
    let format = |b: &Path| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(b.join(format!(".{STEM}/config.json"))).unwrap(),
        )
        .unwrap()["format"]
            .clone()
    };
    make_format_2(&backup);
    cli()
        .args(["prune", "--noncurrent-older-than", "1d"])
        .arg(&backup)
        .assert()
        .code(0);
    assert_eq!(format(&backup), 3);
    cli().arg("fsck").arg(&backup).assert().code(0);

    make_format_2(&backup);
    let victim = content_snapshot(&backup)
        .into_iter()
        .map(|(p, ..)| p)
        .find(|p| !p.ends_with("-versions.json"))
        .unwrap();
    std::fs::remove_file(backup.join(&victim)).unwrap();
    cli()
        .args(["fsck", "--repair", "--progress", "none"])
        .arg(&backup)
        .assert()
        .code(0);
    assert_eq!(format(&backup), 3);
    assert!(backup.join(&victim).exists(), "{victim} not fetched back");
    cli().arg("fsck").arg(&backup).assert().code(0);
}

/// A first backup of `inventory` into `backup`, one download at a time, aborted after its
/// `entries`-th journal entry (on boot `boot`, if given): the non-empty files its journal
/// says it placed, and the journal.
fn placed_by_a_killed_run(
    inventory: &str,
    backup: &Path,
    entries: &str,
    boot: Option<&str>,
) -> (Vec<PathBuf>, String) {
    let mut cmd = cli();
    cmd.arg("sync")
        .arg(inventory)
        .arg(backup)
        .args(["--progress", "none", "--jobs", "1"])
        .env("S3INVBACKUP_CRASH_AFTER", entries);
    if let Some(boot) = boot {
        cmd.env("S3INVBACKUP_BOOT_ID", boot);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.code().is_none(),
        "the crash point was not reached"
    );
    let runs = backup.join(format!(".{STEM}/runs"));
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let journal = std::fs::read_to_string(run.join("journal.jsonl")).unwrap();
    let placed = journal
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|e| e["op"] == "place")
        .map(|e| backup.join(e["dest"].as_str().unwrap()))
        .filter(|dest| dest.is_file() && dest.metadata().unwrap().len() > 0)
        .collect();
    (placed, journal)
}

/// A power loss after a placement's rename reached the disk but before its bytes did leaves
/// a torn file where the plan places a version (shorter, or empty: ext4's delayed
/// allocation does exactly this). The resumed run must not stop at it ("already exists")
/// for good: the torn file goes to quarantine (never deleted) and the version is fetched
/// and placed again; the tree then equals the uninterrupted run's.
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn a_placement_torn_by_a_power_loss_is_fetched_again_on_resume() {
    use_server();
    let fx = fixture(
        "sync-torn",
        &["--scenario", "random", "--keys", "40", "--days", "1"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let reference = tmp.path().join("reference");
    sync(&inventory, &reference, &[]);
    let want = content_snapshot(&reference);
    let backup = tmp.path().join("backup");
    // What the power loss leaves: every file the killed run placed, with its bytes gone.
    let (placed, journal) = placed_by_a_killed_run(&inventory, &backup, "6", None);
    for dest in &placed {
        std::fs::OpenOptions::new()
            .write(true)
            .open(dest)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    let torn = placed.len();
    assert!(torn > 0, "no placed file to tear: {journal}");
    let out = cli()
        .arg("sync")
        .arg(&inventory)
        .arg(&backup)
        .args(["--progress", "none"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the resumed run stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(content_snapshot(&backup), want);
    cli().arg("fsck").arg(&backup).assert().code(0);
    // The torn files are kept, not deleted.
    let q = backup.join(format!(".{STEM}/quarantine"));
    let kept: Vec<String> = snapshot(&q)
        .into_iter()
        .filter(|(p, ..)| q.join(p).is_file())
        .map(|(p, ..)| p)
        .collect();
    assert_eq!(kept.len(), torn, "{kept:?}");
}

/// What XFS or ext4's delayed allocation can leave after a power loss: a placed file with its
/// size and mtime on disk and its bytes zeros. A resumed attempt on the same boot trusts size
/// and mtime (the page cache held the bytes: a kill, not a power loss); one on another boot
/// reads the files the cut attempt placed after its last checkpoint and fetches again what
/// does not match its ETag. The same tear is run both ways: on the same boot the zeros
/// survive (fsck --verify-content finds them), so the boot is what makes the difference.
#[test]
fn zeroed_placements_are_fetched_again_when_the_attempt_ran_on_another_boot() {
    use_server();
    let fx = fixture(
        "sync-zeroed",
        &["--scenario", "random", "--keys", "40", "--days", "1"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let reference = tmp.path().join("reference");
    sync(&inventory, &reference, &[]);
    let want = content_snapshot(&reference);
    for other_boot in [false, true] {
        let backup = tmp.path().join(format!("backup-{other_boot}"));
        let (placed, journal) = placed_by_a_killed_run(&inventory, &backup, "8", Some("first"));
        assert!(journal.contains(r#""op":"attempt""#), "{journal}");
        for dest in &placed {
            let meta = dest.metadata().unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(dest).unwrap();
            use std::os::unix::fs::FileExt;
            f.write_all_at(&vec![0u8; meta.len() as usize], 0).unwrap();
            f.set_modified(meta.modified().unwrap()).unwrap();
        }
        assert!(!placed.is_empty(), "no placed file to zero: {journal}");
        let out = cli()
            .arg("sync")
            .arg(&inventory)
            .arg(&backup)
            .args(["--progress", "none"])
            .env(
                "S3INVBACKUP_BOOT_ID",
                if other_boot { "second" } else { "first" },
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the resumed run stopped: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verify = cli()
            .arg("fsck")
            .arg(&backup)
            .arg("--verify-content")
            .output()
            .unwrap();
        if other_boot {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("checked by content"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                verify.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&verify.stdout)
            );
            assert_eq!(content_snapshot(&backup), want);
        } else {
            assert_eq!(
                verify.status.code(),
                Some(1),
                "the zeros were not trusted on the same boot"
            );
            assert!(String::from_utf8_lossy(&verify.stdout).contains("corrupt"));
        }
    }
}
