//! What the providers share in turning a webhook body or an API ticket
//! into a `TicketEvent`: the envelope of a delivery (its event, ticket id
//! and version, read by each provider's [`Envelope`]), the readers of single
//! values, and `closed_at`.

use jiff::tz::TimeZone;
use serde_json::{Map, Value as Json};

use super::webhook_body::{Body, html_unescape, parse_id};
use super::{EventKind, Field, Kind, Provider, Source, TicketEvent, Value};
use crate::config::slug;
use crate::error::PsaError;
use crate::timestamp;

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

/// How a provider's webhook bodies name what every delivery must carry,
/// and what its messages say about them.
pub(crate) struct Envelope {
    pub provider: Provider,
    /// The 400 message for a body that is not a JSON object.
    pub not_an_object: &'static str,
    /// The 400 message for a body without a ticket id.
    pub missing_id: &'static str,
    /// The id's name in "… is empty; `id_name` is required".
    pub id_name: &'static str,
    /// Whether a body that names no event is worth a warning (a SuperOps
    /// workflow body often names none: it is an update).
    pub warn_without_event: bool,
    /// What the warning about an unreadable version adds after "applied
    /// with the time Codex received it (…) as its version".
    pub version_hint: &'static str,
}

impl Envelope {
    /// The object a body must be.
    pub(crate) fn object<'a>(&self, body: &'a Json) -> Result<&'a Map<String, Json>, Rejection> {
        body.as_object().ok_or_else(|| Rejection {
            message: self.not_an_object.to_string(),
            event: None,
        })
    }

    /// The event a body opens: its kind, ticket id and version, with
    /// warnings for what was odd. Only a body without a readable ticket id
    /// is refused; an unreadable version is applied as of `received_at`.
    pub(crate) fn open(
        &self,
        body: &Body<'_>,
        zone: &TimeZone,
        received_at: &str,
    ) -> Result<(TicketEvent, Vec<String>), Rejection> {
        let mut warnings = Vec::new();
        let (kind, event_name) = match body.find("event") {
            None if !self.warn_without_event => (EventKind::Updated, None),
            found => read_event(found, &mut warnings),
        };
        let reject = |message: String| Rejection {
            message,
            event: event_name.clone(),
        };
        let ticket_id = match body.find("ticket_id") {
            None => return Err(reject(self.missing_id.to_string())),
            Some((key, value)) => match parse_id(value) {
                Ok(Some(id)) => id,
                Ok(None) => {
                    return Err(reject(format!(
                        "{key} is empty; {} is required",
                        self.id_name
                    )));
                }
                Err(error) => return Err(reject(format!("{key}: {error}"))),
            },
        };
        let mut event = TicketEvent::new(self.provider, ticket_id, kind, Source::Webhook);
        if let Some((key, value)) = body.find("updated_at") {
            match timestamp_field(value, zone) {
                Ok(None) => {}
                Ok(Some((ts, note))) => {
                    event.updated_at = Some(ts);
                    warnings.extend(note.map(|n| format!("{key}: {n}")));
                }
                Err(error) => {
                    // Never a reason to lose the delivery: it is applied as
                    // of its arrival, and the journal keeps the raw body.
                    warnings.push(format!(
                        "{key}: {error}; applied with the time Codex received it ({received_at}) as its version{}",
                        self.version_hint
                    ));
                    event.updated_at = Some(received_at.to_string());
                }
            }
        }
        Ok((event, warnings))
    }
}

/// The event an API ticket opens: its id under `id_key` and its version
/// under `version_key` (read in `zone` when it names none). A ticket
/// without either cannot be ordered against other events and is skipped.
pub(crate) fn api_event(
    provider: Provider,
    object: &Map<String, Json>,
    id_key: &'static str,
    version_key: &'static str,
    zone: &TimeZone,
) -> Result<TicketEvent, PsaError> {
    let ticket_id = match object.get(id_key).map(parse_id) {
        Some(Ok(Some(id))) => id,
        _ => return Err(PsaError::TicketWithoutId { key: id_key }),
    };
    let mut event = TicketEvent::new(provider, ticket_id, EventKind::Updated, Source::Poll);
    match object.get(version_key).map(|v| timestamp_field(v, zone)) {
        Some(Ok(Some((ts, _)))) => event.updated_at = Some(ts),
        _ => {
            return Err(PsaError::TicketWithoutVersion {
                ticket_id,
                key: version_key,
            });
        }
    }
    Ok(event)
}

/// The two fields a PSA gives as a name or id from a table of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Status,
    Priority,
}

impl Code {
    pub(crate) const ALL: [Code; 2] = [Code::Status, Code::Priority];

    /// Its name among the body fields (`FIELD_KEYS`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Code::Status => "status",
            Code::Priority => "priority",
        }
    }

    /// The columns it fills: the normalized name and the id.
    pub(crate) fn fields(self) -> (Field, Field) {
        match self {
            Code::Status => (Field::Status, Field::StatusId),
            Code::Priority => (Field::Priority, Field::PriorityId),
        }
    }

    /// The configuration section where `provider`'s table for it is extended.
    pub(crate) fn section(self, provider: Provider) -> String {
        let table = match self {
            Code::Status => "statuses",
            Code::Priority => "priorities",
        };
        format!("[{provider}.{table}]")
    }
}

/// The fields a body carries under their own column names, in the order
/// they are read: all but the codes (status and priority with their ids),
/// which are read from their tables.
pub(crate) fn plain_fields() -> impl Iterator<Item = Field> {
    Field::ALL.into_iter().filter(|field| {
        !matches!(
            field,
            Field::Status | Field::StatusId | Field::Priority | Field::PriorityId
        )
    })
}

/// The value of `field` by its kind: a timestamp in stored form (read in
/// `zone` when it names none), text (HTML unescaped when `html`), an id or
/// a boolean. Null and empty read as `None` (clear the field).
pub(crate) fn read_value(
    field: Field,
    value: &Json,
    zone: &TimeZone,
    html: bool,
) -> Result<Option<Value>, PsaError> {
    match field.kind() {
        Kind::Text if matches!(field, Field::CreatedAt | Field::DueBy | Field::FrDueBy) => {
            timestamp_field(value, zone).map(|v| v.map(|(ts, _)| Value::Text(ts)))
        }
        Kind::Text => text_field(value, html).map(|v| v.map(Value::Text)),
        Kind::Int => parse_id(value).map(|v| v.map(Value::Int)),
        Kind::Bool => bool_field(value).map(|v| v.map(Value::Bool)),
    }
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

impl Normalized {
    /// The event with its warnings, finished (see [`finish`]).
    pub(crate) fn finished(
        mut event: TicketEvent,
        warnings: Vec<String>,
        done_statuses: &[String],
        received_at: &str,
    ) -> Normalized {
        finish(&mut event, done_statuses, received_at);
        Normalized { event, warnings }
    }
}

/// Sets `closed_at` when the event moves the ticket to one of
/// `done_statuses`: as of its version, else as of `received_at`.
pub(crate) fn finish(event: &mut TicketEvent, done_statuses: &[String], received_at: &str) {
    let done = event
        .status()
        .is_some_and(|status| done_statuses.iter().any(|d| d == status));
    event.closed_at = done.then(|| {
        event
            .updated_at
            .clone()
            .unwrap_or_else(|| received_at.to_string())
    });
}

pub(crate) fn text_field(value: &Json, html: bool) -> Result<Option<String>, PsaError> {
    let text = match value {
        Json::Null => return Ok(None),
        Json::String(s) if html => html_unescape(s),
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => {
            return Err(PsaError::NotText {
                shown: other.to_string(),
            });
        }
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
) -> Result<Option<(String, Option<String>)>, PsaError> {
    let text = match value {
        Json::Null => return Ok(None),
        Json::String(s) if s.trim().is_empty() => return Ok(None),
        Json::String(s) => s.clone(),
        // Unix seconds, unquoted.
        Json::Number(n) => n.to_string(),
        other => {
            return Err(PsaError::NotATimestamp {
                shown: other.to_string(),
            });
        }
    };
    let reading = timestamp::read(&text, zone)?;
    Ok(Some((timestamp::format(reading.instant), reading.note)))
}

fn bool_field(value: &Json) -> Result<Option<bool>, PsaError> {
    let shown = match value {
        Json::Null => return Ok(None),
        Json::Bool(b) => return Ok(Some(*b)),
        Json::Number(n) if n.as_i64() == Some(0) => return Ok(Some(false)),
        Json::Number(n) if n.as_i64() == Some(1) => return Ok(Some(true)),
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" => return Ok(None),
            "true" | "yes" | "1" => return Ok(Some(true)),
            "false" | "no" | "0" => return Ok(Some(false)),
            other => format!("'{other}'"),
        },
        other => other.to_string(),
    };
    Err(PsaError::NotABool { shown })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_by_kind_and_what_is_said_of_the_rest() {
        let utc = TimeZone::UTC;
        let read = |field, value| read_value(field, &value, &utc, true);
        assert_eq!(
            read(Field::Subject, json!(" A &amp; B ")),
            Ok(Some(Value::Text("A & B".into())))
        );
        assert_eq!(
            read(Field::DueBy, json!("2024-01-15 10:30:00")),
            Ok(Some(Value::Text("2024-01-15T10:30:00Z".into())))
        );
        assert_eq!(
            read(Field::IsEscalated, json!("yes")),
            Ok(Some(Value::Bool(true)))
        );
        assert_eq!(read(Field::GroupId, json!("")), Ok(None));
        for (field, value, message) in [
            (Field::Subject, json!({"a": 1}), r#"{"a":1} is not text"#),
            (
                Field::IsEscalated,
                json!("Maybe"),
                "'maybe' is not true or false",
            ),
            (Field::IsEscalated, json!(2), "2 is not true or false"),
            (Field::CreatedAt, json!(true), "true is not a timestamp"),
        ] {
            assert_eq!(read(field, value).unwrap_err().to_string(), message);
        }
        let error = read(Field::CreatedAt, json!("soon")).unwrap_err();
        assert!(matches!(error, PsaError::Timestamp(_)), "{error:?}");
    }

    #[test]
    fn codes_name_their_fields_and_sections() {
        assert_eq!(
            Code::ALL.map(|c| c.section(Provider::Freshservice)),
            ["[freshservice.statuses]", "[freshservice.priorities]"]
        );
        assert_eq!(
            Code::Priority.section(Provider::SuperOps),
            "[superops.priorities]"
        );
        assert_eq!(Code::Status.fields(), (Field::Status, Field::StatusId));
        assert_eq!(plain_fields().count(), Field::COUNT - 4);
    }
}
