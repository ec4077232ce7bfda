//! CSV, Parquet and ORC inventories of one bucket history (the Parquet and ORC files written
//! by pyarrow, an independent writer, in AWS's layout) give the same `dump` and the same
//! backup, read locally or from S3, presorted or shuffled; and every bad columnar input is
//! refused with the file and column named, leaving the index and the backup as they were.

mod support;

use std::path::{Path, PathBuf};

use support::backup_model::snapshot;
use support::*;

const FORMATS: [&str; 3] = ["csv", "parquet", "orc"];

/// The inventory of `format` as fixtures.py wrote it (the first format to ROOT and LOCAL).
fn sources(local: &Path, s3_url: &str, format: &str) -> [String; 2] {
    if format == "csv" {
        return [local.display().to_string(), s3_url.to_string()];
    }
    [
        format!("{}-{format}", local.display()),
        format!("{}-{format}/", s3_url.trim_end_matches('/')),
    ]
}

fn index(inventory: &str, date: &str, out: &Path) -> String {
    let o = cli()
        .arg("index")
        .arg(inventory)
        .args(["--date", date, "-o"])
        .arg(out)
        .assert()
        .success();
    String::from_utf8_lossy(&o.get_output().stderr).into_owned()
}

fn dump(path: &Path, format: &str) -> Vec<u8> {
    cli()
        .arg("dump")
        .arg(path)
        .args(["--format", format])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone()
}

fn same_dumps(name: &str, extra: &[&str], presorted: bool) {
    use_server();
    let mut args = vec!["--formats", "csv,parquet,orc", "--files", "3"];
    args.extend_from_slice(extra);
    let fx = fixture(name, &args);
    let dir = tempfile::tempdir().unwrap();
    for date in fx.dates() {
        let rows = fx.model[&date].as_array().unwrap().len();
        let mut reference: Option<(Vec<u8>, Vec<u8>)> = None;
        for format in FORMATS {
            for (n, inventory) in sources(&fx.local, &fx.s3_url, format).iter().enumerate() {
                let out = dir.path().join(format!("{date}-{format}-{n}.idx"));
                let said = index(inventory, &date, &out);
                assert!(
                    said.contains(&format!("rows {rows} ")),
                    "{inventory} {date}: expected {rows} rows: {said}"
                );
                assert_eq!(
                    said.contains("presorted input"),
                    presorted,
                    "{inventory} {date}: {said}"
                );
                let dumps = (dump(&out, "csv"), dump(&out, "jsonl"));
                assert_eq!(
                    String::from_utf8_lossy(&dumps.1).lines().count(),
                    rows,
                    "{inventory} {date}"
                );
                match &reference {
                    None => reference = Some(dumps),
                    Some(r) => {
                        assert!(
                            r.0 == dumps.0 && r.1 == dumps.1,
                            "{inventory} {date}: dump differs from the CSV one:\n{}\n---\n{}",
                            String::from_utf8_lossy(&r.1),
                            String::from_utf8_lossy(&dumps.1)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn three_formats_give_the_same_dump() {
    // Five rows per Parquet row group: files of several row groups.
    same_dumps("formats-sorted", &["--row-group-rows", "5"], true);
}

#[test]
fn three_formats_give_the_same_dump_shuffled() {
    same_dumps("formats-shuffled", &["--shuffle"], false);
}

/// Each format backs up every date while the bucket is in that date's state: the three
/// backups are the same tree, byte for byte (the state directory aside, whose catalog
/// remembers each inventory's own fileSchema).
#[test]
fn three_formats_give_the_same_backup() {
    use_server();
    let mut generator = fixture_stepper(
        "formats-sync",
        &["--scenario", "sync", "--formats", "csv,parquet,orc"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let backups: Vec<PathBuf> = FORMATS.iter().map(|f| tmp.path().join(f)).collect();
    let mut day = 0;
    while let Some(date) = generator.next_date() {
        day += 1;
        for (format, backup) in FORMATS.iter().zip(&backups) {
            // Alternate the source: local one day, S3 the next.
            let inventory = sources(&generator.local, &generator.s3_url, format)[day % 2].clone();
            let o = cli()
                .arg("sync")
                .arg(&inventory)
                .arg(backup)
                // The scenario's first day holds keys the layout refuses: skipped, and
                // remembered as skipped on later days.
                .args(["--progress", "none", "--jobs", "8", "--on-bad-key", "skip"])
                .assert();
            assert!(
                o.get_output().status.success(),
                "{format} {date}: {}",
                String::from_utf8_lossy(&o.get_output().stderr)
            );
        }
        let trees: Vec<_> = backups.iter().map(|b| content(b)).collect();
        assert!(
            !trees[0].is_empty() || day == 1,
            "{date}: nothing backed up"
        );
        for (format, tree) in FORMATS.iter().zip(&trees).skip(1) {
            assert_eq!(
                &trees[0], tree,
                "{date}: the {format} backup differs from CSV's"
            );
        }
        generator.go_on();
    }
    assert!(day >= 3, "the scenario has several dates");
}

/// Every file outside the state directory: path, size, content hash, and the mtime of the
/// objects (directories and versions files carry the time of the run that wrote them).
fn content(root: &Path) -> Vec<(String, u64, i64, String)> {
    if !root.exists() {
        return Vec::new();
    }
    snapshot(root)
        .into_iter()
        .filter(|(p, ..)| !p.starts_with(".s3invbackup"))
        .map(|(p, size, mtime, _)| {
            let path = root.join(&p);
            let object = path.is_file() && !p.ends_with(".s3invbackup-versions.json");
            let hash = if path.is_file() {
                md5_hex(&std::fs::read(&path).unwrap())
            } else {
                String::new()
            };
            (p, size, if object { mtime } else { 0 }, hash)
        })
        .collect()
}

/// A copy of `src` (an inventory directory) at `dst`.
fn copy_dir(src: &Path, dst: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {src:?} {dst:?}");
}

/// Damages the first data file of `date` (scripts/harness/bad_columnar.py); returns the
/// file's name and the column at fault ("-" for none).
fn damage(inventory: &Path, date: &str, mode: &str) -> (String, String) {
    let out = std::process::Command::new(venv().join("bin/python"))
        .arg(repo().join("scripts/harness/bad_columnar.py"))
        .arg(inventory)
        .arg(date)
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bad_columnar.py {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["file"].as_str().unwrap().to_string(),
        v["column"].as_str().unwrap().to_string(),
    )
}

#[test]
fn bad_columnar_inputs_are_refused_by_name() {
    use_server();
    let fx = fixture(
        "formats-bad",
        &["--formats", "csv,parquet,orc", "--files", "2"],
    );
    let date = fx.dates().last().unwrap().clone();
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        ("md5", &["parquet", "orc"], "MD5 mismatch"),
        ("truncated", &["parquet", "orc"], "not a readable"),
        (
            "missing-column",
            &["parquet", "orc"],
            "lacks required column(s) e_tag",
        ),
        (
            "wrong-type",
            &["parquet", "orc"],
            "has type Utf8; expected an integer",
        ),
        (
            "null-key",
            &["parquet", "orc"],
            "null where a value is required",
        ),
        (
            "null-time",
            &["parquet", "orc"],
            "null where a value is required",
        ),
        ("brotli", &["parquet"], "compressed with BROTLI"),
        ("encrypted", &["parquet"], "modular encryption"),
    ];
    for (mode, formats, says) in cases {
        for format in *formats {
            let inventory = tmp.path().join(format!("{mode}-{format}"));
            copy_dir(
                Path::new(&sources(&fx.local, &fx.s3_url, format)[0]),
                &inventory,
            );
            let (file, column) = damage(&inventory, &date, mode);
            let out = tmp.path().join(format!("{mode}-{format}.idx"));
            let o = cli()
                .arg("index")
                .arg(&inventory)
                .args(["--date", &date, "-o"])
                .arg(&out)
                .assert()
                .failure();
            let stderr = String::from_utf8_lossy(&o.get_output().stderr);
            assert_eq!(
                o.get_output().status.code(),
                Some(1),
                "{mode} {format}: {stderr}"
            );
            assert!(
                stderr.contains(&file),
                "{mode} {format}: file not named: {stderr}"
            );
            assert!(stderr.contains(says), "{mode} {format}: {stderr}");
            if column != "-" {
                assert!(
                    stderr.contains(&format!("column {column}"))
                        || stderr.contains(&format!("field {column}"))
                        || stderr.contains(&format!("column(s) {column}")),
                    "{mode} {format}: column {column} not named: {stderr}"
                );
            }
            if mode.starts_with("null") {
                assert!(
                    stderr.contains("row 2"),
                    "{mode} {format}: row not named: {stderr}"
                );
            }
            assert!(!out.exists(), "{mode} {format}: an index was written");
            let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".s3invbackup"))
                .collect();
            assert!(
                leftovers.is_empty(),
                "{mode} {format}: temporary files left"
            );
        }
    }
}

/// A backup made from good Parquet dates is left exactly as it was when a later date's file
/// is bad, and the run can go on once the inventory is good.
#[test]
fn a_bad_columnar_date_leaves_the_backup_untouched() {
    use_server();
    let fx = fixture(
        "formats-bad-sync",
        &["--formats", "parquet", "--files", "2"],
    );
    let dates = fx.dates();
    let tmp = tempfile::tempdir().unwrap();
    let inventory = tmp.path().join("inventory");
    copy_dir(&fx.local, &inventory);
    let backup = tmp.path().join("backup");
    let sync = |end: &str| {
        cli()
            .arg("sync")
            .arg(&inventory)
            .arg(&backup)
            .args([
                "--start-date",
                &dates[0],
                "--end-date",
                end,
                "--progress",
                "none",
            ])
            .assert()
    };
    // The basic scenario expires a version before the last date: exit 2, one version failed.
    let partial = |o: assert_cmd::assert::Assert| {
        let code = o.get_output().status.code();
        assert!(matches!(code, Some(0 | 2)), "{o:?}");
    };
    partial(sync(&dates[dates.len() - 2]));
    let before = snapshot(&backup);
    let last = dates.last().unwrap();
    let (file, _) = damage(&inventory, last, "null-key");
    let o = sync(last).failure();
    let stderr = String::from_utf8_lossy(&o.get_output().stderr);
    assert!(
        stderr.contains(&file) && stderr.contains("field key"),
        "{stderr}"
    );
    let after = snapshot(&backup);
    let tree = |s: &[(String, u64, i64, u64)]| {
        s.iter()
            .filter(|(p, ..)| !p.starts_with(".s3invbackup"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(tree(&before), tree(&after), "the backup changed");
    // The good inventory again: the run goes on from where the backup stood.
    std::fs::remove_dir_all(&inventory).unwrap();
    copy_dir(&fx.local, &inventory);
    partial(sync(last));
    assert_ne!(
        tree(&before),
        tree(&snapshot(&backup)),
        "the last date was not applied"
    );
}

/// A file that made orc-rust panic (found by the orc_file fuzz target) is an error naming the
/// reader, not a crash: the run reports that file and stops cleanly.
#[test]
fn a_reader_panic_is_an_error() {
    use s3invbackup::inventory::{Columns, Format, RowParser, read_columnar_file};
    let bad = repo().join("fuzz/seeds/orc_file/bug-stripe-footer-panic.orc");
    let names = Format::Orc.schema_names(
        "struct<bucket:string,key:string,size:bigint,last_modified_date:timestamp,e_tag:string>",
    );
    let parser = RowParser::new(Columns::from_names(Format::Orc, &names).unwrap(), "b");
    let err = read_columnar_file(std::fs::File::open(bad).unwrap(), &parser, |_| {})
        .expect_err("a damaged file is an error");
    assert!(
        format!("{err:#}").contains("the ORC reader failed on this file"),
        "{err:#}"
    );
}
