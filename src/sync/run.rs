//! One sync run: the incremental listing and, in a full run (at most every
//! `reconcile_interval`), the deleted and spam listings and the reconcile
//! of locally active tickets.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::{SignedDuration, Timestamp};
use percent_encoding::utf8_percent_encode;

use super::STORE_WAIT;
use crate::config::Config;
use crate::error::SyncError;
use crate::psa::freshservice;
use crate::psa::freshservice_api::{FreshserviceClient, FreshservicePoll, QUERY_VALUE};
use crate::psa::superops_api::{SuperopsClient, SuperopsPoll};
use crate::psa::{PollSource, Provider, TicketEvent};
use crate::store::{StoreClient, SyncRun, SyncState, WriteItem};
use crate::timestamp;

/// Listings ask for changes since the cursor minus this, so that a ticket
/// updated in the same second as the last one seen is not skipped.
const OVERLAP: SignedDuration = SignedDuration::from_secs(300);
/// Pages of the filter listing read at most (Freshservice serves 30
/// tickets a page and stops at ten pages); beyond that the reconcile is
/// skipped rather than concluded from a partial listing.
const MAX_FILTER_PAGES: u64 = 10;
/// Freshservice's filter query is at most this long.
const MAX_QUERY: usize = 512;

/// What a run does; recorded in `sync_runs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// The timer's first run: the listing of everything since
    /// `initial_sync_days`, nothing else (it has just seen every ticket).
    Initial,
    /// The listing of what changed since the cursor.
    Incremental,
    /// The listing, the deleted and spam listings, and the reconcile of
    /// locally active tickets against the active-status listing. `codex
    /// sync --once` always runs this.
    Full,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Initial => "initial",
            RunKind::Incremental => "incremental",
            RunKind::Full => "full",
        }
    }
}

/// Runs one sync of `kind` and records it in `sync_runs`. `stop`
/// interrupts it between requests.
pub fn run_sync(
    config: &Config,
    store: &StoreClient,
    provider: Provider,
    kind: RunKind,
    stop: Arc<AtomicBool>,
) -> SyncRun {
    let mut run = SyncRun {
        provider: provider.as_str().to_string(),
        kind: kind.as_str().to_string(),
        started_at: timestamp::now(),
        outcome: "running".to_string(),
        ..SyncRun::default()
    };
    let record = run.clone();
    match store.call(STORE_WAIT, move |backend| backend.start_run(&record)) {
        Ok(id) => run.id = id,
        Err(error) => {
            run.outcome = "failed".to_string();
            run.error = Some(format!("cannot record the run: {error}"));
            run.finished_at = Some(timestamp::now());
            return run;
        }
    }
    let result = match provider {
        Provider::Freshservice => FreshserviceClient::new(&config.freshservice, stop.clone())
            .and_then(|client| {
                let mut sync = Sync {
                    config,
                    store,
                    source: FreshservicePoll {
                        client,
                        config: &config.freshservice,
                    },
                    run: &mut run,
                    stop,
                };
                let result = sync.steps(kind);
                sync.run.api_calls = sync.source.calls() as i64;
                result
            }),
        Provider::SuperOps => {
            SuperopsClient::new(&config.superops, stop.clone()).and_then(|client| {
                let mut source = SuperopsPoll {
                    client,
                    config: &config.superops,
                };
                let settings = PollSettings {
                    initial_sync_days: config.superops.initial_sync_days,
                    reconcile_max_tickets: config.superops.reconcile_max_tickets,
                    done_statuses: config.superops.done_statuses.clone(),
                };
                let result = poll_steps(
                    config,
                    store,
                    provider,
                    &settings,
                    &mut source,
                    &mut run,
                    kind,
                    &stop,
                );
                run.api_calls = source.calls() as i64;
                result
            })
        }
    };
    run.finished_at = Some(timestamp::now());
    match result {
        Ok(()) => run.outcome = "ok".to_string(),
        Err(error) => {
            run.outcome = "failed".to_string();
            run.error = Some(error.to_string());
        }
    }
    let record = run.clone();
    if let Err(error) = store.call(STORE_WAIT, move |backend| backend.finish_run(&record)) {
        log::error!("cannot record the end of sync run {}: {error}", run.id);
    }
    run
}

/// One Freshservice run in progress: the `PollSource` steps, and a
/// reconcile narrowed by the active-status filter, which Freshservice has.
struct Sync<'a> {
    config: &'a Config,
    store: &'a StoreClient,
    source: FreshservicePoll<'a>,
    run: &'a mut SyncRun,
    stop: Arc<AtomicBool>,
}

/// Whether a poll change counts as missed by webhooks: with webhooks on,
/// every version the poll finds before any webhook delivered it, except
/// in the first sync, whose history predates any webhook.
struct MissedRule {
    counts: bool,
}

impl Sync<'_> {
    fn steps(&mut self, kind: RunKind) -> Result<(), SyncError> {
        let provider = Provider::Freshservice;
        let state = self
            .store
            .call(STORE_WAIT, move |b| b.sync_state(provider))?;
        let rule = MissedRule {
            counts: self.config.webhooks.enabled && state.cursor.is_some(),
        };
        let since = match state.cursor.as_deref().map(timestamp::parse) {
            Some(Ok(cursor)) => cursor.checked_sub(OVERLAP).unwrap_or(cursor),
            _ => Timestamp::now()
                .checked_sub(SignedDuration::from_hours(
                    24 * i64::from(self.config.freshservice.initial_sync_days),
                ))
                .unwrap_or(Timestamp::UNIX_EPOCH),
        };
        let since = timestamp::format(since);
        let mut cursor = state.cursor.clone();

        // 1. Everything updated since the cursor, oldest first.
        let (store, run, stop) = (self.store, &mut *self.run, &self.stop);
        self.source.changes(&since, &mut |events| {
            interrupted(stop)?;
            apply_events(store, run, events, &rule, Some(&mut cursor))
        })?;

        let mut new_state = SyncState {
            cursor,
            last_reconcile_at: state.last_reconcile_at.clone(),
        };
        if kind == RunKind::Initial {
            // The first sync has just listed everything there is: nothing is
            // known locally that it could have missed.
            new_state.last_reconcile_at = Some(timestamp::now());
        } else if kind == RunKind::Full {
            // 2. Tickets deleted or marked spam since the last full run: a
            // full run happens every reconcile_interval, which keeps a quiet
            // account at one API call per incremental run.
            let since = match state.last_reconcile_at.as_deref().map(timestamp::parse) {
                Some(Ok(last)) => timestamp::format(last.checked_sub(OVERLAP).unwrap_or(last)),
                _ => since.clone(),
            };
            let (store, run, stop) = (self.store, &mut *self.run, &self.stop);
            self.source.deletions(&since, &mut |events| {
                interrupted(stop)?;
                apply_events(store, run, events, &rule, None)
            })?;
            // 3. Locally active tickets the PSA no longer lists as active.
            self.reconcile(&rule)?;
            new_state.last_reconcile_at = Some(timestamp::now());
        }

        // The run is complete: only now does the cursor move.
        self.store
            .call(STORE_WAIT, move |b| b.save_sync_state(provider, &new_state))?;
        Ok(())
    }

    fn check_stop(&self) -> Result<(), SyncError> {
        interrupted(&self.stop)
    }

    /// Writes events through the writer and counts what they changed.
    fn apply(
        &mut self,
        events: Vec<TicketEvent>,
        rule: &MissedRule,
        cursor: Option<&mut Option<String>>,
    ) -> Result<(), SyncError> {
        apply_events(self.store, self.run, events, rule, cursor)
    }

    /// Looks up, one by one (at most `reconcile_max_tickets`), the tickets
    /// stored as active that the PSA's active-status filter does not
    /// return. Only a 404 for the ticket itself marks it deleted: a short or
    /// failed listing proves nothing.
    fn reconcile(&mut self, rule: &MissedRule) -> Result<(), SyncError> {
        let provider = Provider::Freshservice;
        let fs = &self.config.freshservice;
        if fs.reconcile_max_tickets == 0 {
            return Ok(());
        }
        let active_ids: Vec<i64> = fs
            .statuses
            .ids()
            .filter(|(_, name)| !fs.done_statuses.iter().any(|d| d == name))
            .map(|(id, _)| id)
            .collect();
        let Some(remote) = self.remote_active(&active_ids, rule)? else {
            return Ok(());
        };
        let done = fs.done_statuses.clone();
        let local = self.store.call(STORE_WAIT, move |b| {
            b.active_tickets(provider, &done, 1_000_000)
        })?;
        let candidates: Vec<i64> = local
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !remote.contains(id))
            .take(fs.reconcile_max_tickets as usize)
            .collect();
        if !candidates.is_empty() {
            log::info!(
                "reconcile: looking up {} tickets no longer listed as active",
                candidates.len()
            );
        }
        for id in candidates {
            self.check_stop()?;
            if let Some(event) = self.source.lookup(id)? {
                self.apply(vec![event], rule, None)?;
            }
        }
        Ok(())
    }

    /// Ids the active-status filter returns, or `None` when the listing is
    /// incomplete (then nothing is concluded from it). The tickets it lists
    /// are applied as they come: the listing settles them, and only the
    /// locally active tickets it leaves out need looking up.
    fn remote_active(
        &mut self,
        status_ids: &[i64],
        rule: &MissedRule,
    ) -> Result<Option<HashSet<i64>>, SyncError> {
        let config = self.config;
        let mut remote = HashSet::new();
        for query in filter_queries(status_ids) {
            let mut seen = 0u64;
            let mut page_number = 1;
            loop {
                self.check_stop()?;
                let url = self.source.client.listing_url(&format!(
                    "/tickets/filter?query={}&page={page_number}",
                    utf8_percent_encode(&format!("\"{query}\""), QUERY_VALUE)
                ));
                let page = self.source.client.page(&url)?;
                seen += page.tickets.len() as u64;
                if page
                    .total
                    .is_some_and(|total| total > MAX_FILTER_PAGES * 30)
                {
                    log::warn!(
                        "reconcile: {} active tickets are more than the filter lists ({}); skipping reconcile",
                        page.total.unwrap_or_default(),
                        MAX_FILTER_PAGES * 30
                    );
                    return Ok(None);
                }
                remote.extend(
                    page.tickets
                        .iter()
                        .filter_map(|t| freshservice::parse_id(t.get("id")?).ok().flatten()),
                );
                let events = page
                    .tickets
                    .iter()
                    .filter_map(|t| {
                        freshservice::normalize_api_ticket(t, &config.freshservice)
                            .ok()
                            .map(|n| n.event)
                    })
                    .collect();
                self.apply(events, rule, None)?;
                let more = match page.total {
                    Some(total) => seen < total && !page.tickets.is_empty(),
                    None => page.next.is_some(),
                };
                if !more {
                    if page.total.is_some_and(|total| seen < total) {
                        log::warn!(
                            "reconcile: the active-ticket filter returned {seen} of {} tickets; skipping reconcile",
                            page.total.unwrap_or_default()
                        );
                        return Ok(None);
                    }
                    break;
                }
                page_number += 1;
            }
        }
        Ok(Some(remote))
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

/// A provider's polling settings, as a generic run needs them.
struct PollSettings {
    initial_sync_days: u32,
    reconcile_max_tickets: u32,
    done_statuses: Vec<String>,
}

/// A run against any `PollSource`: the changes since the cursor (minus
/// the overlap). A full run (unless `reconcile_max_tickets` is 0) lists
/// every ticket instead, then looks up each locally active ticket that
/// complete listing did not return, and marks it deleted only on the API's
/// word that it does not exist. The cursor moves only when every step
/// succeeded.
#[allow(clippy::too_many_arguments)]
fn poll_steps(
    config: &Config,
    store: &StoreClient,
    provider: Provider,
    settings: &PollSettings,
    source: &mut dyn PollSource,
    run: &mut SyncRun,
    kind: RunKind,
    stop: &AtomicBool,
) -> Result<(), SyncError> {
    let check_stop = || interrupted(stop);
    let state = store.call(STORE_WAIT, move |b| b.sync_state(provider))?;
    let rule = MissedRule {
        counts: config.webhooks.enabled && state.cursor.is_some(),
    };
    let since = match state.cursor.as_deref().map(timestamp::parse) {
        Some(Ok(cursor)) => cursor.checked_sub(OVERLAP).unwrap_or(cursor),
        _ => Timestamp::now()
            .checked_sub(SignedDuration::from_hours(
                24 * i64::from(settings.initial_sync_days),
            ))
            .unwrap_or(Timestamp::UNIX_EPOCH),
    };
    let since = timestamp::format(since);
    let mut cursor = state.cursor.clone();
    let reconcile = kind == RunKind::Full && settings.reconcile_max_tickets > 0;
    // Every timestamp sorts after the empty string: the whole listing.
    let list_since = if reconcile { "" } else { since.as_str() };
    let mut listed = HashSet::new();
    source.changes(list_since, &mut |events| {
        check_stop()?;
        listed.extend(events.iter().map(|e| e.ticket_id));
        apply_events(store, run, events, &rule, Some(&mut cursor))
    })?;

    let mut new_state = SyncState {
        cursor,
        last_reconcile_at: state.last_reconcile_at.clone(),
    };
    if kind == RunKind::Initial {
        new_state.last_reconcile_at = Some(timestamp::now());
    } else if reconcile {
        // Deletions the API can list, since the last full run.
        let deleted_since = match state.last_reconcile_at.as_deref().map(timestamp::parse) {
            Some(Ok(last)) => timestamp::format(last.checked_sub(OVERLAP).unwrap_or(last)),
            _ => since.clone(),
        };
        source.deletions(&deleted_since, &mut |events| {
            check_stop()?;
            listed.extend(events.iter().map(|e| e.ticket_id));
            apply_events(store, run, events, &rule, None)
        })?;
        let done = settings.done_statuses.clone();
        let local = store.call(STORE_WAIT, move |b| {
            b.active_tickets(provider, &done, 1_000_000)
        })?;
        let candidates: Vec<i64> = local
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !listed.contains(id))
            .collect();
        if candidates.len() > settings.reconcile_max_tickets as usize {
            log::warn!(
                "reconcile: {provider}: {} locally active tickets to look up; checking {} this run (reconcile_max_tickets)",
                candidates.len(),
                settings.reconcile_max_tickets
            );
        }
        for id in candidates
            .into_iter()
            .take(settings.reconcile_max_tickets as usize)
        {
            check_stop()?;
            if let Some(event) = source.lookup(id)? {
                apply_events(store, run, vec![event], &rule, None)?;
            }
        }
        new_state.last_reconcile_at = Some(timestamp::now());
    }
    // The run is complete: only now does the cursor move.
    store.call(STORE_WAIT, move |b| b.save_sync_state(provider, &new_state))?;
    Ok(())
}

/// `(status:2 OR status:3 …)` queries, each within Freshservice's limit.
fn filter_queries(status_ids: &[i64]) -> Vec<String> {
    let mut queries = Vec::new();
    let mut terms: Vec<String> = Vec::new();
    for id in status_ids {
        let term = format!("status:{id}");
        let candidate_len = terms.iter().map(|t| t.len() + 4).sum::<usize>() + term.len() + 4;
        if !terms.is_empty() && candidate_len > MAX_QUERY - 8 {
            queries.push(format!("({})", terms.join(" OR ")));
            terms.clear();
        }
        terms.push(term);
    }
    if !terms.is_empty() {
        queries.push(format!("({})", terms.join(" OR ")));
    }
    queries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_queries_stay_short() {
        assert_eq!(filter_queries(&[2, 3]), ["(status:2 OR status:3)"]);
        let many: Vec<i64> = (1..200).collect();
        let queries = filter_queries(&many);
        assert!(queries.len() > 1);
        assert!(
            queries.iter().all(|q| q.len() + 2 <= MAX_QUERY),
            "{queries:?}"
        );
        let total: usize = queries.iter().map(|q| q.matches("status:").count()).sum();
        assert_eq!(total, 199);
    }
}
