//! Arbitrary bytes as a manifest.json (with a checksum that matches, so that parsing is
//! reached): a manifest or a clear error, and every accepted manifest's schema and data file
//! keys go through the same checks `index` applies, without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};
use s3invbackup::inventory::{Columns, Manifest, data_file_path, hex};

fuzz_target!(|data: &[u8]| {
    let checksum = hex(&Md5::digest(data));
    let Ok(manifest) = Manifest::parse_verified(data, checksum.as_bytes(), "fuzz/manifest.json")
    else {
        return;
    };
    let _ = Columns::from_schema(&manifest.file_schema);
    for f in &manifest.files {
        let _ = data_file_path(&f.key);
    }
});
