//! The inventory key decoder against an independent one (percent-encoding, with `+` as a
//! space), and encode → decode as a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3invbackup::model::key::{decode_form_key, encode_form_key};

fuzz_target!(|raw: &[u8]| {
    let Ok(key) = decode_form_key(raw) else {
        return;
    };
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let oracle = percent_encoding::percent_decode(&spaced).decode_utf8();
    assert_eq!(oracle.as_deref().ok(), Some(key.as_str()), "raw {raw:?}");
    assert_eq!(
        decode_form_key(encode_form_key(&key).as_bytes()).as_deref(),
        Ok(key.as_str())
    );
});
