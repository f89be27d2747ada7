//! What the journal says about recent deliveries, for the status page:
//! the last deliveries (never their bodies) and counts per ten minutes.

use super::queries::{Cells, Connection};
use super::sql::Param;
use crate::error::StoreError;

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

/// The statements here, for a migration to prepare.
pub const STATEMENTS: [&str; 2] = [RECENT, COUNTS];

/// The newest `limit` deliveries.
pub fn recent(conn: &dyn Connection, limit: i64) -> Result<Vec<Delivery>, StoreError> {
    conn.query(RECENT, &[Param::Int(Some(limit))])?
        .iter()
        .map(delivery)
        .collect()
}

/// Deliveries per ten-minute slot and outcome since `since` (stored form).
pub fn counts(conn: &dyn Connection, since: &str) -> Result<Vec<DeliveryCount>, StoreError> {
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
