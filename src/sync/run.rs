//! One sync run: the incremental listing, the removal listings when they
//! are due, and, in a full run (at most every `reconcile_interval`), the
//! complete listing and a lookup of each held ticket it left out. It speaks
//! to the PSA only through [`PollSource`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::{SignedDuration, Timestamp};

use super::STORE_WAIT;
use crate::config::Config;
use crate::error::SyncError;
use crate::metrics;
use crate::psa::{Complete, Found, PollSource, Provider, TicketEvent};
use crate::store::{Reader, RunKind, RunOutcome, StoreClient, SyncRun, SyncState, WriteItem};
use crate::timestamp;

/// Listings ask for changes since the cursor minus this, so that a ticket
/// updated in the same second as the last one seen is not skipped (and a
/// clock between Codex and the PSA that differs by less is harmless).
pub(crate) const OVERLAP: SignedDuration = SignedDuration::from_secs(300);
/// Held tickets read from the database at a time by the reconcile, which
/// stops reading once it has `reconcile_max_tickets` to look up.
const LOCAL_PAGE: i64 = 1_000;
/// Statuses no lookup can change: a ticket marked one is never looked up
/// again.
const FINAL_STATUSES: [&str; 2] = ["deleted", "spam"];

/// A provider's poll source, opened when first needed and kept: it holds
/// what the client learned of the account (rate limits, a refused
/// parameter) from one run to the next.
pub type SourceSlot<'a> = Option<Box<dyn PollSource + Send + 'a>>;

/// What one run does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub kind: RunKind,
    /// Read the changes listing (always, except in an incremental run due
    /// only for the removals).
    pub changes: bool,
    /// Read the removal listings (where the API has them).
    pub removals: bool,
    /// When the removal listings were last read completely, by this
    /// instance; they are read back to then (minus the overlap), else to
    /// the last full run.
    pub removals_read_at: Option<Timestamp>,
}

impl Plan {
    /// A full run, removals included (`codex sync --once`).
    pub fn full() -> Plan {
        Plan {
            kind: RunKind::Full,
            changes: true,
            removals: true,
            removals_read_at: None,
        }
    }
}

/// Runs one sync of `plan` and records it in `sync_runs`: the writes go
/// through the writer, the reads through `reader`, the API calls through
/// `source` (opened here if empty). `stop` interrupts it between requests.
pub fn run_sync<'a>(
    config: &'a Config,
    store: &StoreClient,
    reader: &mut Reader,
    provider: Provider,
    plan: Plan,
    source: &mut SourceSlot<'a>,
    stop: Arc<AtomicBool>,
) -> SyncRun {
    let mut run = SyncRun::starting(provider, plan.kind);
    match store.start_run(&run, STORE_WAIT) {
        Ok(id) => run.id = id,
        Err(error) => {
            run.outcome = RunOutcome::Failed;
            run.error = Some(format!("cannot record the run: {error}"));
            run.finished_at = Some(timestamp::now());
            metrics::metrics().sync_run(provider, run.outcome.as_str());
            return run;
        }
    }
    if source.is_none() {
        match provider.poll_source(config, stop.clone()) {
            Ok(opened) => *source = Some(opened),
            Err(error) => {
                run.outcome = RunOutcome::Failed;
                run.error = Some(error.to_string());
                run.finished_at = Some(timestamp::now());
                if let Err(error) = store.finish_run(&run, STORE_WAIT) {
                    log::error!("cannot record the end of sync run {}: {error}", run.id);
                }
                return run;
            }
        }
    }
    let source = source.as_mut().expect("opened above").as_mut();
    let calls_before = source.calls();
    let mut sync = Sync {
        config,
        store,
        reader,
        run: &mut run,
        stop: &stop,
        provider,
    };
    let result = sync.steps(source, plan);
    run.api_calls = (source.calls() - calls_before) as i64;
    run.finished_at = Some(timestamp::now());
    match result {
        Ok(()) => run.outcome = RunOutcome::Ok,
        Err(error) => {
            run.outcome = RunOutcome::Failed;
            run.error = Some(error.to_string());
        }
    }
    if let Err(error) = store.finish_run(&run, STORE_WAIT) {
        log::error!("cannot record the end of sync run {}: {error}", run.id);
    }
    let metrics = metrics::metrics();
    metrics.sync_run(provider, run.outcome.as_str());
    metrics.api_calls(provider, run.api_calls);
    run
}

/// Asks `provider`'s API whether it accepts the configured credentials
/// (`codex check-config`), with the client a sync would use; returns the
/// address it asked.
pub fn check_credentials(config: &Config, provider: Provider) -> Result<String, SyncError> {
    let stop = Arc::new(AtomicBool::new(false));
    provider.poll_source(config, stop)?.check_credentials()
}

/// One run in progress.
struct Sync<'a> {
    config: &'a Config,
    store: &'a StoreClient,
    reader: &'a mut Reader,
    run: &'a mut SyncRun,
    stop: &'a AtomicBool,
    provider: Provider,
}

/// Whether a poll change counts as missed by webhooks: with webhooks on,
/// every version the poll finds before any webhook delivered it, except
/// in the first sync, whose history predates any webhook.
struct MissedRule {
    counts: bool,
}

/// What the lookups of one reconcile found.
#[derive(Debug, Default)]
struct Lookups {
    asked: usize,
    gone: usize,
    failed: usize,
}

impl Sync<'_> {
    /// The changes since the cursor (minus the overlap); the removals when
    /// planned; in a full run the complete listing and, unless
    /// `reconcile_max_tickets` is 0, a lookup of each held ticket in a
    /// non-final state the listing should have returned and did not,
    /// marking it deleted only on the API's word that it does not exist.
    /// The cursor moves only when every step succeeded.
    fn steps(&mut self, source: &mut dyn PollSource, plan: Plan) -> Result<(), SyncError> {
        let provider = self.provider;
        let settings = source.settings();
        let state = self
            .reader
            .read_waiting(STORE_WAIT, |r| r.sync_state(provider))?;
        let rule = MissedRule {
            counts: self.config.webhooks.enabled && state.cursor.is_some(),
        };
        let since = match state.cursor.as_deref().map(timestamp::parse) {
            Some(Ok(cursor)) => cursor.checked_sub(OVERLAP).unwrap_or(cursor),
            _ => Timestamp::now()
                .checked_sub(SignedDuration::from_hours(
                    24 * i64::from(settings.initial_sync_days),
                ))
                .unwrap_or(Timestamp::UNIX_EPOCH),
        };
        let mut cursor = state.cursor.clone();
        let reconcile = plan.kind == RunKind::Full && settings.reconcile_max_tickets > 0;
        // A complete listing of every ticket carries the changes too: read
        // once, it moves the cursor.
        let mut complete = None;

        // 1. Everything updated since the cursor.
        if reconcile && source.complete_includes_changes() {
            self.listing(&rule, Some(&mut cursor), |sink| {
                complete = source.complete(sink)?;
                Ok(())
            })?;
        } else if plan.changes {
            self.listing(&rule, Some(&mut cursor), |sink| {
                source.changes(&timestamp::format(since), sink)
            })?;
        }

        let mut new_state = SyncState {
            cursor,
            last_reconcile_at: state.last_reconcile_at.clone(),
        };
        if plan.kind == RunKind::Initial {
            // The first sync has just listed everything there is: nothing is
            // known locally that it could have missed.
            new_state.last_reconcile_at = Some(timestamp::now());
        } else {
            // 2. Tickets deleted or marked spam since the removal listings
            // were last read (by this instance), else since the last full
            // run, else since the cursor.
            if (plan.removals || plan.kind == RunKind::Full) && source.lists_removals() {
                let last_full = state
                    .last_reconcile_at
                    .as_deref()
                    .and_then(|t| timestamp::parse(t).ok());
                let read_back_to = plan.removals_read_at.or(last_full).map_or(since, |at| {
                    at.checked_sub(OVERLAP).unwrap_or(at).min(Timestamp::now())
                });
                self.listing(&rule, None, |sink| {
                    source.removals(&timestamp::format(read_back_to), sink)
                })?;
            }
            // 3. The complete listing, and a lookup of what it left out.
            if plan.kind == RunKind::Full {
                if reconcile {
                    if !source.complete_includes_changes() {
                        self.listing(&rule, None, |sink| {
                            complete = source.complete(sink)?;
                            Ok(())
                        })?;
                    }
                    if let Some(complete) = complete {
                        let max = settings.reconcile_max_tickets as usize;
                        self.look_up_missing(
                            source,
                            &settings.done_statuses,
                            &complete,
                            max,
                            &rule,
                        )?;
                    }
                }
                new_state.last_reconcile_at = Some(timestamp::now());
            }
        }

        // The run is complete: only now does the cursor move.
        self.store
            .save_sync_state(provider, &new_state, STORE_WAIT)?;
        Ok(())
    }

    /// Runs one listing (`list`, given where to hand its pages), applying
    /// each page as it arrives; with the run's `cursor`, moves it to the
    /// newest version seen.
    fn listing(
        &mut self,
        rule: &MissedRule,
        mut cursor: Option<&mut Option<String>>,
        list: impl FnOnce(&mut crate::psa::PageSink<'_>) -> Result<(), SyncError>,
    ) -> Result<(), SyncError> {
        let (store, run, stop) = (self.store, &mut *self.run, self.stop);
        let mut page = |events: Vec<TicketEvent>| {
            interrupted(stop)?;
            apply_events(store, run, events, rule, cursor.as_deref_mut())
        };
        list(&mut page)
    }

    /// Looks up, one by one (at most `max`), the held tickets in a
    /// non-final state that `complete` should have listed and did not: all
    /// of them when it covers done statuses, else those not done. Held
    /// tickets are read from the database a page at a time, only until
    /// `max` are found. Only the API's word that a ticket does not exist
    /// marks it deleted; a lookup that fails (5xx, timeout) changes nothing.
    fn look_up_missing(
        &mut self,
        source: &mut dyn PollSource,
        done_statuses: &[String],
        complete: &Complete,
        max: usize,
        rule: &MissedRule,
    ) -> Result<(), SyncError> {
        let provider = self.provider;
        let mut excluded: Vec<String> = FINAL_STATUSES.iter().map(|s| s.to_string()).collect();
        if !complete.covers_done {
            excluded.extend(done_statuses.iter().cloned());
        }
        let mut candidates = Vec::new();
        let mut after = i64::MIN;
        let mut more_held = false;
        loop {
            let held = self.reader.read_waiting(STORE_WAIT, |r| {
                r.active_tickets(provider, &excluded, after, LOCAL_PAGE)
            })?;
            let full_page = held.len() as i64 == LOCAL_PAGE;
            for (id, _) in &held {
                after = *id;
                if complete.listed.contains(id) {
                    continue;
                }
                if candidates.len() == max {
                    more_held = true;
                    break;
                }
                candidates.push(*id);
            }
            if more_held || !full_page {
                break;
            }
        }
        if more_held {
            log::warn!(
                "reconcile: {provider}: more than {max} held tickets to look up; checking {max} this run (reconcile_max_tickets)"
            );
        }
        let mut lookups = Lookups::default();
        for id in candidates {
            interrupted(self.stop)?;
            lookups.asked += 1;
            let event = match source.lookup(id) {
                Ok(Found::Ticket(event)) => *event,
                Ok(Found::Gone(event)) => {
                    lookups.gone += 1;
                    *event
                }
                Ok(Found::Unreadable) => continue,
                Err(error @ (SyncError::Api(_) | SyncError::Protocol(_))) => {
                    lookups.failed += 1;
                    log::warn!("reconcile: {provider}: ticket {id} kept as it is: {error}");
                    continue;
                }
                Err(error) => return Err(error),
            };
            apply_events(self.store, self.run, vec![event], rule, None)?;
        }
        if lookups.asked > 0 {
            log::info!(
                "reconcile: {provider}: looked up {} held tickets the complete listing left out: {} gone, {} failed",
                lookups.asked,
                lookups.gone,
                lookups.failed
            );
        }
        Ok(())
    }
}

/// `Err(Interrupted)` once shutdown is requested.
fn interrupted(stop: &AtomicBool) -> Result<(), SyncError> {
    if stop.load(Ordering::SeqCst) {
        Err(SyncError::Interrupted)
    } else {
        Ok(())
    }
}

/// Writes events through the writer, counts what they changed in `run`,
/// and moves `cursor` (the run's, saved only when it completes) to the
/// newest version seen.
fn apply_events(
    store: &StoreClient,
    run: &mut SyncRun,
    events: Vec<TicketEvent>,
    rule: &MissedRule,
    cursor: Option<&mut Option<String>>,
) -> Result<(), SyncError> {
    if events.is_empty() {
        return Ok(());
    }
    let newest = events.iter().filter_map(|e| e.updated_at.clone()).max();
    let items: Vec<WriteItem> = events
        .iter()
        .map(|event| WriteItem {
            event: Some(event.clone()),
            journal: None,
        })
        .collect();
    let outcomes = store.write_many(items, STORE_WAIT)?;
    for (event, outcome) in events.iter().zip(&outcomes) {
        run.tickets_seen += 1;
        if outcome.is_change() {
            run.tickets_changed += 1;
        }
        if rule.counts && outcome.is_new_version() {
            run.missed_by_webhooks += 1;
            if !run.missed_ticket_ids.contains(&event.ticket_id) {
                run.missed_ticket_ids.push(event.ticket_id);
            }
        }
    }
    if let Some(cursor) = cursor {
        if newest.as_ref() > cursor.as_ref() {
            *cursor = newest;
        }
    }
    Ok(())
}
