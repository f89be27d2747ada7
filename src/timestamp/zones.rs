//! Zone abbreviations and the UTC offsets they stand for: one table of
//! those with one meaning, one of those with several.

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

/// The offset (minutes east of UTC) an abbreviation stands for, with a
/// note when it could stand for others.
pub(super) fn abbreviation_offset(abbreviation: &str) -> Option<(i32, Option<String>)> {
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

fn format_offset(minutes: i32) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let minutes = minutes.abs();
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}
