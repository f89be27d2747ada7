//! Routes: `/webhooks/health`, `/webhooks/test`, `/webhooks/<provider>/ticket`,
//! each answered with and without `[server] base_path`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use std::io::Read;

use serde_json::{Value, json};
use tiny_http::{Method, Request};

use super::auth::{self, RateLimiter};
use super::response::{ApiError, json_response, send};
use super::signature::{self, Seen, SeenIds};
use crate::config::{Config, SignatureScheme};
use crate::psa::{Field, Provider, TicketEvent, Value as PsaValue, lenient_json, webhook_body};
use crate::status::StatusBoard;
use crate::store::{JournalEntry, Outcome, StoreClient, WriteItem};
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
    /// Standard Webhooks message ids seen lately (kept across reloads).
    seen_ids: SeenIds,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: StoreClient, status: Arc<StatusBoard>) -> AppState {
        AppState {
            current: RwLock::new(Arc::new(Current {
                limiter: Arc::new(RateLimiter::new(config.webhooks.rate_limit_per_minute)),
                config,
            })),
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

enum Route {
    Health,
    Test,
    Ticket(Provider),
}

/// Answers one request.
pub fn handle(state: &AppState, mut request: Request) {
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
        limiter: &current.limiter,
        status: &state.status,
        seen_ids: &state.seen_ids,
    };
    let peer = request
        .remote_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip());
    let forwarded: Vec<&str> = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("X-Forwarded-For"))
        .map(|h| h.value.as_str())
        .collect();
    let client_ip = auth::client_ip(peer, &forwarded, &state.config.server.trusted_proxies);
    let url = request.url().to_string();
    let path = url.split(['?', '#']).next().unwrap_or_default();
    log::debug!("{} {path} from {client_ip}", request.method());

    let result = match route(&state.config.server.base_path, path) {
        Err(error) => Err(error),
        Ok(Route::Health) => match request.method() {
            Method::Get | Method::Head => Ok(json_response(200, &health(state))),
            _ => Err(method_not_allowed("GET")),
        },
        Ok(Route::Test) => match request.method() {
            Method::Post => authorize(state, &request, client_ip)
                .and_then(|()| verify_test_body(state, &mut request))
                .map(|()| {
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
                let outcome = authorize(state, &request, client_ip)
                    .and_then(|()| check_content_type(&request))
                    .and_then(|()| read_body(&mut request, state.config.server.max_body_bytes))
                    .and_then(|body| deliver_signed(state, &request, provider, client_ip, body));
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
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
}

/// What one request is handled with: the configuration in force when it
/// began, whatever a reload does meanwhile.
struct Scope<'a> {
    store: &'a StoreClient,
    config: &'a Config,
    limiter: &'a RateLimiter,
    status: &'a StatusBoard,
    seen_ids: &'a SeenIds,
}

fn route(base_path: &str, path: &str) -> Result<Route, ApiError> {
    let path = if !base_path.is_empty()
        && (path == base_path || path.starts_with(&format!("{base_path}/")))
    {
        &path[base_path.len()..]
    } else {
        path
    };
    let path = path.trim_end_matches('/');
    match path {
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

fn method_not_allowed(allow: &'static str) -> ApiError {
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

/// The checks every webhook request passes, in this order: enabled, rate
/// limit (counting every request, so guessing secrets is throttled too),
/// secret, allowlist.
fn authorize(state: &Scope, request: &Request, client_ip: IpAddr) -> Result<(), ApiError> {
    let webhooks = &state.config.webhooks;
    if !webhooks.enabled {
        return Err(ApiError::new(503, "Webhooks are disabled").with(
            "detail",
            "set [webhooks] enabled = true in codex.conf and restart Codex",
        ));
    }
    if let Err(wait) = state.limiter.check(client_ip) {
        return Err(ApiError::new(429, "Too many requests")
            .with(
                "detail",
                format!(
                    "more than {} requests a minute from {client_ip}",
                    webhooks.rate_limit_per_minute
                ),
            )
            .header("Retry-After", wait.to_string()));
    }
    let given = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Webhook-Secret"))
        .map(|h| h.value.as_str());
    match given {
        // With only a signature scheme configured, the signature authenticates.
        _ if webhooks.secrets.is_empty() && webhooks.signature != SignatureScheme::None => {}
        Some(given) if auth::secret_matches(given, &webhooks.secrets) => {}
        Some(_) => {
            return Err(ApiError::new(401, "Unauthorized").with(
                "detail",
                "the X-Webhook-Secret header does not match the configured secret",
            ));
        }
        None => {
            let has_authorization = request
                .headers()
                .iter()
                .any(|h| h.field.equiv("Authorization"));
            let detail = if has_authorization {
                "send the secret in the X-Webhook-Secret header, not Authorization"
            } else {
                "the X-Webhook-Secret header is missing"
            };
            return Err(ApiError::new(401, "Unauthorized").with("detail", detail));
        }
    }
    if !webhooks.allowed_ips.is_empty() && !auth::is_in(client_ip, &webhooks.allowed_ips) {
        return Err(ApiError::new(403, "IP not allowed").with(
            "detail",
            format!("{client_ip} is not in [webhooks] allowed_ips"),
        ));
    }
    Ok(())
}

/// JSON, or a missing content type; anything else is refused.
fn check_content_type(request: &Request) -> Result<(), ApiError> {
    let Some(header) = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
    else {
        return Ok(());
    };
    let mime = header
        .value
        .as_str()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") || mime == "text/json" {
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            format!("Content-Type {mime} is not JSON; send Content-Type: application/json"),
        ))
    }
}

/// The body, which tiny_http has read already (within `[server]
/// body_timeout`); one over `max` was left unread or cut short, and its
/// connection is closed after the answer.
fn read_body(request: &mut Request, max: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            format!("the body is larger than {max} bytes ([server] max_body_bytes)"),
        )
        .with("max_body_bytes", max)
    };
    if request.body_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(1024).min(max));
    request
        .as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|error| ApiError::new(400, format!("could not read the body: {error}")))?;
    if body.len() > max {
        return Err(too_large());
    }
    Ok(body)
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

/// Parses, normalizes, journals and applies one delivery.
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
    let mut journal = JournalEntry {
        provider,
        received_at: received_at.clone(),
        client_ip: client_ip.to_string(),
        event: None,
        ticket_id: None,
        error: None,
        outcome: None,
        body,
    };
    let parsed = lenient_json::parse(&journal.body).map_err(|e| {
        ApiError::new(
            400,
            format!("the body is not JSON, even leniently read: {e}"),
        )
        .with("line", e.line)
        .with("column", e.column)
    });
    // Ids a parsed body carries for something other than the ticket (a
    // requester's), which the scan below must not take for the ticket's.
    let mut foreign = Vec::new();
    let normalized = parsed.and_then(|value| {
        provider
            .normalize_webhook(&value, state.config, &received_at)
            .map_err(|rejection| {
                journal.event = rejection.event.clone();
                foreign = webhook_body::foreign_ids(&value);
                ApiError::new(400, rejection.message)
            })
    });
    // U+0000 (a JSON `\u0000`) cannot be stored in a PostgreSQL text
    // column; it is refused on every backend alike, and the delivery kept.
    let normalized = normalized.and_then(|normalized| match nul_field(&normalized.event) {
        None => Ok(normalized),
        Some(field) => {
            let event = &normalized.event;
            journal.event = Some(event.kind.as_str().to_string());
            journal.ticket_id = Some(event.ticket_id);
            Err(ApiError::new(
                400,
                format!(
                    "{field} contains a NUL character (\\u0000), which cannot be stored in a ticket"
                ),
            )
            .with("ticket_id", event.ticket_id)
            .with("field", field))
        }
    });
    let normalized = match normalized {
        Ok(normalized) => normalized,
        Err(mut error) => {
            // A body beyond repair still names its ticket when an id can be
            // found in it, in the journal row and in the answer.
            // The scan stops at an id key whose value is unreadable (`-1`),
            // so such a body is never attributed to another ticket.
            let scanned = journal
                .ticket_id
                .is_none()
                .then(|| provider.scan_ticket_id(&journal.body, state.config, &foreign))
                .flatten();
            if let Some(id) = scanned {
                journal.ticket_id = Some(id);
                error = error.with("ticket_id", id);
            }
            // Kept even though it cannot be applied: nothing a PSA sent is lost.
            journal.error = Some(error.message().to_string());
            let item = WriteItem {
                event: None,
                journal: Some(journal),
            };
            return match state.store.write(item, COMMIT_WAIT) {
                Ok(_) => Err(error),
                Err(store_error) => Err(ApiError::from_store(&store_error)),
            };
        }
    };
    let event = normalized.event;
    let ticket_id = event.ticket_id;
    let event_name = event.kind.as_str();
    journal.event = Some(event_name.to_string());
    journal.ticket_id = Some(ticket_id);
    for warning in &normalized.warnings {
        log::warn!("{provider} ticket={ticket_id}: {warning}");
    }
    if !normalized.warnings.is_empty() {
        // The journal row says what was odd (an unreadable updated_at, with
        // its raw value) next to the raw body.
        journal.error = Some(format!("warnings: {}", normalized.warnings.join("; ")));
    }
    let event_updated_at = event.updated_at.clone();
    let item = WriteItem {
        event: Some(event),
        journal: Some(journal),
    };
    let outcome = state
        .store
        .write(item, COMMIT_WAIT)
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
    if !normalized.warnings.is_empty() {
        map.insert("warnings".into(), json!(normalized.warnings));
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

/// The first text value of `event` holding U+0000, by its field name.
fn nul_field(event: &TicketEvent) -> Option<&'static str> {
    let has_nul = |text: &Option<String>| text.as_deref().is_some_and(|t| t.contains('\0'));
    if has_nul(&event.updated_at) {
        return Some("updated_at");
    }
    if has_nul(&event.closed_at) {
        return Some("closed_at");
    }
    Field::ALL.into_iter().find(|field| {
        matches!(event.get(*field), Some(Some(PsaValue::Text(text))) if text.contains('\0'))
    })
    .map(Field::column)
}
