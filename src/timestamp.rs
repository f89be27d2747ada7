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

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::fmt::rfc2822::DateTimeParser;
use jiff::tz::{Offset, TimeZone};

use crate::error::TimestampError;

static RFC2822: DateTimeParser = DateTimeParser::new();

/// Zone abbreviations that stand for one UTC offset (minutes east of
/// UTC), in the rows docs/freshservice-bodies.md lists them in.
#[rustfmt::skip]
const ABBREVIATIONS: &[&[(&str, i32)]] = &[
    &[("UTC", 0), ("UT", 0), ("GMT", 0), ("Z", 0)],
    &[("EST", -300), ("EDT", -240), ("CDT", -300), ("MST", -420), ("MDT", -360), ("PST", -480), ("PDT", -420), ("AKST", -540), ("AKDT", -480), ("HST", -600)],
    &[("ADT", -180), ("NST", -210), ("NDT", -150), ("BRT", -180), ("ART", -180)],
    &[("WET", 0), ("WEST", 60), ("CET", 60), ("CEST", 120), ("EET", 120), ("EEST", 180), ("MSK", 180)],
    &[("WAT", 60), ("CAT", 120), ("SAST", 120), ("EAT", 180), ("GST", 240)],
    &[("PKT", 300), ("NPT", 345), ("ICT", 420), ("WIB", 420), ("SGT", 480), ("HKT", 480), ("PHT", 480), ("AWST", 480)],
    &[("JST", 540), ("KST", 540), ("ACST", 570), ("ACDT", 630), ("AEST", 600), ("AEDT", 660), ("NZST", 720), ("NZDT", 780)],
];

/// Zone abbreviations that stand for several offsets, each meaning with
/// its name: the first is read (with a note saying so) unless the
/// configured zone uses the abbreviation itself.
const AMBIGUOUS: &[(&str, &[(&str, i32)])] = &[
    (
        "BST",
        &[
            ("British Summer Time", 60),
            ("Bangladesh Standard Time", 360),
        ],
    ),
    (
        "IST",
        &[
            ("India Standard Time", 330),
            ("Irish Standard Time", 60),
            ("Israel Standard Time", 120),
        ],
    ),
    (
        "AST",
        &[
            ("Atlantic Standard Time", -240),
            ("Arabia Standard Time", 180),
        ],
    ),
    (
        "CST",
        &[
            ("Central Standard Time (North America)", -360),
            ("China Standard Time", 480),
        ],
    ),
];

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
    fields.resolve(text, zone)
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

/// The zone a text names, if any. IANA names are not read from requests:
/// loading a zone parses its TZif data, which needs more stack than a
/// request handler has in unoptimized builds, and no Freshservice format
/// prints one.
#[derive(Debug, Clone, PartialEq)]
enum Zone {
    Offset(i32),
    Abbreviation(String),
}

/// The parts of a timestamp found in free text.
#[derive(Debug, Default)]
struct Fields {
    year: Option<i16>,
    month: Option<i8>,
    day: Option<i8>,
    time: Option<(i8, i8, i8)>,
    meridiem: Option<Meridiem>,
    zone: Option<Zone>,
}

/// Which half of a 12-hour clock a time is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meridiem {
    Am,
    Pm,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl Fields {
    /// Reads the words of `text`; `None` when one of them is not part of a
    /// timestamp.
    fn scan(text: &str) -> Option<Fields> {
        let mut fields = Fields::default();
        let cleaned = text.replace([',', '(', ')'], " ");
        for word in cleaned.split_whitespace() {
            fields.word(word)?;
        }
        Some(fields)
    }

    fn word(&mut self, word: &str) -> Option<()> {
        let lower = word.to_ascii_lowercase();
        if matches!(lower.as_str(), "at" | "on" | "the" | "of") {
            return Some(());
        }
        if let Some(month) = month_number(&lower) {
            return set(&mut self.month, month);
        }
        if WEEKDAYS
            .iter()
            .any(|d| lower.len() >= 3 && d.starts_with(lower.trim_end_matches('.')))
        {
            return Some(());
        }
        match lower.as_str() {
            "am" | "a.m." => return set(&mut self.meridiem, Meridiem::Am),
            "pm" | "p.m." => return set(&mut self.meridiem, Meridiem::Pm),
            _ => {}
        }
        // 2024-01-15, 2024/01/15, or 2024-01-15T10:30:00[zone].
        if let Some((date, rest)) = iso_date(word) {
            set(&mut self.year, date.year())?;
            set(&mut self.month, date.month())?;
            set(&mut self.day, date.day())?;
            return match rest {
                "" => Some(()),
                rest => self.word(rest.strip_prefix(['T', 't'])?),
            };
        }
        if word.starts_with(|c: char| c.is_ascii_digit()) && word.contains(':') {
            return self.clock(word);
        }
        if word.starts_with(['+', '-']) {
            return set(&mut self.zone, Zone::Offset(offset_minutes(word)?));
        }
        if word.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = word.parse().ok()?;
            return match word.len() {
                4 => set(&mut self.year, i16::try_from(n).ok()?),
                1 | 2 if (1..=31).contains(&n) => set(&mut self.day, n as i8),
                _ => None,
            };
        }
        // 15th, 1st, 22nd, 3rd.
        if let Some(day) = ["st", "nd", "rd", "th"]
            .iter()
            .find_map(|s| lower.strip_suffix(s))
            .and_then(|d| d.parse::<i8>().ok())
        {
            if !(1..=31).contains(&day) {
                return None;
            }
            return set(&mut self.day, day);
        }
        // UTC+05:30, GMT-8.
        for prefix in ["utc", "gmt"] {
            if let Some(rest) = lower.strip_prefix(prefix) {
                if rest.starts_with(['+', '-']) {
                    return set(&mut self.zone, Zone::Offset(offset_minutes(rest)?));
                }
            }
        }
        if (1..=5).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_alphabetic()) {
            return set(
                &mut self.zone,
                Zone::Abbreviation(word.to_ascii_uppercase()),
            );
        }
        None
    }

    /// `10:30`, `10:30:15`, `10:30:15.123`, with `AM`/`PM`, `Z` or an offset
    /// attached (`10:30AM`, `10:30:00+05:30`).
    fn clock(&mut self, word: &str) -> Option<()> {
        let end = word
            .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
            .unwrap_or(word.len());
        let (clock, rest) = word.split_at(end);
        let mut parts = clock.split(':');
        let hour: i8 = parts.next()?.parse().ok()?;
        let minute: i8 = parts.next()?.parse().ok()?;
        let second: i8 = match parts.next() {
            Some(s) => s.split('.').next()?.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        set(&mut self.time, (hour, minute, second))?;
        match rest {
            "" => Some(()),
            rest => self.word(rest),
        }
    }

    /// The instant `text` (these fields) stands for, read in `configured`
    /// when it names no zone.
    fn resolve(self, text: &str, configured: &TimeZone) -> Result<Reading, TimestampError> {
        let text = || text.to_string();
        let (Some(year), Some(month), Some(day)) = (self.year, self.month, self.day) else {
            return Err(TimestampError::Unreadable(text()));
        };
        let (mut hour, minute, second) = self.time.unwrap_or((0, 0, 0));
        match self.meridiem {
            Some(_) if !(1..=12).contains(&hour) => {
                return Err(TimestampError::HourWithMeridiem { text: text(), hour });
            }
            Some(Meridiem::Pm) if hour < 12 => hour += 12,
            Some(Meridiem::Am) if hour == 12 => hour = 0,
            _ => {}
        }
        let civil = DateTime::new(year, month, day, hour, minute, second, 0).map_err(|e| {
            TimestampError::NotADateTime {
                text: text(),
                reason: e.to_string(),
            }
        })?;
        let out_of_range = |e: jiff::Error| TimestampError::OutOfRange {
            text: text(),
            reason: e.to_string(),
        };
        let in_zone = |zone: &TimeZone| {
            zone.to_ambiguous_timestamp(civil)
                .compatible()
                .map_err(out_of_range)
        };
        let fixed = |minutes: i32| {
            Offset::from_seconds(minutes * 60)
                .and_then(|offset| offset.to_timestamp(civil))
                .map_err(out_of_range)
        };
        let (instant, note) = match self.zone {
            None => (in_zone(configured)?, None),
            Some(Zone::Offset(minutes)) => (fixed(minutes)?, None),
            Some(Zone::Abbreviation(abbreviation)) => {
                // The configured zone's own abbreviation at that time wins:
                // IST is Dublin's summer time to an Irish account.
                let own = in_zone(configured).ok().filter(|instant| {
                    configured
                        .to_offset_info(*instant)
                        .abbreviation()
                        .eq_ignore_ascii_case(&abbreviation)
                });
                match (own, abbreviation_offset(&abbreviation)) {
                    (Some(instant), _) => (instant, None),
                    (None, Some((minutes, note))) => (fixed(minutes)?, note),
                    (None, None) => {
                        return Err(TimestampError::UnknownAbbreviation {
                            text: text(),
                            abbreviation,
                        });
                    }
                }
            }
        };
        Ok(Reading {
            instant: truncate(instant),
            note,
        })
    }
}

/// The offset (minutes east of UTC) an abbreviation stands for, with a
/// note when it could stand for others.
fn abbreviation_offset(abbreviation: &str) -> Option<(i32, Option<String>)> {
    if let Some((_, meanings)) = AMBIGUOUS.iter().find(|(a, _)| *a == abbreviation) {
        let (name, minutes) = meanings[0];
        let note = format!(
            "the zone {abbreviation} is ambiguous; read as {name} (UTC{}). \
             Set [freshservice] timezone to the account's zone to read it otherwise",
            format_offset(minutes)
        );
        return Some((minutes, Some(note)));
    }
    ABBREVIATIONS
        .iter()
        .flat_map(|row| row.iter())
        .find(|(a, _)| *a == abbreviation)
        .map(|(_, minutes)| (*minutes, None))
}

/// Sets a part once; a second, different value makes the text unreadable.
fn set<T: PartialEq>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(existing) if *existing != value => None,
        _ => {
            *slot = Some(value);
            Some(())
        }
    }
}

fn month_number(word: &str) -> Option<i8> {
    let word = word.trim_end_matches('.');
    if word.len() < 3 {
        return None;
    }
    let word = if word == "sept" { "sep" } else { word };
    MONTHS
        .iter()
        .position(|m| m.starts_with(word))
        .map(|i| i as i8 + 1)
}

/// A leading `YYYY-MM-DD` or `YYYY/MM/DD`, and what follows it.
fn iso_date(word: &str) -> Option<(Date, &str)> {
    let head = word.get(..10)?;
    let bytes = head.as_bytes();
    let sep = bytes[4];
    if !(sep == b'-' || sep == b'/') || bytes[7] != sep {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i16> {
        let part = &head[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let date = Date::new(number(0..4)?, number(5..7)? as i8, number(8..10)? as i8).ok()?;
    Some((date, &word[10..]))
}

/// `+0530`, `+05:30`, `+05`, `-8` as minutes east of UTC.
fn offset_minutes(text: &str) -> Option<i32> {
    let sign = match text.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        _ => return None,
    };
    (hours <= 18 && minutes < 60).then_some(sign * (hours * 60 + minutes))
}

fn format_offset(minutes: i32) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let minutes = minutes.abs();
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

fn truncate(instant: Timestamp) -> Timestamp {
    Timestamp::from_second(instant.as_second()).unwrap_or(instant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn read_in(text: &str, zone: &TimeZone) -> Result<(String, Option<String>), TimestampError> {
        read(text, zone).map(|r| (format(r.instant), r.note))
    }

    #[test]
    fn accepts_the_formats_psas_send() {
        let cases = [
            ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00Z"),
            ("2024-01-15T10:30:00.789Z", "2024-01-15T10:30:00Z"),
            ("2024-01-15T12:30:00+02:00", "2024-01-15T10:30:00Z"),
            ("Mon, 15 Jan 2024 10:30:00 +0000", "2024-01-15T10:30:00Z"),
            ("Mon, 15 Jan 2024 11:30:00 +0100", "2024-01-15T10:30:00Z"),
            ("2024-01-15 10:30:00", "2024-01-15T10:30:00Z"),
            ("2024-01-15T10:30:00", "2024-01-15T10:30:00Z"),
            ("2024-01-15 16:00:00 +05:30", "2024-01-15T10:30:00Z"),
            ("2024-01-15 16:00:00 +0530", "2024-01-15T10:30:00Z"),
            ("2024-01-15 16:00:00+05:30", "2024-01-15T10:30:00Z"),
            ("2024-01-15 10:30:00 UTC", "2024-01-15T10:30:00Z"),
            ("2024-01-15 10:30:00 Z", "2024-01-15T10:30:00Z"),
            ("2024-01-15 10:30:00Z", "2024-01-15T10:30:00Z"),
            ("2024/01/15 10:30:00", "2024-01-15T10:30:00Z"),
            ("January 15 2024 at 04:00 PM IST", "2024-01-15T10:30:00Z"),
            ("January 15, 2024 at 10:30 AM EST", "2024-01-15T15:30:00Z"),
            ("Jan 15, 2024 10:30 AM", "2024-01-15T10:30:00Z"),
            ("Jan 15, 2024 10:30AM", "2024-01-15T10:30:00Z"),
            ("15 Jan 2024", "2024-01-15T00:00:00Z"),
            ("15 January 2024 22:05", "2024-01-15T22:05:00Z"),
            ("Monday, January 15th 2024 12:00 AM", "2024-01-15T00:00:00Z"),
            ("Sept 3 2024 12:15 PM GMT", "2024-09-03T12:15:00Z"),
            ("Jan  5 2024 at 09:00 AM PST", "2024-01-05T17:00:00Z"),
            ("Jan 15 2024 10:30 UTC+05:30", "2024-01-15T05:00:00Z"),
            ("1705314600", "2024-01-15T10:30:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn a_time_without_zone_is_read_in_the_configured_zone() {
        let kolkata = zone("Asia/Kolkata");
        assert_eq!(
            read_in("2024-01-15 16:00:00", &kolkata).unwrap().0,
            "2024-01-15T10:30:00Z"
        );
        assert_eq!(
            read_in("15 Jan 2024", &kolkata).unwrap().0,
            "2024-01-14T18:30:00Z"
        );
        // An explicit offset still wins.
        assert_eq!(
            read_in("2024-01-15 10:30:00 +0000", &kolkata).unwrap().0,
            "2024-01-15T10:30:00Z"
        );
    }

    #[test]
    fn ambiguous_abbreviations_follow_the_configured_zone() {
        // Default UTC: IST is India's, with a note saying so.
        let (at, note) = read_in("January 15 2024 at 10:30 AM IST", &TimeZone::UTC).unwrap();
        assert_eq!(at, "2024-01-15T05:00:00Z");
        assert!(note.unwrap().contains("ambiguous"));
        // In Dublin, IST is Irish summer time (+01:00).
        let (at, note) = read_in("July 15 2024 at 10:30 AM IST", &zone("Europe/Dublin")).unwrap();
        assert_eq!(at, "2024-07-15T09:30:00Z");
        assert_eq!(note, None);
        // In Chicago, CST is the configured zone's.
        let (at, note) = read_in("Jan 15 2024 10:30 AM CST", &zone("America/Chicago")).unwrap();
        assert_eq!(at, "2024-01-15T16:30:00Z");
        assert_eq!(note, None);
        // In Shanghai, CST is China's.
        let (at, _) = read_in("Jan 15 2024 10:30 AM CST", &zone("Asia/Shanghai")).unwrap();
        assert_eq!(at, "2024-01-15T02:30:00Z");
        // An unambiguous one needs no note.
        assert_eq!(
            read_in("Jan 15 2024 10:30 AM JST", &TimeZone::UTC)
                .unwrap()
                .1,
            None
        );
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for text in [
            "yesterday",
            "2024-13-45 10:00:00",
            "Jan 2024",
            "February 30 2024",
            "Jan 15 2024 13:00 PM",
            "Jan 15 2024 10:30 XYZT",
            "soon-ish",
            "",
        ] {
            assert!(normalize(text).is_err(), "{text}");
        }
        let error = normalize("yesterday").unwrap_err().to_string();
        assert!(error.contains("RFC 3339"), "{error}");
        let error = normalize("Jan 15 2024 10:30 QQQ").unwrap_err().to_string();
        assert!(error.contains("timezone"), "{error}");
        let long = "2024-01-15T".repeat(100_000);
        assert!(
            normalize(&long)
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn the_bundled_zone_database_is_there_without_the_system_one() {
        let db = jiff::tz::TimeZoneDatabase::bundled();
        assert!(db.get("Asia/Kolkata").is_ok());
        assert!(db.get("Europe/Dublin").is_ok());
    }

    #[test]
    fn stored_form_sorts_in_time_order() {
        let a = normalize("2024-01-15 09:59:59").unwrap();
        let b = normalize("2024-01-15T10:00:00Z").unwrap();
        assert!(a < b);
    }
}
