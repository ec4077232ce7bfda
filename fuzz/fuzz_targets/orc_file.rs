//! Arbitrary bytes as a ORC data file (whose MD5 the manifest vouched for): every file
//! is rows or a clear error, never a panic out of the reader, a hang or an unbounded allocation; every record
//! read has a non-empty key.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use s3invbackup::inventory::{Columns, Format, RowParser, read_columnar_file};

fuzz_target!(|data: &[u8]| {
    // The reader turns a panic inside the format's crate into an error; libfuzzer's hook
    // would abort at the panic itself. With the default hook back, a panic that escapes
    // read_columnar_file still fails the run (fuzz_target aborts on it).
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| drop(std::panic::take_hook()));
    let schema = Format::Orc.schema_names(SCHEMA);
    let parser = RowParser::new(Columns::from_names(Format::Orc, &schema).unwrap(), "b");
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    let _ = read_columnar_file(f, &parser, |rec| assert!(!rec.key.is_empty()));
});

const SCHEMA: &str = "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,size:bigint,last_modified_date:timestamp,e_tag:string>";
