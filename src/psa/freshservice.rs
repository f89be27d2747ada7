//! Freshservice: turning a webhook body or an API ticket into a
//! `TicketEvent`, with its status and priority tables (`[freshservice]` in
//! `config`) and its statuses for deleted and spam tickets.

use jiff::tz::TimeZone;
use serde_json::Value as Json;

use super::normalize::{Code, Envelope, api_event, finish, plain_fields, read_value};
pub use super::normalize::{Normalized, Rejection};
pub use super::webhook_body::parse_id;
use super::webhook_body::{Body, html_unescape};
use super::{EventKind, Field, Provider, Source, TicketEvent, Value};
use crate::config::{CodeTable, FreshserviceConfig};
use crate::error::PsaError;
use crate::timestamp;

/// Status id Freshservice uses for spam.
pub const STATUS_SPAM: i64 = 6;
/// Status id Freshservice uses for deleted tickets.
pub const STATUS_DELETED: i64 = 7;

/// How a Freshservice ticket can be gone: deleted (to its trash) or
/// marked spam. Each has its status id, its `GET /tickets?filter=` listing
/// and its flag on an API ticket, all named as the removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    Spam,
}

impl Removal {
    pub const ALL: [Removal; 2] = [Removal::Deleted, Removal::Spam];

    /// The listing filter and the API ticket's flag (`"deleted": true`).
    pub fn flag(self) -> &'static str {
        match self {
            Removal::Deleted => "deleted",
            Removal::Spam => "spam",
        }
    }

    pub fn status_id(self) -> i64 {
        match self {
            Removal::Deleted => STATUS_DELETED,
            Removal::Spam => STATUS_SPAM,
        }
    }

    /// Sets the status to this removal's, named by the status table (by
    /// the flag where the table lacks the id).
    fn mark(self, event: &mut TicketEvent, config: &FreshserviceConfig) {
        let id = self.status_id();
        let name = config.statuses.name(id).unwrap_or(self.flag()).to_string();
        event.set(Field::StatusId, Some(Value::Int(id)));
        event.set(Field::Status, Some(Value::Text(name)));
    }
}

/// What a Freshservice webhook body must carry, and how the answers and
/// warnings about it name things.
const ENVELOPE: Envelope = Envelope {
    provider: Provider::Freshservice,
    not_an_object: "the body must be a JSON object such as {\"event\": \"ticket.updated\", \"ticket_id\": 123}",
    missing_id: "ticket_id is required",
    id_name: "ticket_id",
    warn_without_event: true,
    version_hint: ", so it is ordered by arrival; set [freshservice] timezone or a date: filter in the template",
};

/// Where `GET /tickets` carries a field, if it does: under its own name
/// but for the description (as text) and the type. An API ticket has no
/// requester email or name, only the id.
fn api_key(field: Field) -> Option<&'static str> {
    match field {
        Field::Description => Some("description_text"),
        Field::TicketType => Some("type"),
        Field::RequesterEmail | Field::RequesterName => None,
        field => Some(field.column()),
    }
}

/// Normalizes a webhook body (already parsed, leniently if need be). Only a
/// body without a readable ticket id is refused; everything else odd about
/// it (an unknown event, an unreadable timestamp or field) is a warning.
pub fn normalize_webhook(
    body: &Json,
    config: &FreshserviceConfig,
    received_at: &str,
) -> Result<Normalized, Rejection> {
    let top = ENVELOPE.object(body)?;
    let body = Body::webhook(top, &config.webhook_fields);
    let (mut event, mut warnings) = ENVELOPE.open(&body, &config.timezone, received_at)?;
    let fields = plain_fields().map(|field| (field.column(), field));
    apply_fields(&body, fields, config, true, &mut event, &mut warnings);
    if event.kind == EventKind::Deleted {
        mark_deleted(&mut event, config);
    }
    let done = &config.done_statuses;
    Ok(Normalized::finished(event, warnings, done, received_at))
}

/// Normalizes one ticket from the REST API (`GET /tickets`, `/tickets/{id}`).
pub fn normalize_api_ticket(
    ticket: &Json,
    config: &FreshserviceConfig,
) -> Result<Normalized, PsaError> {
    let object = ticket.as_object().ok_or(PsaError::TicketNotAnObject)?;
    // The API's timestamps are UTC with a `Z`.
    let provider = Provider::Freshservice;
    let mut event = api_event(provider, object, "id", "updated_at", &TimeZone::UTC)?;
    let mut warnings = Vec::new();
    let body = Body::api(object);
    let fields = plain_fields().filter_map(|field| Some((api_key(field)?, field)));
    apply_fields(&body, fields, config, false, &mut event, &mut warnings);
    // A ticket flagged both is spam, as the spam listing would say.
    let flagged =
        |removal: Removal| object.get(removal.flag()).and_then(Json::as_bool) == Some(true);
    if let Some(removal) = [Removal::Spam, Removal::Deleted]
        .into_iter()
        .find(|r| flagged(*r))
    {
        removal.mark(&mut event, config);
    }
    let received_at = event.updated_at.clone().unwrap_or_else(timestamp::now);
    Ok(Normalized::finished(
        event,
        warnings,
        &config.done_statuses,
        &received_at,
    ))
}

/// An event for a ticket a deleted or spam listing returned.
pub fn deleted_event(
    ticket_id: i64,
    updated_at: Option<String>,
    removal: Removal,
    config: &FreshserviceConfig,
) -> TicketEvent {
    let mut event = TicketEvent::new(
        Provider::Freshservice,
        ticket_id,
        EventKind::Deleted,
        Source::Poll,
    );
    event.updated_at = updated_at;
    removal.mark(&mut event, config);
    let received_at = event.updated_at.clone().unwrap_or_else(timestamp::now);
    finish(&mut event, &config.done_statuses, &received_at);
    event
}

/// A delete event keeps a spam status it carries; anything else is deleted.
fn mark_deleted(event: &mut TicketEvent, config: &FreshserviceConfig) {
    let removal = match event.get(Field::StatusId) {
        Some(Some(Value::Int(STATUS_SPAM))) => Removal::Spam,
        _ => Removal::Deleted,
    };
    removal.mark(event, config);
}

/// Sets the `fields` (body key, field) the body carries, then the status
/// and priority; a value that cannot be read is a warning and its field is
/// left alone.
fn apply_fields(
    body: &Body<'_>,
    fields: impl Iterator<Item = (&'static str, Field)>,
    config: &FreshserviceConfig,
    html: bool,
    event: &mut TicketEvent,
    warnings: &mut Vec<String>,
) {
    for (name, field) in fields {
        let Some((key, value)) = body.find(name) else {
            continue;
        };
        match read_value(field, value, &config.timezone, html) {
            Ok(value) => event.set(field, value),
            Err(error) => warnings.push(format!("{key}: {error}; left unchanged")),
        }
    }
    for code in Code::ALL {
        let table = match code {
            Code::Status => &config.statuses,
            Code::Priority => &config.priorities,
        };
        apply_code(body, code, table, event, warnings);
    }
}

/// Reads a status or priority given as an id, a numeric string or a name.
fn apply_code(
    body: &Body<'_>,
    code: Code,
    table: &CodeTable,
    event: &mut TicketEvent,
    warnings: &mut Vec<String>,
) {
    let Some((key, value)) = body.find(code.name()) else {
        return;
    };
    let (name_field, id_field) = code.fields();
    let section = || code.section(Provider::Freshservice);
    let mut set = |id: Option<i64>| {
        let name = id.and_then(|id| table.name(id)).unwrap_or("unknown");
        event.set(id_field, id.map(Value::Int));
        event.set(name_field, Some(Value::Text(name.to_string())));
    };
    let id = match value {
        Json::String(s) if s.trim().is_empty() => Ok(None),
        Json::String(s) if s.trim().parse::<f64>().is_err() => {
            let text = html_unescape(s.trim());
            let id = table.lookup_name(&text);
            if id.is_none() {
                warnings.push(format!(
                    "{key}: '{text}' is not a known name; stored as unknown (add it to {})",
                    section()
                ));
            }
            set(id);
            return;
        }
        other => parse_id(other),
    };
    match id {
        Ok(Some(id)) => {
            if table.name(id).is_none() {
                warnings.push(format!(
                    "{key}: {id} is not in the table; stored as unknown (add it to {})",
                    section()
                ));
            }
            set(Some(id));
        }
        Ok(None) => {
            event.set(name_field, None);
            event.set(id_field, None);
        }
        Err(error) => warnings.push(format!("{key}: {error}; left unchanged")),
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
