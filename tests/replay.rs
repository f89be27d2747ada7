//! `codex replay` against a running Codex over real sockets and real
//! databases (both backends), and `codex status` reading a database
//! without changing it.

mod common;

use common::{Backend, Codex, TestDb, base_config, fixture, run_codex, seed_body};
use serde_json::json;

/// A delivery that names its ticket under a key Codex does not know until
/// `[freshservice.webhook_fields] ticket_id = TicketNumber` is configured.
fn custom_key_body(ticket: i64, updated_at: &str) -> String {
    json!({
        "event": "ticket.updated",
        "TicketNumber": ticket,
        "subject": "Printer on fire",
        "status_id": 2,
        "updated_at": updated_at,
    })
    .to_string()
}

const FIXED: &str = "[freshservice.webhook_fields]\nticket_id = TicketNumber\n";

fn config_file(db: &TestDb, name: &str, extra: &str) -> String {
    let path = db.dir.path().join(name);
    std::fs::write(&path, base_config(db, extra)).unwrap();
    path.display().to_string()
}

fn replay(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    let (status, out, err) = run_codex(&all, &[]);
    (status.success(), out, err)
}

/// The journal row of the newest delivery: id, outcome, error.
fn last_journal_row(db: &TestDb) -> (String, String, Option<String>) {
    let row = db
        .rows("SELECT id, outcome, error FROM webhook_events ORDER BY id DESC LIMIT 1")
        .remove(0);
    (
        row[0].clone().unwrap(),
        row[1].clone().unwrap(),
        row[2].clone(),
    )
}

/// Every column of every journal row, for "nothing changed".
fn journal(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.rows(&format!(
        "SELECT id, provider, received_at, client_ip, event, ticket_id, outcome, error, {} \
         FROM webhook_events ORDER BY id",
        db.body_text()
    ))
}

fn a_rejected_delivery_is_stored_once_the_configuration_is_fixed(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let response = codex.deliver(&custom_key_body(4242, "2024-03-01T10:00:00Z"));
    assert_eq!(response.status, 400, "{:?}", response.json());
    let (id, outcome, _) = last_journal_row(&db);
    assert_eq!(outcome, "rejected");
    assert!(db.ticket(4242).is_none());

    // The admin maps the key; Codex keeps running on the old file.
    let fixed = config_file(&db, "fixed.conf", FIXED);
    let (ok, out, err) = replay(&["--id", &id, "--config", &fixed]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.trim(),
        format!("#{id} freshservice ticket 4242: rejected -> created")
    );
    let ticket = db.ticket(4242).expect("the replayed delivery is stored");
    assert_eq!(ticket["subject"].as_deref(), Some("Printer on fire"));
    assert_eq!(ticket["status"].as_deref(), Some("open"));

    // No second journal row: the delivery's own row says what it became.
    assert_eq!(db.count("SELECT count(*) FROM webhook_events"), 1);
    let (same_id, outcome, error) = last_journal_row(&db);
    assert_eq!(
        (same_id.as_str(), outcome.as_str()),
        (id.as_str(), "created")
    );
    let error = error.unwrap_or_default();
    assert!(
        error.starts_with("replayed at ") && error.contains("when received: rejected ("),
        "{error}"
    );
    assert_eq!(
        db.value(&format!(
            "SELECT CAST(ticket_id AS TEXT) FROM webhook_events WHERE id = {id}"
        ))
        .as_deref(),
        Some("4242")
    );

    // The running service serves what the replay stored.
    let next = codex.deliver(&custom_key_body(4242, "2024-03-01T11:00:00Z"));
    assert_eq!(
        next.status, 400,
        "the running Codex still has the old mapping"
    );
}

fn replaying_a_stored_delivery_changes_nothing(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let response = codex.deliver_json(&seed_body("ticket.created", 77, 2, "2024-03-01T10:00:00Z"));
    assert_eq!(response.status, 201, "{:?}", response.json());
    let (id, _, _) = last_journal_row(&db);
    let ticket = db.ticket(77).unwrap();
    let before = journal(&db);
    let conf = config_file(&db, "codex.conf", "");

    for _ in 0..2 {
        let (ok, out, err) = replay(&["--id", &id, "--config", &conf]);
        assert!(ok, "{out}\n{err}");
        assert_eq!(
            out.trim(),
            format!("#{id} freshservice ticket 77: created -> unchanged")
        );
    }
    assert_eq!(db.ticket(77).unwrap(), ticket, "the ticket row changed");
    assert_eq!(ticket["revision"].as_deref(), Some("1"));
    assert_eq!(journal(&db), before, "the journal changed");
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 1);
}

fn since_with_outcome_replays_only_what_it_selects(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let stored = codex.deliver_json(&seed_body("ticket.created", 10, 2, "2024-03-01T10:00:00Z"));
    assert_eq!(stored.status, 201);
    let (stored_id, _, _) = last_journal_row(&db);
    let rejected = codex.deliver(&custom_key_body(11, "2024-03-01T10:00:00Z"));
    assert_eq!(rejected.status, 400);
    let (rejected_id, _, _) = last_journal_row(&db);
    let fixed = config_file(&db, "fixed.conf", FIXED);

    // Nothing was received after a time to come.
    let (ok, out, err) = replay(&["--since", "2999-01-01", "--config", &fixed]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.trim(), "no journaled delivery matches");

    // Only the stored delivery, named in another form Codex reads.
    let (ok, out, err) = replay(&[
        "--since",
        "Jan 1, 2020 10:30 AM",
        "--outcome",
        "created",
        "--config",
        &fixed,
    ]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.trim(),
        format!("#{stored_id} freshservice ticket 10: created -> unchanged")
    );
    assert!(db.ticket(11).is_none());

    // The default outcomes (rejected, failed) take the refused one only.
    let (ok, out, err) = replay(&["--since", "2020-01-01T00:00:00Z", "--config", &fixed]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.trim(),
        format!("#{rejected_id} freshservice ticket 11: rejected -> created")
    );
    assert!(db.ticket(11).is_some());

    // Replayed, it is no longer refused: a second run finds nothing.
    let (ok, out, _) = replay(&["--since", "2020-01-01T00:00:00Z", "--config", &fixed]);
    assert!(ok);
    assert_eq!(out.trim(), "no journaled delivery matches");
}

fn a_delivery_still_refused_is_reported_and_left_as_it_was(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    assert_eq!(
        codex
            .deliver(&custom_key_body(5, "2024-03-01T10:00:00Z"))
            .status,
        400
    );
    let (id, _, _) = last_journal_row(&db);
    let before = journal(&db);
    let conf = config_file(&db, "codex.conf", "");
    let (ok, out, err) = replay(&["--id", &id, "--config", &conf]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.starts_with(&format!("#{id} freshservice ticket"))
            && out.contains("rejected -> rejected ("),
        "{out}"
    );
    assert_eq!(journal(&db), before);
}

for_each_backend!(
    a_rejected_delivery_is_stored_once_the_configuration_is_fixed,
    replaying_a_stored_delivery_changes_nothing,
    since_with_outcome_replays_only_what_it_selects,
    a_delivery_still_refused_is_reported_and_left_as_it_was,
    status_leaves_an_older_schema_as_it_was,
    a_status_table_fix_reaches_a_stored_delivery,
);

#[test]
fn replay_of_an_unknown_id_says_so() {
    let db = TestDb::new(&Backend::Sqlite);
    let conf = config_file(&db, "codex.conf", "");
    let (ok, _, err) = run_codex(&["migrate", "--config", &conf], &[])
        .0
        .success()
        .then(|| replay(&["--id", "999", "--config", &conf]))
        .unwrap();
    assert!(!ok);
    assert!(err.contains("no delivery #999"), "{err}");
}

#[test]
fn replay_of_a_missing_database_names_the_path_and_creates_nothing() {
    let db = TestDb::new(&Backend::Sqlite);
    let conf = config_file(&db, "codex.conf", "");
    let (ok, _, err) = replay(&["--since", "2024-01-01", "--config", &conf]);
    assert!(!ok);
    let path = db.dir.path().join("codex.db");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!path.exists());
}

#[test]
fn replay_refuses_a_time_it_cannot_read_and_an_unknown_outcome() {
    let db = TestDb::new(&Backend::Sqlite);
    let conf = config_file(&db, "codex.conf", "");
    let (ok, _, err) = replay(&["--since", "next tuesday-ish", "--config", &conf]);
    assert!(!ok);
    assert!(err.contains("--since 'next tuesday-ish'"), "{err}");
    let (ok, _, err) = replay(&[
        "--since",
        "2024-01-01",
        "--outcome",
        "lost",
        "--config",
        &conf,
    ]);
    assert!(!ok);
    assert!(err.contains("unknown outcome 'lost'"), "{err}");
}

/// The SQLite database file and what lies beside it, byte for byte.
fn files_in(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn status_leaves_the_sqlite_file_byte_identical_and_creates_nothing_beside_it() {
    let db = TestDb::new(&Backend::Sqlite);
    let conf = config_file(&db, "codex.conf", "");
    let mut codex = Codex::start(&db, "");
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.created", 3, 2, "2024-03-01T10:00:00Z"))
            .status,
        201
    );
    assert!(codex.terminate().success());
    // At rest: the last connection to close folds the WAL into the file.
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 1);
    let before = files_in(db.dir.path());
    assert!(
        before.iter().all(|(name, _)| !name.ends_with("-wal")),
        "{:?}",
        before.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let (status, out, err) = run_codex(&["status", "--config", &conf], &[]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("freshservice"), "{out}");
    let after = files_in(db.dir.path());
    assert_eq!(
        before.iter().map(|f| &f.0).collect::<Vec<_>>(),
        after.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(before == after, "a file changed");
}

#[test]
fn status_reads_while_codex_runs() {
    let db = TestDb::new(&Backend::Sqlite);
    let conf = config_file(&db, "codex.conf", "");
    let codex = Codex::start(&db, "");
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.created", 4, 2, "2024-03-01T10:00:00Z"))
            .status,
        201
    );
    let (status, out, err) = run_codex(&["status", "--config", &conf], &[]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("freshservice"), "{out}");
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.updated", 4, 3, "2024-03-01T11:00:00Z"))
            .status,
        200
    );
}

fn status_leaves_an_older_schema_as_it_was(backend: Backend) {
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
    db.execute("INSERT INTO codex_meta (key, value) VALUES ('schema_version', '1')");
    let conf = config_file(&db, "codex.conf", "");
    let tables = "SELECT count(*) FROM codex_meta";
    let meta_rows = db.count(tables);
    let bytes = (!db.is_postgres()).then(|| files_in(db.dir.path()));
    let (status, out, err) = run_codex(&["status", "--config", &conf], &[]);
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("schema version 1") && err.contains("codex migrate"),
        "{err}"
    );
    assert_eq!(
        db.value("SELECT value FROM codex_meta WHERE key = 'schema_version'")
            .as_deref(),
        Some("1")
    );
    assert_eq!(db.count(tables), meta_rows);
    if let Some(bytes) = bytes {
        assert!(files_in(db.dir.path()) == bytes, "a file changed");
    }
}

fn a_status_table_fix_reaches_a_stored_delivery(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let response = codex.deliver_json(&seed_body("ticket.created", 31, 99, "2024-03-01T10:00:00Z"));
    assert_eq!(response.status, 201, "{:?}", response.json());
    assert_eq!(db.ticket(31).unwrap()["status"].as_deref(), Some("unknown"));
    let (id, _, _) = last_journal_row(&db);
    let before = journal(&db);
    let fixed = config_file(
        &db,
        "fixed.conf",
        "[freshservice.statuses]\n99 = triage, Triage\n",
    );
    let (ok, out, err) = replay(&["--id", &id, "--config", &fixed]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.trim(),
        format!("#{id} freshservice ticket 31: created -> updated")
    );
    assert_eq!(db.ticket(31).unwrap()["status"].as_deref(), Some("triage"));
    assert_eq!(
        journal(&db),
        before,
        "a stored delivery's row is kept as received"
    );
}
