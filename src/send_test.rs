//! `codex send-test`: the guide's "Test from command line" in one step. It
//! posts the guide's Freshservice template, rendered as Freshservice
//! renders it (a ticket with no agent and no group leaves those
//! placeholders empty), with the configured secret, to the running Codex,
//! and says what the answer means.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::timestamp;

/// The ticket the test delivers: an id no Freshservice account reaches, so
/// a test never overwrites a real ticket.
pub const TEST_TICKET_ID: i64 = 999_999_999;

/// How long the answer may take (Freshservice gives up after about 15 s).
const TIMEOUT: Duration = Duration::from_secs(15);

/// Which of the guide's workflows the test delivery imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestEvent {
    Created,
    Updated,
    Deleted,
}

impl TestEvent {
    pub fn from_name(name: &str) -> Option<TestEvent> {
        match name {
            "created" => Some(TestEvent::Created),
            "updated" => Some(TestEvent::Updated),
            "deleted" => Some(TestEvent::Deleted),
            _ => None,
        }
    }
}

/// Why the test could not tell that deliveries work.
#[derive(Debug, thiserror::Error)]
pub enum SendTestError {
    /// Webhooks are off, or no secret is set: Codex would refuse any delivery.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// Nothing answered at the URL.
    #[error(
        "no answer from {url}: {error}. Is `codex serve` running, and listening there ([server] bind, [server] base_path)? Pass --url to test another address."
    )]
    Unreachable { url: String, error: String },
    /// Codex answered, but not with a 2xx: the delivery was not stored.
    #[error("{0}")]
    Refused(String),
}

/// What was sent and answered, for the command to print.
pub struct Exchange {
    pub url: String,
    pub status: u16,
    pub answer: String,
    pub meaning: String,
}

/// The endpoint the configured `bind` and `base_path` give, from this machine.
pub fn default_url(config: &Config) -> String {
    let bind = config.server.bind;
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = match config.server.tls_cert {
        Some(_) => "https",
        None => "http",
    };
    format!(
        "{scheme}://{}{}/webhooks/freshservice/ticket",
        SocketAddr::new(ip, bind.port()),
        config.server.base_path
    )
}

/// The guide's template for `event`, as Freshservice renders it for a test
/// ticket updated now.
pub fn body(event: TestEvent) -> String {
    let updated = timestamp::now();
    match event {
        TestEvent::Deleted => format!(
            "{{\n\"event\": \"ticket.deleted\",\n\"ticket_id\": {TEST_TICKET_ID},\n\
             \"status_id\": 5,\n\"updated_at\": \"{updated}\"\n}}"
        ),
        TestEvent::Created | TestEvent::Updated => {
            let (name, created) = match event {
                TestEvent::Created => ("created", format!("\n\"created_at\": \"{updated}\",")),
                _ => ("updated", String::new()),
            };
            format!(
                "{{\n\"event\": \"ticket.{name}\",\n\"ticket_id\": {TEST_TICKET_ID},\n\
                 \"subject\": \"Codex send-test\",\n\"status_id\": 2,\n\"priority_id\": 1,\n\
                 \"requester_email\": \"codex-send-test@example.invalid\",\n\
                 \"requester_name\": \"Codex send-test\",\n\"requester_id\": ,\n\
                 \"responder_id\": ,\n\"group_id\": ,\n\"department_id\": ,{created}\n\
                 \"updated_at\": \"{updated}\"\n}}"
            )
        }
    }
}

/// Posts the test delivery to `url` (else the configured endpoint).
pub fn send_test(
    config: &Config,
    event: TestEvent,
    url: Option<&str>,
) -> Result<Exchange, SendTestError> {
    if !config.webhooks.enabled {
        return Err(SendTestError::NotConfigured(
            "webhooks are disabled: set [webhooks] enabled = true in codex.conf and restart Codex",
        ));
    }
    let Some(secret) = config.webhooks.secrets.first() else {
        return Err(SendTestError::NotConfigured(
            "no webhook secret is set: set [webhooks] secret (see `codex gen-secret`)",
        ));
    };
    let url = url.map_or_else(|| default_url(config), str::to_string);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls_config(config))
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .user_agent(concat!("codex-send-test/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut response = agent
        .post(&url)
        .header("X-Webhook-Secret", secret.expose())
        .header("Content-Type", "application/json")
        .send(body(event))
        .map_err(|error| SendTestError::Unreachable {
            url: url.clone(),
            error: error.to_string(),
        })?;
    let status = response.status().as_u16();
    let answer = response
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    let json: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
    let meaning = meaning(status, &json);
    if !(200..300).contains(&status) {
        return Err(SendTestError::Refused(format!(
            "{url} answered {status} {answer}\n{meaning}"
        )));
    }
    Ok(Exchange {
        url,
        status,
        answer,
        meaning,
    })
}

/// With `[server] tls_cert`, the certificates of that file are the ones
/// trusted (Codex's own, self-signed or not); otherwise the usual roots.
/// A file that cannot be read leaves the usual roots, and the send fails
/// saying why.
fn tls_config(config: &Config) -> ureq::tls::TlsConfig {
    let builder = ureq::tls::TlsConfig::builder();
    let Some(path) = &config.server.tls_cert else {
        return builder.build();
    };
    let pem = std::fs::read(path).unwrap_or_default();
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    match certs.is_empty() {
        true => builder.build(),
        false => builder
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
            .build(),
    }
}

/// What an answer tells the admin, and what to do about it.
fn meaning(status: u16, answer: &Value) -> String {
    let error = answer["error"].as_str().unwrap_or_default();
    match (status, answer["status"].as_str()) {
        (201, _) => format!(
            "Deliveries work end to end: Codex authenticated the test, stored ticket {TEST_TICKET_ID} and committed it. \
             `codex send-test --event deleted` marks that test ticket deleted."
        ),
        (200, Some("deleted")) => format!("Deliveries work: Codex marked test ticket {TEST_TICKET_ID} deleted."),
        (200, Some("ignored")) => "Deliveries work: Codex authenticated the delete and remembered it (it holds no test ticket to delete).".to_string(),
        (200, Some(outcome)) => format!("Deliveries work: Codex authenticated the test and applied it to the stored test ticket ({outcome})."),
        (200..=299, _) => "Codex accepted the delivery.".to_string(),
        (401, _) => "The secret does not match: Codex and this command read different secrets. Check [webhooks] secret (and CODEX_WEBHOOK_SECRET) of the running Codex; after a change, reload it (SIGHUP).".to_string(),
        (403, _) => "This machine's address is not in [webhooks] allowed_ips of the running Codex.".to_string(),
        (404, _) => "No endpoint at that path: check [server] base_path, or the path given with --url.".to_string(),
        (429, _) => "Rate limited: [webhooks] rate_limit_per_minute was reached from this address; try again in a minute.".to_string(),
        (503, _) if error.contains("disabled") => "The running Codex has webhooks disabled: set [webhooks] enabled = true and restart it.".to_string(),
        (503, _) => format!("The running Codex cannot store deliveries now ({error}); see its log and `codex status`."),
        _ => format!("Codex refused the delivery: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_is_the_bind_address_from_this_machine() {
        let mut config = Config::default();
        config.server.bind = "0.0.0.0:5010".parse().unwrap();
        config.server.base_path = "/codex".to_string();
        assert_eq!(
            default_url(&config),
            "http://127.0.0.1:5010/codex/webhooks/freshservice/ticket"
        );
        config.server.bind = "[::]:8080".parse().unwrap();
        config.server.base_path.clear();
        assert_eq!(
            default_url(&config),
            "http://[::1]:8080/webhooks/freshservice/ticket"
        );
        config.server.tls_cert = Some("codex.crt".into());
        assert_eq!(
            default_url(&config),
            "https://[::1]:8080/webhooks/freshservice/ticket"
        );
    }

    #[test]
    fn bodies_are_the_guides_templates_as_freshservice_renders_them() {
        let updated = body(TestEvent::Updated);
        assert!(updated.contains("\"event\": \"ticket.updated\""));
        // Freshservice leaves a placeholder with no value empty: not JSON.
        assert!(updated.contains("\"responder_id\": ,"));
        assert!(serde_json::from_str::<Value>(&updated).is_err());
        assert!(!updated.contains("created_at"));
        assert!(body(TestEvent::Created).contains("\"created_at\": \""));
        let deleted = body(TestEvent::Deleted);
        let deleted: Value = serde_json::from_str(&deleted).unwrap();
        assert_eq!(deleted["ticket_id"], TEST_TICKET_ID);
    }
}
