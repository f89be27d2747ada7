//! A negative or otherwise unreadable ticket id is refused with a 400 that
//! says why, and is never attributed to another ticket: not applied, and
//! journaled without a ticket id. Over real sockets, against both backends.

mod common;

use common::{Backend, Codex, SECRET, TestDb};
use serde_json::json;

for_each_backend!(
    negative_ticket_id_is_refused_and_never_ticket_1,
    negative_ticket_id_as_text_is_refused,
    unreadable_ticket_id_is_not_replaced_by_another_id_in_the_body,
    negative_id_in_a_broken_body_is_not_attributed,
    negative_superops_ticket_id_is_refused,
);

/// Codex with ticket 1 (subject "Original") and ticket 5 stored.
fn with_tickets(db: &TestDb) -> Codex {
    let codex = Codex::start(db, "");
    for id in [1, 5] {
        let body = json!({"event": "ticket.created", "ticket_id": id, "subject": "Original", "status_id": 2});
        assert_eq!(codex.deliver_json(&body).status, 201);
    }
    codex
}

/// The refused delivery changed no ticket and its journal row names none.
fn assert_nothing_attributed(db: &TestDb) {
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 2);
    for id in [1, 5] {
        let ticket = db.ticket(id).unwrap();
        assert_eq!(ticket["subject"].as_deref(), Some("Original"), "{ticket:?}");
        assert_eq!(ticket["status"].as_deref(), Some("open"), "{ticket:?}");
    }
    let rows = db.rows("SELECT ticket_id, error FROM webhook_events ORDER BY id DESC LIMIT 1");
    assert_eq!(rows[0][0], None, "journaled as a ticket: {rows:?}");
    assert!(rows[0][1].is_some(), "{rows:?}");
}

fn assert_refused(response: &common::Response, says: &str) {
    assert_eq!(
        response.status,
        400,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    assert!(body.get("ticket_id").is_none(), "{body}");
}

fn negative_ticket_id_is_refused_and_never_ticket_1(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = with_tickets(&db);
    let body =
        json!({"event": "ticket.updated", "ticket_id": -1, "subject": "Hijack", "status_id": 5});
    assert_refused(
        &codex.deliver_json(&body),
        "ticket_id: -1 is not a positive id",
    );
    assert_nothing_attributed(&db);
}

fn negative_ticket_id_as_text_is_refused(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = with_tickets(&db);
    for id in ["-1", "-5", "0", "--1", "#-1"] {
        let body = json!({"event": "ticket.updated", "ticket_id": id, "subject": "Hijack", "status_id": 5});
        assert_refused(&codex.deliver_json(&body), "ticket_id: ");
        assert_nothing_attributed(&db);
    }
}

fn unreadable_ticket_id_is_not_replaced_by_another_id_in_the_body(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = with_tickets(&db);
    // The body's own "id" (here 5) is not the ticket's when ticket_id is unreadable.
    for ticket_id in [json!("abc"), json!(1.5), json!(-1), json!([1])] {
        let body = json!({"ticket_id": ticket_id, "id": 5, "subject": "Hijack", "status_id": 5});
        assert_refused(&codex.deliver_json(&body), "is not");
        assert_nothing_attributed(&db);
    }
}

fn negative_id_in_a_broken_body_is_not_attributed(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = with_tickets(&db);
    let broken = r#"{"event": "ticket.updated", "ticket_id": -1, "id": 5, "subject": "Hijack" {{"#;
    assert_refused(&codex.deliver(broken), "not JSON");
    assert_nothing_attributed(&db);
}

fn negative_superops_ticket_id_is_refused(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = with_tickets(&db);
    let response = codex.request(
        "POST",
        "/webhooks/superops/ticket",
        &[
            ("X-Webhook-Secret", SECRET),
            ("Content-Type", "application/json"),
        ],
        json!({"ticketId": "-1", "subject": "Hijack", "status": "Closed"})
            .to_string()
            .as_bytes(),
    );
    assert_refused(&response, "is not a positive id");
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_source = 'superops'"),
        0
    );
    assert_nothing_attributed(&db);
}
