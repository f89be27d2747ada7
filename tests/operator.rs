//! The operator's commands against a running Codex over real sockets and
//! real database files: `codex send-test` (the guide's "Test from command
//! line" in one step) and `codex backup` (a consistent SQLite copy while
//! deliveries continue).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use common::{Backend, Codex, SECRET, TestDb, base_config, run_codex};
use rusqlite::Connection;

/// The ticket `send-test` delivers.
const TEST_TICKET: i64 = 999_999_999;

fn config_file(db: &TestDb, extra: &str) -> String {
    let path = db
        .dir
        .path()
        .join(format!("send-test-{}.conf", extra.len()));
    std::fs::write(&path, base_config(db, extra)).unwrap();
    path.display().to_string()
}

fn endpoint(codex: &Codex) -> String {
    format!("http://{}/webhooks/freshservice/ticket", codex.addr)
}

#[test]
fn send_test_stores_the_test_ticket_and_says_deliveries_work() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "");
    let conf = config_file(&db, "");
    let url = endpoint(&codex);
    let (status, out, err) = run_codex(&["send-test", "--config", &conf, "--url", &url], &[]);
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("answered 201"), "{out}");
    assert!(out.contains("Deliveries work end to end"), "{out}");
    // Rendered as Freshservice renders it, the body reads cleanly.
    assert!(!out.contains("warnings"), "{out}");
    let ticket = db.ticket(TEST_TICKET).expect("the test ticket is stored");
    assert_eq!(ticket["subject"].as_deref(), Some("Codex send-test"));
    // Rendered as Freshservice renders an agent-less ticket: empty fields.
    assert_eq!(ticket["responder_id"], None);
    assert!(
        !out.contains(SECRET) && !err.contains(SECRET),
        "the secret was printed"
    );

    let (status, out, err) = run_codex(
        &[
            "send-test",
            "--event",
            "deleted",
            "--config",
            &conf,
            "--url",
            &url,
        ],
        &[],
    );
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("marked test ticket"), "{out}");
    assert_eq!(
        db.ticket(TEST_TICKET).unwrap()["status"].as_deref(),
        Some("deleted")
    );
}

#[test]
fn send_test_with_another_secret_says_which_setting_differs() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "");
    let conf = config_file(
        &db,
        "[webhooks]\nsecret = Other7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga\n",
    );
    let (status, out, err) = run_codex(
        &["send-test", "--config", &conf, "--url", &endpoint(&codex)],
        &[],
    );
    assert!(!status.success(), "{out}");
    assert!(err.contains("answered 401"), "{err}");
    assert!(err.contains("[webhooks] secret"), "{err}");
    assert!(db.ticket(TEST_TICKET).is_none());
}

#[test]
fn send_test_with_nothing_listening_asks_whether_codex_runs() {
    let db = TestDb::new(&Backend::Sqlite);
    let conf = config_file(&db, "");
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/webhooks/freshservice/ticket");
    let (status, _, err) = run_codex(&["send-test", "--config", &conf, "--url", &url], &[]);
    assert!(!status.success());
    assert!(err.contains("Is `codex serve` running"), "{err}");
    assert!(err.contains("[server] bind"), "{err}");
}

#[test]
fn send_test_refuses_when_webhooks_are_off() {
    let db = TestDb::new(&Backend::Sqlite);
    let conf = config_file(&db, "[webhooks]\nenabled = false\n");
    let (status, _, err) = run_codex(&["send-test", "--config", &conf], &[]);
    assert!(!status.success());
    assert!(err.contains("[webhooks] enabled = true"), "{err}");
}

#[test]
fn backup_while_deliveries_continue_holds_every_acknowledged_row() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Arc::new(Codex::start(&db, ""));
    for id in 1..=200 {
        let body = common::seed_body("ticket.created", id, 2, "2024-01-15T10:00:00Z");
        assert_eq!(codex.deliver_json(&body).status, 201);
    }
    // Deliveries go on while the copy is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicI64::new(200));
    let sender = {
        let (codex, stop, acknowledged) = (codex.clone(), stop.clone(), acknowledged.clone());
        std::thread::spawn(move || {
            let mut id = 1000;
            while !stop.load(Ordering::SeqCst) {
                let body = common::seed_body("ticket.created", id, 2, "2024-01-15T10:00:00Z");
                assert_eq!(codex.deliver_json(&body).status, 201);
                acknowledged.fetch_add(1, Ordering::SeqCst);
                id += 1;
            }
        })
    };
    common::wait_until(std::time::Duration::from_secs(10), || {
        acknowledged.load(Ordering::SeqCst) > 220
    });
    let before = acknowledged.load(Ordering::SeqCst);
    let conf = config_file(&db, "");
    let target = db.dir.path().join("backup.db");
    let (status, out, err) = run_codex(
        &["backup", target.to_str().unwrap(), "--config", &conf],
        &[],
    );
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("integrity_check: ok"), "{out}");

    let copy = Connection::open(&target).unwrap();
    let verdict: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
    let rows: i64 = copy
        .query_row("SELECT count(*) FROM ticket_details", [], |r| r.get(0))
        .unwrap();
    assert!(
        rows >= before,
        "{rows} rows in the copy, {before} acknowledged before it began"
    );
    let missing: i64 = copy
        .query_row(
            "SELECT 200 - count(*) FROM ticket_details WHERE external_id BETWEEN 1 AND 200",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(missing, 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy holds every ticket: owner only");

    // A second backup to the same path refuses rather than overwrite.
    let (status, _, err) = run_codex(
        &["backup", target.to_str().unwrap(), "--config", &conf],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn backup_of_a_missing_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("nowhere").join("codex.db");
    let conf = dir.path().join("codex.conf");
    std::fs::write(
        &conf,
        format!(
            "[database]\nconnection_string = sqlite:///{}\n",
            db_path.display()
        ),
    )
    .unwrap();
    let target = dir.path().join("copy.db");
    let (status, _, err) = run_codex(
        &[
            "backup",
            target.to_str().unwrap(),
            "--config",
            conf.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains(&db_path.display().to_string()), "{err}");
    assert!(!db_path.exists() && !target.exists());
}

#[test]
fn backup_on_postgresql_prints_the_pg_dump_command_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("codex.conf");
    std::fs::write(
        &conf,
        "[database]\nconnection_string = postgresql://codex:Secret-pg-pw-1@db.example:5432/codex\n",
    )
    .unwrap();
    let (status, out, err) = run_codex(
        &[
            "backup",
            "/var/backups/codex.dump",
            "--config",
            conf.to_str().unwrap(),
        ],
        &[],
    );
    assert!(status.success(), "{out}\n{err}");
    assert!(
        out.contains("pg_dump --format=custom --file=/var/backups/codex.dump 'postgresql://codex@db.example:5432/codex'"),
        "{out}"
    );
    assert!(!out.contains("Secret-pg-pw-1") && !err.contains("Secret-pg-pw-1"));
}
