//! Each failure's answer: status, `Retry-After`, body.

use super::*;

fn retry_after(answer: &Answer) -> Option<&str> {
    answer
        .headers
        .iter()
        .find(|(name, _)| *name == "Retry-After")
        .map(|(_, value)| value.as_str())
}

/// Every variant once, with its status, its Retry-After and the fields
/// its body holds beside `error`.
fn table() -> Vec<(Failure, u16, Option<&'static str>, &'static [&'static str])> {
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let stored = |e: StoreError| Failure::Write(e);
    vec![
        (Failure::ForeignHost, 400, None, &[]),
        (
            Failure::NoEndpoint {
                path: "/x".into(),
                base_path: "/codex".into(),
            },
            404,
            None,
            &["endpoints"],
        ),
        (
            Failure::UnknownProvider { name: "x".into() },
            404,
            None,
            &["supported_providers"],
        ),
        (Failure::MethodNotAllowed { allow: "POST" }, 405, None, &[]),
        (
            Failure::BodyTooLarge { max: 10 },
            413,
            None,
            &["max_body_bytes"],
        ),
        (
            Failure::NotJsonContent {
                mime: "text/xml".into(),
            },
            415,
            None,
            &[],
        ),
        (Failure::WebhooksDisabled, 503, None, &["detail"]),
        (
            Failure::RateLimited {
                client_ip: ip,
                per_minute: 3,
                wait: 17,
            },
            429,
            Some("17"),
            &["detail"],
        ),
        (Failure::WrongSecret, 401, None, &["detail"]),
        (
            Failure::MissingSecret {
                in_authorization: true,
            },
            401,
            None,
            &["detail"],
        ),
        (
            Failure::AddressNotAllowed { client_ip: ip },
            403,
            None,
            &["detail"],
        ),
        (
            Failure::OperatorAddress { client_ip: ip },
            403,
            None,
            &["detail"],
        ),
        (Failure::OperatorToken { presented: false }, 401, None, &[]),
        (
            Failure::BadSignature(SignatureError::Mismatch),
            401,
            None,
            &["detail"],
        ),
        (Failure::MessageInProgress, 409, Some("5"), &[]),
        (Failure::TooManyMessageIds, 503, Some("60"), &[]),
        (
            Failure::Refused {
                refusal: Refusal::NotJson {
                    message: "not JSON".into(),
                    line: 2,
                    column: 3,
                },
                ticket_id: Some(7),
            },
            400,
            None,
            &["line", "column", "ticket_id"],
        ),
        (
            Failure::Refused {
                refusal: Refusal::Nul {
                    message: "NUL".into(),
                    field: "subject",
                },
                ticket_id: None,
            },
            400,
            None,
            &["field"],
        ),
        (stored(StoreError::Statement("x".into())), 500, None, &[]),
        (stored(StoreError::NotJournaled("x".into())), 500, None, &[]),
        (stored(StoreError::Overloaded), 503, Some("5"), &[]),
        (stored(StoreError::Timeout), 503, Some("5"), &[]),
        (
            stored(StoreError::Unavailable("x".into())),
            503,
            Some("10"),
            &[],
        ),
        (
            stored(StoreError::Migration("x".into())),
            503,
            Some("10"),
            &[],
        ),
        (
            stored(StoreError::WrongDatabase("x".into())),
            503,
            Some("10"),
            &[],
        ),
        (stored(StoreError::Stopped), 503, Some("5"), &[]),
        (Failure::ShuttingDown, 503, Some("5"), &[]),
        (Failure::ApiOff, 404, None, &["detail"]),
        (
            Failure::NoApiEndpoint {
                path: "/api/x".into(),
            },
            404,
            None,
            &["endpoints"],
        ),
        (Failure::NoBearerToken, 401, None, &[]),
        (Failure::UnknownToken, 401, None, &[]),
        (Failure::BadToken(TokenError::Invalid), 401, None, &[]),
        (Failure::CursorAndOffset, 400, None, &[]),
        (Failure::BadCursor, 400, None, &["detail"]),
        (
            Failure::OutOfRange {
                name: "limit",
                min: 1,
                max: 1000,
                text: "0".into(),
            },
            400,
            None,
            &[],
        ),
        (
            Failure::UnknownSource { name: "x".into() },
            400,
            None,
            &["sources"],
        ),
        (
            Failure::BadUpdatedSince(TimestampError::Unreadable("x".into())),
            400,
            None,
            &["example"],
        ),
        (Failure::BadYear { year: "24".into() }, 400, None, &[]),
        (Failure::NotATicketId, 404, None, &["detail"]),
        (Failure::TicketNotFound, 404, None, &[]),
        (Failure::CompanyNotFound, 404, None, &[]),
        (Failure::Read(StoreError::Timeout), 503, Some("10"), &[]),
        (
            Failure::Read(StoreError::Unavailable("x".into())),
            503,
            Some("10"),
            &[],
        ),
        (
            Failure::Read(StoreError::Statement("x".into())),
            500,
            None,
            &[],
        ),
    ]
}

#[test]
fn each_failure_has_its_status_retry_after_and_body_fields() {
    for (failure, status, retry, fields) in table() {
        let answer = failure.answer();
        assert_eq!(answer.status, status, "{failure:?}");
        assert_eq!(retry_after(&answer), retry, "{failure:?}");
        let body = answer.body.as_object().expect("the body is an object");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{failure:?}: {body:?}"
        );
        let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
        keys.retain(|k| *k != "error");
        keys.sort_unstable();
        let mut expected = fields.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{failure:?}");
    }
}

#[test]
fn every_shutting_down_answer_is_the_same() {
    let drain = Failure::ShuttingDown.answer();
    let stopped = Failure::Write(StoreError::Stopped).answer();
    assert_eq!(drain, stopped);
    assert_eq!(drain.message(), SHUTTING_DOWN);
}

#[test]
fn internal_details_stay_out_of_the_body() {
    for failure in [
        Failure::Write(StoreError::Statement("secret SQL".into())),
        Failure::Write(StoreError::Unavailable("secret host".into())),
        Failure::Read(StoreError::Statement("secret SQL".into())),
    ] {
        let body = failure.answer().body.to_string();
        assert!(!body.contains("secret"), "{body}");
    }
}

#[test]
fn the_headers_say_how_to_get_in() {
    let allow = Failure::MethodNotAllowed { allow: "POST" }.answer();
    assert_eq!(allow.headers, vec![("Allow", "POST".to_string())]);
    let operator = Failure::OperatorToken { presented: true }.answer();
    let schemes: Vec<&str> = operator
        .headers
        .iter()
        .filter(|(name, _)| *name == "WWW-Authenticate")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(schemes.len(), 2);
    assert!(schemes[0].starts_with("Basic ") && schemes[1].starts_with("Bearer "));
    let api = Failure::NoBearerToken.answer();
    assert_eq!(api.headers, vec![("WWW-Authenticate", BEARER.to_string())]);
}

#[test]
fn a_refusal_says_where_the_body_went_wrong() {
    let answer = Failure::Refused {
        refusal: Refusal::NotJson {
            message: "the body is not JSON".into(),
            line: 2,
            column: 5,
        },
        ticket_id: Some(42),
    }
    .answer();
    assert_eq!(
        answer.body,
        json!({"error": "the body is not JSON", "line": 2, "column": 5, "ticket_id": 42})
    );
}

#[test]
fn a_message_is_sent_whole_outside_tiny_http() {
    let bytes = Failure::ShuttingDown.answer().to_http();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"));
    assert!(text.ends_with("\r\n\r\n{\"error\":\"Codex is shutting down; retry later\"}"));
}
