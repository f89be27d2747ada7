//! Taking over the Python predecessor's database: its exact DDL (copied
//! from its SQLAlchemy models into tests/fixtures/predecessor), rows as its
//! writers leave them, `codex migrate` and `codex serve` on top, and then
//! the predecessor's own reader queries and writers as SQL.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fake_freshservice::{FakeFreshservice, ticket};
use common::{
    Backend, Codex, SECRET, TestDb, base_config, fixture, predecessor_db, run_codex, run_codex_in,
    wait_until,
};
use serde_json::json;

for_each_backend!(
    fresh_database_has_every_predecessor_column_with_its_type,
    takeover_keeps_inherited_rows_and_the_predecessors_readers_work,
    late_delivery_loses_to_an_inherited_row,
    rows_the_predecessor_writes_after_takeover_also_win_over_late_deliveries,
    long_value_on_a_varchar_150_column_is_stored_without_a_5xx,
    new_rows_look_like_the_predecessors_from_webhook_and_poll,
    company_is_left_null_without_a_companies_table,
    delete_of_an_unknown_ticket_leaves_no_row_and_its_tombstone_is_pruned,
    failed_migration_leaves_the_database_exactly_as_it_was,
    check_config_fails_where_serve_would_and_changes_nothing,
    codex_schema_1_is_upgraded_in_place,
    predecessor_database_left_half_migrated_by_codex_1_is_completed,
);

/// The predecessor's 30 columns, in its order.
const PREDECESSOR_COLUMNS: [&str; 30] = [
    "id",
    "external_id",
    "external_source",
    "company_account_number",
    "ticket_number",
    "subject",
    "description",
    "description_text",
    "status",
    "priority",
    "status_id",
    "priority_id",
    "ticket_type",
    "requester_email",
    "requester_name",
    "requester_id",
    "responder_id",
    "group_id",
    "created_at",
    "last_updated_at",
    "closed_at",
    "total_hours_spent",
    "fr_due_by",
    "due_by",
    "first_responded_at",
    "agent_responded_at",
    "department_id",
    "webhook_updated_at",
    "conversations",
    "notes",
];

/// A company, as the predecessor's admin pages create them.
fn seed_companies(db: &TestDb) {
    db.execute(
        "INSERT INTO companies (account_number, psa_provider, external_id, external_source, name) VALUES \
         ('ACME-1', 'freshservice', 4004, 'freshservice', 'Acme'), \
         ('GLOBEX-2', 'freshservice', 6, 'freshservice', 'Globex'), \
         ('OTHER-3', 'superops', 4005, 'superops', 'Elsewhere')",
    );
}

/// A ticket row as the predecessor's webhook and sync write it: every
/// column, timestamps as ISO strings, the id as `ticket_number`.
#[allow(clippy::too_many_arguments)]
fn seed_ticket(
    db: &TestDb,
    id: i64,
    status: (&str, i64),
    priority: (&str, i64),
    responder: i64,
    group: i64,
    company: Option<&str>,
    updated_at: &str,
) {
    let company = company.map_or("NULL".to_string(), |c| format!("'{c}'"));
    db.execute(&format!(
        "INSERT INTO ticket_details (external_id, external_source, company_account_number, ticket_number, \
         subject, description, description_text, status, priority, status_id, priority_id, ticket_type, \
         requester_email, requester_name, requester_id, responder_id, group_id, created_at, last_updated_at, \
         closed_at, total_hours_spent, fr_due_by, due_by, first_responded_at, agent_responded_at, \
         department_id, webhook_updated_at, conversations, notes) VALUES \
         ({id}, 'freshservice', {company}, '{id}', 'Inherited {id}', '<p>Body {id}</p>', 'Body {id}', \
         '{}', '{}', {}, {}, 'Incident', 'user{id}@example.com', 'User {id}', {requester}, {responder}, \
         {group}, '2024-01-10T09:00:00Z', '{updated_at}', NULL, 1.5, '2024-01-20T09:00:00Z', \
         '2024-01-25T09:00:00Z', '2024-01-10T10:00:00Z', '2024-01-10T10:30:00Z', 4004, \
         '{updated_at}', '[{{\"body\": \"hello\"}}]', '[]')",
        status.0,
        priority.0,
        status.1,
        priority.1,
        requester = 9000 + id,
    ));
}

/// Three tickets of Acme's, as the predecessor left them.
fn seed_inherited(db: &TestDb) {
    seed_companies(db);
    seed_ticket(
        db,
        100,
        ("pending", 3),
        ("medium", 2),
        2002,
        3003,
        Some("ACME-1"),
        "2024-01-15T11:30:00Z",
    );
    seed_ticket(
        db,
        101,
        ("open", 2),
        ("high", 3),
        2002,
        3004,
        Some("ACME-1"),
        "2024-01-15T12:00:00Z",
    );
    seed_ticket(
        db,
        102,
        ("closed", 5),
        ("low", 1),
        2003,
        3003,
        Some("ACME-1"),
        "2024-01-14T08:00:00Z",
    );
}

/// Every predecessor column of every row, as text, by external_id.
fn predecessor_view(db: &TestDb) -> Vec<Vec<Option<String>>> {
    let columns: Vec<String> = PREDECESSOR_COLUMNS
        .iter()
        .map(|c| format!("CAST({c} AS TEXT)"))
        .collect();
    db.rows(&format!(
        "SELECT {} FROM ticket_details ORDER BY external_id",
        columns.join(", ")
    ))
}

fn config_file(db: &TestDb, extra: &str) -> String {
    let path = db.dir.path().join("codex.conf");
    std::fs::write(&path, base_config(db, extra)).unwrap();
    path.display().to_string()
}

fn migrate(db: &TestDb) -> (bool, String, String) {
    let conf = config_file(db, "");
    let (status, out, err) = run_codex(&["migrate", "--config", &conf], &[]);
    (status.success(), out, err)
}

/// The type family of each column of `table`, by name: `int`, `text`,
/// `float`, `bool` or what the database calls it.
fn column_types(db: &TestDb, table: &str) -> HashMap<String, String> {
    let rows = if db.is_postgres() {
        db.rows(&format!(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}'"
        ))
    } else {
        db.rows(&format!(
            "SELECT name, type FROM pragma_table_info('{table}')"
        ))
    };
    rows.into_iter()
        .map(|row| (row[0].clone().unwrap(), row[1].clone().unwrap()))
        .collect()
}

/// What a predecessor column's type becomes: the same, except `VARCHAR(n)`,
/// which Codex widens to TEXT.
fn expected_type(predecessor: &str) -> String {
    match predecessor {
        "character varying" => "text".to_string(),
        t if t.starts_with("VARCHAR") => "TEXT".to_string(),
        t => t.to_string(),
    }
}

fn fresh_database_has_every_predecessor_column_with_its_type(backend: Backend) {
    let reference = predecessor_db(&backend);
    let want = column_types(&reference, "ticket_details");
    assert_eq!(want.len(), 30);
    let db = TestDb::new(&backend);
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
    let have = column_types(&db, "ticket_details");
    for column in PREDECESSOR_COLUMNS {
        let predecessor = &want[column];
        let fresh = have
            .get(column)
            .unwrap_or_else(|| panic!("fresh ticket_details lacks {column}"));
        assert_eq!(
            *fresh,
            expected_type(predecessor),
            "{column}: predecessor {predecessor}"
        );
    }
    // Its indexes, by its names, and its unique key.
    let indexes = if db.is_postgres() {
        db.rows("SELECT indexname FROM pg_indexes WHERE tablename = 'ticket_details'")
    } else {
        db.rows("SELECT name FROM pragma_index_list('ticket_details')")
    };
    let indexes: Vec<String> = indexes.into_iter().filter_map(|r| r[0].clone()).collect();
    for name in [
        "idx_ticket_updated",
        "idx_ticket_responder",
        "idx_ticket_group",
        "idx_ticket_source",
        "idx_ticket_company",
        "idx_ticket_status",
        "idx_ticket_priority",
    ] {
        assert!(indexes.iter().any(|i| i == name), "{name} in {indexes:?}");
    }
    if db.is_postgres() {
        assert!(
            indexes.iter().any(|i| i == "unique_ticket_external"),
            "{indexes:?}"
        );
    }
    // The predecessor's writer inserts into it; its unique key holds.
    let insert = "INSERT INTO ticket_details (external_id, external_source, ticket_number, status, total_hours_spent) \
                  VALUES (5, 'freshservice', '5', 'open', 0.0)";
    db.execute(insert);
    let duplicate = std::panic::catch_unwind(|| db.execute(insert));
    assert!(
        duplicate.is_err(),
        "a second (5, freshservice) row was accepted"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_id = 5"),
        1
    );
}

fn takeover_keeps_inherited_rows_and_the_predecessors_readers_work(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    let before = predecessor_view(&db);
    let (ok, out, err) = migrate(&db);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("schema version 2"), "{out}");
    assert!(
        err.contains("taking over the predecessor's ticket_details"),
        "{err}"
    );
    assert_eq!(
        predecessor_view(&db),
        before,
        "migrate changed inherited data"
    );
    assert!(
        err.contains("rebuilding index idx_ticket_source with external_id"),
        "{err}"
    );
    let source_index = if db.is_postgres() {
        db.value("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_ticket_source'")
    } else {
        db.value("SELECT sql FROM sqlite_master WHERE name = 'idx_ticket_source'")
    };
    assert!(source_index.unwrap().contains("external_id"));
    // A second run has nothing to do.
    let (ok, _, err) = migrate(&db);
    assert!(ok && !err.contains("schema: "), "{err}");

    let fake = FakeFreshservice::start();
    fake.with(|s| {
        let mut polled = ticket(300, 2, "2024-02-01T10:00:00Z");
        polled["department_id"] = json!(4004);
        s.tickets.insert(300, polled);
        // The account's other tickets, as versions older than the stored
        // ones: the poll finds them (none is taken for deleted) and changes
        // nothing.
        for (id, status) in [(100, 3), (101, 3), (102, 5), (200, 2)] {
            s.tickets
                .insert(id, ticket(id, status, "2024-01-01T00:00:00Z"));
        }
    });
    let codex = Codex::start(&db, "");
    // An update to an inherited ticket, a new ticket, and a poll.
    let update = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 101, "status_id": 3, "updated_at": "2024-01-16T09:00:00Z"
    }));
    assert_eq!(update.status, 200, "{:?}", update.json());
    assert_eq!(update.json()["ticket_id"], 101);
    assert_eq!(update.json()["changes"], json!(["status: open -> pending"]));
    let created = codex.deliver_json(&common::seed_body(
        "ticket.created",
        200,
        2,
        "2024-01-16T10:00:00Z",
    ));
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(created.json()["ticket_id"], 200);
    let conf = config_file(&db, &fake.config());
    let (status, out, err) = run_codex(&["sync", "--once", "--config", &conf], &[]);
    assert!(status.success(), "{out}\n{err}");

    // The predecessor's readers, as SQL.
    let subject = db.value("SELECT subject FROM ticket_details WHERE external_id = 101");
    assert_eq!(subject.as_deref(), Some("Inherited 101"));
    assert_eq!(
        db.value("SELECT status FROM ticket_details WHERE external_id = 101")
            .as_deref(),
        Some("pending")
    );
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 5);
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE company_account_number = 'ACME-1'"),
        5
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_source = 'freshservice' AND status = 'open'"),
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE priority = 'medium'"),
        3
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE responder_id = 2002"),
        3
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE group_id = 3003"),
        3
    );
    let by_update: Vec<String> = db
        .rows("SELECT external_id FROM ticket_details ORDER BY last_updated_at DESC")
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert_eq!(by_update, ["300", "200", "101", "100", "102"]);
    let by_priority: Vec<String> = db
        .rows("SELECT external_id FROM ticket_details WHERE priority_id >= 2 ORDER BY priority_id DESC, external_id")
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert_eq!(by_priority, ["101", "100", "200", "300"]);
    let joined = db.value(
        "SELECT c.name FROM ticket_details t JOIN companies c ON c.account_number = t.company_account_number \
         WHERE t.external_id = 300",
    );
    assert_eq!(joined.as_deref(), Some("Acme"));

    // The predecessor's writers still work: its insert and its update.
    db.execute(
        "INSERT INTO ticket_details (external_id, external_source, ticket_number, subject, status, status_id, \
         created_at, last_updated_at, total_hours_spent, company_account_number) VALUES \
         (400, 'freshservice', '400', 'Written by Python', 'open', 2, '2024-01-17T00:00:00Z', \
         '2024-01-17T00:00:00Z', 0.0, 'ACME-1')",
    );
    db.execute(
        "UPDATE ticket_details SET status = 'resolved', status_id = 4, last_updated_at = '2024-01-18T00:00:00Z' \
         WHERE external_id = 200 AND external_source = 'freshservice'",
    );
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 6);
    // Inherited rows Codex did not touch are as they were.
    let after = predecessor_view(&db);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
}

fn late_delivery_loses_to_an_inherited_row(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
    let codex = Codex::start(&db, "");
    // The predecessor stored ticket 100 as pending at 11:30; an 11:00
    // delivery (open, and a subject) arrives late.
    let late = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 100, "status_id": 2, "subject": "Old subject",
        "updated_at": "2024-01-15T11:00:00Z"
    }));
    assert_eq!(late.status, 200);
    assert_eq!(late.json()["status"], "stale", "{:?}", late.json());
    let ticket = db.ticket(100).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("pending"));
    assert_eq!(ticket["subject"].as_deref(), Some("Inherited 100"));
    // A newer one wins, and an older one after it still loses field by field.
    let newer = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 100, "status_id": 4, "updated_at": "2024-01-15T13:00:00Z"
    }));
    assert_eq!(newer.json()["status"], "updated");
    let late = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 100, "subject": "Old subject", "updated_at": "2024-01-15T11:15:00Z"
    }));
    assert_eq!(late.json()["status"], "stale", "{:?}", late.json());
    let ticket = db.ticket(100).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("resolved"));
    assert_eq!(ticket["subject"].as_deref(), Some("Inherited 100"));
}

fn rows_the_predecessor_writes_after_takeover_also_win_over_late_deliveries(backend: Backend) {
    let db = predecessor_db(&backend);
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
    let codex = Codex::start(&db, "");
    // The Python service, still running for a while, writes a row.
    seed_companies(&db);
    seed_ticket(
        &db,
        150,
        ("pending", 3),
        ("medium", 2),
        2002,
        3003,
        None,
        "2024-01-15T11:30:00Z",
    );
    let late = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 150, "status_id": 2, "updated_at": "2024-01-15T11:00:00Z"
    }));
    assert_eq!(late.json()["status"], "stale", "{:?}", late.json());
    assert_eq!(
        db.ticket(150).unwrap()["status"].as_deref(),
        Some("pending")
    );
    // Once Codex has applied a newer event, the fields it did not carry
    // keep the predecessor's version.
    let newer = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 150, "priority_id": 3, "updated_at": "2024-01-15T12:00:00Z"
    }));
    assert_eq!(newer.json()["status"], "updated", "{:?}", newer.json());
    let late = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 150, "status_id": 2, "updated_at": "2024-01-15T11:15:00Z"
    }));
    assert_eq!(late.json()["status"], "stale", "{:?}", late.json());
    let ticket = db.ticket(150).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("pending"));
    assert_eq!(ticket["priority"].as_deref(), Some("high"));
}

fn long_value_on_a_varchar_150_column_is_stored_without_a_5xx(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
    if db.is_postgres() {
        assert!(
            err.contains("widening ticket_details.requester_name"),
            "{err}"
        );
    }
    let codex = Codex::start(&db, "");
    let name = "N".repeat(200);
    let email = format!("{}@example.com", "e".repeat(180));
    let mut body = common::seed_body("ticket.created", 500, 2, "2024-01-16T10:00:00Z");
    body["requester_name"] = json!(name);
    body["requester_email"] = json!(email);
    let created = codex.deliver_json(&body);
    assert_eq!(created.status, 201, "{:?}", created.json());
    let update = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 100, "requester_name": name,
        "updated_at": "2024-01-16T10:00:00Z"
    }));
    assert_eq!(update.status, 200, "{:?}", update.json());
    assert_eq!(
        db.ticket(500).unwrap()["requester_name"].as_deref(),
        Some(name.as_str())
    );
    assert_eq!(
        db.ticket(500).unwrap()["requester_email"].as_deref(),
        Some(email.as_str())
    );
    assert_eq!(
        db.ticket(100).unwrap()["requester_name"].as_deref(),
        Some(name.as_str())
    );
}

fn new_rows_look_like_the_predecessors_from_webhook_and_poll(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_companies(&db);
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
    let fake = FakeFreshservice::start();
    fake.with(|s| {
        s.tickets
            .insert(300, ticket(300, 2, "2024-02-01T10:00:00Z"));
        // Ticket 200 as an older version than the webhook's: the poll finds
        // it and changes nothing.
        s.tickets
            .insert(200, ticket(200, 2, "2024-01-01T00:00:00Z"));
    });
    let codex = Codex::start(&db, "");
    // The first delivery is an update without created_at.
    let created = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": "INC-200", "status_id": 2, "department_id": 4004,
        "updated_at": "2024-01-16T10:00:00Z"
    }));
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(created.json()["ticket_id"], 200);
    let conf = config_file(&db, &fake.config());
    let (status, out, err) = run_codex(&["sync", "--once", "--config", &conf], &[]);
    assert!(status.success(), "{out}\n{err}");

    let row = |id: i64| {
        db.rows(&format!(
            "SELECT ticket_number, CAST(total_hours_spent AS TEXT), created_at, company_account_number \
             FROM ticket_details WHERE external_id = {id}"
        ))
        .pop()
        .unwrap_or_else(|| panic!("ticket {id} not stored"))
    };
    let webhook = row(200);
    assert_eq!(webhook[0].as_deref(), Some("200"));
    assert_eq!(
        webhook[1].as_deref().map(|v| v.parse::<f64>().unwrap()),
        Some(0.0)
    );
    let first_seen = webhook[2].clone().expect("created_at set");
    assert!(
        first_seen.starts_with("20") && first_seen.ends_with('Z'),
        "{first_seen}"
    );
    assert_eq!(webhook[3].as_deref(), Some("ACME-1"));
    assert_eq!(db.ticket(200).unwrap()["status"].as_deref(), Some("open"));
    let poll = row(300);
    assert_eq!(poll[0].as_deref(), Some("300"));
    assert_eq!(
        poll[1].as_deref().map(|v| v.parse::<f64>().unwrap()),
        Some(0.0)
    );
    assert_eq!(poll[2].as_deref(), Some("2024-01-01T00:00:00Z"));
    // The fake's tickets are in department 6: Globex.
    assert_eq!(poll[3].as_deref(), Some("GLOBEX-2"));

    // The company follows the department; one no company maps to clears it.
    let moved = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 200, "department_id": 6, "updated_at": "2024-01-16T11:00:00Z"
    }));
    assert_eq!(moved.status, 200);
    assert_eq!(row(200)[3].as_deref(), Some("GLOBEX-2"));
    // A company of another PSA with that id is not this ticket's.
    codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 200, "department_id": 4005, "updated_at": "2024-01-16T12:00:00Z"
    }));
    assert_eq!(row(200)[3], None);
    // created_at stays the first time Codex saw it.
    assert_eq!(row(200)[2].as_deref(), Some(first_seen.as_str()));
}

fn company_is_left_null_without_a_companies_table(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let created = codex.deliver_json(&common::seed_body(
        "ticket.created",
        7,
        2,
        "2024-01-16T10:00:00Z",
    ));
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(
        db.value("SELECT ticket_number FROM ticket_details WHERE external_id = 7")
            .as_deref(),
        Some("7")
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_id = 7 AND company_account_number IS NULL"),
        1
    );
}

fn delete_of_an_unknown_ticket_leaves_no_row_and_its_tombstone_is_pruned(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    let codex = Codex::start(&db, "[webhooks]\njournal_retention_days = 1\n");
    let deleted = codex.deliver_json(&json!({
        "event": "ticket.deleted", "ticket_id": 999, "updated_at": "2024-01-15T12:00:00Z"
    }));
    assert_eq!(deleted.json()["status"], "ignored");
    assert_eq!(deleted.json()["reason"], "ticket not found");
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_id = 999"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE status = 'deleted'"),
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_tombstones WHERE external_id = 999"),
        1
    );
    // A late create does not bring it back.
    let late = codex.deliver_json(&common::seed_body(
        "ticket.created",
        999,
        2,
        "2024-01-15T09:00:00Z",
    ));
    assert_eq!(late.status, 200, "{:?}", late.json());
    assert_eq!(
        db.ticket(999).unwrap()["status"].as_deref(),
        Some("deleted")
    );
    assert_eq!(db.count("SELECT count(*) FROM ticket_tombstones"), 0);
    // A known ticket's delete keeps the predecessor's soft delete.
    let known = codex.deliver_json(&json!({
        "event": "ticket.deleted", "ticket_id": 101, "updated_at": "2024-01-16T12:00:00Z"
    }));
    assert_eq!(known.json()["status"], "deleted");
    assert_eq!(
        db.ticket(101).unwrap()["status"].as_deref(),
        Some("deleted")
    );
    drop(codex);

    // Tombstones go with the journal: one recorded two days ago is pruned
    // by the pass that runs soon after start-up.
    codex_delete(&db, 998, "2024-01-15T12:00:00Z");
    db.execute(
        "UPDATE ticket_tombstones SET recorded_at = '2000-01-01T00:00:00Z' WHERE external_id = 998",
    );
    let _codex = Codex::start(&db, "[webhooks]\njournal_retention_days = 1\n");
    assert!(wait_until(Duration::from_secs(20), || db
        .count("SELECT count(*) FROM ticket_tombstones")
        == 0));
}

/// Delivers one delete through a short-lived Codex.
fn codex_delete(db: &TestDb, id: i64, updated_at: &str) {
    let codex = Codex::start(db, "");
    let response = codex.deliver_json(&json!({
        "event": "ticket.deleted", "ticket_id": id, "updated_at": updated_at
    }));
    assert_eq!(response.json()["status"], "ignored");
}

/// The whole database: its tables, columns, indexes, constraints and rows.
fn dump(db: &TestDb) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    let tables: Vec<String> = if db.is_postgres() {
        out.extend(db.rows(
            "SELECT table_name, column_name, data_type, character_maximum_length::text, is_nullable, column_default \
             FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        ));
        out.extend(db.rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname",
        ));
        out.extend(db.rows(
            "SELECT conname, contype::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE connamespace = 'public'::regnamespace ORDER BY conname",
        ));
        db.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
    } else {
        out.extend(db.rows("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"));
        db.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
    }
    .into_iter()
    .filter_map(|r| r[0].clone())
    .collect();
    for table in tables {
        out.push(vec![Some(table.clone())]);
        out.extend(db.rows(&format!("SELECT * FROM {table} ORDER BY 1")));
    }
    out
}

fn failed_migration_leaves_the_database_exactly_as_it_was(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    // A column someone added by hand, with the name of one of Codex's and
    // a value that is not its type. Codex finds it after it has created its
    // tables and added most of its columns.
    db.execute("ALTER TABLE ticket_details ADD COLUMN revision VARCHAR(10)");
    db.execute("UPDATE ticket_details SET revision = 'r1' WHERE external_id = 100");
    let before = dump(&db);
    let (ok, out, err) = migrate(&db);
    assert!(!ok, "{out}");
    assert!(
        err.contains("nothing was changed")
            && err.contains("ticket_details.revision")
            && err.contains("'r1'"),
        "{err}"
    );
    assert!(err.contains("run codex migrate again"), "{err}");
    assert_eq!(
        dump(&db),
        before,
        "the failed migration left changes behind"
    );
    // serve refuses too, also without changing anything.
    let conf = config_file(&db, "");
    let (status, _, err) = run_codex(&["serve", "--config", &conf], &[]);
    assert!(!status.success());
    assert!(err.contains("ticket_details.revision"), "{err}");
    assert_eq!(dump(&db), before);

    // A column of a type Codex cannot convert.
    db.execute("ALTER TABLE ticket_details DROP COLUMN revision");
    db.execute("ALTER TABLE ticket_details ADD COLUMN subject_as_of INTEGER");
    let before = dump(&db);
    let (ok, _, err) = migrate(&db);
    assert!(!ok);
    assert!(err.contains("ticket_details.subject_as_of"), "{err}");
    assert_eq!(dump(&db), before);

    // Once the conflict is gone, the migration goes through.
    db.execute("ALTER TABLE ticket_details DROP COLUMN subject_as_of");
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
}

fn check_config_fails_where_serve_would_and_changes_nothing(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    let conf = config_file(&db, "");
    let before = dump(&db);
    let (status, _, err) = run_codex(&["check-config", "--config", &conf], &[]);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("will: taking over the predecessor's ticket_details"),
        "{err}"
    );
    assert_eq!(dump(&db), before, "check-config changed the database");

    db.execute("ALTER TABLE ticket_details ADD COLUMN last_event_fields TEXT");
    db.execute("UPDATE ticket_details SET last_event_fields = 'x'");
    let before = dump(&db);
    let (status, _, err) = run_codex(&["check-config", "--config", &conf], &[]);
    assert!(!status.success(), "{err}");
    assert!(err.contains("ticket_details.last_event_fields"), "{err}");
    assert!(!err.contains("configuration is valid"), "{err}");
    assert_eq!(dump(&db), before);
    let (status, _, err) = run_codex(&["serve", "--config", &conf], &[]);
    assert!(!status.success());
    assert!(err.contains("ticket_details.last_event_fields"), "{err}");

    db.execute("UPDATE ticket_details SET last_event_fields = NULL");
    db.execute("ALTER TABLE ticket_details DROP COLUMN last_event_fields");
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
    let (status, _, err) = run_codex(&["check-config", "--config", &conf], &[]);
    assert!(status.success(), "{err}");
    assert!(err.contains("schema version 2 is in place"), "{err}");
}

fn codex_schema_1_is_upgraded_in_place(backend: Backend) {
    let db = TestDb::new(&backend);
    let (id, blob) = if db.is_postgres() {
        (
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "BYTEA",
        )
    } else {
        ("INTEGER PRIMARY KEY", "BLOB")
    };
    db.execute(
        &fixture("schema-v1.sql")
            .replace("@ID@", id)
            .replace("@BLOB@", blob),
    );
    db.execute(
        "INSERT INTO codex_meta (key, value) VALUES ('schema_version', '1'); \
         INSERT INTO ticket_details (external_id, external_source, subject, status, status_id, last_updated_at, \
         subject_as_of, status_as_of, status_id_as_of, last_source, revision) VALUES \
         ('42', 'freshservice', 'From Codex 1', 'open', 2, '2024-01-15T10:00:00Z', '2024-01-15T10:00:00Z', \
         '2024-01-15T10:00:00Z', '2024-01-15T10:00:00Z', 'webhook', 3)",
    );
    let body = if db.is_postgres() {
        "'\\x7b7d'::bytea"
    } else {
        "X'7b7d'"
    };
    db.execute(&format!(
        "INSERT INTO webhook_events (provider, received_at, client_ip, event, ticket_id, outcome, body) \
         VALUES ('freshservice', '2024-01-15T10:00:01Z', '127.0.0.1', 'ticket.updated', '42', 'updated', {body})"
    ));
    let (ok, out, err) = migrate(&db);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("upgrading schema version 1 to 2"), "{err}");
    assert!(
        err.contains("converting ticket_details.external_id"),
        "{err}"
    );
    let types = column_types(&db, "ticket_details");
    assert!(
        ["bigint", "BIGINT"].contains(&types["external_id"].as_str()),
        "{types:?}"
    );
    let journal = column_types(&db, "webhook_events");
    assert!(
        ["bigint", "BIGINT"].contains(&journal["ticket_id"].as_str()),
        "{journal:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE ticket_id = 42"),
        1
    );
    let ticket = db.ticket(42).expect("the row survives");
    assert_eq!(ticket["subject"].as_deref(), Some("From Codex 1"));
    assert_eq!(ticket["revision"].as_deref(), Some("3"));
    assert_eq!(
        db.value("SELECT ticket_number FROM ticket_details WHERE external_id = 42")
            .as_deref(),
        Some("42")
    );
    let codex = Codex::start(&db, "");
    let update = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 42, "status_id": 3, "updated_at": "2024-01-15T11:00:00Z"
    }));
    assert_eq!(update.json()["changes"], json!(["status: open -> pending"]));
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 1);
}

/// The state the issue reports: Codex 1 created its tables on a
/// predecessor database, recorded version 1 and failed after that.
fn predecessor_database_left_half_migrated_by_codex_1_is_completed(backend: Backend) {
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    let (id, blob) = if db.is_postgres() {
        (
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "BYTEA",
        )
    } else {
        ("INTEGER PRIMARY KEY", "BLOB")
    };
    db.execute(
        &fixture("schema-v1.sql")
            .replace("@ID@", id)
            .replace("@BLOB@", blob),
    );
    db.execute(
        "INSERT INTO codex_meta (key, value) VALUES ('schema_version', '1'); \
         ALTER TABLE ticket_details ADD COLUMN revision BIGINT NOT NULL DEFAULT 1; \
         ALTER TABLE ticket_details ADD COLUMN last_source TEXT",
    );
    let before = predecessor_view(&db);
    let (ok, out, err) = migrate(&db);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("upgrading schema version 1 to 2"), "{err}");
    assert_eq!(predecessor_view(&db), before);
    let codex = Codex::start(&db, "");
    let late = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 100, "status_id": 2, "updated_at": "2024-01-15T11:00:00Z"
    }));
    assert_eq!(late.json()["status"], "stale", "{:?}", late.json());
    let newer = codex.deliver_json(&json!({
        "event": "ticket.updated", "ticket_id": 100, "status_id": 2, "updated_at": "2024-01-15T12:00:00Z"
    }));
    assert_eq!(newer.json()["changes"], json!(["status: pending -> open"]));
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE ticket_id = 100"),
        2
    );
}

/// A dashboard's view over the predecessor's table keeps PostgreSQL from
/// changing the types of the columns it uses: those keep their limit and
/// longer values are stored cut to fit, with a warning, instead of a 5xx.
#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_view_over_a_varchar_column_cuts_long_values_to_fit() {
    let backend = Backend::postgres();
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    db.execute(
        "CREATE VIEW dashboard_tickets AS SELECT external_id, requester_name, status FROM ticket_details",
    );
    let (ok, _, err) = migrate(&db);
    assert!(ok, "{err}");
    assert!(
        err.contains("keeping ticket_details.requester_name character varying(150)"),
        "{err}"
    );
    assert!(
        err.contains("widening ticket_details.requester_email"),
        "{err}"
    );
    let codex = Codex::start(&db, "");
    let name = "Ñ".repeat(200);
    let mut body = common::seed_body("ticket.created", 500, 2, "2024-01-16T10:00:00Z");
    body["requester_name"] = json!(name);
    body["requester_email"] = json!(format!("{}@example.com", "e".repeat(180)));
    let created = codex.deliver_json(&body);
    assert_eq!(created.status, 201, "{:?}", created.json());
    let stored = db
        .value("SELECT requester_name FROM dashboard_tickets WHERE external_id = 500")
        .unwrap();
    assert_eq!(stored, "Ñ".repeat(150));
    assert!(
        wait_until(Duration::from_secs(5), || codex
            .logs()
            .contains("ticket 500: requester_name has 200 characters")),
        "{}",
        codex.logs()
    );
    assert_eq!(
        db.value("SELECT length(requester_email) FROM ticket_details WHERE external_id = 500")
            .as_deref(),
        Some("192")
    );
}

/// A role that does not own the predecessor's tables cannot alter them:
/// the migration fails as a whole and says what to do.
#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_migration_by_a_role_that_does_not_own_the_tables_changes_nothing() {
    let backend = Backend::postgres();
    let db = predecessor_db(&backend);
    seed_inherited(&db);
    let role = format!("codex_guest_{}", std::process::id());
    db.execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; GRANT ALL ON SCHEMA public TO {role}; \
         GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"
    ));
    let before = dump(&db);
    let url = db.url.replacen("://postgres@", &format!("://{role}@"), 1);
    assert_ne!(url, db.url, "the test server's URL names the postgres user");
    let conf = db.dir.path().join("guest.conf");
    std::fs::write(&conf, base_config(&db, "").replace(&db.url, &url)).unwrap();
    let (status, _, err) = run_codex(&["migrate", "--config", conf.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(
        err.contains("nothing was changed")
            && err.contains("must be owner")
            && err.contains("run codex migrate again"),
        "{err}"
    );
    assert_eq!(dump(&db), before);
    db.execute(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}; REVOKE ALL ON SCHEMA public FROM {role}"
    ));
    let mut admin = ::postgres::Client::connect(
        match &backend {
            Backend::Postgres(admin) => admin,
            Backend::Sqlite => unreachable!(),
        },
        ::postgres::NoTls,
    )
    .unwrap();
    drop(db);
    admin.batch_execute(&format!("DROP ROLE {role}")).unwrap();
}

/// Without `--config` or `$CODEX_CONFIG`, Codex reads ./codex.conf, else
/// ./instance/codex.conf (the predecessor's), and says which.
#[test]
fn config_is_found_where_the_predecessor_kept_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("instance")).unwrap();
    let db_path = dir.path().join("codex.db");
    std::fs::write(
        dir.path().join("instance/codex.conf"),
        format!(
            "[server]\nbind = 127.0.0.1:0\n[database]\nconnection_string = sqlite:///{}\n[webhooks]\nenabled = true\nsecret = {SECRET}\n",
            db_path.display()
        ),
    )
    .unwrap();
    let (status, out, err) = run_codex_in(dir.path(), &["check-config"], &[]);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("configuration read from instance/codex.conf"),
        "{err}"
    );
    assert!(
        out.contains(&format!("sqlite:///{}", db_path.display())),
        "{out}"
    );

    // Each sets what check-config needs to pass: a free address, and
    // webhooks to take deliveries from.
    let rest = format!("bind = 127.0.0.1:0\n[webhooks]\nenabled = true\nsecret = {SECRET}\n");
    std::fs::write(
        dir.path().join("codex.conf"),
        format!("[server]\nthreads = 3\n{rest}"),
    )
    .unwrap();
    let (status, out, err) = run_codex_in(dir.path(), &["check-config"], &[]);
    assert!(status.success(), "{err}");
    assert!(err.contains("configuration read from codex.conf"), "{err}");
    assert!(out.contains("threads = 3"), "{out}");

    let elsewhere = dir.path().join("elsewhere.conf");
    std::fs::write(&elsewhere, format!("[server]\nthreads = 5\n{rest}")).unwrap();
    let (status, out, err) = run_codex_in(
        dir.path(),
        &["check-config"],
        &[("CODEX_CONFIG", elsewhere.to_str().unwrap())],
    );
    assert!(status.success(), "{err}");
    assert!(
        err.contains(&format!("configuration read from {}", elsewhere.display())),
        "{err}"
    );
    assert!(out.contains("threads = 5"), "{out}");
}
