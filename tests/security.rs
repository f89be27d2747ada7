//! Request heads are read strictly (RFC 9112): what one reader could split
//! differently from another (a proxy in front of Codex) is refused with 400
//! before anything is done with the request. Over real sockets against the
//! real binary.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use common::{Backend, Codex, SECRET, TestDb, connect_from, read_response, seed_body};

/// A Codex of its own for a test (stopped when dropped).
struct Service {
    codex: Codex,
    _db: TestDb,
}

fn start() -> Service {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "");
    Service { codex, _db: db }
}

/// Sends `head` (and `body`) raw to a new Codex; the answer's status.
fn status_of_raw(head: &str, body: &str) -> u16 {
    status_at(start().codex.addr, head, body)
}

/// Sends `head` (and `body`) raw on a new connection to `addr`; the
/// answer's status. A 400 closes the connection.
fn status_at(addr: SocketAddr, head: &str, body: &str) -> u16 {
    let mut stream = connect_from(IpAddr::from([127, 0, 0, 1]), addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let response = read_response(&mut stream).unwrap();
    assert!(
        response.status != 400 || response.header("Connection") == Some("close"),
        "{response:?}"
    );
    response.status
}

fn delivery_body() -> String {
    seed_body("ticket.created", 4242, 2, "2024-01-01T00:00:00Z").to_string()
}

/// A head to the delivery endpoint with `fields` (CRLF-terminated lines).
fn delivery_head(fields: &str) -> String {
    format!(
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{fields}\r\n"
    )
}

#[test]
fn a_folded_header_line_is_400() {
    let body = delivery_body();
    let head = delivery_head(&format!(
        "X-Webhook-Secret: {SECRET}\r\nContent-Length: {}\r\nX-Foo: a\r\n b\r\nConnection: close\r\n",
        body.len()
    ));
    assert_eq!(status_of_raw(&head, &body), 400);
}

#[test]
fn a_folded_content_length_is_400() {
    let body = delivery_body();
    let head = delivery_head(&format!(
        "X-Webhook-Secret: {SECRET}\r\nX-Foo: a\r\n Content-Length: {}\r\n",
        body.len()
    ));
    assert_eq!(status_of_raw(&head, &body), 400);
}

#[test]
fn a_folded_transfer_encoding_is_400() {
    let body = delivery_body();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let head = delivery_head(&format!(
        "X-Webhook-Secret: {SECRET}\r\nX-Foo: a\r\n\tTransfer-Encoding: chunked\r\n"
    ));
    assert_eq!(status_of_raw(&head, &chunked), 400);
}

#[test]
fn a_folded_webhook_secret_is_400() {
    let body = delivery_body();
    let head = delivery_head(&format!(
        "X-Foo: a\r\n X-Webhook-Secret: {SECRET}\r\nContent-Length: {}\r\n",
        body.len()
    ));
    assert_eq!(status_of_raw(&head, &body), 400);
}

#[test]
fn an_empty_field_name_is_400() {
    let body = delivery_body();
    let head = delivery_head(&format!(
        "X-Webhook-Secret: {SECRET}\r\n: empty\r\nContent-Length: {}\r\n",
        body.len()
    ));
    assert_eq!(status_of_raw(&head, &body), 400);
}

#[test]
fn a_control_character_in_a_field_value_is_400() {
    for control in ["\u{1}", "\u{1b}[31m", "\u{7f}", "\u{0}"] {
        let body = delivery_body();
        let head = delivery_head(&format!(
            "X-Webhook-Secret: {SECRET}\r\nX-Note: a{control}b\r\nContent-Length: {}\r\n",
            body.len()
        ));
        assert_eq!(status_of_raw(&head, &body), 400, "{control:?}");
    }
}

#[test]
fn a_tab_in_a_field_value_is_accepted() {
    let body = delivery_body();
    let head = delivery_head(&format!(
        "X-Webhook-Secret: {SECRET}\r\nX-Note: a\tb\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    ));
    assert!(matches!(status_of_raw(&head, &body), 200 | 201));
}

#[test]
fn an_absolute_form_target_for_codex_is_accepted() {
    let service = start();
    let addr = service.codex.addr;
    let body = delivery_body();
    let head = format!(
        "POST http://{addr}/webhooks/freshservice/ticket HTTP/1.1\r\nHost: {addr}\r\n\
         X-Webhook-Secret: {SECRET}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    assert!(matches!(status_at(addr, &head, &body), 200 | 201));
}

#[test]
fn an_absolute_form_target_for_another_host_is_400() {
    let service = start();
    let addr = service.codex.addr;
    let head = format!(
        "GET http://elsewhere.example/webhooks/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(status_at(addr, &head, ""), 400);
}
