//! The one status type, `Status`: the database's state (as the writer
//! publishes it), each provider's poller (role, interval, last run) and
//! what the database holds about webhooks and sync runs (counts, coverage,
//! the last runs, the sync state). `/webhooks/health` and `codex status`
//! both render it, here.
//!
//! `StatusBoard` is where the parts come together in a running service:
//! pollers publish their state on it, and a status thread with a read
//! connection of its own refreshes what the database holds, at most once
//! a second, so a flood of health checks costs the database little and
//! never waits in the writer's queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};
use serde_json::{Map, Value, json};

use crate::config::{Config, format_duration};
use crate::error::StoreError;
use crate::psa::Provider;
use crate::store::{
    DbHealth, Delivery, DeliveryCount, Reader, Reads, SyncRun, SyncState, WebhookCounts,
};
use crate::timestamp;

/// Coverage is measured over this window.
pub const COVERAGE_WINDOW_SECS: u64 = 24 * 3600;
/// How long what was read from the database is reused for health.
const STORED_FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a health answer waits for the database: health answers within
/// a second even while the database is slow, without the stored part when
/// it cannot have it in time.
const STORED_WAIT: Duration = Duration::from_millis(300);
/// How often an idle status thread checks whether to let go of its
/// connection.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Runs health shows (the newest), and `codex status` lists.
const HEALTH_RUNS: i64 = 1;
const REPORT_RUNS: i64 = 10;
/// Deliveries `codex status` lists.
const REPORT_DELIVERIES: usize = 10;

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
    pub stored: Option<Stored>,
}

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

/// What the journal and `sync_runs` hold about one provider, whoever wrote
/// them (this instance, another, `codex sync --once`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
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

impl Stored {
    /// Reads what the database holds about `provider`: the webhook counts
    /// and missed changes of the coverage window, the `runs` newest runs,
    /// the sync state.
    pub fn read(
        reads: &mut dyn Reads,
        provider: Provider,
        runs: i64,
    ) -> Result<Stored, StoreError> {
        let window_start = timestamp::seconds_ago(COVERAGE_WINDOW_SECS);
        Ok(Stored {
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

impl PollerState {
    fn new(config: &Config, provider: Provider) -> PollerState {
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
            let stored = reads.read(|r| Stored::read(r, provider, REPORT_RUNS))?;
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

    /// What `/webhooks/health` says about the service's state: the
    /// database (`status`, `database`, `database_error`) and polling (see
    /// `polling_fields`). The routes add what the configuration says.
    pub fn health_fields(&self) -> Map<String, Value> {
        let database = self.database_problem.is_none();
        let mut map = Map::new();
        map.insert(
            "status".into(),
            (if database { "ok" } else { "degraded" }).into(),
        );
        map.insert(
            "database".into(),
            (if database { "ok" } else { "unavailable" }).into(),
        );
        if let Some(problem) = &self.database_problem {
            map.insert("database_error".into(), problem.clone().into());
        }
        map.extend(self.polling_fields());
        map
    }

    /// The fields health adds about polling and coverage: every
    /// provider's under `providers` and `webhook_coverage`, and at the top
    /// (as the predecessor's readers expect) those of the first provider
    /// that polls, else the first provider's.
    fn polling_fields(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut providers = Map::new();
        let mut coverage = Map::new();
        let main = self
            .providers
            .iter()
            .find(|p| p.poller.enabled)
            .or(self.providers.first());
        for status in &self.providers {
            let last = status.last_run();
            let interval = status.poller.interval.map(|d| d.as_secs());
            let mut fields = Map::new();
            fields.insert(
                "polling".into(),
                json!({
                    "enabled": status.poller.enabled,
                    "role": status.poller.role.as_str(),
                    "interval_seconds": interval,
                    "interval_reason": status.poller.interval_reason,
                    "next_sync_at": status.poller.next_sync_at,
                    "last_sync": last.map(run_json),
                }),
            );
            fields.insert(
                "last_sync_at".into(),
                json!(last.and_then(|r| r.finished_at.clone())),
            );
            fields.insert(
                "last_sync_outcome".into(),
                json!(last.map(|r| r.outcome.as_str())),
            );
            let webhook_coverage = json!(
                status
                    .stored
                    .as_ref()
                    .map(|s| coverage_json(s, self.webhooks_enabled))
            );
            if main.is_some_and(|m| m.provider == status.provider) {
                map.extend(fields.clone());
                map.insert("polling_interval_seconds".into(), json!(interval));
            }
            coverage.insert(status.provider.as_str().into(), webhook_coverage);
            providers.insert(status.provider.as_str().into(), Value::Object(fields));
        }
        map.insert("webhook_coverage".into(), Value::Object(coverage));
        map.insert("providers".into(), Value::Object(providers));
        map
    }

    /// The text `codex status` prints: polling configuration, webhook
    /// traffic and coverage over the last 24 hours, and the last runs.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "database: {}", self.database_name);
        let _ = writeln!(
            out,
            "webhooks: {}",
            if self.webhooks_enabled {
                "enabled"
            } else {
                "disabled"
            }
        );
        for status in &self.providers {
            let provider = status.provider;
            let (short, long) = status.poller.schedule;
            let _ = writeln!(
                out,
                "\n{provider}, last 24 h:\n  polling: {}",
                if status.poller.enabled {
                    format!(
                        "every {} (every {} while webhooks deliver)",
                        format_duration(short),
                        format_duration(long)
                    )
                } else {
                    "not configured".to_string()
                }
            );
            let Some(stored) = &status.stored else {
                let _ = writeln!(out, "  the database did not answer");
                continue;
            };
            let counts = &stored.counts;
            let _ = writeln!(
                out,
                "  webhook deliveries: {} received, {} stored a change, {} rejected; last at {}",
                counts.received,
                counts.applied,
                counts.rejected,
                counts.last_received_at.as_deref().unwrap_or("never")
            );
            let _ = writeln!(
                out,
                "  webhook coverage: {} ({} changes by webhook, {} found first by polling)",
                stored.coverage().map_or_else(
                    || "no changes yet".to_string(),
                    |ratio| format!("{:.1}%", ratio * 100.0)
                ),
                counts.applied,
                stored.missed
            );
            let _ = writeln!(
                out,
                "  sync cursor: {}; last reconcile: {}",
                stored.state.cursor.as_deref().unwrap_or("none"),
                stored.state.last_reconcile_at.as_deref().unwrap_or("never")
            );
            let _ = writeln!(out, "  last sync runs:");
            if stored.runs.is_empty() {
                let _ = writeln!(out, "    none");
            }
            for run in &stored.runs {
                let _ = writeln!(out, "    {}", run_line(run));
            }
        }
        if let Some(activity) = &self.activity {
            let _ = writeln!(out, "\nlast deliveries:");
            if activity.deliveries.is_empty() {
                let _ = writeln!(out, "  none");
            }
            for delivery in activity.deliveries.iter().take(REPORT_DELIVERIES) {
                let _ = writeln!(out, "  {}", delivery_line(delivery));
            }
        }
        out
    }
}

/// One delivery on one line, for `codex status`.
fn delivery_line(delivery: &Delivery) -> String {
    format!(
        "{} {} ticket {} {} -> {} ({}){}",
        delivery.received_at,
        delivery.provider,
        delivery
            .ticket_id
            .map_or_else(|| "-".to_string(), |id| id.to_string()),
        delivery.event.as_deref().unwrap_or("-"),
        delivery.outcome,
        delivery.status_code(),
        delivery
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )
}

/// One run on one line, for `codex status`.
fn run_line(run: &SyncRun) -> String {
    format!(
        "#{} {} {} -> {} {}: {} seen, {} changed, {} missed by webhooks{}, {} API calls{}",
        run.id,
        run.kind,
        run.started_at,
        run.finished_at.as_deref().unwrap_or("(running)"),
        run.outcome,
        run.tickets_seen,
        run.tickets_changed,
        run.missed_by_webhooks,
        if run.missed_ticket_ids.is_empty() {
            String::new()
        } else {
            format!(" {:?}", run.missed_ticket_ids)
        },
        run.api_calls,
        run.error
            .as_deref()
            .map(|e| format!("; error: {e}"))
            .unwrap_or_default()
    )
}

/// A run as JSON, for health and `codex sync --once`.
pub fn run_json(run: &SyncRun) -> Value {
    json!({
        "id": run.id,
        "provider": run.provider,
        "kind": run.kind.as_str(),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "outcome": run.outcome.as_str(),
        "tickets_seen": run.tickets_seen,
        "tickets_changed": run.tickets_changed,
        "missed_by_webhooks": run.missed_by_webhooks,
        "missed_ticket_ids": run.missed_ticket_ids,
        "api_calls": run.api_calls,
        "error": run.error,
    })
}

fn coverage_json(stored: &Stored, webhooks_enabled: bool) -> Value {
    json!({
        "webhooks_enabled": webhooks_enabled,
        "window_hours": COVERAGE_WINDOW_SECS / 3600,
        "coverage": stored.coverage(),
        "changes_by_webhook": stored.counts.applied,
        "changes_missed": stored.missed,
        "missed_ticket_ids_last_run": stored.missed_last_run(),
        "last_webhook_at": stored.counts.last_processed_at,
    })
}

/// The running service's status as it changes: the pollers publish on it,
/// the status thread fills in what the database holds, health reads it.
pub struct StatusBoard {
    database: Arc<DbHealth>,
    database_name: String,
    /// Per provider, in `Provider::ALL` order: the poller's state.
    pollers: Mutex<Vec<PollerState>>,
    webhooks_enabled: Mutex<bool>,
    /// Per provider: what the database held, and when it was read.
    stored: Mutex<Vec<Option<(Instant, Stored)>>>,
    /// Counts the status thread's refreshes, so a waiter knows when one
    /// it asked for is done.
    refreshes: AtomicU64,
    refreshed: Condvar,
    /// Asks the status thread for a refresh (one pending at most).
    refresh: Sender<()>,
    requests: Receiver<()>,
    started: Instant,
}

impl StatusBoard {
    pub fn new(config: &Config, database: Arc<DbHealth>) -> StatusBoard {
        let (refresh, requests) = bounded(1);
        StatusBoard {
            database,
            database_name: config.database.url.masked().to_string(),
            pollers: Mutex::new(
                Provider::ALL
                    .into_iter()
                    .map(|p| PollerState::new(config, p))
                    .collect(),
            ),
            webhooks_enabled: Mutex::new(config.webhooks.enabled),
            stored: Mutex::new(vec![None; Provider::ALL.len()]),
            refreshes: AtomicU64::new(0),
            refreshed: Condvar::new(),
            refresh,
            requests,
            started: Instant::now(),
        }
    }

    /// Starts over with a reloaded configuration whose polling changed:
    /// the pollers start again.
    pub fn reset(&self, config: &Config) {
        *lock(&self.pollers) = Provider::ALL
            .into_iter()
            .map(|p| PollerState::new(config, p))
            .collect();
        *lock(&self.webhooks_enabled) = config.webhooks.enabled;
    }

    /// Changes what `provider`'s poller publishes.
    pub fn update_poller(&self, provider: Provider, change: impl FnOnce(&mut PollerState)) {
        change(&mut lock(&self.pollers)[index(provider)]);
    }

    /// Keeps what a poller read from the database, so health need not ask
    /// again within a second.
    pub fn remember(&self, provider: Provider, stored: &Stored) {
        lock(&self.stored)[index(provider)] = Some((Instant::now(), stored.clone()));
    }

    /// The status now. What the database holds is reused when read within
    /// the last second, else asked of the status thread and waited for at
    /// most `STORED_WAIT`; it is left out while the database is
    /// unavailable or does not answer in time.
    pub fn status(&self) -> Status {
        let database_problem = self.database.problem();
        let mut stored = self.fresh_stored();
        if stored.iter().any(Option::is_none) && database_problem.is_none() {
            self.wait_for_refresh();
            stored = self.fresh_stored();
        }
        let pollers = lock(&self.pollers).clone();
        Status {
            database_problem,
            database_name: self.database_name.clone(),
            webhooks_enabled: *lock(&self.webhooks_enabled),
            uptime: Some(self.started.elapsed()),
            activity: None,
            providers: Provider::ALL
                .into_iter()
                .zip(pollers)
                .zip(stored)
                .map(|((provider, poller), stored)| ProviderStatus {
                    provider,
                    poller,
                    stored,
                })
                .collect(),
        }
    }

    /// What the database held, per provider, where read within the last second.
    fn fresh_stored(&self) -> Vec<Option<Stored>> {
        lock(&self.stored)
            .iter()
            .map(|entry| {
                entry
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < STORED_FRESH_FOR)
                    .map(|(_, stored)| stored.clone())
            })
            .collect()
    }

    /// Asks the status thread for a refresh and waits for one to finish,
    /// at most `STORED_WAIT`.
    fn wait_for_refresh(&self) {
        let seen = self.refreshes.load(Ordering::SeqCst);
        // A full channel means a refresh is already asked for.
        let _ = self.refresh.try_send(());
        let deadline = Instant::now() + STORED_WAIT;
        let mut stored = lock(&self.stored);
        while self.refreshes.load(Ordering::SeqCst) == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::debug!("health: the database did not answer in time for coverage");
                return;
            }
            stored = self
                .refreshed
                .wait_timeout(stored, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Reads what the database holds for every provider (the status
    /// thread's work), and wakes whoever waits for it.
    fn refresh_from(&self, reader: &mut Reader) {
        let mut read = Vec::new();
        for provider in Provider::ALL {
            match reader.read(|r| Stored::read(r, provider, HEALTH_RUNS)) {
                Ok(stored) => read.push((provider, stored)),
                Err(error) => {
                    log::debug!("health: cannot read webhook coverage: {error}");
                    break;
                }
            }
        }
        let mut stored = lock(&self.stored);
        for (provider, entry) in read {
            stored[index(provider)] = Some((Instant::now(), entry));
        }
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.refreshed.notify_all();
    }
}

/// The status thread: reads what the database holds when health asks.
pub struct StatusThread {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl StatusThread {
    /// Starts the thread, with `reader` as its connection.
    pub fn spawn(board: Arc<StatusBoard>, mut reader: Reader) -> std::io::Result<StatusThread> {
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("codex-status".to_string())
            .spawn(move || {
                loop {
                    select! {
                        recv(board.requests) -> _ => board.refresh_from(&mut reader),
                        recv(stopped) -> _ => break,
                        // Health does not ask while the database is
                        // unavailable; the connection is let go of then,
                        // so that only the writer holds a deleted file.
                        default(IDLE_CHECK) => if board.database.problem().is_some() {
                            reader.disconnect();
                        },
                    }
                }
            })?;
        Ok(StatusThread { stop, thread })
    }

    /// Stops the thread (after the read under way, if any) and waits.
    pub fn stop(self) -> std::thread::Result<()> {
        drop(self.stop);
        self.thread.join()
    }
}

fn index(provider: Provider) -> usize {
    Provider::ALL
        .iter()
        .position(|p| *p == provider)
        .expect("Provider::ALL lists every provider")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RunKind, RunOutcome};

    fn run(id: i64, provider: Provider, outcome: RunOutcome) -> SyncRun {
        SyncRun {
            id,
            finished_at: Some(format!("2024-05-0{id}T00:00:00Z")),
            outcome,
            missed_ticket_ids: vec![id * 10],
            ..SyncRun::starting(provider, RunKind::Incremental)
        }
    }

    fn poller(role: Role, last_run: Option<SyncRun>) -> PollerState {
        PollerState {
            enabled: role != Role::Disabled,
            role,
            schedule: (Duration::from_secs(300), Duration::from_secs(3600)),
            interval: (role == Role::Leader).then_some(Duration::from_secs(300)),
            interval_reason: "no webhook delivery in the last 1h".to_string(),
            next_sync_at: None,
            last_run,
        }
    }

    fn status() -> Status {
        Status {
            database_problem: None,
            database_name: "codex.db".to_string(),
            webhooks_enabled: true,
            uptime: None,
            activity: None,
            providers: vec![
                ProviderStatus {
                    provider: Provider::Freshservice,
                    poller: poller(Role::Disabled, None),
                    stored: None,
                },
                ProviderStatus {
                    provider: Provider::SuperOps,
                    poller: poller(
                        Role::Leader,
                        Some(run(1, Provider::SuperOps, RunOutcome::Failed)),
                    ),
                    stored: Some(Stored {
                        counts: WebhookCounts {
                            received: 5,
                            applied: 3,
                            rejected: 1,
                            last_processed_at: Some("2024-05-02T00:00:00Z".to_string()),
                            last_received_at: Some("2024-05-02T00:00:01Z".to_string()),
                            last_deletion_at: None,
                        },
                        missed: 1,
                        runs: vec![run(2, Provider::SuperOps, RunOutcome::Ok)],
                        state: SyncState::default(),
                    }),
                },
            ],
        }
    }

    #[test]
    fn health_shows_the_polling_provider_at_the_top_and_every_provider_below() {
        let fields = Value::Object(status().health_fields());
        assert_eq!(fields["status"], "ok");
        assert_eq!(fields["database"], "ok");
        assert!(fields.get("database_error").is_none());
        // SuperOps polls, Freshservice does not: SuperOps is at the top.
        assert_eq!(fields["polling"]["role"], "leader");
        assert_eq!(fields["polling_interval_seconds"], 300);
        // The database holds a newer run (another instance's) than this
        // instance's own: that one is the last.
        assert_eq!(fields["last_sync_outcome"], "ok");
        assert_eq!(fields["polling"]["last_sync"]["id"], 2);
        assert_eq!(fields["polling"]["last_sync"]["kind"], "incremental");
        let coverage = &fields["webhook_coverage"]["superops"];
        assert_eq!(coverage["changes_by_webhook"], 3);
        assert_eq!(coverage["changes_missed"], 1);
        assert_eq!(coverage["coverage"], 0.75);
        assert_eq!(coverage["missed_ticket_ids_last_run"], json!([20]));
        assert_eq!(coverage["window_hours"], 24);
        assert_eq!(fields["webhook_coverage"]["freshservice"], Value::Null);
        let freshservice = &fields["providers"]["freshservice"];
        assert_eq!(freshservice["polling"]["role"], "disabled");
        assert_eq!(freshservice["last_sync_outcome"], Value::Null);
        assert!(freshservice.get("polling_interval_seconds").is_none());
        assert!(freshservice.get("webhook_coverage").is_none());
    }

    #[test]
    fn health_says_why_the_database_is_unavailable() {
        let mut status = status();
        status.database_problem = Some("database unavailable: refused".to_string());
        let fields = Value::Object(status.health_fields());
        assert_eq!(fields["status"], "degraded");
        assert_eq!(fields["database"], "unavailable");
        assert_eq!(fields["database_error"], "database unavailable: refused");
    }

    #[test]
    fn the_report_lists_counts_coverage_and_runs() {
        let report = status().report();
        assert!(
            report.starts_with("database: codex.db\nwebhooks: enabled\n"),
            "{report}"
        );
        assert!(
            report.contains(
                "freshservice, last 24 h:\n  polling: not configured\n  the database did not answer"
            ),
            "{report}"
        );
        assert!(
            report.contains("  polling: every 5m (every 1h while webhooks deliver)"),
            "{report}"
        );
        assert!(report.contains("webhook deliveries: 5 received, 3 stored a change, 1 rejected; last at 2024-05-02T00:00:01Z"), "{report}");
        assert!(
            report.contains(
                "webhook coverage: 75.0% (3 changes by webhook, 1 found first by polling)"
            ),
            "{report}"
        );
        assert!(
            report.contains("sync cursor: none; last reconcile: never"),
            "{report}"
        );
        assert!(report.contains("    #2 incremental "), "{report}");
        assert!(
            report.contains(" ok: 0 seen, 0 changed, 0 missed by webhooks [20], 0 API calls"),
            "{report}"
        );
    }

    #[test]
    fn roles_and_run_fields_are_stored_as_before() {
        let names: Vec<&str> = [Role::Starting, Role::Leader, Role::Standby, Role::Disabled]
            .into_iter()
            .map(Role::as_str)
            .collect();
        assert_eq!(names, ["starting", "leader", "standby", "disabled"]);
        for kind in [RunKind::Initial, RunKind::Incremental, RunKind::Full] {
            assert_eq!(kind.as_str().parse::<RunKind>(), Ok(kind));
        }
        for outcome in [RunOutcome::Running, RunOutcome::Ok, RunOutcome::Failed] {
            assert_eq!(outcome.as_str().parse::<RunOutcome>(), Ok(outcome));
        }
        assert!("done".parse::<RunOutcome>().is_err());
    }

    fn board(dir: &std::path::Path) -> (Arc<StatusBoard>, crate::store::WriterHandle) {
        let mut config = Config::default();
        config.database.url = crate::config::DatabaseUrl::Sqlite(dir.join("codex.db"));
        let first = crate::store::connect_at_start(&config.database.url).unwrap();
        let writer = crate::store::spawn_writer(first, config.database.url.clone(), 30).unwrap();
        let board = Arc::new(StatusBoard::new(&config, writer.client.health_handle()));
        (board, writer)
    }

    #[test]
    fn health_waits_for_the_database_no_longer_than_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (board, writer) = board(dir.path());
        // No status thread answers: health goes on without what the
        // database holds, after STORED_WAIT.
        let started = Instant::now();
        let status = board.status();
        let waited = started.elapsed();
        assert!(
            waited >= STORED_WAIT && waited < STORED_WAIT * 3,
            "{waited:?}"
        );
        assert!(status.providers.iter().all(|p| p.stored.is_none()));
        assert_eq!(status.database_problem, None);
        drop(board);
        writer.join().unwrap();
    }

    #[test]
    fn the_status_thread_fills_in_what_the_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (board, writer) = board(dir.path());
        let reader = Reader::new(
            &crate::config::DatabaseUrl::Sqlite(dir.path().join("codex.db")),
            writer.client.health_handle(),
        );
        let thread = StatusThread::spawn(board.clone(), reader).unwrap();
        let status = board.status();
        assert!(
            status
                .providers
                .iter()
                .all(|p| p.stored == Some(Stored::default())),
            "{status:?}"
        );
        // Read within the last second: reused, not read again.
        let refreshes = board.refreshes.load(Ordering::SeqCst);
        board.status();
        assert_eq!(board.refreshes.load(Ordering::SeqCst), refreshes);
        thread.stop().unwrap();
        drop(board);
        writer.join().unwrap();
    }
}
