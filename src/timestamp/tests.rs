//! Reading the forms PSAs send, through the public functions.

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
