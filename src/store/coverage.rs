//! What the journal and `sync_runs` hold about one provider over the
//! coverage window: the poll scheduler decides its interval from it, and
//! the status (health, `codex status`, the status page) shows it.

use super::{Reads, SyncRun, SyncState, WebhookCounts};
use crate::error::StoreError;
use crate::psa::Provider;
use crate::timestamp;

/// Coverage is measured over this window.
pub const COVERAGE_WINDOW_SECS: u64 = 24 * 3600;

/// What the journal and `sync_runs` hold about one provider, whoever wrote
/// them (this instance, another, `codex sync --once`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderSummary {
    /// Webhook deliveries over the coverage window: `applied` is the
    /// changes that arrived by webhook before any poll saw them,
    /// `last_processed_at` when a delivery last reached Codex and was
    /// processed.
    pub counts: WebhookCounts,
    /// Changes the poll found before any webhook, over the window.
    pub missed: i64,
    /// The newest runs, newest first.
    pub runs: Vec<SyncRun>,
    pub state: SyncState,
}

impl ProviderSummary {
    /// Reads what the database holds about `provider`: the webhook counts
    /// and missed changes of the coverage window, the `runs` newest runs,
    /// the sync state.
    pub fn read(
        reads: &mut dyn Reads,
        provider: Provider,
        runs: i64,
    ) -> Result<ProviderSummary, StoreError> {
        let window_start = timestamp::seconds_ago(COVERAGE_WINDOW_SECS);
        Ok(ProviderSummary {
            counts: reads.webhook_counts(provider, &window_start)?,
            missed: reads.missed_since(provider, &window_start)?,
            runs: reads.recent_runs(Some(provider), runs)?,
            state: reads.sync_state(provider)?,
        })
    }

    /// Webhook coverage: the share of the window's changes that arrived
    /// by webhook before any poll saw them; `None` without changes.
    pub fn coverage(&self) -> Option<f64> {
        let total = self.counts.applied + self.missed;
        (total > 0).then(|| self.counts.applied as f64 / total as f64)
    }

    /// Tickets whose changes the last run found before any webhook.
    pub fn missed_last_run(&self) -> &[i64] {
        self.runs
            .first()
            .map_or(&[], |r| r.missed_ticket_ids.as_slice())
    }
}
