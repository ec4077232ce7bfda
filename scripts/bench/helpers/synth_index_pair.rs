//! Writes two index files for the diff benchmark: A, a synthetic bucket of ROWS versions
//! (see `s3invbackup::inventory::synth`), and B, the same bucket a day later with 1% of its keys
//! changed (a new version each, the old latest made noncurrent). Prints a key prefix that
//! holds one Zarr store, for the `--prefix` measurement.
//!
//! `cargo run --release --example synth_index_pair -- DIR ROWS`

use std::path::PathBuf;

use s3invbackup::index::{IndexMeta, IndexWriter};
use s3invbackup::inventory::synth::{SynthSpec, generate};
use s3invbackup::model::etag::ETag;
use s3invbackup::model::record::{Flags, VersionRecord};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        anyhow::bail!("usage: synth_index_pair DIR ROWS");
    }
    let dir = PathBuf::from(&args[1]);
    std::fs::create_dir_all(&dir)?;
    let spec = SynthSpec {
        rows: args[2].parse()?,
        files: 1,
        shuffle: false,
        seed: 42,
        source_bucket: "synthetic-archive".into(),
        date: "2024-11-05T01-00Z".into(),
    };
    let mut rows = generate(&spec);
    rows.sort_by(|a, b| a.cmp_order(b));
    write(&dir.join("A.s3inv"), "2024-11-05T01-00Z", &rows)?;

    // B: every 100th key gets a new latest version.
    let mut b = Vec::with_capacity(rows.len() + rows.len() / 250);
    let mut key_no = 0u64;
    let mut i = 0;
    while i < rows.len() {
        let mut j = i;
        while j < rows.len() && rows[j].key == rows[i].key {
            j += 1;
        }
        let changed = key_no.is_multiple_of(100);
        for r in &rows[i..j] {
            let mut r = r.clone();
            if changed {
                r.flags.set(Flags::LATEST, false);
            }
            b.push(r);
        }
        if changed {
            let last = &rows[j - 1];
            let mut new = last.clone();
            new.version_id = format!("new{key_no:029}");
            new.last_modified.0 += 86_400_000;
            new.size = 4096 + key_no % 1000;
            new.etag = Some(ETag {
                md5: [key_no as u8; 16],
                parts: 0,
            });
            new.flags = Flags(Flags::LATEST | Flags::ETAG_IS_MD5);
            b.push(new);
        }
        key_no += 1;
        i = j;
    }
    write(&dir.join("B.s3inv"), "2024-11-06T01-00Z", &b)?;
    let store = rows[rows.len() / 2]
        .key
        .split('/')
        .take(2)
        .collect::<Vec<_>>()
        .join("/")
        + "/";
    println!("{store}");
    eprintln!(
        "A: {} records, B: {} records, {key_no} keys",
        rows.len(),
        b.len()
    );
    Ok(())
}

fn write(path: &std::path::Path, date: &str, rows: &[VersionRecord]) -> anyhow::Result<()> {
    let meta = IndexMeta {
        kind: "inventory".into(),
        source_bucket: "synthetic-archive".into(),
        date: date.into(),
        ..Default::default()
    };
    let mut w = IndexWriter::create(path, &meta)?;
    for r in rows {
        w.push(r)?;
    }
    w.finish()?;
    Ok(())
}
