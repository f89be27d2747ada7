//! SuperOps: polling against a fake GraphQL API on an ephemeral port, its
//! webhook endpoint, and both providers side by side, through the real
//! binary and a real database.

mod common;

use std::time::Duration;

use common::fake_freshservice::FakeFreshservice;
use common::fake_superops::{FakeSuperops, TOKEN, minute, ticket};
use common::{Backend, Codex, SECRET, TestDb, base_config, run_codex, wait_until};
use serde_json::{Value, json};

for_each_backend!(
    first_sync_pages_through_every_ticket,
    incremental_run_stops_at_the_watermark,
    failed_page_leaves_cursor_and_data_as_they_were,
    rate_limit_exceeded_waits_and_retries,
    bad_token_fails_once_without_retry_storm,
    no_ticket_is_marked_deleted_without_evidence,
    newest_version_wins_between_webhook_and_poll,
    webhook_endpoint_takes_superops_and_guide_names,
    both_providers_poll_into_one_database,
    client_account_id_finds_the_predecessors_company,
    a_purged_resolved_ticket_becomes_deleted_after_the_next_full_run,
    a_purged_ticket_whose_lookup_fails_keeps_its_state,
);

/// Runs `codex sync --once` with `args` and returns (success, the printed
/// runs, stderr).
fn sync_once(db: &TestDb, config: &str, args: &[&str]) -> (bool, Vec<Value>, String) {
    let conf = db.dir.path().join("sync.conf");
    std::fs::write(&conf, base_config(db, config)).unwrap();
    common::migrate_once(&conf);
    let mut all = vec!["sync", "--once", "--config", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    let (status, out, err) = run_codex(&all, &[]);
    let runs = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (status.success(), runs, err)
}

/// One SuperOps sync; returns (success, its run, stderr).
fn superops_once(db: &TestDb, fake: &FakeSuperops, extra: &str) -> (bool, Value, String) {
    let (ok, mut runs, err) = sync_once(db, &format!("{}{extra}", fake.config()), &[]);
    assert_eq!(runs.len(), 1, "{runs:?}\n{err}");
    (ok, runs.remove(0), err)
}

fn cursor(db: &TestDb) -> Option<String> {
    db.value("SELECT cursor FROM sync_state WHERE provider = 'superops'")
}

fn first_sync_pages_through_every_ticket(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.add_tickets(1, 250);
    fake.with(|s| s.tickets.insert(7, ticket(7, "Awaiting Parts", &minute(7))));
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(ok, "{run}\n{err}");
    assert_eq!(run["provider"], "superops");
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["tickets_seen"], 250);
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_source = 'superops'"),
        250
    );
    // Three pages of at most 100, newest first; hasMore ends it.
    let pages = fake.calls("getTicketList");
    assert_eq!(pages.len(), 3, "{pages:?}");
    for (n, page) in pages.iter().enumerate() {
        let input = &page.variables["input"];
        assert_eq!(input["page"], n as u64 + 1);
        assert_eq!(input["pageSize"], 100);
        assert_eq!(
            input["sort"],
            json!([{"attribute": "updatedTime", "order": "DESC"}])
        );
    }
    // The full run then looks up nothing: every active ticket was listed.
    assert!(fake.calls("getTicket").is_empty());
    assert_eq!(run["api_calls"], 3);
    let stored = db.ticket_of("superops", 250).unwrap();
    assert_eq!(stored["subject"].as_deref(), Some("SuperOps ticket 250"));
    assert_eq!(stored["status"].as_deref(), Some("open"));
    assert_eq!(stored["priority"].as_deref(), Some("medium"));
    assert_eq!(stored["priority_id"].as_deref(), Some("2"));
    assert_eq!(stored["responder_id"].as_deref(), Some("77"));
    assert_eq!(stored["group_id"].as_deref(), Some("12"));
    assert_eq!(stored["requester_id"].as_deref(), Some("5250"));
    assert_eq!(stored["requester_name"].as_deref(), Some("Requester 250"));
    assert_eq!(stored["department_id"].as_deref(), Some("4001"));
    // Offset-less times are read as UTC (the default timezone).
    assert_eq!(
        stored["last_updated_at"].as_deref(),
        Some("2024-03-01T04:10:00Z")
    );
    assert_eq!(stored["last_source"].as_deref(), Some("poll"));
    // An unknown status name is stored as it is, with a warning.
    assert_eq!(
        db.ticket_of("superops", 7).unwrap()["status"].as_deref(),
        Some("Awaiting Parts")
    );
    assert!(
        err.contains("Awaiting Parts") && err.contains("[superops.statuses]"),
        "{err}"
    );
    assert_eq!(cursor(&db).as_deref(), Some("2024-03-01T04:10:00Z"));

    // The zone of offset-less times is configurable.
    let db = TestDb::new(&backend);
    let (ok, _, err) = superops_once(&db, &fake, "[superops]\ntimezone = America/New_York\n");
    assert!(ok, "{err}");
    assert_eq!(
        db.ticket_of("superops", 250).unwrap()["last_updated_at"].as_deref(),
        Some("2024-03-01T09:10:00Z")
    );
}

fn incremental_run_stops_at_the_watermark(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.add_tickets(1, 500);
    let no_lookups = "[superops]\nreconcile_max_tickets = 0\n";
    assert!(superops_once(&db, &fake, no_lookups).0);
    let before = fake.requests().len();
    assert_eq!(before, 5);
    fake.with(|s| {
        for id in [7, 8, 9] {
            s.tickets
                .insert(id, ticket(id, "Closed", "2024-03-05T00:00:00"));
        }
    });
    let (ok, run, err) = superops_once(&db, &fake, no_lookups);
    assert!(ok, "{err}");
    // One page: it reaches past the watermark (the cursor minus five
    // minutes), so the listing stops there.
    let pages: Vec<_> = fake.calls("getTicketList").into_iter().skip(5).collect();
    assert_eq!(pages.len(), 1, "{pages:?}");
    // The three changed tickets and those within the overlap.
    assert_eq!(run["tickets_changed"], 3, "{run}");
    assert_eq!(run["tickets_seen"], 3 + 6, "{run}");
    assert_eq!(
        db.ticket_of("superops", 8).unwrap()["status"].as_deref(),
        Some("closed")
    );
    assert_eq!(
        db.ticket_of("superops", 8).unwrap()["closed_at"].as_deref(),
        Some("2024-03-05T00:00:00Z")
    );
    assert_eq!(cursor(&db).as_deref(), Some("2024-03-05T00:00:00Z"));
    // A quiet account: one call per run.
    let (ok, run, _) = superops_once(&db, &fake, no_lookups);
    assert!(ok);
    assert_eq!(run["api_calls"], 1);
    assert_eq!(run["tickets_changed"], 0);
}

fn failed_page_leaves_cursor_and_data_as_they_were(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.add_tickets(1, 300);
    fake.with(|s| s.failing_pages.push(2));
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(!ok);
    assert!(err.contains("superops sync failed"), "{err}");
    assert_eq!(run["outcome"], "failed");
    assert!(run["error"].as_str().unwrap().contains("500"), "{run}");
    let pages = fake.calls("getTicketList");
    // Page 2 was tried four times, page 3 never.
    assert_eq!(
        pages
            .iter()
            .filter(|r| r.variables["input"]["page"] == 2)
            .count(),
        4
    );
    assert!(!pages.iter().any(|r| r.variables["input"]["page"] == 3));
    assert_eq!(cursor(&db), None);
    // Page 1 (the newest 100) was applied; nothing older.
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_source = 'superops'"),
        100
    );
    fake.with(|s| s.failing_pages.clear());
    let (ok, run, _) = superops_once(&db, &fake, "");
    assert!(ok, "{run}");
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_source = 'superops'"),
        300
    );
    assert_eq!(cursor(&db).as_deref(), Some("2024-03-01T05:00:00Z"));
}

fn rate_limit_exceeded_waits_and_retries(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.add_tickets(1, 150);
    fake.with(|s| s.rate_limited = 1);
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    let requests = fake.requests();
    assert_eq!(requests[0].error.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(requests[0].status, 200);
    // It waited as Retry-After asked, then asked for the same page again.
    assert!(requests[1].at.duration_since(requests[0].at) >= Duration::from_millis(950));
    assert_eq!(requests[1].variables, requests[0].variables);
    assert_eq!(run["api_calls"], 3);
    assert!(err.contains("rate_limit_exceeded"), "{err}");
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_source = 'superops'"),
        150
    );
}

fn bad_token_fails_once_without_retry_storm(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.add_tickets(1, 10);
    fake.with(|s| s.unauthorized = true);
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(!ok);
    assert_eq!(fake.requests().len(), 1);
    let message = run["error"].as_str().unwrap();
    assert!(
        message.contains("401") && message.contains("api_token"),
        "{message}"
    );
    assert!(!err.contains(TOKEN) && !run.to_string().contains(TOKEN));
    assert_eq!(cursor(&db), None);
}

fn no_ticket_is_marked_deleted_without_evidence(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    for id in 1..=4 {
        fake.with(|s| {
            s.tickets
                .insert(id, ticket(id, "Open", "2024-05-01T00:00:00"))
        });
    }
    assert!(superops_once(&db, &fake, "").0);
    // Later a newer ticket moves the watermark past 1-4, so the listing no
    // longer returns them: 2 was closed (without moving its updatedTime
    // past the watermark) and 3 purged.
    fake.with(|s| {
        s.tickets
            .insert(5, ticket(5, "Open", "2024-06-01T00:00:00"))
    });
    assert!(superops_once(&db, &fake, "[superops]\nreconcile_max_tickets = 0\n").0);
    fake.with(|s| {
        s.tickets
            .insert(2, ticket(2, "Closed", "2024-05-01T00:00:00"));
        s.tickets.remove(&3);
    });
    // Missing from a listing proves nothing: with lookups off, all stay.
    assert!(superops_once(&db, &fake, "[superops]\nreconcile_max_tickets = 0\n").0);
    for id in 1..=4 {
        assert_eq!(
            db.ticket_of("superops", id).unwrap()["status"].as_deref(),
            Some("open")
        );
    }
    // A full run lists every ticket, which settles 2 (closed); only 3, the
    // one the complete listing lacks, is looked up. A failed lookup proves
    // nothing: the ticket is kept as it is, and the run goes on.
    fake.with(|s| s.failing_lookups = true);
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    assert!(err.contains("ticket 3 kept as it is"), "{err}");
    for id in [1, 3, 4] {
        assert_eq!(
            db.ticket_of("superops", id).unwrap()["status"].as_deref(),
            Some("open"),
            "ticket {id}"
        );
    }
    assert_eq!(cursor(&db).as_deref(), Some("2024-06-01T00:00:00Z"));
    // Working lookups: only entity_does_not_exist marks a ticket deleted.
    fake.with(|s| s.failing_lookups = false);
    let before = fake.calls("getTicket").len();
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    let lookups: Vec<_> = fake.calls("getTicket").into_iter().skip(before).collect();
    let looked_up: Vec<&str> = lookups
        .iter()
        .map(|r| r.variables["input"]["ticketId"].as_str().unwrap())
        .collect();
    assert_eq!(looked_up, ["3"]);
    assert_eq!(lookups[0].error.as_deref(), Some("entity_does_not_exist"));
    let status = |id| db.ticket_of("superops", id).unwrap()["status"].clone();
    assert_eq!(status(1).as_deref(), Some("open"));
    assert_eq!(status(2).as_deref(), Some("closed"));
    assert_eq!(status(3).as_deref(), Some("deleted"));
    assert_eq!(status(4).as_deref(), Some("open"));
    assert_eq!(
        db.ticket_of("superops", 3).unwrap()["status_id"].as_deref(),
        Some("7")
    );
    // The next full run looks nothing up: the deleted ticket is no longer
    // active, and the listing returns every other.
    let before = fake.calls("getTicket").len();
    assert!(superops_once(&db, &fake, "").0);
    assert_eq!(fake.calls("getTicket").len(), before);
}

fn deliver_superops(codex: &Codex, body: &str) -> common::Response {
    codex.request(
        "POST",
        "/webhooks/superops/ticket",
        &[
            ("X-Webhook-Secret", SECRET),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

fn newest_version_wins_between_webhook_and_poll(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.with(|s| {
        s.tickets
            .insert(1, ticket(1, "Open", "2024-04-01T10:00:00"));
        s.tickets
            .insert(2, ticket(2, "On Hold", "2024-04-01T12:00:00"));
    });
    let codex = Codex::start(&db, "");
    // Ticket 1: the webhook is newer than what the poll will see.
    let newer = deliver_superops(
        &codex,
        r#"{"ticketId": "1", "status": "Closed", "updatedTime": "2024-04-01T11:00:00"}"#,
    );
    assert_eq!(newer.status, 201, "{:?}", newer.json());
    // Ticket 2: the webhook is older.
    let older = deliver_superops(
        &codex,
        r#"{"ticketId": "2", "status": "Resolved", "updatedTime": "2024-04-01T11:00:00"}"#,
    );
    assert_eq!(older.status, 201);
    drop(codex);
    assert!(superops_once(&db, &fake, "").0);
    let one = db.ticket_of("superops", 1).unwrap();
    assert_eq!(one["status"].as_deref(), Some("closed"));
    assert_eq!(
        one["last_updated_at"].as_deref(),
        Some("2024-04-01T11:00:00Z")
    );
    let two = db.ticket_of("superops", 2).unwrap();
    assert_eq!(two["status"].as_deref(), Some("on_hold"));
    assert_eq!(two["last_source"].as_deref(), Some("poll"));
    // A late webhook older than the poll's version changes nothing.
    let codex = Codex::start(&db, "");
    let stale = deliver_superops(
        &codex,
        r#"{"ticketId": "2", "status": "Open", "updatedTime": "2024-04-01T11:30:00"}"#,
    );
    assert_eq!(stale.json()["status"], "stale");
    assert_eq!(
        db.ticket_of("superops", 2).unwrap()["status"].as_deref(),
        Some("on_hold")
    );
}

fn webhook_endpoint_takes_superops_and_guide_names(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    // SuperOps' own names, as a workflow renders them.
    let body = json!({
        "ticketId": "6913470261064048640",
        "subject": "VPN down",
        "status": "In Progress",
        "priority": "Urgent",
        "technician": {"userId": "88", "name": "Tess"},
        "techGroup": {"groupId": "3", "name": "Network"},
        "requester": {"userId": "501", "name": "Ann"},
        "client": {"accountId": "4001", "name": "Acme"},
        "updatedTime": "2024-07-01T09:00:00"
    });
    let created = deliver_superops(&codex, &body.to_string());
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(created.json()["provider"], "superops");
    assert_eq!(created.json()["ticket_id"], 6913470261064048640_i64);
    let stored = db.ticket_of("superops", 6913470261064048640).unwrap();
    assert_eq!(stored["status"].as_deref(), Some("in_progress"));
    assert_eq!(stored["priority_id"].as_deref(), Some("4"));
    assert_eq!(stored["responder_id"].as_deref(), Some("88"));
    assert_eq!(stored["group_id"].as_deref(), Some("3"));
    assert_eq!(stored["department_id"].as_deref(), Some("4001"));
    assert_eq!(stored["last_source"].as_deref(), Some("webhook"));
    // The guide's names, and an unassigned technician clears the agent.
    let guide = r#"{"event": "ticket.updated", "ticket_id": 6913470261064048640, "status_id": "Resolved",
                    "responder_id": , "updated_at": "2024-07-01T10:00:00Z"}"#;
    let updated = deliver_superops(&codex, guide);
    assert_eq!(updated.status, 200, "{:?}", updated.json());
    assert_eq!(updated.json()["status"], "updated");
    let stored = db.ticket_of("superops", 6913470261064048640).unwrap();
    assert_eq!(stored["status"].as_deref(), Some("resolved"));
    assert_eq!(stored["responder_id"], None);
    assert_eq!(stored["closed_at"].as_deref(), Some("2024-07-01T10:00:00Z"));
    // A delete.
    let deleted = deliver_superops(
        &codex,
        r#"{"event": "ticket.deleted", "ticketId": "6913470261064048640", "updatedTime": "2024-07-02T00:00:00"}"#,
    );
    assert_eq!(deleted.json()["status"], "deleted", "{:?}", deleted.json());
    // A body without a ticket id is refused, and journaled with its ticket
    // when one can still be found in it.
    let refused = deliver_superops(&codex, r#"{"status": "Open"}"#);
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("ticketId")
    );
    // However broken, a body names its ticket in the answer.
    let broken = deliver_superops(&codex, r#"{"ticketId": "55" "status": Open, ]]"#);
    assert_eq!(broken.json()["ticket_id"], 55, "{:?}", broken.json());
    // Same authentication as Freshservice's endpoint.
    let wrong = codex.request(
        "POST",
        "/webhooks/superops/ticket",
        &[("X-Webhook-Secret", "nope")],
        b"{}",
    );
    assert_eq!(wrong.status, 401);
    // The journal keeps every authenticated delivery under its provider.
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE provider = 'superops'"),
        5
    );
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_source = 'freshservice'"),
        0
    );
    let health = codex.get("/webhooks/health").json();
    assert_eq!(health["endpoints"]["superops"], "/webhooks/superops/ticket");
    assert!(
        health["supported_providers"]
            .as_array()
            .unwrap()
            .contains(&json!("superops"))
    );
}

fn both_providers_poll_into_one_database(backend: Backend) {
    let db = TestDb::new(&backend);
    let superops = FakeSuperops::start();
    let freshservice = FakeFreshservice::start();
    superops.add_tickets(1, 30);
    freshservice.add_tickets(1, 20, 2);
    let config = format!(
        "{}{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1h\n",
        superops.config(),
        freshservice.config()
    );
    let codex = Codex::start(&db, &config);
    let count = |provider: &str| {
        db.count(&format!(
            "SELECT count(*) FROM ticket_details WHERE external_source = '{provider}'"
        ))
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            count("superops") == 30 && count("freshservice") == 20
        }),
        "superops {} freshservice {}\n{}",
        count("superops"),
        count("freshservice"),
        codex.logs()
    );
    // Ticket 1 exists in both, as two rows.
    assert_eq!(
        db.ticket_of("superops", 1).unwrap()["subject"].as_deref(),
        Some("SuperOps ticket 1")
    );
    assert_eq!(
        db.ticket(1).unwrap()["subject"].as_deref(),
        Some("Ticket 1")
    );
    // Health shows each provider's polling, last run and coverage.
    let mut health = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            health = codex.get("/webhooks/health").json();
            ["superops", "freshservice"]
                .iter()
                .all(|p| health["providers"][p]["polling"]["last_sync"]["outcome"] == "ok")
        }),
        "{health:#}"
    );
    for provider in ["superops", "freshservice"] {
        let entry = &health["providers"][provider];
        assert_eq!(entry["polling"]["enabled"], true, "{health:#}");
        assert_eq!(entry["polling"]["role"], "leader", "{health:#}");
        assert!(
            health["webhook_coverage"][provider].is_object(),
            "{health:#}"
        );
        assert_eq!(
            entry["polling"]["last_sync"]["provider"], provider,
            "{health:#}"
        );
    }
    drop(codex);

    // `codex status` lists both.
    let conf = db.dir.path().join("status.conf");
    std::fs::write(&conf, base_config(&db, &config)).unwrap();
    let (status, out, err) = run_codex(&["status", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("\nsuperops, last 24 h:\n") && out.contains("\nfreshservice, last 24 h:\n"),
        "{out}"
    );
    assert!(
        out.contains("initial") && !out.contains("polling: not configured"),
        "{out}"
    );

    // `codex check-config` checks both accounts, the token masked.
    let (status, out, err) = run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    assert!(err.contains("superops: credentials accepted"), "{err}");
    assert!(err.contains("freshservice: credentials accepted"), "{err}");
    assert!(out.contains("[superops]") && !out.contains(TOKEN), "{out}");
    superops.with(|s| s.unauthorized = true);
    let (status, _, err) = run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(err.contains("superops: bad credentials"), "{err}");
    superops.with(|s| s.unauthorized = false);

    // `codex sync --once --provider superops` touches SuperOps only.
    let fs_before = freshservice.requests().len();
    let so_before = superops.requests().len();
    let (ok, runs, err) = sync_once(&db, &config, &["--provider", "superops"]);
    assert!(ok, "{err}");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["provider"], "superops");
    assert_eq!(freshservice.requests().len(), fs_before);
    assert!(superops.requests().len() > so_before);
    // Without --provider, both run.
    let (ok, runs, err) = sync_once(&db, &config, &[]);
    assert!(ok, "{err}");
    let providers: Vec<&str> = runs
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["freshservice", "superops"]);
    let (ok, _, err) = sync_once(&db, &config, &["--provider", "autotask"]);
    assert!(!ok);
    assert!(err.contains("unknown provider 'autotask'"), "{err}");
}

/// The predecessor's `companies` table, by its exact DDL from the fixture.
fn create_predecessor_companies(db: &TestDb) {
    let name = if db.is_postgres() {
        "ddl-postgresql.sql"
    } else {
        "ddl-sqlite.sql"
    };
    let path = format!(
        "{}/tests/fixtures/predecessor/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let ddl = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let start = ddl.find("CREATE TABLE companies").expect("companies DDL");
    let end = start + ddl[start..].find(");").expect("end of companies DDL") + 2;
    db.execute(&ddl[start..end]);
}

/// A SuperOps ticket whose `client` scalar carries `account_id`.
fn client_ticket(id: i64, account_id: Value, updated: &str) -> Value {
    let mut t = ticket(id, "Open", updated);
    t["client"] = json!({"accountId": account_id, "name": format!("Client of {id}")});
    t
}

fn client_account_id_finds_the_predecessors_company(backend: Backend) {
    let db = TestDb::new(&backend);
    create_predecessor_companies(&db);
    // SuperOps clients, and a Freshservice company. The predecessor's
    // `UNIQUE (external_id)` allows one row per id across providers, so the
    // Freshservice company has an id a SuperOps client also carries.
    db.execute(
        "INSERT INTO companies (account_number, psa_provider, external_id, external_source, name) VALUES \
         ('SO-ACME', 'superops', 4001, 'superops', 'Acme'), \
         ('SO-BIG', 'superops', 6028538986627784704, 'superops', 'Big Client'), \
         ('FS-7', 'freshservice', 7001, 'freshservice', 'A Freshservice company')",
    );
    let conf = db.dir.path().join("migrate.conf");
    std::fs::write(&conf, base_config(&db, "")).unwrap();
    let (status, _, err) = run_codex(&["migrate", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");

    let fake = FakeSuperops::start();
    fake.with(|s| {
        // The fake's default client is 4001.
        s.tickets
            .insert(1, ticket(1, "Open", "2024-05-01T00:00:00"));
        s.tickets.insert(
            2,
            client_ticket(2, json!("6028538986627784704"), "2024-05-01T00:01:00"),
        );
        // The client scalar rendered as text holding JSON.
        let mut as_text = ticket(3, "Open", "2024-05-01T00:02:00");
        as_text["client"] = json!(r#"{"accountId": "6028538986627784704", "name": "Big Client"}"#);
        s.tickets.insert(3, as_text);
        // A Freshservice company's id is not a SuperOps client's.
        s.tickets
            .insert(4, client_ticket(4, json!("7001"), "2024-05-01T00:03:00"));
        // A client no company row maps to.
        s.tickets
            .insert(5, client_ticket(5, json!("5555"), "2024-05-01T00:04:00"));
        // Account ids Codex cannot store as a department id.
        s.tickets.insert(
            6,
            client_ticket(6, json!("98765432109876543210"), "2024-05-01T00:05:00"),
        );
        s.tickets
            .insert(7, client_ticket(7, json!("C-4001"), "2024-05-01T00:06:00"));
        // No client at all.
        let mut none = ticket(8, "Open", "2024-05-01T00:07:00");
        none["client"] = Value::Null;
        s.tickets.insert(8, none);
    });
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(ok, "{run}\n{err}");
    assert_eq!(run["tickets_seen"], 8, "{run}");
    let company = |id: i64| {
        db.value(&format!(
            "SELECT company_account_number FROM ticket_details \
             WHERE external_source = 'superops' AND external_id = {id}"
        ))
    };
    let department = |id: i64| db.ticket_of("superops", id).unwrap()["department_id"].clone();
    assert_eq!(company(1).as_deref(), Some("SO-ACME"));
    assert_eq!(company(2).as_deref(), Some("SO-BIG"));
    assert_eq!(department(2).as_deref(), Some("6028538986627784704"));
    assert_eq!(company(3).as_deref(), Some("SO-BIG"));
    assert_eq!(department(4).as_deref(), Some("7001"));
    assert_eq!(company(4), None);
    assert_eq!(department(5).as_deref(), Some("5555"));
    assert_eq!(company(5), None);
    // Unusable ids: the ticket is stored, without a client, with a warning
    // naming the id.
    for (id, account) in [(6, "98765432109876543210"), (7, "C-4001")] {
        let stored = db.ticket_of("superops", id).expect("ticket stored");
        assert_eq!(
            stored["subject"].as_deref(),
            Some(format!("SuperOps ticket {id}").as_str())
        );
        assert_eq!(stored["department_id"], None, "ticket {id}");
        assert_eq!(company(id), None, "ticket {id}");
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("superops ticket {id}")) && l.contains(account)),
            "ticket {id}: {err}"
        );
    }
    assert_eq!(department(8), None);
    assert_eq!(company(8), None);

    // Webhooks, with SuperOps' own field names.
    let codex = Codex::start(&db, "");
    // A new ticket of a mapped client, of a client only a Freshservice
    // company has the id of, and of an id Codex cannot store.
    for (id, account, expected) in [
        (20, "6028538986627784704", Some("SO-BIG")),
        (21, "7001", None),
        (22, "acct-zz", None),
    ] {
        let answer = deliver_superops(
            &codex,
            &json!({
                "ticketId": id.to_string(), "status": "Open", "updatedTime": "2024-05-02T00:00:00",
                "client": {"accountId": account, "name": "Client"}
            })
            .to_string(),
        );
        assert_eq!(answer.status, 201, "{:?}", answer.json());
        assert_eq!(company(id).as_deref(), expected, "ticket {id}");
    }
    assert_eq!(department(21).as_deref(), Some("7001"));
    let warned = deliver_superops(
        &codex,
        r#"{"ticketId": "22", "updatedTime": "2024-05-02T00:30:00", "client": {"accountId": "acct-zz"}}"#,
    );
    assert_eq!(warned.status, 200, "{:?}", warned.json());
    assert!(
        warned
            .json()
            .to_string()
            .contains("'acct-zz' is not an account id"),
        "{:?}",
        warned.json()
    );
    assert_eq!(department(22), None);

    // A change of client moves the ticket to the other company, by webhook
    assert_eq!(
        deliver_superops(
            &codex,
            r#"{"ticketId": "20", "updatedTime": "2024-05-02T01:00:00", "client": {"accountId": "4001"}}"#,
        )
        .status,
        200
    );
    assert_eq!(company(20).as_deref(), Some("SO-ACME"));
    // ... to one with an unusable id: the old company no longer holds.
    deliver_superops(
        &codex,
        r#"{"ticketId": "20", "updatedTime": "2024-05-02T02:00:00", "client": {"accountId": "acct-zz"}}"#,
    );
    assert_eq!(department(20), None);
    assert_eq!(company(20), None);
    drop(codex);
    // ... and by poll; a client removed clears it.
    fake.with(|s| {
        s.tickets.insert(
            1,
            client_ticket(1, json!("6028538986627784704"), "2024-05-03T00:00:00"),
        );
        s.tickets
            .insert(2, client_ticket(2, json!("4001"), "2024-05-03T00:00:00"));
        s.tickets
            .insert(5, client_ticket(5, json!("5555"), "2024-05-03T00:00:00"));
        let mut none = ticket(3, "Open", "2024-05-03T00:00:00");
        none["client"] = Value::Null;
        s.tickets.insert(3, none);
    });
    // A company row added later maps the ticket at its next update.
    db.execute(
        "INSERT INTO companies (account_number, psa_provider, external_id, external_source, name) \
         VALUES ('SO-LATE', 'superops', 5555, 'superops', 'Late')",
    );
    let (ok, run, err) = superops_once(&db, &fake, "");
    assert!(ok, "{run}\n{err}");
    assert_eq!(company(1).as_deref(), Some("SO-BIG"));
    assert_eq!(company(2).as_deref(), Some("SO-ACME"));
    assert_eq!(company(5).as_deref(), Some("SO-LATE"));
    assert_eq!(department(3), None);
    assert_eq!(company(3), None);
}

/// Codex polling the fake every second, with a full run every two.
fn start_polling(db: &TestDb, fake: &FakeSuperops) -> Codex {
    Codex::start(
        db,
        &format!(
            "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1s\nreconcile_interval = 2s\n",
            fake.config()
        ),
    )
}

fn looked_up(fake: &FakeSuperops, id: i64) -> usize {
    fake.calls("getTicket")
        .iter()
        .filter(|r| {
            r.variables["input"]["ticketId"]
                .as_str()
                .and_then(|t| t.parse().ok())
                == Some(id)
        })
        .count()
}

fn superops_status(db: &TestDb, id: i64) -> Option<String> {
    db.ticket_of("superops", id)
        .and_then(|t| t["status"].clone())
}

/// Full runs recorded so far.
fn full_runs(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM sync_runs WHERE kind = 'full' AND outcome = 'ok'")
}

fn a_purged_resolved_ticket_becomes_deleted_after_the_next_full_run(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.with(|s| {
        s.tickets
            .insert(1, ticket(1, "Resolved", "2024-05-01T00:00:00"));
        s.tickets
            .insert(2, ticket(2, "Resolved", "2024-05-01T00:00:00"));
        s.tickets
            .insert(3, ticket(3, "Closed", "2024-05-02T00:00:00"));
        s.tickets
            .insert(4, ticket(4, "Open", "2024-05-03T00:00:00"));
    });
    let _codex = start_polling(&db, &fake);
    assert!(wait_until(Duration::from_secs(20), || {
        superops_status(&db, 4).is_some()
    }));
    assert_eq!(superops_status(&db, 1).as_deref(), Some("resolved"));
    // Ticket 1 is purged in SuperOps: the next full run's listing lacks
    // it, one lookup proves it gone.
    fake.with(|s| s.tickets.remove(&1));
    assert!(wait_until(Duration::from_secs(30), || {
        superops_status(&db, 1).as_deref() == Some("deleted")
    }));
    // Deleted is final: later full runs do not look it up again; the
    // tickets still present (resolved, closed, open) are never looked up
    // nor marked.
    let lookups = looked_up(&fake, 1);
    assert_eq!(lookups, 1);
    let after = full_runs(&db);
    assert!(wait_until(Duration::from_secs(30), || full_runs(&db) >= after + 2));
    assert_eq!(looked_up(&fake, 1), lookups);
    for id in 2..=4 {
        assert_eq!(looked_up(&fake, id), 0, "ticket {id}");
    }
    assert_eq!(superops_status(&db, 2).as_deref(), Some("resolved"));
    assert_eq!(superops_status(&db, 3).as_deref(), Some("closed"));
    assert_eq!(superops_status(&db, 4).as_deref(), Some("open"));
}

fn a_purged_ticket_whose_lookup_fails_keeps_its_state(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeSuperops::start();
    fake.with(|s| {
        s.tickets
            .insert(1, ticket(1, "Resolved", "2024-05-01T00:00:00"));
        s.tickets
            .insert(2, ticket(2, "Open", "2024-05-02T00:00:00"));
    });
    let _codex = start_polling(&db, &fake);
    assert!(wait_until(Duration::from_secs(20), || {
        superops_status(&db, 2).is_some()
    }));
    // Purged, but every lookup answers 500: nothing is concluded.
    fake.with(|s| {
        s.tickets.remove(&1);
        s.failing_lookups = true;
    });
    let after = full_runs(&db);
    assert!(wait_until(Duration::from_secs(60), || {
        full_runs(&db) >= after + 2 && looked_up(&fake, 1) >= 8
    }));
    assert_eq!(superops_status(&db, 1).as_deref(), Some("resolved"));
    assert_eq!(superops_status(&db, 2).as_deref(), Some("open"));
}
