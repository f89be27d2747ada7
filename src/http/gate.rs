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

use tiny_http::{Gate, Head, Header, Response};

use super::auth::{self, RateLimiter};
use super::failure::Failure;
use super::operator;
use super::request::{client_ip, request_path};
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
        let answer = decide(&current.config, &current.limiter, head)
            .err()?
            .answer();
        let client_ip = client_ip(&current.config, head);
        let delivery = request_path(head.url, header(head.headers, "Host"))
            .and_then(|path| routes::route(&current.config.server.base_path, path));
        match delivery {
            // The same line as a delivery refused after its body was read.
            Ok(Route::Ticket(provider)) => {
                metrics::metrics().delivery(provider, "refused", answer.status);
                log::warn!(
                    "{provider} ticket=- event=- outcome=refused status={} ip={client_ip}: {}",
                    answer.status,
                    answer.message()
                )
            }
            _ if answer.status == 404 || answer.status == 405 => log::debug!(
                "refused on the head: status={} ip={client_ip}",
                answer.status
            ),
            _ => log::warn!(
                "refused on the head: status={} ip={client_ip}: {}",
                answer.status,
                answer.message()
            ),
        }
        Some(answer.into_response())
    }

    /// A trusted proxy carries many clients' connections: it is not capped.
    fn caps_address(&self, ip: IpAddr) -> bool {
        let current = self.state.current();
        !auth::is_in(ip, &current.config.server.trusted_proxies)
    }
}

/// `Ok` when the request may go on to have its body read and be handled;
/// else the answer.
pub fn decide(config: &Config, limiter: &RateLimiter, head: &Head<'_>) -> Result<(), Failure> {
    let path = request_path(head.url, header(head.headers, "Host"))?;
    let route = routes::route(&config.server.base_path, path)?;
    if !route.allows(head.method) {
        return Err(Failure::MethodNotAllowed {
            allow: route.allow(),
        });
    }
    match route {
        Route::Health => Ok(()),
        Route::Test => authorize(config, limiter, head.headers, client_ip(config, head)),
        Route::Ticket(_) => {
            authorize(config, limiter, head.headers, client_ip(config, head))?;
            check_content_type(head.headers)?;
            check_declared_length(head.headers, config.server.max_body_bytes)
        }
        // The operator's pages: who may see them is settled on the head;
        // a GET has no body to read.
        Route::Status | Route::Metrics => {
            check_declared_length(head.headers, 0)?;
            operator::allow(&config.status, client_ip(config, head), head.headers)
        }
        // The read API's tokens are checked before anything is read (the
        // verifier's key cache lives with the handler); no body is read.
        Route::Api(_) | Route::Root => check_declared_length(head.headers, 0),
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
) -> Result<(), Failure> {
    let webhooks = &config.webhooks;
    if !webhooks.enabled {
        return Err(Failure::WebhooksDisabled);
    }
    if let Err(wait) = limiter.check(client_ip) {
        return Err(Failure::RateLimited {
            client_ip,
            per_minute: webhooks.rate_limit_per_minute,
            wait,
        });
    }
    match header(headers, "X-Webhook-Secret") {
        // With only a signature scheme configured, the signature (checked
        // once the body is read) authenticates.
        _ if webhooks.secrets.is_empty() && webhooks.signature != SignatureScheme::None => {}
        Some(given) if auth::secret_matches(given, &webhooks.secrets) => {}
        Some(_) => return Err(Failure::WrongSecret),
        None => {
            return Err(Failure::MissingSecret {
                in_authorization: header(headers, "Authorization").is_some(),
            });
        }
    }
    if !webhooks.allowed_ips.is_empty() && !auth::is_in(client_ip, &webhooks.allowed_ips) {
        return Err(Failure::AddressNotAllowed { client_ip });
    }
    Ok(())
}

/// JSON, or a missing content type; anything else is refused.
fn check_content_type(headers: &[Header]) -> Result<(), Failure> {
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
        Err(Failure::NotJsonContent { mime })
    }
}

/// A declared length over `max` is refused before the body is read (a
/// chunked body is cut at `max` as it is read; see `webhooks::read_body`).
fn check_declared_length(headers: &[Header], max: usize) -> Result<(), Failure> {
    let declared = header(headers, "Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Failure::BodyTooLarge { max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use tiny_http::Method;

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
        decide(config, limiter, &head).map_or_else(|e| e.answer().status, |()| 0)
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
            .answer()
            .status,
            400
        );
        let given = [("X-Webhook-Secret", SECRET), ("Host", "codex.example")];
        let url = "http://codex.example/webhooks/freshservice/ticket";
        assert_eq!(status(&config(), Method::Post, url, &given), 0);
    }
}
