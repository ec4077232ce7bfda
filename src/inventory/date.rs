//! Inventory dates: the `YYYY-MM-DDTHH-MMZ` folder names AWS writes, and how users name them.

use std::fmt;

use anyhow::{Result, bail};

/// A dated inventory folder name, `YYYY-MM-DDTHH-MMZ`. Sorting the text sorts the times.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InventoryDate(String);

impl InventoryDate {
    /// A folder name that is a real time (`2024-13-01T24-00Z` has the shape but is not one).
    pub fn parse(s: &str) -> Option<InventoryDate> {
        if !Self::has_shape(s) || time_of(s).is_none() {
            return None;
        }
        Some(InventoryDate(s.to_string()))
    }

    /// `s` is written like a date folder, whether or not it is a real time: such a folder
    /// that [`InventoryDate::parse`] refuses is worth a warning, any other name is not.
    pub fn has_shape(s: &str) -> bool {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        b.len() == 17
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b'-'
            && digits(14..16)
            && b[16] == b'Z'
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `YYYY-MM-DD`
    pub fn day(&self) -> &str {
        &self.0[..10]
    }

    /// The folder's time: what a catalog records as "first seen", "noncurrent since", ...
    pub fn timestamp(&self) -> crate::model::timestamp::Timestamp {
        time_of(&self.0).expect("validated by parse")
    }
}

/// The time a date-shaped folder name stands for, if it is a real one.
fn time_of(s: &str) -> Option<crate::model::timestamp::Timestamp> {
    let text = format!("{}T{}:{}:00Z", s.get(..10)?, s.get(11..13)?, s.get(14..16)?);
    crate::model::timestamp::Timestamp::parse(text.as_bytes())
}

impl fmt::Display for InventoryDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may write for a date: a day (the latest inventory of that day) or an exact
/// folder name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateSpec {
    Day(String),
    Exact(InventoryDate),
}

impl DateSpec {
    pub fn parse(s: &str) -> Result<DateSpec> {
        if let Some(d) = InventoryDate::parse(s) {
            return Ok(DateSpec::Exact(d));
        }
        if s.len() == 10 && InventoryDate::parse(&format!("{s}T00-00Z")).is_some() {
            return Ok(DateSpec::Day(s.to_string()));
        }
        bail!("bad date {s:?}: expected YYYY-MM-DD or YYYY-MM-DDTHH-MMZ")
    }

    /// Picks the matching date out of `available` (sorted ascending).
    pub fn select<'a>(&self, available: &'a [InventoryDate]) -> Option<&'a InventoryDate> {
        match self {
            DateSpec::Exact(d) => available.iter().find(|a| *a == d),
            DateSpec::Day(day) => available.iter().rev().find(|a| a.day() == day),
        }
    }
}

impl fmt::Display for DateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateSpec::Day(d) => f.write_str(d),
            DateSpec::Exact(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_selects() {
        let dates: Vec<_> = [
            "2024-11-05T01-00Z",
            "2024-11-06T01-00Z",
            "2024-11-06T13-00Z",
        ]
        .iter()
        .map(|d| InventoryDate::parse(d).unwrap())
        .collect();
        assert_eq!(
            DateSpec::parse("2024-11-06")
                .unwrap()
                .select(&dates)
                .unwrap()
                .as_str(),
            "2024-11-06T13-00Z"
        );
        assert_eq!(
            DateSpec::parse("2024-11-06T01-00Z")
                .unwrap()
                .select(&dates)
                .unwrap()
                .as_str(),
            "2024-11-06T01-00Z"
        );
        assert!(
            DateSpec::parse("2024-11-07")
                .unwrap()
                .select(&dates)
                .is_none()
        );
        assert!(DateSpec::parse("2024-11-6").is_err());
        assert!(DateSpec::parse("2024-11-06T01:00Z").is_err());
        assert!(InventoryDate::parse("data").is_none());
        for impossible in [
            "2024-13-01T01-00Z",
            "2024-11-06T24-00Z",
            "2023-02-29T01-00Z",
            "2024-11-31T01-00Z",
            "2024-11-06T01-60Z",
        ] {
            assert!(InventoryDate::has_shape(impossible), "{impossible}");
            assert!(InventoryDate::parse(impossible).is_none(), "{impossible}");
            assert!(DateSpec::parse(impossible).is_err(), "{impossible}");
        }
        assert!(InventoryDate::parse("2024-02-29T23-59Z").is_some());
    }

    proptest::proptest! {
        /// No folder name makes the parser (or a parsed date's time) panic, and what it
        /// accepts is shaped and formats back to itself.
        #[test]
        fn any_name_is_parsed_or_refused(s in "\\PC{0,20}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}Z") {
            if let Some(d) = InventoryDate::parse(&s) {
                proptest::prop_assert!(InventoryDate::has_shape(&s));
                proptest::prop_assert_eq!(d.as_str(), s.as_str());
                let _ = d.timestamp();
                let _ = d.day();
            }
            let _ = DateSpec::parse(&s);
        }
    }
}
