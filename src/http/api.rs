//! The predecessor's ticket read API, for the suite's services that read
//! tickets over HTTP (its dashboard and billing services):
//!
//! - `GET /api/tickets`: a page of tickets, newest first, filtered by
//!   `company_id`, `status`, `priority`, and, beyond the predecessor,
//!   `source` and `updated_since`; paged by `limit`/`offset` or by `cursor`
//!   (the previous page's `next_cursor`, a keyset position);
//! - `GET /api/ticket/<id>`: one ticket by the PSA's id;
//! - `GET /api/companies/<account_number>/tickets`: a company's tickets.
//!
//! Field names and empty values are the predecessor's. A ticket Codex does
//! not hold is 404: a read never calls the PSA. Reads use read connections
//! of their own (`readers.rs`), never the writer's. Every request needs a bearer token:
//! one of `[api] tokens`, or a suite JWT when `[api] core_url` is set.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tiny_http::Request;

use super::auth;
use super::failure::Failure;
use super::jwt::Verifier;
use crate::config::Config;
use crate::error::StoreError;
use crate::psa::Provider;
use crate::readers::Readers;
use crate::store::{Position, TicketPage, TicketQuery, TicketRow};
use crate::timestamp;

/// Rows a page holds unless `limit` says otherwise (the predecessor's).
const DEFAULT_LIMIT: i64 = 50;
/// The most rows one page may hold.
const MAX_LIMIT: i64 = 1000;
/// The JWT verifier (with its cached keys) of the Core in force, kept
/// between requests.
#[derive(Default)]
pub struct ReadApi {
    verifier: Mutex<Option<Arc<Verifier>>>,
}

impl ReadApi {
    /// The verifier for `core_url`, made anew when the URL changed (a reload).
    fn verifier(&self, core_url: &str) -> Arc<Verifier> {
        let mut current = self.verifier.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some(verifier) if verifier.serves(core_url) => verifier.clone(),
            _ => current.insert(Arc::new(Verifier::new(core_url))).clone(),
        }
    }
}

/// True when `path` (base path removed) is one of the API's.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Answers a GET or HEAD of the read API: `path` without the base path,
/// `query` the text after `?`. The request is parsed into what it asks
/// for, read in one call on a read connection, and rendered under the
/// predecessor's field names.
pub fn answer(
    api: &ReadApi,
    readers: &Readers,
    config: &Config,
    request: &Request,
    path: &str,
    query: &str,
) -> Result<Value, Failure> {
    if config.api.tokens.is_empty() && config.api.core_url.is_none() {
        return Err(Failure::ApiOff);
    }
    authenticate(api, config, request)?;
    match Ask::parse(path, &Params::parse(query))? {
        Ask::Tickets(query) => {
            let page = readers.read(|r| r.tickets(&query)).map_err(read_failed)?;
            Ok(page_body(&page, &query))
        }
        Ask::Ticket { id, source } => readers
            .read(|r| r.ticket(id, source.as_deref()))
            .map_err(read_failed)?
            .map(|row| detail_fields(&row, config))
            .ok_or(Failure::TicketNotFound),
        Ask::Company { account, year } => readers
            .read(|r| r.company_tickets(&account, year.as_deref()))
            .map_err(read_failed)?
            .map(|rows| Value::Array(rows.iter().map(company_fields).collect()))
            .ok_or(Failure::CompanyNotFound),
    }
}

/// What a read API request asks for.
enum Ask {
    /// `GET /api/tickets`.
    Tickets(TicketQuery),
    /// `GET /api/ticket/<id>`.
    Ticket { id: i64, source: Option<String> },
    /// `GET /api/companies/<account_number>/tickets`.
    Company {
        account: String,
        year: Option<String>,
    },
}

impl Ask {
    fn parse(path: &str, params: &Params) -> Result<Ask, Failure> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
        match segments.as_slice() {
            ["tickets"] => tickets_query(params).map(Ask::Tickets),
            ["ticket", id] => Ok(Ask::Ticket {
                id: id
                    .parse()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or(Failure::NotATicketId)?,
                source: params.get("source").map(str::to_string),
            }),
            ["companies", account, "tickets"] => {
                let year = params.get("year").map(str::to_string);
                if let Some(year) = &year {
                    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(Failure::BadYear { year: year.clone() });
                    }
                }
                Ok(Ask::Company {
                    account: decode(account),
                    year,
                })
            }
            _ => Err(Failure::NoApiEndpoint {
                path: path.to_string(),
            }),
        }
    }
}

/// A bearer token: one of `[api] tokens` (compared in constant time), or a
/// JWT from the configured Core.
fn authenticate(api: &ReadApi, config: &Config, request: &Request) -> Result<(), Failure> {
    let header = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(Failure::NoBearerToken);
    };
    let token = token.trim();
    if !config.api.tokens.is_empty() && auth::secret_matches(token, &config.api.tokens) {
        return Ok(());
    }
    let Some(core_url) = &config.api.core_url else {
        return Err(Failure::UnknownToken);
    };
    api.verifier(core_url)
        .verify(token)
        .map_err(Failure::BadToken)
}

/// The query of `GET /api/tickets`.
fn tickets_query(params: &Params) -> Result<TicketQuery, Failure> {
    let limit = params.number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = params.number("offset", 0, 0, i64::MAX)?;
    let after = params.get("cursor").map(decode_cursor).transpose()?;
    if after.is_some() && offset > 0 {
        return Err(Failure::CursorAndOffset);
    }
    let source = match params.get("source") {
        None => None,
        Some(name) => Some(
            Provider::from_name(name)
                .ok_or_else(|| Failure::UnknownSource {
                    name: name.to_string(),
                })?
                .as_str()
                .to_string(),
        ),
    };
    let updated_since = params
        .get("updated_since")
        .map(|text| timestamp::normalize(text).map_err(Failure::BadUpdatedSince))
        .transpose()?;
    Ok(TicketQuery {
        company: params.get("company_id").map(str::to_string),
        status: params.get("status").map(str::to_string),
        priority: params.get("priority").map(str::to_string),
        source,
        updated_since,
        after,
        limit,
        offset,
    })
}

/// A page of `GET /api/tickets`, with the cursor of the next one.
fn page_body(page: &TicketPage, query: &TicketQuery) -> Value {
    let next_cursor = match page.tickets.last() {
        Some(last) if i64::try_from(page.tickets.len()) == Ok(query.limit) => {
            Value::from(encode_cursor(&last.position()))
        }
        _ => Value::Null,
    };
    json!({
        "tickets": page.tickets.iter().map(list_fields).collect::<Vec<_>>(),
        "count": page.tickets.len(),
        "total": page.total,
        "offset": query.offset,
        "limit": query.limit,
        "next_cursor": next_cursor,
    })
}

/// The fields every answer gives a ticket, under the predecessor's names.
fn shared_fields(row: &TicketRow) -> serde_json::Map<String, Value> {
    let fields = json!({
        "ticket_number": row.ticket_number,
        "subject": row.subject,
        "description_text": row.description_text,
        "status": row.status,
        "priority": row.priority,
        "requester_email": row.requester_email,
        "requester_name": row.requester_name,
        "created_at": row.created_at,
        "last_updated_at": row.last_updated_at,
        "closed_at": row.closed_at,
        "total_hours_spent": row.total_hours_spent.unwrap_or(0.0),
    });
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// `shared_fields` with `more`.
fn with_fields(row: &TicketRow, more: Value) -> Value {
    let mut fields = shared_fields(row);
    if let Value::Object(more) = more {
        fields.extend(more);
    }
    Value::Object(fields)
}

/// A ticket in `/api/tickets`: `id` is the row id.
fn list_fields(row: &TicketRow) -> Value {
    with_fields(
        row,
        json!({
            "id": row.id,
            "company_id": row.company_account_number,
            "company_compliance_level": compliance(row),
        }),
    )
}

/// A ticket in `/api/ticket/<id>`: `id` is the PSA's id.
fn detail_fields(row: &TicketRow, config: &Config) -> Value {
    let text = |name: &Option<String>, status| {
        name.as_deref()
            .map(|name| display(config, &row.source, name, status))
    };
    with_fields(
        row,
        json!({
            "id": row.external_id,
            "description": row.description,
            "status_text": text(&row.status, true),
            "priority_text": text(&row.priority, false),
            "company_id": row.company_account_number,
            "company_name": row.company_name,
            "company_compliance_level": compliance(row),
            "conversations": json_list(row.conversations.as_deref()),
            "notes": json_list(row.notes.as_deref()),
            "source": row.source,
        }),
    )
}

/// A ticket in a company's list: `ticket_id` is the row id.
fn company_fields(row: &TicketRow) -> Value {
    with_fields(
        row,
        json!({
            "ticket_id": row.id,
            "description": row.description,
            "conversations": json_list(row.conversations.as_deref()),
            "notes": json_list(row.notes.as_deref()),
        }),
    )
}

/// The company's compliance level; "standard" when it has none.
fn compliance(row: &TicketRow) -> &str {
    row.compliance_level
        .as_deref()
        .filter(|level| !level.is_empty())
        .unwrap_or("standard")
}

/// A normalized status or priority as people read it: Freshservice's
/// display name from the configured table, else the name in title case
/// (`waiting_customer` -> `Waiting Customer`).
fn display(config: &Config, source: &str, name: &str, status: bool) -> String {
    if source == Provider::Freshservice.as_str() {
        let table = if status {
            &config.freshservice.statuses
        } else {
            &config.freshservice.priorities
        };
        if let Some(display) = table.display(name) {
            return display.to_string();
        }
    }
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A JSON array kept in a text column; `[]` when empty or not an array.
fn json_list(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str::<Value>(t).ok())
        .filter(Value::is_array)
        .unwrap_or_else(|| json!([]))
}

/// A failed read, logged when the answer cannot say more than "see the
/// Codex log".
fn read_failed(error: StoreError) -> Failure {
    let text = error.to_string();
    let failure = Failure::Read(error);
    if failure.answer().status == 500 {
        log::error!("read API: {text}");
    }
    failure
}

/// A keyset position as an opaque cursor.
fn encode_cursor(position: &Position) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", position.id, position.last_updated_at))
}

fn decode_cursor(text: &str) -> Result<Position, Failure> {
    let bad = || Failure::BadCursor;
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (id, last_updated_at) = text.split_once('|').ok_or_else(bad)?;
    Ok(Position {
        id: id.parse().map_err(|_| bad())?,
        last_updated_at: last_updated_at.to_string(),
    })
}

/// A path segment or query value, percent-decoded (`+` is a space in a query).
fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// The query string's parameters; the first of a repeated name counts.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Params {
        Params(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (
                        decode(&name.replace('+', " ")),
                        decode(&value.replace('+', " ")),
                    )
                })
                .collect(),
        )
    }

    /// A parameter's value; an empty one counts as not given.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn number(&self, name: &'static str, default: i64, min: i64, max: i64) -> Result<i64, Failure> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        text.parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| Failure::OutOfRange {
                name,
                min,
                max,
                text: text.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_comes_back_as_the_position_it_was_made_from() {
        let position = Position {
            last_updated_at: "2024-01-15T10:30:00Z".into(),
            id: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(&position)).unwrap(), position);
        assert_eq!(decode_cursor("!!").unwrap_err(), Failure::BadCursor);
        assert_eq!(
            decode_cursor(&URL_SAFE_NO_PAD.encode("x|y")).unwrap_err(),
            Failure::BadCursor
        );
    }

    #[test]
    fn query_parameters_are_decoded_and_empty_ones_are_absent() {
        let params = Params::parse("company_id=ACME%20Co&status=&limit=5&company_id=other&q=a+b");
        assert_eq!(params.get("company_id"), Some("ACME Co"));
        assert_eq!(params.get("status"), None);
        assert_eq!(params.get("q"), Some("a b"));
        assert_eq!(params.number("limit", 50, 1, 1000).unwrap(), 5);
        assert_eq!(params.number("offset", 0, 0, 9).unwrap(), 0);
        let params = Params::parse("limit=0");
        let error = params.number("limit", 50, 1, 1000).unwrap_err().answer();
        assert!(
            error.message().contains("from 1 to 1000"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn names_without_a_display_name_read_in_title_case() {
        let config = Config::default();
        assert_eq!(display(&config, "freshservice", "open", true), "Open");
        assert_eq!(
            display(&config, "superops", "waiting_on_customer", true),
            "Waiting On Customer"
        );
    }

    #[test]
    fn conversations_that_are_not_a_json_array_read_as_empty() {
        assert_eq!(json_list(None), json!([]));
        assert_eq!(json_list(Some("")), json!([]));
        assert_eq!(json_list(Some("{\"a\":1}")), json!([]));
        assert_eq!(
            json_list(Some("[{\"body\":\"hi\"}]")),
            json!([{"body": "hi"}])
        );
    }
}
