//! One webhook delivery's body made into what the writer applies: the
//! normalized event with its journal entry, or, for a body Codex cannot
//! use, the journal entry alone and why it was refused. The HTTP handler
//! (`http::webhooks`) calls `deliver`, which prepares and writes; it and
//! `codex replay` both go through `prepare`, so a replayed delivery meets
//! exactly today's rules.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::Config;
use crate::error::StoreError;
use crate::psa::{Field, Provider, TicketEvent, Value, lenient_json, webhook_body};
use crate::store::{JournalEntry, Outcome, StoreClient, WriteItem};
use crate::timestamp;

/// Why a delivery's body cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not JSON, even leniently read.
    NotJson {
        message: String,
        line: usize,
        column: usize,
    },
    /// The provider's normalizer refused it (no ticket id, a malformed
    /// envelope...).
    Rejected { message: String },
    /// A text field holds U+0000, which a PostgreSQL text column cannot
    /// store; refused on every backend alike.
    Nul {
        message: String,
        field: &'static str,
    },
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::NotJson { message, .. }
            | Refusal::Rejected { message }
            | Refusal::Nul { message, .. } => message,
        }
    }
}

/// A delivery the writer committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// What the write did to the ticket.
    pub outcome: Outcome,
    pub ticket_id: i64,
    /// The event's kind (`ticket.created`...), for the log line.
    pub event: &'static str,
    /// The event's version, which a stale answer quotes.
    pub event_updated_at: Option<String>,
    /// What was odd but not fatal about the body.
    pub warnings: Vec<String>,
}

/// Why a delivery was not applied.
#[derive(Debug, Clone, PartialEq)]
pub enum NotDelivered {
    /// The body cannot be applied; its journal row was committed.
    /// `ticket_id` is the ticket it names, when one was found in it.
    Refused {
        refusal: Refusal,
        ticket_id: Option<i64>,
    },
    /// The writer did not commit the delivery (or, for a refused body, its
    /// journal row).
    Store(StoreError),
}

/// A delivery ready for the writer.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The event and its journal entry, or the journal entry alone when
    /// the body was refused (`refusal`).
    pub item: WriteItem,
    /// Why the body cannot be applied; `None` when `item` holds an event.
    pub refusal: Option<Refusal>,
    /// The ticket the delivery names, when one could be read (a refused
    /// body is scanned for one).
    pub ticket_id: Option<i64>,
    /// What was odd but not fatal about the body.
    pub warnings: Vec<String>,
}

/// Journals and applies one delivery `body` from `client_ip`, as `prepare`
/// reads it, waiting at most `wait` for the commit. A refused body is
/// journaled all the same: nothing a PSA sent is lost.
pub fn deliver(
    store: &StoreClient,
    config: &Config,
    provider: Provider,
    client_ip: IpAddr,
    body: Vec<u8>,
    wait: Duration,
) -> Result<Delivered, NotDelivered> {
    if config.webhooks.log_payloads {
        log::info!(
            "{provider} payload from {client_ip}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let journal = JournalEntry {
        provider,
        received_at: timestamp::now(),
        client_ip: client_ip.to_string(),
        event: None,
        ticket_id: None,
        error: None,
        outcome: None,
        body,
    };
    let prepared = prepare(provider, config, journal);
    if let Some(refusal) = prepared.refusal {
        return match store.write(prepared.item, wait) {
            Ok(_) => Err(NotDelivered::Refused {
                refusal,
                ticket_id: prepared.ticket_id,
            }),
            Err(error) => Err(NotDelivered::Store(error)),
        };
    }
    let Some(event) = prepared.item.event.as_ref() else {
        unreachable!("a delivery that was not refused carries its event")
    };
    let (ticket_id, kind) = (event.ticket_id, event.kind.as_str());
    let event_updated_at = event.updated_at.clone();
    for warning in &prepared.warnings {
        log::warn!("{provider} ticket={ticket_id}: {warning}");
    }
    let outcome = store
        .write(prepared.item, wait)
        .map_err(NotDelivered::Store)?;
    Ok(Delivered {
        outcome,
        ticket_id,
        event: kind,
        event_updated_at,
        warnings: prepared.warnings,
    })
}

/// Parses and normalizes `journal.body` as `provider` sends it, under
/// `config`, and fills in the journal entry (event, ticket, error). The
/// entry's `received_at` stands for the delivery's arrival.
pub fn prepare(provider: Provider, config: &Config, mut journal: JournalEntry) -> Prepared {
    let received_at = journal.received_at.clone();
    // Ids a parsed body carries for something other than the ticket (a
    // requester's), which the scan below must not take for the ticket's.
    let mut foreign = Vec::new();
    let normalized = match lenient_json::parse(&journal.body) {
        Err(error) => Err(Refusal::NotJson {
            message: format!("the body is not JSON, even leniently read: {error}"),
            line: error.line,
            column: error.column,
        }),
        Ok(value) => provider
            .normalize_webhook(&value, config, &received_at)
            .map_err(|rejection| {
                journal.event = rejection.event.clone();
                foreign = webhook_body::foreign_ids(&value);
                Refusal::Rejected {
                    message: rejection.message,
                }
            }),
    };
    let normalized = normalized.and_then(|normalized| match nul_field(&normalized.event) {
        None => Ok(normalized),
        Some(field) => {
            let event = &normalized.event;
            journal.event = Some(event.kind.as_str().to_string());
            journal.ticket_id = Some(event.ticket_id);
            Err(Refusal::Nul {
                message: format!(
                    "{field} contains a NUL character (\\u0000), which cannot be stored in a ticket"
                ),
                field,
            })
        }
    });
    let normalized = match normalized {
        Ok(normalized) => normalized,
        Err(refusal) => {
            // A body beyond repair still names its ticket when an id can be
            // found in it. The scan stops at an id key whose value is
            // unreadable (`-1`), so such a body is never attributed to
            // another ticket.
            if journal.ticket_id.is_none() {
                journal.ticket_id = provider.scan_ticket_id(&journal.body, config, &foreign);
            }
            // Kept even though it cannot be applied: nothing a PSA sent is lost.
            journal.error = Some(refusal.message().to_string());
            return Prepared {
                ticket_id: journal.ticket_id,
                item: WriteItem {
                    event: None,
                    journal: Some(journal),
                },
                refusal: Some(refusal),
                warnings: Vec::new(),
            };
        }
    };
    let event = normalized.event;
    journal.event = Some(event.kind.as_str().to_string());
    journal.ticket_id = Some(event.ticket_id);
    if !normalized.warnings.is_empty() {
        // The journal row says what was odd (an unreadable updated_at, with
        // its raw value) next to the raw body.
        journal.error = Some(format!("warnings: {}", normalized.warnings.join("; ")));
    }
    Prepared {
        ticket_id: Some(event.ticket_id),
        item: WriteItem {
            event: Some(event),
            journal: Some(journal),
        },
        refusal: None,
        warnings: normalized.warnings,
    }
}

/// The first text value of `event` holding U+0000, by its field name.
fn nul_field(event: &TicketEvent) -> Option<&'static str> {
    let has_nul = |text: &Option<String>| text.as_deref().is_some_and(|t| t.contains('\0'));
    if has_nul(&event.updated_at) {
        return Some("updated_at");
    }
    if has_nul(&event.closed_at) {
        return Some("closed_at");
    }
    Field::ALL.into_iter().find(|field| {
        matches!(event.get(*field), Some(Some(Value::Text(text))) if text.contains('\0'))
    })
    .map(Field::column)
}
