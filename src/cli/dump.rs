//! `s3invbackup dump INDEX`: print an index's records back as CSV or JSON lines.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use s3invbackup::index::IndexReader;
use s3invbackup::model::record::VersionRecord;

use super::output;

/// Print the records of an index, in index order (key, then last-modified), with decoded
/// keys. --prefix seeks with the block directory instead of reading the whole file.
#[derive(Debug, Args)]
pub struct DumpArgs {
    pub index: PathBuf,
    /// Only keys starting with this prefix
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
    pub format: String,
    /// Write here instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// One output row; field names are stable (scripts rely on them).
#[derive(Serialize)]
struct Row<'a> {
    key: &'a str,
    version_id: &'a str,
    is_latest: bool,
    is_delete_marker: bool,
    size: u64,
    last_modified: String,
    etag: String,
    is_multipart: bool,
    etag_is_md5: bool,
    storage_class: &'static str,
}

impl<'a> Row<'a> {
    fn new(r: &'a VersionRecord) -> Row<'a> {
        Row {
            key: &r.key,
            version_id: r.version_id_or_null(),
            is_latest: r.is_latest(),
            is_delete_marker: r.is_delete_marker(),
            size: r.size,
            last_modified: r.last_modified.to_string(),
            etag: r.etag.map(|e| e.to_string()).unwrap_or_default(),
            is_multipart: r.is_multipart(),
            etag_is_md5: r.etag_is_md5(),
            storage_class: r.storage_class.name(),
        }
    }
}

pub fn run(args: &DumpArgs) -> Result<()> {
    let index = IndexReader::open(&args.index)?;
    let mut stream = index.stream_prefix(&args.prefix);
    let out = output(args.output.as_ref())?;
    if args.format == "jsonl" {
        let mut out = out;
        while let Some(rec) = stream.next_record()? {
            serde_json::to_writer(&mut out, &Row::new(rec))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    } else {
        let mut csv = csv::Writer::from_writer(out);
        while let Some(rec) = stream.next_record()? {
            csv.serialize(Row::new(rec))?;
        }
        csv.flush()?;
    }
    Ok(())
}

use std::io::Write;
