//! Polling, the safety net behind webhooks: a timer thread that syncs
//! tickets from the PSA's REST API through the same writer (and the same
//! newest-wins upsert) as webhooks, every `ticket_sync_interval` without
//! webhooks and every `ticket_sync_interval_with_webhooks` while they
//! demonstrably work. Removals (deleted, spam) are read every
//! `ticket_sync_interval` while deletions are not reaching Codex by
//! webhook. It also measures how well webhooks work: a change the poll
//! finds before any webhook delivered it was missed by webhooks.

mod run;
mod state;

pub use run::{Plan, SourceSlot, check_credentials, run_sync};
pub use state::{PollerBoard, PollerState, Role};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use jiff::{SignedDuration, Timestamp};

use crate::config::{Config, format_duration};
use crate::error::StoreError;
use crate::psa::Provider;
use crate::store::{self, ProviderSummary, Reader, RunKind, RunOutcome, StoreClient, SyncRun};
use crate::timestamp;

/// How long a write or bookkeeping call to the writer, or a read the
/// poller waits out an outage for, may take.
pub(crate) const STORE_WAIT: Duration = Duration::from_secs(60);
/// Deletions count as reaching Codex by webhook while a `ticket.deleted`
/// delivery arrived within this window (the guide's delete workflow is
/// optional, and deletions are rarer than other changes).
const DELETION_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The running poller threads, one per polled provider.
pub struct Poller {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Dropped at stop: wakes the pollers waiting for their next check.
    wake: Option<Sender<()>>,
}

impl Poller {
    /// Stops the pollers (interrupting runs between requests) and waits.
    pub fn stop(mut self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.wake.take());
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
    board: Arc<PollerBoard>,
) -> std::io::Result<Poller> {
    let stop = Arc::new(AtomicBool::new(false));
    let (wake, woken) = bounded::<()>(0);
    let mut poller = Poller {
        threads: Vec::new(),
        stop: stop.clone(),
        wake: Some(wake),
    };
    for provider in Provider::polled(&config) {
        let (config, store, board, stop, woken) = (
            config.clone(),
            store.clone(),
            board.clone(),
            stop.clone(),
            woken.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("codex-poller-{provider}"))
            .spawn(move || poll_loop(&config, &store, &board, provider, stop, &woken));
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
    /// Webhook coverage over the last 24 hours (`None` without changes).
    coverage: Option<f64>,
    /// What the database holds: the newest run, the sync state.
    stored: ProviderSummary,
    /// When the last run (of any instance) started.
    last_started_at: Option<Timestamp>,
    reconcile_due: bool,
    /// No sync has completed yet (no cursor).
    first: bool,
    /// Webhooks are healthy and a `ticket.deleted` delivery arrived within
    /// [`DELETION_WINDOW`].
    deletions_by_webhook: bool,
    /// Webhooks are enabled, recent and cover enough of the changes.
    webhooks_healthy: bool,
}

fn poll_loop(
    config: &Config,
    store: &StoreClient,
    board: &PollerBoard,
    provider: Provider,
    stop: Arc<AtomicBool>,
    woken: &Receiver<()>,
) {
    // The poller's own read connection: its schedule reads never wait in
    // the writer's queue.
    let mut reader = Reader::new(&config.database.url, store.health_handle());
    let mut leadership = store::leadership(&config.database.url);
    let scheduler = &config.scheduler;
    // Checks often enough to follow the short interval closely and to take
    // over promptly from an instance that went away.
    let check_every = (scheduler.ticket_sync_interval / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(30));
    let mut below_coverage = false;
    let mut own_last_run: Option<(Timestamp, Instant)> = None;
    // The account's client lives as long as this thread: a reload that
    // changes polling settings starts a new thread, and so a new client.
    let mut source: SourceSlot<'_> = provider.poll_source(config, stop.clone()).ok();
    let lists_removals = source.as_ref().is_some_and(|s| s.lists_removals());
    // When this instance last read the removal listings completely.
    let mut removals_read: Option<(Timestamp, Instant)> = None;
    // When this instance last read the changes listing.
    let mut changes_read: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let leader = leadership.lead(provider);
        let mut next_check = Instant::now() + check_every;
        let role = if leader { Role::Leader } else { Role::Standby };
        match assess(config, &mut reader, provider, lists_removals) {
            Ok(assessment) => {
                let low = assessment
                    .coverage
                    .is_some_and(|r| r < scheduler.min_webhook_coverage);
                if low && !below_coverage {
                    log::warn!(
                        "{provider}: webhook coverage is {:.0}% over the last 24 h (minimum {:.0}%): {} changes reached Codex only by polling \
                         (last run: tickets {:?}). Check that the {provider} workflows are active, that their X-Webhook-Secret \
                         matches [webhooks] secret, and that [webhooks] allowed_ips admits {provider}; polling every {} meanwhile",
                        assessment.coverage.unwrap_or(0.0) * 100.0,
                        scheduler.min_webhook_coverage * 100.0,
                        assessment.stored.missed,
                        assessment.stored.missed_last_run(),
                        format_duration(scheduler.ticket_sync_interval),
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
                board.remember(provider, &assessment.stored);
                board.update(provider, |s| {
                    s.role = role;
                    s.interval = Some(assessment.interval);
                    s.interval_reason = assessment.reason.clone();
                    s.next_sync_at = leader.then(|| timestamp::format(due));
                    if s.last_run.is_none() {
                        s.last_run = assessment.stored.runs.first().cloned();
                    }
                });
                if leader && Timestamp::now() >= due {
                    own_last_run = Some((Timestamp::now(), Instant::now()));
                    // A bug in one run must not end polling: it is logged and
                    // the next tick tries again.
                    // The first run lists everything and stops there (and
                    // says so in its kind); later ones add the removal
                    // listings when due, and the complete listing with its
                    // lookups every reconcile_interval.
                    let kind = if assessment.first {
                        RunKind::Initial
                    } else if assessment.reconcile_due {
                        RunKind::Full
                    } else {
                        RunKind::Incremental
                    };
                    // Removals every run while deletions do not reach Codex
                    // by webhook, else at the hourly cadence.
                    let hourly = scheduler.ticket_sync_interval_with_webhooks;
                    let removals = !assessment.deletions_by_webhook
                        || removals_read.is_none_or(|(_, at)| at.elapsed() + check_every >= hourly);
                    // While healthy webhooks carry the changes, a run due only
                    // for the removals skips the changes listing (it stays
                    // hourly): two calls instead of three.
                    let changes = kind != RunKind::Incremental
                        || !assessment.webhooks_healthy
                        || changes_read.is_none_or(|at| at.elapsed() + check_every >= hourly);
                    let plan = Plan {
                        kind,
                        changes,
                        removals,
                        removals_read_at: removals_read.map(|(at, _)| at),
                    };
                    let started = (Timestamp::now(), Instant::now());
                    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_sync(
                            config,
                            store,
                            &mut reader,
                            provider,
                            plan,
                            &mut source,
                            stop.clone(),
                        )
                    }));
                    match attempt {
                        Ok(run) => {
                            if run.outcome == RunOutcome::Ok {
                                if plan.removals || kind == RunKind::Full {
                                    removals_read = Some(started);
                                }
                                if plan.changes {
                                    changes_read = Some(started.1);
                                }
                            }
                            log_run(&run);
                            board.update(provider, |s| s.last_run = Some(run));
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
                board.update(provider, |s| s.role = role);
            }
        }
        // A reader must not hold on to a database the writer may find
        // unusable meanwhile (a deleted SQLite file is the writer's to
        // keep): the connection is opened again at the next check.
        reader.disconnect();
        // Sleeps until the check is due or the poller stops.
        while !stop.load(Ordering::SeqCst) && Instant::now() < next_check {
            let left = next_check.saturating_duration_since(Instant::now());
            if let Err(RecvTimeoutError::Disconnected) = woken.recv_timeout(left) {
                break;
            }
        }
    }
}

fn log_run(run: &SyncRun) {
    match run.outcome {
        RunOutcome::Ok => log::info!(
            "sync {} {} run {}: {} tickets seen, {} changed, {} missed by webhooks, {} API calls",
            run.provider,
            run.kind,
            run.id,
            run.tickets_seen,
            run.tickets_changed,
            run.missed_by_webhooks,
            run.api_calls
        ),
        RunOutcome::Failed | RunOutcome::Running => log::error!(
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
    reader: &mut Reader,
    provider: Provider,
    lists_removals: bool,
) -> Result<Assessment, StoreError> {
    let scheduler = &config.scheduler;
    let window_start = timestamp::seconds_ago(scheduler.webhook_healthy_window.as_secs());
    let deletion_window_start = timestamp::seconds_ago(DELETION_WINDOW.as_secs());
    let (stored, recent, week) = reader.read_waiting(STORE_WAIT, |r| {
        Ok((
            ProviderSummary::read(r, provider, 1)?,
            r.webhook_counts(provider, &window_start)?,
            r.webhook_counts(provider, &deletion_window_start)?,
        ))
    })?;
    let coverage = stored.coverage();
    let webhooks_recent = recent.last_processed_at.is_some();
    let coverage_ok = coverage.is_none_or(|r| r >= scheduler.min_webhook_coverage);
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
                format_duration(scheduler.webhook_healthy_window)
            ),
        )
    } else if !coverage_ok {
        (
            scheduler.ticket_sync_interval,
            format!(
                "webhook coverage {:.0}% is below {:.0}%",
                coverage.unwrap_or(0.0) * 100.0,
                scheduler.min_webhook_coverage * 100.0
            ),
        )
    } else if lists_removals && week.last_deletion_at.is_none() {
        (
            scheduler.ticket_sync_interval,
            "webhooks are delivering, but no ticket.deleted delivery in the last 7 days: \
             deletions are found by polling"
                .to_string(),
        )
    } else {
        (
            scheduler.ticket_sync_interval_with_webhooks,
            "webhooks are delivering".to_string(),
        )
    };
    let deletions_by_webhook = config.webhooks.enabled
        && webhooks_recent
        && coverage_ok
        && week.last_deletion_at.is_some();
    let reconcile_due = match stored
        .state
        .last_reconcile_at
        .as_deref()
        .map(timestamp::parse)
    {
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
        last_started_at: stored
            .runs
            .first()
            .and_then(|r| timestamp::parse(&r.started_at).ok()),
        reconcile_due,
        first: stored.state.cursor.is_none(),
        deletions_by_webhook,
        webhooks_healthy: config.webhooks.enabled && webhooks_recent && coverage_ok,
        stored,
    })
}
