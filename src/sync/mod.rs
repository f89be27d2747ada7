//! Polling, the safety net behind webhooks: a timer thread that syncs
//! tickets from the PSA's REST API through the same writer (and the same
//! newest-wins upsert) as webhooks, every `ticket_sync_interval` without
//! webhooks and every `ticket_sync_interval_with_webhooks` while they
//! demonstrably work. It also measures how well they work: a change the
//! poll finds before any webhook delivered it was missed by webhooks.

mod report;
mod run;

pub use report::status_report;
pub use run::{RunKind, run_sync};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::error::StoreError;
use crate::psa::Provider;
use crate::store::{self, Backend, StoreClient, SyncRun};
use crate::timestamp;

/// Coverage is measured over this window.
pub(crate) const COVERAGE_WINDOW_SECS: u64 = 24 * 3600;
/// How long a write or bookkeeping call to the writer may take.
pub(crate) const STORE_WAIT: Duration = Duration::from_secs(60);

/// How long health answers reuse the coverage last read from the database
/// (by a health answer or the poller's schedule check), so that a flood of
/// unauthenticated health checks costs the writer one query a second.
const COVERAGE_CACHE: Duration = Duration::from_secs(1);
/// How long a health answer waits for the coverage query: health answers
/// within a second even while the writer is busy, and without coverage
/// when it cannot get it in time.
const COVERAGE_WAIT: Duration = Duration::from_millis(300);

/// What `/webhooks/health` reports about polling: one entry per provider.
pub struct SyncStatus {
    providers: Vec<ProviderStatus>,
}

/// What `/webhooks/health` reports about one provider's polling.
pub struct ProviderStatus {
    provider: Provider,
    configured: bool,
    webhooks_enabled: bool,
    inner: Mutex<StatusInner>,
    /// Coverage and the last run as read from the database, and when.
    from_db: Mutex<Option<(Instant, Coverage, Option<SyncRun>)>>,
}

#[derive(Default)]
struct StatusInner {
    role: &'static str,
    interval: Option<Duration>,
    interval_reason: String,
    next_sync_at: Option<String>,
    last_run: Option<SyncRun>,
}

/// Webhook coverage of one provider over the last 24 hours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    /// Changes that arrived by webhook (before any poll saw them).
    pub by_webhook: i64,
    /// Changes the poll found first.
    pub missed: i64,
    /// `by_webhook / (by_webhook + missed)`; `None` without changes.
    pub ratio: Option<f64>,
    /// Tickets whose changes the last run found before any webhook.
    pub missed_last_run: Vec<i64>,
    /// When a delivery last reached Codex and was processed.
    pub last_webhook_at: Option<String>,
}

impl SyncStatus {
    pub fn new(config: &Config) -> SyncStatus {
        SyncStatus {
            providers: Provider::ALL
                .into_iter()
                .map(|provider| ProviderStatus::new(config, provider))
                .collect(),
        }
    }

    /// The status of one provider.
    pub fn provider(&self, provider: Provider) -> &ProviderStatus {
        self.providers
            .iter()
            .find(|p| p.provider == provider)
            .expect("SyncStatus::new makes an entry for every provider")
    }

    /// The fields `/webhooks/health` adds about polling and coverage: every
    /// provider's under `providers` and `webhook_coverage`, and at the top
    /// (as the predecessor's readers expect) those of the first provider
    /// that polls, else Freshservice's.
    pub fn health_fields(&self, store: &StoreClient) -> Map<String, Value> {
        let mut map = Map::new();
        let mut providers = Map::new();
        let mut coverage = Map::new();
        let main = self
            .providers
            .iter()
            .find(|p| p.configured)
            .unwrap_or(&self.providers[0])
            .provider;
        let mut ask = true;
        for status in &self.providers {
            let mut fields = status.health_fields(store, &mut ask);
            if status.provider == main {
                map.extend(fields.clone());
            }
            if let Some(value) = fields.remove("webhook_coverage") {
                coverage.insert(status.provider.as_str().into(), value);
            }
            fields.remove("polling_interval_seconds");
            providers.insert(status.provider.as_str().into(), Value::Object(fields));
        }
        map.insert("webhook_coverage".into(), Value::Object(coverage));
        map.insert("providers".into(), Value::Object(providers));
        map
    }
}

impl ProviderStatus {
    fn new(config: &Config, provider: Provider) -> ProviderStatus {
        let configured = provider.polling(config);
        ProviderStatus {
            provider,
            configured,
            webhooks_enabled: config.webhooks.enabled,
            inner: Mutex::new(StatusInner {
                role: if configured { "starting" } else { "disabled" },
                ..StatusInner::default()
            }),
            from_db: Mutex::new(None),
        }
    }

    fn remember(&self, coverage: &Coverage, run: Option<&SyncRun>) {
        *self.from_db.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), coverage.clone(), run.cloned()));
    }

    /// Coverage and the newest run, from the database: what the journal and
    /// `sync_runs` hold, whoever wrote them (this instance's poller, another
    /// instance's, `codex sync --once`). Read at most once a second;
    /// `None` while the database cannot answer.
    /// `ask` is cleared when the database did not answer in time, so that
    /// one health answer waits for it at most once, whatever the number of
    /// providers.
    fn coverage(&self, store: &StoreClient, ask: &mut bool) -> Option<(Coverage, Option<SyncRun>)> {
        let cached = self.from_db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, coverage, run)) = cached.as_ref() {
            if at.elapsed() < COVERAGE_CACHE {
                return Some((coverage.clone(), run.clone()));
            }
        }
        if !*ask || !store.health().is_available() {
            return None;
        }
        let provider = self.provider;
        let read = store.call_once(COVERAGE_WAIT, move |backend| {
            read_coverage(backend, provider)
        });
        match read {
            Ok((coverage, run)) => {
                drop(cached);
                self.remember(&coverage, run.as_ref());
                Some((coverage, run))
            }
            Err(error) => {
                log::debug!("health: cannot read webhook coverage: {error}");
                *ask = false;
                None
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut StatusInner)) {
        change(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// This provider's polling, last run and coverage.
    fn health_fields(&self, store: &StoreClient, ask: &mut bool) -> Map<String, Value> {
        let from_db = self.coverage(store, ask);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = Map::new();
        // The newest run: this instance's own, else whatever the database
        // holds (another instance's, or `codex sync --once`).
        let last = match (
            &inner.last_run,
            from_db.as_ref().and_then(|(_, r)| r.as_ref()),
        ) {
            (Some(own), Some(stored)) if stored.id > own.id => Some(stored),
            (Some(own), _) => Some(own),
            (None, stored) => stored,
        };
        map.insert(
            "polling".into(),
            json!({
                "enabled": self.configured,
                "role": inner.role,
                "interval_seconds": inner.interval.map(|d| d.as_secs()),
                "interval_reason": inner.interval_reason,
                "next_sync_at": inner.next_sync_at,
                "last_sync": last.map(run_json),
            }),
        );
        map.insert(
            "polling_interval_seconds".into(),
            json!(inner.interval.map(|d| d.as_secs())),
        );
        map.insert(
            "last_sync_at".into(),
            json!(last.and_then(|r| r.finished_at.clone())),
        );
        map.insert(
            "last_sync_outcome".into(),
            json!(last.map(|r| r.outcome.clone())),
        );
        let coverage = from_db
            .as_ref()
            .map(|(c, _)| coverage_json(c, self.webhooks_enabled));
        map.insert("webhook_coverage".into(), json!(coverage));
        map
    }
}

/// A run as JSON, for health and `codex sync --once`.
pub fn run_json(run: &SyncRun) -> Value {
    json!({
        "id": run.id,
        "provider": run.provider,
        "kind": run.kind,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "outcome": run.outcome,
        "tickets_seen": run.tickets_seen,
        "tickets_changed": run.tickets_changed,
        "missed_by_webhooks": run.missed_by_webhooks,
        "missed_ticket_ids": run.missed_ticket_ids,
        "api_calls": run.api_calls,
        "error": run.error,
    })
}

fn coverage_json(coverage: &Coverage, webhooks_enabled: bool) -> Value {
    json!({
        "webhooks_enabled": webhooks_enabled,
        "window_hours": COVERAGE_WINDOW_SECS / 3600,
        "coverage": coverage.ratio,
        "changes_by_webhook": coverage.by_webhook,
        "changes_missed": coverage.missed,
        "missed_ticket_ids_last_run": coverage.missed_last_run,
        "last_webhook_at": coverage.last_webhook_at,
    })
}

/// The running poller threads, one per polled provider.
pub struct Poller {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Poller {
    /// Stops the pollers (interrupting runs between requests) and waits.
    pub fn stop(self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        for thread in self.threads {
            if let Err(panic) = thread.join() {
                result = Err(panic);
            }
        }
        result
    }
}

/// Starts a poller thread for every provider whose account is configured.
pub fn spawn_poller(
    config: Arc<Config>,
    store: StoreClient,
    status: Arc<SyncStatus>,
) -> std::io::Result<Poller> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut poller = Poller {
        threads: Vec::new(),
        stop: stop.clone(),
    };
    for provider in Provider::polled(&config) {
        let (config, store, status, stop) =
            (config.clone(), store.clone(), status.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("codex-poller-{provider}"))
            .spawn(move || poll_loop(&config, &store, status.provider(provider), provider, stop));
        match spawned {
            Ok(thread) => poller.threads.push(thread),
            Err(error) => {
                let _ = poller.stop();
                return Err(error);
            }
        }
    }
    Ok(poller)
}

/// The schedule as assessed from the database: what interval applies now
/// and why, and the coverage behind it.
struct Assessment {
    interval: Duration,
    reason: String,
    coverage: Coverage,
    /// When the last run (of any instance) started.
    last_started_at: Option<Timestamp>,
    last_run: Option<SyncRun>,
    reconcile_due: bool,
    /// No sync has completed yet (no cursor).
    first: bool,
}

fn poll_loop(
    config: &Config,
    store: &StoreClient,
    status: &ProviderStatus,
    provider: Provider,
    stop: Arc<AtomicBool>,
) {
    let mut leadership = store::leadership(&config.database.url);
    let scheduler = &config.scheduler;
    // Checks often enough to follow the short interval closely and to take
    // over promptly from an instance that went away.
    let check_every = (scheduler.ticket_sync_interval / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(30));
    let mut below_coverage = false;
    let mut own_last_run: Option<(Timestamp, Instant)> = None;
    while !stop.load(Ordering::SeqCst) {
        let leader = leadership.lead(provider);
        let mut next_check = Instant::now() + check_every;
        match assess(config, store, provider) {
            Ok(assessment) => {
                let low = assessment
                    .coverage
                    .ratio
                    .is_some_and(|r| r < scheduler.min_webhook_coverage);
                if low && !below_coverage {
                    log::warn!(
                        "{provider}: webhook coverage is {:.0}% over the last 24 h (minimum {:.0}%): {} changes reached Codex only by polling \
                         (last run: tickets {:?}). Check that the {provider} workflows are active, that their X-Webhook-Secret \
                         matches [webhooks] secret, and that [webhooks] allowed_ips admits {provider}; polling every {} meanwhile",
                        assessment.coverage.ratio.unwrap_or(0.0) * 100.0,
                        scheduler.min_webhook_coverage * 100.0,
                        assessment.coverage.missed,
                        assessment.coverage.missed_last_run,
                        crate::config::format_duration(scheduler.ticket_sync_interval),
                    );
                }
                below_coverage = low;
                // This instance's own last run is timed exactly; another's
                // (after a change of leader) only to the second it recorded.
                let last_started = own_last_run
                    .filter(|(_, instant)| instant.elapsed() < assessment.interval * 2)
                    .map(|(at, _)| at)
                    .or(assessment.last_started_at);
                let due = last_started
                    .and_then(|t| {
                        t.checked_add(SignedDuration::try_from(assessment.interval).ok()?)
                            .ok()
                    })
                    .unwrap_or_else(Timestamp::now);
                status.remember(&assessment.coverage, assessment.last_run.as_ref());
                status.update(|s| {
                    s.role = if leader { "leader" } else { "standby" };
                    s.interval = Some(assessment.interval);
                    s.interval_reason = assessment.reason.clone();
                    s.next_sync_at = leader.then(|| timestamp::format(due));
                    if s.last_run.is_none() {
                        s.last_run = assessment.last_run.clone();
                    }
                });
                if leader && Timestamp::now() >= due {
                    own_last_run = Some((Timestamp::now(), Instant::now()));
                    // A bug in one run must not end polling: it is logged and
                    // the next tick tries again.
                    // The first run lists everything and stops there (and
                    // says so in its kind); later ones add the deleted and
                    // spam listings and the reconcile every reconcile_interval.
                    let kind = if assessment.first {
                        RunKind::Initial
                    } else if assessment.reconcile_due {
                        RunKind::Full
                    } else {
                        RunKind::Incremental
                    };
                    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_sync(config, store, provider, kind, stop.clone())
                    }));
                    match attempt {
                        Ok(run) => {
                            log_run(&run);
                            status.update(|s| s.last_run = Some(run));
                        }
                        Err(_) => log::error!("a sync run panicked; polling goes on"),
                    }
                    // Re-assess at once: the run changed coverage and the schedule.
                    continue;
                }
                if leader {
                    let until_due = (due - Timestamp::now()).unsigned_abs();
                    next_check = next_check.min(Instant::now() + until_due);
                }
            }
            Err(error) => {
                log::warn!("poller: cannot read the schedule: {error}");
                status.update(|s| s.role = if leader { "leader" } else { "standby" });
            }
        }
        while !stop.load(Ordering::SeqCst) && Instant::now() < next_check {
            std::thread::sleep(
                Duration::from_millis(100)
                    .min(next_check.saturating_duration_since(Instant::now())),
            );
        }
    }
}

fn log_run(run: &SyncRun) {
    match run.outcome.as_str() {
        "ok" => log::info!(
            "sync {} {} run {}: {} tickets seen, {} changed, {} missed by webhooks, {} API calls",
            run.provider,
            run.kind,
            run.id,
            run.tickets_seen,
            run.tickets_changed,
            run.missed_by_webhooks,
            run.api_calls
        ),
        _ => log::error!(
            "sync {} {} run {} failed after {} API calls: {}",
            run.provider,
            run.kind,
            run.id,
            run.api_calls,
            run.error.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// Reads what decides the schedule: recent webhook traffic, coverage, and
/// the last run.
fn assess(
    config: &Config,
    store: &StoreClient,
    provider: Provider,
) -> Result<Assessment, StoreError> {
    let scheduler = config.scheduler.clone();
    let window_start = timestamp::seconds_ago(scheduler.webhook_healthy_window.as_secs());
    let ((coverage, last_run), recent, state) = store.call(STORE_WAIT, move |backend| {
        Ok((
            read_coverage(backend, provider)?,
            backend.webhook_counts(provider, &window_start)?,
            backend.sync_state(provider)?,
        ))
    })?;
    let webhooks_recent = recent.last_processed_at.is_some();
    let coverage_ok = coverage
        .ratio
        .is_none_or(|r| r >= scheduler.min_webhook_coverage);
    let (interval, reason) = if !config.webhooks.enabled {
        (
            scheduler.ticket_sync_interval,
            "webhooks are disabled".to_string(),
        )
    } else if !webhooks_recent {
        (
            scheduler.ticket_sync_interval,
            format!(
                "no webhook delivery in the last {}",
                crate::config::format_duration(scheduler.webhook_healthy_window)
            ),
        )
    } else if !coverage_ok {
        (
            scheduler.ticket_sync_interval,
            format!(
                "webhook coverage {:.0}% is below {:.0}%",
                coverage.ratio.unwrap_or(0.0) * 100.0,
                scheduler.min_webhook_coverage * 100.0
            ),
        )
    } else {
        (
            scheduler.ticket_sync_interval_with_webhooks,
            "webhooks are delivering".to_string(),
        )
    };
    let reconcile_due = match state.last_reconcile_at.as_deref().map(timestamp::parse) {
        Some(Ok(last)) => {
            Timestamp::now().duration_since(last)
                >= SignedDuration::try_from(scheduler.reconcile_interval)
                    .unwrap_or(SignedDuration::MAX)
        }
        _ => true,
    };
    Ok(Assessment {
        interval,
        reason,
        coverage,
        last_started_at: last_run
            .as_ref()
            .and_then(|r| timestamp::parse(&r.started_at).ok()),
        last_run,
        reconcile_due,
        first: state.cursor.is_none(),
    })
}

/// Webhook coverage over the last 24 hours, from what the journal and
/// `sync_runs` hold, and the newest run.
pub(crate) fn read_coverage(
    backend: &mut dyn Backend,
    provider: Provider,
) -> Result<(Coverage, Option<SyncRun>), StoreError> {
    let day_start = timestamp::seconds_ago(COVERAGE_WINDOW_SECS);
    let day = backend.webhook_counts(provider, &day_start)?;
    let missed = backend.missed_since(provider, &day_start)?;
    let last_run = backend.recent_runs(Some(provider), 1)?.into_iter().next();
    let total = day.applied + missed;
    let coverage = Coverage {
        by_webhook: day.applied,
        missed,
        ratio: (total > 0).then(|| day.applied as f64 / total as f64),
        missed_last_run: last_run
            .as_ref()
            .map(|r| r.missed_ticket_ids.clone())
            .unwrap_or_default(),
        last_webhook_at: day.last_processed_at.clone(),
    };
    Ok((coverage, last_run))
}
