//! What the journal (`webhook_events`) records of a delivery.

use super::Outcome;

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
