//! A fake Freshservice REST API (v2) on an ephemeral port: the listing with
//! `updated_since` and `Link` pagination, the deleted and spam filters, the
//! filter query, single tickets, `/agents/me`; with faults to inject (5xx,
//! 429 with Retry-After, slow answers, 401, a low rate-limit budget, a
//! truncated filter listing, an account without workspaces). Listings
//! follow workspaces as Freshservice does: without `workspace_id` only the
//! primary workspace's tickets (a ticket's `workspace_id`, 1 when absent),
//! with `workspace_id=0` all of them. Rate-limit headers are per kind of
//! call. It records every request it answers.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

pub const API_KEY: &str = "fake-api-key-42";

/// A request the fake answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub path: String,
    pub query: String,
    pub status: u16,
}

/// What the fake holds, and the faults to inject.
#[derive(Default)]
pub struct FakeState {
    /// Tickets the listing and `/tickets/{id}` return.
    pub tickets: BTreeMap<i64, Value>,
    /// Tickets in the deleted and spam filters.
    pub deleted: BTreeMap<i64, Value>,
    pub spam: BTreeMap<i64, Value>,
    pub requests: Vec<Logged>,
    /// Paths (substring of path?query) answered 500, with how many times
    /// (u32::MAX: always).
    pub fail: Vec<(String, u32)>,
    /// The next N requests get 429 with this Retry-After.
    pub rate_limited: u32,
    pub retry_after: u64,
    /// Requests matching the substring are answered after a delay, N times.
    pub slow: Option<(String, Duration, u32)>,
    /// X-RateLimit-Remaining to report (else a comfortable 100).
    pub remaining: Option<u64>,
    /// Every request is answered 401.
    pub unauthorized: bool,
    /// Added to the filter's `total`, making the listing look truncated.
    pub filter_total_extra: u64,
    /// The account has no workspaces: `workspace_id` is refused with 400.
    pub no_workspaces: bool,
    /// `X-RateLimit-Total` per kind of call (listing, view, other); 6000
    /// each unless set.
    pub totals: Option<[u64; 3]>,
    /// `X-RateLimit-Remaining` for listings only, overriding `remaining`.
    pub listing_remaining: Option<u64>,
    /// The `host:port` the listing's `Link: rel="next"` names instead of
    /// the fake's own (a server that sends clients elsewhere).
    pub link_host: Option<String>,
    /// Every listing page has a next one (a server whose pages never end).
    pub endless: bool,
}

pub struct FakeFreshservice {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A ticket as the API returns it.
pub fn ticket(id: i64, status: i64, updated_at: &str) -> Value {
    json!({
        "id": id,
        "subject": format!("Ticket {id}"),
        "description_text": format!("Description of {id}"),
        "status": status,
        "priority": 2,
        "type": "Incident",
        "requester_id": 1000 + id,
        "responder_id": 77,
        "group_id": 5,
        "department_id": 6,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": updated_at,
        "due_by": "2030-01-01T00:00:00Z",
        "fr_due_by": "2030-01-01T00:00:00Z",
        "is_escalated": false,
    })
}

impl FakeFreshservice {
    pub fn start() -> FakeFreshservice {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("fake freshservice");
        let addr = server.server_addr().to_ip().expect("ip address");
        let state = Arc::new(Mutex::new(FakeState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
                        answer(&state, addr, request);
                    }
                }
            })
        };
        FakeFreshservice {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn api_base(&self) -> String {
        format!("http://{}/api/v2", self.addr)
    }

    /// The `[freshservice]` section pointing Codex here (its tickets are
    /// dated 2024, so the first sync looks back ten years).
    pub fn config(&self) -> String {
        format!(
            "[freshservice]\napi_base = {}\napi_key = {API_KEY}\nmax_requests_per_minute = 6000\ninitial_sync_days = 3650\n",
            self.api_base()
        )
    }

    pub fn with<T>(&self, change: impl FnOnce(&mut FakeState) -> T) -> T {
        change(&mut self.state.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.with(|s| s.requests.clone())
    }

    /// Adds `count` tickets with ids from `first`, updated a minute apart
    /// starting at `start` (`2024-03-01T00:00:00Z` style, minutes added).
    pub fn add_tickets(&self, first: i64, count: i64, status: i64) {
        self.with(|s| {
            for id in first..first + count {
                let minutes = id;
                let at = format!(
                    "2024-03-{:02}T{:02}:{:02}:00Z",
                    1 + minutes / 1440,
                    (minutes / 60) % 24,
                    minutes % 60
                );
                s.tickets.insert(id, ticket(id, status, &at));
            }
        });
    }
}

impl Drop for FakeFreshservice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        pair.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn answer(state: &Mutex<FakeState>, addr: SocketAddr, request: tiny_http::Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let (path, query) = (path.to_string(), query.to_string());
    let authorized = request.headers().iter().any(|h| {
        h.field.equiv("Authorization")
            && h.value.as_str()
                == format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:X"))
                )
    });
    let mut delay = None;
    let (status, body, headers) = {
        let mut s = state.lock().unwrap();
        let full = format!("{path}?{query}");
        if let Some((pattern, wait, times)) = s.slow.as_mut() {
            if *times > 0 && full.contains(pattern.as_str()) {
                *times -= 1;
                delay = Some(*wait);
            }
        }
        let failing = s
            .fail
            .iter()
            .position(|(pattern, times)| *times > 0 && full.contains(pattern.as_str()));
        let result = if s.unauthorized || !authorized {
            (
                401,
                json!({"code": "access_denied", "message": "You are not authorized to perform this action."}),
                vec![],
            )
        } else if s.rate_limited > 0 {
            s.rate_limited -= 1;
            (
                429,
                json!({"message": "rate limited"}),
                vec![("Retry-After", s.retry_after.to_string())],
            )
        } else if let Some(index) = failing {
            let times = &mut s.fail[index].1;
            if *times != u32::MAX {
                *times -= 1;
            }
            (500, json!({"message": "internal error"}), vec![])
        } else {
            route(&s, addr, &path, &query)
        };
        s.requests.push(Logged {
            at: Instant::now(),
            path: path.clone(),
            query: query.clone(),
            status: result.0,
        });
        let kind = if path == "/api/v2/tickets" || path == "/api/v2/tickets/filter" {
            0
        } else if path.starts_with("/api/v2/tickets/") {
            1
        } else {
            2
        };
        let remaining = match kind {
            0 => s.listing_remaining.or(s.remaining),
            _ => s.remaining,
        }
        .unwrap_or(100);
        let total = s.totals.map_or(6000, |totals| totals[kind]);
        let mut headers = result.2;
        headers.push(("X-RateLimit-Remaining", remaining.to_string()));
        headers.push(("X-RateLimit-Total", total.to_string()));
        (result.0, result.1, headers)
    };
    if let Some(delay) = delay {
        // time is what is tested here: a slow PSA, answering after `delay`,
        // against Codex's request timeout.
        std::thread::sleep(delay);
    }
    let mut response = tiny_http::Response::from_string(body.to_string()).with_status_code(status);
    for (name, value) in headers {
        response
            .add_header(tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap());
    }
    let _ = request.respond(response);
}

/// Page `page` (from 1) of `per_page` tickets.
fn page_of(tickets: &[&Value], page: usize, per_page: usize) -> Vec<Value> {
    tickets
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|t| (*t).clone())
        .collect()
}

fn route(
    s: &FakeState,
    addr: SocketAddr,
    path: &str,
    query: &str,
) -> (u16, Value, Vec<(&'static str, String)>) {
    let page: usize = query_param(query, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    if path == "/api/v2/agents/me" {
        return (200, json!({"agent": {"id": 1}}), vec![]);
    }
    let workspace = query_param(query, "workspace_id");
    if workspace.is_some() && s.no_workspaces {
        return (
            400,
            json!({"description": "Validation failed", "errors": [{"field": "workspace_id",
                   "message": "Unexpected/invalid field in request", "code": "invalid_field"}]}),
            vec![],
        );
    }
    // Without workspace_id, the primary workspace (1) only; 0 is all.
    let wanted_workspace: u64 = workspace.and_then(|w| w.parse().ok()).unwrap_or(1);
    let in_workspace = |t: &Value| {
        wanted_workspace == 0 || t["workspace_id"].as_u64().unwrap_or(1) == wanted_workspace
    };
    if path == "/api/v2/tickets/filter" {
        let expression = decode(query_param(query, "query").unwrap_or_default());
        let wanted: HashSet<i64> = expression
            .split("status:")
            .skip(1)
            .filter_map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .collect();
        let matching: Vec<&Value> = s
            .tickets
            .values()
            .filter(|t| wanted.contains(&t["status"].as_i64().unwrap_or_default()))
            .filter(|t| in_workspace(t))
            .collect();
        let per_page = 30;
        let slice = page_of(&matching, page, per_page);
        let total = matching.len() as u64 + s.filter_total_extra;
        return (200, json!({"tickets": slice, "total": total}), vec![]);
    }
    if let Some(id) = path.strip_prefix("/api/v2/tickets/") {
        let Ok(id) = id.parse::<i64>() else {
            return (404, json!({"message": "not found"}), vec![]);
        };
        return match s.tickets.get(&id) {
            Some(ticket) => (200, json!({"ticket": ticket}), vec![]),
            None => (
                404,
                json!({"code": "access_denied", "message": "Ticket not found"}),
                vec![],
            ),
        };
    }
    if path == "/api/v2/tickets" {
        let per_page: usize = query_param(query, "per_page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(30)
            .min(100);
        let since = query_param(query, "updated_since").map(decode);
        let source = match query_param(query, "filter") {
            Some("deleted") => &s.deleted,
            Some("spam") => &s.spam,
            Some(other) => {
                return (
                    400,
                    json!({"message": format!("unknown filter {other}")}),
                    vec![],
                );
            }
            None => &s.tickets,
        };
        let mut matching: Vec<&Value> = source
            .values()
            .filter(|t| in_workspace(t))
            .filter(|t| {
                since
                    .as_deref()
                    .is_none_or(|since| t["updated_at"].as_str().unwrap_or_default() >= since)
            })
            .collect();
        matching.sort_by(|a, b| {
            (a["updated_at"].as_str(), a["id"].as_i64())
                .cmp(&(b["updated_at"].as_str(), b["id"].as_i64()))
        });
        if query_param(query, "order_type") == Some("desc") {
            matching.reverse();
        }
        let slice = page_of(&matching, page, per_page);
        let mut headers = vec![];
        if page * per_page < matching.len() || s.endless {
            let host = s.link_host.clone().unwrap_or_else(|| addr.to_string());
            let others: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("page="))
                .collect();
            headers.push((
                "Link",
                format!(
                    "<http://{host}{path}?{}&page={}>; rel=\"next\"",
                    others.join("&"),
                    page + 1
                ),
            ));
        }
        return (200, json!({"tickets": slice}), headers);
    }
    (404, json!({"message": format!("no route {path}")}), vec![])
}
