//! Routes: `/webhooks/health`, `/webhooks/test`, `/webhooks/<provider>/ticket`
//! and the read API under `/api/` (`api.rs`), each answered with and without
//! `[server] base_path`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use serde_json::{Value, json};
use tiny_http::{Method, Request};

use super::api::{self, ReadApi};
use super::auth::RateLimiter;
use super::endpoints::{endpoints, supported_providers};
use super::failure::Failure;
use super::request;
use super::response::{json_response, redirect, send, text_response};
use super::signature::SeenIds;
use super::{status_page, webhooks};
use crate::config::Config;
use crate::metrics::{self, RouteKind};
use crate::psa::Provider;
use crate::readers::Readers;
use crate::status::StatusBoard;
use crate::store::StoreClient;
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
    /// Read connections for the read API, the status page and metrics.
    readers: Readers,
    /// The read API's token verifier.
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
            readers: Readers::new(&config.database.url, store.health_handle()),
            api: ReadApi::default(),
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
    /// The method the route takes: POST for the webhooks, GET (and HEAD)
    /// for the others.
    pub(super) fn allow(&self) -> &'static str {
        match self {
            Route::Test | Route::Ticket(_) => "POST",
            _ => "GET",
        }
    }

    pub(super) fn allows(&self, method: &Method) -> bool {
        match self.allow() {
            "POST" => *method == Method::Post,
            _ => matches!(method, Method::Get | Method::Head),
        }
    }

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
/// type and declared length are settled. Each route's handler reads the
/// request, makes one call and maps its outcome; a failure is answered by
/// `failure.rs`.
pub fn handle(app: &AppState, mut request: Request) {
    let started = Instant::now();
    if app
        .drain_started
        .get()
        .is_some_and(|drain| request.received_at() >= *drain)
    {
        // The connection stays open: a client that reconnected now could be
        // caught in the listener's queue when it closes.
        let refusal = Failure::ShuttingDown.answer().into_response();
        if let Err(error) = send(request, refusal, false) {
            log::debug!("could not send the response: {error}");
        }
        return;
    }
    let _in_flight = InFlight::new(&app.in_flight);
    let current = app.current();
    let state = &Scope {
        store: &app.store,
        config: &current.config,
        status: &app.status,
        seen_ids: &app.seen_ids,
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
        Err(failure) => Err(failure),
        Ok(route) if !route.allows(request.method()) => Err(Failure::MethodNotAllowed {
            allow: route.allow(),
        }),
        Ok(Route::Root) => Ok(redirect(&format!(
            "{}/status",
            state.config.server.base_path
        ))),
        Ok(Route::Status) => Ok(text_response(
            200,
            "text/html; charset=utf-8",
            status_page::render(&app.readers.status(state.status)),
        )),
        Ok(Route::Metrics) => Ok(text_response(
            200,
            metrics::CONTENT_TYPE,
            metrics::metrics().render(&app.readers.scrape(state.status, state.store)),
        )),
        Ok(Route::Api(path)) => {
            api::answer(&app.api, &app.readers, state.config, &request, &path, query)
                .map(|body| json_response(200, &body))
        }
        Ok(Route::Health) => Ok(json_response(200, &health(state))),
        Ok(Route::Test) => webhooks::test(state, &mut request, client_ip),
        Ok(Route::Ticket(provider)) => Ok(webhooks::ticket(
            state,
            &mut request,
            provider,
            client_ip,
            started,
        )),
    };
    let response = result.unwrap_or_else(|failure| failure.answer().into_response());
    if let Err(error) = send(request, response, false) {
        log::debug!("could not send the response to {client_ip}: {error}");
    }
    metrics::metrics().request(kind, started.elapsed());
}

/// What one request is handled with: the configuration in force when it
/// began, whatever a reload does meanwhile.
pub(super) struct Scope<'a> {
    pub store: &'a StoreClient,
    pub config: &'a Config,
    pub status: &'a StatusBoard,
    pub seen_ids: &'a SeenIds,
}

pub(super) fn route(base_path: &str, path: &str) -> Result<Route, Failure> {
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
            None => Err(Failure::UnknownProvider {
                name: name.to_string(),
            }),
        };
    }
    Err(Failure::NoEndpoint {
        path: path.to_string(),
        base_path: base_path.to_string(),
    })
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
