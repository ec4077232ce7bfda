//! A backup written by N cooperating `sync --shard I/N` processes (a job array), started at
//! the same moment on an empty directory, must be exactly what one process writes: the same
//! files with the same bytes and mtimes, the same versions JSON, the same catalog records,
//! date after date. Checked for N = 1, 2, 4 on the layout scenario (every file/directory
//! transition) and on a random history of nested directories, plus the refusals (another
//! N, a shard taken twice) and a shard killed mid-run.

mod support;

use std::path::Path;
use std::process::Output;

use support::{cli, fixture, hold_lock, use_server};

const STEM: &str = "s3invbackup";

/// The arguments every sync of these tests shares.
fn sync_args<'a>(inventory: &'a str, backup: &'a Path, end: &'a str) -> Vec<String> {
    vec![
        "sync".into(),
        inventory.into(),
        backup.display().to_string(),
        "--progress".into(),
        "none".into(),
        "--jobs".into(),
        "4".into(),
        "--on-bad-key".into(),
        "skip".into(),
        "--end-date".into(),
        end.into(),
    ]
}

/// Runs the N shards of `backup` at once, each its own process; their outputs by shard.
fn sync_shards(inventory: &str, backup: &Path, end: &str, n: u32, first: &str) -> Vec<Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                s.spawn(move || {
                    cli()
                        .args(sync_args(inventory, backup, end))
                        .args(["--start-date", first])
                        .args(["--shard", &format!("{i}/{n}")])
                        .output()
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// (path, size, mtime, MD5) of every file and (path) of every directory of the tree, the
/// state directory excluded. Versions JSON are compared by content (written at run time).
fn tree(backup: &Path) -> Vec<(String, u64, i64, String)> {
    let versions_file = format!(".{STEM}-versions.json");
    support::backup_model::snapshot(backup)
        .into_iter()
        .filter(|(p, ..)| *p != format!(".{STEM}") && !p.starts_with(&format!(".{STEM}/")))
        .map(|(p, size, mtime, _)| {
            let full = backup.join(&p);
            if full.is_dir() {
                return (format!("{p}/"), 0, 0, String::new());
            }
            let mtime = if p.ends_with(&versions_file) {
                0
            } else {
                mtime
            };
            (
                p,
                size,
                mtime,
                support::md5_hex(&std::fs::read(&full).unwrap()),
            )
        })
        .collect()
}

/// Every record of the backup's catalog (merged over its shards), local state included.
fn catalog(backup: &Path) -> Vec<String> {
    let b = s3invbackup::backup::Backup::open_existing(backup).unwrap();
    let c = b.catalog().unwrap();
    let mut s = c.stream();
    let mut out = Vec::new();
    while let Some(r) = s.next_record().unwrap() {
        out.push(format!("{r:?}"));
    }
    out
}

/// The catalog without how each file was verified: a version a killed run had verified in
/// staging but not yet placed is placed by the rerun as "verified, how unknown" (as in a
/// one-process run killed there; see `apply::Run::fetch`).
fn catalog_unverified(backup: &Path) -> Vec<String> {
    let b = s3invbackup::backup::Backup::open_existing(backup).unwrap();
    let c = b.catalog().unwrap();
    let mut s = c.stream();
    let mut out = Vec::new();
    while let Some(r) = s.next_record().unwrap() {
        let mut r = r.clone();
        r.local.check = Default::default();
        r.local.part_size = 0;
        r.local.checksum = Default::default();
        out.push(format!("{r:?}"));
    }
    out
}

/// Equal lists, or a panic showing the entries only one side has.
fn assert_same<T: std::fmt::Debug + PartialEq>(got: &[T], want: &[T], what: &str) {
    if got == want {
        return;
    }
    let only_got: Vec<&T> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
    let only_want: Vec<&T> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
    panic!(
        "{what}: {} entries, {} wanted\n  only here: {only_got:#?}\n  only wanted: {only_want:#?}",
        got.len(),
        want.len()
    );
}

fn status_json(backup: &Path) -> serde_json::Value {
    let out = cli()
        .args(["status", "--json"])
        .arg(backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Date by date: one process, and N = 1, 2, 4 shard processes started together, end with
/// the same tree, catalog and applied dates; fsck finds the sharded trees clean.
fn shards_match_one_process(name: &str, extra: &[&str]) {
    use_server();
    let fx = fixture(name, extra);
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let first = dates[0].clone();
    let reference = tmp.path().join("reference");
    let counts = [1u32, 2, 4];
    for date in &dates {
        let one = cli()
            .args(sync_args(&inventory, &reference, date))
            .args(["--start-date", &first])
            .output()
            .unwrap();
        let code = one.status.code();
        assert!(matches!(code, Some(0 | 2)), "{date}: {}", stderr(&one));
        let want_tree = tree(&reference);
        let want_catalog = catalog(&reference);
        for n in counts {
            let backup = tmp.path().join(format!("shards-{n}"));
            for (i, out) in sync_shards(&inventory, &backup, date, n, &first)
                .iter()
                .enumerate()
            {
                assert!(
                    matches!(out.status.code(), Some(0 | 2)),
                    "{date}, shard {i}/{n}: {}",
                    stderr(out)
                );
            }
            assert_same(
                &tree(&backup),
                &want_tree,
                &format!("{date}: the tree of {n} shards"),
            );
            assert_same(
                &catalog(&backup),
                &want_catalog,
                &format!("{date}: the catalog of {n} shards"),
            );
            let st = status_json(&backup);
            assert_eq!(
                st["last_applied"],
                date.as_str(),
                "{date}, {n} shards: {st}"
            );
        }
    }
    for n in counts {
        let backup = tmp.path().join(format!("shards-{n}"));
        let out = cli()
            .args(["fsck", "--verify-content", "--progress", "none"])
            .arg(&backup)
            .output()
            .unwrap();
        // The skipped bad keys are reported (exit 2 only for problems).
        assert!(
            out.status.success(),
            "fsck of {n} shards: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    // Readers see one backup: restore and locate of the sharded backups give the
    // one-process answers.
    let restore = |from: &Path, to: &Path| {
        let out = cli()
            .args(["restore", "--progress", "none"])
            .arg(from)
            .args(["--at", "2100-01-01T00:00:00Z"])
            .arg(to)
            .output()
            .unwrap();
        assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
        out.status.code()
    };
    let want_code = restore(&reference, &tmp.path().join("restored-reference"));
    let want = tree(&tmp.path().join("restored-reference"));
    let locate = |backup: &Path, key: &str| {
        let out = cli().arg("locate").arg(backup).arg(key).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).replace(&backup.display().to_string(), "BACKUP"),
        )
    };
    let keys: Vec<String> = catalog(&reference)
        .iter()
        .filter_map(|r| r.split('"').nth(1).map(str::to_string))
        .step_by(7)
        .collect();
    for n in [2u32, 4] {
        let backup = tmp.path().join(format!("shards-{n}"));
        let to = tmp.path().join(format!("restored-{n}"));
        assert_eq!(restore(&backup, &to), want_code);
        assert_same(&tree(&to), &want, &format!("restore of {n} shards"));
        for key in &keys {
            assert_eq!(
                locate(&backup, key),
                locate(&reference, key),
                "locate {key}, {n} shards"
            );
        }
    }
    // The shards really split the work: with 4, more than one shard fetched something.
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join(format!("shards-4/.{STEM}/config.json"))).unwrap(),
    )
    .unwrap();
    let cuts = config["shards"]["cuts"].as_array().unwrap();
    assert_eq!(cuts.len(), 3, "{config}");
    let mut nonempty = 0;
    for i in 0..4 {
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                tmp.path()
                    .join(format!("shards-4/.{STEM}/shards/{i}/state.json")),
            )
            .unwrap(),
        )
        .unwrap();
        if state["applied"][0]["versions"].as_u64().unwrap() > 0 {
            nonempty += 1;
        }
    }
    assert!(
        nonempty >= 2,
        "4 shards, {nonempty} with versions: cuts {cuts:?}"
    );
}

#[test]
fn shards_of_the_layout_scenario_match_one_process() {
    shards_match_one_process("shards-layout", &["--scenario", "sync"]);
}

#[test]
fn shards_of_a_random_history_match_one_process() {
    shards_match_one_process(
        "shards-random",
        &["--scenario", "random", "--keys", "300", "--days", "3"],
    );
}

/// A shard started with another N than the backup's, a backup without shards given
/// `--shard`, a sharded one without it, and a shard already taken: each refused, naming
/// what to run, and nothing changed.
#[test]
fn wrong_shard_counts_and_a_taken_shard_are_refused() {
    use_server();
    let fx = fixture(
        "shards-refusals",
        &["--scenario", "random", "--keys", "40", "--days", "1"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let date = fx.dates()[0].clone();
    let backup = tmp.path().join("backup");
    for out in sync_shards(&inventory, &backup, &date, 2, &date) {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let before = tree(&backup);
    let refused = |args: &[&str], expect: &str| {
        let out = cli()
            .args(sync_args(&inventory, &backup, &date))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    };
    refused(&["--shard", "1/3"], "was created in 2 shards");
    refused(&[], "--shard I/2");
    // A shard held by another process: refused, naming the shard and its holder.
    let lock = hold_lock(&backup.join(format!(".{STEM}/shards/1/lock")));
    std::fs::write(
        backup.join(format!(".{STEM}/shards/1/lock")),
        "pid 4242 on node17 since 2026-12-03T00:00:00Z",
    )
    .unwrap();
    refused(&["--shard", "1/2"], "shard 1 of 2: pid 4242 on node17");
    drop(lock);
    assert_eq!(tree(&backup), before);
    // A backup made by one process takes no --shard.
    let single = tmp.path().join("single");
    let out = cli()
        .args(sync_args(&inventory, &single, &date))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli()
        .args(sync_args(&inventory, &single, &date))
        .args(["--shard", "0/2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("created for one process"),
        "{}",
        stderr(&out)
    );
    // Bad specs never reach the backup.
    let out = cli()
        .args(sync_args(&inventory, &single, &date))
        .args(["--shard", "2/2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shards are 0 to N-1"),
        "{}",
        stderr(&out)
    );
}

/// One shard killed (abort, as by kill -9) part-way through its run while the others finish;
/// its rerun converges to the one-process tree, and until then the backup's date is not
/// applied (status shows the shard behind).
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
fn a_killed_shard_catches_up_to_the_one_process_tree() {
    use_server();
    let fx = fixture(
        "shards-kill",
        &["--scenario", "random", "--keys", "200", "--days", "2"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let (first, last) = (dates[0].clone(), dates.last().unwrap().clone());
    let reference = tmp.path().join("reference");
    let out = cli()
        .args(sync_args(&inventory, &reference, &last))
        .args(["--start-date", &first])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
    let backup = tmp.path().join("backup");
    let n = 3;
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (inventory, backup, first, last) = (&inventory, &backup, &first, &last);
                s.spawn(move || {
                    let mut c = cli();
                    c.args(sync_args(inventory, backup, last))
                        .args(["--start-date", first])
                        .args(["--shard", &format!("{i}/{n}")]);
                    if i == 1 {
                        c.env("S3INVBACKUP_CRASH_AFTER", "5");
                    }
                    c.output().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outs[1].status.code(),
        None,
        "shard 1 was not killed: {}",
        stderr(&outs[1])
    );
    for i in [0, 2] {
        assert!(
            matches!(outs[i].status.code(), Some(0 | 2)),
            "{}",
            stderr(&outs[i])
        );
    }
    let st = status_json(&backup);
    assert_ne!(st["last_applied"], last.as_str(), "{st}");
    let shards = st["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "{st}");
    assert!(shards[1]["pending_run"].is_string(), "{st}");
    // `rollback` of the whole backup undoes the killed shard's run (the others have none);
    // then the shard's rerun applies it again.
    let out = cli().arg("rollback").arg(&backup).output().unwrap();
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    assert!(
        status_json(&backup)["shards"][1]["pending_run"].is_null(),
        "the killed shard's run is still pending after rollback"
    );
    let out = cli()
        .args(sync_args(&inventory, &backup, &last))
        .args(["--shard", "1/3"])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
    assert_same(
        &tree(&backup),
        &tree(&reference),
        "the tree after the rerun",
    );
    assert_same(
        &catalog_unverified(&backup),
        &catalog_unverified(&reference),
        "the catalog after the rerun",
    );
    assert_eq!(status_json(&backup)["last_applied"], last.as_str());
    // prune of the whole backup removes exactly what it removes from the one-process one.
    let files_before = tree(&backup).len();
    for b in [&backup, &reference] {
        let out = cli()
            .arg("prune")
            .arg(b)
            .args(["--noncurrent-older-than", "1m"])
            .output()
            .unwrap();
        assert!(out.status.success(), "prune: {}", stderr(&out));
    }
    assert!(tree(&backup).len() < files_before, "prune removed nothing");
    assert_same(&tree(&backup), &tree(&reference), "the tree after prune");
    assert_same(
        &catalog_unverified(&backup),
        &catalog_unverified(&reference),
        "the catalog after prune",
    );
}

/// A shard's state directory removed, or its manifest damaged: fsck names the shard and
/// checks nothing else; `fsck --repair` starts it afresh and syncs it again, adopting its
/// files where they are (nothing downloaded), and the backup is the one-process backup
/// again (how its files were verified aside), fsck clean, the next date applied by all.
#[test]
fn a_removed_or_damaged_shard_is_named_and_rebuilt_by_fsck() {
    use_server();
    let fx = fixture(
        "shards-damage",
        &["--scenario", "random", "--keys", "120", "--days", "2"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let inventory = fx.local_arg();
    let dates = fx.dates();
    let first = dates[0].clone();
    let reference = tmp.path().join("reference");
    let backup = tmp.path().join("backup");
    let out = cli()
        .args(sync_args(&inventory, &reference, &first))
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
    for out in sync_shards(&inventory, &backup, &first, 3, &first) {
        assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
    }
    let fsck = |extra: &[&str]| {
        cli()
            .args(["fsck", "--progress", "none"])
            .args(extra)
            .arg(&backup)
            .output()
            .unwrap()
    };
    for (shard, damage) in [(1, "removed"), (0, "manifest")] {
        let dir = backup.join(format!(".{STEM}/shards/{shard}"));
        if damage == "removed" {
            std::fs::remove_dir_all(&dir).unwrap();
        } else {
            std::fs::write(dir.join("catalog/manifest.json"), "{ not json").unwrap();
        }
        let out = fsck(&[]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{damage}: {text}");
        assert!(
            text.contains("damaged-shard") && text.contains(&format!("shard {shard}")),
            "{text}"
        );
        let out = fsck(&["--repair"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
        assert!(out.status.success(), "{damage}: {text}");
        assert!(text.contains("0 version(s) downloaded"), "{damage}: {text}");
        let out = fsck(&[]);
        assert!(
            out.status.success(),
            "{damage}: after the repair: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        assert_same(
            &tree(&backup),
            &tree(&reference),
            "the tree after the repair",
        );
        assert_same(
            &catalog_unverified(&backup),
            &catalog_unverified(&reference),
            "the catalog after the repair",
        );
        assert!(
            damage == "removed"
                || std::fs::read_dir(backup.join(format!(".{STEM}/quarantine")))
                    .unwrap()
                    .next()
                    .is_some(),
            "what was left of the shard is kept"
        );
    }
    // The next date, by every shard.
    let last = dates[1].clone();
    let out = cli()
        .args(sync_args(&inventory, &reference, &last))
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
    for out in sync_shards(&inventory, &backup, &last, 3, &first) {
        assert!(matches!(out.status.code(), Some(0 | 2)), "{}", stderr(&out));
    }
    assert_same(&tree(&backup), &tree(&reference), "the next date");
    assert_eq!(status_json(&backup)["last_applied"], last.as_str());
}
