//! The SuperOps GraphQL API, as the poller uses it: `getTicketList` pages
//! sorted by `updatedTime`, `getTicket`, within the configured rate limit.
//!
//! SuperOps answers errors as HTTP 200 with `errors[].extensions.clientError`
//! (a list of `{code, param}`); a bad token is a 401.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::client::{MAX_BODY, MinuteWindow, Pacer, Retries, agent, page_cap};
use super::superops::{self, TICKET_FIELDS};
use super::{Complete, Found, PageSink, PollSettings, PollSource, Provider};
use crate::config::SuperopsConfig;
use crate::error::SyncError;

/// Largest page `getTicketList` serves.
pub const PAGE_SIZE: u64 = 100;

/// One page of `getTicketList`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub tickets: Vec<Json>,
    pub has_more: bool,
    /// `listInfo.totalCount`, which SuperOps may send as a string.
    pub total: Option<u64>,
}

/// What `getTicket` says about one ticket.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Json),
    /// `entity_does_not_exist`: the ticket is gone (purged).
    Gone,
}

/// A client for one account. Not `Debug`: it holds the API token.
pub struct SuperopsClient {
    agent: ureq::Agent,
    url: String,
    authorization: String,
    subdomain: String,
    max_per_minute: usize,
    sent: MinuteWindow,
    pacer: Pacer,
    /// Requests sent, retries included.
    pub calls: u64,
}

impl SuperopsClient {
    /// A client for the configured account on the real clock; `stop`
    /// interrupts waits.
    pub fn new(
        config: &SuperopsConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<SuperopsClient, SyncError> {
        let token = config.api_token.as_ref().ok_or_else(|| {
            SyncError::BadCredentials("[superops] api_token is not set".to_string())
        })?;
        let subdomain = config
            .subdomain
            .clone()
            .ok_or_else(|| SyncError::Protocol("[superops] subdomain is not set".to_string()))?;
        Ok(SuperopsClient {
            agent: agent(config.request_timeout),
            url: config.api_url.clone(),
            authorization: format!("Bearer {}", token.expose()),
            subdomain,
            max_per_minute: config.max_requests_per_minute.max(1) as usize,
            sent: MinuteWindow::default(),
            pacer: Pacer::new(stop),
            calls: 0,
        })
    }

    /// The same client counting its rate limit and sleeping its waits on
    /// `clock`.
    #[cfg(test)]
    pub fn with_clock(self, clock: Arc<dyn super::clock::Clock>) -> SuperopsClient {
        SuperopsClient {
            pacer: self.pacer.with_clock(clock),
            ..self
        }
    }

    /// One page (from 1) of all tickets, most recently updated first.
    pub fn ticket_page(&mut self, page: u64) -> Result<Page, SyncError> {
        let query = format!(
            "query getTicketList($input: ListInfoInput!) {{ getTicketList(input: $input) {{ tickets {{ {TICKET_FIELDS} }} listInfo {{ page pageSize hasMore totalCount }} }} }}"
        );
        let variables = json!({"input": {
            "page": page,
            "pageSize": PAGE_SIZE,
            "sort": [{"attribute": "updatedTime", "order": "DESC"}],
        }});
        let data = match self.request("getTicketList", &query, variables)? {
            Ok(data) => data,
            Err(errors) => return Err(client_errors("getTicketList", &errors)),
        };
        let list = data.get("getTicketList").ok_or_else(|| {
            SyncError::Protocol("getTicketList: the answer has no getTicketList".to_string())
        })?;
        let tickets = match list.get("tickets") {
            Some(Json::Array(tickets)) => tickets.clone(),
            Some(Json::Null) | None => Vec::new(),
            Some(_) => {
                return Err(SyncError::Protocol(
                    "getTicketList: tickets is not a list".to_string(),
                ));
            }
        };
        let info = list.get("listInfo");
        let has_more = match info.and_then(|i| i.get("hasMore")) {
            Some(Json::Bool(more)) => *more,
            Some(Json::String(more)) => more.trim().eq_ignore_ascii_case("true"),
            // Without listInfo a full page may have a successor.
            _ => tickets.len() as u64 >= PAGE_SIZE,
        };
        let total = info
            .and_then(|i| i.get("totalCount"))
            .and_then(|t| match t {
                Json::Number(n) => n.as_u64(),
                Json::String(s) => s.trim().parse().ok(),
                _ => None,
            });
        Ok(Page {
            tickets,
            has_more,
            total,
        })
    }

    /// Looks one ticket up; `Gone` only when SuperOps says it does not exist.
    pub fn ticket(&mut self, id: i64) -> Result<Lookup, SyncError> {
        let query = format!(
            "query getTicket($input: TicketIdentifierInput!) {{ getTicket(input: $input) {{ {TICKET_FIELDS} }} }}"
        );
        let variables = json!({"input": {"ticketId": id.to_string()}});
        match self.request("getTicket", &query, variables)? {
            Ok(data) => match data.get("getTicket") {
                Some(ticket @ Json::Object(_)) => Ok(Lookup::Found(ticket.clone())),
                // A null ticket without an error proves nothing.
                _ => Err(SyncError::Protocol(format!(
                    "getTicket {id}: the answer has no ticket and no error"
                ))),
            },
            Err(errors) if codes(&errors).contains(&ErrorCode::EntityDoesNotExist) => {
                Ok(Lookup::Gone)
            }
            Err(errors) => Err(client_errors(&format!("getTicket {id}"), &errors)),
        }
    }

    /// Checks the token and subdomain with the smallest listing.
    pub fn check_credentials(&mut self) -> Result<(), SyncError> {
        self.ticket_page(1).map(|_| ())
    }

    /// Sends one operation; `Ok(Err(errors))` is a GraphQL error answer
    /// other than a rate limit (which is waited out and retried here).
    fn request(
        &mut self,
        operation: &str,
        query: &str,
        variables: Json,
    ) -> Result<Result<Json, Vec<Json>>, SyncError> {
        let body =
            json!({"operationName": operation, "query": query, "variables": variables}).to_string();
        let mut retries = Retries::new(Provider::SuperOps);
        loop {
            let delay = self.sent.delay(self.pacer.now(), self.max_per_minute);
            self.pacer.wait(delay)?;
            self.calls += 1;
            self.sent.sent(self.pacer.now());
            let result = self
                .agent
                .post(&self.url)
                .header("Authorization", &self.authorization)
                .header("CustomerSubDomain", &self.subdomain)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .send(body.as_bytes());
            let error = match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response
                        .body_mut()
                        .with_config()
                        .limit(MAX_BODY)
                        .read_to_string()
                        .map_err(|e| format!("{operation}: reading the answer: {e}"));
                    match (status, text) {
                        (401 | 403, _) => {
                            return Err(SyncError::BadCredentials(format!(
                                "{operation} answered {status}: check [superops] api_token and subdomain"
                            )));
                        }
                        (429, _) => {
                            self.rate_limited(operation, &mut retries, retry_after)?;
                            continue;
                        }
                        (200, Ok(text)) => {
                            let answer: Json = serde_json::from_str(&text).map_err(|e| {
                                SyncError::Protocol(format!(
                                    "{operation}: the answer is not JSON: {e}"
                                ))
                            })?;
                            let errors = match answer.get("errors") {
                                Some(Json::Array(errors)) if !errors.is_empty() => errors.clone(),
                                _ => {
                                    return Ok(Ok(answer
                                        .get("data")
                                        .cloned()
                                        .unwrap_or(Json::Null)));
                                }
                            };
                            let found = codes(&errors);
                            if found.contains(&ErrorCode::RateLimitExceeded) {
                                self.rate_limited(operation, &mut retries, retry_after)?;
                                continue;
                            }
                            if found.iter().any(ErrorCode::refuses_credentials) {
                                return Err(SyncError::BadCredentials(format!(
                                    "{operation}: SuperOps refused the request ({}): check [superops] api_token and subdomain",
                                    joined(&found)
                                )));
                            }
                            return Ok(Err(errors));
                        }
                        (200, Err(message)) => message,
                        (500..=599, _) => format!("{operation} answered {status}"),
                        (_, text) => {
                            // A GraphQL validation error may come as a 400
                            // with the reason in its body.
                            let snippet: String =
                                text.unwrap_or_default().chars().take(200).collect();
                            return Err(SyncError::Protocol(format!(
                                "{operation} answered {status}: {snippet}"
                            )));
                        }
                    }
                }
                Err(error) => format!("{operation}: {error}"),
            };
            retries.failed(error, &self.pacer)?;
        }
    }

    /// Waits out a rate limit, or gives up after too many.
    fn rate_limited(
        &self,
        operation: &str,
        retries: &mut Retries,
        retry_after: Option<Duration>,
    ) -> Result<(), SyncError> {
        let wait = retries.rate_limited(operation, retry_after)?;
        log::warn!(
            "superops: rate_limit_exceeded; waiting {}s before retrying {operation}",
            wait.as_secs()
        );
        self.pacer.wait(wait)
    }
}

/// A SuperOps account as a poll source: `getTicketList` read newest first
/// down to the watermark, `getTicket` for lookups.
pub struct SuperopsPoll<'a> {
    pub client: SuperopsClient,
    pub config: &'a SuperopsConfig,
}

impl SuperopsPoll<'_> {
    /// Reads `getTicketList` newest first, handing `page` each page's
    /// events at or after `since` (all of them for `""`), and returns the
    /// ids listed.
    fn newest_first(
        &mut self,
        since: &str,
        page: &mut PageSink<'_>,
    ) -> Result<HashSet<i64>, SyncError> {
        let mut listed_ids = HashSet::new();
        let mut number: u64 = 1;
        loop {
            let listed = self.client.ticket_page(number)?;
            let mut events = Vec::new();
            let mut reached = false;
            for ticket in &listed.tickets {
                match superops::normalize_api_ticket(ticket, self.config) {
                    Ok(normalized) => {
                        let event = normalized.event;
                        for warning in normalized.warnings {
                            log::warn!("sync: superops ticket {}: {warning}", event.ticket_id);
                        }
                        if event.updated_at.as_deref().is_some_and(|u| u < since) {
                            // Sorted newest first: everything after this is
                            // older than the watermark too.
                            reached = true;
                            continue;
                        }
                        listed_ids.insert(event.ticket_id);
                        events.push(event);
                    }
                    Err(message) => log::warn!("sync: superops: skipped a ticket: {message}"),
                }
            }
            page(events)?;
            if reached || !listed.has_more || listed.tickets.is_empty() {
                return Ok(listed_ids);
            }
            // hasMore that never ends (a server fault) must not loop forever:
            // past the pages totalCount allows, the listing is broken.
            if let Some(total) = listed.total {
                if number > total / PAGE_SIZE + 2 {
                    return Err(SyncError::Protocol(format!(
                        "getTicketList still has more after page {number} of {total} tickets"
                    )));
                }
            }
            page_cap("getTicketList", u32::try_from(number).unwrap_or(u32::MAX))?;
            number += 1;
        }
    }
}

impl PollSource for SuperopsPoll<'_> {
    fn settings(&self) -> PollSettings {
        PollSettings {
            initial_sync_days: self.config.initial_sync_days,
            reconcile_max_tickets: self.config.reconcile_max_tickets,
            done_statuses: self.config.done_statuses.clone(),
        }
    }

    fn changes(&mut self, since: &str, page: &mut PageSink<'_>) -> Result<(), SyncError> {
        self.newest_first(since, page).map(drop)
    }

    /// Every ticket, resolved and closed ones included: SuperOps lists no
    /// removals, so a ticket this leaves out is looked up.
    fn complete(&mut self, page: &mut PageSink<'_>) -> Result<Option<Complete>, SyncError> {
        // Every timestamp sorts after the empty string.
        let listed = self.newest_first("", page)?;
        Ok(Some(Complete {
            listed,
            covers_done: true,
        }))
    }

    fn complete_includes_changes(&self) -> bool {
        true
    }

    fn lookup(&mut self, ticket_id: i64) -> Result<Found, SyncError> {
        match self.client.ticket(ticket_id)? {
            Lookup::Found(ticket) => match superops::normalize_api_ticket(&ticket, self.config) {
                Ok(normalized) => Ok(Found::Ticket(Box::new(normalized.event))),
                Err(message) => {
                    log::warn!("reconcile: superops ticket {ticket_id}: {message}");
                    Ok(Found::Unreadable)
                }
            },
            Lookup::Gone => Ok(Found::Gone(Box::new(superops::deleted_event(
                ticket_id,
                crate::timestamp::now(),
                self.config,
            )))),
        }
    }

    fn check_credentials(&mut self) -> Result<String, SyncError> {
        self.client.check_credentials()?;
        Ok(self.config.api_url.clone())
    }

    fn calls(&self) -> u64 {
        self.client.calls
    }
}

/// A code of a GraphQL error answer; the ones Codex acts on by name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ErrorCode {
    /// Too many requests this minute: waited out and retried.
    RateLimitExceeded,
    /// `getTicket` for a ticket that does not exist (any more).
    EntityDoesNotExist,
    /// The token is not allowed what it asked.
    Forbidden,
    /// The token or subdomain is not accepted.
    Unauthorized,
    /// Any other, shown in the error with the answer's message.
    Other(String),
}

impl ErrorCode {
    fn of(code: &str) -> ErrorCode {
        match code {
            "rate_limit_exceeded" => ErrorCode::RateLimitExceeded,
            "entity_does_not_exist" => ErrorCode::EntityDoesNotExist,
            "forbidden" => ErrorCode::Forbidden,
            "unauthorized" => ErrorCode::Unauthorized,
            other => ErrorCode::Other(other.to_string()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            ErrorCode::RateLimitExceeded => "rate_limit_exceeded",
            ErrorCode::EntityDoesNotExist => "entity_does_not_exist",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Other(code) => code,
        }
    }

    /// Whether retrying with the same credentials cannot help.
    fn refuses_credentials(&self) -> bool {
        matches!(self, ErrorCode::Forbidden | ErrorCode::Unauthorized)
    }
}

/// Codes as a message lists them: `a, b`.
fn joined(codes: &[ErrorCode]) -> String {
    let codes: Vec<&str> = codes.iter().map(ErrorCode::as_str).collect();
    codes.join(", ")
}

/// The codes of a GraphQL error list: each error's `clientError` codes
/// (a list or a single object), then its `extensions.code`.
fn codes(errors: &[Json]) -> Vec<ErrorCode> {
    let code = |e: &Json| e.get("code").and_then(Json::as_str).map(ErrorCode::of);
    let mut out = Vec::new();
    for error in errors {
        let Some(extensions) = error.get("extensions") else {
            continue;
        };
        match extensions.get("clientError") {
            Some(Json::Array(list)) => out.extend(list.iter().filter_map(code)),
            Some(one @ Json::Object(_)) => out.extend(code(one)),
            _ => {}
        }
        out.extend(code(extensions));
    }
    out
}

/// An error answer as a sync error, with its codes and first message.
fn client_errors(operation: &str, errors: &[Json]) -> SyncError {
    let message: String = errors
        .iter()
        .find_map(|e| e.get("message").and_then(Json::as_str))
        .unwrap_or("no message")
        .chars()
        .take(200)
        .collect();
    let codes = codes(errors);
    SyncError::Api(format!(
        "{operation}: SuperOps answered an error{}: {message}",
        if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", joined(&codes))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psa::client::fake::FakeApi;
    use crate::psa::clock::{Clock, ManualClock};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    #[test]
    fn the_rate_limit_and_its_waits_pass_on_the_clock() {
        let started = Instant::now();
        let clock = Arc::new(ManualClock::new());
        // The first answer says the account's limit is spent; then tickets.
        let answered = AtomicU32::new(0);
        let api = FakeApi::start(clock.clone(), move |_, _| {
            let body = if answered.fetch_add(1, Ordering::Relaxed) == 0 {
                r#"{"errors": [{"message": "slow down", "extensions": {"clientError": [{"code": "rate_limit_exceeded"}]}}]}"#
            } else {
                r#"{"data": {"getTicket": {"ticketId": "7", "updatedTime": "2024-01-15T10:30:00"}}}"#
            };
            tiny_http::Response::from_string(body)
        });
        let config = crate::config::Config::from_ini(
            &format!(
                "[superops]\napi_url = {}/msp\napi_token = t\nsubdomain = acme\nmax_requests_per_minute = 2\n",
                api.base
            ),
            None,
            &|_| None,
        )
        .unwrap()
        .config;
        let mut client = SuperopsClient::new(&config.superops, Arc::new(AtomicBool::new(false)))
            .unwrap()
            .with_clock(clock.clone());
        let start = clock.now();
        for id in [7, 7, 7] {
            assert!(matches!(client.ticket(id), Ok(Lookup::Found(_))));
        }
        let arrivals: Vec<Duration> = api.arrivals().into_iter().map(|at| at - start).collect();
        // The rate-limited request is retried after a minute (no
        // Retry-After); with 2 a minute, the third lookup waits for the
        // retry to age out.
        assert_eq!(
            arrivals,
            [0, 60, 60, 120].map(Duration::from_secs),
            "{arrivals:?}"
        );
        for window in arrivals.windows(3) {
            assert!(window[2] - window[0] >= Duration::from_secs(60));
        }
        assert_eq!(client.calls, 4);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn client_error_codes_are_read_in_either_shape() {
        let errors = vec![
            json!({"message": "x", "extensions": {"clientError": [{"code": "rate_limit_exceeded", "param": {}}]}}),
            json!({"message": "y", "extensions": {"clientError": {"code": "entity_does_not_exist"}}}),
        ];
        assert_eq!(
            codes(&errors),
            [ErrorCode::RateLimitExceeded, ErrorCode::EntityDoesNotExist]
        );
        let other = json!({"extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}});
        assert_eq!(
            codes(&[other]),
            [ErrorCode::Other("GRAPHQL_VALIDATION_FAILED".to_string())]
        );
        let error = client_errors("getTicket 5", &errors[1..]).to_string();
        assert!(
            error.contains("entity_does_not_exist") && error.contains(": y"),
            "{error}"
        );
    }
}
