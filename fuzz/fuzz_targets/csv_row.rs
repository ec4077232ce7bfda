//! Arbitrary bytes as rows of a data file, parsed with the synthetic inventory's schema: every
//! row is a record or a clear error, never a panic; a record's key re-encodes to a key that
//! decodes to the same record key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3invbackup::inventory::{Columns, RowParser};
use s3invbackup::model::record::VersionRecord;

fuzz_target!(|data: &[u8]| {
    let parser = RowParser::new(
        Columns::from_schema(s3invbackup::inventory::synth::SCHEMA).unwrap(),
        "synthetic-archive",
    );
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut row = csv::ByteRecord::new();
    let mut rec = VersionRecord::default();
    while let Ok(true) = reader.read_byte_record(&mut row) {
        if parser.parse(&row, &mut rec).is_ok() {
            let key = rec.key.clone();
            let encoded = s3invbackup::model::key::encode_form_key(&key);
            assert_eq!(
                s3invbackup::model::key::decode_form_key(encoded.as_bytes()).as_deref(),
                Ok(key.as_str())
            );
        }
    }
});
