//! The one place that knows S3's `null` version: an object written before versioning was
//! enabled (or while it was suspended) has the version id `null` in every request and
//! listing, but an empty one in inventories. Records store it empty; [`to_s3`] and
//! [`from_s3`] convert at the edges (requests, file names, messages, command-line input).

/// S3's name of the pre-versioning version.
pub const NULL: &str = "null";

/// A stored version id as S3 spells it: `null` for the empty (pre-versioning) id.
pub fn to_s3(stored: &str) -> &str {
    if stored.is_empty() { NULL } else { stored }
}

/// A version id as S3 (or a user) spells it, as records store it: `null` becomes empty.
pub fn from_s3(s3: &str) -> &str {
    if s3 == NULL { "" } else { s3 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_round_trips() {
        assert_eq!(to_s3(""), "null");
        assert_eq!(from_s3("null"), "");
        assert_eq!(to_s3("3HL4kqtJvjVBH40Nrjfkd"), "3HL4kqtJvjVBH40Nrjfkd");
        assert_eq!(from_s3(to_s3("")), "");
        assert_eq!(from_s3("Null"), "Null"); // ids are case-sensitive
    }
}
