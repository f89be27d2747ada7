//! The Freshservice REST API v2 client, as the poller uses it: requests
//! with the account's credentials, retries, the rate limit of each kind of
//! call (`freshservice_limiter.rs`), the workspace fallback, and listing
//! pages with their `Link: rel="next"` targets. What a poll reads through
//! it is in `freshservice_poll.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value as Json;

use super::Provider;
use super::client::{MAX_BODY, Origin, Pacer, Retries, agent};
use super::freshservice_limiter::Limiter;
use crate::config::FreshserviceConfig;
use crate::error::SyncError;

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
    pub(super) base: String,
    /// Where the credentials may go: page links elsewhere are refused.
    pub(super) origin: Origin,
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
pub(super) fn path_of(url: &str) -> &str {
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

/// A client of the API at `api_base`, with `extra` lines of
/// `[freshservice]`, and the configuration it was made from.
#[cfg(test)]
pub(super) fn test_client(api_base: &str, extra: &str) -> (FreshserviceConfig, FreshserviceClient) {
    let text = format!("[freshservice]\napi_base = {api_base}\napi_key = k\n{extra}");
    let config = crate::config::Config::from_ini(&text, None, &|_| None)
        .unwrap()
        .config
        .freshservice;
    let client = FreshserviceClient::new(&config, Arc::new(AtomicBool::new(false))).unwrap();
    (config, client)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

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
