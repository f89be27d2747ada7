//! The one status type, `Status`: the database's state (as the writer
//! publishes it), each provider's poller (role, interval, last run, as the
//! pollers publish it) and what the database holds about webhooks and sync
//! runs (counts, coverage, the last runs, the sync state).
//!
//! - `render`: `/webhooks/health`'s JSON and `codex status`'s text (the
//!   status page, `http/status_page.rs`, renders the same model).
//! - `board`: `StatusBoard`, where the parts come together in a running
//!   service, and the status thread that refreshes what the database holds,
//!   at most once a second, so a flood of health checks costs the database
//!   little and never waits in the writer's queue.

mod board;
mod render;

pub use board::{StatusBoard, StatusThread};
pub use render::run_json;

use std::time::Duration;

use crate::config::Config;
use crate::error::StoreError;
use crate::psa::Provider;
use crate::store::{
    COVERAGE_WINDOW_SECS, Delivery, DeliveryCount, ProviderSummary, Reader, Reads, SyncRun,
};
use crate::sync::PollerState;
use crate::timestamp;

/// Runs `codex status` lists.
const REPORT_RUNS: i64 = 10;

/// The state of the service at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Why the database cannot take writes now; `None` while it can.
    pub database_problem: Option<String>,
    /// The database, its password masked.
    pub database_name: String,
    pub webhooks_enabled: bool,
    /// One entry per provider, in `Provider::ALL` order.
    pub providers: Vec<ProviderStatus>,
    /// How long the service has run; `None` outside `serve`.
    pub uptime: Option<Duration>,
    /// The last deliveries and runs; `None` unless asked for (the status
    /// page, `codex status`) or when the database could not answer.
    pub activity: Option<Activity>,
}

/// What happened lately, from the journal and `sync_runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The newest deliveries, newest first (never a body).
    pub deliveries: Vec<Delivery>,
    /// Deliveries per ten minutes and outcome over the coverage window.
    pub counts: Vec<DeliveryCount>,
    /// The newest runs of every provider, newest first.
    pub runs: Vec<SyncRun>,
}

impl Activity {
    /// Deliveries and runs the status page lists.
    pub const DELIVERIES: i64 = 50;
    pub const RUNS: i64 = 20;

    pub fn read(reads: &mut dyn Reads) -> Result<Activity, StoreError> {
        Ok(Activity {
            deliveries: reads.recent_deliveries(Self::DELIVERIES)?,
            counts: reads.delivery_counts(&timestamp::seconds_ago(COVERAGE_WINDOW_SECS))?,
            runs: reads.recent_runs(None, Self::RUNS)?,
        })
    }
}

/// One provider's polling, and what the database holds about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderStatus {
    pub provider: Provider,
    pub poller: PollerState,
    /// `None` when the database could not answer (in time).
    pub stored: Option<ProviderSummary>,
}

impl ProviderStatus {
    /// The newest run: this instance's own, unless the database holds a
    /// newer one (another instance's, or `codex sync --once`).
    pub fn last_run(&self) -> Option<&SyncRun> {
        let stored = self.stored.as_ref().and_then(|s| s.runs.first());
        match (&self.poller.last_run, stored) {
            (Some(own), Some(stored)) if stored.id > own.id => Some(stored),
            (Some(own), _) => Some(own),
            (None, stored) => stored,
        }
    }
}

impl Status {
    /// The status with what the database holds read now, on `reads`
    /// (`codex status`): no poller runs in this process.
    pub fn read_now(config: &Config, reads: &mut Reader) -> Result<Status, StoreError> {
        let mut providers = Vec::new();
        for provider in Provider::ALL {
            let stored = reads.read(|r| ProviderSummary::read(r, provider, REPORT_RUNS))?;
            providers.push(ProviderStatus {
                provider,
                poller: PollerState::new(config, provider),
                stored: Some(stored),
            });
        }
        let activity = reads.read(Activity::read)?;
        Ok(Status {
            database_problem: None,
            database_name: config.database.url.masked().to_string(),
            webhooks_enabled: config.webhooks.enabled,
            providers,
            uptime: None,
            activity: Some(activity),
        })
    }
}
