//! A Freshservice account as a poll source: the listings the poller reads
//! page by page through the client (`freshservice_api.rs`), the
//! active-status filter the reconcile reads, and listed tickets turned
//! into events (`freshservice.rs` reads their shape).

use percent_encoding::utf8_percent_encode;
use serde_json::Value as Json;

use super::client::page_cap;
use super::freshservice::{self, Normalized, Removal};
use super::freshservice_api::{FreshserviceClient, QUERY_VALUE, path_of};
use super::{Complete, Found, PageSink, PollSettings, PollSource, TicketEvent};
use crate::config::FreshserviceConfig;
use crate::error::SyncError;
use crate::timestamp;

/// Pages of the filter listing read at most (Freshservice serves 30
/// tickets a page and stops at ten pages); beyond that the reconcile is
/// skipped rather than concluded from a partial listing.
const MAX_FILTER_PAGES: u64 = 10;
/// Freshservice's filter query is at most this long.
const MAX_QUERY: usize = 512;

/// A Freshservice account as a poll source: the `updated_since` listing
/// oldest first, the deleted and spam listings newest first, the
/// active-status filter, `GET /tickets/{id}`.
pub struct FreshservicePoll<'a> {
    pub client: FreshserviceClient,
    pub config: &'a FreshserviceConfig,
}

impl FreshservicePoll<'_> {
    /// Reads a listing page by page (following `Link: rel="next"` on the
    /// configured origin only, at most [`super::client::MAX_PAGES`] pages),
    /// handing `page` the events `to_event` makes of each page's tickets
    /// until `more` says a page was the last one needed.
    fn listing(
        &mut self,
        mut url: String,
        page: &mut PageSink<'_>,
        to_event: impl Fn(&Json) -> Option<TicketEvent>,
        more: impl Fn(&[Json]) -> bool,
    ) -> Result<(), SyncError> {
        let mut pages = 0;
        loop {
            let listed = self.client.page(&url)?;
            pages += 1;
            page(listed.tickets.iter().filter_map(&to_event).collect())?;
            match listed.next {
                Some(next) if more(&listed.tickets) => {
                    page_cap(path_of(&url), pages)?;
                    url = self.client.origin.follow(&next)?;
                }
                _ => return Ok(()),
            }
        }
    }

    /// The ids of the active statuses (every status not done).
    fn active_status_ids(&self) -> Vec<i64> {
        let fs = self.config;
        fs.statuses
            .ids()
            .filter(|(_, name)| !fs.done_statuses.iter().any(|d| d == name))
            .map(|(id, _)| id)
            .collect()
    }
}

impl PollSource for FreshservicePoll<'_> {
    fn settings(&self) -> PollSettings {
        PollSettings {
            initial_sync_days: self.config.initial_sync_days,
            reconcile_max_tickets: self.config.reconcile_max_tickets,
            done_statuses: self.config.done_statuses.clone(),
        }
    }

    fn changes(&mut self, since: &str, page: &mut PageSink<'_>) -> Result<(), SyncError> {
        let url = self.client.listing_url(&format!(
            "/tickets?updated_since={}&order_by=updated_at&order_type=asc&per_page=100",
            utf8_percent_encode(since, QUERY_VALUE)
        ));
        let config = self.config;
        self.listing(
            url,
            page,
            |ticket| normalize_listed(ticket, config),
            |_| true,
        )
    }

    fn lists_removals(&self) -> bool {
        true
    }

    /// Reads each of the deleted and spam filters newest first, down to
    /// `since`: whether `updated_since` is honoured together with a filter
    /// is not documented, so the order does the bounding.
    fn removals(&mut self, since: &str, page: &mut PageSink<'_>) -> Result<(), SyncError> {
        let config = self.config;
        let updated_at = |ticket: &Json| {
            ticket
                .get("updated_at")
                .and_then(Json::as_str)
                .and_then(|s| timestamp::normalize(s).ok())
        };
        for removal in Removal::ALL {
            let url = self.client.listing_url(&format!(
                "/tickets?filter={}&order_by=updated_at&order_type=desc&per_page=100",
                removal.flag(),
            ));
            self.listing(
                url,
                page,
                |ticket| {
                    let at = updated_at(ticket)?;
                    if at.as_str() < since {
                        return None;
                    }
                    let id = freshservice::parse_id(ticket.get("id")?).ok().flatten()?;
                    Some(freshservice::deleted_event(id, Some(at), removal, config))
                },
                // Newest first: a page that reaches below `since` is the last.
                |tickets| {
                    !tickets.is_empty()
                        && tickets
                            .iter()
                            .filter_map(updated_at)
                            .all(|at| at.as_str() >= since)
                },
            )?;
        }
        Ok(())
    }

    /// The active-status filter, every page: it settles each ticket it lists.
    fn complete(&mut self, page: &mut PageSink<'_>) -> Result<Option<Complete>, SyncError> {
        let mut complete = Complete::default();
        for query in filter_queries(&self.active_status_ids()) {
            let mut seen = 0u64;
            let mut page_number = 1;
            loop {
                let url = self.client.listing_url(&format!(
                    "/tickets/filter?query={}&page={page_number}",
                    utf8_percent_encode(&format!("\"{query}\""), QUERY_VALUE)
                ));
                let listed = self.client.page(&url)?;
                seen += listed.tickets.len() as u64;
                if listed
                    .total
                    .is_some_and(|total| total > MAX_FILTER_PAGES * 30)
                {
                    log::warn!(
                        "reconcile: {} active tickets are more than the filter lists ({}); skipping reconcile",
                        listed.total.unwrap_or_default(),
                        MAX_FILTER_PAGES * 30
                    );
                    return Ok(None);
                }
                complete.listed.extend(
                    listed
                        .tickets
                        .iter()
                        .filter_map(|t| freshservice::parse_id(t.get("id")?).ok().flatten()),
                );
                page(
                    listed
                        .tickets
                        .iter()
                        .filter_map(|t| normalize_listed(t, self.config))
                        .collect(),
                )?;
                let more = match listed.total {
                    Some(total) => seen < total && !listed.tickets.is_empty(),
                    None => listed.next.is_some(),
                };
                if !more {
                    if listed.total.is_some_and(|total| seen < total) {
                        log::warn!(
                            "reconcile: the active-ticket filter returned {seen} of {} tickets; skipping reconcile",
                            listed.total.unwrap_or_default()
                        );
                        return Ok(None);
                    }
                    break;
                }
                if page_number as u64 >= MAX_FILTER_PAGES {
                    log::warn!(
                        "reconcile: the active-ticket filter has more than {MAX_FILTER_PAGES} pages; skipping reconcile"
                    );
                    return Ok(None);
                }
                page_number += 1;
            }
        }
        Ok(Some(complete))
    }

    fn lookup(&mut self, ticket_id: i64) -> Result<Found, SyncError> {
        match self.client.ticket(ticket_id)? {
            Some(ticket) => match freshservice::normalize_api_ticket(&ticket, self.config) {
                Ok(normalized) => Ok(Found::Ticket(Box::new(normalized.event))),
                Err(message) => {
                    log::warn!("reconcile: ticket {ticket_id}: {message}");
                    Ok(Found::Unreadable)
                }
            },
            // Freshservice says it no longer exists: stamped now, so no
            // older event can bring it back.
            None => Ok(Found::Gone(Box::new(freshservice::deleted_event(
                ticket_id,
                Some(timestamp::now()),
                Removal::Deleted,
                self.config,
            )))),
        }
    }

    fn check_credentials(&mut self) -> Result<String, SyncError> {
        self.client.check_credentials()?;
        Ok(self.client.base.clone())
    }

    fn calls(&self) -> u64 {
        self.client.calls
    }
}

/// A listed ticket as an event, or `None` (with a warning) when it cannot
/// be read.
fn normalize_listed(ticket: &Json, config: &FreshserviceConfig) -> Option<TicketEvent> {
    match freshservice::normalize_api_ticket(ticket, config) {
        Ok(Normalized { event, warnings }) => {
            for warning in warnings {
                log::warn!("sync: ticket {}: {warning}", event.ticket_id);
            }
            Some(event)
        }
        Err(message) => {
            log::warn!("sync: skipped a ticket: {message}");
            None
        }
    }
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
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::psa::client::fake::FakeApi;
    use crate::psa::clock::{Clock, ManualClock};
    use crate::psa::freshservice_api::test_client;

    #[test]
    fn never_more_than_max_requests_per_minute_in_any_minute() {
        let started = Instant::now();
        let clock = Arc::new(ManualClock::new());
        // Four pages of changes linked by rel="next"; empty deleted and
        // spam listings.
        let api = FakeApi::start(clock.clone(), |url, base| {
            let page: u32 = url
                .split(['?', '&'])
                .find_map(|p| p.strip_prefix("page="))
                .map_or(1, |p| p.parse().unwrap());
            let response = tiny_http::Response::from_string(r#"{"tickets": []}"#);
            if page >= 4 || url.contains("filter=") {
                return response;
            }
            let link = format!("<{base}/api/v2/tickets?page={}>; rel=\"next\"", page + 1);
            response.with_header(tiny_http::Header::from_bytes("Link", link).unwrap())
        });
        let base = format!("{}/api/v2", api.base);
        let (config, client) = test_client(&base, "max_requests_per_minute = 4\n");
        let client = client.with_clock(clock.clone());
        let start = clock.now();
        // A run: four pages of changes, then the deleted and spam listings.
        let mut poll = FreshservicePoll {
            client,
            config: &config,
        };
        poll.changes("2024-01-01T00:00:00Z", &mut |_| Ok(()))
            .unwrap();
        poll.removals("2024-01-01T00:00:00Z", &mut |_| Ok(()))
            .unwrap();
        let arrivals: Vec<Duration> = api.arrivals().into_iter().map(|at| at - start).collect();
        assert_eq!(arrivals.len(), 6, "{arrivals:?}");
        assert_eq!(poll.calls(), 6);
        // With 4 a minute, the first four go at once and the fifth waits
        // for the first to age out, no longer.
        assert!(arrivals[..4].iter().all(|at| at.is_zero()), "{arrivals:?}");
        assert_eq!(arrivals[4], Duration::from_secs(60), "{arrivals:?}");
        for window in arrivals.windows(5) {
            assert!(
                window[4] - window[0] >= Duration::from_secs(60),
                "5 requests within a minute: {arrivals:?}"
            );
        }
        // The minute passed on the manual clock, not in real time.
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn removals_are_read_newest_first_down_to_since() {
        let clock = Arc::new(ManualClock::new());
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        // Deleted: page 1 (10:05, 10:04), page 2 (10:03, 09:00), page 3
        // that must never be asked for; spam: empty.
        let api = FakeApi::start(clock.clone(), move |url, base| {
            log.lock().unwrap().push(url.to_string());
            let ticket = |id: i64, at: &str| format!(r#"{{"id": {id}, "updated_at": "{at}"}}"#);
            let page = |n: u32| url.contains(&format!("page={n}"));
            let (tickets, next) = if url.contains("filter=spam") {
                (String::new(), None)
            } else if page(2) {
                let t = [
                    ticket(3, "2024-01-01T10:03:00Z"),
                    ticket(4, "2024-01-01T09:00:00Z"),
                ];
                (t.join(","), Some(3))
            } else if page(3) {
                (ticket(5, "2024-01-01T08:00:00Z"), None)
            } else {
                let t = [
                    ticket(1, "2024-01-01T10:05:00Z"),
                    ticket(2, "2024-01-01T10:04:00Z"),
                ];
                (t.join(","), Some(2))
            };
            let response =
                tiny_http::Response::from_string(format!(r#"{{"tickets": [{tickets}]}}"#));
            match next {
                Some(n) => {
                    let link =
                        format!("<{base}/api/v2/tickets?filter=deleted&page={n}>; rel=\"next\"");
                    response.with_header(tiny_http::Header::from_bytes("Link", link).unwrap())
                }
                None => response,
            }
        });
        let (config, client) = test_client(&format!("{}/api/v2", api.base), "");
        let client = client.with_clock(clock.clone());
        let mut poll = FreshservicePoll {
            client,
            config: &config,
        };
        let mut events = Vec::new();
        poll.removals("2024-01-01T10:00:00Z", &mut |page| {
            events.extend(page);
            Ok(())
        })
        .unwrap();
        api.arrivals();
        let ids: Vec<(i64, Option<&str>)> =
            events.iter().map(|e| (e.ticket_id, e.status())).collect();
        assert_eq!(
            ids,
            [
                (1, Some("deleted")),
                (2, Some("deleted")),
                (3, Some("deleted"))
            ]
        );
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert!(asked.iter().all(|u| !u.contains("updated_since")));
        assert!(asked[0].contains("filter=deleted") && asked[0].contains("order_type=desc"));
        assert!(asked[2].contains("filter=spam") && asked[2].contains("order_type=desc"));
    }

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
