//! Who may see the operator's pages (`/status`, `/metrics`), decided on
//! the request head (`gate.rs`): clients in `[status] allowed_ips` (loopback by default),
//! or anyone presenting `[status] token` as a bearer token or as the
//! password of HTTP Basic.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tiny_http::Header;

use super::auth;
use super::failure::Failure;
use crate::config::StatusConfig;

/// Lets the request through, or says why not: 401 (with the schemes that
/// would work) when a token could open the page, 403 when none is set.
pub fn allow(config: &StatusConfig, client_ip: IpAddr, headers: &[Header]) -> Result<(), Failure> {
    if auth::is_in(client_ip, &config.allowed_ips) {
        return Ok(());
    }
    let Some(token) = &config.token else {
        return Err(Failure::OperatorAddress { client_ip });
    };
    let presented = headers
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| presented_token(h.value.as_str()));
    match presented {
        Some(given) if auth::secret_matches(&given, std::slice::from_ref(token)) => Ok(()),
        presented => Err(Failure::OperatorToken {
            presented: presented.is_some(),
        }),
    }
}

/// The token in an `Authorization` value: a bearer token, or the password
/// of HTTP Basic (whatever the user name).
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("Bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("Basic") {
        let decoded = STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_read_from_bearer_or_the_basic_password() {
        assert_eq!(presented_token("Bearer abc ").as_deref(), Some("abc"));
        let basic = format!("Basic {}", STANDARD.encode("admin:s3cret:x"));
        assert_eq!(presented_token(&basic).as_deref(), Some("s3cret:x"));
        assert_eq!(presented_token("Basic !!"), None);
        assert_eq!(presented_token("Digest abc"), None);
        assert_eq!(presented_token("abc"), None);
    }
}
