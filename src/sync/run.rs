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
use crate::metrics;
use crate::psa::freshservice;
use crate::psa::freshservice_api::{FreshserviceClient, FreshservicePoll, QUERY_VALUE};
use crate::psa::superops_api::{SuperopsClient, SuperopsPoll};
use crate::psa::{PollSource, Provider, TicketEvent};
use crate::store::{Reader, RunKind, RunOutcome, StoreClient, SyncRun, SyncState, WriteItem};
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

/// Runs one sync of `kind` and records it in `sync_runs`: the writes go
/// through the writer, the reads through `reader`. `stop` interrupts it
/// between requests.
pub fn run_sync(
    config: &Config,
    store: &StoreClient,
    reader: &mut Reader,
    provider: Provider,
    kind: RunKind,
    stop: Arc<AtomicBool>,
) -> SyncRun {
    let mut run = SyncRun::starting(provider, kind);
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
    let result = Source::open(config, provider, stop.clone()).and_then(|mut source| {
        let mut sync = Sync {
            config,
            store,
            reader,
            run: &mut run,
            stop: &stop,
        };
        let result = sync.steps(&mut source, kind);
        run.api_calls = source.poll().calls() as i64;
        result
    });
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
    match Source::open(config, provider, stop)? {
        Source::Freshservice(mut source) => {
            source.client.check_credentials()?;
            Ok(config.freshservice.api_base_url().unwrap_or_default())
        }
        Source::SuperOps(mut source) => {
            source.client.check_credentials()?;
            Ok(config.superops.api_url.clone())
        }
    }
}

/// A provider's polling client, with what sets it apart in a full run.
enum Source<'a> {
    /// Freshservice lists deleted and spam tickets, and filters by status:
    /// the reconcile looks up the locally active tickets its active-status
    /// filter leaves out.
    Freshservice(Box<FreshservicePoll<'a>>),
    /// SuperOps lists neither: a full run lists every ticket, and the
    /// reconcile looks up the locally active tickets that listing left out.
    SuperOps(SuperopsPoll<'a>),
}

impl<'a> Source<'a> {
    fn open(
        config: &'a Config,
        provider: Provider,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, SyncError> {
        Ok(match provider {
            Provider::Freshservice => Source::Freshservice(Box::new(FreshservicePoll {
                client: FreshserviceClient::new(&config.freshservice, stop)?,
                config: &config.freshservice,
            })),
            Provider::SuperOps => Source::SuperOps(SuperopsPoll {
                client: SuperopsClient::new(&config.superops, stop)?,
                config: &config.superops,
            }),
        })
    }

    fn poll(&mut self) -> &mut dyn PollSource {
        match self {
            Source::Freshservice(source) => source.as_mut(),
            Source::SuperOps(source) => source,
        }
    }
}

/// A provider's polling settings, as a run needs them.
struct PollSettings {
    initial_sync_days: u32,
    reconcile_max_tickets: u32,
    done_statuses: Vec<String>,
}

impl PollSettings {
    fn of(config: &Config, provider: Provider) -> PollSettings {
        match provider {
            Provider::Freshservice => PollSettings {
                initial_sync_days: config.freshservice.initial_sync_days,
                reconcile_max_tickets: config.freshservice.reconcile_max_tickets,
                done_statuses: config.freshservice.done_statuses.clone(),
            },
            Provider::SuperOps => PollSettings {
                initial_sync_days: config.superops.initial_sync_days,
                reconcile_max_tickets: config.superops.reconcile_max_tickets,
                done_statuses: config.superops.done_statuses.clone(),
            },
        }
    }
}

/// One run in progress.
struct Sync<'a> {
    config: &'a Config,
    store: &'a StoreClient,
    reader: &'a mut Reader,
    run: &'a mut SyncRun,
    stop: &'a AtomicBool,
}

/// Whether a poll change counts as missed by webhooks: with webhooks on,
/// every version the poll finds before any webhook delivered it, except
/// in the first sync, whose history predates any webhook.
struct MissedRule {
    counts: bool,
}

impl Sync<'_> {
    /// The changes since the cursor (minus the overlap). A full run also
    /// lists the deletions the API can list and, unless
    /// `reconcile_max_tickets` is 0, looks up each locally active ticket
    /// the PSA no longer lists as active, marking it deleted only on the
    /// API's word that it does not exist. The cursor moves only when every
    /// step succeeded.
    fn steps(&mut self, source: &mut Source<'_>, kind: RunKind) -> Result<(), SyncError> {
        let provider = match source {
            Source::Freshservice(_) => Provider::Freshservice,
            Source::SuperOps(_) => Provider::SuperOps,
        };
        let settings = PollSettings::of(self.config, provider);
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
        let since = timestamp::format(since);
        let reconcile = kind == RunKind::Full && settings.reconcile_max_tickets > 0;
        // A full run of a PSA without an active-status filter lists every
        // ticket (every timestamp sorts after the empty string).
        let lists_everything = reconcile && matches!(source, Source::SuperOps(_));
        let full = match source {
            Source::Freshservice(_) => kind == RunKind::Full,
            Source::SuperOps(_) => reconcile,
        };
        let mut cursor = state.cursor.clone();
        let mut listed = HashSet::new();

        // 1. Everything updated since the cursor, oldest first.
        let list_since = if lists_everything { "" } else { since.as_str() };
        self.listing(source, list_since, &rule, &mut listed, Some(&mut cursor))?;

        let mut new_state = SyncState {
            cursor,
            last_reconcile_at: state.last_reconcile_at.clone(),
        };
        if kind == RunKind::Initial {
            // The first sync has just listed everything there is: nothing is
            // known locally that it could have missed.
            new_state.last_reconcile_at = Some(timestamp::now());
        } else if full {
            // 2. Tickets deleted or marked spam since the last full run: a
            // full run happens every reconcile_interval, which keeps a quiet
            // account at one API call per incremental run.
            let deleted_since = match state.last_reconcile_at.as_deref().map(timestamp::parse) {
                Some(Ok(last)) => timestamp::format(last.checked_sub(OVERLAP).unwrap_or(last)),
                _ => since.clone(),
            };
            self.listing(source, &deleted_since, &rule, &mut listed, None)?;
            // 3. Locally active tickets the PSA no longer lists as active.
            if reconcile {
                let remote = match source {
                    Source::Freshservice(fs) => self.remote_active(fs, &rule)?,
                    Source::SuperOps(_) => Some(listed),
                };
                if let Some(remote) = remote {
                    self.look_up_missing(source.poll(), provider, &settings, &remote, &rule)?;
                }
            }
            new_state.last_reconcile_at = Some(timestamp::now());
        }

        // The run is complete: only now does the cursor move.
        self.store
            .save_sync_state(provider, &new_state, STORE_WAIT)?;
        Ok(())
    }

    /// Applies a listing page by page, noting the tickets it listed: the
    /// changes since `since` when given the run's `cursor` (which it moves),
    /// else the deletions since `since`.
    fn listing(
        &mut self,
        source: &mut Source<'_>,
        since: &str,
        rule: &MissedRule,
        listed: &mut HashSet<i64>,
        mut cursor: Option<&mut Option<String>>,
    ) -> Result<(), SyncError> {
        let (store, run, stop) = (self.store, &mut *self.run, self.stop);
        let changes = cursor.is_some();
        let mut page = |events: Vec<TicketEvent>| {
            interrupted(stop)?;
            listed.extend(events.iter().map(|e| e.ticket_id));
            apply_events(store, run, events, rule, cursor.as_deref_mut())
        };
        if changes {
            source.poll().changes(since, &mut page)
        } else {
            source.poll().deletions(since, &mut page)
        }
    }

    /// Looks up, one by one (at most `reconcile_max_tickets`), the tickets
    /// stored as active that are not in `remote`. Only the API's word that
    /// a ticket does not exist marks it deleted: a short or failed listing
    /// proves nothing.
    fn look_up_missing(
        &mut self,
        source: &mut dyn PollSource,
        provider: Provider,
        settings: &PollSettings,
        remote: &HashSet<i64>,
        rule: &MissedRule,
    ) -> Result<(), SyncError> {
        let done = &settings.done_statuses;
        let local = self
            .reader
            .read_waiting(STORE_WAIT, |r| r.active_tickets(provider, done, 1_000_000))?;
        let candidates: Vec<i64> = local
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !remote.contains(id))
            .collect();
        let max = settings.reconcile_max_tickets as usize;
        if candidates.len() > max {
            log::warn!(
                "reconcile: {provider}: {} locally active tickets to look up; checking {max} this run (reconcile_max_tickets)",
                candidates.len(),
            );
        } else if !candidates.is_empty() {
            log::info!(
                "reconcile: {provider}: looking up {} tickets no longer listed as active",
                candidates.len()
            );
        }
        for id in candidates.into_iter().take(max) {
            interrupted(self.stop)?;
            if let Some(event) = source.lookup(id)? {
                apply_events(self.store, self.run, vec![event], rule, None)?;
            }
        }
        Ok(())
    }

    /// Ids Freshservice's active-status filter returns, or `None` when the
    /// listing is incomplete (then nothing is concluded from it). The
    /// tickets it lists are applied as they come: the listing settles
    /// them, and only the locally active tickets it leaves out need
    /// looking up.
    fn remote_active(
        &mut self,
        source: &mut FreshservicePoll<'_>,
        rule: &MissedRule,
    ) -> Result<Option<HashSet<i64>>, SyncError> {
        let fs = &self.config.freshservice;
        let status_ids: Vec<i64> = fs
            .statuses
            .ids()
            .filter(|(_, name)| !fs.done_statuses.iter().any(|d| d == name))
            .map(|(id, _)| id)
            .collect();
        let mut remote = HashSet::new();
        for query in filter_queries(&status_ids) {
            let mut seen = 0u64;
            let mut page_number = 1;
            loop {
                interrupted(self.stop)?;
                let url = source.client.listing_url(&format!(
                    "/tickets/filter?query={}&page={page_number}",
                    utf8_percent_encode(&format!("\"{query}\""), QUERY_VALUE)
                ));
                let page = source.client.page(&url)?;
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
                        freshservice::normalize_api_ticket(t, fs)
                            .ok()
                            .map(|n| n.event)
                    })
                    .collect();
                apply_events(self.store, self.run, events, rule, None)?;
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
