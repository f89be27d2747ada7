//! Routes: `/webhooks/health`, `/webhooks/test`, `/webhooks/<provider>/ticket`
//! and the read API under `/api/` (`api.rs`), each answered with and without
//! `[server] base_path`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tiny_http::{Method, Request};

use super::api::{self, ReadApi};
use super::auth::RateLimiter;
use super::request;
use super::response::{ApiError, json_response, redirect, send, text_response};
use super::signature::{self, Seen, SeenIds};
use super::status_page;
use crate::config::{Config, SignatureScheme};
use crate::delivery::{self, Refusal};
use crate::metrics::{self, RouteKind, Scraped};
use crate::psa::Provider;
use crate::status::StatusBoard;
use crate::store::{JournalEntry, Outcome, StoreClient};
use crate::timestamp;

/// The configuration in force and what is built from it; replaced whole
/// when `codex.conf` is reloaded, so a request sees one version throughout.
pub struct Current {
    pub config: Arc<Config>,
    pub limiter: Arc<RateLimiter>,
}

/// What every worker shares.
pub struct AppState {
    current: RwLock<Arc<Current>>,
    pub store: StoreClient,
    /// What health reports.
    pub status: Arc<StatusBoard>,
    /// When a stop began: requests read from then on are refused.
    drain_started: OnceLock<Instant>,
    /// Requests being handled, not counting those refused while draining.
    in_flight: AtomicUsize,
    /// The read API's connections and token verifier.
    api: ReadApi,
    /// Standard Webhooks message ids seen lately (kept across reloads).
    seen_ids: SeenIds,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: StoreClient, status: Arc<StatusBoard>) -> AppState {
        AppState {
            current: RwLock::new(Arc::new(Current {
                limiter: Arc::new(RateLimiter::new(config.webhooks.rate_limit_per_minute)),
                config: config.clone(),
            })),
            api: ReadApi::new(&config.database.url, store.health_handle()),
            store,
            status,
            drain_started: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            seen_ids: SeenIds::default(),
        }
    }

    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a reloaded configuration in force for the next request; the
    /// rate limiter's buckets are kept unless the limit changed.
    pub fn replace(&self, config: Arc<Config>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let limiter = if current.config.webhooks.rate_limit_per_minute
            == config.webhooks.rate_limit_per_minute
        {
            current.limiter.clone()
        } else {
            Arc::new(RateLimiter::new(config.webhooks.rate_limit_per_minute))
        };
        *current = Arc::new(Current { config, limiter });
    }

    /// Starts refusing requests read from now on; returns when that began.
    pub(super) fn begin_drain(&self) -> Instant {
        *self.drain_started.get_or_init(Instant::now)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request as in flight while alive.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicUsize) -> InFlight<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handler waits this long for its commit. Freshservice gives up after
/// about 15 s; answering 503 before that lets it retry cleanly.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Where a request goes.
pub(super) enum Route {
    Health,
    Test,
    Ticket(Provider),
    /// The read API; the path without the base path.
    Api(String),
    /// Prometheus metrics.
    Metrics,
    /// The status page.
    Status,
    /// `/`: redirects to the status page.
    Root,
}

impl Route {
    fn kind(&self) -> RouteKind {
        match self {
            Route::Health => RouteKind::Health,
            Route::Test => RouteKind::Test,
            Route::Ticket(_) => RouteKind::Delivery,
            Route::Api(_) => RouteKind::Api,
            Route::Metrics | Route::Status | Route::Root => RouteKind::Operator,
        }
    }
}

/// Answers one request. Its head passed the gate (`gate.rs`) before its
/// body was read: the route, method, rate limit, secret, allowlist, content
/// type and declared length are settled.
pub fn handle(app: &AppState, mut request: Request) {
    let state = app;
    let started = Instant::now();
    if state
        .drain_started
        .get()
        .is_some_and(|drain| request.received_at() >= *drain)
    {
        // The connection stays open: a client that reconnected now could be
        // caught in the listener's queue when it closes.
        let refusal = ApiError::new(503, "Codex is shutting down; retry later")
            .header("Retry-After", "5")
            .into_response();
        if let Err(error) = send(request, refusal, false) {
            log::debug!("could not send the response: {error}");
        }
        return;
    }
    let _in_flight = InFlight::new(&state.in_flight);
    let current = state.current();
    let state = &Scope {
        store: &state.store,
        config: &current.config,
        status: &state.status,
        seen_ids: &state.seen_ids,
    };
    let head = tiny_http::Head {
        method: request.method(),
        url: request.url(),
        http_version: request.http_version(),
        headers: request.headers(),
        remote_addr: request.remote_addr().copied(),
    };
    let client_ip = request::client_ip(state.config, &head);
    let host = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str());
    let url = request.url().to_string();
    let target = request::request_path(&url, host);
    log::debug!(
        "{} {} from {client_ip}",
        request.method(),
        target.as_ref().map_or("-", |p| p)
    );

    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or_default();
    let route = target.and_then(|path| route(&state.config.server.base_path, path));
    let kind = route.as_ref().map_or(RouteKind::Other, Route::kind);
    let result = match route {
        Err(error) => Err(error),
        Ok(Route::Root) => match request.method() {
            Method::Get | Method::Head => {
                let location = format!("{}/status", state.config.server.base_path);
                Ok(redirect(&location))
            }
            _ => Err(method_not_allowed("GET")),
        },
        Ok(Route::Status) => match request.method() {
            Method::Get | Method::Head => {
                let mut status = state.status.status();
                status.activity = match app.api.read_activity() {
                    Ok(activity) => Some(activity),
                    Err(error) => {
                        log::debug!("status page: cannot read the activity: {error}");
                        None
                    }
                };
                Ok(text_response(
                    200,
                    "text/html; charset=utf-8",
                    status_page::render(&status),
                ))
            }
            _ => Err(method_not_allowed("GET")),
        },
        Ok(Route::Metrics) => match request.method() {
            Method::Get | Method::Head => Ok(text_response(
                200,
                metrics::CONTENT_TYPE,
                scrape(app, state),
            )),
            _ => Err(method_not_allowed("GET")),
        },
        Ok(Route::Api(path)) => match request.method() {
            Method::Get | Method::Head => {
                api::answer(&app.api, state.config, &request, &path, query)
                    .map(|body| json_response(200, &body))
            }
            _ => Err(method_not_allowed("GET")),
        },
        Ok(Route::Health) => match request.method() {
            Method::Get | Method::Head => Ok(json_response(200, &health(state))),
            _ => Err(method_not_allowed("GET")),
        },
        Ok(Route::Test) => match request.method() {
            Method::Post => verify_test_body(state, &mut request).map(|()| {
                json_response(
                    200,
                    &json!({
                        "status": "ok",
                        "message": "Webhook authentication successful",
                        "source_ip": client_ip.to_string(),
                        "timestamp": timestamp::now(),
                    }),
                )
            }),
            _ => Err(method_not_allowed("POST")),
        },
        Ok(Route::Ticket(provider)) => match request.method() {
            Method::Post => {
                let outcome = read_body(&mut request, state.config.server.max_body_bytes)
                    .and_then(|body| deliver_signed(state, &request, provider, client_ip, body));
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                match &outcome {
                    Ok(delivered) => metrics::metrics().delivery(
                        provider,
                        delivered.body["status"].as_str().unwrap_or("accepted"),
                        delivered.status,
                    ),
                    Err(error) => metrics::metrics().delivery(provider, "refused", error.status),
                }
                match &outcome {
                    Ok(delivered) => log::info!(
                        "{provider} ticket={} event={} outcome={} status={} {elapsed:.1}ms ip={client_ip}",
                        delivered.body["ticket_id"],
                        delivered.event,
                        delivered.body["status"].as_str().unwrap_or("-"),
                        delivered.status,
                    ),
                    Err(error) => log::warn!(
                        "{provider} ticket=- event=- outcome=refused status={} {elapsed:.1}ms ip={client_ip}: {}",
                        error.status,
                        error.message()
                    ),
                }
                outcome.map(|delivered| json_response(delivered.status, &delivered.body))
            }
            _ => Err(method_not_allowed("POST")),
        },
    };
    let response = result.unwrap_or_else(ApiError::into_response);
    if let Err(error) = send(request, response, false) {
        log::debug!("could not send the response to {client_ip}: {error}");
    }
    metrics::metrics().request(kind, started.elapsed());
}

/// The metrics text, with what is read at scrape time: the database's
/// state from the writer, coverage from the status board, the journal's
/// size from a read connection.
fn scrape(app: &AppState, state: &Scope) -> String {
    let status = state.status.status();
    let coverage = status
        .providers
        .iter()
        .map(|p| (p.provider, p.stored.as_ref().and_then(|s| s.coverage())))
        .collect();
    let journal_rows = match app.api.read_journal_rows() {
        Ok(rows) => Some(rows),
        Err(error) => {
            log::debug!("metrics: cannot count the journal: {error}");
            None
        }
    };
    metrics::metrics().render(&Scraped {
        database_up: state.store.health().problem().is_none(),
        coverage,
        journal_rows,
    })
}

/// What one request is handled with: the configuration in force when it
/// began, whatever a reload does meanwhile.
struct Scope<'a> {
    store: &'a StoreClient,
    config: &'a Config,
    status: &'a StatusBoard,
    seen_ids: &'a SeenIds,
}

pub(super) fn route(base_path: &str, path: &str) -> Result<Route, ApiError> {
    let path = if !base_path.is_empty()
        && (path == base_path || path.starts_with(&format!("{base_path}/")))
    {
        &path[base_path.len()..]
    } else {
        path
    };
    let path = path.trim_end_matches('/');
    if api::is_api_path(path) {
        return Ok(Route::Api(path.to_string()));
    }
    match path {
        "/metrics" => return Ok(Route::Metrics),
        "/status" => return Ok(Route::Status),
        "" => return Ok(Route::Root),
        "/webhooks/health" => return Ok(Route::Health),
        "/webhooks/test" => return Ok(Route::Test),
        _ => {}
    }
    if let Some(name) = path
        .strip_prefix("/webhooks/")
        .and_then(|rest| rest.strip_suffix("/ticket"))
    {
        return match Provider::from_name(name) {
            Some(provider) => Ok(Route::Ticket(provider)),
            None => Err(
                ApiError::new(404, format!("provider '{name}' is not supported"))
                    .with("supported_providers", supported_providers()),
            ),
        };
    }
    Err(ApiError::new(404, format!("no endpoint at {path}"))
        .with("endpoints", endpoints(base_path)))
}

pub(super) fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(405, format!("use {allow} for this endpoint")).header("Allow", allow)
}

fn supported_providers() -> Vec<&'static str> {
    Provider::ALL.iter().map(|p| p.as_str()).collect()
}

fn endpoints(base_path: &str) -> Value {
    let mut endpoints = serde_json::Map::new();
    endpoints.insert(
        "health".into(),
        format!("{base_path}/webhooks/health").into(),
    );
    endpoints.insert("test".into(), format!("{base_path}/webhooks/test").into());
    for provider in Provider::ALL {
        endpoints.insert(
            provider.as_str().into(),
            format!("{base_path}/webhooks/{provider}/ticket").into(),
        );
    }
    Value::Object(endpoints)
}

/// `/webhooks/health`: what the configuration in force says about
/// webhooks and endpoints, and the service's status (database, polling,
/// coverage), published by the writer and the pollers: a writer stuck on
/// a frozen database cannot delay this answer.
fn health(state: &Scope) -> Value {
    let config = state.config;
    let mut body = json!({
        "webhooks_enabled": config.webhooks.enabled,
        "secret_configured": !config.webhooks.secrets.is_empty(),
        "signature": config.webhooks.signature.as_str(),
        "ip_allowlist_enabled": !config.webhooks.allowed_ips.is_empty(),
        "supported_providers": supported_providers(),
        "endpoints": endpoints(&config.server.base_path),
        "timestamp": timestamp::now(),
    });
    if let Some(map) = body.as_object_mut() {
        map.extend(state.status.status().health_fields());
    }
    body
}

/// The body, which tiny_http has read already (within `[server]
/// body_timeout`); one over `max` was left unread or cut short, and its
/// connection is closed after the answer.
fn read_body(request: &mut Request, max: usize) -> Result<Vec<u8>, ApiError> {
    if request.body_length().is_some_and(|n| n > max) {
        return Err(body_too_large(max));
    }
    // Taken, not copied: the body held is the one the in-flight budget
    // counted ([server] max_inflight_body_bytes).
    let body = request.take_body();
    if body.len() > max {
        return Err(body_too_large(max));
    }
    Ok(body)
}

/// The answer to a body over `[server] max_body_bytes`.
pub(super) fn body_too_large(max: usize) -> ApiError {
    ApiError::new(
        413,
        format!("the body is larger than {max} bytes ([server] max_body_bytes)"),
    )
    .with("max_body_bytes", max)
}

/// Checks the body's signature under `[webhooks] signature`; a Standard
/// Webhooks delivery returns its message.
fn verify_signature(
    state: &Scope,
    request: &Request,
    body: &[u8],
) -> Result<Option<signature::Message>, ApiError> {
    let webhooks = &state.config.webhooks;
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
    };
    signature::verify(
        webhooks.signature,
        &webhooks.signing_secrets,
        &header,
        body,
        signature::unix_now(),
    )
    .map_err(|error| ApiError::from_signature(&error))
}

/// `/webhooks/test` with a signature scheme: its body (often empty) must
/// be signed like a delivery's; the id of a Standard Webhooks test is not
/// remembered.
fn verify_test_body(state: &Scope, request: &mut Request) -> Result<(), ApiError> {
    if state.config.webhooks.signature == SignatureScheme::None {
        return Ok(());
    }
    let body = read_body(request, state.config.server.max_body_bytes)?;
    verify_signature(state, request, &body).map(|_| ())
}

/// Verifies the body's signature, then delivers it; a Standard Webhooks
/// message whose id was stored already is answered as a duplicate and not
/// written again.
fn deliver_signed(
    state: &Scope,
    request: &Request,
    provider: Provider,
    client_ip: IpAddr,
    body: Vec<u8>,
) -> Result<Delivered, ApiError> {
    let Some(message) = verify_signature(state, request, &body)? else {
        return deliver(state, provider, client_ip, body);
    };
    match state.seen_ids.begin(&message, signature::unix_now()) {
        Seen::New => {}
        Seen::Done => {
            return Ok(Delivered {
                status: 200,
                body: json!({
                    "status": "duplicate",
                    "webhook_id": message.id,
                    "provider": provider.as_str(),
                }),
                event: "-",
            });
        }
        busy => return Err(ApiError::from_seen(busy)),
    }
    let outcome = deliver(state, provider, client_ip, body);
    // Kept as seen once the delivery is in the database (stored, or
    // journaled and refused); a failure the sender should retry forgets it.
    let stored = match &outcome {
        Ok(_) => true,
        Err(error) => error.status < 500,
    };
    state.seen_ids.finish(&message, stored);
    outcome
}

/// What a delivery came to: the answer, and the event for the log line.
struct Delivered {
    status: u16,
    body: Value,
    event: &'static str,
}

/// Journals and applies one delivery, as `delivery::prepare` reads it.
fn deliver(
    state: &Scope,
    provider: Provider,
    client_ip: IpAddr,
    body: Vec<u8>,
) -> Result<Delivered, ApiError> {
    let received_at = timestamp::now();
    if state.config.webhooks.log_payloads {
        log::info!(
            "{provider} payload from {client_ip}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let journal = JournalEntry {
        provider,
        received_at,
        client_ip: client_ip.to_string(),
        event: None,
        ticket_id: None,
        error: None,
        outcome: None,
        body,
    };
    let prepared = delivery::prepare(provider, state.config, journal);
    if let Some(refusal) = &prepared.refusal {
        let mut error = ApiError::new(400, refusal.message());
        if let Refusal::NotJson { line, column, .. } = refusal {
            error = error.with("line", *line).with("column", *column);
        }
        if let Some(id) = prepared.ticket_id {
            error = error.with("ticket_id", id);
        }
        if let Refusal::Nul { field, .. } = refusal {
            error = error.with("field", *field);
        }
        return match state.store.write(prepared.item, COMMIT_WAIT) {
            Ok(_) => Err(error),
            Err(store_error) => Err(ApiError::from_store(&store_error)),
        };
    }
    let Some(event) = prepared.item.event.as_ref() else {
        unreachable!("a delivery that was not refused carries its event")
    };
    let ticket_id = event.ticket_id;
    let event_name = event.kind.as_str();
    for warning in &prepared.warnings {
        log::warn!("{provider} ticket={ticket_id}: {warning}");
    }
    let event_updated_at = event.updated_at.clone();
    let outcome = state
        .store
        .write(prepared.item, COMMIT_WAIT)
        .map_err(|e| ApiError::from_store(&e))?;
    let mut body = json!({
        "status": outcome.as_str(),
        "ticket_id": ticket_id,
        "provider": provider.as_str(),
    });
    let map = body
        .as_object_mut()
        .expect("a json! object literal is an object");
    match &outcome {
        Outcome::Updated { changes, .. } => {
            map.insert("changes".into(), json!(changes));
        }
        Outcome::Deleted { new_status, .. } => {
            map.insert("new_status".into(), json!(new_status));
        }
        Outcome::Ignored { reason } => {
            map.insert("reason".into(), json!(reason));
        }
        Outcome::Stale { stored_updated_at } => {
            map.insert("stored_updated_at".into(), json!(stored_updated_at));
            map.insert("event_updated_at".into(), json!(event_updated_at));
        }
        Outcome::Created | Outcome::Unchanged | Outcome::Rejected => {}
    }
    if !prepared.warnings.is_empty() {
        map.insert("warnings".into(), json!(prepared.warnings));
    }
    let status = if outcome == Outcome::Created {
        201
    } else {
        200
    };
    Ok(Delivered {
        status,
        body,
        event: event_name,
    })
}
