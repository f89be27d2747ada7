//! The Freshservice REST API v2, as the poller uses it: listings followed
//! by their `Link: rel="next"` pages, single tickets, and the filter query,
//! within the account's rate limit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value as Json;

use crate::config::FreshserviceConfig;
use crate::error::SyncError;

/// Attempts for a request that meets a network error or a 5xx.
const ATTEMPTS: u32 = 4;
/// First retry delay; doubled on each further retry.
const BACKOFF: Duration = Duration::from_millis(500);
/// A 429's Retry-After is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// 429 answers tolerated for one request before the run gives up.
const MAX_RATE_LIMITED: u32 = 5;
/// When `X-RateLimit-Remaining` drops to this, requests are spaced out.
const REMAINING_LOW: u64 = 2;
/// Largest API answer read (a page of 100 tickets with descriptions).
const MAX_BODY: u64 = 32 * 1024 * 1024;

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
    authorization: String,
    limiter: Limiter,
    stop: Arc<AtomicBool>,
    /// Requests sent, retries included.
    pub calls: u64,
}

impl FreshserviceClient {
    /// A client for the configured account; `stop` interrupts waits.
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
        // The API key is the user name and "X" the password.
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:X", key.expose()));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .user_agent(concat!("codex/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(FreshserviceClient {
            agent,
            base,
            authorization: format!("Basic {token}"),
            limiter: Limiter::new(config.max_requests_per_minute),
            stop,
            calls: 0,
        })
    }

    /// The absolute URL of an API path such as `/tickets?…`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// Fetches one page of a ticket listing (`{"tickets": […]}`).
    pub fn page(&mut self, url: &str) -> Result<Page, SyncError> {
        let answer = self.get(url)?;
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

    /// GET with the rate limit, retries and the account's limit headers.
    fn get(&mut self, url: &str) -> Result<Answer, SyncError> {
        let mut failures = 0;
        let mut rate_limited = 0;
        loop {
            let delay = self.limiter.delay();
            self.wait(delay)?;
            self.calls += 1;
            self.limiter.sent();
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
                    if let Some(remaining) =
                        header("X-RateLimit-Remaining").and_then(|v| v.trim().parse().ok())
                    {
                        self.limiter.remaining(remaining);
                    }
                    let retry_after =
                        header("Retry-After").and_then(|v| v.trim().parse::<u64>().ok());
                    let next = header("Link").as_deref().and_then(next_link);
                    match status {
                        401 | 403 => {
                            return Err(SyncError::BadCredentials(format!(
                                "{} answered {status}: check [freshservice] api_key",
                                path_of(url)
                            )));
                        }
                        429 => {
                            rate_limited += 1;
                            if rate_limited > MAX_RATE_LIMITED {
                                return Err(SyncError::Api(format!(
                                    "{} is still rate limited after {MAX_RATE_LIMITED} waits",
                                    path_of(url)
                                )));
                            }
                            let wait =
                                Duration::from_secs(retry_after.unwrap_or(60)).min(MAX_RETRY_AFTER);
                            log::warn!(
                                "freshservice: rate limited; waiting {}s as Retry-After asks",
                                wait.as_secs()
                            );
                            self.wait(wait)?;
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
            failures += 1;
            if failures >= ATTEMPTS {
                return Err(SyncError::Api(format!(
                    "{error} (gave up after {ATTEMPTS} attempts)"
                )));
            }
            let delay = BACKOFF * 2u32.pow(failures - 1);
            log::warn!(
                "freshservice: {error}; retrying in {} ms",
                delay.as_millis()
            );
            self.wait(delay)?;
        }
    }

    /// Sleeps, waking early (with an error) when shutdown is requested.
    fn wait(&self, duration: Duration) -> Result<(), SyncError> {
        let deadline = Instant::now() + duration;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(SyncError::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        }
    }
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

/// Keeps under `max` requests a minute, and spaces requests out when the
/// account reports its budget nearly spent (other integrations share it).
struct Limiter {
    max: usize,
    sent: VecDeque<Instant>,
    slow_until: Option<Instant>,
}

impl Limiter {
    fn new(max_per_minute: u32) -> Limiter {
        Limiter {
            max: max_per_minute.max(1) as usize,
            sent: VecDeque::new(),
            slow_until: None,
        }
    }

    /// How long to wait before the next request.
    fn delay(&mut self) -> Duration {
        let now = Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        let mut delay = Duration::ZERO;
        if self.sent.len() >= self.max {
            if let Some(oldest) = self.sent.front() {
                delay = (*oldest + Duration::from_secs(60)).saturating_duration_since(now);
            }
        }
        if let Some(until) = self.slow_until {
            delay = delay.max(until.saturating_duration_since(now));
        }
        delay
    }

    fn sent(&mut self) {
        self.sent.push_back(Instant::now());
    }

    /// Near the end of the account's budget, the next request waits long
    /// enough for the budget to refill by a few requests.
    fn remaining(&mut self, remaining: u64) {
        self.slow_until = (remaining <= REMAINING_LOW)
            .then(|| Instant::now() + Duration::from_secs(60) * 3 / self.max as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut limiter = Limiter::new(2);
        assert_eq!(limiter.delay(), Duration::ZERO);
        limiter.sent();
        limiter.sent();
        assert!(limiter.delay() > Duration::from_secs(59));
        let mut limiter = Limiter::new(60);
        limiter.remaining(1);
        assert!(limiter.delay() >= Duration::from_millis(2900));
        limiter.remaining(30);
        assert_eq!(limiter.delay(), Duration::ZERO);
    }

    #[test]
    fn messages_show_paths_not_hosts() {
        assert_eq!(
            path_of("https://acme.freshservice.com/api/v2/tickets?page=2"),
            "/api/v2/tickets?page=2"
        );
    }
}
