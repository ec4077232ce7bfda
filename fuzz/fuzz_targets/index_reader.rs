//! Arbitrary bytes as an index file: opening it, streaming every record and seeking by a
//! prefix give records or a clear error, never a panic or an unbounded allocation. Built
//! with `--cfg fuzzing`, the reader skips its CRC checks so that mutations reach the
//! decoders behind them.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use s3invbackup::index::IndexReader;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new_in("/dev/shm").unwrap();
    file.write_all(data).unwrap();
    let Ok(reader) = IndexReader::open(file.path()) else {
        return;
    };
    let mut stream = reader.stream();
    let mut n = 0u64;
    while let Ok(Some(_)) = stream.next_record() {
        n += 1;
        if n > 1_000_000 {
            break;
        }
    }
    let mut seek = reader.stream_prefix("k");
    while let Ok(Some(_)) = seek.next_record() {}
});
