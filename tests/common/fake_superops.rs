//! A fake SuperOps GraphQL API on an ephemeral port. It reads each POST's
//! operation (`getTicketList`, `getTicket`) and variables and answers as
//! SuperOps does: `listInfo` paging (at most 100 a page) with `hasMore` and
//! `totalCount` as a string, tickets sorted by `updatedTime`, times without
//! an offset, JSON scalars for `requester`/`technician`/`techGroup`/
//! `client`, errors as HTTP 200 with `errors[].extensions.clientError`
//! (`rate_limit_exceeded`, `entity_does_not_exist`), a 401 for a bad token,
//! and a query error for a sub-selection of a JSON scalar. It records every
//! request it answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TOKEN: &str = "fake-superops-token-7";
pub const SUBDOMAIN: &str = "acme";

/// A request the fake answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub operation: String,
    pub variables: Value,
    pub status: u16,
    /// The clientError code answered, if any.
    pub error: Option<String>,
}

/// What the fake holds, and the faults to inject.
#[derive(Default)]
pub struct FakeState {
    /// Tickets by id, as `getTicketList` and `getTicket` return them.
    pub tickets: BTreeMap<i64, Value>,
    pub requests: Vec<Logged>,
    /// The next N requests get `rate_limit_exceeded` (HTTP 200) with
    /// `Retry-After: 1`.
    pub rate_limited: u32,
    /// Every request is answered 401.
    pub unauthorized: bool,
    /// `getTicketList` pages answered 500, always.
    pub failing_pages: Vec<u64>,
    /// `getTicket` is answered 500, always.
    pub failing_lookups: bool,
}

pub struct FakeSuperops {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A ticket as SuperOps returns it; `updated` is offset-less
/// (`2024-03-01T10:00:00`).
pub fn ticket(id: i64, status: &str, updated: &str) -> Value {
    json!({
        "ticketId": id.to_string(),
        "displayId": format!("T{id}"),
        "subject": format!("SuperOps ticket {id}"),
        "status": status,
        "priority": "Medium",
        "requester": {"userId": (5000 + id).to_string(), "name": format!("Requester {id}")},
        "technician": {"userId": "77", "name": "Tech"},
        "techGroup": {"groupId": "12", "name": "L1"},
        "client": {"accountId": "4001", "name": "Acme"},
        "site": {"id": "1", "name": "HQ"},
        "createdTime": "2024-01-01T00:00:00",
        "updatedTime": updated,
    })
}

impl FakeSuperops {
    pub fn start() -> FakeSuperops {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("fake superops");
        let addr = server.server_addr().to_ip().expect("ip address");
        let state = Arc::new(Mutex::new(FakeState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
                        answer(&state, request);
                    }
                }
            })
        };
        FakeSuperops {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The `[superops]` section pointing Codex here (tickets are dated
    /// 2024, so the first sync looks back ten years).
    pub fn config(&self) -> String {
        format!(
            "[superops]\napi_url = http://{}/msp\nsubdomain = {SUBDOMAIN}\napi_token = {TOKEN}\nmax_requests_per_minute = 800\ninitial_sync_days = 3650\n",
            self.addr
        )
    }

    pub fn with<T>(&self, change: impl FnOnce(&mut FakeState) -> T) -> T {
        change(&mut self.state.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.with(|s| s.requests.clone())
    }

    /// Requests of one operation.
    pub fn calls(&self, operation: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }

    /// Adds `count` open tickets with ids from `first`, updated a minute
    /// apart from 2024-03-01T00:00:00 (minute = id).
    pub fn add_tickets(&self, first: i64, count: i64) {
        self.with(|s| {
            for id in first..first + count {
                s.tickets.insert(id, ticket(id, "Open", &minute(id)));
            }
        });
    }
}

/// `2024-03-01T00:00:00` plus `n` minutes, offset-less.
pub fn minute(n: i64) -> String {
    format!(
        "2024-03-{:02}T{:02}:{:02}:00",
        1 + n / 1440,
        (n / 60) % 24,
        n % 60
    )
}

impl Drop for FakeSuperops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn client_error(code: &str, message: &str) -> Value {
    json!({"data": null, "errors": [{
        "message": message,
        "extensions": {"clientError": [{"code": code, "param": {}}]}
    }]})
}

fn answer(state: &Mutex<FakeState>, mut request: tiny_http::Request) {
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let authorized = header("Authorization").as_deref() == Some(&format!("Bearer {TOKEN}"))
        && header("CustomerSubDomain").as_deref() == Some(SUBDOMAIN);
    let mut text = String::new();
    let _ = request.as_reader().read_to_string(&mut text);
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let query = body["query"].as_str().unwrap_or_default().to_string();
    let operation = if query.contains("getTicketList") {
        "getTicketList"
    } else if query.contains("getTicket") {
        "getTicket"
    } else {
        "unknown"
    };
    let variables = body["variables"].clone();
    let mut headers: Vec<(&str, String)> = Vec::new();
    let (status, answer) = {
        let mut s = state.lock().unwrap();
        let result = if s.unauthorized
            || !authorized
            || request.method() != &tiny_http::Method::Post
        {
            (401, json!({"message": "Unauthorized"}))
        } else if s.rate_limited > 0 {
            s.rate_limited -= 1;
            headers.push(("Retry-After", "1".to_string()));
            (
                200,
                client_error("rate_limit_exceeded", "Rate limit exceeded"),
            )
        } else if ["requester {", "technician {", "techGroup {", "client {"]
            .iter()
            .any(|sub| query.contains(sub))
        {
            (
                200,
                json!({"errors": [{"message": "Field of type JSON must not have a selection of subfields"}]}),
            )
        } else {
            route(&s, operation, &variables)
        };
        s.requests.push(Logged {
            at: Instant::now(),
            operation: operation.to_string(),
            variables: variables.clone(),
            status: result.0,
            error: result.1["errors"][0]["extensions"]["clientError"][0]["code"]
                .as_str()
                .map(str::to_string),
        });
        result
    };
    let mut response =
        tiny_http::Response::from_string(answer.to_string()).with_status_code(status);
    response.add_header(
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap(),
    );
    for (name, value) in headers {
        response
            .add_header(tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap());
    }
    let _ = request.respond(response);
}

fn route(s: &FakeState, operation: &str, variables: &Value) -> (u16, Value) {
    let input = &variables["input"];
    match operation {
        "getTicketList" => {
            let page = input["page"].as_u64().unwrap_or(1).max(1);
            let size = input["pageSize"].as_u64().unwrap_or(10);
            if size > 100 {
                return (
                    200,
                    client_error("invalid_input", "pageSize must be at most 100"),
                );
            }
            if s.failing_pages.contains(&page) {
                return (500, json!({"message": "internal error"}));
            }
            let descending = input["sort"][0]["attribute"] == "updatedTime"
                && input["sort"][0]["order"] == "DESC";
            let mut all: Vec<&Value> = s.tickets.values().collect();
            all.sort_by(|a, b| {
                let key = |t: &Value| {
                    (
                        t["updatedTime"].as_str().unwrap_or_default().to_string(),
                        t["ticketId"]
                            .as_str()
                            .unwrap_or_default()
                            .parse::<i64>()
                            .unwrap_or(0),
                    )
                };
                key(a).cmp(&key(b))
            });
            if descending {
                all.reverse();
            }
            let start = ((page - 1) * size) as usize;
            let tickets: Vec<Value> = all
                .iter()
                .skip(start)
                .take(size as usize)
                .map(|t| (*t).clone())
                .collect();
            let has_more = start + tickets.len() < all.len();
            (
                200,
                json!({"data": {"getTicketList": {
                    "tickets": tickets,
                    "listInfo": {"page": page, "pageSize": size, "hasMore": has_more,
                                 "totalCount": all.len().to_string()}
                }}}),
            )
        }
        "getTicket" => {
            if s.failing_lookups {
                return (500, json!({"message": "internal error"}));
            }
            let id: i64 = input["ticketId"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            match s.tickets.get(&id) {
                Some(ticket) => (200, json!({"data": {"getTicket": ticket}})),
                None => (
                    200,
                    json!({"data": {"getTicket": null}, "errors": [{
                        "message": "Ticket does not exist",
                        "extensions": {"clientError": [{"code": "entity_does_not_exist",
                                                        "param": {"ticketId": id.to_string()}}]}
                    }]}),
                ),
            }
        }
        _ => (200, json!({"errors": [{"message": "unknown operation"}]})),
    }
}
