//! Timestamps as Codex stores them: UTC text `YYYY-MM-DDTHH:MM:SSZ`, which
//! sorts in time order in both SQLite and PostgreSQL; and reading the many
//! forms PSAs send.
//!
//! Freshservice prints a timestamp placeholder without a `date:` filter in
//! Ruby's formats (`2024-01-15 10:30:00 +0530`, `January 15 2024 at 10:30 AM
//! IST`), and with one in whatever the admin chose (`15 Jan 2024`). Zone
//! abbreviations are read through two tables (one offset each, several
//! offsets); a time without a zone, and an abbreviation the configured zone
//! itself uses (`IST` with `Asia/Kolkata` or `Europe/Dublin`), are read in
//! `[freshservice] timezone`.
//!
//! The public functions are here; `forms.rs` reads the free-text forms
//! word by word, `zones.rs` holds the abbreviation tables.

mod forms;
mod zones;

#[cfg(test)]
mod tests;

use jiff::Timestamp;
use jiff::fmt::rfc2822::DateTimeParser;
use jiff::tz::TimeZone;

use crate::error::TimestampError;
use forms::Fields;

static RFC2822: DateTimeParser = DateTimeParser::new();

/// The longest text read as a timestamp.
const MAX_LEN: usize = 100;

/// An instant read from text, with a note when reading it took a guess
/// (an ambiguous zone abbreviation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub instant: Timestamp,
    pub note: Option<String>,
}

/// The IANA zone `name`: from the system's time zone database, else from
/// the copy built into Codex (a machine without `tzdata`, or one whose copy
/// lacks the zone).
pub fn zone(name: &str) -> Result<TimeZone, TimestampError> {
    jiff::tz::db()
        .get(name)
        .or_else(|_| jiff::tz::TimeZoneDatabase::bundled().get(name))
        .map_err(|_| TimestampError::UnknownZone(name.to_string()))
}

/// The stored form of an instant.
pub fn format(instant: Timestamp) -> String {
    instant.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The stored form of now.
pub fn now() -> String {
    format(Timestamp::now())
}

/// The stored form of `seconds` ago.
pub fn seconds_ago(seconds: u64) -> String {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX / 2);
    let then = Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MIN);
    format(then)
}

/// Reads a timestamp, taking a time without a zone as UTC. See [`read`].
pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
    read(text, &TimeZone::UTC).map(|r| r.instant)
}

/// Parses and returns the stored form (a time without a zone is UTC).
pub fn normalize(text: &str) -> Result<String, TimestampError> {
    parse(text).map(format)
}

/// Reads what PSAs send: RFC 3339 (`2024-01-15T10:30:00Z`), RFC 2822 (`Mon,
/// 15 Jan 2024 10:30:00 +0000`), `YYYY-MM-DD HH:MM:SS` with or without an
/// offset (`+0530`, `+05:30`, `Z`, `UTC`), Ruby's `Time#to_s`, strftime
/// forms with month names (`January 15 2024 at 10:30 AM IST`, `15 Jan
/// 2024`, `Jan 15, 2024 10:30 AM`), `YYYY/MM/DD`, and Unix seconds. A time
/// without a zone, or a date alone (midnight), is read in `zone`.
/// Fractions of a second are dropped.
pub fn read(text: &str, zone: &TimeZone) -> Result<Reading, TimestampError> {
    let text = text.trim();
    // No timestamp is this long; the cap also bounds the word reader's
    // recursion on hostile input.
    if text.len() > MAX_LEN {
        return Err(TimestampError::TooLong {
            start: text.chars().take(40).collect(),
            bytes: text.len(),
        });
    }
    let plain = |instant: Timestamp| Reading {
        instant: truncate(instant),
        note: None,
    };
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Ok(plain(instant));
    }
    if let Ok(instant) = RFC2822.parse_timestamp(text) {
        return Ok(plain(instant));
    }
    if let Some(instant) = unix_seconds(text) {
        return Ok(plain(instant));
    }
    let fields = Fields::scan(text).ok_or_else(|| TimestampError::Unreadable(text.to_string()))?;
    let (instant, note) = fields.resolve(text, zone)?;
    Ok(Reading {
        instant: truncate(instant),
        note,
    })
}

/// `1705314600` (seconds) or `1705314600000` (milliseconds).
fn unix_seconds(text: &str) -> Option<Timestamp> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = text.parse().ok()?;
    match text.len() {
        9 | 10 => Timestamp::from_second(n).ok(),
        13 => Timestamp::from_millisecond(n).ok(),
        _ => None,
    }
}

fn truncate(instant: Timestamp) -> Timestamp {
    Timestamp::from_second(instant.as_second()).unwrap_or(instant)
}
