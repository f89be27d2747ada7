//! Body signatures (`[webhooks] signature`), end to end over real sockets:
//! Standard Webhooks and X-Hub-Signature-256, each valid, tampered, signed
//! with the wrong secret, stale, replayed, rotated, and together with the
//! shared secret. The store is not what is tested here, so SQLite.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Backend, Codex, Response, SECRET, TestDb};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Standard Webhooks secrets as a sender shows them (`whsec_` + base64).
const SW_KEY: &[u8] = b"Tst7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga";
const SW_KEY_NEXT: &[u8] = b"Nxt4Rb8Nc3Hd6Jf1Pw5Zs0GaTst7Kq2Lm9";
/// X-Hub-Signature-256 secrets.
const HUB_SECRET: &str = "Hub5Zs0GaTst7Kq2Lm9Vx4Rb8Nc3Hd6Jf1";
const HUB_SECRET_NEXT: &str = "Hub6Jf1Pw5Zs0GaTst7Kq2Lm9Vx4Rb8Nc3";

const PATH: &str = "/webhooks/freshservice/ticket";

fn whsec(key: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(key))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn body(ticket: i64) -> String {
    format!(
        r#"{{"event": "ticket.created", "ticket_id": {ticket}, "subject": "Printer", "status_id": 2}}"#
    )
}

/// Codex with Standard Webhooks signatures and the shared secret.
fn standard_codex(db: &TestDb) -> Codex {
    let config = format!(
        "[webhooks]\nsignature = standard-webhooks\nsigning_secrets = {}\n",
        whsec(SW_KEY)
    );
    Codex::start(db, &config)
}

/// Posts `body` signed the Standard Webhooks way with `key`, as message
/// `id` at `timestamp`, with the shared secret when `secret` is set.
fn post_standard(
    codex: &Codex,
    key: &[u8],
    id: &str,
    timestamp: i64,
    signed: &str,
    sent: &str,
    secret: Option<&str>,
) -> Response {
    post_standard_to(codex, PATH, key, (id, timestamp), signed, sent, secret)
}

/// `post_standard` to `path`; `message` is the id and timestamp.
fn post_standard_to(
    codex: &Codex,
    path: &str,
    key: &[u8],
    (id, timestamp): (&str, i64),
    signed: &str,
    sent: &str,
    secret: Option<&str>,
) -> Response {
    let signature = STANDARD.encode(mac(
        key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            signed.as_bytes(),
        ],
    ));
    let timestamp = timestamp.to_string();
    let signature = format!("v1,{signature}");
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("webhook-id", id),
        ("webhook-timestamp", timestamp.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    if let Some(secret) = secret {
        headers.push(("X-Webhook-Secret", secret));
    }
    codex.request("POST", path, &headers, sent.as_bytes())
}

/// Posts `sent` with an X-Hub-Signature-256 over `signed` under `secret`.
fn post_hub(codex: &Codex, secret: &str, signed: &str, sent: &str) -> Response {
    let hex: String = mac(secret.as_bytes(), &[signed.as_bytes()])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signature = format!("sha256={hex}");
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Webhook-Secret", SECRET),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    codex.request("POST", PATH, &headers, sent.as_bytes())
}

fn tickets(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM ticket_details")
}

fn journaled(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM webhook_events")
}

fn detail(response: &Response) -> String {
    response.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn standard_webhooks_valid_delivery_is_stored() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = standard_codex(&db);
    let b = body(101);
    let response = post_standard(&codex, SW_KEY, "msg_valid1", now(), &b, &b, Some(SECRET));
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(db.ticket(101).is_some());
}

#[test]
fn standard_webhooks_tampered_body_is_refused() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = standard_codex(&db);
    let tampered = body(102).replace("Printer", "Printer!");
    let response = post_standard(
        &codex,
        SW_KEY,
        "msg_tamper",
        now(),
        &body(102),
        &tampered,
        Some(SECRET),
    );
    assert_eq!(response.status, 401);
    assert!(
        detail(&response).contains("does not match"),
        "{}",
        detail(&response)
    );
    assert_eq!((tickets(&db), journaled(&db)), (0, 0));
}

#[test]
fn standard_webhooks_wrong_secret_is_refused() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = standard_codex(&db);
    let b = body(103);
    let response = post_standard(
        &codex,
        SW_KEY_NEXT,
        "msg_wrong",
        now(),
        &b,
        &b,
        Some(SECRET),
    );
    assert_eq!(response.status, 401);
    assert_eq!((tickets(&db), journaled(&db)), (0, 0));
}

#[test]
fn standard_webhooks_timestamp_from_the_past_is_refused() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = standard_codex(&db);
    let b = body(104);
    let response = post_standard(&codex, SW_KEY, "msg_old", now() - 400, &b, &b, Some(SECRET));
    assert_eq!(response.status, 401);
    assert!(
        detail(&response).contains("webhook-timestamp"),
        "{}",
        detail(&response)
    );
    assert_eq!((tickets(&db), journaled(&db)), (0, 0));
}

#[test]
fn standard_webhooks_timestamp_from_the_future_is_refused() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = standard_codex(&db);
    let b = body(105);
    let response = post_standard(
        &codex,
        SW_KEY,
        "msg_future",
        now() + 400,
        &b,
        &b,
        Some(SECRET),
    );
    assert_eq!(response.status, 401);
    assert!(
        detail(&response).contains("webhook-timestamp"),
        "{}",
        detail(&response)
    );
    assert_eq!((tickets(&db), journaled(&db)), (0, 0));
}

#[test]
fn standard_webhooks_replayed_id_is_a_duplicate_and_not_written_again() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = standard_codex(&db);
    let b = body(106);
    let sent_at = now();
    let first = post_standard(&codex, SW_KEY, "msg_replay", sent_at, &b, &b, Some(SECRET));
    assert_eq!(first.status, 201);
    assert_eq!(journaled(&db), 1);
    let again = post_standard(&codex, SW_KEY, "msg_replay", sent_at, &b, &b, Some(SECRET));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(again.json()["webhook_id"], "msg_replay");
    // A retry of the same message at a later attempt time is the same message.
    let retry = post_standard(
        &codex,
        SW_KEY,
        "msg_replay",
        sent_at + 5,
        &b,
        &b,
        Some(SECRET),
    );
    assert_eq!(retry.json()["status"], "duplicate");
    assert_eq!((tickets(&db), journaled(&db)), (1, 1));
    // Another message about the same ticket is written.
    let other = post_standard(&codex, SW_KEY, "msg_other", sent_at, &b, &b, Some(SECRET));
    assert_eq!(other.status, 200);
    assert_eq!(journaled(&db), 2);
}

#[test]
fn standard_webhooks_second_secret_of_a_rotation_is_accepted() {
    let db = TestDb::new(&Backend::Sqlite);
    let config = format!(
        "[webhooks]\nsignature = standard-webhooks\nsigning_secrets = {}, {}\n",
        whsec(SW_KEY),
        whsec(SW_KEY_NEXT)
    );
    let codex = Codex::start(&db, &config);
    let (first, second) = (body(107), body(108));
    let old = post_standard(
        &codex,
        SW_KEY,
        "msg_rot1",
        now(),
        &first,
        &first,
        Some(SECRET),
    );
    let new = post_standard(
        &codex,
        SW_KEY_NEXT,
        "msg_rot2",
        now(),
        &second,
        &second,
        Some(SECRET),
    );
    assert_eq!((old.status, new.status), (201, 201));
    assert_eq!(tickets(&db), 2);
}

#[test]
fn signing_secrets_come_from_the_environment() {
    let db = TestDb::new(&Backend::Sqlite);
    let key = whsec(SW_KEY_NEXT);
    let in_file = format!(
        "[webhooks]\nsignature = standard-webhooks\nsigning_secrets = {}\n",
        whsec(SW_KEY)
    );
    let codex = Codex::start_with_env(
        &db,
        &in_file,
        &[("CODEX_WEBHOOK_SIGNING_SECRETS", key.as_str())],
    );
    let b = body(109);
    let response = post_standard(&codex, SW_KEY_NEXT, "msg_env", now(), &b, &b, Some(SECRET));
    assert_eq!(response.status, 201);
    // The variable replaces the file's secrets.
    let file_key = post_standard(&codex, SW_KEY, "msg_file", now(), &b, &b, Some(SECRET));
    assert_eq!(file_key.status, 401);
    assert!(!codex.logs().contains(&key), "{}", codex.logs());
}

#[test]
fn shared_secret_and_signature_are_both_required() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = standard_codex(&db);
    let b = body(110);
    // A valid signature without the shared secret.
    let unsigned_secret = post_standard(&codex, SW_KEY, "msg_both1", now(), &b, &b, None);
    assert_eq!(unsigned_secret.status, 401);
    // The shared secret without a signature.
    let no_signature = codex.deliver(&b);
    assert_eq!(no_signature.status, 401);
    assert!(
        detail(&no_signature).contains("webhook-id"),
        "{}",
        detail(&no_signature)
    );
    assert_eq!((tickets(&db), journaled(&db)), (0, 0));
    // Both.
    let both = post_standard(&codex, SW_KEY, "msg_both2", now(), &b, &b, Some(SECRET));
    assert_eq!(both.status, 201);
}

#[test]
fn signature_alone_authenticates_when_no_shared_secret_is_set() {
    let db = TestDb::new(&Backend::Sqlite);
    let config = format!(
        "[webhooks]\nsecret =\nsignature = standard-webhooks\nsigning_secrets = {}\n",
        whsec(SW_KEY)
    );
    let codex = Codex::start(&db, &config);
    let b = body(111);
    let unsigned = codex.request(
        "POST",
        PATH,
        &[("Content-Type", "application/json")],
        b.as_bytes(),
    );
    assert_eq!(unsigned.status, 401);
    assert_eq!(journaled(&db), 0);
    let signed = post_standard(&codex, SW_KEY, "msg_alone", now(), &b, &b, None);
    assert_eq!(signed.status, 201);
    // /webhooks/test checks the signature too, and health says which scheme.
    let test = codex.test_auth(&[]);
    assert_eq!(test.status, 401);
    let signed_test = post_standard_to(
        &codex,
        "/webhooks/test",
        SW_KEY,
        ("msg_t", now()),
        "",
        "",
        None,
    );
    assert_eq!(signed_test.status, 200);
    let health = codex.get("/webhooks/health").json();
    assert_eq!(health["signature"], "standard-webhooks");
    assert_eq!(health["secret_configured"], false);
}

#[test]
fn hub_signature_valid_delivery_is_stored() {
    let db = TestDb::new(&Backend::Sqlite);
    let config = format!("[webhooks]\nsignature = hmac-sha256\nsigning_secrets = {HUB_SECRET}\n");
    let codex = Codex::start(&db, &config);
    let b = body(120);
    let response = post_hub(&codex, HUB_SECRET, &b, &b);
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(db.ticket(120).is_some());
}

#[test]
fn hub_signature_invalid_is_refused() {
    let db = TestDb::new(&Backend::Sqlite);
    let config = format!("[webhooks]\nsignature = hmac-sha256\nsigning_secrets = {HUB_SECRET}\n");
    let codex = Codex::start(&db, &config);
    let b = body(121);
    let tampered = post_hub(&codex, HUB_SECRET, &b, &b.replace("121", "122"));
    let wrong_secret = post_hub(&codex, HUB_SECRET_NEXT, &b, &b);
    let missing = codex.deliver(&b);
    assert_eq!(
        (tampered.status, wrong_secret.status, missing.status),
        (401, 401, 401)
    );
    assert!(
        detail(&missing).contains("X-Hub-Signature-256"),
        "{}",
        detail(&missing)
    );
    assert_eq!((tickets(&db), journaled(&db)), (0, 0));
}

#[test]
fn hub_signature_second_secret_of_a_rotation_is_accepted() {
    let db = TestDb::new(&Backend::Sqlite);
    let config = format!(
        "[webhooks]\nsignature = hmac-sha256\nsigning_secrets = {HUB_SECRET}, {HUB_SECRET_NEXT}\n"
    );
    let codex = Codex::start(&db, &config);
    let b = body(123);
    assert_eq!(post_hub(&codex, HUB_SECRET_NEXT, &b, &b).status, 201);
    let logs = codex.logs();
    assert!(
        !logs.contains(HUB_SECRET) && !logs.contains(HUB_SECRET_NEXT),
        "{logs}"
    );
}
