//! JSON responses, and the one place where errors become HTTP statuses.

use std::io::Cursor;

use serde_json::{Value, json};
use tiny_http::{Header, Request, Response, StatusCode};

use super::signature::{Seen, SignatureError};
use crate::error::StoreError;

/// An HTTP error answer: status, JSON body `{"error": …, …}`, headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
            headers: Vec::new(),
        }
    }

    /// Adds a field next to `error`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        if let Value::Object(map) = &mut self.body {
            map.insert(key.to_string(), value.into());
        }
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn message(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    pub fn into_response(self) -> Response<Cursor<Vec<u8>>> {
        let mut response = json_response(self.status, &self.body);
        for (name, value) in self.headers {
            if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(header);
            }
        }
        response
    }

    /// A body signature that was not accepted: 401, saying why (never
    /// which secret or what signature was expected).
    pub fn from_signature(error: &SignatureError) -> ApiError {
        ApiError::new(401, "Unauthorized").with("detail", error.to_string())
    }

    /// A signed message that cannot be handled now: its id is being
    /// handled by another request (409), or too many ids are held (503);
    /// either way the sender retries.
    pub fn from_seen(seen: Seen) -> ApiError {
        match seen {
            Seen::InProgress => ApiError::new(
                409,
                "a delivery with this webhook-id is being handled; retry later",
            )
            .header("Retry-After", "5"),
            _ => ApiError::new(503, "Codex is busy; retry later").header("Retry-After", "60"),
        }
    }

    /// Maps a storage failure to what the PSA should do: retry later (503
    /// with Retry-After) when the database is down or busy, so that no
    /// event is acknowledged without being committed.
    pub fn from_store(error: &StoreError) -> ApiError {
        match error {
            StoreError::Statement(_) => ApiError::new(
                500,
                "the event could not be stored; it was kept in the journal for an administrator to look at",
            ),
            StoreError::NotJournaled(_) => ApiError::new(
                500,
                "the event could not be stored, nor kept in the journal; see the Codex log",
            ),
            StoreError::Overloaded | StoreError::Timeout => {
                ApiError::new(503, "Codex is busy; retry later").header("Retry-After", "5")
            }
            StoreError::Unavailable(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Migration(_)
            | StoreError::WrongDatabase(_) => {
                ApiError::new(503, "the database is unavailable; retry later")
                    .header("Retry-After", "10")
            }
            StoreError::Stopped => ApiError::new(503, "Codex is shutting down; retry later")
                .header("Retry-After", "10"),
        }
    }
}

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
