//! What each poller publishes about itself: its role, the interval in
//! force and why, its last run, and what it last read from the database.
//! The status board reads it (health, the status page); the pollers never
//! wait on a reader.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::psa::Provider;
use crate::store::{ProviderSummary, SyncRun};

/// What this instance's poller for one provider is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct PollerState {
    /// Polling is configured for the provider (account and timer).
    pub enabled: bool,
    pub role: Role,
    /// `[scheduler]` intervals: without and with healthy webhooks.
    pub schedule: (Duration, Duration),
    /// The interval in force, once assessed, and why.
    pub interval: Option<Duration>,
    pub interval_reason: String,
    /// When this instance runs next, while it leads.
    pub next_sync_at: Option<String>,
    /// This instance's last run.
    pub last_run: Option<SyncRun>,
}

/// A poller's part in polling a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Polling is configured; the poller has not yet assessed its schedule.
    Starting,
    /// This instance polls the provider.
    Leader,
    /// Another instance holds the poller lock (PostgreSQL); this one takes
    /// over when it goes away.
    Standby,
    /// Polling is not configured for the provider.
    Disabled,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Leader => "leader",
            Role::Standby => "standby",
            Role::Disabled => "disabled",
        }
    }
}

impl PollerState {
    pub fn new(config: &Config, provider: Provider) -> PollerState {
        let enabled = provider.polling(config);
        PollerState {
            enabled,
            role: if enabled {
                Role::Starting
            } else {
                Role::Disabled
            },
            schedule: (
                config.scheduler.ticket_sync_interval,
                config.scheduler.ticket_sync_interval_with_webhooks,
            ),
            interval: None,
            interval_reason: String::new(),
            next_sync_at: None,
            last_run: None,
        }
    }
}

/// Where the pollers publish: per provider, in `Provider::ALL` order, the
/// poller's state and what it last read from the database (and when).
pub struct PollerBoard {
    states: Mutex<Vec<PollerState>>,
    read: Mutex<Vec<Option<(Instant, ProviderSummary)>>>,
}

impl PollerBoard {
    pub fn new(config: &Config) -> PollerBoard {
        PollerBoard {
            states: Mutex::new(Self::starting(config)),
            read: Mutex::new(vec![None; Provider::ALL.len()]),
        }
    }

    /// Starts over with a reloaded configuration whose polling changed:
    /// the pollers start again.
    pub fn reset(&self, config: &Config) {
        *lock(&self.states) = Self::starting(config);
    }

    /// Changes what `provider`'s poller publishes.
    pub fn update(&self, provider: Provider, change: impl FnOnce(&mut PollerState)) {
        change(&mut lock(&self.states)[provider.index()]);
    }

    /// Keeps what a poller read from the database, so health need not ask
    /// again within a second.
    pub fn remember(&self, provider: Provider, summary: &ProviderSummary) {
        lock(&self.read)[provider.index()] = Some((Instant::now(), summary.clone()));
    }

    /// Every poller's state, in `Provider::ALL` order.
    pub fn states(&self) -> Vec<PollerState> {
        lock(&self.states).clone()
    }

    /// What each poller last read from the database, and when.
    pub fn read(&self) -> Vec<Option<(Instant, ProviderSummary)>> {
        lock(&self.read).clone()
    }

    fn starting(config: &Config) -> Vec<PollerState> {
        Provider::ALL
            .into_iter()
            .map(|p| PollerState::new(config, p))
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
