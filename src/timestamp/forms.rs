//! Timestamps in free text (`January 15 2024 at 10:30 AM IST`, `15 Jan
//! 2024`, `2024-01-15 10:30:00 +0530`), read word by word into their
//! parts, then resolved into an instant in the zone they name or the
//! configured one.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};

use super::zones::abbreviation_offset;
use crate::error::TimestampError;

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
pub(super) struct Fields {
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
    pub(super) fn scan(text: &str) -> Option<Fields> {
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
    /// when it names no zone, with a note when reading it took a guess.
    pub(super) fn resolve(
        self,
        text: &str,
        configured: &TimeZone,
    ) -> Result<(Timestamp, Option<String>), TimestampError> {
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
        Ok((instant, note))
    }
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
