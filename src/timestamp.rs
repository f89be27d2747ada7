//! Timestamps as Codex stores them: UTC text `YYYY-MM-DDTHH:MM:SSZ`, which
//! sorts in time order in both SQLite and PostgreSQL.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::fmt::rfc2822::DateTimeParser;
use jiff::tz::TimeZone;

static RFC2822: DateTimeParser = DateTimeParser::new();

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

/// Reads what PSAs send: RFC 3339 (`2024-01-15T10:30:00Z`,
/// `2024-01-15T10:30:00.123+05:30`), RFC 2822 (`Mon, 15 Jan 2024 10:30:00
/// +0000`) and `YYYY-MM-DD HH:MM:SS` with or without an offset (without one,
/// UTC). Fractions of a second are dropped.
pub fn parse(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Ok(truncate(instant));
    }
    if let Ok(instant) = RFC2822.parse_timestamp(text) {
        return Ok(truncate(instant));
    }
    // "2024-01-15 10:30:00 +05:30" and "... UTC": offset separated by a space.
    if let Some((datetime, zone)) = text.rsplit_once(' ') {
        let zone = zone.trim();
        if zone.eq_ignore_ascii_case("utc") || zone.eq_ignore_ascii_case("gmt") || zone == "Z" {
            if let Ok(civil) = datetime.trim().parse::<DateTime>() {
                return civil_utc(civil);
            }
        } else if zone.starts_with(['+', '-']) {
            let joined = format!("{}{}", datetime.trim(), zone);
            if let Ok(instant) = joined.parse::<Timestamp>() {
                return Ok(truncate(instant));
            }
        }
    }
    if let Ok(civil) = text.parse::<DateTime>() {
        return civil_utc(civil);
    }
    Err(format!(
        "'{text}' is not a timestamp; send RFC 3339 (2024-01-15T10:30:00Z), RFC 2822 or YYYY-MM-DD HH:MM:SS"
    ))
}

/// Parses and returns the stored form.
pub fn normalize(text: &str) -> Result<String, String> {
    parse(text).map(format)
}

fn civil_utc(civil: DateTime) -> Result<Timestamp, String> {
    TimeZone::UTC
        .to_timestamp(civil)
        .map(truncate)
        .map_err(|error| error.to_string())
}

fn truncate(instant: Timestamp) -> Timestamp {
    Timestamp::from_second(instant.as_second()).unwrap_or(instant)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("2024-01-15 16:00:00+05:30", "2024-01-15T10:30:00Z"),
            ("2024-01-15 10:30:00 UTC", "2024-01-15T10:30:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        let error = normalize("yesterday").unwrap_err();
        assert!(error.contains("RFC 3339"), "{error}");
        assert!(normalize("2024-13-45 10:00:00").is_err());
    }

    #[test]
    fn stored_form_sorts_in_time_order() {
        let a = normalize("2024-01-15 09:59:59").unwrap();
        let b = normalize("2024-01-15T10:00:00Z").unwrap();
        assert!(a < b);
    }
}
