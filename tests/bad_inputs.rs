//! The bad-input campaign for `sync`: a table of malformed inventories and damaged backups.
//! Each case starts from a backup holding the first of three dates (the boto3 fixture's
//! "basic" scenario), breaks one thing, and runs `sync` for the rest. It must fail with an
//! error that names the culprit (or do what README documents for it), leave every byte of the
//! backup as it was (state directory included), and, once the cause is removed, the next
//! `sync` must end with the same tree as a backup that never met the bad input.
//! RELIABILITY.md lists the cases with what each one checks.

mod support;

use std::path::{Path, PathBuf};

use support::{add_data_file, cli, edit_manifest, fixture, gzip, md5_hex, use_server};

const STEM: &str = "s3invbackup";

/// Every file under the backup, state directory included (but its lock file, which names
/// the last process that took it): path, size, mtime (ms), MD5 of the bytes.
fn full_snapshot(root: &Path) -> Vec<(String, u64, i64, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            if meta.is_dir() {
                stack.push(entry.path());
                out.push((rel + "/", 0, 0, String::new()));
            } else if rel != format!(".{STEM}/lock") {
                let md5 = md5_hex(&std::fs::read(entry.path()).unwrap());
                out.push((
                    rel,
                    meta.len(),
                    meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
                    md5,
                ));
            }
        }
    }
    out.sort();
    out
}

/// The tree a user sees (no state directory; versions JSON by content, as its mtime is the
/// run's): what a recovered backup is compared by.
fn user_tree(root: &Path) -> Vec<(String, u64, i64, String)> {
    full_snapshot(root)
        .into_iter()
        .filter(|(p, ..)| !p.starts_with(&format!(".{STEM}/")))
        .map(|(p, size, mtime, md5)| {
            let json = p.ends_with(&format!(".{STEM}-versions.json"));
            (p, size, if json { 0 } else { mtime }, md5)
        })
        .collect()
}

struct World {
    _tmp: tempfile::TempDir,
    inventory: PathBuf,
    backup: PathBuf,
    dates: Vec<String>,
    /// After all three dates, as a backup that never met a bad input.
    reference: Vec<(String, u64, i64, String)>,
    reference_code: i32,
}

fn sync(inventory: &Path, backup: &Path, extra: &[&str]) -> std::process::Output {
    cli()
        .arg("sync")
        .arg(inventory)
        .arg(backup)
        .args(["--progress", "none", "--jobs", "8"])
        .args(extra)
        .output()
        .unwrap()
}

/// A copy of the inventory and of a backup that has applied its first date.
fn world(base: &World, name: &str) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{name}: copying {}", from.display());
    };
    let inventory = tmp.path().join("inventory");
    let backup = tmp.path().join("backup");
    copy(&base.inventory, &inventory);
    copy(&base.backup, &backup);
    World {
        _tmp: tmp,
        inventory,
        backup,
        dates: base.dates.clone(),
        reference: base.reference.clone(),
        reference_code: base.reference_code,
    }
}

/// `bucket` names the fixture's bucket (one per test: tests run in parallel).
fn base(bucket: &str) -> World {
    use_server();
    let fx = fixture(bucket, &["--files", "2"]);
    let dates = fx.dates();
    assert_eq!(dates.len(), 3);
    let tmp = tempfile::tempdir().unwrap();
    let reference_dir = tmp.path().join("reference");
    let out = sync(&fx.local, &reference_dir, &["--start-date", &dates[0]]);
    let reference_code = out.status.code().unwrap();
    assert!(matches!(reference_code, 0 | 2), "{out:?}");
    let backup = tmp.path().join("backup");
    let out = sync(
        &fx.local,
        &backup,
        &["--start-date", &dates[0], "--end-date", &dates[0]],
    );
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
    let inventory = tmp.path().join("inventory");
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&fx.local)
            .arg(&inventory)
            .status()
            .unwrap()
            .success()
    );
    World {
        reference: user_tree(&reference_dir),
        _tmp: tmp,
        inventory,
        backup,
        dates,
        reference_code,
    }
}

/// The rows of the data files a date's manifest lists, as CSV records.
fn rows_of(w: &World, date: &str) -> Vec<csv::StringRecord> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(w.inventory.join(date).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let mut rows = Vec::new();
    for f in manifest["files"].as_array().unwrap() {
        let name = f["key"].as_str().unwrap().rsplit('/').next().unwrap();
        let gz = std::fs::File::open(w.inventory.join("data").join(name)).unwrap();
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(flate2::read::MultiGzDecoder::new(gz));
        rows.extend(r.records().map(Result::unwrap));
    }
    rows
}

fn csv_line(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect::<Vec<_>>()
        .join(",")
        + "\n"
}

/// A row of date 2 for `key`, with the given changes, added as a data file of its own.
fn add_row(w: &World, date: &str, from_key: &str, edit: impl Fn(&mut Vec<String>)) {
    let row = rows_of(w, date)
        .into_iter()
        .find(|r| &r[1] == from_key)
        .unwrap_or_else(|| panic!("no row for {from_key} in {date}"));
    let mut fields: Vec<String> = row.iter().map(str::to_string).collect();
    edit(&mut fields);
    add_data_file(
        &w.inventory,
        date,
        "added.csv.gz",
        &gzip(csv_line(&fields).as_bytes()),
    );
}

fn data_file_of(w: &World, date: &str, i: usize) -> PathBuf {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(w.inventory.join(date).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let key = manifest["files"][i]["key"].as_str().unwrap();
    w.inventory
        .join("data")
        .join(key.rsplit('/').next().unwrap())
}

/// What a case expects of the first sync after the damage.
enum Outcome {
    /// Exit 1 with every needle in stderr, and the backup exactly as it was.
    Refused(&'static [&'static str]),
    /// Exit as the reference did; the tree equals the reference (a documented recovery).
    Applied,
}

struct Case {
    name: &'static str,
    damage: fn(&World),
    /// Extra flags for the first sync.
    flags: &'static [&'static str],
    outcome: Outcome,
    /// Removes the cause; then a sync with `recover_flags` must reach the reference tree.
    recover: Option<fn(&World)>,
    recover_flags: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "manifest lists a missing data file",
            damage: |w| {
                let f = data_file_of(w, &w.dates[1], 0);
                std::fs::rename(&f, f.with_extension("away")).unwrap();
            },
            flags: &[],
            outcome: Outcome::Refused(&["data/", "No such file"]),
            recover: Some(|w| {
                let f = data_file_of(w, &w.dates[1], 0);
                std::fs::rename(f.with_extension("away"), &f).unwrap();
            }),
            recover_flags: &[],
        },
        Case {
            name: "date folder incomplete (no manifest.checksum), asked for by --end-date",
            damage: |w| {
                let d = w.inventory.join(&w.dates[1]);
                std::fs::rename(d.join("manifest.checksum"), d.join("checksum.away")).unwrap();
            },
            flags: &["--end-date", "2024-11-02"],
            outcome: Outcome::Refused(&["--end-date 2024-11-02", "no complete inventory"]),
            recover: Some(|w| {
                let d = w.inventory.join(&w.dates[1]);
                std::fs::rename(d.join("checksum.away"), d.join("manifest.checksum")).unwrap();
            }),
            recover_flags: &[],
        },
        Case {
            name: "manifest.json that does not match manifest.checksum",
            damage: |w| {
                let m = w.inventory.join(&w.dates[1]).join("manifest.json");
                let mut bytes = std::fs::read(&m).unwrap();
                bytes.extend_from_slice(b" ");
                std::fs::write(&m, bytes).unwrap();
            },
            flags: &[],
            outcome: Outcome::Refused(&["manifest.json: MD5 mismatch against manifest.checksum"]),
            recover: Some(|w| {
                let m = w.inventory.join(&w.dates[1]).join("manifest.json");
                let bytes = std::fs::read(&m).unwrap();
                std::fs::write(&m, &bytes[..bytes.len() - 1]).unwrap();
            }),
            recover_flags: &[],
        },
        Case {
            name: "data file whose bytes do not match the manifest's MD5",
            damage: |w| {
                let f = data_file_of(w, &w.dates[1], 0);
                let mut bytes = std::fs::read(&f).unwrap();
                let n = bytes.len();
                bytes[n - 9] ^= 1;
                std::fs::write(&f, bytes).unwrap();
            },
            flags: &[],
            outcome: Outcome::Refused(&["MD5 mismatch: expected"]),
            recover: Some(|w| {
                let f = data_file_of(w, &w.dates[1], 0);
                let mut bytes = std::fs::read(&f).unwrap();
                let n = bytes.len();
                bytes[n - 9] ^= 1;
                std::fs::write(&f, bytes).unwrap();
            }),
            recover_flags: &[],
        },
        Case {
            name: "row with a bad field",
            damage: |w| add_row(w, &w.dates[1], "a.txt", |f| f[3] = "maybe".into()),
            flags: &[],
            outcome: Outcome::Refused(&["added.csv.gz: row 1: field IsLatest", "maybe"]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "row with the wrong number of fields",
            damage: |w| add_row(w, &w.dates[1], "a.txt", |f| f.truncate(4)),
            flags: &[],
            outcome: Outcome::Refused(&["added.csv.gz: row 1: expected 15 fields", "found 4"]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "the same version listed twice, identically (dropped)",
            damage: |w| add_row(w, &w.dates[1], "a.txt", |_| {}),
            flags: &[],
            outcome: Outcome::Applied,
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "the same version listed twice, differently",
            damage: |w| add_row(w, &w.dates[1], "a.txt", |f| f[5] = "12345".into()),
            flags: &[],
            outcome: Outcome::Refused(&["a.txt", "listed twice"]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "a folder marker with bytes (a key ending in '/', size 5)",
            damage: |w| {
                add_row(w, &w.dates[1], "new/on-day-2.txt", |f| {
                    f[1] = "new/folder-with-bytes/".into();
                    f[5] = "5".into();
                })
            },
            flags: &[],
            outcome: Outcome::Refused(&[
                "cannot be stored as paths",
                "new/folder-with-bytes/",
                "folder marker",
            ]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "key with a component longer than NAME_MAX",
            damage: |w| {
                add_row(w, &w.dates[1], "new/on-day-2.txt", |f| {
                    f[1] = format!("new/{}", "n".repeat(256));
                })
            },
            flags: &[],
            outcome: Outcome::Refused(&["cannot be stored as paths", "nnnnnnnn", "255"]),
            recover: None,
            recover_flags: &["--on-bad-key", "skip"],
        },
        Case {
            name: "key that is not UTF-8 once decoded",
            damage: |w| add_row(w, &w.dates[1], "a.txt", |f| f[1] = "a%FF.txt".into()),
            flags: &[],
            outcome: Outcome::Refused(&["added.csv.gz: row 1: field Key", "not valid UTF-8"]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "schema without a required column",
            damage: |w| {
                edit_manifest(&w.inventory, &w.dates[1], |m| {
                    m["fileSchema"] = m["fileSchema"]
                        .as_str()
                        .unwrap()
                        .replace(", ETag", ", Etag2")
                        .into();
                })
            },
            flags: &[],
            outcome: Outcome::Refused(&["ETag"]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "inventory of another bucket",
            damage: |w| {
                edit_manifest(&w.inventory, &w.dates[1], |m| {
                    m["sourceBucket"] = "other".into()
                })
            },
            flags: &[],
            outcome: Outcome::Refused(&["\"other\"", "\"bad-inputs\""]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "--start-date of a date the inventory does not have",
            damage: |_| {},
            flags: &["--start-date", "2024-10-01"],
            outcome: Outcome::Refused(&["--start-date 2024-10-01: no complete inventory"]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "catalog with a damaged block",
            damage: |w| {
                let dir = w.backup.join(format!(".{STEM}/catalog"));
                let manifest: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap())
                        .unwrap();
                let c = dir.join(manifest["base"]["file"].as_str().unwrap());
                let mut bytes = std::fs::read(&c).unwrap();
                bytes[100] ^= 0xff;
                std::fs::write(&c, bytes).unwrap();
            },
            flags: &[],
            outcome: Outcome::Refused(&["catalog/delta-00000002.s3inv"]),
            recover: None,
            recover_flags: &[],
        },
        Case {
            name: "state.json that is not JSON",
            damage: |w| {
                std::fs::write(w.backup.join(format!(".{STEM}/state.json")), b"{not json").unwrap()
            },
            flags: &[],
            outcome: Outcome::Refused(&["state.json"]),
            recover: None,
            recover_flags: &[],
        },
    ]
}

/// Every case: refused (or documented) on the first sync, nothing lost, and recovered.
#[test]
fn bad_inputs_are_refused_and_lose_nothing() {
    let base = base("bad-inputs");
    let mut failures = Vec::new();
    for case in cases() {
        let w = world(&base, case.name);
        let before = full_snapshot(&w.backup);
        (case.damage)(&w);
        let damaged_backup = full_snapshot(&w.backup);
        let out = sync(&w.inventory, &w.backup, case.flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match case.outcome {
            Outcome::Refused(needles) => {
                if out.status.code() != Some(1) {
                    failures.push(format!(
                        "{}: exit {:?}, expected 1: {stderr}",
                        case.name,
                        out.status.code()
                    ));
                }
                for n in needles {
                    if !stderr.contains(n) {
                        failures.push(format!("{}: {n:?} not in: {stderr}", case.name));
                    }
                }
                // The date's index may stay in .<stem>/indexes/ (a cache, reused by the
                // next run if the manifest is the same), and the run history gains the
                // refused run (checked below); nothing else may change.
                let cached = format!(".{STEM}/indexes/");
                let history = format!(".{STEM}/runs.jsonl");
                let after = full_snapshot(&w.backup);
                if let Some(last) = std::fs::read_to_string(w.backup.join(&history))
                    .ok()
                    .and_then(|t| t.lines().last().map(str::to_string))
                {
                    let run: serde_json::Value = serde_json::from_str(&last).unwrap();
                    if run["result"] != "failed" || !run["error"].is_string() {
                        failures.push(format!("{}: history says {last}", case.name));
                    }
                } else if damaged_backup.iter().any(|e| e.0 == format!(".{STEM}/")) {
                    failures.push(format!(
                        "{}: the refused run is not in the history",
                        case.name
                    ));
                }
                let changed: Vec<_> = after
                    .iter()
                    .filter(|e| {
                        !damaged_backup.contains(e) && !e.0.starts_with(&cached) && e.0 != history
                    })
                    .chain(
                        damaged_backup
                            .iter()
                            .filter(|e| !after.contains(e) && e.0 != history),
                    )
                    .map(|e| &e.0)
                    .collect();
                if !changed.is_empty() {
                    failures.push(format!("{}: the backup changed: {changed:?}", case.name));
                }
                // Put things right: undo the damage (or the inventory's own fix), then sync.
                match case.recover {
                    Some(recover) => recover(&w),
                    None if damaged_backup != before => continue,
                    None => {
                        std::fs::remove_dir_all(&w.inventory).unwrap();
                        std::process::Command::new("cp")
                            .arg("-a")
                            .arg(&base.inventory)
                            .arg(&w.inventory)
                            .status()
                            .unwrap();
                    }
                }
                let out = sync(&w.inventory, &w.backup, case.recover_flags);
                if out.status.code() != Some(base.reference_code) {
                    failures.push(format!("{}: sync after recovery: {out:?}", case.name));
                }
            }
            Outcome::Applied => {
                if out.status.code() != Some(base.reference_code) {
                    failures.push(format!(
                        "{}: exit {:?}: {stderr}",
                        case.name,
                        out.status.code()
                    ));
                }
            }
        }
        if user_tree(&w.backup) != base.reference {
            failures.push(format!(
                "{}: the final tree differs from the reference",
                case.name
            ));
        }
        let fsck = cli().arg("fsck").arg(&w.backup).output().unwrap();
        if !fsck.status.success() {
            failures.push(format!(
                "{}: fsck: {}",
                case.name,
                String::from_utf8_lossy(&fsck.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Makes a directory of the backup unwritable for the life of the guard: a read-only bind
/// mount when running as root (root ignores permission bits), mode 0555 otherwise.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            for args in [&["--bind"][..], &["-o", "remount,bind,ro"][..]] {
                let ok = std::process::Command::new("mount")
                    .args(args)
                    .arg(dir)
                    .arg(dir)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "mount {args:?} {} failed", dir.display());
            }
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        ReadOnly(dir.to_path_buf(), root)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.1 {
            std::process::Command::new("umount")
                .arg(&self.0)
                .status()
                .unwrap();
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// A directory the next date must change is read-only: the run stops (exit 1) naming it,
/// having changed nothing in that directory; once it is writable again, the next sync
/// finishes the run and the tree is the reference's.
#[test]
fn a_read_only_subdirectory_stops_the_run_until_it_is_writable() {
    let base = base("bad-inputs-read-only");
    let w = world(&base, "read-only");
    let dir = w.backup.join("dir");
    let dir_before: Vec<_> = full_snapshot(&dir);
    let guard = ReadOnly::new(&dir);
    let out = sync(&w.inventory, &w.backup, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("dir/b.txt"), "{stderr}");
    assert!(
        stderr.contains("Read-only file system") || stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stopped part-way") && stderr.contains("run sync again"),
        "{stderr}"
    );
    assert_eq!(full_snapshot(&dir), dir_before);
    drop(guard);
    let status = cli()
        .args(["status", "--json"])
        .arg(&w.backup)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["pending_runs"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    let out = sync(&w.inventory, &w.backup, &[]);
    assert_eq!(out.status.code(), Some(base.reference_code), "{out:?}");
    assert_eq!(user_tree(&w.backup), base.reference);
    cli().arg("fsck").arg(&w.backup).assert().code(0);
}

/// A versions JSON edited by hand: sync never reads it (the catalog is the truth), fsck
/// names the directory, and `fsck --repair` writes it again from the catalog.
#[test]
fn a_hand_edited_versions_json_is_found_and_rewritten() {
    let base = base("bad-inputs-edited-json");
    let w = world(&base, "edited-json");
    let out = sync(&w.inventory, &w.backup, &[]);
    assert_eq!(out.status.code(), Some(base.reference_code), "{out:?}");
    // big/ does not change after the first date, so no run rewrites its JSON.
    let json = w.backup.join(format!("big/.{STEM}-versions.json"));
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.contains("multipart.bin"), "{text}");
    std::fs::write(&json, text.replace("multipart.bin", "renamed-by-hand.bin")).unwrap();
    let out = cli()
        .args(["fsck", "--json"])
        .arg(&w.backup)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap().into(),
                p["dir"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![("versions-json".to_string(), "big".to_string())]
    );
    // All it found was repaired: exit 0.
    cli()
        .args(["fsck", "--repair", "--no-fetch"])
        .arg(&w.backup)
        .assert()
        .code(0);
    cli().arg("fsck").arg(&w.backup).assert().code(0);
    assert_eq!(user_tree(&w.backup), base.reference);
}

/// Rows that say a version is in an archive tier, or SSE-C encrypted, are recorded as such
/// at plan time, without a request (a GET would only be refused), reported every run, and
/// `--try-archived` asks S3 after all.
#[test]
fn archived_and_sse_c_rows_are_recorded_without_a_request() {
    let base = base("bad-inputs-archived");
    let w = world(&base, "archived");
    // The last date: the versions stay listed, so they are "retryable".
    let date = &w.dates[2];
    // Keys the bucket does not hold: a GET would answer 404 and be reported as missing.
    let from = rows_of(&w, date)[0][1].to_string();
    add_row(&w, date, &from, |f| {
        f[1] = "cold/archived.bin".into();
        f[2] = "archivedversion1".into();
        f[8] = "DEEP_ARCHIVE".into();
    });
    let out = sync(&w.inventory, &w.backup, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("1 version(s) are in an archive storage class"),
        "{stderr}"
    );
    assert!(stderr.contains("sync --try-archived"), "{stderr}");
    let status = |w: &World| status_json(&w.backup);
    let s = status(&w);
    assert_eq!(s["archived"], 1, "{s}");
    if base.reference_code == 0 {
        // Nothing else is missing in this fixture: no request was made for the archived one.
        assert!(!stderr.contains("could not be fetched"), "{stderr}");
    }
    // Asked for: S3 (this one, 404) is asked, and the version is then missing, not archived.
    let out = sync(&w.inventory, &w.backup, &["--try-archived"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cold/archived.bin"), "{stderr}");
    assert_eq!(status(&w)["archived"], 0);

    let w = world(&base, "sse-c");
    add_row(&w, date, &from, |f| {
        f[1] = "secret/customer-key.bin".into();
        f[2] = "ssecversion1".into();
        f[11] = "SSE-C".into();
    });
    let out = sync(&w.inventory, &w.backup, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("customer-provided key (SSE-C)"), "{stderr}");
    assert_eq!(status(&w)["needs_key"], 1);
    // Not retried: a second run asks nothing and says the same.
    let out = sync(&w.inventory, &w.backup, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("customer-provided key (SSE-C)"), "{stderr}");
    assert!(!stderr.contains("secret/customer-key.bin: "), "{stderr}");
}

/// An unversioned (or suspended) bucket's history: several `null` versions of one key with
/// the same bytes (re-uploaded unchanged). Each distinct version gets its own name and is
/// kept; format 1 named them alike, so the second collided and every later sync stopped.
#[test]
fn null_versions_with_one_etag_are_each_kept() {
    let base = base("bad-inputs-null-twins");
    let w = world(&base, "null-twins");
    let key = "pre-versioning.txt";
    // On each later date the key's null version was uploaded again, unchanged: a new null
    // version (a later LastModified), the same ETag and bytes, replacing the one before.
    for (i, date) in w.dates[1..].iter().enumerate() {
        let mut rows = rows_as_fields(&w, date);
        let null = rows
            .iter_mut()
            .find(|r| r[1] == key && r[2].is_empty())
            .expect("the fixture's pre-versioning null version");
        let t = support::backup_model::millis(&null[6]) + (i as i64 + 1) * 3_600_000;
        null[6] = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
            .unwrap()
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap();
        replace_rows(&w, date, &rows);
    }
    let out = sync(&w.inventory, &w.backup, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(base.reference_code), "{stderr}");
    let olds: Vec<String> = std::fs::read_dir(&w.backup)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pre-versioning.txt.old.null-"))
        .collect();
    assert_eq!(olds.len(), 2, "{olds:?}");
    cli()
        .args(["fsck", "--verify-content"])
        .arg(&w.backup)
        .assert()
        .code(0);
    // Later syncs go on (they stopped on the collision before): up to date, exit 0 unless
    // versions still listed are not held.
    let out = sync(&w.inventory, &w.backup, &[]);
    let status = status_json(&w.backup);
    let want = if status["not_held"] == 0 { 0 } else { 2 };
    assert_eq!(out.status.code(), Some(want), "{out:?} {status}");
}

fn rows_as_fields(w: &World, date: &str) -> Vec<Vec<String>> {
    rows_of(w, date)
        .iter()
        .map(|r| r.iter().map(str::to_string).collect())
        .collect()
}

/// Makes `rows` the whole of `date`'s inventory (one new data file; manifest and checksum
/// rewritten to match).
fn replace_rows(w: &World, date: &str, rows: &[Vec<String>]) {
    let text: String = rows.iter().map(|r| csv_line(r)).collect();
    edit_manifest(&w.inventory, date, |m| m["files"] = serde_json::json!([]));
    add_data_file(
        &w.inventory,
        date,
        &format!("replaced-{date}.csv.gz"),
        &gzip(text.as_bytes()),
    );
}

/// An inventory that changes an immutable field of a version the backup holds (its ETag
/// and size): reported loudly, and the held file is kept as it is (not renamed under the
/// new ETag, not fetched again).
#[test]
fn an_inventory_that_rewrites_a_held_version_is_an_anomaly() {
    let base = base("bad-inputs-anomaly");
    let w = world(&base, "anomaly");
    let date = &w.dates[1];
    let held_rows = rows_as_fields(&w, &w.dates[0]);
    let v1 = held_rows
        .iter()
        .find(|r| r[1] == "a.txt")
        .expect("a.txt on the first date")
        .clone();
    let mut rows = rows_as_fields(&w, date);
    let forged = "00000000000000000000000000000000";
    let row = rows
        .iter_mut()
        .find(|r| r[1] == "a.txt" && r[2] == v1[2])
        .expect("a.txt's first version still listed");
    row[7] = forged.into();
    row[5] = "999".into();
    replace_rows(&w, date, &rows);
    let out = sync(&w.inventory, &w.backup, &["--end-date", date]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(matches!(out.status.code(), Some(0 | 2)), "{stderr}");
    assert!(stderr.contains("ANOMALY: 1 version(s)"), "{stderr}");
    assert!(
        stderr.contains(&format!("the inventory says 999 bytes, ETag {forged}")),
        "{stderr}"
    );
    let names: Vec<String> = std::fs::read_dir(&w.backup)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(forged)), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n == &format!("a.txt.old.{}.{}", v1[2], v1[7])),
        "{names:?}"
    );
    cli()
        .args(["fsck", "--verify-content"])
        .arg(&w.backup)
        .assert()
        .code(0);
}

/// Prune, then undelete: a pruned old version that becomes current again (its delete marker
/// removed) is fetched back into the mirror; the other pruned versions stay pruned.
#[test]
fn a_pruned_version_that_becomes_current_again_is_fetched_back() {
    let base = base("bad-inputs-prune-undelete");
    let w = world(&base, "prune-undelete");
    // Day 2 deletes dir/b.txt (its version becomes old), day 3 removes the delete marker.
    let out = sync(&w.inventory, &w.backup, &["--end-date", &w.dates[1]]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
    assert!(!w.backup.join("dir/b.txt").exists());
    cli()
        .arg("prune")
        .arg(&w.backup)
        .args(["--noncurrent-older-than", "1d"])
        .assert()
        .code(0);
    let old_b = std::fs::read_dir(w.backup.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("b.txt.old."))
        .count();
    assert_eq!(old_b, 0, "prune left dir/b.txt's old version");
    let out = sync(&w.inventory, &w.backup, &[]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
    assert_eq!(
        std::fs::read(w.backup.join("dir/b.txt")).unwrap(),
        b"b version 1",
        "the undeleted version is back in the mirror"
    );
    cli().arg("fsck").arg(&w.backup).assert().code(0);

    // A catalog where a current version is pruned (an earlier build left undeletes so):
    // fsck reports its file missing, and --repair downloads it.
    let backup = s3invbackup::Backup::open_existing(&w.backup).unwrap();
    s3invbackup::backup::catalog::store::edit(&backup, |rec| {
        if rec.key == "dir/b.txt" && rec.is_latest() {
            rec.local.state = s3invbackup::model::record::LocalState::Pruned;
        }
    })
    .unwrap();
    std::fs::remove_file(w.backup.join("dir/b.txt")).unwrap();
    let out = cli()
        .args(["fsck", "--json"])
        .arg(&w.backup)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("missing") && stdout.contains("dir/b.txt"),
        "{stdout}"
    );
    let out = cli()
        .args(["fsck", "--repair", "--inventory"])
        .arg(&w.inventory)
        .arg(&w.backup)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read(w.backup.join("dir/b.txt")).unwrap(),
        b"b version 1"
    );
}

/// A directory of the tree replaced by a symbolic link (moved to another disk, or planted):
/// sync stops before writing through it, naming the link and the fix; fsck reports it and
/// --repair changes nothing through it; once it is a real directory again, sync finishes.
#[test]
fn a_symlinked_directory_is_never_written_through() {
    let base = base("bad-inputs-symlink");
    let w = world(&base, "symlink");
    let elsewhere = w.backup.parent().unwrap().join("moved-dir");
    std::fs::rename(w.backup.join("dir"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.backup.join("dir")).unwrap();
    let outside_before = full_snapshot(&elsewhere);
    let out = sync(&w.inventory, &w.backup, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a symbolic link") && stderr.contains("/dir"),
        "{stderr}"
    );
    assert_eq!(full_snapshot(&elsewhere), outside_before);
    let fsck = cli()
        .args(["fsck", "--json"])
        .arg(&w.backup)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&fsck.stdout).into_owned();
    assert_eq!(fsck.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        doc["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["problem"] == "symlink" && p["path"] == "dir"),
        "{stdout}"
    );
    let repair = cli()
        .args(["fsck", "--repair", "--no-fetch"])
        .arg(&w.backup)
        .output()
        .unwrap();
    assert_eq!(repair.status.code(), Some(1), "{repair:?}");
    assert_eq!(full_snapshot(&elsewhere), outside_before);
    // Made a real directory again: the interrupted run finishes to the reference tree.
    std::fs::remove_file(w.backup.join("dir")).unwrap();
    std::fs::rename(&elsewhere, w.backup.join("dir")).unwrap();
    let out = sync(&w.inventory, &w.backup, &[]);
    assert_eq!(out.status.code(), Some(base.reference_code), "{out:?}");
    assert_eq!(user_tree(&w.backup), base.reference);
}

/// `status --json` of a backup.
fn status_json(backup: &Path) -> serde_json::Value {
    let out = cli()
        .args(["status", "--json"])
        .arg(backup)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_mirror_directory_removed_by_hand_is_repaired() {
    let w = base("hand-removed");
    let out = sync(&w.inventory, &w.backup, &[]);
    assert_eq!(out.status.code(), Some(w.reference_code), "{out:?}");
    let before = user_tree(&w.backup);
    // The operator removes a whole directory of the mirror, versions JSON and all.
    std::fs::remove_dir_all(w.backup.join("dir")).unwrap();
    // (--inventory: this copy's; the one recorded at creation was a temporary directory.)
    let out = cli()
        .args(["fsck", "--repair", "--progress", "none", "--inventory"])
        .arg(&w.inventory)
        .arg(&w.backup)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{said}");
    assert_eq!(user_tree(&w.backup), before, "{said}");
    let out = cli()
        .args(["fsck", "--verify-content"])
        .arg(&w.backup)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The next sync is an ordinary one (no "run fsck --repair" loop).
    let out = sync(&w.inventory, &w.backup, &[]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
    assert_eq!(user_tree(&w.backup), before);
    // Offline: the repair marks the versions missing (exit 2), the next sync fetches them.
    std::fs::remove_dir_all(w.backup.join("dir")).unwrap();
    let out = cli()
        .args(["fsck", "--repair", "--no-fetch", "--progress", "none"])
        .arg(&w.backup)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = sync(&w.inventory, &w.backup, &[]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
    assert_eq!(user_tree(&w.backup), before);
    let out = cli().arg("fsck").arg(&w.backup).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn restored(backup: &Path, at: &str, dest: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let out = cli()
        .args(["restore", "--progress", "none"])
        .arg(backup)
        .args(["--at", at])
        .arg(dest)
        .output()
        .unwrap();
    // 2: some version of the moment is not held (to-expire.txt's first version expired
    // before this backup began).
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "restore --at {at}: {out:?}"
    );
    user_tree(dest)
        .into_iter()
        .filter(|(path, ..)| dest.join(path).is_file())
        .map(|(path, ..)| {
            let bytes = std::fs::read(dest.join(&path)).unwrap();
            (path, bytes)
        })
        .collect()
}

/// `restore --at` and `locate --at` answer at an inventory date's moment with what that
/// date listed as latest, even where LastModified orders the versions otherwise (a
/// multipart upload's LastModified is when it began: hours before it completed and became
/// current); between dates, LastModified counts only where the inventories agree with it.
/// Delete markers count while they were listed, including one later removed (an undelete).
#[test]
fn restore_at_a_date_is_what_that_date_listed_as_latest() {
    let base = base("bad-inputs-islatest");
    let w = world(&base, "islatest");
    let key = "a.txt";
    // a.txt's versions get LastModified times on the inventory dates' timeline: version 1
    // half an hour before date 1, version 2 an hour before date 1 (begun first, completed
    // after date 1: listed from date 2, as latest), version 3 an hour after date 2.
    let at_ms = |date: &str, offset_min: i64| {
        let t = support::backup_model::millis(&support::date_moment(date)) + offset_min * 60_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
            .unwrap()
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap()
    };
    let ids: Vec<String> = w
        .dates
        .iter()
        .map(|d| {
            rows_as_fields(&w, d)
                .into_iter()
                .find(|r| r[1] == key && r[3] == "true")
                .unwrap_or_else(|| panic!("a.txt's latest on {d}"))[2]
                .clone()
        })
        .collect();
    let times = [
        at_ms(&w.dates[0], -30),
        at_ms(&w.dates[0], -60),
        at_ms(&w.dates[1], 60),
    ];
    for date in &w.dates {
        let mut rows = rows_as_fields(&w, date);
        for r in rows.iter_mut().filter(|r| r[1] == key) {
            let v = ids
                .iter()
                .position(|id| *id == r[2])
                .expect("a.txt's three versions");
            r[6] = times[v].clone();
        }
        replace_rows(&w, date, &rows);
    }
    let backup = w.backup.with_file_name("fresh");
    let out = sync(&w.inventory, &backup, &["--start-date", &w.dates[0]]);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
    let tmp = tempfile::tempdir().unwrap();
    let bodies: Vec<_> = w
        .dates
        .iter()
        .enumerate()
        .map(|(i, d)| {
            restored(
                &backup,
                &support::date_moment(d),
                &tmp.path().join(format!("at-{i}")),
            )
        })
        .collect();
    assert_eq!(bodies[0][key], b"a version 1");
    assert_eq!(
        bodies[1][key], b"a version 2, longer",
        "date 2 listed version 2 as latest (LastModified would say version 1)"
    );
    assert_eq!(bodies[2][key], b"a version 3");
    // dir/b.txt: deleted on date 2 (its delete marker listed), undeleted on date 3.
    assert!(bodies[0].contains_key("dir/b.txt"));
    assert!(
        !bodies[1].contains_key("dir/b.txt"),
        "{:?}",
        bodies[1].keys()
    );
    assert!(bodies[2].contains_key("dir/b.txt"));
    // Just after date 1, version 2 had not been listed: its LastModified before date 1 is
    // contradicted by date 1's inventory, so it counts from date 2. Between dates 2 and 3,
    // version 3 counts from its LastModified (date 3 listed it: the inventories agree).
    for (at, want) in [
        (at_ms(&w.dates[0], 1), &b"a version 1"[..]),
        (at_ms(&w.dates[1], 30), b"a version 2, longer"),
        (at_ms(&w.dates[1], 90), b"a version 3"),
    ] {
        let dest = tmp.path().join(format!("between-{}", at.replace(':', "-")));
        assert_eq!(restored(&backup, &at, &dest)[key], want, "at {at}");
    }
    // locate --at agrees with restore.
    let located = cli()
        .args(["locate"])
        .arg(&backup)
        .args([key, "--at", &support::date_moment(&w.dates[1])])
        .output()
        .unwrap();
    assert!(located.status.success(), "{located:?}");
    let path = String::from_utf8(located.stdout).unwrap();
    assert_eq!(
        std::fs::read(path.trim()).unwrap(),
        b"a version 2, longer",
        "locate --at date 2 gave {path}"
    );
}
