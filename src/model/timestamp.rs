//! LastModified timestamps: milliseconds since the Unix epoch, UTC.
//!
//! Parsed by hand because it runs once per inventory row (10^9 rows for a large bucket) and
//! the format is fixed (`2022-12-12T13:20:39.000Z`); a general date parser costs several times
//! more. The parser is tested against the `time` crate as an oracle.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff...]Z` (the inventory's and S3's format). Fractions
    /// finer than milliseconds are truncated; anything else is rejected.
    pub fn parse(s: &[u8]) -> Option<Timestamp> {
        if s.len() < 20 || s[s.len() - 1] != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let mut v = 0i64;
            for &b in &s[range] {
                if !b.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + i64::from(b - b'0');
            }
            Some(v)
        };
        if s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut millis = 0;
        let rest = &s[19..s.len() - 1];
        if !rest.is_empty() {
            if rest[0] != b'.' || rest.len() < 2 || !rest[1..].iter().all(u8::is_ascii_digit) {
                return None;
            }
            for i in 0..3 {
                millis = millis * 10 + rest.get(1 + i).map_or(0, |&b| i64::from(b - b'0'));
            }
        }
        let days = days_from_civil(year, month, day);
        Some(Timestamp(
            ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis,
        ))
    }

    /// The current time (system clock).
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    pub fn from_system_time(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp(d.as_millis() as i64),
            Err(e) => Timestamp(-(e.duration().as_millis() as i64)),
        }
    }

    /// An HTTP date (`Last-Modified`, `Date`): `Wed, 12 Oct 2009 17:50:00 GMT`.
    pub fn parse_http_date(s: &str) -> Option<Timestamp> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS.iter().position(|m| m == month)? + 1;
        Timestamp::parse(format!("{year}-{month:02}-{day:0>2}T{time}Z").as_bytes())
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    pub fn as_system_time(self) -> std::time::SystemTime {
        let base = std::time::UNIX_EPOCH;
        if self.0 >= 0 {
            base + std::time::Duration::from_millis(self.0 as u64)
        } else {
            base - std::time::Duration::from_millis(self.0.unsigned_abs())
        }
    }
}

/// Formats as `2022-12-12T13:20:39.000Z`, the inventory's own format.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
        let (min, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_inventory_dates() {
        let t = Timestamp::parse(b"2022-12-12T13:20:39.000Z").unwrap();
        assert_eq!(t.0, 1_670_851_239_000);
        assert_eq!(t.to_string(), "2022-12-12T13:20:39.000Z");
        assert_eq!(Timestamp::parse(b"2022-12-12T13:20:39Z").unwrap(), t);
        assert_eq!(
            Timestamp::parse(b"2022-12-12T13:20:39.5Z").unwrap().0,
            t.0 + 500
        );
        assert_eq!(
            Timestamp::parse(b"2022-12-12T13:20:39.123456Z").unwrap().0,
            t.0 + 123
        );
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            &b""[..],
            b"2022-12-12",
            b"2022-13-12T13:20:39.000Z",
            b"2023-02-29T13:20:39.000Z",
            b"2022-12-12T24:20:39.000Z",
            b"2022-12-12 13:20:39.000Z",
            b"2022-12-12T13:20:39.000",
            b"2022-12-12T13:20:39.0a0Z",
            b"2022-12-12T13:20:39,000Z",
        ] {
            assert_eq!(
                Timestamp::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        /// The `time` crate is the oracle for both directions.
        #[test]
        fn agrees_with_the_time_crate(secs in 0i64..8_000_000_000, ms in 0i64..1000) {
            let odt = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                odt.year(), u8::from(odt.month()), odt.day(),
                odt.hour(), odt.minute(), odt.second(), ms
            );
            let parsed = Timestamp::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(parsed.0, secs * 1000 + ms);
            prop_assert_eq!(parsed.to_string(), text);
        }
    }
}
