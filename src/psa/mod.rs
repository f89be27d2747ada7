//! PSA providers and the ticket event every delivery and poll result is
//! normalized into before it reaches the writer.

pub mod freshservice;
pub mod freshservice_api;
pub mod lenient_json;
pub mod webhook_body;

use std::fmt;

/// A PSA Codex receives tickets from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Freshservice,
}

impl Provider {
    pub const ALL: [Provider; 1] = [Provider::Freshservice];

    /// The name used in URLs, in `external_source` and in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Freshservice => "freshservice",
        }
    }

    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the PSA says happened to the ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "ticket.created",
            EventKind::Updated => "ticket.updated",
            EventKind::Deleted => "ticket.deleted",
        }
    }
}

/// How an event reached Codex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    Poll,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Poll => "poll",
        }
    }
}

/// The SQL type family of a ticket field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Bool,
}

/// A ticket column that events may set, clear or leave alone. The position
/// in `ALL` is the bit in `ticket_details.last_event_fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Subject,
    Description,
    Status,
    StatusId,
    Priority,
    PriorityId,
    TicketType,
    RequesterEmail,
    RequesterName,
    RequesterId,
    ResponderId,
    GroupId,
    DepartmentId,
    CreatedAt,
    DueBy,
    FrDueBy,
    IsEscalated,
}

impl Field {
    pub const COUNT: usize = 17;
    pub const ALL: [Field; Field::COUNT] = [
        Field::Subject,
        Field::Description,
        Field::Status,
        Field::StatusId,
        Field::Priority,
        Field::PriorityId,
        Field::TicketType,
        Field::RequesterEmail,
        Field::RequesterName,
        Field::RequesterId,
        Field::ResponderId,
        Field::GroupId,
        Field::DepartmentId,
        Field::CreatedAt,
        Field::DueBy,
        Field::FrDueBy,
        Field::IsEscalated,
    ];

    pub fn column(self) -> &'static str {
        match self {
            Field::Subject => "subject",
            Field::Description => "description",
            Field::Status => "status",
            Field::StatusId => "status_id",
            Field::Priority => "priority",
            Field::PriorityId => "priority_id",
            Field::TicketType => "ticket_type",
            Field::RequesterEmail => "requester_email",
            Field::RequesterName => "requester_name",
            Field::RequesterId => "requester_id",
            Field::ResponderId => "responder_id",
            Field::GroupId => "group_id",
            Field::DepartmentId => "department_id",
            Field::CreatedAt => "created_at",
            Field::DueBy => "due_by",
            Field::FrDueBy => "fr_due_by",
            Field::IsEscalated => "is_escalated",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Field::StatusId
            | Field::PriorityId
            | Field::RequesterId
            | Field::ResponderId
            | Field::GroupId
            | Field::DepartmentId => Kind::Int,
            Field::IsEscalated => Kind::Bool,
            _ => Kind::Text,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn bit(self) -> i64 {
        1 << self.index()
    }
}

/// A field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What an event says about one field: `None` leaves it alone,
/// `Some(None)` clears it, `Some(Some(v))` sets it.
pub type Patch = Option<Option<Value>>;

/// One normalized change to one ticket, from a webhook or a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketEvent {
    pub provider: Provider,
    pub ticket_id: i64,
    pub kind: EventKind,
    pub source: Source,
    /// The PSA's `updated_at` in stored form; orders events of one ticket.
    pub updated_at: Option<String>,
    /// When the change is finished: set with a done status, `None` otherwise.
    pub closed_at: Option<String>,
    pub fields: [Patch; Field::COUNT],
}

impl TicketEvent {
    pub fn new(provider: Provider, ticket_id: i64, kind: EventKind, source: Source) -> TicketEvent {
        TicketEvent {
            provider,
            ticket_id,
            kind,
            source,
            updated_at: None,
            closed_at: None,
            fields: Default::default(),
        }
    }

    pub fn get(&self, field: Field) -> &Patch {
        &self.fields[field.index()]
    }

    pub fn set(&mut self, field: Field, value: Option<Value>) {
        self.fields[field.index()] = Some(value);
    }

    /// Bit mask of the fields this event carries.
    pub fn present_mask(&self) -> i64 {
        Field::ALL
            .iter()
            .filter(|f| self.get(**f).is_some())
            .map(|f| f.bit())
            .sum()
    }

    /// The status name this event sets, if it sets one.
    pub fn status(&self) -> Option<&str> {
        match self.get(Field::Status) {
            Some(Some(Value::Text(status))) => Some(status),
            _ => None,
        }
    }

    /// The value stored for `field` when this event creates the ticket.
    pub fn insert_value(&self, field: Field) -> Option<&Value> {
        self.get(field).as_ref().and_then(Option::as_ref)
    }
}
