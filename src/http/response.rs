//! Responses: JSON, text, a redirect, and sending one. Failures become
//! answers in `failure.rs`.

use std::io::Cursor;

use serde_json::Value;
use tiny_http::{Header, Request, Response, StatusCode};

/// A JSON response with the right content type.
pub fn json_response(status: u16, body: &Value) -> Response<Cursor<Vec<u8>>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::from_data(bytes).with_status_code(StatusCode(status));
    // The header literal is valid ASCII; from_bytes cannot fail on it.
    if let Ok(header) = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        response.add_header(header);
    }
    response
}

/// A 302 to `location` (a path of Codex's own).
pub fn redirect(location: &str) -> Response<Cursor<Vec<u8>>> {
    let mut response = text_response(
        302,
        "text/plain; charset=utf-8",
        format!("see {location}\n"),
    );
    if let Ok(header) = Header::from_bytes(&b"Location"[..], location.as_bytes()) {
        response.add_header(header);
    }
    response
}

/// A response of `content_type` text.
pub fn text_response(status: u16, content_type: &str, body: String) -> Response<Cursor<Vec<u8>>> {
    let mut response = Response::from_data(body.into_bytes()).with_status_code(StatusCode(status));
    if let Ok(header) = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        response.add_header(header);
    }
    response
}

/// Sends `response`; with `close`, with `Connection: close`, and the
/// connection is closed after it.
pub fn send(
    mut request: Request,
    response: Response<Cursor<Vec<u8>>>,
    close: bool,
) -> std::io::Result<()> {
    if close {
        request.close_connection();
    }
    request.respond(response)
}
