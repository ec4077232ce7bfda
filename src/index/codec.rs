//! The byte encoding of one record inside an index block (and inside the external sort's
//! in-memory buffers, which use the same encoding with no key sharing).

use crate::model::etag::ETag;
use crate::model::record::{
    Check, Displaced, Flags, Local, LocalState, StorageClass, StoredChecksum, VersionRecord,
};
use crate::model::timestamp::Timestamp;

/// Set in the stored flags byte when an ETag follows; never visible in [`Flags`].
const HAS_ETAG: u8 = 0x80;
/// Catalog records: the local half follows the ETag.
const HAS_LOCAL: u8 = 0x40;
/// In the local half's second byte: bit 0 is `shadowed`, bits 1-4 the [`Check`]; these say
/// a part size / a checksum follows the dates. (Format 1 wrote 0 or 1 there: it decodes
/// the same way.)
const SHADOWED: u8 = 0x01;
const HAS_PART_SIZE: u8 = 0x20;
const HAS_CHECKSUM: u8 = 0x40;
/// Format 3: an extension follows the checksum: a varint of [`EXT_RANK`] / [`EXT_DEEP`]
/// bits, then the fields they name in that order. Records without rank or deep
/// displacement are written as format 2 wrote them.
const HAS_EXT: u8 = 0x80;
const EXT_RANK: u64 = 1;
/// Displacement beyond the first 64 directory levels: a count of words, then the words.
const EXT_DEEP: u64 = 2;
const EXT_KNOWN: u64 = EXT_RANK | EXT_DEEP;
/// 1,024-byte keys have at most 511 directories: 7 words above the first.
const MAX_DEEP_WORDS: u64 = 7;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub &'static str);

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    // Most varints here (lengths, shared prefixes) fit in one byte.
    if let Some(&b) = buf.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(u64::from(b));
    }
    get_varint_slow(buf, pos)
}

#[inline]
fn get_varint_slow(buf: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    // Timestamps (6 bytes) and sizes (2-4 bytes) take this path once per record: a plain
    // loop over a bounds-checked window, with the overflow check only at the 10th byte.
    if let Some(window) = buf.get(*pos..*pos + 10) {
        let mut v = 0u64;
        for (i, &b) in window.iter().enumerate().take(9) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                *pos += i + 1;
                return Ok(v);
            }
        }
    }
    get_varint_checked(buf, pos)
}

fn get_varint_checked(buf: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *buf
            .get(*pos)
            .ok_or(CodecError("record runs past the end of its block"))?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(CodecError("varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err(CodecError("varint overflows 64 bits"));
        }
    }
}

#[inline]
fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], CodecError> {
    let len = usize::try_from(len).map_err(|_| CodecError("length overflows"))?;
    let end = pos.checked_add(len).ok_or(CodecError("length overflows"))?;
    let bytes = buf
        .get(*pos..end)
        .ok_or(CodecError("record runs past the end of its block"))?;
    *pos = end;
    Ok(bytes)
}

/// UTF-8 validation for the short strings of a record. Version ids and most key suffixes
/// are ASCII, which a word-at-a-time scan confirms faster than the general validator
/// starts up; this runs twice per record on every index read.
#[inline]
fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every byte is ASCII, and ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// Length of the common prefix of two keys, cut back to a character boundary so that a
/// decoder can rebuild the key as a `String` without re-validating the shared part.
pub fn shared_prefix(prev: &str, key: &str) -> usize {
    let mut n = prev
        .bytes()
        .zip(key.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !key.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// Appends `rec` to `out`, sharing its key prefix with `prev_key`.
pub fn encode_record(out: &mut Vec<u8>, prev_key: &str, rec: &VersionRecord) {
    let shared = shared_prefix(prev_key, &rec.key);
    let suffix = &rec.key.as_bytes()[shared..];
    put_varint(out, shared as u64);
    put_varint(out, suffix.len() as u64);
    out.extend_from_slice(suffix);
    put_varint(out, rec.version_id.len() as u64);
    out.extend_from_slice(rec.version_id.as_bytes());
    put_varint(out, rec.last_modified.0 as u64);
    put_varint(out, rec.size);
    let has_etag = if rec.etag.is_some() { HAS_ETAG } else { 0 };
    let has_local = if rec.local.state != LocalState::None {
        HAS_LOCAL
    } else {
        0
    };
    out.push(rec.flags.0 | has_etag | has_local);
    out.push(rec.storage_class.0);
    if let Some(etag) = rec.etag {
        out.extend_from_slice(&etag.md5);
        put_varint(out, u64::from(etag.parts));
    }
    if has_local != 0 {
        let l = &rec.local;
        out.push(l.state as u8);
        let mut bits = u8::from(l.shadowed) | ((l.check as u8) << 1);
        if l.part_size != 0 {
            bits |= HAS_PART_SIZE;
        }
        if l.checksum.len != 0 {
            bits |= HAS_CHECKSUM;
        }
        let ext = if l.rank != 0 { EXT_RANK } else { 0 }
            | if l.displaced.deep().is_empty() {
                0
            } else {
                EXT_DEEP
            };
        if ext != 0 {
            bits |= HAS_EXT;
        }
        out.push(bits);
        put_varint(out, l.displaced.low());
        put_varint(out, l.first_seen.0 as u64);
        put_varint(out, l.noncurrent_since.0 as u64);
        put_varint(out, l.gone_since.0 as u64);
        if l.part_size != 0 {
            put_varint(out, l.part_size);
        }
        if l.checksum.len != 0 {
            out.push(l.checksum.len);
            out.extend_from_slice(l.checksum.value());
        }
        if ext != 0 {
            put_varint(out, ext);
            if ext & EXT_RANK != 0 {
                put_varint(out, u64::from(l.rank));
            }
            if ext & EXT_DEEP != 0 {
                let deep = l.displaced.deep();
                put_varint(out, deep.len() as u64);
                for &w in deep {
                    put_varint(out, w);
                }
            }
        }
    }
}

/// Decodes the record at `*pos` into `rec`, whose `key` must still hold the previous key
/// of the block (or be empty at a block start).
pub fn decode_record(
    buf: &[u8],
    pos: &mut usize,
    rec: &mut VersionRecord,
) -> Result<(), CodecError> {
    let (shared, suffix) = key_parts(buf, pos)?;
    if shared > rec.key.len() || !rec.key.is_char_boundary(shared) {
        return Err(CodecError("bad shared key length"));
    }
    rec.key.truncate(shared);
    rec.key.push_str(suffix);
    decode_fields(buf, pos, rec)
}

/// Decodes the record at `*pos` into `rec` (whose buffers are reused), taking the shared
/// part of its key from `prev_key`.
pub fn decode_record_after(
    buf: &[u8],
    pos: &mut usize,
    prev_key: &str,
    rec: &mut VersionRecord,
) -> Result<(), CodecError> {
    let (shared, suffix) = key_parts(buf, pos)?;
    let head = prev_key
        .get(..shared)
        .ok_or(CodecError("bad shared key length"))?;
    rec.key.clear();
    rec.key.push_str(head);
    rec.key.push_str(suffix);
    decode_fields(buf, pos, rec)
}

fn key_parts<'a>(buf: &'a [u8], pos: &mut usize) -> Result<(usize, &'a str), CodecError> {
    let shared = get_varint(buf, pos)?;
    let suffix_len = get_varint(buf, pos)?;
    let shared = usize::try_from(shared).map_err(|_| CodecError("bad shared key length"))?;
    let suffix = get_bytes(buf, pos, suffix_len)?;
    Ok((shared, utf8(suffix).ok_or(CodecError("key is not UTF-8"))?))
}

/// Everything after the key.
fn decode_fields(buf: &[u8], pos: &mut usize, rec: &mut VersionRecord) -> Result<(), CodecError> {
    let vid_len = get_varint(buf, pos)?;
    let vid = get_bytes(buf, pos, vid_len)?;
    let vid = utf8(vid).ok_or(CodecError("version id is not UTF-8"))?;
    rec.version_id.clear();
    rec.version_id.push_str(vid);
    let mtime = get_varint(buf, pos)?;
    rec.last_modified = Timestamp(i64::try_from(mtime).map_err(|_| CodecError("bad timestamp"))?);
    rec.size = get_varint(buf, pos)?;
    let [flags, class] = get_bytes(buf, pos, 2)? else {
        unreachable!()
    };
    if flags & !(Flags::KNOWN | HAS_ETAG | HAS_LOCAL) != 0 {
        return Err(CodecError("unknown flag bits"));
    }
    rec.flags = Flags(flags & Flags::KNOWN);
    rec.storage_class = StorageClass(*class);
    if !rec.storage_class.is_valid() {
        return Err(CodecError("unknown storage class code"));
    }
    rec.etag = if flags & HAS_ETAG != 0 {
        let md5: [u8; 16] = get_bytes(buf, pos, 16)?.try_into().expect("16 bytes");
        let parts =
            u32::try_from(get_varint(buf, pos)?).map_err(|_| CodecError("bad part count"))?;
        Some(ETag { md5, parts })
    } else {
        None
    };
    rec.local = if flags & HAS_LOCAL != 0 {
        let [state, bits] = get_bytes(buf, pos, 2)? else {
            unreachable!()
        };
        let bits = *bits;
        let state = LocalState::from_u8(*state)
            .filter(|s| *s != LocalState::None)
            .ok_or(CodecError("unknown local state"))?;
        let check = Check::from_u8((bits >> 1) & 0x0f).ok_or(CodecError("unknown check"))?;
        let displaced = get_varint(buf, pos)?;
        let mut time = || -> Result<Timestamp, CodecError> {
            let v = get_varint(buf, pos)?;
            Ok(Timestamp(
                i64::try_from(v).map_err(|_| CodecError("bad timestamp"))?,
            ))
        };
        let (first_seen, noncurrent_since, gone_since) = (time()?, time()?, time()?);
        let part_size = if bits & HAS_PART_SIZE != 0 {
            get_varint(buf, pos)?
        } else {
            0
        };
        let checksum = if bits & HAS_CHECKSUM != 0 {
            let [len] = get_bytes(buf, pos, 1)? else {
                unreachable!()
            };
            let value = get_bytes(buf, pos, u64::from(*len))?;
            StoredChecksum::new(value).ok_or(CodecError("bad checksum length"))?
        } else {
            StoredChecksum::default()
        };
        let (mut rank, mut deep) = (0, Vec::new());
        if bits & HAS_EXT != 0 {
            let ext = get_varint(buf, pos)?;
            if ext & !EXT_KNOWN != 0 {
                return Err(CodecError("unknown extension fields"));
            }
            if ext & EXT_RANK != 0 {
                rank = u32::try_from(get_varint(buf, pos)?).map_err(|_| CodecError("bad rank"))?;
            }
            if ext & EXT_DEEP != 0 {
                let n = get_varint(buf, pos)?;
                if n > MAX_DEEP_WORDS {
                    return Err(CodecError("bad displacement length"));
                }
                for _ in 0..n {
                    deep.push(get_varint(buf, pos)?);
                }
            }
        }
        Local {
            state,
            shadowed: bits & SHADOWED != 0,
            displaced: Displaced::from_words(displaced, &deep),
            rank,
            first_seen,
            noncurrent_since,
            gone_since,
            check,
            part_size,
            checksum,
        }
    } else {
        Local::default()
    };
    Ok(())
}

/// Index order of two records encoded with no shared prefix, decoding only as far as needed:
/// the key decides almost every comparison.
pub fn compare_encoded(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let (key_a, rest_a) = key_of(a);
    let (key_b, rest_b) = key_of(b);
    key_a.cmp(key_b).then_with(|| {
        let (_, mtime_a, vid_a) = sort_fields(rest_a);
        let (_, mtime_b, vid_b) = sort_fields(rest_b);
        mtime_a.cmp(&mtime_b).then_with(|| vid_a.cmp(vid_b))
    })
}

/// The key of a record encoded with no shared prefix, and the whole record.
#[inline]
fn key_of(buf: &[u8]) -> (&[u8], &[u8]) {
    // Only ever called on bytes this process encoded a moment ago, so malformed input is a
    // bug, not bad data.
    let mut pos = 1; // the shared-prefix length, always 0 here
    let key_len = get_varint(buf, &mut pos).expect("sort buffer");
    (get_bytes(buf, &mut pos, key_len).expect("sort buffer"), buf)
}

/// The sort fields of a record encoded with no shared prefix, read without decoding the rest.
pub fn sort_fields(buf: &[u8]) -> (&[u8], Timestamp, &[u8]) {
    let mut pos = 0;
    let shared = get_varint(buf, &mut pos).expect("sort buffer");
    debug_assert_eq!(shared, 0);
    let key_len = get_varint(buf, &mut pos).expect("sort buffer");
    let key = get_bytes(buf, &mut pos, key_len).expect("sort buffer");
    let vid_len = get_varint(buf, &mut pos).expect("sort buffer");
    let vid = get_bytes(buf, &mut pos, vid_len).expect("sort buffer");
    let mtime = get_varint(buf, &mut pos).expect("sort buffer");
    (key, Timestamp(mtime as i64), vid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_record() -> impl Strategy<Value = VersionRecord> {
        (
            "[a-c/é+ ]{1,12}",
            "[A-Za-z0-9._]{0,32}",
            0i64..4_000_000_000_000,
            any::<u64>(),
            proptest::option::of((any::<[u8; 16]>(), 0u32..10_000)),
            0u8..32,
            0u8..14,
            (0u8..7, any::<bool>(), any::<u64>(), 0i64..4_000_000_000_000),
            (
                0u8..9,
                prop_oneof![Just(0u64), any::<u64>()],
                proptest::collection::vec(any::<u8>(), 0..=32),
                prop_oneof![Just(0u32), any::<u32>()],
                prop_oneof![
                    Just(Vec::new()),
                    proptest::collection::vec(any::<u64>(), 1..=7)
                ],
            ),
        )
            .prop_map(
                |(
                    key,
                    version_id,
                    mtime,
                    size,
                    etag,
                    flags,
                    class,
                    (state, shadowed, displaced, t),
                    (check, part_size, checksum, rank, deep),
                )| VersionRecord {
                    key,
                    version_id,
                    last_modified: Timestamp(mtime),
                    size,
                    etag: etag.map(|(md5, parts)| ETag { md5, parts }),
                    flags: Flags(flags),
                    storage_class: StorageClass(class),
                    local: match LocalState::from_u8(state).unwrap() {
                        LocalState::None => Local::default(),
                        state => Local {
                            state,
                            shadowed,
                            displaced: Displaced::from_words(displaced, &deep),
                            rank,
                            first_seen: Timestamp(t),
                            noncurrent_since: Timestamp(t / 2),
                            gone_since: Timestamp(t / 3),
                            check: Check::from_u8(check).unwrap(),
                            part_size,
                            checksum: StoredChecksum::new(&checksum).unwrap_or_default(),
                        },
                    },
                },
            )
    }

    /// A catalog record as format 1 wrote it (the second local byte 0 or 1, nothing after
    /// the dates) decodes as it always did.
    #[test]
    fn format_1_local_halves_decode_unchanged() {
        let rec = VersionRecord {
            key: "a/b".into(),
            version_id: "v".into(),
            local: Local {
                state: LocalState::Present,
                shadowed: true,
                displaced: Displaced::from_words(5, &[]),
                first_seen: Timestamp(7),
                ..Local::default()
            },
            ..VersionRecord::default()
        };
        let mut buf = Vec::new();
        encode_record(&mut buf, "", &rec);
        // What format 1 wrote for this record: byte for byte the same (no check, no extras).
        let mut v1 = vec![0, 3];
        v1.extend_from_slice(b"a/b");
        v1.extend_from_slice(&[1, b'v', 0, 0, HAS_LOCAL, 0, 1, 1, 5, 7, 0, 0]);
        assert_eq!(buf, v1);
        let mut pos = 0;
        let mut back = VersionRecord::default();
        decode_record(&v1, &mut pos, &mut back).unwrap();
        assert_eq!(back, rec);
    }

    proptest! {
        #[test]
        fn records_round_trip_with_front_coding(recs in proptest::collection::vec(arb_record(), 0..50)) {
            let mut buf = Vec::new();
            let mut prev = String::new();
            for r in &recs {
                encode_record(&mut buf, &prev, r);
                prev = r.key.clone();
            }
            let mut pos = 0;
            let mut rec = VersionRecord::default();
            for r in &recs {
                decode_record(&buf, &mut pos, &mut rec).unwrap();
                prop_assert_eq!(&rec, r);
            }
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn decoding_garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut pos = 0;
            let mut rec = VersionRecord::default();
            while pos < buf.len() && decode_record(&buf, &mut pos, &mut rec).is_ok() {}
        }
    }

    #[test]
    fn shared_prefix_respects_char_boundaries() {
        assert_eq!(shared_prefix("aé", "aê"), 1);
        assert_eq!(shared_prefix("abc", "abd"), 2);
        assert_eq!(shared_prefix("", "x"), 0);
    }
}
