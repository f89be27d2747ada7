//! What a request's head says about where it goes and who sent it: the
//! path of its target and the client's address. The head gate and the
//! routes both read them.

use std::net::IpAddr;

use tiny_http::Head;

use super::auth;
use super::failure::Failure;
use crate::config::Config;

/// The path of a request target, without query or fragment. An
/// absolute-form target (`http://host/path`, RFC 9112 section 3.2.2) is
/// accepted when it names Codex's own host: the one the `Host` header names
/// (any, when there is none, as in HTTP/1.0).
pub fn request_path<'a>(target: &'a str, host: Option<&str>) -> Result<&'a str, Failure> {
    let path = match absolute_form(target) {
        None => target,
        Some((authority, path)) => {
            if host.is_some_and(|host| !host.trim().eq_ignore_ascii_case(authority)) {
                return Err(Failure::ForeignHost);
            }
            if path.is_empty() { "/" } else { path }
        }
    };
    Ok(path.split(['?', '#']).next().unwrap_or_default())
}

/// `(authority, path)` of an `http://` or `https://` target.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// The client's address: the peer, or behind a trusted proxy the address
/// it forwarded (see `auth::client_ip`).
pub fn client_ip(config: &Config, head: &Head<'_>) -> IpAddr {
    let peer = head
        .remote_addr
        .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip());
    let forwarded: Vec<&str> = head
        .headers
        .iter()
        .filter(|h| h.field.equiv("X-Forwarded-For"))
        .map(|h| h.value.as_str())
        .collect();
    auth::client_ip(peer, &forwarded, &config.server.trusted_proxies)
}
