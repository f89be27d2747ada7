//! `codex replay`: journaled deliveries applied again through today's
//! normalizer (`delivery::prepare`) and the writer's ordering rules, for
//! an admin who fixed what made them fail (a `[freshservice.webhook_fields]`
//! mapping, a status table). It goes through the writer as `serve` does,
//! so it may run while Codex runs.
//!
//! What the journal says afterwards: no row is added. A delivery that was
//! refused (`rejected`, `failed`) and that the replay processed gets its
//! row's `event`, `ticket_id` and `outcome` set to what it became, and its
//! `error` says when it was replayed and why it had been refused, so the
//! row tells what became of the delivery and how. The row of a delivery
//! whose event was stored is never changed: replaying it applies the same
//! event again, which the ordering rules make `unchanged` (or `stale`
//! once something newer is stored), never a second copy.

use std::fmt;
use std::time::Duration;

use crate::commands::CommandError;
use crate::config::Config;
use crate::delivery;
use crate::preflight;
use crate::psa::Provider;
use crate::service::open_store;
use crate::store::{
    JournalEntry, JournalEntryUpdate, JournalOutcome, JournalQuery, Journaled, WriteItem,
};
use crate::timestamp;

/// How long one replayed delivery may wait for its commit, and a read of
/// the journal for a database that is briefly away.
const WAIT: Duration = Duration::from_secs(10);

/// Which deliveries to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The journal row with this id, whatever its outcome.
    Id(i64),
    /// Those received at or after `since` (any time Codex reads, see
    /// `timestamp::read`) with one of `outcomes`.
    Since {
        since: String,
        outcomes: Vec<JournalOutcome>,
    },
}

impl Selection {
    /// `--outcome rejected,failed` as outcomes.
    pub fn outcomes(list: &str) -> Result<Vec<JournalOutcome>, CommandError> {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| name.parse().map_err(CommandError::Usage))
            .collect()
    }

    fn query(&self) -> Result<JournalQuery, CommandError> {
        match self {
            Selection::Id(id) => Ok(JournalQuery {
                id: Some(*id),
                since: None,
                outcomes: JournalOutcome::ALL.to_vec(),
            }),
            Selection::Since { since, outcomes } => {
                let since = timestamp::normalize(since)
                    .map_err(|error| CommandError::Usage(format!("--since '{since}': {error}")))?;
                Ok(JournalQuery {
                    id: None,
                    since: Some(since),
                    outcomes: outcomes.clone(),
                })
            }
        }
    }
}

/// What one delivery became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The journal row's id.
    pub id: i64,
    pub provider: Provider,
    pub ticket_id: Option<i64>,
    /// The outcome the journal held.
    pub before: String,
    /// What the replay made of it: an outcome of the writer, `rejected`
    /// (still refused by today's rules) or `failed` (the database refused
    /// it).
    pub after: String,
    /// Why it is still refused, or what the writer said.
    pub detail: Option<String>,
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ticket = self
            .ticket_id
            .map_or_else(|| "-".to_string(), |id| id.to_string());
        write!(
            f,
            "#{} {} ticket {ticket}: {} -> {}",
            self.id, self.provider, self.before, self.after
        )?;
        match &self.detail {
            Some(detail) => write!(f, " ({detail})"),
            None => Ok(()),
        }
    }
}

/// `codex replay`: applies the selected deliveries again, oldest first,
/// calling `report` with each as it is done; returns how many. Fails when `--id` names no
/// delivery, or when the database refused any of them.
pub fn replay(
    config: &Config,
    selection: &Selection,
    mut report: impl FnMut(&Replayed),
) -> Result<usize, CommandError> {
    let query = selection.query()?;
    preflight::existing_database(config)?;
    let store = open_store(config).map_err(CommandError::Start)?;
    let (writer, mut reader) = (store.writer, store.reader);
    let result = reader
        .read_waiting(WAIT, |r| r.journaled(&query))
        .map_err(CommandError::Store)
        .and_then(|rows| match (selection, rows.is_empty()) {
            (Selection::Id(id), true) => Err(CommandError::Usage(format!(
                "the journal (webhook_events) holds no delivery #{id}"
            ))),
            _ => Ok(rows),
        })
        .map(|rows| {
            let mut failed = 0;
            for row in &rows {
                let replayed = replay_one(config, &writer.client, row);
                if replayed.after == JournalOutcome::Failed.as_str() {
                    failed += 1;
                }
                report(&replayed);
            }
            (rows.len(), failed)
        });
    drop(reader);
    if writer.join().is_err() {
        log::error!("the writer panicked");
    }
    let (total, failed) = result?;
    match failed {
        0 => Ok(total),
        _ => Err(CommandError::Replay(format!(
            "{failed} of {total} deliveries could not be written; run the replay again once the database takes them"
        ))),
    }
}

/// Normalizes one journaled delivery under today's configuration and, if
/// it reads, applies its event and marks a refused row as processed.
fn replay_one(config: &Config, store: &crate::store::StoreClient, row: &Journaled) -> Replayed {
    let entry = JournalEntry {
        provider: row.provider,
        received_at: row.received_at.clone(),
        client_ip: row.client_ip.clone(),
        event: None,
        ticket_id: None,
        error: None,
        outcome: None,
        body: row.body.clone(),
    };
    let prepared = delivery::prepare(row.provider, config, entry);
    let mut replayed = Replayed {
        id: row.id,
        provider: row.provider,
        ticket_id: prepared.ticket_id.or(row.ticket_id),
        before: row.outcome.clone(),
        after: JournalOutcome::Rejected.as_str().to_string(),
        detail: None,
    };
    if let Some(refusal) = &prepared.refusal {
        replayed.detail = Some(refusal.message().to_string());
        return replayed;
    }
    let journal = prepared.item.journal;
    // The event alone: the delivery keeps its one journal row.
    let item = WriteItem {
        event: prepared.item.event,
        journal: None,
    };
    let outcome = match store.write(item, WAIT) {
        Ok(outcome) => outcome,
        Err(error) => {
            replayed.after = JournalOutcome::Failed.as_str().to_string();
            replayed.detail = Some(error.to_string());
            return replayed;
        }
    };
    replayed.after = outcome.as_str().to_string();
    let refused = JournalOutcome::REFUSED
        .iter()
        .any(|o| o.as_str() == row.outcome);
    if refused {
        let was = match &row.error {
            Some(error) => format!("{} ({error})", row.outcome),
            None => row.outcome.clone(),
        };
        let warnings = journal
            .as_ref()
            .and_then(|j| j.error.as_deref())
            .map(|w| format!("; {w}"))
            .unwrap_or_default();
        let update = JournalEntryUpdate {
            id: row.id,
            event: journal.as_ref().and_then(|j| j.event.clone()),
            ticket_id: replayed.ticket_id,
            outcome: JournalOutcome::from(&outcome),
            error: Some(format!(
                "replayed at {}; when received: {was}{warnings}",
                timestamp::now()
            )),
        };
        if let Err(error) = store.mark_replayed(&update, WAIT) {
            replayed.detail = Some(format!(
                "stored, but the journal row could not be marked: {error}"
            ));
        }
    }
    replayed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_lists_are_read_by_name() {
        assert_eq!(
            Selection::outcomes("rejected, failed").unwrap(),
            JournalOutcome::REFUSED.to_vec()
        );
        let error = Selection::outcomes("created,lost").unwrap_err().to_string();
        assert!(error.contains("unknown outcome 'lost'"), "{error}");
    }

    #[test]
    fn a_line_names_the_row_the_ticket_and_both_outcomes() {
        let mut replayed = Replayed {
            id: 12,
            provider: Provider::Freshservice,
            ticket_id: Some(4242),
            before: "rejected".into(),
            after: "created".into(),
            detail: None,
        };
        assert_eq!(
            replayed.to_string(),
            "#12 freshservice ticket 4242: rejected -> created"
        );
        replayed.ticket_id = None;
        replayed.after = "rejected".into();
        replayed.detail = Some("ticket_id is required".into());
        assert_eq!(
            replayed.to_string(),
            "#12 freshservice ticket -: rejected -> rejected (ticket_id is required)"
        );
    }

    #[test]
    fn since_is_read_as_codex_reads_times() {
        let selection = Selection::Since {
            since: "2024-03-01 10:30".into(),
            outcomes: vec![JournalOutcome::Rejected],
        };
        assert_eq!(
            selection.query().unwrap().since.as_deref(),
            Some("2024-03-01T10:30:00Z")
        );
    }
}
