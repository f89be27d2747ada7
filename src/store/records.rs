//! What the store keeps and answers with: the writer's items and their
//! outcomes (and how an upsert's outcome is told, `classify`), ticket
//! rows, sync runs and state, webhook counts.

use crate::psa::freshservice::{STATUS_DELETED, STATUS_SPAM};
use crate::psa::{EventKind, Field, Provider, TicketEvent, Value};
use crate::timestamp;

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The ticket did not exist and now does.
    Created,
    /// The event was applied; `changes` describes it. `advanced` is true
    /// when it carried a newer version than the stored one (rather than
    /// filling in fields of the same or an older version).
    Updated {
        changes: Vec<String>,
        advanced: bool,
    },
    /// The ticket is now deleted or spam.
    Deleted { new_status: String, advanced: bool },
    /// Nothing to do, with why (a delete of a ticket never seen).
    Ignored { reason: String },
    /// The same content again (a duplicate delivery).
    Unchanged,
    /// Older than what is stored; nothing changed.
    Stale { stored_updated_at: String },
    /// A delivery that could not be parsed, journaled only.
    Rejected,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated { .. } => "updated",
            Outcome::Deleted { .. } => "deleted",
            Outcome::Ignored { .. } => "ignored",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale { .. } => "stale",
            Outcome::Rejected => "rejected",
        }
    }

    /// True when something was stored.
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Outcome::Created
                | Outcome::Updated { .. }
                | Outcome::Deleted { .. }
                | Outcome::Ignored { .. }
        )
    }

    /// True when a version newer than any stored was stored: a change
    /// Codex had not heard of before.
    pub fn is_new_version(&self) -> bool {
        match self {
            Outcome::Created | Outcome::Ignored { .. } => true,
            Outcome::Updated { advanced, .. } | Outcome::Deleted { advanced, .. } => *advanced,
            Outcome::Unchanged | Outcome::Stale { .. } | Outcome::Rejected => false,
        }
    }
}

/// One authenticated webhook delivery as the journal keeps it.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub provider: Provider,
    pub received_at: String,
    pub client_ip: String,
    pub event: Option<String>,
    pub ticket_id: Option<i64>,
    /// Why the delivery was rejected or not applied, for one that was.
    pub error: Option<String>,
    /// The outcome to record instead of the apply's (`Failed` for an event
    /// the database refused).
    pub outcome: Option<super::JournalOutcome>,
    pub body: Vec<u8>,
}

impl JournalEntry {
    /// Makes the text columns storable anywhere: PostgreSQL's TEXT cannot
    /// hold U+0000, which a body's JSON escapes can put in an event name
    /// or an error quoting it. The body itself is kept byte for byte.
    pub fn sanitize(&mut self) {
        for text in [&mut self.client_ip, &mut self.received_at]
            .into_iter()
            .chain([&mut self.event, &mut self.error].into_iter().flatten())
        {
            if text.contains('\0') {
                *text = text.replace('\0', "\\u0000");
            }
        }
    }
}

/// One unit of work for the writer: an event to apply, a journal entry to
/// keep, or both (a webhook delivery that parsed).
#[derive(Debug, Clone)]
pub struct WriteItem {
    pub event: Option<TicketEvent>,
    pub journal: Option<JournalEntry>,
}

/// A ticket row as stored, for diffing and for readers.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub values: [Option<Value>; Field::COUNT],
    pub last_updated_at: Option<String>,
}

impl Snapshot {
    pub fn get(&self, field: Field) -> Option<&Value> {
        self.values[field.index()].as_ref()
    }
}

/// A delete of a ticket Codex never stored, as `ticket_tombstones` keeps
/// it: what the delete would have written to the ticket's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub last_updated_at: Option<String>,
    pub status: Option<String>,
    pub status_id: Option<i64>,
    pub closed_at: Option<String>,
}

impl Tombstone {
    pub fn of(event: &TicketEvent) -> Tombstone {
        Tombstone {
            last_updated_at: event.updated_at.clone(),
            status: event.status().map(str::to_string),
            status_id: match event.get(Field::StatusId) {
                Some(Some(Value::Int(id))) => Some(*id),
                _ => None,
            },
            closed_at: event.closed_at.clone(),
        }
    }

    /// The delete again, for merging into the row a later event created:
    /// the upsert's ordering then decides, as if the delete had found the
    /// row (an older create stays deleted, a newer one restores it).
    pub fn event(&self, created: &TicketEvent) -> TicketEvent {
        let mut event = TicketEvent::new(
            created.provider,
            created.ticket_id,
            crate::psa::EventKind::Deleted,
            created.source,
        );
        event.updated_at = self.last_updated_at.clone();
        event.closed_at = self.closed_at.clone();
        if let Some(status) = &self.status {
            event.set(Field::Status, Some(Value::Text(status.clone())));
        }
        if let Some(id) = self.status_id {
            event.set(Field::StatusId, Some(Value::Int(id)));
        }
        event
    }

    /// The delete as the row it stands for, to describe what the later
    /// event changed.
    pub fn snapshot(&self) -> Snapshot {
        let mut values: [Option<Value>; Field::COUNT] = Default::default();
        values[Field::Status.index()] = self.status.clone().map(Value::Text);
        values[Field::StatusId.index()] = self.status_id.map(Value::Int);
        Snapshot {
            revision: 0,
            values,
            last_updated_at: self.last_updated_at.clone(),
        }
    }
}

/// Counts behind webhook coverage, per provider, over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookCounts {
    /// Authenticated deliveries received.
    pub received: i64,
    /// Deliveries that stored a new version.
    pub applied: i64,
    /// Deliveries refused as unreadable.
    pub rejected: i64,
    /// When the last delivery Codex could process (whatever its outcome,
    /// a duplicate included) arrived: proof that webhooks reach Codex.
    pub last_processed_at: Option<String>,
    /// When the last authenticated delivery arrived.
    pub last_received_at: Option<String>,
    /// When the last `ticket.deleted` delivery Codex could process arrived:
    /// proof that deletions reach Codex by webhook.
    pub last_deletion_at: Option<String>,
}

/// One row of `sync_runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    pub id: i64,
    pub provider: String,
    pub kind: RunKind,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: RunOutcome,
    pub tickets_seen: i64,
    pub tickets_changed: i64,
    pub missed_by_webhooks: i64,
    pub missed_ticket_ids: Vec<i64>,
    pub api_calls: i64,
    pub error: Option<String>,
}

impl SyncRun {
    /// A run of `kind` starting now, not yet recorded (`id` 0).
    pub fn starting(provider: Provider, kind: RunKind) -> SyncRun {
        SyncRun {
            id: 0,
            provider: provider.as_str().to_string(),
            kind,
            started_at: timestamp::now(),
            finished_at: None,
            outcome: RunOutcome::Running,
            tickets_seen: 0,
            tickets_changed: 0,
            missed_by_webhooks: 0,
            missed_ticket_ids: Vec::new(),
            api_calls: 0,
            error: None,
        }
    }
}

/// What a sync run does; stored in `sync_runs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// The timer's first run: the listing of everything since
    /// `initial_sync_days`, nothing else (it has just seen every ticket).
    Initial,
    /// The listing of what changed since the cursor.
    Incremental,
    /// The listing, the deleted and spam listings, and the reconcile of
    /// locally active tickets against the active-status listing. `codex
    /// sync --once` always runs this.
    Full,
}

/// How a sync run ended, or that it has not; stored in `sync_runs.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Recorded at the start; a run left so was interrupted by a crash.
    Running,
    /// Every step succeeded and the cursor moved.
    Ok,
    /// A step failed; `error` says which and why.
    Failed,
}

/// A stored text that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {column} '{value}'")]
pub struct UnknownValue {
    pub column: &'static str,
    pub value: String,
}

/// The text an enum is stored as, and back.
macro_rules! stored_as {
    ($type:ident, $column:literal, $($variant:ident => $text:literal),+ $(,)?) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $type {
            type Err = UnknownValue;

            fn from_str(text: &str) -> Result<$type, UnknownValue> {
                match text {
                    $($text => Ok($type::$variant),)+
                    _ => Err(UnknownValue {
                        column: $column,
                        value: text.to_string(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_as!(RunKind, "sync_runs.kind", Initial => "initial", Incremental => "incremental", Full => "full");
stored_as!(RunOutcome, "sync_runs.outcome", Running => "running", Ok => "ok", Failed => "failed");

/// Per-provider poll state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncState {
    pub cursor: Option<String>,
    pub last_reconcile_at: Option<String>,
}

// What an upsert did to a ticket: its outcome, and the changes described
// in the predecessor's words.

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

// The `missed_ticket_ids` column of `sync_runs`: ticket ids as `1,2,3`.
/// `1,2,3` for the `missed_ticket_ids` column.
pub fn join_ids(ids: &[i64]) -> Option<String> {
    (!ids.is_empty()).then(|| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The ids of a `missed_ticket_ids` value; anything unreadable is skipped.
pub fn split_ids(text: Option<&str>) -> Vec<i64> {
    text.unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}
