//! Every way a request can fail, and the one place where a failure becomes
//! an HTTP answer: [`Failure::answer`] picks the status, the headers
//! (`Retry-After` among them) and the JSON body `{"error": …, …}`. The head
//! gate, the handlers and the backlog drain all answer through it, so a
//! status code or a `Retry-After` is written nowhere else, and no internal
//! detail (a SQL error, a secret) reaches a response body.

use std::io::Cursor;
use std::net::IpAddr;

use serde_json::{Value, json};
use tiny_http::{Header, Response, StatusCode};

use super::endpoints::{endpoints, supported_providers};
use super::jwt::TokenError;
use super::response::json_response;
use super::signature::SignatureError;
use crate::delivery::Refusal;
use crate::error::{StoreError, TimestampError};

/// `Retry-After` for a request refused because Codex is stopping (a drain,
/// the backlog at its end, a writer that has stopped): a restart takes a
/// few seconds, so the sender comes back to the next Codex.
pub const RETRY_SHUTTING_DOWN: u64 = 5;
/// `Retry-After` when the writer's queue is full or a commit took longer
/// than the handler waits: the queue drains within seconds.
pub const RETRY_BUSY: u64 = 5;
/// `Retry-After` when the database is unavailable: a reconnection is tried
/// every few seconds, and an outage lasts longer than a busy queue.
pub const RETRY_DATABASE: u64 = 10;
/// `Retry-After` for a Standard Webhooks id another request is handling:
/// that request answers within the commit wait.
pub const RETRY_IN_PROGRESS: u64 = 5;
/// `Retry-After` when the set of remembered webhook ids is full: ids leave
/// it as their timestamps age out, over minutes, not seconds.
pub const RETRY_IDS_FULL: u64 = 60;

/// Why a request is not answered with what it asked for. Each variant says
/// when it happens; [`Failure::answer`] says how it is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The request target is absolute-form and names another host than the
    /// `Host` header (400).
    ForeignHost,
    /// Nothing is served at `path`; the answer lists the endpoints under
    /// `base_path` (404).
    NoEndpoint { path: String, base_path: String },
    /// `/webhooks/<name>/ticket` names a provider Codex does not know (404).
    UnknownProvider { name: String },
    /// The route takes only `allow` (405, with `Allow`).
    MethodNotAllowed { allow: &'static str },
    /// The body, declared or read, is over `[server] max_body_bytes` (413).
    BodyTooLarge { max: usize },
    /// A delivery's `Content-Type` is not JSON (415).
    NotJsonContent { mime: String },
    /// `[webhooks] enabled` is false (503, no `Retry-After`: waiting will
    /// not change it).
    WebhooksDisabled,
    /// The client spent `[webhooks] rate_limit_per_minute`; a token comes
    /// back in `wait` seconds (429).
    RateLimited {
        client_ip: IpAddr,
        per_minute: u32,
        wait: u64,
    },
    /// `X-Webhook-Secret` is not one of `[webhooks] secrets` (401).
    WrongSecret,
    /// `X-Webhook-Secret` is missing; `in_authorization` when an
    /// `Authorization` header was sent instead (401).
    MissingSecret { in_authorization: bool },
    /// The client is not in `[webhooks] allowed_ips` (403).
    AddressNotAllowed { client_ip: IpAddr },
    /// An operator's page, from a client not in `[status] allowed_ips` while
    /// no `[status] token` is set (403).
    OperatorAddress { client_ip: IpAddr },
    /// An operator's page without `[status] token` (`presented`: a wrong
    /// one was sent) (401, with both schemes that would work).
    OperatorToken { presented: bool },
    /// The body's signature is not accepted (401, saying why, never which
    /// secret or what signature was expected).
    BadSignature(SignatureError),
    /// A delivery with the same Standard Webhooks id is being handled (409).
    MessageInProgress,
    /// The set of remembered Standard Webhooks ids is full (503).
    TooManyMessageIds,
    /// The delivery's body cannot be applied; it was journaled (400).
    Refused {
        refusal: Refusal,
        ticket_id: Option<i64>,
    },
    /// The writer did not commit a delivery (or its journal row): 500 when
    /// retrying will not help, 503 with `Retry-After` when it will.
    Write(StoreError),
    /// The request was read after a stop began (503).
    ShuttingDown,
    /// The read API is requested but neither `[api] tokens` nor `[api]
    /// core_url` is set (404).
    ApiOff,
    /// Nothing of the read API is at `path` (404).
    NoApiEndpoint { path: String },
    /// A read API request without `Authorization: Bearer` (401).
    NoBearerToken,
    /// A bearer token not in `[api] tokens`, with no Core to ask (401).
    UnknownToken,
    /// A bearer token Core's keys do not verify (401).
    BadToken(TokenError),
    /// Both `cursor` and `offset` were given (400).
    CursorAndOffset,
    /// `cursor` is not one the API gave (400).
    BadCursor,
    /// A numeric parameter is not a whole number within its bounds (400).
    OutOfRange {
        name: &'static str,
        min: i64,
        max: i64,
        text: String,
    },
    /// `source` names no provider Codex knows (400).
    UnknownSource { name: String },
    /// `updated_since` is not a timestamp (400).
    BadUpdatedSince(TimestampError),
    /// `year` is not four digits (400).
    BadYear { year: String },
    /// `/api/ticket/<id>` with an id that cannot be a ticket's (404).
    NotATicketId,
    /// Codex holds no such ticket (404).
    TicketNotFound,
    /// Codex holds no such company (404).
    CompanyNotFound,
    /// A read connection failed: 503 with `Retry-After` when the database
    /// is unavailable or slow, else 500.
    Read(StoreError),
}

/// A failure as it is answered: status, headers and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl Failure {
    /// The answer to this failure: the one mapping from failures to HTTP.
    pub fn answer(&self) -> Answer {
        match self {
            Failure::ForeignHost => Answer::new(
                400,
                "the request target names another host than the Host header",
            ),
            Failure::NoEndpoint { path, base_path } => {
                Answer::new(404, format!("no endpoint at {path}"))
                    .with("endpoints", endpoints(base_path))
            }
            Failure::UnknownProvider { name } => {
                Answer::new(404, format!("provider '{name}' is not supported"))
                    .with("supported_providers", supported_providers())
            }
            Failure::MethodNotAllowed { allow } => {
                Answer::new(405, format!("use {allow} for this endpoint")).header("Allow", *allow)
            }
            Failure::BodyTooLarge { max } => Answer::new(
                413,
                format!("the body is larger than {max} bytes ([server] max_body_bytes)"),
            )
            .with("max_body_bytes", *max),
            Failure::NotJsonContent { mime } => Answer::new(
                415,
                format!("Content-Type {mime} is not JSON; send Content-Type: application/json"),
            ),
            Failure::WebhooksDisabled => Answer::new(503, "Webhooks are disabled").with(
                "detail",
                "set [webhooks] enabled = true in codex.conf and restart Codex",
            ),
            Failure::RateLimited {
                client_ip,
                per_minute,
                wait,
            } => Answer::new(429, "Too many requests")
                .with(
                    "detail",
                    format!("more than {per_minute} requests a minute from {client_ip}"),
                )
                .retry_after(*wait),
            Failure::WrongSecret => Answer::new(401, "Unauthorized").with(
                "detail",
                "the X-Webhook-Secret header does not match the configured secret",
            ),
            Failure::MissingSecret { in_authorization } => Answer::new(401, "Unauthorized").with(
                "detail",
                if *in_authorization {
                    "send the secret in the X-Webhook-Secret header, not Authorization"
                } else {
                    "the X-Webhook-Secret header is missing"
                },
            ),
            Failure::AddressNotAllowed { client_ip } => Answer::new(403, "IP not allowed").with(
                "detail",
                format!("{client_ip} is not in [webhooks] allowed_ips"),
            ),
            Failure::OperatorAddress { client_ip } => {
                Answer::new(403, format!("{client_ip} is not in [status] allowed_ips")).with(
                    "detail",
                    "add the address (a CIDR) to [status] allowed_ips, or set [status] token and present it",
                )
            }
            Failure::OperatorToken { presented } => Answer::new(
                401,
                if *presented {
                    "the token does not match [status] token"
                } else {
                    "send [status] token as Authorization: Bearer <token>, or as the password of HTTP Basic"
                },
            )
            .header("WWW-Authenticate", "Basic realm=\"codex\", charset=\"UTF-8\"")
            .header("WWW-Authenticate", BEARER),
            Failure::BadSignature(error) => {
                Answer::new(401, "Unauthorized").with("detail", error.to_string())
            }
            Failure::MessageInProgress => Answer::new(
                409,
                "a delivery with this webhook-id is being handled; retry later",
            )
            .retry_after(RETRY_IN_PROGRESS),
            Failure::TooManyMessageIds => Answer::new(503, BUSY).retry_after(RETRY_IDS_FULL),
            Failure::Refused { refusal, ticket_id } => refused(refusal, *ticket_id),
            Failure::Write(error) => not_written(error),
            Failure::ShuttingDown => shutting_down(),
            Failure::ApiOff => Answer::new(404, "the read API is off").with(
                "detail",
                "set [api] tokens (see `codex gen-secret`) or [api] core_url in codex.conf",
            ),
            Failure::NoApiEndpoint { path } => Answer::new(404, format!("no endpoint at {path}"))
                .with(
                    "endpoints",
                    json!([
                        "/api/tickets",
                        "/api/ticket/<id>",
                        "/api/companies/<account_number>/tickets"
                    ]),
                ),
            Failure::NoBearerToken => Answer::new(
                401,
                "send Authorization: Bearer <token> (one of [api] tokens, or a token from Core)",
            )
            .header("WWW-Authenticate", BEARER),
            Failure::UnknownToken => Answer::new(401, "the token is not one of [api] tokens")
                .header("WWW-Authenticate", BEARER),
            Failure::BadToken(error) => {
                Answer::new(401, error.to_string()).header("WWW-Authenticate", BEARER)
            }
            Failure::CursorAndOffset => Answer::new(400, "give cursor or offset, not both"),
            Failure::BadCursor => Answer::new(400, "cursor is not one this API gave").with(
                "detail",
                "pass the next_cursor of the previous answer unchanged",
            ),
            Failure::OutOfRange {
                name,
                min,
                max,
                text,
            } => Answer::new(
                400,
                format!("{name} must be a whole number from {min} to {max}, not '{text}'"),
            ),
            Failure::UnknownSource { name } => {
                Answer::new(400, format!("source '{name}' is not a provider Codex knows"))
                    .with("sources", supported_providers())
            }
            Failure::BadUpdatedSince(error) => {
                Answer::new(400, format!("updated_since: {error}"))
                    .with("example", "2024-01-15T10:30:00Z")
            }
            Failure::BadYear { year } => {
                Answer::new(400, format!("year '{year}' is not a year such as 2024"))
            }
            Failure::NotATicketId => {
                Answer::new(404, "Ticket not found").with("detail", "not a ticket id")
            }
            Failure::TicketNotFound => Answer::new(404, "Ticket not found"),
            Failure::CompanyNotFound => Answer::new(404, "Company not found"),
            Failure::Read(
                StoreError::Unavailable(_) | StoreError::Timeout | StoreError::Overloaded,
            ) => database_unavailable(),
            Failure::Read(_) => Answer::new(500, "the tickets could not be read; see the Codex log"),
        }
    }
}

impl Answer {
    /// An answer `status` with `{"error": message}` and no headers.
    fn new(status: u16, message: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: json!({ "error": message.into() }),
        }
    }

    /// Adds a field next to `error`.
    fn with(mut self, key: &str, value: impl Into<Value>) -> Answer {
        if let Value::Object(map) = &mut self.body {
            map.insert(key.to_string(), value.into());
        }
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    fn retry_after(self, seconds: u64) -> Answer {
        self.header("Retry-After", seconds.to_string())
    }

    /// The `error` field: what went wrong, for the log line.
    pub fn message(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    /// The answer as tiny_http sends it.
    pub fn into_response(self) -> Response<Cursor<Vec<u8>>> {
        let mut response = json_response(self.status, &self.body);
        for (name, value) in self.headers {
            if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(header);
            }
        }
        response
    }

    /// The whole HTTP/1.1 message with `Connection: close`, for a
    /// connection answered outside tiny_http (the listen backlog at the
    /// end of a drain).
    pub fn to_http(&self) -> Vec<u8> {
        let body = serde_json::to_vec(&self.body).unwrap_or_else(|_| b"{}".to_vec());
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status,
            StatusCode(self.status).default_reason_phrase()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        [head.into_bytes(), body].concat()
    }
}

const SHUTTING_DOWN: &str = "Codex is shutting down; retry later";
const BUSY: &str = "Codex is busy; retry later";
const BEARER: &str = "Bearer realm=\"codex\"";

/// Codex is stopping: a drain, the backlog at its end, a writer that has
/// stopped all answer this.
fn shutting_down() -> Answer {
    Answer::new(503, SHUTTING_DOWN).retry_after(RETRY_SHUTTING_DOWN)
}

fn database_unavailable() -> Answer {
    Answer::new(503, "the database is unavailable; retry later").retry_after(RETRY_DATABASE)
}

/// What the PSA should do when the writer did not commit: retry later (503
/// with `Retry-After`) when the database is down or busy, so that no event
/// is acknowledged without being committed; 500 when retrying will not help.
fn not_written(error: &StoreError) -> Answer {
    match error {
        StoreError::Statement(_) => Answer::new(
            500,
            "the event could not be stored; it was kept in the journal for an administrator to look at",
        ),
        StoreError::NotJournaled(_) => Answer::new(
            500,
            "the event could not be stored, nor kept in the journal; see the Codex log",
        ),
        StoreError::Overloaded | StoreError::Timeout => {
            Answer::new(503, BUSY).retry_after(RETRY_BUSY)
        }
        StoreError::Unavailable(_)
        | StoreError::SchemaTooNew { .. }
        | StoreError::Migration(_)
        | StoreError::WrongDatabase(_) => database_unavailable(),
        StoreError::Stopped => shutting_down(),
    }
}

/// A refused body, saying where it went wrong: the line and column of
/// unreadable JSON, the ticket it names, the field holding a NUL.
fn refused(refusal: &Refusal, ticket_id: Option<i64>) -> Answer {
    let mut answer = Answer::new(400, refusal.message());
    if let Refusal::NotJson { line, column, .. } = refusal {
        answer = answer.with("line", *line).with("column", *column);
    }
    if let Some(id) = ticket_id {
        answer = answer.with("ticket_id", id);
    }
    if let Refusal::Nul { field, .. } = refusal {
        answer = answer.with("field", *field);
    }
    answer
}

#[cfg(test)]
mod tests;
