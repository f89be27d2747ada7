//! SuperOps: turning a ticket from its GraphQL API (`getTicketList`,
//! `getTicket`) or a webhook body into a `TicketEvent`, its status and
//! priority names read through the maps of `[superops]` in `config`.
//!
//! SuperOps tickets carry `ticketId`, `status` and `priority` as names the
//! account chooses, `updatedTime` without a zone offset, and `requester`,
//! `technician`, `techGroup` and `client` as JSON scalars holding ids and
//! names. A webhook body (SuperOps has no documented outgoing webhook; MSPs
//! push from a workflow or an automation tool) may use those names or the
//! guide's (`ticket_id`, `status_id`, `updated_at`, ...).

use serde_json::{Map, Value as Json};

use super::normalize::{
    Code, Envelope, Normalized, Rejection, api_event, finish, plain_fields, read_value,
};
use super::webhook_body::{Body, FIELD_KEYS, WebhookFields, scan_ticket_id as scan_body};
use super::{EventKind, Field, Provider, Source, TicketEvent, Value};
use crate::config::{NameMap, SuperopsConfig};
use crate::error::PsaError;

/// The status stored for a ticket SuperOps says no longer exists. Its
/// `status_id` is Freshservice's deleted id, which readers already treat
/// as gone.
pub const DELETED_STATUS: &str = "deleted";
const DELETED_STATUS_ID: i64 = super::freshservice::STATUS_DELETED;

/// The ticket fields `getTicketList` and `getTicket` select. The JSON
/// scalars are selected bare: a sub-selection is a query error.
pub const TICKET_FIELDS: &str = "ticketId displayId subject status priority requester technician techGroup client site createdTime updatedTime";

/// The priority id stored next to a normalized priority name, so that
/// readers ordering by `priority_id` see SuperOps tickets in the same order
/// as Freshservice's (1 low .. 4 urgent).
fn priority_id(normalized: &str) -> Option<i64> {
    match normalized {
        "low" => Some(1),
        "medium" => Some(2),
        "high" => Some(3),
        "urgent" => Some(4),
        _ => None,
    }
}

/// Where SuperOps' own keys carry a Codex body field (a name from
/// `FIELD_KEYS`); Codex's names (the guide's) are read after these.
fn superops_keys_of(field: &str) -> &'static [&'static str] {
    match field {
        "ticket_id" => &["ticketId", "ticket.ticketId"],
        "event" => &["eventType", "event_name"],
        "updated_at" => &["updatedTime"],
        "created_at" => &["createdTime"],
        // Before the guide's `status_id`: SuperOps' status is a name.
        "status" => &["status"],
        "priority" => &["priority"],
        "ticket_type" => &["ticketType", "requestType"],
        "requester_id" => &["requester.userId", "requesterId"],
        "requester_name" => &["requester.name", "requesterName"],
        "requester_email" => &["requester.email", "requesterEmail"],
        "responder_id" => &["technician.userId", "technicianId", "technician.id"],
        "group_id" => &["techGroup.groupId", "techGroupId", "techGroup.id"],
        "department_id" => &["client.accountId", "clientId", "accountId", "client.id"],
        _ => &[],
    }
}

/// SuperOps' keys as the mapping a body reads before Codex's own keys.
fn superops_keys() -> &'static WebhookFields {
    static KEYS: std::sync::OnceLock<WebhookFields> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = FIELD_KEYS
            .iter()
            .map(|(field, _)| (field.to_string(), superops_keys_of(field)))
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(field, keys)| (field, keys.iter().map(|k| k.to_string()).collect()))
            .collect();
        WebhookFields { keys }
    })
}

/// What a SuperOps webhook body must carry, and how the answers and
/// warnings about it name things.
const ENVELOPE: Envelope = Envelope {
    provider: Provider::SuperOps,
    not_an_object: "the body must be a JSON object such as {\"ticketId\": \"123\", \"status\": \"Open\", \"updatedTime\": \"2024-01-15T10:30:00\"}",
    missing_id: "ticketId (or ticket_id) is required",
    id_name: "ticketId",
    warn_without_event: false,
    version_hint: "",
};

/// Whether SuperOps tickets carry a field under Codex's name: they have no
/// due dates and no escalation flag.
fn carried(field: &Field) -> bool {
    !matches!(field, Field::DueBy | Field::FrDueBy | Field::IsEscalated)
}

/// Normalizes a webhook body. Only a body without a readable ticket id is
/// refused; anything else odd is a warning.
pub fn normalize_webhook(
    body: &Json,
    config: &SuperopsConfig,
    received_at: &str,
) -> Result<Normalized, Rejection> {
    let top = with_scalars_parsed(ENVELOPE.object(body)?);
    let body = Body::webhook(&top, superops_keys());
    let (mut event, mut warnings) = ENVELOPE.open(&body, &config.timezone, received_at)?;
    apply(&body, config, &mut event, &mut warnings);
    if event.kind == EventKind::Deleted {
        mark_deleted(&mut event);
    }
    Ok(Normalized::finished(
        event,
        warnings,
        &config.done_statuses,
        received_at,
    ))
}

/// Normalizes one ticket from `getTicketList` or `getTicket`.
pub fn normalize_api_ticket(
    ticket: &Json,
    config: &SuperopsConfig,
) -> Result<Normalized, PsaError> {
    let object = with_scalars_parsed(ticket.as_object().ok_or(PsaError::TicketNotAnObject)?);
    let (provider, zone) = (Provider::SuperOps, &config.timezone);
    let mut event = api_event(provider, &object, "ticketId", "updatedTime", zone)?;
    let mut warnings = Vec::new();
    let body = Body::webhook(&object, superops_keys());
    apply(&body, config, &mut event, &mut warnings);
    let received_at = event.updated_at.clone().unwrap_or_default();
    let done = &config.done_statuses;
    Ok(Normalized::finished(event, warnings, done, &received_at))
}

/// A SuperOps client's `accountId` (a numeric string, often 19 digits) as
/// the department id the predecessor's `companies.external_id` matches.
/// Strict, unlike ticket ids: a prefix or a fraction is not read past, so
/// an id that only looks like another client's never finds that company.
fn client_account_id(value: &Json) -> Result<Option<i64>, PsaError> {
    let unusable = |shown: String| Err(PsaError::NotAnAccountId { shown });
    match value {
        Json::Null => Ok(None),
        Json::Number(n) => match n.as_i64() {
            Some(id) if id > 0 => Ok(Some(id)),
            _ => unusable(n.to_string()),
        },
        Json::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            match text.parse::<i64>() {
                Ok(id) if id > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(id)),
                _ => unusable(format!("'{text}'")),
            }
        }
        other => unusable(other.to_string()),
    }
}

/// The event for a ticket SuperOps says does not exist (any more): stamped
/// `updated_at`, so that no older event brings it back.
pub fn deleted_event(ticket_id: i64, updated_at: String, config: &SuperopsConfig) -> TicketEvent {
    let mut event = TicketEvent::new(
        Provider::SuperOps,
        ticket_id,
        EventKind::Deleted,
        Source::Poll,
    );
    event.updated_at = Some(updated_at.clone());
    mark_deleted(&mut event);
    finish(&mut event, &config.done_statuses, &updated_at);
    event
}

/// The ticket id in a body beyond repair (for the journal and the answer).
pub fn scan_ticket_id(body: &[u8], foreign: &[i64]) -> Option<i64> {
    scan_body(body, superops_keys(), foreign)
}

/// SuperOps' JSON scalars (`requester`, `technician`, ...) may reach a
/// webhook as text holding JSON; read them as the objects they are.
fn with_scalars_parsed(object: &Map<String, Json>) -> Map<String, Json> {
    let mut object = object.clone();
    for key in ["requester", "technician", "techGroup", "client", "site"] {
        if let Some(Json::String(text)) = object.get(key) {
            if text.trim_start().starts_with('{') {
                if let Ok(parsed @ Json::Object(_)) = serde_json::from_str::<Json>(text) {
                    object.insert(key.to_string(), parsed);
                }
            }
        }
    }
    object
}

fn apply(
    body: &Body<'_>,
    config: &SuperopsConfig,
    event: &mut TicketEvent,
    warnings: &mut Vec<String>,
) {
    // An unassigned technician or group comes as a null scalar: it clears
    // the ids it would carry.
    for (scalar, fields) in [
        ("technician", &[Field::ResponderId][..]),
        ("techGroup", &[Field::GroupId][..]),
        ("client", &[Field::DepartmentId][..]),
        ("requester", &[Field::RequesterId, Field::RequesterName][..]),
    ] {
        if let Some((_, Json::Null)) = body.find(scalar) {
            for field in fields {
                event.set(*field, None);
            }
        }
    }
    for field in plain_fields().filter(carried) {
        let Some((key, value)) = body.find(field.column()) else {
            continue;
        };
        let parsed = match field {
            Field::DepartmentId => client_account_id(value).map(|v| v.map(Value::Int)),
            field => read_value(field, value, &config.timezone, true),
        };
        match parsed {
            Ok(value) => event.set(field, value),
            // The ticket's client is one Codex cannot name: keeping the
            // old department would file it under the old company.
            Err(error) if field == Field::DepartmentId => {
                event.set(field, None);
                warnings.push(format!(
                    "{key}: {error}; stored without a client (department_id and company_account_number empty)"
                ));
            }
            Err(error) => warnings.push(format!("{key}: {error}; left unchanged")),
        }
    }
    for code in Code::ALL {
        let Some((key, value)) = body.find(code.name()) else {
            continue;
        };
        let map = match code {
            Code::Status => &config.statuses,
            Code::Priority => &config.priorities,
        };
        let name = match name_of(
            &key,
            value,
            map,
            &code.section(Provider::SuperOps),
            warnings,
        ) {
            Ok(name) => name,
            Err(error) => {
                warnings.push(format!("{key}: {error}; left unchanged"));
                continue;
            }
        };
        // SuperOps statuses have no numeric id; clearing it also undoes a
        // deleted mark when a ticket is restored. A priority's id orders
        // SuperOps tickets among Freshservice's.
        let id = match code {
            Code::Status => None,
            Code::Priority => name.as_deref().and_then(priority_id),
        };
        let (name_field, id_field) = code.fields();
        event.set(name_field, name.map(Value::Text));
        event.set(id_field, id.map(Value::Int));
    }
}

/// The normalized name for a status or priority as SuperOps names it; an
/// unknown name is kept as it is, with a warning.
fn name_of(
    key: &str,
    value: &Json,
    map: &NameMap,
    section: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, PsaError> {
    let text = match value {
        Json::Null => return Ok(None),
        Json::String(s) => super::webhook_body::html_unescape(s.trim()),
        Json::Number(n) => n.to_string(),
        // `{"name": "Open"}` where a tool sends the whole object.
        Json::Object(o) => match o.get("name").and_then(Json::as_str) {
            Some(name) => name.trim().to_string(),
            None => {
                return Err(PsaError::NoName {
                    shown: value.to_string(),
                });
            }
        },
        other => {
            return Err(PsaError::NotAName {
                shown: other.to_string(),
            });
        }
    };
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(normalized) = map.get(&text) {
        return Ok(Some(normalized.to_string()));
    }
    // Codex's own normalized names are accepted as they are.
    if map.values().any(|v| v == text) {
        return Ok(Some(text));
    }
    warnings.push(format!(
        "{key}: '{text}' is not a known name; stored as it is (map it in {section})"
    ));
    Ok(Some(text))
}

fn mark_deleted(event: &mut TicketEvent) {
    event.set(Field::Status, Some(Value::Text(DELETED_STATUS.to_string())));
    event.set(Field::StatusId, Some(Value::Int(DELETED_STATUS_ID)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> SuperopsConfig {
        crate::config::Config::default().superops
    }

    #[test]
    fn an_api_ticket_with_superops_names() {
        let ticket = json!({
            "ticketId": "6913470261064048640",
            "displayId": "T-12",
            "subject": "Printer &amp; scanner",
            "status": "In Progress",
            "priority": "High",
            "requester": {"userId": "501", "name": "Ann"},
            "technician": {"userId": "77", "name": "Tom"},
            "techGroup": "{\"groupId\": \"9\", \"name\": \"L1\"}",
            "client": {"accountId": "4001", "name": "Acme"},
            "createdTime": "2024-01-15T09:00:00",
            "updatedTime": "2024-01-15T10:30:00.123"
        });
        let normalized = normalize_api_ticket(&ticket, &config()).unwrap();
        assert!(normalized.warnings.is_empty(), "{:?}", normalized.warnings);
        let event = normalized.event;
        assert_eq!(event.ticket_id, 6913470261064048640);
        assert_eq!(event.updated_at.as_deref(), Some("2024-01-15T10:30:00Z"));
        let get = |f| event.insert_value(f).cloned();
        assert_eq!(
            get(Field::Subject),
            Some(Value::Text("Printer & scanner".into()))
        );
        assert_eq!(get(Field::Status), Some(Value::Text("in_progress".into())));
        assert_eq!(get(Field::StatusId), None);
        assert_eq!(get(Field::Priority), Some(Value::Text("high".into())));
        assert_eq!(get(Field::PriorityId), Some(Value::Int(3)));
        assert_eq!(get(Field::RequesterId), Some(Value::Int(501)));
        assert_eq!(get(Field::RequesterName), Some(Value::Text("Ann".into())));
        assert_eq!(get(Field::ResponderId), Some(Value::Int(77)));
        assert_eq!(get(Field::GroupId), Some(Value::Int(9)));
        assert_eq!(get(Field::DepartmentId), Some(Value::Int(4001)));
        assert_eq!(
            get(Field::CreatedAt),
            Some(Value::Text("2024-01-15T09:00:00Z".into()))
        );
    }

    #[test]
    fn unknown_names_are_kept_with_a_warning() {
        let ticket = json!({"ticketId": 5, "status": "Awaiting Parts", "priority": "P1",
                            "updatedTime": "2024-01-15T10:30:00"});
        let normalized = normalize_api_ticket(&ticket, &config()).unwrap();
        assert_eq!(
            normalized.event.status(),
            Some("Awaiting Parts"),
            "stored as it is"
        );
        assert_eq!(normalized.warnings.len(), 2, "{:?}", normalized.warnings);
        assert!(normalized.warnings[0].contains("[superops.statuses]"));
    }

    #[test]
    fn the_configured_zone_reads_offsetless_times() {
        let mut config = config();
        config.timezone = crate::timestamp::zone("Asia/Kolkata").unwrap();
        let ticket = json!({"ticketId": 5, "updatedTime": "2024-01-15T10:30:00"});
        let event = normalize_api_ticket(&ticket, &config).unwrap().event;
        assert_eq!(event.updated_at.as_deref(), Some("2024-01-15T05:00:00Z"));
    }

    #[test]
    fn webhook_bodies_in_either_naming() {
        let own = json!({"ticketId": "42", "status": "Closed", "technician": null,
                         "updatedTime": "2024-01-15T10:30:00"});
        let event = normalize_webhook(&own, &config(), "2024-01-16T00:00:00Z")
            .unwrap()
            .event;
        assert_eq!(event.ticket_id, 42);
        assert_eq!(event.kind, EventKind::Updated);
        assert_eq!(event.status(), Some("closed"));
        assert_eq!(event.closed_at.as_deref(), Some("2024-01-15T10:30:00Z"));
        assert_eq!(event.get(Field::ResponderId), &Some(None), "cleared");
        let guide = json!({"event": "ticket.deleted", "ticket_id": 43,
                           "updated_at": "2024-01-15T10:30:00Z"});
        let event = normalize_webhook(&guide, &config(), "2024-01-16T00:00:00Z")
            .unwrap()
            .event;
        assert_eq!(event.kind, EventKind::Deleted);
        assert_eq!(event.status(), Some("deleted"));
        let nested = json!({"ticket": {"ticketId": "44", "status": "Open"}});
        let event = normalize_webhook(&nested, &config(), "2024-01-16T00:00:00Z")
            .unwrap()
            .event;
        assert_eq!(event.ticket_id, 44);
        let missing = normalize_webhook(&json!({"status": "Open"}), &config(), "x").unwrap_err();
        assert!(missing.message.contains("ticketId"), "{}", missing.message);
    }

    #[test]
    fn client_account_ids_are_read_strictly() {
        let cases = [
            (json!("6028538986627784704"), Ok(Some(6028538986627784704))),
            (json!(4001), Ok(Some(4001))),
            (json!(" 4001 "), Ok(Some(4001))),
            (json!(""), Ok(None)),
            (json!(null), Ok(None)),
        ];
        for (value, expected) in cases {
            assert_eq!(client_account_id(&value), expected, "{value}");
        }
        for value in [
            json!("98765432109876543210"),
            json!("C-4001"),
            json!("acct-zz"),
            json!("+4001"),
            json!(4001.5),
            json!(0),
            json!(-3),
            json!(98765432109876543210_u128 as f64),
            json!(true),
        ] {
            let message = client_account_id(&value).unwrap_err().to_string();
            assert!(message.contains("account id"), "{value}: {message}");
        }
        // An unusable id clears the client: the old company no longer holds.
        let ticket = json!({"ticketId": 5, "updatedTime": "2024-01-15T10:30:00",
                            "client": {"accountId": "C-4001", "name": "Acme"}});
        let normalized = normalize_api_ticket(&ticket, &config()).unwrap();
        assert_eq!(normalized.event.get(Field::DepartmentId), &Some(None));
        assert!(
            normalized.warnings[0].contains("'C-4001'"),
            "{:?}",
            normalized.warnings
        );
    }

    #[test]
    fn superops_keys_are_read_for_thirteen_codex_fields() {
        let keys = &superops_keys().keys;
        assert_eq!(keys.len(), 13, "{keys:?}");
        assert_eq!(keys["status"], ["status"]);
        assert_eq!(keys["ticket_id"], ["ticketId", "ticket.ticketId"]);
    }

    #[test]
    fn a_broken_body_still_names_its_ticket() {
        assert_eq!(
            scan_ticket_id(br#"{"ticketId": "77", "status": Open,}"#, &[]),
            Some(77)
        );
    }
}
