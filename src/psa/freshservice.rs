//! Freshservice: status and priority tables, and turning a webhook body or
//! an API ticket into a `TicketEvent`.

use jiff::tz::TimeZone;
use serde_json::Value as Json;

use super::webhook_body::{Body, html_unescape};
use super::{EventKind, Field, Provider, Source, TicketEvent, Value};
use crate::config::{CodeTable, FreshserviceConfig, slug};
use crate::timestamp;

/// Status id Freshservice uses for spam.
pub const STATUS_SPAM: i64 = 6;
/// Status id Freshservice uses for deleted tickets.
pub const STATUS_DELETED: i64 = 7;

/// Why a delivery cannot be applied: it has no readable ticket id (the
/// caller may still find one by scanning the raw body). The message is sent
/// back as the 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message: String,
    pub event: Option<String>,
}

/// A delivery turned into an event, with what was odd but not fatal about it.
#[derive(Debug, Clone)]
pub struct Normalized {
    pub event: TicketEvent,
    pub warnings: Vec<String>,
}

/// Ticket fields a webhook body may carry, by their `FIELD_KEYS` names.
const WEBHOOK_FIELDS: &[(&str, Field)] = &[
    ("subject", Field::Subject),
    ("description", Field::Description),
    ("ticket_type", Field::TicketType),
    ("requester_email", Field::RequesterEmail),
    ("requester_name", Field::RequesterName),
    ("requester_id", Field::RequesterId),
    ("responder_id", Field::ResponderId),
    ("group_id", Field::GroupId),
    ("department_id", Field::DepartmentId),
    ("created_at", Field::CreatedAt),
    ("due_by", Field::DueBy),
    ("fr_due_by", Field::FrDueBy),
    ("is_escalated", Field::IsEscalated),
];

/// API ticket keys (`GET /tickets`) and the fields they carry.
const API_FIELDS: &[(&str, Field)] = &[
    ("subject", Field::Subject),
    ("description_text", Field::Description),
    ("type", Field::TicketType),
    ("requester_id", Field::RequesterId),
    ("responder_id", Field::ResponderId),
    ("group_id", Field::GroupId),
    ("department_id", Field::DepartmentId),
    ("created_at", Field::CreatedAt),
    ("due_by", Field::DueBy),
    ("fr_due_by", Field::FrDueBy),
    ("is_escalated", Field::IsEscalated),
];

/// Normalizes a webhook body (already parsed, leniently if need be). Only a
/// body without a readable ticket id is refused; everything else odd about
/// it (an unknown event, an unreadable timestamp or field) is a warning.
pub fn normalize_webhook(
    body: &Json,
    config: &FreshserviceConfig,
    received_at: &str,
) -> Result<Normalized, Rejection> {
    let Some(top) = body.as_object() else {
        return Err(Rejection {
            message: "the body must be a JSON object such as {\"event\": \"ticket.updated\", \"ticket_id\": 123}"
                .to_string(),
            event: None,
        });
    };
    let body = Body::webhook(top, &config.webhook_fields);
    let mut warnings = Vec::new();
    let (kind, event_name) = read_event(body.find("event"), &mut warnings);
    let reject = |message: String| Rejection {
        message,
        event: event_name.clone(),
    };
    let ticket_id = match body.find("ticket_id") {
        None => return Err(reject("ticket_id is required".to_string())),
        Some((key, value)) => match parse_id(value) {
            Ok(Some(id)) => id,
            Ok(None) => return Err(reject(format!("{key} is empty; ticket_id is required"))),
            Err(message) => return Err(reject(format!("{key}: {message}"))),
        },
    };
    let mut event = TicketEvent::new(Provider::Freshservice, ticket_id, kind, Source::Webhook);
    match body.find("updated_at") {
        None => {}
        Some((key, value)) => match timestamp_field(value, &config.timezone) {
            Ok(None) => {}
            Ok(Some((ts, note))) => {
                event.updated_at = Some(ts);
                warnings.extend(note.map(|n| format!("{key}: {n}")));
            }
            Err(message) => {
                // Never a reason to lose the delivery: it is applied as of
                // its arrival, and the journal keeps the raw body.
                warnings.push(format!(
                    "{key}: {message}; applied with the time Codex received it ({received_at}) as its version, \
                     so it is ordered by arrival; set [freshservice] timezone or a date: filter in the template"
                ));
                event.updated_at = Some(received_at.to_string());
            }
        },
    }
    apply_fields(
        &body,
        WEBHOOK_FIELDS,
        config,
        true,
        &mut event,
        &mut warnings,
    );
    apply_code(
        &body,
        "status",
        &config.statuses,
        (Field::Status, Field::StatusId),
        "[freshservice.statuses]",
        &mut event,
        &mut warnings,
    );
    apply_code(
        &body,
        "priority",
        &config.priorities,
        (Field::Priority, Field::PriorityId),
        "[freshservice.priorities]",
        &mut event,
        &mut warnings,
    );
    if kind == EventKind::Deleted {
        mark_deleted(&mut event, config);
    }
    finish(&mut event, config, received_at);
    Ok(Normalized { event, warnings })
}

/// The event a body names: `ticket.created`, `ticket.updated` or
/// `ticket.deleted` (also `created`, `Ticket Created`, …). Anything else,
/// an empty or a missing one, reads as an update, with a warning.
pub(crate) fn read_event(
    found: Option<(String, &Json)>,
    warnings: &mut Vec<String>,
) -> (EventKind, Option<String>) {
    let Some((key, value)) = found else {
        warnings.push("event is missing; read as ticket.updated".to_string());
        return (EventKind::Updated, None);
    };
    let text = match value {
        Json::String(s) => s.trim().to_string(),
        Json::Null => String::new(),
        other => other.to_string(),
    };
    let words = slug(&text);
    let words = words
        .strip_prefix("ticket_is_")
        .or_else(|| words.strip_prefix("ticket_"))
        .unwrap_or(&words);
    let kind = match words {
        "created" | "create" => Some(EventKind::Created),
        "updated" | "update" => Some(EventKind::Updated),
        "deleted" | "delete" => Some(EventKind::Deleted),
        _ => None,
    };
    match kind {
        Some(kind) => (kind, Some(text)),
        None => {
            warnings.push(if text.is_empty() {
                format!("{key} is empty; read as ticket.updated")
            } else {
                format!(
                    "{key} '{text}' is not ticket.created, ticket.updated or ticket.deleted; read as ticket.updated"
                )
            });
            (EventKind::Updated, (!text.is_empty()).then_some(text))
        }
    }
}

/// Normalizes one ticket from the REST API (`GET /tickets`, `/tickets/{id}`).
pub fn normalize_api_ticket(
    ticket: &Json,
    config: &FreshserviceConfig,
) -> Result<Normalized, String> {
    let object = ticket
        .as_object()
        .ok_or_else(|| "a ticket in the API answer is not a JSON object".to_string())?;
    let ticket_id = match object.get("id").map(parse_id) {
        Some(Ok(Some(id))) => id,
        _ => return Err("a ticket in the API answer has no usable id".to_string()),
    };
    let mut event = TicketEvent::new(
        Provider::Freshservice,
        ticket_id,
        EventKind::Updated,
        Source::Poll,
    );
    let mut warnings = Vec::new();
    match object
        .get("updated_at")
        .map(|v| timestamp_field(v, &TimeZone::UTC))
    {
        Some(Ok(Some((ts, _)))) => event.updated_at = Some(ts),
        _ => {
            return Err(format!(
                "ticket {ticket_id} in the API answer has no usable updated_at"
            ));
        }
    }
    let body = Body::api(object);
    apply_fields(&body, API_FIELDS, config, false, &mut event, &mut warnings);
    apply_code(
        &body,
        "status",
        &config.statuses,
        (Field::Status, Field::StatusId),
        "[freshservice.statuses]",
        &mut event,
        &mut warnings,
    );
    apply_code(
        &body,
        "priority",
        &config.priorities,
        (Field::Priority, Field::PriorityId),
        "[freshservice.priorities]",
        &mut event,
        &mut warnings,
    );
    let flagged = |key: &str| object.get(key).and_then(Json::as_bool) == Some(true);
    if flagged("deleted") || flagged("spam") {
        let status = if flagged("spam") {
            STATUS_SPAM
        } else {
            STATUS_DELETED
        };
        set_status_id(&mut event, status, config);
    }
    let received_at = event.updated_at.clone().unwrap_or_else(timestamp::now);
    finish(&mut event, config, &received_at);
    Ok(Normalized { event, warnings })
}

/// An event for a ticket a deleted or spam listing returned.
pub fn deleted_event(
    ticket_id: i64,
    updated_at: Option<String>,
    spam: bool,
    config: &FreshserviceConfig,
) -> TicketEvent {
    let mut event = TicketEvent::new(
        Provider::Freshservice,
        ticket_id,
        EventKind::Deleted,
        Source::Poll,
    );
    event.updated_at = updated_at;
    set_status_id(
        &mut event,
        if spam { STATUS_SPAM } else { STATUS_DELETED },
        config,
    );
    let received_at = event.updated_at.clone().unwrap_or_else(timestamp::now);
    finish(&mut event, config, &received_at);
    event
}

fn mark_deleted(event: &mut TicketEvent, config: &FreshserviceConfig) {
    let spam = matches!(
        event.get(Field::StatusId),
        Some(Some(Value::Int(STATUS_SPAM)))
    );
    set_status_id(
        event,
        if spam { STATUS_SPAM } else { STATUS_DELETED },
        config,
    );
}

fn set_status_id(event: &mut TicketEvent, id: i64, config: &FreshserviceConfig) {
    let fallback = if id == STATUS_SPAM { "spam" } else { "deleted" };
    let name = config.statuses.name(id).unwrap_or(fallback).to_string();
    event.set(Field::StatusId, Some(Value::Int(id)));
    event.set(Field::Status, Some(Value::Text(name)));
}

/// Sets `closed_at` when the event moves the ticket to a done status.
fn finish(event: &mut TicketEvent, config: &FreshserviceConfig, received_at: &str) {
    let done = event
        .status()
        .is_some_and(|status| config.done_statuses.iter().any(|d| d == status));
    event.closed_at = done.then(|| {
        event
            .updated_at
            .clone()
            .unwrap_or_else(|| received_at.to_string())
    });
}

fn apply_fields(
    body: &Body<'_>,
    mapping: &[(&str, Field)],
    config: &FreshserviceConfig,
    html: bool,
    event: &mut TicketEvent,
    warnings: &mut Vec<String>,
) {
    for (name, field) in mapping {
        let Some((key, value)) = body.find(name) else {
            continue;
        };
        let parsed = match field.kind() {
            super::Kind::Text
                if matches!(field, Field::CreatedAt | Field::DueBy | Field::FrDueBy) =>
            {
                timestamp_field(value, &config.timezone).map(|v| v.map(|(ts, _)| Value::Text(ts)))
            }
            super::Kind::Text => text_field(value, html).map(|v| v.map(Value::Text)),
            super::Kind::Int => parse_id(value).map(|v| v.map(Value::Int)),
            super::Kind::Bool => bool_field(value).map(|v| v.map(Value::Bool)),
        };
        match parsed {
            Ok(value) => event.set(*field, value),
            Err(message) => warnings.push(format!("{key}: {message}; left unchanged")),
        }
    }
}

/// Reads a status or priority given as an id, a numeric string or a name.
fn apply_code(
    body: &Body<'_>,
    name: &str,
    table: &CodeTable,
    (name_field, id_field): (Field, Field),
    section: &str,
    event: &mut TicketEvent,
    warnings: &mut Vec<String>,
) {
    let Some((key, value)) = body.find(name) else {
        return;
    };
    let clear = |event: &mut TicketEvent| {
        event.set(name_field, None);
        event.set(id_field, None);
    };
    match value {
        Json::Null => clear(event),
        Json::String(s) if s.trim().is_empty() => clear(event),
        Json::String(s) if s.trim().parse::<f64>().is_err() => {
            let text = html_unescape(s.trim());
            let text = text.as_str();
            match table.lookup_name(text) {
                Some(id) => {
                    event.set(id_field, Some(Value::Int(id)));
                    event.set(
                        name_field,
                        Some(Value::Text(table.name(id).unwrap_or("unknown").to_string())),
                    );
                }
                None => {
                    warnings.push(format!(
                        "{key}: '{text}' is not a known name; stored as unknown (add it to {section})"
                    ));
                    event.set(id_field, None);
                    event.set(name_field, Some(Value::Text("unknown".to_string())));
                }
            }
        }
        other => {
            match parse_id(other) {
                Ok(Some(id)) => {
                    if table.name(id).is_none() {
                        warnings.push(format!("{key}: {id} is not in the table; stored as unknown (add it to {section})"));
                    }
                    event.set(id_field, Some(Value::Int(id)));
                    event.set(
                        name_field,
                        Some(Value::Text(table.name(id).unwrap_or("unknown").to_string())),
                    );
                }
                Ok(None) => clear(event),
                Err(message) => warnings.push(format!("{key}: {message}; left unchanged")),
            }
        }
    }
}

/// Reads an id given as a number, a numeric string or a prefixed string
/// (`INC-123`, `#SR-45`). Null and empty read as `None`.
pub fn parse_id(value: &Json) -> Result<Option<i64>, String> {
    match value {
        Json::Null => Ok(None),
        Json::Number(n) => {
            if let Some(id) = n.as_i64() {
                return positive(id, value);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f > 0.0 && f < 9.0e15 => Ok(Some(f as i64)),
                _ => Err(format!("{value} is not an id")),
            }
        }
        Json::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            let digits = text.trim_start_matches(|c: char| !c.is_ascii_digit());
            let prefix = &text[..text.len() - digits.len()];
            let prefix_ok = prefix
                .chars()
                .all(|c| c.is_ascii_alphabetic() || matches!(c, '#' | '-' | '_' | ' '));
            match digits.parse::<i64>() {
                Ok(id) if prefix_ok => positive(id, value),
                _ => Err(format!("'{text}' is not an id")),
            }
        }
        other => Err(format!("{other} is not an id")),
    }
}

fn positive(id: i64, value: &Json) -> Result<Option<i64>, String> {
    if id > 0 {
        Ok(Some(id))
    } else {
        Err(format!("{value} is not a positive id"))
    }
}

pub(crate) fn text_field(value: &Json, html: bool) -> Result<Option<String>, String> {
    let text = match value {
        Json::Null => return Ok(None),
        Json::String(s) if html => html_unescape(s),
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => return Err(format!("{other} is not text")),
    };
    // PostgreSQL text cannot hold NUL; nothing legitimate sends it.
    let text = text.replace('\0', "");
    let trimmed = text.trim();
    Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
}

/// A timestamp in stored form, with a note when its zone was a guess.
pub(crate) fn timestamp_field(
    value: &Json,
    zone: &TimeZone,
) -> Result<Option<(String, Option<String>)>, String> {
    let text = match value {
        Json::Null => return Ok(None),
        Json::String(s) if s.trim().is_empty() => return Ok(None),
        Json::String(s) => s.clone(),
        // Unix seconds, unquoted.
        Json::Number(n) => n.to_string(),
        other => return Err(format!("{other} is not a timestamp")),
    };
    let reading = timestamp::read(&text, zone)?;
    Ok(Some((timestamp::format(reading.instant), reading.note)))
}

fn bool_field(value: &Json) -> Result<Option<bool>, String> {
    match value {
        Json::Null => Ok(None),
        Json::Bool(b) => Ok(Some(*b)),
        Json::Number(n) if n.as_i64() == Some(0) => Ok(Some(false)),
        Json::Number(n) if n.as_i64() == Some(1) => Ok(Some(true)),
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "true" | "yes" | "1" => Ok(Some(true)),
            "false" | "no" | "0" => Ok(Some(false)),
            other => Err(format!("'{other}' is not true or false")),
        },
        other => Err(format!("{other} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn normalize(body: Json) -> Result<Normalized, Rejection> {
        normalize_webhook(
            &body,
            &Config::default().freshservice,
            "2026-01-01T00:00:00Z",
        )
    }

    fn text(event: &TicketEvent, field: Field) -> Option<String> {
        match event.get(field) {
            Some(Some(v)) => Some(v.to_string()),
            _ => None,
        }
    }

    #[test]
    fn seed_payload() {
        let n = normalize(json!({
            "event": "ticket.updated", "ticket_id": 123, "subject": "Printer", "status_id": 3,
            "priority_id": 2, "requester_email": "a@b.c", "requester_name": "A", "requester_id": 9,
            "responder_id": 5, "group_id": 7, "department_id": 8, "updated_at": "2024-01-15T10:30:00Z"
        }))
        .unwrap();
        let e = n.event;
        assert_eq!(e.ticket_id, 123);
        assert_eq!(e.kind, EventKind::Updated);
        assert_eq!(text(&e, Field::Status).as_deref(), Some("pending"));
        assert_eq!(text(&e, Field::Priority).as_deref(), Some("medium"));
        assert_eq!(text(&e, Field::ResponderId).as_deref(), Some("5"));
        assert_eq!(e.updated_at.as_deref(), Some("2024-01-15T10:30:00Z"));
        assert_eq!(e.closed_at, None);
        assert!(n.warnings.is_empty());
    }

    #[test]
    fn ids_in_every_shape() {
        assert_eq!(parse_id(&json!(5)), Ok(Some(5)));
        assert_eq!(parse_id(&json!("5")), Ok(Some(5)));
        assert_eq!(parse_id(&json!("INC-123")), Ok(Some(123)));
        assert_eq!(parse_id(&json!("#SR-45")), Ok(Some(45)));
        assert_eq!(parse_id(&json!(12.0)), Ok(Some(12)));
        assert_eq!(parse_id(&json!("")), Ok(None));
        assert_eq!(parse_id(&json!(null)), Ok(None));
        assert!(parse_id(&json!("12abc")).is_err());
        assert!(parse_id(&json!(-3)).is_err());
        assert!(parse_id(&json!([1])).is_err());
    }

    #[test]
    fn statuses_by_id_string_or_name() {
        for (value, name, id) in [
            (json!("6"), "spam", Some(6)),
            (json!("Waiting on Customer"), "waiting_customer", Some(9)),
            (json!("open"), "open", Some(2)),
            (json!(99), "unknown", Some(99)),
            (json!("Bogus"), "unknown", None),
        ] {
            let n = normalize(json!({"ticket_id": 1, "status_id": value})).unwrap();
            assert_eq!(
                text(&n.event, Field::Status).as_deref(),
                Some(name),
                "{value}"
            );
            assert_eq!(
                text(&n.event, Field::StatusId),
                id.map(|i: i64| i.to_string()),
                "{value}"
            );
        }
    }

    #[test]
    fn null_clears_and_absent_leaves_alone() {
        let n = normalize(json!({"ticket_id": 1, "responder_id": null, "group_id": ""})).unwrap();
        assert_eq!(n.event.get(Field::ResponderId), &Some(None));
        assert_eq!(n.event.get(Field::GroupId), &Some(None));
        assert_eq!(n.event.get(Field::DepartmentId), &None);
    }

    #[test]
    fn done_status_sets_closed_at() {
        let n =
            normalize(json!({"ticket_id": 1, "status_id": 5, "updated_at": "2024-01-15 10:30:00"}))
                .unwrap();
        assert_eq!(n.event.closed_at.as_deref(), Some("2024-01-15T10:30:00Z"));
        let n = normalize(json!({"ticket_id": 1, "status_id": 4})).unwrap();
        assert_eq!(n.event.closed_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn deleted_events() {
        let n =
            normalize(json!({"event": "ticket.deleted", "ticket_id": 1, "status_id": 6})).unwrap();
        assert_eq!(n.event.status(), Some("spam"));
        let n = normalize(json!({"event": "ticket.deleted", "ticket_id": 1})).unwrap();
        assert_eq!(n.event.status(), Some("deleted"));
        assert!(n.event.closed_at.is_some());
    }

    #[test]
    fn rejections_name_the_problem() {
        assert_eq!(
            normalize(json!({"subject": "x"})).unwrap_err().message,
            "ticket_id is required"
        );
        assert!(
            normalize(json!({"ticket_id": "abc"}))
                .unwrap_err()
                .message
                .contains("'abc' is not an id")
        );
        assert!(
            normalize(json!({"ticket_id": ""}))
                .unwrap_err()
                .message
                .contains("ticket_id is required")
        );
        assert!(
            normalize(json!([1]))
                .unwrap_err()
                .message
                .contains("JSON object")
        );
    }

    #[test]
    fn odd_events_and_timestamps_warn_instead_of_rejecting() {
        let n = normalize(json!({"event": "ticket.merged", "ticket_id": 1})).unwrap();
        assert_eq!(n.event.kind, EventKind::Updated);
        assert!(
            n.warnings[0].contains("'ticket.merged'"),
            "{:?}",
            n.warnings
        );
        let n = normalize(json!({"event": "Ticket Created", "ticket_id": 1})).unwrap();
        assert_eq!(n.event.kind, EventKind::Created);
        assert!(n.warnings.is_empty());
        let n = normalize(json!({"event": "ticket.updated", "ticket_id": 1, "updated_at": "soon"}))
            .unwrap();
        assert_eq!(n.event.updated_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert!(n.warnings[0].contains("'soon'"), "{:?}", n.warnings);
        assert!(n.warnings[0].contains("arrival"), "{:?}", n.warnings);
    }

    #[test]
    fn odd_fields_warn_and_stay_unchanged() {
        let n = normalize(
            json!({"event": "ticket.updated", "ticket_id": 1, "group_id": "Service Desk"}),
        )
        .unwrap();
        assert_eq!(n.event.get(Field::GroupId), &None);
        assert!(n.warnings[0].contains("group_id"), "{:?}", n.warnings);
    }

    #[test]
    fn api_ticket() {
        let n = normalize_api_ticket(
            &json!({"id": 42, "subject": "S", "status": 2, "priority": 4, "updated_at": "2024-01-15T10:30:00Z",
                    "responder_id": null, "is_escalated": true, "type": "Incident"}),
            &Config::default().freshservice,
        )
        .unwrap();
        assert_eq!(n.event.source, Source::Poll);
        assert_eq!(text(&n.event, Field::Priority).as_deref(), Some("urgent"));
        assert_eq!(n.event.get(Field::ResponderId), &Some(None));
        assert_eq!(
            text(&n.event, Field::TicketType).as_deref(),
            Some("Incident")
        );
        assert!(normalize_api_ticket(&json!({"id": 1}), &Config::default().freshservice).is_err());
    }
}
