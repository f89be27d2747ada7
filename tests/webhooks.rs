//! The webhook receiver, end to end: every endpoint, check and error, over
//! real HTTP against the real binary and a real database.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Backend, Codex, SECRET, TestDb, seed_body, wait_until};
use serde_json::json;

for_each_backend!(
    health_reports_configuration_but_no_secret,
    test_endpoint_checks_the_secret,
    disabled_webhooks_answer_503,
    rate_limit_counts_every_request,
    allowlist_believes_forwarded_for_only_from_trusted_proxies,
    ticket_lifecycle_created_updated_unchanged_stale_deleted,
    null_clears_absent_leaves_alone_and_reopen_clears_closed_at,
    lenient_freshservice_bodies_are_accepted,
    bad_requests_get_actionable_errors_and_are_journaled,
    oversized_and_forged_bodies_do_not_take_the_service_down,
    base_path_routes_answer_with_and_without_prefix,
    concurrent_first_deliveries_never_fail,
    secrets_stay_out_of_logs_and_journal,
    rotation_accepts_every_configured_secret,
    journal_is_pruned_after_retention,
);

/// Connections that go quiet are closed after `[server] read_timeout`, and
/// a listener with no new connection for longer than that still accepts.
#[test]
fn quiet_connections_are_closed_and_an_idle_listener_keeps_accepting() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "[server]\nread_timeout = 1s\nbody_timeout = 1s\n");
    // time is what is tested here: idleness, no connection for three
    // read timeouts.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(codex.get("/webhooks/health").status, 200);
    assert!(
        !codex.logs().contains("listener failed"),
        "{}",
        codex.logs()
    );

    // A client that connects and says nothing is disconnected.
    let mut silent = TcpStream::connect(codex.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 16];
    assert_eq!(silent.read(&mut buffer).unwrap_or(0), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // One that announces a body and never sends it gets a 408 once
    // body_timeout has passed, and no worker is held meanwhile (the server
    // keeps answering).
    let mut stalled = TcpStream::connect(codex.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stalled,
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Length: 5000\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    for _ in 0..20 {
        assert_eq!(codex.get("/webhooks/health").status, 200);
    }
}

/// tiny_http queues connections that arrive in a burst behind keep-alive
/// ones; Codex notices and has busy clients reconnect, so every client is
/// served, not just the first few.
#[test]
fn a_burst_of_keep_alive_clients_is_served() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "");
    let clients = 48;
    let served = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(clients));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (served, barrier, addr) = (served.clone(), barrier.clone(), codex.addr);
            std::thread::spawn(move || {
                barrier.wait();
                let mut counted = false;
                // Keep asking on one connection until every client has had an
                // answer (or the deadline), reconnecting when asked to.
                while served.load(Ordering::SeqCst) < clients
                    && std::time::Instant::now() < deadline
                {
                    let Ok(stream) = TcpStream::connect(addr) else {
                        continue;
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(20)))
                        .unwrap();
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    loop {
                        if writer
                            .write_all(b"GET /webhooks/health HTTP/1.1\r\nHost: x\r\n\r\n")
                            .is_err()
                        {
                            break;
                        }
                        let (mut length, mut close, mut line) = (0usize, false, String::new());
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return counted;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(value) = lower.strip_prefix("content-length:") {
                                length = value.trim().parse().unwrap();
                            }
                            close |= lower.starts_with("connection: close");
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        if !counted {
                            counted = true;
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        if close
                            || served.load(Ordering::SeqCst) >= clients
                            || std::time::Instant::now() > deadline
                        {
                            break;
                        }
                    }
                }
                counted
            })
        })
        .collect();
    let started = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || served.load(Ordering::SeqCst)
            == clients),
        "only {} of {clients} keep-alive clients were answered within 10 s",
        served.load(Ordering::SeqCst)
    );
    let all_served_after = started.elapsed();
    let answered = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|c| *c)
        .count();
    assert_eq!(answered, clients);
    eprintln!("all {clients} clients answered within {all_served_after:?}");
}

fn health_reports_configuration_but_no_secret(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "[webhooks]\nallowed_ips = 127.0.0.1\n");
    let response = codex.get("/webhooks/health");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["webhooks_enabled"], true);
    assert_eq!(body["secret_configured"], true);
    assert_eq!(body["ip_allowlist_enabled"], true);
    assert_eq!(body["database"], "ok");
    assert_eq!(
        body["supported_providers"],
        json!(["freshservice", "superops"])
    );
    assert_eq!(
        body["endpoints"]["freshservice"],
        "/webhooks/freshservice/ticket"
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(!String::from_utf8_lossy(&response.body).contains(SECRET));
    assert_eq!(
        codex.request("POST", "/webhooks/health", &[], b"").status,
        405
    );
}

fn test_endpoint_checks_the_secret(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let post = |headers: &[(&str, &str)]| codex.test_auth(headers);

    let missing = post(&[]);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"], "Unauthorized");
    assert!(
        missing.json()["detail"]
            .as_str()
            .unwrap()
            .contains("missing")
    );

    let bearer = post(&[("Authorization", &format!("Bearer {SECRET}"))]);
    assert_eq!(bearer.status, 401);
    assert!(
        bearer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("X-Webhook-Secret")
    );

    assert_eq!(post(&[("X-Webhook-Secret", "wrong")]).status, 401);
    assert_eq!(
        post(&[("X-Webhook-Secret", &SECRET[..SECRET.len() - 1])]).status,
        401
    );

    let ok = post(&[
        ("X-Webhook-Secret", SECRET),
        ("Content-Type", "application/json"),
    ]);
    assert_eq!(ok.status, 200);
    let body = ok.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["message"], "Webhook authentication successful");
    assert_eq!(body["source_ip"], "127.0.0.1");
    assert!(body["timestamp"].is_string());

    let get = codex.get("/webhooks/test");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("Allow"), Some("POST"));
}

fn disabled_webhooks_answer_503(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "[webhooks]\nenabled = false\n");
    for path in ["/webhooks/test", "/webhooks/freshservice/ticket"] {
        let response = codex.request("POST", path, &[("X-Webhook-Secret", SECRET)], b"{}");
        assert_eq!(response.status, 503, "{path}");
        assert_eq!(response.json()["error"], "Webhooks are disabled");
    }
    assert_eq!(
        codex.get("/webhooks/health").json()["webhooks_enabled"],
        false
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook_events"), 0);
}

fn rate_limit_counts_every_request(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "[webhooks]\nrate_limit_per_minute = 3\n");
    for _ in 0..3 {
        let guess = codex.test_auth(&[("X-Webhook-Secret", "guess")]);
        assert_eq!(guess.status, 401);
    }
    // The limit was spent on wrong guesses: even the right secret waits now.
    let limited = codex.test_auth(&[("X-Webhook-Secret", SECRET)]);
    assert_eq!(limited.status, 429);
    let wait: u64 = limited
        .header("Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(limited.json()["error"].is_string());
    // Health is for monitors and is not limited.
    assert_eq!(codex.get("/webhooks/health").status, 200);
}

fn allowlist_believes_forwarded_for_only_from_trusted_proxies(backend: Backend) {
    let db = TestDb::new(&backend);
    let untrusted = Codex::start(
        &db,
        "[webhooks]\nallowed_ips = 10.1.0.0/16, 2001:db8::/32\n",
    );
    let auth = ("X-Webhook-Secret", SECRET);
    let plain = untrusted.test_auth(&[auth]);
    assert_eq!(plain.status, 403);
    assert_eq!(plain.json()["error"], "IP not allowed");
    // A forged header from a peer that is not a trusted proxy changes nothing.
    let forged = untrusted.test_auth(&[auth, ("X-Forwarded-For", "10.1.2.3")]);
    assert_eq!(forged.status, 403);
    drop(untrusted);

    let proxied = Codex::start(
        &db,
        "[server]\ntrusted_proxies = 127.0.0.1\n[webhooks]\nallowed_ips = 10.1.0.0/16, 2001:db8::/32\n",
    );
    let via_proxy = proxied.test_auth(&[auth, ("X-Forwarded-For", "10.1.2.3")]);
    assert_eq!(via_proxy.status, 200);
    assert_eq!(via_proxy.json()["source_ip"], "10.1.2.3");
    // The rightmost untrusted hop is the client; an allowed address written
    // further left by the client itself is ignored.
    let spoofed = proxied.test_auth(&[auth, ("X-Forwarded-For", "10.1.2.3, 198.51.100.7")]);
    assert_eq!(spoofed.status, 403);
    let v6 = proxied.test_auth(&[auth, ("X-Forwarded-For", "2001:db8::5")]);
    assert_eq!(v6.status, 200);
    assert_eq!(v6.json()["source_ip"], "2001:db8::5");
}

fn ticket_lifecycle_created_updated_unchanged_stale_deleted(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");

    let created = codex.deliver_json(&seed_body("ticket.created", 501, 2, "2024-01-15T10:00:00Z"));
    assert_eq!(created.status, 201);
    assert_eq!(
        created.json(),
        json!({"status": "created", "ticket_id": 501, "provider": "freshservice"})
    );

    let mut update = seed_body("ticket.updated", 501, 3, "2024-01-15T11:00:00Z");
    update["priority_id"] = json!(3);
    update["subject"] = json!("Printer on fire");
    let updated = codex.deliver_json(&update);
    assert_eq!(updated.status, 200);
    let body = updated.json();
    assert_eq!(body["status"], "updated");
    let changes: Vec<&str> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(changes.contains(&"status: open -> pending"), "{changes:?}");
    assert!(changes.contains(&"priority: medium -> high"), "{changes:?}");
    assert!(changes.contains(&"subject updated"), "{changes:?}");

    let duplicate = codex.deliver_json(&update);
    assert_eq!(duplicate.status, 200);
    assert_eq!(duplicate.json()["status"], "unchanged");

    let late = codex.deliver_json(&seed_body("ticket.updated", 501, 5, "2024-01-15T10:30:00Z"));
    assert_eq!(late.status, 200);
    assert_eq!(late.json()["status"], "stale");
    assert_eq!(late.json()["stored_updated_at"], "2024-01-15T11:00:00Z");

    let ticket = db.ticket(501).expect("stored");
    assert_eq!(ticket["status"].as_deref(), Some("pending"));
    assert_eq!(ticket["priority"].as_deref(), Some("high"));
    assert_eq!(ticket["subject"].as_deref(), Some("Printer on fire"));
    assert_eq!(
        ticket["last_updated_at"].as_deref(),
        Some("2024-01-15T11:00:00Z")
    );
    assert_eq!(ticket["closed_at"], None);
    assert_eq!(ticket["last_source"].as_deref(), Some("webhook"));
    assert!(ticket["webhook_updated_at"].is_some());

    let deleted = codex.deliver_json(&json!({
        "event": "ticket.deleted", "ticket_id": 501, "status_id": 7, "updated_at": "2024-01-15T12:00:00Z"
    }));
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["status"], "deleted");
    assert_eq!(deleted.json()["new_status"], "deleted");
    let ticket = db.ticket(501).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("deleted"));
    assert_eq!(ticket["closed_at"].as_deref(), Some("2024-01-15T12:00:00Z"));
    // Fields the delete did not carry are kept.
    assert_eq!(ticket["subject"].as_deref(), Some("Printer on fire"));

    // A delete of a ticket never seen is ignored and leaves no row, but is
    // remembered, so a create that arrives later (a retry) fills in the
    // details without bringing the ticket back.
    let unknown = codex.deliver_json(&json!({
        "event": "ticket.deleted", "ticket_id": 777, "updated_at": "2024-01-15T12:00:00Z"
    }));
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.json()["status"], "ignored");
    assert_eq!(unknown.json()["reason"], "ticket not found");
    assert!(db.ticket(777).is_none());
    let late_create =
        codex.deliver_json(&seed_body("ticket.created", 777, 2, "2024-01-15T09:00:00Z"));
    assert_eq!(late_create.json()["status"], "updated");
    let ticket = db.ticket(777).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("deleted"));
    assert_eq!(ticket["subject"].as_deref(), Some("Ticket 777"));
    assert_eq!(
        ticket["last_updated_at"].as_deref(),
        Some("2024-01-15T12:00:00Z")
    );

    // Spam by status id, given as a string.
    let spam = codex.deliver_json(
        &json!({"ticket_id": 900, "status_id": "6", "updated_at": "2024-01-15T12:00:00Z"}),
    );
    assert_eq!(spam.status, 201);
    assert_eq!(db.ticket(900).unwrap()["status"].as_deref(), Some("spam"));

    let outcomes = db.rows("SELECT outcome FROM webhook_events ORDER BY id");
    let outcomes: Vec<&str> = outcomes.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(
        outcomes,
        [
            "created",
            "updated",
            "unchanged",
            "stale",
            "deleted",
            "ignored",
            "updated",
            "created"
        ]
    );
}

fn null_clears_absent_leaves_alone_and_reopen_clears_closed_at(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.created", 42, 2, "2024-02-01T08:00:00Z"))
            .status,
        201
    );

    // Unassigning: the agent is present and empty; the group is absent.
    let body = r#"{"event": "ticket.updated", "ticket_id": 42, "responder_id": , "department_id": null,
                   "updated_at": "2024-02-01T09:00:00Z"}"#;
    let response = codex.deliver(body);
    assert_eq!(response.status, 200, "{:?}", response.json());
    let changes = response.json()["changes"].clone();
    assert!(
        changes
            .as_array()
            .unwrap()
            .contains(&json!("responder_id: 2002 -> none")),
        "{changes}"
    );
    let ticket = db.ticket(42).unwrap();
    assert_eq!(ticket["responder_id"], None);
    assert_eq!(ticket["department_id"], None);
    assert_eq!(ticket["group_id"].as_deref(), Some("3003"));
    assert_eq!(ticket["subject"].as_deref(), Some("Ticket 42"));

    let closed = codex.deliver_json(
        &json!({"ticket_id": 42, "status_id": 5, "updated_at": "2024-02-01T10:00:00Z"}),
    );
    assert_eq!(closed.status, 200);
    assert_eq!(
        db.ticket(42).unwrap()["closed_at"].as_deref(),
        Some("2024-02-01T10:00:00Z")
    );
    // Moving between done statuses keeps the first closing time.
    codex.deliver_json(
        &json!({"ticket_id": 42, "status_id": 4, "updated_at": "2024-02-01T10:30:00Z"}),
    );
    assert_eq!(
        db.ticket(42).unwrap()["closed_at"].as_deref(),
        Some("2024-02-01T10:00:00Z")
    );
    // Reopening clears it.
    codex.deliver_json(
        &json!({"ticket_id": 42, "status_id": "Open", "updated_at": "2024-02-01T11:00:00Z"}),
    );
    let ticket = db.ticket(42).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("open"));
    assert_eq!(ticket["closed_at"], None);
}

fn lenient_freshservice_bodies_are_accepted(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(
        &db,
        "[freshservice.statuses]\n11 = awaiting_parts, Awaiting Parts\n",
    );
    // Exactly what the seed's template renders for a ticket with no agent
    // and no group, with display names where ids were expected.
    let body = r#"{
        "event": "ticket.created",
        "ticket_id": INC-1234,
        "subject": "VPN "down" again",
        "status_id": Waiting on Customer,
        "priority_id": "High",
        "requester_email": "pat@example.com",
        "requester_name": "Pat",
        "requester_id": 77,
        "responder_id": ,
        "group_id": ,
        "department_id": }"#;
    let response = codex.deliver(body);
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let ticket = db.ticket(1234).expect("stored under the numeric id");
    assert_eq!(ticket["subject"].as_deref(), Some("VPN \"down\" again"));
    assert_eq!(ticket["status"].as_deref(), Some("waiting_customer"));
    assert_eq!(ticket["status_id"].as_deref(), Some("9"));
    assert_eq!(ticket["priority"].as_deref(), Some("high"));
    assert_eq!(ticket["responder_id"], None);

    for (updated_at, stored) in [
        ("Mon, 15 Jan 2024 10:30:00 +0000", "2024-01-15T10:30:00Z"),
        ("2024-01-15 12:31:00 +02:00", "2024-01-15T10:31:00Z"),
        ("2024-01-15 10:32:00", "2024-01-15T10:32:00Z"),
    ] {
        let body = json!({"ticket_id": "#SR-1234", "status_id": "Awaiting Parts", "updated_at": updated_at});
        let response = codex.deliver_json(&body);
        assert_eq!(response.status, 200, "{updated_at}: {:?}", response.json());
        assert_eq!(
            db.ticket(1234).unwrap()["last_updated_at"].as_deref(),
            Some(stored)
        );
    }
    assert_eq!(
        db.ticket(1234).unwrap()["status"].as_deref(),
        Some("awaiting_parts")
    );

    // An id missing from the status table is stored raw as unknown.
    let response = codex.deliver_json(
        &json!({"event": "ticket.updated", "ticket_id": 1234, "status_id": 99, "updated_at": "2024-01-16T00:00:00Z"}),
    );
    assert_eq!(response.status, 200);
    assert!(
        response.json()["warnings"][0]
            .as_str()
            .unwrap()
            .contains("99")
    );
    let ticket = db.ticket(1234).unwrap();
    assert_eq!(ticket["status"].as_deref(), Some("unknown"));
    assert_eq!(ticket["status_id"].as_deref(), Some("99"));
}

fn bad_requests_get_actionable_errors_and_are_journaled(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "[server]\nmax_body_bytes = 2048\n");
    let auth = ("X-Webhook-Secret", SECRET);
    let json_type = ("Content-Type", "application/json");

    let broken = codex.deliver("{\n  \"ticket_id\" 5\n}");
    assert_eq!(broken.status, 400);
    let body = broken.json();
    assert!(body["error"].as_str().unwrap().contains("line 2"), "{body}");
    assert_eq!(body["line"], 2);
    // Found by scanning, so the answer and the journal name the ticket.
    assert_eq!(body["ticket_id"], 5);

    let no_id = codex.deliver(r#"{"event": "ticket.updated", "subject": "x"}"#);
    assert_eq!(no_id.status, 400);
    assert_eq!(no_id.json()["error"], "ticket_id is required");

    let bad_id = codex.deliver(r#"{"event": "ticket.updated", "ticket_id": "abc"}"#);
    assert_eq!(bad_id.status, 400);
    assert!(
        bad_id.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("ticket_id")
    );

    let form = codex.request(
        "POST",
        "/webhooks/freshservice/ticket",
        &[auth, ("Content-Type", "application/x-www-form-urlencoded")],
        b"ticket_id=5",
    );
    assert_eq!(form.status, 415);
    assert!(
        form.json()["error"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );

    let big = vec![b' '; 4096];
    let too_large = codex.request(
        "POST",
        "/webhooks/freshservice/ticket",
        &[auth, json_type],
        &big,
    );
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json()["max_body_bytes"], 2048);

    let unknown = codex.request(
        "POST",
        "/webhooks/autotask/ticket",
        &[auth, json_type],
        b"{}",
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json()["supported_providers"],
        json!(["freshservice", "superops"])
    );
    let nowhere = codex.get("/nowhere");
    assert_eq!(nowhere.status, 404);
    assert!(
        nowhere.json()["error"]
            .as_str()
            .unwrap()
            .contains("/nowhere")
    );
    let wrong_method = codex.get("/webhooks/freshservice/ticket");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("Allow"), Some("POST"));

    // The service is unharmed and the unreadable deliveries were kept.
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.created", 5, 2, "2024-01-01T00:00:00Z"))
            .status,
        201
    );
    let journal = db.rows(&format!(
        "SELECT outcome, error, {} FROM webhook_events ORDER BY id",
        db.body_text()
    ));
    assert_eq!(journal.len(), 4, "{journal:?}");
    assert_eq!(journal[0][0].as_deref(), Some("rejected"));
    assert!(journal[0][1].as_deref().unwrap().contains("line 2"));
    assert_eq!(
        db.value("SELECT CAST(ticket_id AS TEXT) FROM webhook_events ORDER BY id LIMIT 1")
            .as_deref(),
        Some("5")
    );
    assert!(
        journal[0][2]
            .as_deref()
            .unwrap()
            .contains("\"ticket_id\" 5"),
        "{journal:?}"
    );
    assert_eq!(journal[1][1].as_deref(), Some("ticket_id is required"));
    assert_eq!(journal[3][0].as_deref(), Some("created"));
}

fn oversized_and_forged_bodies_do_not_take_the_service_down(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    // A forged Content-Length of 100 TB: answered, never drained or buffered.
    for path in ["/webhooks/freshservice/ticket", "/nowhere"] {
        let mut stream = TcpStream::connect(codex.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Type: application/json\r\nContent-Length: 100000000000000\r\n\r\n{{"
        )
        .unwrap();
        // The answer, then the connection closes (the body is never read).
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).to_string();
        assert!(
            answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 404"),
            "{answer}"
        );
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    // A body that is slower than it claims: the request is answered once the
    // client gives up, and other requests are served meanwhile.
    let mut slow = TcpStream::connect(codex.addr).unwrap();
    write!(
        slow,
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Length: 5000\r\n\r\n{{\"ticket_id\""
    )
    .unwrap();
    assert_eq!(codex.get("/webhooks/health").status, 200);
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.created", 1, 2, "2024-01-01T00:00:00Z"))
            .status,
        201
    );
    drop(slow);
    // Garbage that is not HTTP at all.
    let mut garbage = TcpStream::connect(codex.addr).unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x02\x00 not http\r\n\r\n")
        .unwrap();
    drop(garbage);
    assert!(wait_until(Duration::from_secs(5), || codex
        .get("/webhooks/health")
        .status
        == 200));
}

fn base_path_routes_answer_with_and_without_prefix(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "[server]\nbase_path = /codex/\n");
    assert_eq!(codex.get("/codex/webhooks/health").status, 200);
    assert_eq!(codex.get("/webhooks/health").status, 200);
    assert_eq!(
        codex.get("/codex/webhooks/health").json()["endpoints"]["freshservice"],
        "/codex/webhooks/freshservice/ticket"
    );
    let via_prefix = codex.request(
        "POST",
        "/codex/webhooks/freshservice/ticket?source=fs",
        &[
            ("X-Webhook-Secret", SECRET),
            ("Content-Type", "application/json"),
        ],
        seed_body("ticket.created", 8, 2, "2024-01-01T00:00:00Z")
            .to_string()
            .as_bytes(),
    );
    assert_eq!(via_prefix.status, 201);
    assert_eq!(codex.get("/codex/nowhere").status, 404);
}

fn concurrent_first_deliveries_never_fail(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Arc::new(Codex::start(&db, "[server]\nthreads = 64\n"));
    let senders = 200;
    let barrier = Arc::new(Barrier::new(senders));
    let handles: Vec<_> = (0..senders)
        .map(|n| {
            let codex = codex.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut body = seed_body("ticket.created", 31337, 2, "2024-03-01T00:00:00Z");
                // Half send the same content, half a distinct newer version.
                if n % 2 == 1 {
                    body["updated_at"] =
                        json!(format!("2024-03-01T00:{:02}:{:02}Z", n / 60, n % 60));
                }
                barrier.wait();
                codex.deliver_json(&body)
            })
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for response in &responses {
        assert!(
            matches!(response.status, 200 | 201),
            "{} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    let created = responses
        .iter()
        .filter(|r| r.json()["status"] == "created")
        .count();
    assert_eq!(created, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM ticket_details WHERE external_id = '31337'"),
        1
    );
    // The newest version wins whatever the arrival order.
    let newest = format!("2024-03-01T00:{:02}:{:02}Z", 199 / 60, 199 % 60);
    assert_eq!(
        db.ticket(31337).unwrap()["last_updated_at"].as_deref(),
        Some(newest.as_str())
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events"),
        senders as i64
    );
}

fn secrets_stay_out_of_logs_and_journal(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "[webhooks]\nlog_payloads = true\n");
    let marker = "payload-marker-5150";
    let mut body = seed_body("ticket.created", 5150, 2, "2024-01-01T00:00:00Z");
    body["subject"] = json!(marker);
    assert_eq!(codex.deliver_json(&body).status, 201);
    codex.test_auth(&[("X-Webhook-Secret", "wrong-guess")]);
    assert!(
        wait_until(Duration::from_secs(5), || codex.logs().contains(marker)),
        "payload not logged"
    );
    let logs = codex.logs();
    assert!(
        logs.contains("ticket=5150")
            && logs.contains("outcome=created")
            && logs.contains("ip=127.0.0.1")
    );
    assert!(!logs.contains(SECRET), "secret in log:\n{logs}");
    assert!(
        !logs.contains("wrong-guess"),
        "guessed secret in log:\n{logs}"
    );
    let journal = db.rows(&format!(
        "SELECT {}, client_ip, provider FROM webhook_events",
        db.body_text()
    ));
    assert!(
        journal
            .iter()
            .all(|row| !row.iter().flatten().any(|v| v.contains(SECRET)))
    );
}

fn rotation_accepts_every_configured_secret(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(
        &db,
        "[webhooks]\nsecret = Old1Tq8Lm3Vx7Rb2Nc5Hd9Jf4Pw6Zs0Ga , New2Wd4Qp8Yt1Mn6Bv3Cx9Zr5Ls7Kf0Ej\n",
    );
    for secret in [
        "Old1Tq8Lm3Vx7Rb2Nc5Hd9Jf4Pw6Zs0Ga",
        "New2Wd4Qp8Yt1Mn6Bv3Cx9Zr5Ls7Kf0Ej",
    ] {
        assert_eq!(codex.test_auth(&[("X-Webhook-Secret", secret)]).status, 200);
    }
    assert_eq!(
        codex
            .test_auth(&[(
                "X-Webhook-Secret",
                "Old1Tq8Lm3Vx7Rb2Nc5Hd9Jf4Pw6Zs0Ga , New2Wd4Qp8Yt1Mn6Bv3Cx9Zr5Ls7Kf0Ej"
            )])
            .status,
        401
    );
    drop(codex);
    // The environment overrides the file.
    let codex = Codex::start_with_env(
        &db,
        "",
        &[("CODEX_WEBHOOK_SECRET", "Env3Hs7Kd1Pq9Wm5Zt2Xc8Vb4Nj6Lr0Fy")],
    );
    assert_eq!(
        codex
            .test_auth(&[("X-Webhook-Secret", "Env3Hs7Kd1Pq9Wm5Zt2Xc8Vb4Nj6Lr0Fy")])
            .status,
        200
    );
    assert_eq!(codex.test_auth(&[("X-Webhook-Secret", SECRET)]).status, 401);
}

fn journal_is_pruned_after_retention(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "[webhooks]\njournal_retention_days = 7\n");
    assert_eq!(
        codex
            .deliver_json(&seed_body("ticket.created", 1, 2, "2024-01-01T00:00:00Z"))
            .status,
        201
    );
    drop(codex);
    let old = "INSERT INTO webhook_events (provider, received_at, client_ip, outcome, body) \
               VALUES ('freshservice', '2000-01-01T00:00:00Z', '192.0.2.1', 'created', ";
    let blob = if db.is_postgres() {
        "'\\x7b7d'::bytea)"
    } else {
        "X'7b7d')"
    };
    db.rows(&format!("{old}{blob}"));
    assert_eq!(db.count("SELECT count(*) FROM webhook_events"), 2);
    let _codex = Codex::start(&db, "[webhooks]\njournal_retention_days = 7\n");
    assert!(
        wait_until(Duration::from_secs(15), || db
            .count("SELECT count(*) FROM webhook_events")
            == 1),
        "old delivery not pruned"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_events WHERE received_at < '2001-01-01'"),
        0
    );
}
