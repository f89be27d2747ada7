//! Every body a real admin's Freshservice template can produce, as
//! Freshservice renders it: each is delivered over HTTP to the real binary
//! and the stored row it must produce is checked in the database.

mod common;

use std::collections::HashSet;

use common::{Backend, Codex, TestDb};
use proptest::prelude::*;

for_each_backend!(
    every_template_form_stores_its_row,
    any_body_with_a_readable_ticket_id_is_stored_or_journaled_by_ticket,
    without_the_system_zone_database_zones_still_resolve,
);

/// One delivery and what it must come to.
struct Case {
    body: &'static str,
    /// The answer's status.
    status: u16,
    ticket: i64,
    /// Stored columns that must hold these values (`None`: NULL).
    row: &'static [(&'static str, Option<&'static str>)],
    /// A warning in the answer containing this, or none at all when empty.
    warning: &'static str,
}

/// The default instance: `[freshservice] timezone` unset (UTC).
const DEFAULT_ZONE: &[Case] = &[
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 101, "subject": "RFC 3339", "updated_at": "2024-01-15T10:30:00Z"}"#,
        status: 201,
        ticket: 101,
        row: &[
            ("last_updated_at", Some("2024-01-15T10:30:00Z")),
            ("subject", Some("RFC 3339")),
        ],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 102, "updated_at": "Mon, 15 Jan 2024 10:30:00 +0000"}"#,
        status: 201,
        ticket: 102,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        // Ruby's Time#to_s.
        body: r#"{"event": "ticket.created", "ticket_id": 103, "updated_at": "2024-01-15 16:00:00 +0530"}"#,
        status: 201,
        ticket: 103,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 104, "updated_at": "2024-01-15 05:30:00 -05:00"}"#,
        status: 201,
        ticket: 104,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 105, "updated_at": "2024-01-15 10:30:00Z"}"#,
        status: 201,
        ticket: 105,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        // No zone: the configured one, UTC by default.
        body: r#"{"event": "ticket.created", "ticket_id": 106, "updated_at": "2024-01-15 10:30:00"}"#,
        status: 201,
        ticket: 106,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        // strftime %B %e %Y at %I:%M %p %Z, with an ambiguous abbreviation.
        body: r#"{"event": "ticket.created", "ticket_id": 107, "updated_at": "January 15 2024 at 04:00 PM IST"}"#,
        status: 201,
        ticket: 107,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "IST is ambiguous",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 108, "updated_at": "15 Jan 2024"}"#,
        status: 201,
        ticket: 108,
        row: &[("last_updated_at", Some("2024-01-15T00:00:00Z"))],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 109, "updated_at": "Jan 15, 2024 10:30 AM"}"#,
        status: 201,
        ticket: 109,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 110, "updated_at": "January 15 2024 at 10:30 AM EST"}"#,
        status: 201,
        ticket: 110,
        row: &[("last_updated_at", Some("2024-01-15T15:30:00Z"))],
        warning: "",
    },
    Case {
        // Nested under "ticket", a prefixed id, a status display name.
        body: r#"{"event": "ticket.updated", "ticket": {"id": "INC-201", "subject": "Nested", "status": "Waiting on Customer", "updated_at": "2024-02-01T00:00:00Z"}}"#,
        status: 201,
        ticket: 201,
        row: &[
            ("subject", Some("Nested")),
            ("status", Some("waiting_customer")),
            ("status_id", Some("9")),
        ],
        warning: "",
    },
    Case {
        // Freshdesk's wrapper and ticket_-prefixed keys, no event.
        body: r#"{"freshdesk_webhook": {"ticket_id": "SR-202", "ticket_subject": "Wrapped", "ticket_status": "Pending", "ticket_priority": "High"}}"#,
        status: 201,
        ticket: 202,
        row: &[
            ("subject", Some("Wrapped")),
            ("status", Some("pending")),
            ("priority", Some("high")),
        ],
        warning: "event is missing",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_number": 203, "subject": "By number"}"#,
        status: 201,
        ticket: 203,
        row: &[("subject", Some("By number"))],
        warning: "",
    },
    Case {
        body: r##"{"event": "ticket.created", "display_id": "#INC-204", "subject": "By display id"}"##,
        status: 201,
        ticket: 204,
        row: &[("subject", Some("By display id"))],
        warning: "",
    },
    Case {
        // {{ticket.id}} unquoted renders as a bare prefixed id.
        body: r#"{"event": "ticket.created", "ticket_id": INC-205, "subject": "Bare prefixed"}"#,
        status: 201,
        ticket: 205,
        row: &[("subject", Some("Bare prefixed"))],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": "206", "subject": "Quoted id"}"#,
        status: 201,
        ticket: 206,
        row: &[("subject", Some("Quoted id"))],
        warning: "",
    },
    Case {
        // A Freshdesk-style event: not one of the three names.
        body: r#"{"triggered_event": {status:{from:4,to:6}}, "ticket_id": 207, "subject": "Freshdesk event"}"#,
        status: 201,
        ticket: 207,
        row: &[("subject", Some("Freshdesk event"))],
        warning: "read as ticket.updated",
    },
    Case {
        body: r#"{"event": "", "ticket_id": 208, "subject": "Empty event"}"#,
        status: 201,
        ticket: 208,
        row: &[("subject", Some("Empty event"))],
        warning: "event is empty",
    },
    Case {
        body: r#"{"event": "ticket.merged", "ticket_id": 209, "subject": "Odd event"}"#,
        status: 201,
        ticket: 209,
        row: &[("subject", Some("Odd event"))],
        warning: "'ticket.merged'",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 301, "subject": "Tom &amp; Jerry&#39;s &quot;PC&quot; &lt;3", "requester_name": "O&#39;Brien"}"#,
        status: 201,
        ticket: 301,
        row: &[
            ("subject", Some("Tom & Jerry's \"PC\" <3")),
            ("requester_name", Some("O'Brien")),
        ],
        warning: "",
    },
    Case {
        // {{ticket.description}} is HTML with raw quotes, one followed by a comma.
        body: r#"{"event": "ticket.created", "ticket_id": 302, "description": "<p class="x">Hi "Bob", see <a href="https://e.x/y">this</a></p>", "status_id": 3}"#,
        status: 201,
        ticket: 302,
        row: &[
            (
                "description",
                Some(r#"<p class="x">Hi "Bob", see <a href="https://e.x/y">this</a></p>"#),
            ),
            ("status", Some("pending")),
        ],
        warning: "",
    },
    Case {
        body: "{\"event\": \"ticket.created\", \"ticket_id\": 303\n\"subject\": \"Missing comma\"}",
        status: 201,
        ticket: 303,
        row: &[("subject", Some("Missing comma"))],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 304, "subject": "Trailing comma",}"#,
        status: 201,
        ticket: 304,
        row: &[("subject", Some("Trailing comma"))],
        warning: "",
    },
    Case {
        // The guide's template as a real account renders it.
        body: "{\n\"event\": \"ticket.updated\",\n\"ticket_id\": INC-305,\n\"subject\": \"Printer &quot;HP&quot; down\",\n\"status_id\": Open,\n\"priority_id\": High,\n\"requester_email\": \"pat@example.com\",\n\"requester_name\": \"Pat\",\n\"requester_id\": 7,\n\"responder_id\": ,\n\"group_id\": ,\n\"department_id\": 4,\n\"updated_at\": \"2024-01-15 16:00:00 +0530\"\n}",
        status: 201,
        ticket: 305,
        row: &[
            ("subject", Some("Printer \"HP\" down")),
            ("status", Some("open")),
            ("priority", Some("high")),
            ("responder_id", None),
            ("group_id", None),
            ("department_id", Some("4")),
            ("last_updated_at", Some("2024-01-15T10:30:00Z")),
        ],
        warning: "",
    },
];

/// An instance with `timezone = Asia/Kolkata` and the admin's own keys.
const KOLKATA_AND_MAPPED: &[Case] = &[
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 401, "updated_at": "2024-01-15 16:00:00"}"#,
        status: 201,
        ticket: 401,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        // IST is the configured zone's own: no guess, no warning.
        body: r#"{"event": "ticket.created", "ticket_id": 402, "updated_at": "January 15 2024 at 04:00 PM IST"}"#,
        status: 201,
        ticket: 402,
        row: &[("last_updated_at", Some("2024-01-15T10:30:00Z"))],
        warning: "",
    },
    Case {
        body: r#"{"event": "ticket.created", "ticket_id": 403, "updated_at": "15 Jan 2024"}"#,
        status: 201,
        ticket: 403,
        row: &[("last_updated_at", Some("2024-01-14T18:30:00Z"))],
        warning: "",
    },
    Case {
        body: r#"{"Action": "ticket.created", "TicketNumber": "SR-404", "Title": "Mapped", "State": "Closed"}"#,
        status: 201,
        ticket: 404,
        row: &[("subject", Some("Mapped")), ("status", Some("closed"))],
        warning: "",
    },
];

const KOLKATA_CONFIG: &str = "[freshservice]\ntimezone = Asia/Kolkata\n\
    [freshservice.webhook_fields]\nticket_id = TicketNumber\nsubject = Title\nstatus = State\nevent = Action\n";

fn check(codex: &Codex, db: &TestDb, case: &Case) {
    let response = codex.deliver(case.body);
    let answer = response.json();
    assert_eq!(response.status, case.status, "{}: {answer}", case.body);
    assert_eq!(answer["ticket_id"], case.ticket, "{}: {answer}", case.body);
    let warnings = answer["warnings"].as_array().cloned().unwrap_or_default();
    if case.warning.is_empty() {
        assert!(warnings.is_empty(), "{}: {answer}", case.body);
    } else {
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap_or_default().contains(case.warning)),
            "{}: {answer}",
            case.body
        );
    }
    let row = db
        .ticket(case.ticket)
        .unwrap_or_else(|| panic!("{}: ticket {} not stored", case.body, case.ticket));
    for (column, expected) in case.row {
        assert_eq!(
            row[*column].as_deref(),
            *expected,
            "{}: column {column}",
            case.body
        );
    }
}

fn every_template_form_stores_its_row(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    for case in DEFAULT_ZONE {
        check(&codex, &db, case);
    }

    // A timestamp that cannot be read: applied as of its arrival, with a
    // warning saying so, and the raw value in the journal.
    let before = jiff::Timestamp::now().as_second() - 1;
    let response = codex.deliver(
        r#"{"event": "ticket.created", "ticket_id": 501, "subject": "Odd time", "updated_at": "the day after {{ticket.due}}"}"#,
    );
    assert_eq!(response.status, 201, "{}", response.json());
    let warning = response.json()["warnings"][0].as_str().unwrap().to_string();
    assert!(warning.contains("the day after"), "{warning}");
    assert!(warning.contains("ordered by arrival"), "{warning}");
    let stored = db.ticket(501).unwrap()["last_updated_at"].clone().unwrap();
    let stored = stored.parse::<jiff::Timestamp>().unwrap().as_second();
    assert!(stored >= before && stored <= before + 60, "{stored}");
    let journal = db.value(
        "SELECT error FROM webhook_events WHERE CAST(ticket_id AS TEXT) = '501' AND outcome = 'created'",
    );
    assert!(
        journal
            .as_deref()
            .unwrap_or_default()
            .contains("the day after"),
        "{journal:?}"
    );

    // A body beyond repair: 400, but the answer and the journal name the ticket.
    let wreck =
        codex.deliver(r#"{"event": "ticket.updated", "ticket_id": 502, "subject": "x" "y" : : {{"#);
    assert_eq!(wreck.status, 400, "{}", wreck.json());
    assert_eq!(wreck.json()["ticket_id"], 502);
    assert_eq!(
        db.value("SELECT outcome FROM webhook_events WHERE CAST(ticket_id AS TEXT) = '502'")
            .as_deref(),
        Some("rejected")
    );
    assert!(db.ticket(502).is_none());
    // A readable body without a ticket id: a requester's id is not taken
    // for the ticket's.
    let no_id =
        codex.deliver(r#"{"event": "ticket.updated", "subject": "x", "requester": {"id": 503}}"#);
    assert_eq!(no_id.status, 400);
    assert_eq!(no_id.json()["error"], "ticket_id is required");
    assert!(no_id.json().get("ticket_id").is_none(), "{}", no_id.json());
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE CAST(ticket_id AS TEXT) = '503'"),
        0
    );
    drop(codex);

    let codex = Codex::start(&db, KOLKATA_CONFIG);
    for case in KOLKATA_AND_MAPPED {
        check(&codex, &db, case);
    }
}

/// A machine whose zone database lacks the zones (an appliance without
/// tzdata; here `TZDIR` names a zoneinfo directory holding nothing usable,
/// which the system database then is): the copy built into Codex resolves
/// them all the same.
fn without_the_system_zone_database_zones_still_resolve(backend: Backend) {
    let db = TestDb::new(&backend);
    let zoneinfo = tempfile::tempdir().unwrap();
    std::fs::write(zoneinfo.path().join("Nowhere"), "not a TZif file").unwrap();
    let codex = Codex::start_with_env(
        &db,
        KOLKATA_CONFIG,
        &[("TZDIR", zoneinfo.path().to_str().unwrap())],
    );
    for case in &KOLKATA_AND_MAPPED[..3] {
        check(&codex, &db, case);
    }
    // A zone name in a timestamp is not loaded from a request (its TZif
    // parsing outgrows a handler's stack in unoptimized builds): the
    // timestamp is unreadable, and the delivery is applied as of its arrival.
    let response = codex.deliver(
        r#"{"event": "ticket.created", "ticket_id": 601, "updated_at": "2024-01-15 10:30:00 America/New_York"}"#,
    );
    assert_eq!(response.status, 201, "{}", response.json());
    assert!(db.ticket(601).is_some());
    assert_eq!(codex.get("/webhooks/health").status, 200);
}

/// Garbage that may land anywhere in a body except inside the id pair
/// (often none, so that readable bodies are generated too).
fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => proptest::string::string_regex(r#"[ "{}\[\],:\\&;#a-zA-Z0-9\n.<>=/-]{1,12}"#).unwrap(),
    ]
}

fn any_body_with_a_readable_ticket_id_is_stored_or_journaled_by_ticket(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let next_id = std::cell::Cell::new(10_000i64);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        prop::collection::vec(garbage(), 6),
        prop::sample::select(vec!["ticket_id", "id", "ticket_number", "display_id"]),
        prop::sample::select(vec!["{}", "\"{}\"", "INC-{}", "\"#SR-{}\""]),
        any::<bool>(),
    );
    let seen = std::cell::RefCell::new(HashSet::new());
    runner
        .run(&strategy, |(junk, key, id_form, truncate)| {
            next_id.set(next_id.get() + 1);
            let id = next_id.get();
            let id_pair = format!("\"{key}\": {}", id_form.replace("{}", &id.to_string()));
            let mut body = format!(
                "{}{{{}\"event\": \"ticket.updated\",{} {id_pair}, {}\"subject\": \"S{}\", \"updated_at\": \"2024-01-15 10:30:00 +0530\"{}}}",
                junk[0], junk[1], junk[2], junk[3], junk[4], junk[5]
            );
            if truncate {
                let cut = body.find(&id_pair).unwrap() + id_pair.len();
                body.truncate(cut);
            }
            let response = codex.deliver(&body);
            prop_assert!(response.status < 500, "{body}: {}", response.status);
            let stored = db.ticket(id).is_some();
            let journaled = db.count(&format!(
                "SELECT count(*) FROM webhook_events WHERE CAST(ticket_id AS TEXT) = '{id}'"
            )) == 1;
            prop_assert!(
                stored || journaled,
                "{body}: answered {} {}, neither stored nor journaled under {id}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
            if response.status < 300 {
                prop_assert!(stored, "{body}: acknowledged but not stored");
            }
            seen.borrow_mut().insert(response.status);
            Ok(())
        })
        .unwrap();
    // The generator reaches both outcomes, or the property says little.
    let seen = seen.into_inner();
    assert!(seen.iter().any(|s| *s < 300), "{seen:?}");
}
