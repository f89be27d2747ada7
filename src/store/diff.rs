//! What an upsert did to a ticket: its outcome, and the changes described
//! in the predecessor's words.

use super::records::{Outcome, Snapshot};
use crate::psa::freshservice::{STATUS_DELETED, STATUS_SPAM};
use crate::psa::{EventKind, Field, TicketEvent, Value};

/// Describes what changed between two versions of a ticket, in the
/// predecessor's style (`status: open -> pending`, `subject updated`).
pub fn describe_changes(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let show =
        |value: Option<&Value>| value.map_or_else(|| "none".to_string(), ToString::to_string);
    let mut changes = Vec::new();
    for field in Field::ALL {
        let (before, after) = (old.get(field), new.get(field));
        if before == after {
            continue;
        }
        match field {
            // The id is shown only when the names do not tell the change.
            Field::StatusId if old.get(Field::Status) != new.get(Field::Status) => {}
            Field::PriorityId if old.get(Field::Priority) != new.get(Field::Priority) => {}
            Field::Subject
            | Field::Description
            | Field::RequesterEmail
            | Field::RequesterName
            | Field::DueBy
            | Field::FrDueBy => changes.push(format!("{} updated", field.column())),
            _ => changes.push(format!(
                "{}: {} -> {}",
                field.column(),
                show(before),
                show(after)
            )),
        }
    }
    changes
}

/// Decides the outcome of an upsert from the row before (`old`) and the row
/// the statement returned (`new`, absent when the guard refused it).
pub fn classify(
    event: &TicketEvent,
    old: Option<&Snapshot>,
    new: Option<&Snapshot>,
    inserted: bool,
) -> Outcome {
    let is_gone = |s: Option<&Snapshot>| {
        matches!(
            s.and_then(|s| s.get(Field::StatusId)),
            Some(Value::Int(STATUS_SPAM | STATUS_DELETED))
        )
    };
    match new {
        Some(_) if inserted && event.kind == EventKind::Deleted => Outcome::Ignored {
            reason: "ticket not found".to_string(),
        },
        Some(_) if inserted => Outcome::Created,
        Some(new_row) => {
            let advanced = match (
                old.and_then(|o| o.last_updated_at.as_deref()),
                event.updated_at.as_deref(),
            ) {
                (Some(stored), Some(incoming)) => incoming > stored,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if event.kind == EventKind::Deleted || (is_gone(Some(new_row)) && !is_gone(old)) {
                Outcome::Deleted {
                    new_status: new_row
                        .get(Field::Status)
                        .map_or_else(|| "deleted".to_string(), ToString::to_string),
                    advanced,
                }
            } else {
                Outcome::Updated {
                    changes: old
                        .map(|old| describe_changes(old, new_row))
                        .unwrap_or_default(),
                    advanced,
                }
            }
        }
        None => match (
            old.and_then(|o| o.last_updated_at.as_deref()),
            event.updated_at.as_deref(),
        ) {
            (Some(stored), Some(incoming)) if incoming < stored => Outcome::Stale {
                stored_updated_at: stored.to_string(),
            },
            _ => Outcome::Unchanged,
        },
    }
}
