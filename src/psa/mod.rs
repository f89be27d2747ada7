//! PSA providers and the ticket event every delivery and poll result is
//! normalized into before it reaches the writer.

pub(crate) mod client;
pub mod clock;
pub mod freshservice;
pub mod freshservice_api;
mod freshservice_limiter;
pub mod freshservice_poll;
pub mod lenient_json;
pub mod normalize;
pub mod superops;
pub mod superops_api;
pub mod webhook_body;

use std::fmt;

pub use normalize::{Normalized, Rejection};

use crate::config::Config;

/// A PSA Codex receives tickets from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Freshservice,
    SuperOps,
}

impl Provider {
    /// Every PSA Codex knows: one line per provider module.
    pub const ALL: [Provider; 2] = [Provider::Freshservice, Provider::SuperOps];

    /// The provider's position in `ALL`, where per-provider lists keep it.
    pub fn index(self) -> usize {
        Provider::ALL
            .iter()
            .position(|p| *p == self)
            .expect("Provider::ALL lists every provider")
    }

    /// The name used in URLs, in `external_source` and in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Freshservice => "freshservice",
            Provider::SuperOps => "superops",
        }
    }

    /// True when an account is configured for polling and syncing is on.
    pub fn polling(self, config: &Config) -> bool {
        config.scheduler.sync_tickets_enabled && self.configured(config)
    }

    /// True when the provider's API account (endpoint and credentials) is set.
    pub fn configured(self, config: &Config) -> bool {
        match self {
            Provider::Freshservice => config.freshservice_configured(),
            Provider::SuperOps => config.superops.configured(),
        }
    }

    /// The providers whose accounts are polled.
    pub fn polled(config: &Config) -> Vec<Provider> {
        Provider::ALL
            .into_iter()
            .filter(|p| p.polling(config))
            .collect()
    }

    /// Normalizes a webhook body (already parsed, leniently if need be).
    pub fn normalize_webhook(
        self,
        body: &serde_json::Value,
        config: &Config,
        received_at: &str,
    ) -> Result<Normalized, Rejection> {
        match self {
            Provider::Freshservice => {
                freshservice::normalize_webhook(body, &config.freshservice, received_at)
            }
            Provider::SuperOps => superops::normalize_webhook(body, &config.superops, received_at),
        }
    }

    /// Finds the ticket id in a body beyond repair, for the journal.
    pub fn scan_ticket_id(self, body: &[u8], config: &Config, foreign: &[i64]) -> Option<i64> {
        match self {
            Provider::Freshservice => {
                webhook_body::scan_ticket_id(body, &config.freshservice.webhook_fields, foreign)
            }
            Provider::SuperOps => superops::scan_ticket_id(body, foreign),
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

/// Where a poll source hands each page of events it lists: the sync run,
/// which applies them.
pub type PageSink<'a> = dyn FnMut(Vec<TicketEvent>) -> Result<(), crate::error::SyncError> + 'a;

/// A provider's polling settings, as a sync run needs them.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// How far back the first sync lists.
    pub initial_sync_days: u32,
    /// Tickets looked up one by one per full run, at most (0: no reconcile).
    pub reconcile_max_tickets: u32,
    /// Statuses that end a ticket's life without removing it.
    pub done_statuses: Vec<String>,
}

/// What a complete listing covered.
#[derive(Debug, Default)]
pub struct Complete {
    /// The ids it listed.
    pub listed: std::collections::HashSet<i64>,
    /// Whether it lists tickets in a done status too (SuperOps lists every
    /// ticket; Freshservice's filter only the active statuses).
    pub covers_done: bool,
}

/// What a lookup by id found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The ticket as it is now.
    Ticket(Box<TicketEvent>),
    /// The API's word that the ticket does not exist: a delete event.
    Gone(Box<TicketEvent>),
    /// An answer that cannot be read: nothing is concluded.
    Unreadable,
}

/// The polling half of a provider: what a sync run asks of a PSA's API.
/// `sync/` knows only this; each provider module implements it, so a new
/// PSA is one module under `psa/`.
pub trait PollSource {
    /// The provider's polling settings.
    fn settings(&self) -> PollSettings;

    /// Lists the tickets changed at or after `since` (stored form), handing
    /// each page's events to `page` as it arrives. Tickets the API returns
    /// that cannot be read are skipped with a warning.
    fn changes(
        &mut self,
        since: &str,
        page: &mut PageSink<'_>,
    ) -> Result<(), crate::error::SyncError>;

    /// Whether the API lists removed tickets ([`PollSource::removals`]).
    fn lists_removals(&self) -> bool {
        false
    }

    /// Lists the tickets removed (deleted or marked spam) at or after
    /// `since`, newest first, as delete events handed to `page`. APIs that
    /// cannot list them (SuperOps) leave removals to the complete listing
    /// and [`PollSource::lookup`].
    fn removals(
        &mut self,
        since: &str,
        page: &mut PageSink<'_>,
    ) -> Result<(), crate::error::SyncError> {
        let _ = (since, page);
        Ok(())
    }

    /// Lists every ticket in the scope the listing covers, handing each
    /// page's events to `page`. `None` when the listing cannot be complete:
    /// nothing may be concluded from what it left out.
    fn complete(
        &mut self,
        page: &mut PageSink<'_>,
    ) -> Result<Option<Complete>, crate::error::SyncError>;

    /// Whether the complete listing returns every change as well (it lists
    /// every ticket): a full run then reads it in place of the changes.
    fn complete_includes_changes(&self) -> bool {
        false
    }

    /// Looks one ticket up.
    fn lookup(&mut self, ticket_id: i64) -> Result<Found, crate::error::SyncError>;

    /// Asks the API whether it accepts the credentials; the address asked.
    fn check_credentials(&mut self) -> Result<String, crate::error::SyncError>;

    /// Requests sent so far, retries included.
    fn calls(&self) -> u64;
}

impl Provider {
    /// The provider's polling client for the configured account; `stop`
    /// interrupts its waits. It keeps what it learns of the account (rate
    /// limits, a refused parameter) until it is dropped: a reload makes a
    /// new one.
    pub fn poll_source(
        self,
        config: &Config,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Box<dyn PollSource + Send + '_>, crate::error::SyncError> {
        Ok(match self {
            Provider::Freshservice => Box::new(freshservice_poll::FreshservicePoll {
                client: freshservice_api::FreshserviceClient::new(&config.freshservice, stop)?,
                config: &config.freshservice,
            }),
            Provider::SuperOps => Box::new(superops_api::SuperopsPoll {
                client: superops_api::SuperopsClient::new(&config.superops, stop)?,
                config: &config.superops,
            }),
        })
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
