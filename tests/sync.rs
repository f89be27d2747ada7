//! Polling Freshservice: against a fake API on an ephemeral port, through
//! the real binary and a real database.

mod common;

use std::time::Duration;

use common::fake_freshservice::{FakeFreshservice, ticket};
use common::{Backend, Codex, TestDb, base_config, run_codex, seed_body, wait_until};
use serde_json::{Value, json};

for_each_backend!(
    full_sync_of_1000_tickets_over_10_pages,
    incremental_runs_fetch_only_changes,
    newest_version_wins_between_webhook_and_poll,
    failed_page_leaves_cursor_and_data_as_they_were,
    no_ticket_is_marked_deleted_without_evidence,
    rate_limits_are_respected,
    bad_credentials_fail_once_without_retry_storm,
    slow_page_is_retried,
    adaptive_interval_follows_webhooks_and_coverage,
    a_quiet_account_costs_three_calls_per_run,
    coverage_comes_from_the_database_on_an_instance_that_does_not_poll,
    listings_cover_every_workspace_and_fall_back_cleanly,
    reconcile_looks_up_only_what_the_listings_cannot_settle,
    each_kind_of_call_is_budgeted_from_its_own_headers,
    pages_are_followed_only_to_the_configured_host,
    a_listing_that_never_ends_stops_at_the_page_cap,
    deletions_and_spam_arrive_within_one_interval_without_webhooks,
    deletions_and_spam_arrive_within_one_interval_when_webhooks_carry_none,
    a_lookup_answered_500_keeps_the_ticket_as_it_is,
    a_lookup_that_times_out_keeps_the_ticket_as_it_is,
    the_workspace_fallback_is_the_accounts_and_a_reload_forgets_it,
);

/// Runs `codex sync --once` and returns (success, the printed run, stderr).
fn sync_once(db: &TestDb, fake: &FakeFreshservice, extra: &str) -> (bool, Value, String) {
    let conf = db
        .dir
        .path()
        .join(format!("sync-{}.conf", fake.addr.port()));
    std::fs::write(&conf, base_config(db, &format!("{}{extra}", fake.config()))).unwrap();
    common::migrate_once(&conf);
    let (status, out, err) =
        run_codex(&["sync", "--once", "--config", conf.to_str().unwrap()], &[]);
    let run: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (status.success(), run, err)
}

fn listing_requests(fake: &FakeFreshservice) -> Vec<common::fake_freshservice::Logged> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/tickets" && !r.query.contains("filter="))
        .collect()
}

fn full_sync_of_1000_tickets_over_10_pages(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 1000, 2);
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{run}\n{err}");
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["kind"], "full");
    assert_eq!(run["tickets_seen"], 1000);
    assert_eq!(run["tickets_changed"], 1000);
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 1000);
    let listing = listing_requests(&fake);
    assert_eq!(listing.len(), 10, "{listing:?}");
    assert!(
        listing[0].query.contains("per_page=100") && listing[0].query.contains("order_type=asc")
    );
    // Every workspace is listed.
    assert!(listing.iter().all(|r| r.query.contains("workspace_id=0")));
    // `sync --once` is complete even the first time: the deleted and spam
    // listings and the active filter too, whose 1,000 tickets are more than
    // it lists, so nothing is looked up one by one.
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r.query.contains("filter=deleted")));
    assert!(requests.iter().any(|r| r.query.contains("filter=spam")));
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.path == "/api/v2/tickets/filter")
            .count(),
        1
    );
    assert!(err.contains("skipping reconcile"), "{err}");
    assert_eq!(requests.len(), 13);
    assert_eq!(run["api_calls"], 13);
    let ticket = db.ticket(1000).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("open"));
    assert_eq!(
        ticket["description"].as_deref(),
        Some("Description of 1000")
    );
    assert_eq!(ticket["last_source"].as_deref(), Some("poll"));
    assert!(ticket["synced_at"].is_some());
    let cursor = db.value("SELECT cursor FROM sync_state WHERE provider = 'freshservice'");
    assert_eq!(cursor.as_deref(), Some("2024-03-01T16:40:00Z"));
    assert_eq!(
        db.count("SELECT count(*) FROM sync_runs WHERE outcome = 'ok' AND kind = 'full'"),
        1
    );

    // The next one is complete as well.
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{err}");
    assert_eq!(run["kind"], "full");
    let requests: Vec<_> = fake.requests().into_iter().skip(13).collect();
    assert!(requests.iter().any(|r| r.query.contains("filter=deleted")));
    assert!(requests.iter().any(|r| r.query.contains("filter=spam")));
    assert_eq!(run["api_calls"].as_u64().unwrap() as usize, requests.len());
}

fn incremental_runs_fetch_only_changes(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 500, 2);
    assert!(sync_once(&db, &fake, "").0);
    let before = fake.requests().len();
    fake.with(|s| {
        for id in [7, 8, 9] {
            s.tickets.insert(id, ticket(id, 3, "2024-03-05T00:00:00Z"));
        }
    });
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{err}");
    let listing: Vec<_> = listing_requests(&fake).into_iter().skip(5).collect();
    assert_eq!(listing.len(), 1, "{listing:?}");
    // The listing starts five minutes before the cursor (the last ticket
    // seen, 08:20), so it sees a handful of tickets and changes three.
    assert!(
        listing[0]
            .query
            .contains("updated_since=2024-03-01T08%3A15%3A00Z"),
        "{}",
        listing[0].query
    );
    assert_eq!(run["tickets_changed"], 3, "{run}");
    assert!(run["tickets_seen"].as_i64().unwrap() < 20, "{run}");
    // The reconcile reads the active filter (500 tickets, more than its ten
    // pages of 30 hold, so it stops there) and looks nothing up.
    let reconcile: Vec<_> = fake
        .requests()
        .into_iter()
        .skip(before)
        .filter(|r| r.path.starts_with("/api/v2/tickets/"))
        .collect();
    assert_eq!(reconcile.len(), 1, "{reconcile:?}");
    assert!(reconcile.iter().all(|r| r.path == "/api/v2/tickets/filter"));
    assert_eq!(db.ticket(8).unwrap()["status"].as_deref(), Some("pending"));
}

fn newest_version_wins_between_webhook_and_poll(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.with(|s| {
        s.tickets.insert(1, ticket(1, 2, "2024-04-01T10:00:00Z"));
        s.tickets.insert(2, ticket(2, 3, "2024-04-01T12:00:00Z"));
    });
    let codex = Codex::start(&db, "");
    // Ticket 1: the webhook is newer than what the poll will see.
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.updated", 1, 5, "2024-04-01T11:00:00Z"))
            .status,
        201
    );
    // Ticket 2: the webhook is older than what the poll will see.
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.updated", 2, 9, "2024-04-01T11:00:00Z"))
            .status,
        201
    );
    drop(codex);
    assert!(sync_once(&db, &fake, "").0);
    assert_eq!(db.ticket(1).unwrap()["status"].as_deref(), Some("closed"));
    assert_eq!(
        db.ticket(1).unwrap()["last_updated_at"].as_deref(),
        Some("2024-04-01T11:00:00Z")
    );
    assert_eq!(db.ticket(2).unwrap()["status"].as_deref(), Some("pending"));
    assert_eq!(
        db.ticket(2).unwrap()["last_source"].as_deref(),
        Some("poll")
    );
    // And a late webhook does not undo the poll's newer version (its
    // status is older than the poll's; only fields the poll does not carry,
    // such as the requester's e-mail, can still take its values).
    let codex = Codex::start(&db, "");
    let late = codex.deliver_json(&seed_body("ticket.updated", 2, 9, "2024-04-01T11:30:00Z"));
    assert_eq!(late.status, 200);
    let ticket = db.ticket(2).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("pending"));
    assert_eq!(
        ticket["last_updated_at"].as_deref(),
        Some("2024-04-01T12:00:00Z")
    );
    let stale = codex.deliver_json(
        &json!({"ticket_id": 2, "status_id": 9, "updated_at": "2024-04-01T11:45:00Z"}),
    );
    assert_eq!(stale.json()["status"], "stale");
}

fn failed_page_leaves_cursor_and_data_as_they_were(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 300, 2);
    fake.with(|s| s.fail.push(("page=2".to_string(), u32::MAX)));
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(!ok);
    assert!(err.contains("sync failed"), "{err}");
    assert_eq!(run["outcome"], "failed");
    assert!(run["error"].as_str().unwrap().contains("500"), "{run}");
    // Page 2 was tried four times, page 3 never.
    let listing = listing_requests(&fake);
    assert_eq!(
        listing
            .iter()
            .filter(|r| r.query.contains("page=2"))
            .count(),
        4
    );
    assert!(!listing.iter().any(|r| r.query.contains("page=3")));
    assert_eq!(db.value("SELECT cursor FROM sync_state"), None);
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE CAST(external_id AS INTEGER) > 100"),
        0
    );
    assert_eq!(
        db.value("SELECT outcome FROM sync_runs").as_deref(),
        Some("failed")
    );
    // The next run starts from the same place and completes.
    fake.with(|s| s.fail.clear());
    let (ok, run, _) = sync_once(&db, &fake, "");
    assert!(ok, "{run}");
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 300);
}

fn no_ticket_is_marked_deleted_without_evidence(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    // Four tickets Codex knows as open.
    for id in 1..=4 {
        fake.with(|s| s.tickets.insert(id, ticket(id, 2, "2024-05-01T00:00:00Z")));
    }
    assert!(sync_once(&db, &fake, "").0);
    // In the PSA, later: 1 and 4 stay open, 2 was closed and 3 deleted for
    // good, in ways the incremental listing does not show (they are older
    // than its window, which a newer ticket 5 has moved on).
    fake.with(|s| s.tickets.insert(5, ticket(5, 2, "2024-06-01T00:00:00Z")));
    assert!(sync_once(&db, &fake, "").0);
    fake.with(|s| {
        s.tickets.insert(2, ticket(2, 5, "2024-05-01T00:00:00Z"));
        s.tickets.remove(&3);
    });
    assert!(sync_once(&db, &fake, "[freshservice]\nreconcile_max_tickets = 0\n").0);
    assert_eq!(db.ticket(2).unwrap()["status"].as_deref(), Some("open"));

    // A failed filter listing proves nothing.
    fake.with(|s| s.fail.push(("/tickets/filter".to_string(), u32::MAX)));
    let (ok, _, _) = sync_once(&db, &fake, "");
    assert!(!ok);
    for id in 1..=4 {
        assert_eq!(
            db.ticket(id).unwrap()["status"].as_deref(),
            Some("open"),
            "ticket {id}"
        );
    }
    // Nor does a truncated one.
    fake.with(|s| {
        s.fail.clear();
        s.filter_total_extra = 50;
    });
    let (ok, _, _) = sync_once(&db, &fake, "");
    assert!(ok);
    assert_eq!(db.ticket(3).unwrap()["status"].as_deref(), Some("open"));
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.path == "/api/v2/tickets/3")
    );

    // A complete listing: each missing ticket is looked up; only the 404
    // becomes deleted, the closed one gets its real status.
    fake.with(|s| s.filter_total_extra = 0);
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    assert_eq!(db.ticket(1).unwrap()["status"].as_deref(), Some("open"));
    assert_eq!(db.ticket(2).unwrap()["status"].as_deref(), Some("closed"));
    assert_eq!(db.ticket(3).unwrap()["status"].as_deref(), Some("deleted"));
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/api/v2/tickets/2")
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.path == "/api/v2/tickets/1")
    );
}

fn rate_limits_are_respected(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 150, 2);
    // 429 with Retry-After: the client waits that long, then goes on.
    fake.with(|s| {
        s.rate_limited = 1;
        s.retry_after = 1;
    });
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    let requests = fake.requests();
    assert_eq!(requests[0].status, 429);
    assert!(requests[1].at.duration_since(requests[0].at) >= Duration::from_millis(950));

    // A budget near zero spaces requests out (3 x 60 s / 6000 = 30 ms here).
    let before = fake.requests().len();
    fake.with(|s| s.remaining = Some(1));
    let (ok, _, _) = sync_once(&db, &fake, "");
    assert!(ok);
    let requests: Vec<_> = fake.requests().into_iter().skip(before).collect();
    for pair in requests.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(25),
            "{pair:?}"
        );
    }

    // Never more than max_requests_per_minute in any minute (the fifth
    // request of a run waits for the first to age out) is checked on a
    // manual clock, without waiting a real minute:
    // psa::freshservice_poll::tests::never_more_than_max_requests_per_minute_in_any_minute.
}

fn bad_credentials_fail_once_without_retry_storm(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.with(|s| s.unauthorized = true);
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(!ok);
    assert!(
        run["error"].as_str().unwrap().contains("bad credentials"),
        "{run}"
    );
    assert!(err.contains("api_key"), "{err}");
    assert_eq!(fake.requests().len(), 1);
    assert!(!err.contains(common::fake_freshservice::API_KEY));

    // check-config says so too.
    let conf = db.dir.path().join("check.conf");
    std::fs::write(&conf, base_config(&db, &fake.config())).unwrap();
    let (status, _, err) = run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(err.contains("bad credentials"), "{err}");

    // And the running service reports it in health, without retrying in a loop.
    let codex = Codex::start(
        &db,
        &format!(
            "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1h\n",
            fake.config()
        ),
    );
    assert!(wait_until(Duration::from_secs(20), || {
        codex.get("/webhooks/health").json()["last_sync_outcome"] == "failed"
    }));
    let health = codex.get("/webhooks/health").json();
    assert!(
        health["polling"]["last_sync"]["error"]
            .as_str()
            .unwrap()
            .contains("bad credentials"),
        "{health}"
    );
    // time is what is tested here: over half a second after the failure,
    // no retry storm (the next attempt is an hour away).
    std::thread::sleep(Duration::from_millis(500));
    let calls = fake.requests().len();
    assert!(calls <= 4, "{calls} requests");
}

fn slow_page_is_retried(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 150, 2);
    fake.with(|s| s.slow = Some(("page=2".to_string(), Duration::from_secs(3), 1)));
    let (ok, run, err) = sync_once(&db, &fake, "[freshservice]\nrequest_timeout = 1s\n");
    assert!(ok, "{run} {err}");
    assert!(err.contains("retrying"), "{err}");
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 150);
}

fn adaptive_interval_follows_webhooks_and_coverage(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.with(|s| s.tickets.insert(1, ticket(1, 2, "2024-06-01T00:00:00Z")));
    let codex = Codex::start(
        &db,
        &format!(
            "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1s\n\
             ticket_sync_interval_with_webhooks = 3s\nmin_webhook_coverage = 0.6\n",
            fake.config()
        ),
    );
    let health = || codex.get("/webhooks/health").json();
    // No webhook yet: the short interval.
    assert!(wait_until(
        Duration::from_secs(20),
        || health()["last_sync_outcome"] == "ok"
    ));
    assert_eq!(health()["polling_interval_seconds"], 1);
    assert_eq!(health()["polling"]["role"], "leader");
    assert!(
        health()["polling"]["interval_reason"]
            .as_str()
            .unwrap()
            .contains("no webhook")
    );

    // A ticket.deleted delivery this week (of a ticket Codex never held:
    // it changed nothing) shows the delete workflow is active.
    db.execute(&format!(
        "INSERT INTO webhook_events (provider, received_at, client_ip, event, ticket_id, outcome, body) \
         VALUES ('freshservice', '{}', '127.0.0.1', 'ticket.deleted', 999, 'unchanged', '')",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
    ));
    // A webhook arrives, and the PSA's listing shows the same version: the
    // change is covered, the long interval applies.
    fake.with(|s| s.tickets.insert(2, ticket(2, 3, "2024-06-02T00:00:00Z")));
    let mut body = seed_body("ticket.created", 2, 3, "2024-06-02T00:00:00Z");
    body["subject"] = json!("Ticket 2");
    assert_eq!(codex.deliver_json(&body).status, 201);
    assert!(wait_until(
        Duration::from_secs(20),
        || health()["polling_interval_seconds"] == 3
    ));
    assert_eq!(
        health()["webhook_coverage"]["freshservice"]["changes_missed"],
        0
    );

    // Changes only the poll sees: coverage drops below 60 %, back to 1 s.
    fake.with(|s| {
        for id in 3..=6 {
            s.tickets.insert(id, ticket(id, 2, "2024-06-03T00:00:00Z"));
        }
    });
    assert!(wait_until(
        Duration::from_secs(30),
        || health()["polling_interval_seconds"] == 1
    ));
    let coverage = &health()["webhook_coverage"]["freshservice"];
    assert_eq!(coverage["changes_missed"], 4, "{coverage}");
    assert_eq!(coverage["changes_by_webhook"], 1, "{coverage}");
    assert!((coverage["coverage"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    assert!(
        health()["polling"]["interval_reason"]
            .as_str()
            .unwrap()
            .contains("coverage")
    );
    assert!(
        codex.logs().contains("webhook coverage is 20%"),
        "{}",
        codex.logs()
    );
    // The missed tickets are named (in the run that found them).
    let runs = db.rows("SELECT missed_ticket_ids FROM sync_runs WHERE missed_by_webhooks > 0");
    assert_eq!(runs[0][0].as_deref(), Some("3,4,5,6"));

    // Webhooks catch up: coverage recovers, the long interval returns.
    for id in 10..=20 {
        let mut body = seed_body("ticket.created", id, 2, "2024-06-04T00:00:00Z");
        body["subject"] = json!(format!("Ticket {id}"));
        assert_eq!(codex.deliver_json(&body).status, 201);
    }
    assert!(wait_until(
        Duration::from_secs(20),
        || health()["polling_interval_seconds"] == 3
    ));

    // `codex status` tells the same story.
    let (status, out, _) = run_codex(
        &["status", "--config", codex.config_path.to_str().unwrap()],
        &[],
    );
    assert!(status.success());
    assert!(out.contains("webhook coverage: 75.0%"), "{out}");
    assert!(out.contains("missed by webhooks [3, 4, 5, 6]"), "{out}");
}

fn a_quiet_account_costs_three_calls_per_run(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 40, 2);
    let _codex = Codex::start(
        &db,
        &format!(
            "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 500ms\nreconcile_interval = 3s\n",
            fake.config()
        ),
    );
    assert!(wait_until(Duration::from_secs(30), || {
        db.count("SELECT count(*) FROM sync_runs WHERE outcome = 'ok' AND kind = 'full'") >= 2
    }));
    let runs = db.rows("SELECT kind, api_calls FROM sync_runs WHERE outcome = 'ok' ORDER BY id");
    // The timer's first run lists everything once, and says it did only that.
    assert_eq!(runs[0][0].as_deref(), Some("initial"), "{runs:?}");
    assert_eq!(runs[0][1].as_deref(), Some("1"), "{runs:?}");
    // Then, without webhooks, an incremental run costs three calls: the
    // listing, and the deleted and spam listings (each one empty page)...
    let incremental: Vec<_> = runs[1..]
        .iter()
        .filter(|r| r[0].as_deref() == Some("incremental"))
        .collect();
    assert!(incremental.len() >= 3, "{runs:?}");
    assert!(
        incremental.iter().all(|r| r[1].as_deref() == Some("3")),
        "{runs:?}"
    );
    // ...and a full run every reconcile_interval adds the active filter
    // (40 tickets: two pages).
    let full: Vec<_> = runs[1..]
        .iter()
        .filter(|r| r[0].as_deref() == Some("full"))
        .collect();
    assert_eq!(full[0][1].as_deref(), Some("5"), "{runs:?}");
}

/// Two `codex sync --once` runs find changes no webhook delivered; an
/// instance with `sync_tickets_enabled = false` reports the coverage they
/// measured, and so does `codex status`.
fn coverage_comes_from_the_database_on_an_instance_that_does_not_poll(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 3, 2);
    let codex = Codex::start(&db, &fake.config());
    let health = || codex.get("/webhooks/health").json();
    assert_eq!(health()["polling"]["role"], "disabled");

    assert!(sync_once(&db, &fake, "").0);
    // A webhook delivers ticket 2's change; tickets 3 and 4 change unseen.
    let mut body = seed_body("ticket.updated", 2, 3, "2024-07-01T00:00:00Z");
    body["subject"] = json!("Ticket 2");
    assert_eq!(codex.deliver_json(&body).status, 200);
    fake.with(|s| {
        s.tickets.insert(2, ticket(2, 3, "2024-07-01T00:00:00Z"));
        s.tickets.insert(3, ticket(3, 3, "2024-07-01T00:00:00Z"));
        s.tickets.insert(4, ticket(4, 2, "2024-07-01T00:00:00Z"));
    });
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{err}");
    assert_eq!(run["missed_by_webhooks"], 2, "{run}");

    let mut coverage = Value::Null;
    assert!(wait_until(Duration::from_secs(5), || {
        coverage = health()["webhook_coverage"]["freshservice"].clone();
        coverage["changes_missed"] == 2
    }));
    assert_eq!(coverage["changes_by_webhook"], 1, "{coverage}");
    assert!((coverage["coverage"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(coverage["missed_ticket_ids_last_run"], json!([3, 4]));
    assert_eq!(health()["last_sync_outcome"], "ok");

    let (status, out, _) = run_codex(
        &["status", "--config", codex.config_path.to_str().unwrap()],
        &[],
    );
    assert!(status.success());
    assert!(out.contains("webhook coverage: 33.3%"), "{out}");
}

fn listings_cover_every_workspace_and_fall_back_cleanly(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.with(|s| {
        s.tickets.insert(1, ticket(1, 2, "2024-08-01T00:00:00Z"));
        for (id, workspace) in [(2, 2), (3, 3)] {
            let mut t = ticket(id, 2, "2024-08-01T00:00:00Z");
            t["workspace_id"] = json!(workspace);
            s.tickets.insert(id, t);
        }
    });
    // Default: every workspace, in every listing.
    let (ok, _, err) = sync_once(&db, &fake, "");
    assert!(ok, "{err}");
    for id in 1..=3 {
        assert!(db.ticket(id).is_some(), "ticket {id}");
    }
    let listings: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/tickets" || r.path == "/api/v2/tickets/filter")
        .collect();
    assert_eq!(listings.len(), 4, "{listings:?}");
    assert!(listings.iter().all(|r| r.query.contains("workspace_id=0")));

    // One workspace when configured.
    let other = TestDb::new(&backend);
    let (ok, _, err) = sync_once(&other, &fake, "[freshservice]\nworkspace_id = 2\n");
    assert!(ok, "{err}");
    assert!(other.ticket(2).is_some());
    assert!(other.ticket(1).is_none() && other.ticket(3).is_none());

    // An account without workspaces refuses the parameter: the run goes on
    // without it, and says so once.
    fake.with(|s| {
        s.no_workspaces = true;
        s.tickets.insert(5, ticket(5, 2, "2024-08-02T00:00:00Z"));
    });
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    assert!(db.ticket(5).is_some());
    assert_eq!(err.matches("refuses workspace_id").count(), 1, "{err}");
    let after: Vec<_> = fake.requests().into_iter().skip(4).collect();
    let refused = after.iter().filter(|r| r.status == 400).count();
    assert_eq!(refused, 1, "{after:?}");
}

/// The active-status listing settles every ticket it lists; the deleted and
/// spam listings settle theirs; only a ticket none of them accounts for is
/// looked up on its own.
fn reconcile_looks_up_only_what_the_listings_cannot_settle(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 40, 2);
    assert!(sync_once(&db, &fake, "").0);
    let before = fake.requests().len();
    // Deleting a ticket or marking it spam updates it, now.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    fake.with(|s| {
        // 5 was deleted (in the deleted listing), 6 marked spam, 7 deleted
        // for good (gone everywhere), 8 closed (the incremental listing
        // shows it), 9 changed while staying open.
        s.tickets.remove(&5);
        s.deleted.insert(5, ticket(5, 2, &now));
        s.tickets.remove(&6);
        s.spam.insert(6, ticket(6, 2, &now));
        s.tickets.remove(&7);
        s.tickets.insert(8, ticket(8, 5, "2024-09-01T00:00:00Z"));
        s.tickets.insert(9, ticket(9, 3, "2024-09-01T00:00:00Z"));
    });
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    let lookups: Vec<_> = fake
        .requests()
        .into_iter()
        .skip(before)
        .filter(|r| r.path.starts_with("/api/v2/tickets/") && r.path != "/api/v2/tickets/filter")
        .map(|r| r.path)
        .collect();
    assert_eq!(lookups, ["/api/v2/tickets/7"]);
    let status = |id| db.ticket(id).unwrap()["status"].clone();
    assert_eq!(status(5).as_deref(), Some("deleted"));
    assert_eq!(status(6).as_deref(), Some("spam"));
    assert_eq!(status(7).as_deref(), Some("deleted"));
    assert_eq!(status(8).as_deref(), Some("closed"));
    assert_eq!(status(9).as_deref(), Some("pending"));
    assert_eq!(status(10).as_deref(), Some("open"));
    // Listing, deleted, spam, two filter pages, one lookup.
    assert_eq!(run["api_calls"], 6, "{run}");
}

/// A standby on PostgreSQL, which never polls, reports the coverage the
/// leader's runs measured.
#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn a_standby_reports_webhook_coverage() {
    let backend = Backend::postgres();
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 3, 2);
    let polling = format!(
        "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1s\nticket_sync_interval_with_webhooks = 1s\n",
        fake.config()
    );
    let first = Codex::start(&db, &polling);
    let role = |codex: &Codex| codex.get("/webhooks/health").json()["polling"]["role"].clone();
    assert!(wait_until(Duration::from_secs(20), || role(&first) == "leader"));
    let standby = Codex::start(&db, &polling);
    assert!(wait_until(Duration::from_secs(20), || role(&standby) == "standby"));
    assert!(wait_until(Duration::from_secs(20), || {
        db.count("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'") >= 1
    }));

    let mut body = seed_body("ticket.updated", 2, 3, "2024-07-01T00:00:00Z");
    body["subject"] = json!("Ticket 2");
    assert_eq!(standby.deliver_json(&body).status, 200);
    fake.with(|s| {
        s.tickets.insert(2, ticket(2, 3, "2024-07-01T00:00:00Z"));
        s.tickets.insert(3, ticket(3, 3, "2024-07-01T00:00:00Z"));
    });
    let mut coverage = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            coverage =
                standby.get("/webhooks/health").json()["webhook_coverage"]["freshservice"].clone();
            coverage["changes_missed"] == 1
        }),
        "{coverage}"
    );
    assert_eq!(coverage["changes_by_webhook"], 1, "{coverage}");
    assert_eq!(coverage["missed_ticket_ids_last_run"], json!([3]));
    assert_eq!(role(&standby), "standby");
    assert_eq!(
        standby.get("/webhooks/health").json()["last_sync_outcome"],
        "ok"
    );
}

/// Listings report a nearly spent budget of their own (total 600 a minute,
/// 1 left): listings are spaced out at that rate, while single-ticket
/// lookups, whose own budget is ample, are not.
fn each_kind_of_call_is_budgeted_from_its_own_headers(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 40, 2);
    assert!(sync_once(&db, &fake, "").0);
    let before = fake.requests().len();
    fake.with(|s| {
        for id in 1..=4 {
            s.tickets.remove(&id);
        }
        s.totals = Some([600, 6000, 6000]);
        s.listing_remaining = Some(1);
    });
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(ok, "{run} {err}");
    let requests: Vec<_> = fake.requests().into_iter().skip(before).collect();
    let gaps = |listing: bool| -> Vec<Duration> {
        let of_kind: Vec<_> = requests
            .iter()
            .filter(|r| {
                let is_listing = r.path == "/api/v2/tickets" || r.path == "/api/v2/tickets/filter";
                is_listing == listing
            })
            .collect();
        of_kind.windows(2).map(|w| w[1].at - w[0].at).collect()
    };
    let listing = gaps(true);
    assert_eq!(listing.len(), 4, "{requests:?}");
    // 3 requests' worth of a 600-a-minute budget: 300 ms apart.
    assert!(
        listing.iter().all(|g| *g >= Duration::from_millis(290)),
        "{listing:?}"
    );
    let lookups = gaps(false);
    assert_eq!(lookups.len(), 3, "{requests:?}");
    assert!(
        lookups.iter().all(|g| *g < Duration::from_millis(250)),
        "{lookups:?}"
    );
    assert_eq!(db.ticket(1).unwrap()["status"].as_deref(), Some("deleted"));
}

/// A listing whose `Link` names another host (here another local
/// listener) is not followed: the run fails naming that host, and the
/// listener never sees a connection, let alone the API key.
fn pages_are_followed_only_to_the_configured_host(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 150, 2);
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    fake.with(|s| s.link_host = Some(elsewhere_addr.to_string()));
    let (ok, run, err) = sync_once(&db, &fake, "");
    assert!(!ok, "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("http://{elsewhere_addr}")) && error.contains("not followed"),
        "{error}"
    );
    assert!(!err.contains(common::fake_freshservice::API_KEY), "{err}");
    elsewhere.set_nonblocking(true).unwrap();
    match elsewhere.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the other listener was contacted: {other:?}"),
    }
    // The first page was read and applied; the cursor did not move.
    assert_eq!(listing_requests(&fake).len(), 1);
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 100);
    assert_eq!(db.value("SELECT cursor FROM sync_state"), None);
}

/// A server whose pages never end is read up to the page cap, then the
/// run fails saying so.
fn a_listing_that_never_ends_stops_at_the_page_cap(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 3, 2);
    fake.with(|s| s.endless = true);
    let (ok, run, _) = sync_once(&db, &fake, "");
    assert!(!ok, "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("after 2000 pages"), "{error}");
    assert_eq!(listing_requests(&fake).len(), 2000);
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 3);
}

/// The timer, polling every second, with a full run only hourly.
fn polling_config(fake: &FakeFreshservice, extra: &str) -> String {
    format!(
        "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1s\n\
         reconcile_interval = 1h\n{extra}",
        fake.config()
    )
}

/// Moves ticket 5 to the deleted listing and 6 to the spam listing, as
/// Freshservice does (both updated now), and waits for both to be marked;
/// returns how long that took.
fn delete_and_spam(db: &TestDb, fake: &FakeFreshservice) -> Duration {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let started = std::time::Instant::now();
    fake.with(|s| {
        s.tickets.remove(&5);
        s.deleted.insert(5, ticket(5, 2, &now));
        s.tickets.remove(&6);
        s.spam.insert(6, ticket(6, 2, &now));
    });
    let status = |id| db.ticket(id).and_then(|t| t["status"].clone());
    assert!(
        wait_until(Duration::from_secs(20), || {
            status(5).as_deref() == Some("deleted") && status(6).as_deref() == Some("spam")
        }),
        "5: {:?}, 6: {:?}",
        status(5),
        status(6)
    );
    started.elapsed()
}

fn deletions_and_spam_arrive_within_one_interval_without_webhooks(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 10, 2);
    let codex = Codex::start(&db, &polling_config(&fake, ""));
    assert!(wait_until(Duration::from_secs(20), || {
        db.count("SELECT count(*) FROM sync_runs WHERE outcome = 'ok' AND kind = 'incremental'")
            >= 1
    }));
    let took = delete_and_spam(&db, &fake);
    // One interval (1 s), plus a run's own time on a loaded machine.
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Found by the incremental runs (no full run is due for an hour), from
    // the newest-first removal listings, without updated_since.
    assert_eq!(
        db.count("SELECT count(*) FROM sync_runs WHERE kind = 'full'"),
        0
    );
    let removals: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("filter="))
        .collect();
    assert!(
        removals
            .iter()
            .all(|r| r.query.contains("order_type=desc") && !r.query.contains("updated_since")),
        "{removals:?}"
    );
    assert_eq!(db.ticket(7).unwrap()["status"].as_deref(), Some("open"));
    let health = codex.get("/webhooks/health").json();
    assert_eq!(health["polling_interval_seconds"], 1, "{health}");
}

fn deletions_and_spam_arrive_within_one_interval_when_webhooks_carry_none(backend: Backend) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 10, 2);
    let codex = Codex::start(
        &db,
        // The poll finds 5 and 6 before any webhook: coverage stays above
        // this minimum, so only the deletions decide the cadence.
        &polling_config(
            &fake,
            "ticket_sync_interval_with_webhooks = 1h\nmin_webhook_coverage = 0.5\n",
        ),
    );
    let health = || codex.get("/webhooks/health").json();
    // Healthy webhooks: every change arrives by webhook as well.
    for id in 20..=22 {
        let updated = "2024-06-01T00:00:00Z";
        let mut body = seed_body("ticket.created", id, 2, updated);
        body["subject"] = json!(format!("Ticket {id}"));
        assert_eq!(codex.deliver_json(&body).status, 201);
        fake.with(|s| s.tickets.insert(id, ticket(id, 2, updated)));
    }
    // ...but none is a ticket.deleted: deletions are polled for at the
    // short interval.
    assert!(wait_until(Duration::from_secs(20), || {
        let h = health();
        h["last_sync_outcome"] == "ok"
            && h["polling_interval_seconds"] == 1
            && h["polling"]["interval_reason"]
                .as_str()
                .is_some_and(|r| r.contains("no ticket.deleted delivery"))
    }));
    let took = delete_and_spam(&db, &fake);
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM sync_runs WHERE kind = 'full'"),
        0
    );
    // The changes come by webhook: the changes listing stays hourly, and a
    // run costs only the deleted and spam listings.
    let last = db.rows(
        "SELECT api_calls FROM sync_runs WHERE kind = 'incremental' AND outcome = 'ok' \
         ORDER BY id DESC LIMIT 2",
    );
    assert!(
        last.iter().all(|r| r[0].as_deref() == Some("2")),
        "{last:?}"
    );
    // Once a deletion arrives by webhook, the hourly cadence applies.
    let body = seed_body("ticket.deleted", 7, 2, "2024-06-02T00:00:00Z");
    assert!(codex.deliver_json(&body).status < 300);
    assert!(
        wait_until(
            Duration::from_secs(20),
            || health()["polling_interval_seconds"] == 3600
        ),
        "{}",
        health()
    );
}

/// Ticket 7 vanished from the active listing; its lookup fails in `fault`.
fn a_vanished_ticket_whose_lookup_fails(backend: Backend, fault: impl FnOnce(&FakeFreshservice)) {
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 10, 2);
    assert!(sync_once(&db, &fake, "").0);
    fake.with(|s| s.tickets.remove(&7));
    fault(&fake);
    let _codex = Codex::start(
        &db,
        &format!(
            "{}[freshservice]\nrequest_timeout = 1s\n[scheduler]\nsync_tickets_enabled = true\n\
             ticket_sync_interval = 1s\nreconcile_interval = 1s\n",
            fake.config()
        ),
    );
    // Two full runs looked it up and got no answer: it keeps its state.
    assert!(wait_until(Duration::from_secs(60), || {
        fake.requests()
            .iter()
            .filter(|r| r.path == "/api/v2/tickets/7")
            .count()
            >= 8
            && db.count("SELECT count(*) FROM sync_runs WHERE kind = 'full' AND outcome = 'ok'")
                >= 3
    }));
    assert_eq!(db.ticket(7).unwrap()["status"].as_deref(), Some("open"));
    assert_eq!(db.ticket(8).unwrap()["status"].as_deref(), Some("open"));
}

fn a_lookup_answered_500_keeps_the_ticket_as_it_is(backend: Backend) {
    a_vanished_ticket_whose_lookup_fails(backend, |fake| {
        fake.with(|s| s.fail.push(("/api/v2/tickets/7?".to_string(), u32::MAX)))
    });
}

fn a_lookup_that_times_out_keeps_the_ticket_as_it_is(backend: Backend) {
    a_vanished_ticket_whose_lookup_fails(backend, |fake| {
        fake.with(|s| {
            s.slow = Some((
                "/api/v2/tickets/7?".to_string(),
                Duration::from_secs(2),
                u32::MAX,
            ))
        })
    });
}

/// Whether an account refused `workspace_id` is learned once and kept
/// from run to run by that account's client; a reload to another account
/// starts afresh.
fn the_workspace_fallback_is_the_accounts_and_a_reload_forgets_it(backend: Backend) {
    let db = TestDb::new(&backend);
    let without = FakeFreshservice::start();
    without.with(|s| {
        s.no_workspaces = true;
        s.tickets.insert(1, ticket(1, 2, "2024-08-01T00:00:00Z"));
    });
    let polling = "[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 500ms\n";
    let codex = Codex::start(&db, &format!("{}{polling}", without.config()));
    assert!(wait_until(Duration::from_secs(20), || {
        db.count("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'") >= 3
    }));
    let refused = without
        .requests()
        .iter()
        .filter(|r| r.status == 400)
        .count();
    assert_eq!(refused, 1, "{:?}", without.requests());
    assert_eq!(codex.logs().matches("refuses workspace_id").count(), 1);

    // Another account, with workspaces: its listings ask for all of them.
    let with = FakeFreshservice::start();
    with.with(|s| {
        let mut t = ticket(50, 2, "2024-09-01T00:00:00Z");
        t["workspace_id"] = json!(2);
        s.tickets.insert(50, t);
    });
    std::fs::write(
        &codex.config_path,
        base_config(&db, &format!("{}{polling}", with.config())),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &codex.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        wait_until(Duration::from_secs(20), || db.ticket(50).is_some()),
        "{}",
        codex.logs()
    );
    let listings: Vec<_> = with
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/tickets")
        .collect();
    assert!(
        !listings.is_empty() && listings.iter().all(|r| r.query.contains("workspace_id=0")),
        "{listings:?}"
    );
}
