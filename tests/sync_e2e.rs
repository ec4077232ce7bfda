//! `sync` end to end on SeaweedFS: five generated dates covering every transition of the
//! layout, each backed up while the bucket is in that date's state, the tree checked after
//! every date against the independent model in `support/backup_model.rs`.

mod support;

use std::path::Path;

use support::backup_model::{Model, differences, snapshot};
use support::{cli, fixture, fixture_stepper, use_server};

const STEM: &str = "s3invbackup";
const BAD_KEYS: [&str; 2] = [
    "bad/.s3invbackup-versions.json",
    "bad/file.old.v1.0123456789abcdef0123456789abcdef",
];

fn sync(inventory: &str, backup: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    cli()
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

/// The tree without the state directory (whose lock file changes on every run).
fn tree_snapshot(backup: &Path) -> Vec<(String, u64, i64, u64)> {
    snapshot(backup)
        .into_iter()
        .filter(|(p, ..)| !p.starts_with(&format!(".{STEM}")))
        .collect()
}

#[test]
fn every_date_matches_the_model() {
    use_server();
    let mut generator = fixture_stepper("sync-e2e", &["--scenario", "sync"]);
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let report_path = tmp.path().join("report.json");
    let mut model = Model::new(STEM, &BAD_KEYS);
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
        if day == 3 {
            // Killed (as by kill -9) right after the 2nd journal entry, then resumed.
            cli()
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
        let rows = generator.model()[&date].as_array().unwrap().clone();
        model.apply(&rows, |_| true);
        assert_tree(&backup, &model, &date);
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
        generator.go_on();
    }
    assert_eq!(day, 5);

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
    // Going backwards is refused.
    let out = sync(&inventory, &backup, &["--start-date", applied[0]]).code(1);
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
    let inventory = fx.local.display().to_string();
    let dates: Vec<String> = fx.model.as_object().unwrap().keys().cloned().collect();
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
    assert!(r["failures"].as_u64().unwrap() > 0);

    // The next run retries them (still gone: still exit 2) and changes nothing else.
    let before = tree_snapshot(&backup);
    sync(&inventory, &backup, &["--on-bad-key", "skip"]).code(2);
    assert_eq!(tree_snapshot(&backup), before);
}
