//! The delivery journal (`webhook_events`): what it records of a
//! delivery, the statements `codex replay` reads and marks it with, and
//! what the status page shows of it (the last deliveries, never their
//! bodies, and counts per ten minutes).

use super::connection::{Cells, Connection, Param};
use super::dialect::Dialect;
use super::records::Outcome;
use crate::error::StoreError;
use crate::psa::Provider;

/// The `outcome` of a journal row: what became of the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalOutcome {
    Created,
    Updated,
    Deleted,
    /// Applied as nothing to do (a delete of a ticket never seen).
    Ignored,
    /// A duplicate delivery.
    Unchanged,
    /// Older than what is stored.
    Stale,
    /// Unreadable: journaled only.
    Rejected,
    /// Readable, but the database refused the event.
    Failed,
}

impl JournalOutcome {
    /// Outcomes of deliveries that stored a new version.
    pub const APPLIED: [JournalOutcome; 4] = [
        JournalOutcome::Created,
        JournalOutcome::Updated,
        JournalOutcome::Deleted,
        JournalOutcome::Ignored,
    ];

    /// Outcomes of deliveries Codex could not process.
    pub const REFUSED: [JournalOutcome; 2] = [JournalOutcome::Rejected, JournalOutcome::Failed];

    /// The text stored in the `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalOutcome::Created => "created",
            JournalOutcome::Updated => "updated",
            JournalOutcome::Deleted => "deleted",
            JournalOutcome::Ignored => "ignored",
            JournalOutcome::Unchanged => "unchanged",
            JournalOutcome::Stale => "stale",
            JournalOutcome::Rejected => "rejected",
            JournalOutcome::Failed => "failed",
        }
    }

    /// `'created', 'updated', …` for an SQL `IN` list.
    pub fn sql_list(outcomes: &[JournalOutcome]) -> String {
        outcomes
            .iter()
            .map(|o| format!("'{}'", o.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::str::FromStr for JournalOutcome {
    type Err = String;

    fn from_str(text: &str) -> Result<JournalOutcome, String> {
        JournalOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = JournalOutcome::ALL.iter().map(|o| o.as_str()).collect();
                format!("unknown outcome '{text}'; use {}", names.join(", "))
            })
    }
}

impl JournalOutcome {
    /// Every outcome, in the order a journal row's lifecycle lists them.
    pub const ALL: [JournalOutcome; 8] = [
        JournalOutcome::Created,
        JournalOutcome::Updated,
        JournalOutcome::Deleted,
        JournalOutcome::Ignored,
        JournalOutcome::Unchanged,
        JournalOutcome::Stale,
        JournalOutcome::Rejected,
        JournalOutcome::Failed,
    ];
}

/// One journaled delivery, body included, as `codex replay` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journaled {
    pub id: i64,
    pub provider: Provider,
    pub received_at: String,
    pub client_ip: String,
    pub event: Option<String>,
    pub ticket_id: Option<i64>,
    /// The outcome as stored.
    pub outcome: String,
    pub error: Option<String>,
    pub body: Vec<u8>,
}

/// Which journaled deliveries to read: one by its id, or those received
/// since a time with one of some outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalQuery {
    pub id: Option<i64>,
    /// Stored form (`timestamp`); `None` for any time.
    pub since: Option<String>,
    pub outcomes: Vec<JournalOutcome>,
}

/// The deliveries of a `JournalQuery`: `?1` the id (or NULL), `?2` the
/// earliest `received_at`, `?3` a JSON array of outcomes; oldest first.
pub fn select(dialect: Dialect) -> String {
    format!(
        "SELECT CAST(id AS BIGINT), provider, received_at, client_ip, event, \
         CAST(ticket_id AS BIGINT), outcome, error, body FROM webhook_events \
         WHERE (CAST(?1 AS BIGINT) IS NULL OR id = CAST(?1 AS BIGINT)) AND received_at >= ?2 \
         AND outcome IN ({}) ORDER BY received_at, id",
        dialect.json_texts("CAST(?3 AS TEXT)")
    )
}

/// Marks a refused delivery that a replay processed: `?1` the id, then
/// the replay's `event`, `ticket_id`, `outcome` and `error`. Only a row
/// still refused is changed, so a replay never rewrites what a stored
/// delivery did.
pub fn mark_replayed() -> String {
    format!(
        "UPDATE webhook_events SET event = ?2, ticket_id = ?3, outcome = ?4, error = ?5 \
         WHERE id = ?1 AND outcome IN ({})",
        JournalOutcome::sql_list(&JournalOutcome::REFUSED)
    )
}

/// What a replay records on a refused delivery's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntryUpdate {
    pub id: i64,
    pub event: Option<String>,
    pub ticket_id: Option<i64>,
    pub outcome: JournalOutcome,
    pub error: Option<String>,
}

/// Reads the deliveries `query` names.
pub fn read(conn: &dyn Connection, query: &JournalQuery) -> Result<Vec<Journaled>, StoreError> {
    let outcomes: Vec<&str> = query.outcomes.iter().map(|o| o.as_str()).collect();
    let outcomes = serde_json::to_string(&outcomes).unwrap_or_else(|_| "[]".to_string());
    let params = [
        Param::Int(query.id),
        Param::Text(Some(query.since.as_deref().unwrap_or(""))),
        Param::Text(Some(&outcomes)),
    ];
    conn.query(&select(conn.dialect()), &params)?
        .iter()
        .map(journaled)
        .collect()
}

fn journaled(row: &Cells) -> Result<Journaled, StoreError> {
    let provider = row.text(1)?.unwrap_or_default();
    Ok(Journaled {
        id: row.int(0)?.unwrap_or_default(),
        provider: Provider::from_name(&provider).ok_or_else(|| {
            StoreError::Statement(format!("unknown webhook_events.provider '{provider}'"))
        })?,
        received_at: row.text(2)?.unwrap_or_default(),
        client_ip: row.text(3)?.unwrap_or_default(),
        event: row.text(4)?,
        ticket_id: row.int(5)?,
        outcome: row.text(6)?.unwrap_or_default(),
        error: row.text(7)?,
        body: row.bytes(8)?.unwrap_or_default(),
    })
}

impl From<&Outcome> for JournalOutcome {
    fn from(outcome: &Outcome) -> JournalOutcome {
        match outcome {
            Outcome::Created => JournalOutcome::Created,
            Outcome::Updated { .. } => JournalOutcome::Updated,
            Outcome::Deleted { .. } => JournalOutcome::Deleted,
            Outcome::Ignored { .. } => JournalOutcome::Ignored,
            Outcome::Unchanged => JournalOutcome::Unchanged,
            Outcome::Stale { .. } => JournalOutcome::Stale,
            Outcome::Rejected => JournalOutcome::Rejected,
        }
    }
}

/// One journaled delivery, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub received_at: String,
    pub provider: String,
    pub ticket_id: Option<i64>,
    pub event: Option<String>,
    /// `created`, `updated`, `deleted`, `ignored`, `unchanged`, `stale`,
    /// `rejected` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
}

impl Delivery {
    /// The status Codex answers a delivery with this outcome.
    pub fn status_code(&self) -> u16 {
        match self.outcome.as_str() {
            "created" => 201,
            "rejected" => 400,
            "failed" => 500,
            _ => 200,
        }
    }
}

/// Deliveries received in one ten-minute slot with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCount {
    /// The slot's start, `YYYY-MM-DDTHH:M` (the stored form's first 15
    /// characters: stored times sort, so this groups by ten minutes).
    pub slot: String,
    pub outcome: String,
    pub count: i64,
}

const RECENT: &str = "SELECT received_at, provider, ticket_id, event, outcome, error \
     FROM webhook_events ORDER BY received_at DESC, id DESC LIMIT ?1";

const COUNTS: &str = "SELECT substr(received_at, 1, 15), outcome, CAST(count(*) AS BIGINT) \
     FROM webhook_events WHERE received_at >= ?1 \
     GROUP BY substr(received_at, 1, 15), outcome";

/// The status page's statements, for a migration to prepare.
pub const ACTIVITY: [&str; 2] = [RECENT, COUNTS];

/// The newest `limit` deliveries.
pub fn recent_deliveries(conn: &dyn Connection, limit: i64) -> Result<Vec<Delivery>, StoreError> {
    conn.query(RECENT, &[Param::Int(Some(limit))])?
        .iter()
        .map(delivery)
        .collect()
}

/// Deliveries per ten-minute slot and outcome since `since` (stored form).
pub fn delivery_counts(
    conn: &dyn Connection,
    since: &str,
) -> Result<Vec<DeliveryCount>, StoreError> {
    conn.query(COUNTS, &[Param::Text(Some(since))])?
        .iter()
        .map(|row| {
            Ok(DeliveryCount {
                slot: row.text(0)?.unwrap_or_default(),
                outcome: row.text(1)?.unwrap_or_default(),
                count: row.int(2)?.unwrap_or_default(),
            })
        })
        .collect()
}

fn delivery(row: &Cells) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        received_at: row.text(0)?.unwrap_or_default(),
        provider: row.text(1)?.unwrap_or_default(),
        ticket_id: row.int(2)?,
        event: row.text(3)?,
        outcome: row.text(4)?.unwrap_or_default(),
        error: row.text(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_apply_outcome_is_journaled_under_its_own_name() {
        let outcomes = [
            Outcome::Created,
            Outcome::Updated {
                changes: Vec::new(),
                advanced: true,
            },
            Outcome::Deleted {
                new_status: "deleted".into(),
                advanced: true,
            },
            Outcome::Ignored { reason: "x".into() },
            Outcome::Unchanged,
            Outcome::Stale {
                stored_updated_at: "2024-01-01T00:00:00Z".into(),
            },
            Outcome::Rejected,
        ];
        for outcome in &outcomes {
            assert_eq!(JournalOutcome::from(outcome).as_str(), outcome.as_str());
        }
        assert_eq!(
            JournalOutcome::sql_list(&JournalOutcome::REFUSED),
            "'rejected', 'failed'"
        );
    }
}
