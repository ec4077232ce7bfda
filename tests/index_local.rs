//! `index` and `dump` on local synthetic inventories: the index equals an independent
//! oracle (the generator's rows, sorted by the std sort) whatever the row order, file split,
//! memory budget or thread count; every bad input is a clear error that leaves no file.

mod support;

use std::path::Path;

use proptest::prelude::*;
use s3invbackup::index::IndexReader;
use s3invbackup::inventory::synth::{SynthSpec, generate, write_inventory};
use s3invbackup::model::record::VersionRecord;
use support::*;

const DATE: &str = "2024-11-06T01-00Z";

fn spec(rows: u64, files: usize, shuffle: bool, seed: u64) -> SynthSpec {
    SynthSpec {
        rows,
        files,
        shuffle,
        seed,
        source_bucket: "synthetic-archive".into(),
        date: DATE.into(),
    }
}

fn oracle(rows: &[VersionRecord]) -> Vec<VersionRecord> {
    let mut sorted = rows.to_vec();
    sorted.sort_by(|a, b| a.cmp_order(b));
    sorted
}

fn build(root: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    cli()
        .arg("index")
        .arg(root)
        .args(["--date", "2024-11-06", "-o"])
        .arg(out)
        .args(["--progress", "none"])
        .args(extra)
        .assert()
}

fn read_all(path: &Path) -> Vec<VersionRecord> {
    IndexReader::open(path)
        .unwrap()
        .stream()
        .collect::<anyhow::Result<_>>()
        .unwrap()
}

/// An index's bytes with the manifest's MD5 blanked out of its header (two inventories with
/// the same rows in different files have different manifests) and the header's CRC with it.
fn without_manifest_md5(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let meta_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&bytes[16..16 + meta_len]).unwrap();
    let md5 = meta["manifest_md5"].as_str().unwrap().to_string();
    assert_eq!(md5.len(), 32);
    let header = String::from_utf8_lossy(&bytes[16..16 + meta_len]).into_owned();
    let at = 16 + header.find(&md5).unwrap();
    bytes[at..at + 32].fill(b'0');
    bytes[16 + meta_len..16 + meta_len + 4].fill(0);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Any row order and any split into files gives the same index, byte for byte (but the
    /// manifest's MD5 in the header), and
    /// its records are exactly the oracle's.
    #[test]
    fn any_row_order_gives_the_same_index(
        seed in 0u64..4,
        files in 1usize..7,
        shuffle_seed in 0u64..1000,
        memory in prop_oneof![Just("64KiB"), Just("1MiB"), Just("1GiB")],
        threads in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rows = generate(&spec(3000, 1, false, seed));
        let reference = dir.path().join("ref");
        write_inventory(&reference, &spec(3000, 1, false, seed), &rows).unwrap();
        build(&reference, &dir.path().join("ref.idx"), &[]).success();

        let shuffled = dir.path().join("shuffled");
        write_inventory(&shuffled, &spec(3000, files, true, shuffle_seed), &rows).unwrap();
        let out = dir.path().join("shuffled.idx");
        build(&shuffled, &out, &["--memory", memory, "--threads", &threads.to_string()]).success();

        prop_assert_eq!(without_manifest_md5(&dir.path().join("ref.idx")), without_manifest_md5(&out));
        prop_assert_eq!(read_all(&out), oracle(&rows));
    }
}

#[test]
fn more_runs_than_open_files_are_merged_in_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let rows = generate(&spec(60_000, 9, true, 7));
    write_inventory(dir.path(), &spec(60_000, 9, true, 7), &rows).unwrap();
    let out = dir.path().join("x.idx");
    let assert = build(dir.path(), &out, &["--memory", "64KiB", "--threads", "1"]).success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let runs: usize = stderr
        .split("external sort, ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        runs > s3invbackup::index::sort::MAX_OPEN_RUNS,
        "only {runs} runs: {stderr}"
    );
    assert_eq!(read_all(&out), oracle(&rows));
}

#[test]
fn presorted_files_take_the_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let rows = generate(&spec(5000, 5, false, 3));
    write_inventory(dir.path(), &spec(5000, 5, false, 3), &rows).unwrap();
    let out = dir.path().join("x.idx");
    build(dir.path(), &out, &["--memory", "64KiB"])
        .success()
        .stderr(predicates::str::contains("presorted input (no spill)"));
    assert_eq!(read_all(&out), oracle(&rows));
}

#[test]
fn duplicate_rows_are_dropped_and_conflicting_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = generate(&spec(300, 1, false, 5));
    rows.push(rows[10].clone());
    write_inventory(dir.path(), &spec(300, 2, true, 5), &rows).unwrap();
    let out = dir.path().join("x.idx");
    build(dir.path(), &out, &[])
        .success()
        .stderr(predicates::str::contains("1 duplicate rows dropped"));
    rows.pop();
    assert_eq!(read_all(&out), oracle(&rows));

    let mut conflicting = rows.clone();
    let mut twin = rows[10].clone();
    twin.size += 1;
    conflicting.push(twin);
    let dir2 = tempfile::tempdir().unwrap();
    write_inventory(dir2.path(), &spec(300, 2, true, 5), &conflicting).unwrap();
    build(dir2.path(), &dir2.path().join("x.idx"), &[])
        .failure()
        .stderr(predicates::str::contains(format!(
            "key {:?} version {} is listed twice",
            rows[10].key, rows[10].version_id
        )));
    assert!(!dir2.path().join("x.idx").exists());
}

#[test]
fn duplicates_are_counted_with_the_external_sort() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = generate(&spec(5000, 1, false, 6));
    rows.push(rows[100].clone());
    // Shuffled, small buffers: the twins meet inside a run or in the final merge; both count.
    write_inventory(dir.path(), &spec(5000, 1, true, 6), &rows).unwrap();
    let out = dir.path().join("x.idx");
    build(dir.path(), &out, &["--memory", "64KiB", "--threads", "1"])
        .success()
        .stderr(
            predicates::str::contains("external sort")
                .and(predicates::str::contains("1 duplicate rows dropped")),
        );
    rows.pop();
    assert_eq!(read_all(&out), oracle(&rows));
}

#[test]
fn dump_prints_csv_and_jsonl_and_seeks_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let rows = generate(&spec(20_000, 3, false, 11));
    write_inventory(dir.path(), &spec(20_000, 3, false, 11), &rows).unwrap();
    let out = dir.path().join("x.idx");
    build(dir.path(), &out, &[]).success();
    let sorted = oracle(&rows);
    let prefix = sorted[sorted.len() / 2]
        .key
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    let expected: Vec<&VersionRecord> = sorted
        .iter()
        .filter(|r| r.key.starts_with(&prefix))
        .collect();
    assert!(!expected.is_empty());

    let jsonl = cli()
        .arg("dump")
        .arg(&out)
        .args(["--format", "jsonl", "--prefix", &prefix])
        .assert()
        .success();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&jsonl.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected.len());
    for (line, rec) in lines.iter().zip(&expected) {
        assert_eq!(line["key"], rec.key.as_str());
        assert_eq!(line["version_id"], rec.version_id.as_str());
        assert_eq!(line["size"], rec.size);
        assert_eq!(line["last_modified"], rec.last_modified.to_string());
        assert_eq!(line["is_latest"], rec.is_latest());
        assert_eq!(line["is_delete_marker"], rec.is_delete_marker());
        assert_eq!(
            line["etag"],
            rec.etag.map(|e| e.to_string()).unwrap_or_default()
        );
    }

    let csv = cli().arg("dump").arg(&out).assert().success();
    let text = String::from_utf8_lossy(&csv.get_output().stdout).into_owned();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>()[..3],
        ["key", "version_id", "is_latest"]
    );
    let keys: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    assert_eq!(
        keys,
        sorted.iter().map(|r| r.key.clone()).collect::<Vec<_>>()
    );
}

// ---- bad inputs: each is a clear error naming the file, and leaves no output behind ----

struct Bad {
    dir: tempfile::TempDir,
    rows: Vec<VersionRecord>,
}

impl Bad {
    fn new() -> Bad {
        let dir = tempfile::tempdir().unwrap();
        let rows = generate(&spec(200, 2, false, 9));
        write_inventory(&dir.path().join("inv"), &spec(200, 2, false, 9), &rows).unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Bad { dir, rows }
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("inv")
    }
    fn data_files(&self) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self.root().join("data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }
    /// Runs `index`, expects failure with every one of `needles` in the message.
    fn fails_with(&self, needles: &[&str]) {
        let out_dir = self.dir.path().join("out");
        let assert = build(&self.root(), &out_dir.join("x.idx"), &[])
            .failure()
            .code(1);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        for n in needles {
            assert!(stderr.contains(n), "expected {n:?} in: {stderr}");
        }
        assert!(
            listing(&out_dir).is_empty(),
            "left behind: {:?}",
            listing(&out_dir)
        );
    }
    fn add_rows(&self, csv_text: &str) {
        add_data_file(&self.root(), DATE, "bad.csv.gz", &gzip(csv_text.as_bytes()));
    }
}

const GOOD_TAIL: &str = r#""1","2022-12-12T13:20:39.000Z","627c47efe292876b91978324485cd2ec","STANDARD","false","SSE-S3""#;

#[test]
fn manifest_checksum_mismatch() {
    let b = Bad::new();
    std::fs::write(
        b.root().join(DATE).join("manifest.checksum"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    b.fails_with(&[
        "manifest.json",
        "expected 0123456789abcdef0123456789abcdef",
        "actual",
    ]);
}

#[test]
fn data_file_md5_mismatch() {
    let b = Bad::new();
    let victim = b.data_files()[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 1; // inside the gzip trailer's CRC: still decompresses, MD5 differs
    std::fs::write(&victim, &bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let stderr_needles = [name.as_str()];
    b.fails_with(&stderr_needles);
}

#[test]
fn data_file_md5_mismatch_is_named_as_such() {
    let b = Bad::new();
    let victim = b.data_files()[1].clone();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    edit_manifest(&b.root(), DATE, |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["key"].as_str().unwrap().ends_with(&name) {
                f["MD5checksum"] = "ffffffffffffffffffffffffffffffff".into();
            }
        }
    });
    b.fails_with(&[
        &name,
        "MD5 mismatch",
        "expected ffffffffffffffffffffffffffffffff",
        "actual",
    ]);
}

#[test]
fn truncated_gzip() {
    let b = Bad::new();
    let victim = b.data_files()[0].clone();
    let bytes = std::fs::read(&victim).unwrap();
    let cut = &bytes[..bytes.len() / 2];
    std::fs::write(&victim, cut).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    // The manifest agrees with the truncated file, so only the gzip stream can tell.
    edit_manifest(&b.root(), DATE, |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["key"].as_str().unwrap().ends_with(&name) {
                f["MD5checksum"] = md5_hex(cut).into();
                f["size"] = cut.len().into();
            }
        }
    });
    b.fails_with(&[&name, "truncated or corrupt gzip"]);
}

#[test]
fn missing_column() {
    let b = Bad::new();
    edit_manifest(&b.root(), DATE, |m| {
        m["fileSchema"] =
            "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, StorageClass".into()
    });
    b.fails_with(&[
        "manifest.json",
        "lacks required column(s) LastModifiedDate, ETag",
    ]);
}

#[test]
fn unknown_file_format() {
    let b = Bad::new();
    // A columnar format whose fileSchema is a CSV list: the mismatch is named.
    edit_manifest(&b.root(), DATE, |m| m["fileFormat"] = "Parquet".into());
    b.fails_with(&["is not a Parquet schema, as fileFormat says it is"]);
    edit_manifest(&b.root(), DATE, |m| m["fileFormat"] = "JSON".into());
    b.fails_with(&["unknown fileFormat \"JSON\"", "CSV, ORC or Parquet"]);
}

#[test]
fn malformed_row() {
    let b = Bad::new();
    b.add_rows(&format!("\"synthetic-archive\",\"k/ok\",\"v1\",\"true\",\"false\",{GOOD_TAIL}\n\"synthetic-archive\",\"k/bad\",\"v2\",\"maybe\",\"false\",{GOOD_TAIL}\n"));
    b.fails_with(&["bad.csv.gz: row 2: field IsLatest", "\"maybe\"", "k/bad"]);
}

/// A bad row in a file that is not the one the manifest describes is a symptom: the error
/// is the MD5 mismatch (which, from S3, makes the file be read again), the row comes second.
#[test]
fn a_bad_row_in_a_file_that_fails_its_md5_is_blamed_on_the_md5() {
    let b = Bad::new();
    b.add_rows(&format!(
        "\"synthetic-archive\",\"k/ok\",\"v1\",\"true\",\"false\",{GOOD_TAIL}\n"
    ));
    let victim = b.root().join("data/bad.csv.gz");
    std::fs::write(&victim, gzip(b"\"synthetic-archive\",\"k/short\"\n")).unwrap();
    b.fails_with(&[
        "bad.csv.gz: size mismatch",
        "seen first as: ",
        "row 1: expected 11 fields",
    ]);
}

#[test]
fn wrong_field_count() {
    let b = Bad::new();
    b.add_rows("\"synthetic-archive\",\"k/short\",\"v1\"\n");
    b.fails_with(&[
        "bad.csv.gz: row 1",
        "expected 11 fields",
        "found 3",
        "k/short",
    ]);
}

#[test]
fn invalid_utf8_key() {
    let b = Bad::new();
    b.add_rows(&format!(
        "\"synthetic-archive\",\"k/%FF%FE\",\"v1\",\"true\",\"false\",{GOOD_TAIL}\n"
    ));
    b.fails_with(&[
        "bad.csv.gz: row 1: field Key",
        "not valid UTF-8",
        "k/%FF%FE",
    ]);
}

#[test]
fn missing_data_file() {
    let b = Bad::new();
    std::fs::remove_file(&b.data_files()[0]).unwrap();
    b.fails_with(&["data/", "No such file"]);
}

#[test]
fn incomplete_date_is_not_used() {
    let b = Bad::new();
    std::fs::remove_file(b.root().join(DATE).join("manifest.checksum")).unwrap();
    cli()
        .arg("dates")
        .arg(b.root())
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "incomplete (no manifest.checksum)",
        ));
    b.fails_with(&["no complete inventory for 2024-11-06"]);
}

/// A folder shaped like a date that is not one is listed by `dates` as invalid (text and
/// JSON), skipped by the rest, and panics nothing.
#[test]
fn impossible_date_folders_are_listed_as_invalid() {
    let b = Bad::new();
    for name in [
        "2024-13-01T01-00Z",
        "2024-11-06T24-00Z",
        "2023-02-29T01-00Z",
    ] {
        std::fs::create_dir(b.root().join(name)).unwrap();
    }
    let out = cli().arg("dates").arg(b.root()).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in [
        "2024-13-01T01-00Z",
        "2024-11-06T24-00Z",
        "2023-02-29T01-00Z",
    ] {
        assert!(stdout.contains(&format!("{name}  invalid")), "{stdout}");
    }
    assert!(stdout.contains(&format!("{DATE}  complete")), "{stdout}");
    let json = cli()
        .args(["dates", "--json"])
        .arg(b.root())
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|l| l["complete"] == false).count(), 3);
    // The valid date is still used.
    build(&b.root(), &b.dir.path().join("x.idx"), &[]).success();
}

#[test]
fn corrupted_index_block() {
    let b = Bad::new();
    let out = b.dir.path().join("out/x.idx");
    build(&b.root(), &out, &[]).success();
    let reader = IndexReader::open(&out).unwrap();
    let offset = reader.blocks()[0].offset as usize + 20;
    drop(reader);
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[offset] ^= 0xff;
    std::fs::write(&out, &bytes).unwrap();
    cli()
        .arg("dump")
        .arg(&out)
        .assert()
        .failure()
        .code(1)
        .stderr(predicates::str::contains("block 0").and(predicates::str::contains("checksum")));
    assert!(!b.rows.is_empty());
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn interrupted_index_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let rows = generate(&spec(400_000, 4, true, 12));
    write_inventory(&dir.path().join("inv"), &spec(400_000, 4, true, 12), &rows).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("s3invbackup"))
        .arg("index")
        .arg(dir.path().join("inv"))
        .args(["--date", "2024-11-06", "-o"])
        .arg(out_dir.join("x.idx"))
        .args(["--memory", "256KiB", "--threads", "1", "--progress", "none"])
        .spawn()
        .unwrap();
    // Wait until the build has made its temporary files (index and sort runs), then Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while listing(&out_dir).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary files appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130));
    assert!(
        listing(&out_dir).is_empty(),
        "left behind: {:?}",
        listing(&out_dir)
    );
}
