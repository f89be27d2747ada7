//! The Freshservice REST API v2, as the poller uses it: listings followed
//! by their `Link: rel="next"` pages, single tickets, and the filter query,
//! within the account's rate limit.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value as Json;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::client::{MAX_BODY, MinuteWindow, Origin, Pacer, Retries, agent, page_cap};
use super::freshservice::{self, Normalized, Removal};
use super::{Complete, Found, PageSink, PollSettings, PollSource, Provider, TicketEvent};
use crate::config::FreshserviceConfig;
use crate::error::SyncError;
use crate::timestamp;

/// When `X-RateLimit-Remaining` drops to this, requests are spaced out.
const REMAINING_LOW: u64 = 2;

/// Pages of the filter listing read at most (Freshservice serves 30
/// tickets a page and stops at ten pages); beyond that the reconcile is
/// skipped rather than concluded from a partial listing.
const MAX_FILTER_PAGES: u64 = 10;
/// Freshservice's filter query is at most this long.
const MAX_QUERY: usize = 512;

/// Freshservice counts its rate limit per kind of call, each with its own
/// `X-RateLimit-*` headers (a ticket listing showed a total of 140 while
/// agents showed 500), so each kind is budgeted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `GET /tickets`, `GET /tickets/filter`.
    ListTickets,
    /// `GET /tickets/{id}`.
    ViewTicket,
    /// Anything else (`GET /agents/me`).
    Other,
}

impl CallKind {
    const ALL: [CallKind; 3] = [CallKind::ListTickets, CallKind::ViewTicket, CallKind::Other];

    /// The kind of call a URL makes.
    pub fn of(url: &str) -> CallKind {
        let path = path_of(url);
        let path = path.split('?').next().unwrap_or(path);
        let path = path.trim_end_matches('/');
        if path.ends_with("/tickets") || path.ends_with("/tickets/filter") {
            CallKind::ListTickets
        } else if path
            .rsplit_once("/tickets/")
            .is_some_and(|(_, id)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        {
            CallKind::ViewTicket
        } else {
            CallKind::Other
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub tickets: Vec<Json>,
    /// The `rel="next"` URL, absent on the last page.
    pub next: Option<String>,
    /// The filter endpoint's `total`, when the API gives one.
    pub total: Option<u64>,
}

/// A client for one account. Not `Debug`: it holds the API key.
pub struct FreshserviceClient {
    agent: ureq::Agent,
    base: String,
    /// Where the credentials may go: page links elsewhere are refused.
    origin: Origin,
    /// Set once the account has refused `workspace_id` (one without
    /// workspaces): listings are then asked without it for the life of
    /// this client (a reload makes a new one), and the fallback is logged
    /// once.
    workspaces_refused: bool,
    authorization: String,
    limiters: [Limiter; 3],
    workspace_id: u64,
    pacer: Pacer,
    /// Requests sent, retries included.
    pub calls: u64,
}

impl FreshserviceClient {
    /// A client for the configured account on the real clock; `stop`
    /// interrupts waits.
    pub fn new(
        config: &FreshserviceConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<FreshserviceClient, SyncError> {
        let base = config
            .api_base_url()
            .ok_or_else(|| SyncError::Protocol("[freshservice] domain is not set".to_string()))?;
        let key = config.api_key.as_ref().ok_or_else(|| {
            SyncError::BadCredentials("[freshservice] api_key is not set".to_string())
        })?;
        let origin = Origin::of(&base).ok_or_else(|| {
            SyncError::Protocol(format!(
                "[freshservice] the API address {base} is not an http(s) URL"
            ))
        })?;
        // The API key is the user name and "X" the password.
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:X", key.expose()));
        Ok(FreshserviceClient {
            agent: agent(config.request_timeout),
            base,
            origin,
            workspaces_refused: false,
            authorization: format!("Basic {token}"),
            limiters: CallKind::ALL.map(|_| Limiter::new(config.max_requests_per_minute)),
            workspace_id: config.workspace_id.unwrap_or(0),
            pacer: Pacer::new(stop),
            calls: 0,
        })
    }

    /// The same client counting its rate limits and sleeping its waits on
    /// `clock`.
    #[cfg(test)]
    pub fn with_clock(self, clock: Arc<dyn super::clock::Clock>) -> FreshserviceClient {
        FreshserviceClient {
            pacer: self.pacer.with_clock(clock),
            ..self
        }
    }

    /// The absolute URL of an API path such as `/tickets?…`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// The URL of a ticket listing (`/tickets?…`, `/tickets/filter?…`) in
    /// the configured workspace, or in all of them (`workspace_id=0`: without
    /// it, an account with workspaces lists its primary workspace only).
    pub fn listing_url(&self, path_and_query: &str) -> String {
        if self.workspaces_refused {
            return self.url(path_and_query);
        }
        let separator = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        self.url(&format!(
            "{path_and_query}{separator}workspace_id={}",
            self.workspace_id
        ))
    }

    /// The budget of one kind of call as the account last reported it:
    /// (`X-RateLimit-Total`, `X-RateLimit-Remaining`).
    #[cfg(test)]
    pub fn budget(&self, kind: CallKind) -> (Option<u64>, Option<u64>) {
        let limiter = &self.limiters[kind.index()];
        (limiter.total, limiter.remaining)
    }

    /// Fetches one page of a ticket listing (`{"tickets": […]}`).
    pub fn page(&mut self, url: &str) -> Result<Page, SyncError> {
        let mut answer = self.get(url)?;
        if answer.status == 400
            && url.contains("workspace_id=")
            && answer.body.contains("workspace_id")
        {
            // An account without workspaces refuses the parameter: ask
            // without it, now and from now on.
            if !self.workspaces_refused {
                self.workspaces_refused = true;
                log::warn!(
                    "freshservice: the account refuses workspace_id ({}); listing without it from now on",
                    answer.body.chars().take(200).collect::<String>()
                );
            }
            answer = self.get(&without_workspace(url))?;
        }
        if answer.status != 200 {
            return Err(unexpected(url, &answer));
        }
        let body: Json = serde_json::from_str(&answer.body).map_err(|e| {
            SyncError::Protocol(format!("{}: the answer is not JSON: {e}", path_of(url)))
        })?;
        let tickets = match body.get("tickets") {
            Some(Json::Array(tickets)) => tickets.clone(),
            _ => {
                return Err(SyncError::Protocol(format!(
                    "{}: the answer has no \"tickets\" list",
                    path_of(url)
                )));
            }
        };
        Ok(Page {
            tickets,
            next: answer.next,
            total: body.get("total").and_then(Json::as_u64),
        })
    }

    /// Fetches one ticket; `None` when Freshservice answers 404 (it no
    /// longer exists).
    pub fn ticket(&mut self, id: i64) -> Result<Option<Json>, SyncError> {
        let url = self.url(&format!("/tickets/{id}"));
        let answer = self.get(&url)?;
        match answer.status {
            404 => Ok(None),
            200 => {
                let body: Json = serde_json::from_str(&answer.body).map_err(|e| {
                    SyncError::Protocol(format!("/tickets/{id}: the answer is not JSON: {e}"))
                })?;
                body.get("ticket").cloned().map(Some).ok_or_else(|| {
                    SyncError::Protocol(format!("/tickets/{id}: the answer has no \"ticket\""))
                })
            }
            _ => Err(unexpected(&url, &answer)),
        }
    }

    /// Checks the credentials (`GET /agents/me`).
    pub fn check_credentials(&mut self) -> Result<(), SyncError> {
        let url = self.url("/agents/me");
        let answer = self.get(&url)?;
        match answer.status {
            200 => Ok(()),
            _ => Err(unexpected(&url, &answer)),
        }
    }

    /// GET with the rate limit of its kind of call, retries and the
    /// account's limit headers.
    fn get(&mut self, url: &str) -> Result<Answer, SyncError> {
        let kind = CallKind::of(url);
        let mut retries = Retries::new(Provider::Freshservice);
        loop {
            let delay = self.limiters[kind.index()].delay(self.pacer.now());
            self.pacer.wait(delay)?;
            self.calls += 1;
            self.limiters[kind.index()].sent(self.pacer.now());
            let result = self
                .agent
                .get(url)
                .header("Authorization", &self.authorization)
                .header("Accept", "application/json")
                .call();
            let error = match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let header = |name: &str| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let number = |name: &str| header(name).and_then(|v| v.trim().parse().ok());
                    self.limiters[kind.index()].reported(
                        self.pacer.now(),
                        number("X-RateLimit-Total"),
                        number("X-RateLimit-Remaining"),
                    );
                    let retry_after = header("Retry-After")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let next = header("Link").as_deref().and_then(next_link);
                    match status {
                        401 | 403 => {
                            return Err(SyncError::BadCredentials(format!(
                                "{} answered {status}: check [freshservice] api_key",
                                path_of(url)
                            )));
                        }
                        429 => {
                            let wait = retries.rate_limited(path_of(url), retry_after)?;
                            log::warn!(
                                "freshservice: rate limited; waiting {}s as Retry-After asks",
                                wait.as_secs()
                            );
                            self.pacer.wait(wait)?;
                            continue;
                        }
                        500..=599 => format!("{} answered {status}", path_of(url)),
                        _ => {
                            let body = response
                                .body_mut()
                                .with_config()
                                .limit(MAX_BODY)
                                .read_to_string()
                                .map_err(|e| {
                                    SyncError::Api(format!(
                                        "{}: reading the answer: {e}",
                                        path_of(url)
                                    ))
                                })?;
                            return Ok(Answer { status, body, next });
                        }
                    }
                }
                Err(error) => format!("{}: {error}", path_of(url)),
            };
            retries.failed(error, &self.pacer)?;
        }
    }
}

/// Characters escaped in query-string values.
pub(crate) const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

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

struct Answer {
    status: u16,
    body: String,
    next: Option<String>,
}

fn unexpected(url: &str, answer: &Answer) -> SyncError {
    let snippet: String = answer.body.chars().take(200).collect();
    SyncError::Protocol(format!(
        "{} answered {}: {snippet}",
        path_of(url),
        answer.status
    ))
}

/// The path and query of a URL, for messages (never the credentials,
/// which travel in a header).
fn path_of(url: &str) -> &str {
    url.find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..]))
        .unwrap_or(url)
}

/// The `rel="next"` target of a Link header:
/// `<https://x/api/v2/tickets?page=2>; rel="next", <…>; rel="prev"`.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            p.trim()
                .replace(' ', "")
                .eq_ignore_ascii_case("rel=\"next\"")
                || p.trim().eq_ignore_ascii_case("rel=next")
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// `url` without its `workspace_id` query parameter.
fn without_workspace(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.starts_with("workspace_id="))
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The budget of one kind of call: under `max` requests a minute (and
/// under the total the account reports for this kind), spaced out when the
/// account reports this kind's budget nearly spent (other integrations
/// share it).
struct Limiter {
    max: usize,
    sent: MinuteWindow,
    slow_until: Option<Instant>,
    /// `X-RateLimit-Total` last reported for this kind.
    total: Option<u64>,
    /// `X-RateLimit-Remaining` last reported for this kind.
    remaining: Option<u64>,
}

impl Limiter {
    fn new(max_per_minute: u32) -> Limiter {
        Limiter {
            max: max_per_minute.max(1) as usize,
            sent: MinuteWindow::default(),
            slow_until: None,
            total: None,
            remaining: None,
        }
    }

    /// Requests a minute allowed: the configured maximum, or the account's
    /// own total for this kind when that is lower.
    fn per_minute(&self) -> usize {
        match self.total {
            Some(total) if total > 0 => self.max.min(total as usize),
            _ => self.max,
        }
    }

    /// How long from `now` to wait before the next request.
    fn delay(&mut self, now: Instant) -> Duration {
        let per_minute = self.per_minute();
        let delay = self.sent.delay(now, per_minute);
        match self.slow_until {
            Some(until) => delay.max(until.saturating_duration_since(now)),
            None => delay,
        }
    }

    fn sent(&mut self, now: Instant) {
        self.sent.sent(now);
    }

    /// Takes in this kind's headers. Near the end of its budget, the next
    /// request of this kind waits long enough for the budget to refill by a
    /// few requests, at the rate its own total refills.
    fn reported(&mut self, now: Instant, total: Option<u64>, remaining: Option<u64>) {
        if total.is_some() {
            self.total = total;
        }
        let Some(remaining) = remaining else {
            return;
        };
        self.remaining = Some(remaining);
        self.slow_until = (remaining <= REMAINING_LOW)
            .then(|| now + Duration::from_secs(60) * 3 / self.per_minute() as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psa::client::fake::FakeApi;

    /// A client of the API at `api_base`, with `extra` lines of
    /// `[freshservice]`, and the configuration it was made from.
    fn test_client(api_base: &str, extra: &str) -> (FreshserviceConfig, FreshserviceClient) {
        let text = format!("[freshservice]\napi_base = {api_base}\napi_key = k\n{extra}");
        let config = crate::config::Config::from_ini(&text, None, &|_| None)
            .unwrap()
            .config
            .freshservice;
        let client = FreshserviceClient::new(&config, Arc::new(AtomicBool::new(false))).unwrap();
        (config, client)
    }

    use crate::psa::clock::{Clock, ManualClock};

    #[test]
    fn link_headers() {
        let header =
            r#"<https://acme.freshservice.com/api/v2/tickets?page=2&per_page=100>; rel="next""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://acme.freshservice.com/api/v2/tickets?page=2&per_page=100")
        );
        assert_eq!(
            next_link(r#"<https://x/a?page=1>; rel="prev", <https://x/a?page=3>; rel="next""#)
                .as_deref(),
            Some("https://x/a?page=3")
        );
        assert_eq!(next_link(r#"<https://x/a?page=1>; rel="prev""#), None);
    }

    #[test]
    fn limiter_keeps_under_the_budget() {
        let now = Instant::now();
        let mut limiter = Limiter::new(2);
        assert_eq!(limiter.delay(now), Duration::ZERO);
        limiter.sent(now);
        limiter.sent(now);
        assert_eq!(limiter.delay(now), Duration::from_secs(60));
        let mut limiter = Limiter::new(60);
        limiter.reported(now, None, Some(1));
        assert_eq!(limiter.delay(now), Duration::from_secs(3));
        limiter.reported(now, None, Some(30));
        assert_eq!(limiter.delay(now), Duration::ZERO);
        // The account's own total for the kind caps it, and paces it.
        let mut limiter = Limiter::new(600);
        limiter.reported(now, Some(3), Some(50));
        for _ in 0..3 {
            limiter.sent(now);
        }
        assert_eq!(limiter.delay(now), Duration::from_secs(60));
        let mut limiter = Limiter::new(600);
        limiter.reported(now, Some(30), Some(1));
        assert_eq!(limiter.delay(now), Duration::from_secs(6));
    }

    #[test]
    fn each_kind_of_call_has_its_own_budget() {
        assert_eq!(
            CallKind::of("https://x/api/v2/tickets?page=2"),
            CallKind::ListTickets
        );
        assert_eq!(
            CallKind::of("https://x/api/v2/tickets/filter?query=%22a%22"),
            CallKind::ListTickets
        );
        assert_eq!(
            CallKind::of("https://x/api/v2/tickets/42"),
            CallKind::ViewTicket
        );
        assert_eq!(CallKind::of("https://x/api/v2/agents/me"), CallKind::Other);
        let (_, mut client) = test_client("http://127.0.0.1:9/api/v2", "");
        let now = Instant::now();
        client.limiters[CallKind::ListTickets.index()].reported(now, Some(140), Some(1));
        client.limiters[CallKind::ViewTicket.index()].reported(now, Some(160), Some(150));
        assert!(client.limiters[CallKind::ListTickets.index()].delay(now) > Duration::ZERO);
        assert_eq!(
            client.limiters[CallKind::ViewTicket.index()].delay(now),
            Duration::ZERO
        );
        assert_eq!(client.budget(CallKind::ListTickets), (Some(140), Some(1)));
    }

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

    #[test]
    fn workspace_parameter_is_removed_cleanly() {
        assert_eq!(
            without_workspace("https://x/api/v2/tickets?a=1&workspace_id=0&page=2"),
            "https://x/api/v2/tickets?a=1&page=2"
        );
        assert_eq!(
            without_workspace("https://x/api/v2/tickets?workspace_id=0"),
            "https://x/api/v2/tickets"
        );
    }

    #[test]
    fn messages_show_paths_not_hosts() {
        assert_eq!(
            path_of("https://acme.freshservice.com/api/v2/tickets?page=2"),
            "/api/v2/tickets?page=2"
        );
    }
}
