//! Seeds a backup as if date DATE of INVENTORY had been synced, without downloading it: the
//! catalog lists every version as held, and only the current files of the keys in KEYS_FILE
//! are created (with placeholder bytes of the right size and mtime). A sync never touches the
//! files of unchanged keys, so this is all the nightly-increment benchmark needs of a
//! 1,000,000-version backup.
//!
//!     cargo run --release --example seed_backup -- INVENTORY DATE BACKUP KEYS_FILE

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};

use s3invbackup::backup::catalog;
use s3invbackup::backup::{AppliedDate, Backup, Config, FORMAT, State};
use s3invbackup::index::IndexReader;
use s3invbackup::index::build::{IndexOptions, build_index};
use s3invbackup::inventory::{DateSpec, Inventory};
use s3invbackup::model::record::{Local, LocalState};
use s3invbackup::s3::S3Config;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [inventory, date, root, keys_file] = args.as_slice() else {
        anyhow::bail!("usage: seed_backup INVENTORY DATE BACKUP KEYS_FILE");
    };
    let inventory = Inventory::open(inventory, &S3Config::default())?;
    let date = inventory.resolve_date(&DateSpec::parse(date)?)?;
    let manifest = inventory.manifest(&date)?;
    let root = PathBuf::from(root);
    let backup = Backup::create(
        &root,
        Config {
            format: FORMAT,
            name_stem: "s3invbackup".into(),
            inventory: "seeded".into(),
            source_bucket: manifest.manifest.source_bucket.clone(),
            path_filter: None,
            file_mode: 0o644,
            naming: None,
            shards: None,
        },
    )?;
    let index_path = backup.indexes_dir().join(format!("{date}.s3inv"));
    let opts = IndexOptions::default();
    build_index(&inventory, &date, &index_path, &opts)?;
    let changed: HashSet<String> = std::fs::read_to_string(keys_file)
        .with_context(|| format!("reading {keys_file}"))?
        .lines()
        .map(String::from)
        .collect();
    let reader = IndexReader::open(&index_path)?;
    let catalog_path = backup.state_dir().join("seeded.s3inv");
    let mut writer = catalog::create(&catalog_path, &backup.config.source_bucket, date.as_str())?;
    let when = date.timestamp();
    let mut stream = reader.stream();
    let mut created = 0;
    while let Some(rec) = stream.next_record()? {
        let mut r = rec.clone();
        r.local = Local {
            state: LocalState::Present,
            first_seen: when,
            noncurrent_since: if r.is_latest() {
                Default::default()
            } else {
                when
            },
            ..Local::default()
        };
        if catalog::is_current(&r) && changed.contains(&r.key) {
            let path = root.join(catalog::file_path(&backup.stem, &r).expect("current"));
            std::fs::create_dir_all(path.parent().expect("parent"))?;
            let f = std::fs::File::create(&path)?;
            f.set_len(r.size)?;
            f.set_modified(r.last_modified.as_system_time())?;
            created += 1;
        }
        writer.push(&r)?;
    }
    writer.finish()?;
    let stats = IndexReader::open(&catalog_path)?.stats().clone();
    catalog::store::install_base(&backup, &catalog_path)?;
    backup.write_state(&State {
        applied: vec![AppliedDate {
            date: date.to_string(),
            keys: stats.keys,
            versions: stats.records,
            ..AppliedDate::default()
        }],
        starts_at: None,
    })?;
    eprintln!(
        "seeded {}: {} versions in the catalog, {created} current files created",
        root.display(),
        stats.records
    );
    Ok(())
}
