//! Inventory dates: the `YYYY-MM-DDTHH-MMZ` folder names AWS writes, and how users name them.

use std::fmt;

use anyhow::{Result, bail};

/// A dated inventory folder name, `YYYY-MM-DDTHH-MMZ`. Sorting the text sorts the times.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InventoryDate(String);

impl InventoryDate {
    pub fn parse(s: &str) -> Option<InventoryDate> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let ok = b.len() == 17
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b'-'
            && digits(14..16)
            && b[16] == b'Z';
        ok.then(|| InventoryDate(s.to_string()))
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
        let s = &self.0;
        let text = format!("{}T{}:{}:00Z", &s[..10], &s[11..13], &s[14..16]);
        crate::model::timestamp::Timestamp::parse(text.as_bytes()).expect("validated by parse")
    }
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
    }
}
