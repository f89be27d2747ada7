//! The head gate: everything a request's line and headers decide, decided
//! before any byte of its body is read. tiny_http shows each head to
//! [`HeadGate`] (vendor patch 13); a request refused here is answered at
//! once with `Connection: close`, its body never read (tiny_http drains at
//! most 64 KiB of it so that the answer arrives) and no `100 Continue` sent.
//! So a client without the secret costs Codex a head, never a body.
//!
//! In order: the target (absolute-form only for Codex's own host), the
//! route (404), the method (405); for webhook routes, whether webhooks are
//! enabled (503), the rate limit (429, counting every request, so guessing
//! secrets is throttled too), the shared secret (401), the allowlist (403);
//! for deliveries, the content type (415) and the declared length (413).

use std::io::Cursor;
use std::net::IpAddr;
use std::sync::Arc;

use tiny_http::{Gate, Head, Header, Method, Response};

use super::auth::{self, RateLimiter};
use super::operator;
use super::request::{client_ip, request_path};
use super::response::ApiError;
use super::routes::{self, AppState, Route};
use crate::config::{Config, SignatureScheme};
use crate::metrics;

/// The gate tiny_http consults, reading the configuration in force.
pub struct HeadGate {
    state: Arc<AppState>,
}

impl HeadGate {
    pub fn new(state: Arc<AppState>) -> HeadGate {
        HeadGate { state }
    }
}

impl Gate for HeadGate {
    fn check(&self, head: &Head<'_>) -> Option<Response<Cursor<Vec<u8>>>> {
        let current = self.state.current();
        let error = decide(&current.config, &current.limiter, head).err()?;
        let client_ip = client_ip(&current.config, head);
        let delivery = request_path(head.url, header(head.headers, "Host"))
            .and_then(|path| routes::route(&current.config.server.base_path, path));
        match delivery {
            // The same line as a delivery refused after its body was read.
            Ok(Route::Ticket(provider)) => {
                metrics::metrics().delivery(provider, "refused", error.status);
                log::warn!(
                    "{provider} ticket=- event=- outcome=refused status={} ip={client_ip}: {}",
                    error.status,
                    error.message()
                )
            }
            _ if error.status == 404 || error.status == 405 => log::debug!(
                "refused on the head: status={} ip={client_ip}",
                error.status
            ),
            _ => log::warn!(
                "refused on the head: status={} ip={client_ip}: {}",
                error.status,
                error.message()
            ),
        }
        Some(error.into_response())
    }

    /// A trusted proxy carries many clients' connections: it is not capped.
    fn caps_address(&self, ip: IpAddr) -> bool {
        let current = self.state.current();
        !auth::is_in(ip, &current.config.server.trusted_proxies)
    }
}

/// `Ok` when the request may go on to have its body read and be handled;
/// else the answer.
pub fn decide(config: &Config, limiter: &RateLimiter, head: &Head<'_>) -> Result<(), ApiError> {
    let path = request_path(head.url, header(head.headers, "Host"))?;
    let route = routes::route(&config.server.base_path, path)?;
    let post_only = || match head.method {
        Method::Post => Ok(()),
        _ => Err(routes::method_not_allowed("POST")),
    };
    match route {
        Route::Health => match head.method {
            Method::Get | Method::Head => Ok(()),
            _ => Err(routes::method_not_allowed("GET")),
        },
        Route::Test => {
            post_only()?;
            authorize(config, limiter, head.headers, client_ip(config, head))
        }
        Route::Ticket(_) => {
            post_only()?;
            authorize(config, limiter, head.headers, client_ip(config, head))?;
            check_content_type(head.headers)?;
            check_declared_length(head.headers, config.server.max_body_bytes)
        }
        // The operator's pages: who may see them is settled on the head.
        Route::Status | Route::Metrics => {
            get_only(head)?;
            operator::allow(&config.status, client_ip(config, head), head.headers)
        }
        // The read API's tokens are checked before anything is read (the
        // verifier's key cache lives with the handler); no body is read.
        Route::Api(_) | Route::Root => get_only(head),
    }
}

/// GET or HEAD, with no body to read.
fn get_only(head: &Head<'_>) -> Result<(), ApiError> {
    match head.method {
        Method::Get | Method::Head => check_declared_length(head.headers, 0),
        _ => Err(routes::method_not_allowed("GET")),
    }
}

fn header<'a>(headers: &'a [Header], name: &'static str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// The checks every webhook request passes, in this order: enabled, rate
/// limit (counting every request, so guessing secrets is throttled too),
/// secret, allowlist.
fn authorize(
    config: &Config,
    limiter: &RateLimiter,
    headers: &[Header],
    client_ip: IpAddr,
) -> Result<(), ApiError> {
    let webhooks = &config.webhooks;
    if !webhooks.enabled {
        return Err(ApiError::new(503, "Webhooks are disabled").with(
            "detail",
            "set [webhooks] enabled = true in codex.conf and restart Codex",
        ));
    }
    if let Err(wait) = limiter.check(client_ip) {
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
    match header(headers, "X-Webhook-Secret") {
        // With only a signature scheme configured, the signature (checked
        // once the body is read) authenticates.
        _ if webhooks.secrets.is_empty() && webhooks.signature != SignatureScheme::None => {}
        Some(given) if auth::secret_matches(given, &webhooks.secrets) => {}
        Some(_) => {
            return Err(ApiError::new(401, "Unauthorized").with(
                "detail",
                "the X-Webhook-Secret header does not match the configured secret",
            ));
        }
        None => {
            let detail = if header(headers, "Authorization").is_some() {
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
fn check_content_type(headers: &[Header]) -> Result<(), ApiError> {
    let Some(value) = header(headers, "Content-Type") else {
        return Ok(());
    };
    let mime = value
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

/// A declared length over `max` is refused before the body is read (a
/// chunked body is cut at `max` as it is read; see `routes::read_body`).
fn check_declared_length(headers: &[Header], max: usize) -> Result<(), ApiError> {
    let declared = header(headers, "Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(routes::body_too_large(max));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "Tst7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga";

    fn config() -> Config {
        let mut config = Config::default();
        config.webhooks.enabled = true;
        config.webhooks.secrets = vec![Secret::new(SECRET)];
        config
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(name, value)| Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap())
            .collect()
    }

    fn status(config: &Config, method: Method, url: &str, pairs: &[(&str, &str)]) -> u16 {
        status_limited(config, &RateLimiter::new(0), method, url, pairs)
    }

    fn status_limited(
        config: &Config,
        limiter: &RateLimiter,
        method: Method,
        url: &str,
        pairs: &[(&str, &str)],
    ) -> u16 {
        let headers = headers(pairs);
        let head = Head {
            method: &method,
            url,
            http_version: &tiny_http::HTTPVersion(1, 1),
            headers: &headers,
            remote_addr: Some("192.0.2.7:4000".parse().unwrap()),
        };
        decide(config, limiter, &head).map_or_else(|e| e.status, |()| 0)
    }

    const TICKET: &str = "/webhooks/freshservice/ticket";

    #[test]
    fn an_authenticated_delivery_goes_on() {
        let given = [("X-Webhook-Secret", SECRET), ("Content-Length", "10")];
        assert_eq!(status(&config(), Method::Post, TICKET, &given), 0);
    }

    #[test]
    fn a_wrong_or_missing_secret_is_401() {
        let config = config();
        let wrong = [("X-Webhook-Secret", "wrong"), ("Content-Length", "1048575")];
        assert_eq!(status(&config, Method::Post, TICKET, &wrong), 401);
        assert_eq!(status(&config, Method::Post, TICKET, &[]), 401);
        assert_eq!(status(&config, Method::Post, "/webhooks/test", &[]), 401);
    }

    #[test]
    fn an_unknown_path_is_404_and_a_wrong_method_405() {
        let given = [("X-Webhook-Secret", SECRET)];
        assert_eq!(status(&config(), Method::Post, "/nowhere", &given), 404);
        assert_eq!(
            status(&config(), Method::Post, "/webhooks/nope/ticket", &given),
            404
        );
        assert_eq!(status(&config(), Method::Get, TICKET, &given), 405);
        assert_eq!(
            status(&config(), Method::Post, "/webhooks/health", &[]),
            405
        );
        assert_eq!(status(&config(), Method::Get, "/webhooks/health", &[]), 0);
    }

    #[test]
    fn the_allowlist_is_403() {
        let mut config = config();
        config.webhooks.allowed_ips = crate::config::parse_networks("10.0.0.0/8").unwrap();
        let given = [("X-Webhook-Secret", SECRET)];
        assert_eq!(status(&config, Method::Post, TICKET, &given), 403);
    }

    #[test]
    fn the_rate_limit_is_429_and_counts_wrong_secrets() {
        let config = config();
        let limiter = RateLimiter::new(1);
        let wrong = [("X-Webhook-Secret", "wrong")];
        assert_eq!(
            status_limited(&config, &limiter, Method::Post, TICKET, &wrong),
            401
        );
        let given = [("X-Webhook-Secret", SECRET)];
        assert_eq!(
            status_limited(&config, &limiter, Method::Post, TICKET, &given),
            429
        );
    }

    #[test]
    fn a_declared_length_over_the_maximum_is_413_and_other_types_415() {
        let config = config();
        let long = [("X-Webhook-Secret", SECRET), ("Content-Length", "1048577")];
        assert_eq!(status(&config, Method::Post, TICKET, &long), 413);
        let xml = [("X-Webhook-Secret", SECRET), ("Content-Type", "text/xml")];
        assert_eq!(status(&config, Method::Post, TICKET, &xml), 415);
    }

    #[test]
    fn disabled_webhooks_are_503() {
        let mut config = config();
        config.webhooks.enabled = false;
        assert_eq!(status(&config, Method::Post, TICKET, &[]), 503);
    }

    #[test]
    fn absolute_form_targets_name_the_own_host() {
        assert_eq!(
            request_path(
                "http://codex.example:5010/webhooks/test?x=1",
                Some("codex.example:5010")
            )
            .unwrap(),
            "/webhooks/test"
        );
        assert_eq!(request_path("HTTPS://Codex.Example", None).unwrap(), "/");
        assert_eq!(request_path("/a/b?c#d", Some("x")).unwrap(), "/a/b");
        assert_eq!(
            request_path(
                "http://elsewhere.example/webhooks/test",
                Some("codex.example")
            )
            .unwrap_err()
            .status,
            400
        );
        let given = [("X-Webhook-Secret", SECRET), ("Host", "codex.example")];
        let url = "http://codex.example/webhooks/freshservice/ticket";
        assert_eq!(status(&config(), Method::Post, url, &given), 0);
    }
}
