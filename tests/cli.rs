//! The command line: gen-secret, check-config, migrate, and start-up refusals.

mod common;

use common::{Backend, Codex, SECRET, TestDb, base_config, run_codex, seed_body};

for_each_backend!(
    migrate_is_idempotent_and_a_newer_schema_is_refused,
    predecessor_table_is_upgraded_in_place,
    check_config_reports_the_database,
);

#[test]
fn gen_secret_prints_fresh_url_safe_secrets() {
    let (status, first, _) = run_codex(&["gen-secret"], &[]);
    assert!(status.success());
    let (_, second, _) = run_codex(&["gen-secret"], &[]);
    let first = first.trim();
    assert_eq!(first.len(), 64, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(first, second.trim());
}

#[test]
fn check_config_masks_secrets_and_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.conf");
    std::fs::write(
        &good,
        format!(
            "[server]\nbind = 127.0.0.1:0\n[webhooks]\nenabled = true\nsecret = {SECRET}\n[database]\nconnection_string = sqlite:///{}\n",
            dir.path().join("x.db").display()
        ),
    )
    .unwrap();
    let (status, out, err) = run_codex(&["check-config", "--config", good.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("[webhooks]") && out.contains("secret = *** (1 secret)"),
        "{out}"
    );
    assert!(out.contains("threads = 64"), "{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));

    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "[server]\nthreads = lots\nbind = nowhere\n[webhooks]\nenabled = true\nallowed_ips = 10.0.0.0/40\n[scheduler]\nticket_sync_interval = soon\n",
    )
    .unwrap();
    let (status, _, err) = run_codex(&["check-config", "--config", bad.to_str().unwrap()], &[]);
    assert!(!status.success());
    for needle in [
        "bad.conf",
        "[server] threads",
        "[server] bind",
        "[webhooks] allowed_ips",
        "[scheduler] ticket_sync_interval",
        "no secret is set",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    let (status, _, err) = run_codex(
        &["check-config", "--config", "/nonexistent/codex.conf"],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("/nonexistent/codex.conf"), "{err}");

    // $CODEX_CONFIG is used when --config is absent.
    let (status, out, _) = run_codex(
        &["check-config"],
        &[("CODEX_CONFIG", good.to_str().unwrap())],
    );
    assert!(status.success());
    assert!(out.contains(&good.display().to_string()), "{out}");
}

#[test]
fn serve_refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("codex.conf");
    std::fs::write(
        &conf,
        "[server]\nbind = 127.0.0.1:0\n[webhooks]\nenabled = true\n",
    )
    .unwrap();
    let (status, _, err) = run_codex(&["serve", "--config", conf.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(err.contains("no secret is set"), "{err}");
}

fn check_config_reports_the_database(backend: Backend) {
    let db = TestDb::new(&backend);
    let conf = db.dir.path().join("codex.conf");
    std::fs::write(&conf, base_config(&db, "")).unwrap();
    let (status, _, err) = run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    assert!(err.contains("configuration is valid"), "{err}");
}

fn migrate_is_idempotent_and_a_newer_schema_is_refused(backend: Backend) {
    let db = TestDb::new(&backend);
    let conf = db.dir.path().join("codex.conf");
    std::fs::write(&conf, base_config(&db, "")).unwrap();
    for _ in 0..2 {
        let (status, out, err) = run_codex(&["migrate", "--config", conf.to_str().unwrap()], &[]);
        assert!(status.success(), "{err}");
        assert!(out.contains("schema version 2"), "{out}");
    }
    assert_eq!(
        db.value("SELECT value FROM codex_meta WHERE key = 'schema_version'")
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        db.value("SELECT value FROM codex_meta WHERE key = 'schema_written_by'")
            .as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    db.rows("UPDATE codex_meta SET value = '99' WHERE key = 'schema_version'");
    db.rows("UPDATE codex_meta SET value = '9.8.7' WHERE key = 'schema_written_by'");
    let (status, _, err) = run_codex(&["serve", "--config", conf.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(
        err.contains("version 99") && err.contains("upgrade Codex to 9.8.7 or later"),
        "{err}"
    );
    let (status, _, err) = run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(err.contains("version 99"), "{err}");
}

fn predecessor_table_is_upgraded_in_place(backend: Backend) {
    let db = TestDb::new(&backend);
    let id = if db.is_postgres() {
        "SERIAL PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY"
    };
    db.rows(&format!(
        "CREATE TABLE ticket_details (id {id}, external_id VARCHAR(64) NOT NULL, external_source VARCHAR(32) NOT NULL, \
         subject TEXT, status TEXT, priority TEXT, status_id INTEGER, priority_id INTEGER, ticket_type TEXT, \
         requester_email TEXT, requester_name TEXT, requester_id BIGINT, responder_id BIGINT, group_id BIGINT, \
         department_id BIGINT, created_at TEXT, last_updated_at TEXT, closed_at TEXT, webhook_updated_at TEXT, \
         UNIQUE (external_id, external_source))"
    ));
    db.rows(
        "INSERT INTO ticket_details (external_id, external_source, subject, status, status_id, last_updated_at) \
         VALUES ('10', 'freshservice', 'Old subject', 'open', 2, '2024-01-01T00:00:00Z')",
    );
    let codex = Codex::start(&db, "");
    let response = codex.deliver_json(&seed_body("ticket.updated", 10, 3, "2024-02-01T00:00:00Z"));
    assert_eq!(response.status, 200, "{:?}", response.json());
    let changes = response.json()["changes"].to_string();
    assert!(changes.contains("status: open -> pending"), "{changes}");
    let ticket = db.ticket(10).unwrap();
    assert_eq!(ticket["subject"].as_deref(), Some("Ticket 10"));
    assert_eq!(ticket["revision"].as_deref(), Some("2"));
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 1);
}
