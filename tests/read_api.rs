//! The predecessor's ticket read API over real sockets, on both backends,
//! on a database made by the predecessor's exact DDL: its field names one
//! by one, the filters and keyset paging Codex adds, static tokens, and the
//! suite's RS256 JWTs checked against keys a local server publishes.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, Codex, TestDb};
use serde_json::{Value, json};

/// An `[api] tokens` entry for the tests.
const TOKEN: &str = "Api7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0GaT";

for_each_backend!(
    every_endpoint_needs_a_token,
    tickets_carry_the_predecessors_fields,
    tickets_filter_and_page_by_cursor_without_gaps,
    one_ticket_by_the_psas_id_with_display_names,
    a_companys_tickets_and_an_unknown_company,
    suite_tokens_are_checked_against_cores_keys,
    a_database_without_companies_reads_the_same_fields,
);

/// The predecessor's tables and rows as its writers leave them: two
/// companies, five Freshservice tickets and one SuperOps ticket.
fn predecessor_db(backend: &Backend) -> TestDb {
    let db = common::predecessor_db(backend);
    db.execute(
        "INSERT INTO companies (account_number, psa_provider, compliance_level, external_id, \
         external_source, name) VALUES \
         ('ACME-1', 'freshservice', 'hipaa', 4004, 'freshservice', 'Acme'), \
         ('GLOBEX-2', 'freshservice', NULL, 6, 'freshservice', 'Globex')",
    );
    for n in 1..=5 {
        let company = if n % 2 == 1 { "ACME-1" } else { "GLOBEX-2" };
        let status = if n == 5 { "closed" } else { "open" };
        db.execute(&format!(
            "INSERT INTO ticket_details (external_id, external_source, company_account_number, \
             ticket_number, subject, description, description_text, status, priority, status_id, \
             priority_id, requester_email, requester_name, created_at, last_updated_at, \
             total_hours_spent, conversations, notes) VALUES \
             ({id}, 'freshservice', '{company}', '{id}', 'Subject {n}', '<p>Body {n}</p>', \
             'Body {n}', '{status}', 'medium', 2, 2, 'user{n}@example.com', 'User {n}', \
             '2024-01-0{n}T08:00:00Z', '202{y}-01-0{n}T09:00:00Z', {hours}, \
             '[{{\"body\": \"hello {n}\"}}]', NULL)",
            id = 100 + n,
            y = if n == 1 { 3 } else { 4 },
            hours = if n == 2 { "NULL" } else { "1.5" },
        ));
    }
    db.execute(
        "INSERT INTO ticket_details (external_id, external_source, company_account_number, \
         ticket_number, subject, status, priority, last_updated_at) VALUES \
         (101, 'superops', 'ACME-1', 'SO-101', 'From SuperOps', 'in_progress', 'high', \
         '2024-02-01T00:00:00Z')",
    );
    db
}

fn start(db: &TestDb, extra: &str) -> Codex {
    Codex::start(db, &format!("[api]\ntokens = {TOKEN}\n{extra}"))
}

fn get(codex: &Codex, path: &str, token: Option<&str>) -> common::Response {
    let header = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("Authorization", h)])
        .unwrap_or_default();
    codex.request("GET", path, &headers, b"")
}

fn ok(codex: &Codex, path: &str) -> Value {
    let response = get(codex, path, Some(TOKEN));
    assert_eq!(response.status, 200, "{path}: {:?}", response.json());
    response.json()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn every_endpoint_needs_a_token(backend: Backend) {
    let db = predecessor_db(&backend);
    let codex = start(&db, "");
    for path in [
        "/api/tickets",
        "/api/ticket/101",
        "/api/companies/ACME-1/tickets",
    ] {
        let missing = get(&codex, path, None);
        assert_eq!(missing.status, 401, "{path}");
        assert_eq!(
            missing.header("WWW-Authenticate"),
            Some("Bearer realm=\"codex\"")
        );
        assert!(missing.json()["error"].as_str().unwrap().contains("Bearer"));
        let wrong = get(&codex, path, Some("Api7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0GaX"));
        assert_eq!(wrong.status, 401, "{path}");
        assert!(!String::from_utf8_lossy(&wrong.body).contains(TOKEN));
        assert_eq!(get(&codex, path, Some(TOKEN)).status, 200, "{path}");
    }
    let basic = codex.request(
        "GET",
        "/api/tickets",
        &[("Authorization", &format!("Basic {TOKEN}"))],
        b"",
    );
    assert_eq!(basic.status, 401);
    assert!(!codex.logs().contains(TOKEN), "a token reached the log");

    // Neither tokens nor core_url: the API is off and says how to turn it on.
    let plain = Codex::start(&db, "");
    let off = get(&plain, "/api/tickets", Some(TOKEN));
    assert_eq!(off.status, 404);
    assert!(
        off.json()["detail"]
            .as_str()
            .unwrap()
            .contains("[api] tokens")
    );
}

fn tickets_carry_the_predecessors_fields(backend: Backend) {
    let db = predecessor_db(&backend);
    let codex = start(&db, "");
    // A ticket that arrives by webhook is listed like an inherited one; its
    // department makes it Acme's (the predecessor's companies table).
    let created = codex.deliver_json(&common::seed_body(
        "ticket.created",
        200,
        2,
        "2024-03-01T00:00:00Z",
    ));
    assert_eq!(created.status, 201, "{:?}", created.json());

    let page = ok(&codex, "/api/tickets");
    assert_eq!(
        keys(&page),
        names(&[
            "tickets",
            "count",
            "total",
            "offset",
            "limit",
            "next_cursor"
        ])
    );
    assert_eq!(page["total"], 7);
    assert_eq!(page["count"], 7);
    assert_eq!(
        (page["offset"].clone(), page["limit"].clone()),
        (json!(0), json!(50))
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let tickets = page["tickets"].as_array().unwrap();
    let expected = names(&[
        "id",
        "ticket_number",
        "subject",
        "description_text",
        "status",
        "priority",
        "company_id",
        "company_compliance_level",
        "requester_email",
        "requester_name",
        "created_at",
        "last_updated_at",
        "closed_at",
        "total_hours_spent",
    ]);
    for ticket in tickets {
        assert_eq!(keys(ticket), expected, "{ticket}");
    }
    // Newest first: the webhook's ticket, then SuperOps', then 105 down.
    let numbers: Vec<&str> = tickets
        .iter()
        .map(|t| t["ticket_number"].as_str().unwrap())
        .collect();
    assert_eq!(
        numbers,
        ["200", "SO-101", "105", "104", "103", "102", "101"]
    );
    let webhook = &tickets[0];
    assert_eq!(webhook["subject"], "Ticket 200");
    assert_eq!(webhook["company_id"], "ACME-1");
    assert_eq!(webhook["company_compliance_level"], "hipaa");
    assert_eq!(webhook["last_updated_at"], "2024-03-01T00:00:00Z");
    // `id` is the row id, not the PSA's.
    let row_id = db
        .value("SELECT CAST(id AS TEXT) FROM ticket_details WHERE external_id = 104")
        .unwrap();
    let t104 = &tickets[3];
    assert_eq!(t104["id"].to_string(), row_id);
    assert_eq!(t104["company_id"], "GLOBEX-2");
    // A company without a compliance level reads as the predecessor's default.
    assert_eq!(t104["company_compliance_level"], "standard");
    assert_eq!(t104["description_text"], "Body 4");
    assert_eq!(t104["requester_email"], "user4@example.com");
    assert_eq!(t104["closed_at"], Value::Null);
    assert_eq!(t104["total_hours_spent"], 1.5);
    // NULL hours are 0, as the predecessor answers.
    assert_eq!(tickets[5]["total_hours_spent"], 0.0);
}

fn tickets_filter_and_page_by_cursor_without_gaps(backend: Backend) {
    let db = predecessor_db(&backend);
    let codex = start(&db, "");
    let numbers = |page: &Value| -> Vec<String> {
        page["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["ticket_number"].as_str().unwrap().to_string())
            .collect()
    };
    let acme = ok(&codex, "/api/tickets?company_id=ACME-1");
    assert_eq!(numbers(&acme), ["SO-101", "105", "103", "101"]);
    assert_eq!(acme["total"], 4);
    let closed = ok(&codex, "/api/tickets?status=closed");
    assert_eq!(numbers(&closed), ["105"]);
    let high = ok(&codex, "/api/tickets?priority=high&source=superops");
    assert_eq!(numbers(&high), ["SO-101"]);
    let since = ok(
        &codex,
        "/api/tickets?source=freshservice&updated_since=2024-01-03T09:00:00%2B00:00",
    );
    assert_eq!(numbers(&since), ["105", "104", "103"]);
    // The predecessor's offset paging.
    let second = ok(&codex, "/api/tickets?limit=2&offset=2");
    assert_eq!(numbers(&second), ["104", "103"]);
    assert_eq!(
        (second["count"].clone(), second["total"].clone()),
        (json!(2), json!(6))
    );

    // Keyset paging: every ticket once, in order, even when one is
    // inserted ahead of the cursor between pages.
    let mut seen = Vec::new();
    let mut path = "/api/tickets?limit=2".to_string();
    loop {
        let page = ok(&codex, &path);
        seen.extend(numbers(&page));
        if seen.len() == 2 {
            let late = codex.deliver_json(&common::seed_body(
                "ticket.created",
                300,
                2,
                "2025-01-01T00:00:00Z",
            ));
            assert_eq!(late.status, 201);
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/tickets?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["SO-101", "105", "104", "103", "102", "101"]);

    for (path, words) in [
        ("/api/tickets?limit=0", "limit must be"),
        ("/api/tickets?limit=5000", "limit must be"),
        ("/api/tickets?offset=-1", "offset must be"),
        ("/api/tickets?cursor=garbage!", "cursor"),
        ("/api/tickets?source=zendesk", "source 'zendesk'"),
        ("/api/tickets?updated_since=yesterday", "updated_since"),
    ] {
        let response = get(&codex, path, Some(TOKEN));
        assert_eq!(response.status, 400, "{path}");
        let error = response.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(words), "{path}: {error}");
    }
    let both = get(
        &codex,
        &format!(
            "/api/tickets?offset=1&cursor={}",
            URL_SAFE_NO_PAD.encode("1|x")
        ),
        Some(TOKEN),
    );
    assert_eq!(both.status, 400);
}

fn one_ticket_by_the_psas_id_with_display_names(backend: Backend) {
    let db = predecessor_db(&backend);
    let codex = start(&db, "");
    let ticket = ok(&codex, "/api/ticket/103?source=freshservice");
    assert_eq!(
        keys(&ticket),
        names(&[
            "id",
            "ticket_number",
            "subject",
            "description",
            "description_text",
            "status",
            "status_text",
            "priority",
            "priority_text",
            "company_id",
            "company_name",
            "company_compliance_level",
            "requester_email",
            "requester_name",
            "created_at",
            "last_updated_at",
            "closed_at",
            "total_hours_spent",
            "conversations",
            "notes",
            "source",
        ])
    );
    assert_eq!(ticket["id"], 103);
    assert_eq!(ticket["description"], "<p>Body 3</p>");
    assert_eq!(ticket["status_text"], "Open");
    assert_eq!(ticket["priority_text"], "Medium");
    assert_eq!(ticket["company_name"], "Acme");
    assert_eq!(ticket["conversations"], json!([{"body": "hello 3"}]));
    assert_eq!(ticket["notes"], json!([]));
    assert_eq!(ticket["source"], "freshservice");

    // The same PSA id in two sources: `source` picks, else the newest.
    assert_eq!(ok(&codex, "/api/ticket/101")["source"], "superops");
    let superops = ok(&codex, "/api/ticket/101?source=superops");
    assert_eq!(superops["status_text"], "In Progress");
    assert_eq!(
        ok(&codex, "/api/ticket/101?source=freshservice")["subject"],
        "Subject 1"
    );

    // Not held locally: 404, and no PSA is asked (none is configured).
    for path in ["/api/ticket/999", "/api/ticket/-1", "/api/ticket/abc"] {
        let missing = get(&codex, path, Some(TOKEN));
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(missing.json()["error"], "Ticket not found");
    }
}

fn a_companys_tickets_and_an_unknown_company(backend: Backend) {
    let db = predecessor_db(&backend);
    let codex = start(&db, "");
    let tickets = ok(&codex, "/api/companies/ACME-1/tickets");
    let list = tickets.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(
        keys(&list[0]),
        names(&[
            "ticket_id",
            "ticket_number",
            "subject",
            "description",
            "description_text",
            "status",
            "priority",
            "requester_email",
            "requester_name",
            "created_at",
            "last_updated_at",
            "closed_at",
            "total_hours_spent",
            "conversations",
            "notes",
        ])
    );
    let in_2023 = ok(&codex, "/api/companies/ACME-1/tickets?year=2023");
    let in_2023 = in_2023.as_array().unwrap();
    assert_eq!(in_2023.len(), 1);
    assert_eq!(in_2023[0]["ticket_number"], "101");
    assert_eq!(in_2023[0]["conversations"], json!([{"body": "hello 1"}]));
    // A company with no tickets is an empty list; one not known is 404.
    db.execute("INSERT INTO companies (account_number, name) VALUES ('EMPTY-9', 'Empty')");
    assert_eq!(ok(&codex, "/api/companies/EMPTY-9/tickets"), json!([]));
    let unknown = get(&codex, "/api/companies/NOPE/tickets", Some(TOKEN));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "Company not found");
    let bad_year = get(&codex, "/api/companies/ACME-1/tickets?year=24", Some(TOKEN));
    assert_eq!(bad_year.status, 400);
}

/// A local Core: serves one RSA public key as a JWK set and counts the
/// fetches.
struct FakeCore {
    url: String,
    fetches: Arc<AtomicUsize>,
    private_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl FakeCore {
    fn start() -> FakeCore {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let status = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success());
        let modulus = std::process::Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&key)
            .output()
            .expect("openssl");
        let hex = String::from_utf8(modulus.stdout).unwrap();
        let hex = hex.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let jwks = json!({"keys": [{
            "kty": "RSA", "kid": "core-1", "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(bytes), "e": "AQAB",
        }]})
        .to_string();
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let paths = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                paths.lock().unwrap().push(request.url().to_string());
                let response = if request.url() == "/.well-known/jwks.json" {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tiny_http::Response::from_string(jwks.clone())
                } else {
                    tiny_http::Response::from_string("not found").with_status_code(404)
                };
                let _ = request.respond(response);
            }
        });
        FakeCore {
            url,
            fetches,
            private_pem: std::fs::read(&key).unwrap(),
            _dir: dir,
        }
    }

    fn token(&self, kid: &str, claims: Value) -> String {
        let header = jsonwebtoken::Header {
            kid: Some(kid.to_string()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256)
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&self.private_pem).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn suite_tokens_are_checked_against_cores_keys(backend: Backend) {
    let db = predecessor_db(&backend);
    let core = FakeCore::start();
    let codex = Codex::start(&db, &format!("[api]\ncore_url = {}/\n", core.url));
    let exp = now() + 600;
    let user = core.token(
        "core-1",
        json!({"iss": "hivematrix-core", "sub": "alice", "exp": exp}),
    );
    let service = core.token(
        "core-1",
        json!({"iss": "hivematrix-core", "type": "service", "calling_service": "ledger", "exp": exp}),
    );
    for token in [&user, &service] {
        let page = get(&codex, "/api/tickets?limit=1", Some(token));
        assert_eq!(page.status, 200, "{:?}", page.json());
    }
    assert_eq!(core.fetches.load(Ordering::SeqCst), 1, "keys are cached");

    let refused = [
        core.token(
            "core-1",
            json!({"iss": "hivematrix-core", "exp": now() - 600}),
        ),
        core.token("core-1", json!({"iss": "someone-else", "exp": exp})),
        core.token("core-1", json!({"iss": "hivematrix-core"})),
        // Signed by the right key, then changed.
        {
            let mut parts: Vec<String> = user.split('.').map(str::to_string).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(
                json!({"iss": "hivematrix-core", "sub": "mallory", "exp": exp}).to_string(),
            );
            parts.join(".")
        },
        "not-a-jwt".to_string(),
    ];
    for token in &refused {
        let response = get(&codex, "/api/tickets", Some(token));
        assert_eq!(response.status, 401, "{token}: {:?}", response.json());
    }
    // A static token is not accepted when only Core is configured.
    assert_eq!(get(&codex, "/api/tickets", Some(TOKEN)).status, 401);

    // Unknown keys within a minute of the last fetch: no fetch, however many
    // come (the refetch itself is unit-tested in src/http/jwt.rs).
    let fetches = core.fetches.load(Ordering::SeqCst);
    for n in 0..5 {
        let stranger = core.token(
            &format!("rotated-{n}"),
            json!({"iss": "hivematrix-core", "exp": exp}),
        );
        assert_eq!(get(&codex, "/api/tickets", Some(&stranger)).status, 401);
    }
    assert_eq!(core.fetches.load(Ordering::SeqCst), fetches);
    // The known key still works meanwhile.
    assert_eq!(get(&codex, "/api/tickets", Some(&user)).status, 200);
}

fn a_database_without_companies_reads_the_same_fields(backend: Backend) {
    // A database Codex made: no `companies` table.
    let db = TestDb::new(&backend);
    let codex = start(&db, "");
    let created = codex.deliver_json(&common::seed_body(
        "ticket.created",
        7,
        2,
        "2024-03-01T00:00:00Z",
    ));
    assert_eq!(created.status, 201, "{:?}", created.json());
    let page = ok(&codex, "/api/tickets");
    let ticket = &page["tickets"][0];
    assert_eq!(ticket["ticket_number"], "7");
    assert_eq!(ticket["company_id"], Value::Null);
    assert_eq!(ticket["company_compliance_level"], "standard");
    let detail = ok(&codex, "/api/ticket/7");
    assert_eq!(detail["company_name"], Value::Null);
    assert_eq!(detail["conversations"], json!([]));
    // Without the table, a company is known by its tickets.
    db.execute("UPDATE ticket_details SET company_account_number = 'ACME-1'");
    assert_eq!(
        ok(&codex, "/api/companies/ACME-1/tickets")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(&codex, "/api/companies/NOPE/tickets", Some(TOKEN)).status,
        404
    );
}
