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
