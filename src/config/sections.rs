//! The configuration's structs, one per section of `codex.conf`. Each
//! field's doc comment is its entry in `docs/configuration.md`; the key
//! that sets it, its default text and what a reload does with it are in
//! `SETTINGS` (`config.rs`), which a unit test checks against these
//! structs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use jiff::tz::TimeZone;

use super::tables::{
    CodeTable, NameMap, WebhookFields, default_priorities, default_statuses, superops_priorities,
    superops_statuses,
};
use super::value::{DatabaseUrl, Secret, SignatureScheme};

/// The whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it was read from; `None` when built-in defaults are used.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub webhooks: WebhookConfig,
    pub api: ApiConfig,
    pub status: StatusConfig,
    pub freshservice: FreshserviceConfig,
    pub superops: SuperopsConfig,
    pub scheduler: SchedulerConfig,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address and port to listen on; behind a reverse proxy keep 127.0.0.1.
    pub bind: SocketAddr,
    /// The most request handler threads: the pool grows to it under load and
    /// shrinks back to 2 when idle; 64 measured best on a 2-core machine.
    pub threads: usize,
    /// Path prefix the proxy forwards (e.g. `/codex`); empty for none.
    pub base_path: String,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, across all connections.
    pub max_inflight_body_bytes: usize,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// A new connection must send its first byte within this.
    pub first_byte_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub read_timeout: Duration,
    /// How long a request line and headers may take once begun.
    pub header_timeout: Duration,
    /// How long a request body may take once the headers are in.
    pub body_timeout: Duration,
    /// Connections served at once; empty (`None`): derived from the
    /// descriptor limit.
    pub max_connections: Option<usize>,
    /// Connections from one client address at once; empty (`None`): an
    /// eighth of `max_connections`.
    pub max_connections_per_ip: Option<usize>,
    /// The most detailed log messages written (`RUST_LOG` can only narrow it).
    pub log_level: log::LevelFilter,
    /// HTTPS: the certificate chain (PEM); with `tls_key`, or neither.
    /// The files are read again on SIGHUP; the paths only at a restart.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the certificate's private key (PEM), not readable by others.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 5010)),
            threads: 64,
            base_path: String::new(),
            max_body_bytes: 1 << 20,
            max_inflight_body_bytes: 32 << 20,
            trusted_proxies: Vec::new(),
            first_byte_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_connections_per_ip: None,
            log_level: log::LevelFilter::Info,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[database]`: where tickets are kept.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://…`.
    pub url: DatabaseUrl,
}

impl Default for DatabaseConfig {
    fn default() -> DatabaseConfig {
        DatabaseConfig {
            url: DatabaseUrl::Sqlite(PathBuf::from("codex.db")),
        }
    }
}

/// `[webhooks]`: receiving deliveries.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Whether webhooks are received at `/webhooks/<provider>/ticket`.
    pub enabled: bool,
    /// Every secret that is accepted (several during a rotation).
    pub secrets: Vec<Secret>,
    /// Client addresses (CIDRs) allowed to deliver; empty means every address.
    pub allowed_ips: Vec<IpNet>,
    /// Log every delivery's body (for debugging; contains ticket data).
    pub log_payloads: bool,
    /// Requests per minute per client IP; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Days the journal of deliveries (`webhook_events`) is kept.
    pub journal_retention_days: u32,
    /// How bodies are signed: none, standard-webhooks or hmac-sha256.
    pub signature: SignatureScheme,
    /// The keys bodies are signed with (several during a rotation).
    pub signing_secrets: Vec<Secret>,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            enabled: false,
            secrets: Vec::new(),
            allowed_ips: Vec::new(),
            log_payloads: false,
            rate_limit_per_minute: 600,
            journal_retention_days: 30,
            signature: SignatureScheme::None,
            signing_secrets: Vec::new(),
        }
    }
}

/// `[api]`: the predecessor's ticket read API (`/api/...`); off unless
/// `tokens` or `core_url` is set.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Bearer tokens accepted (several during a rotation).
    pub tokens: Vec<Secret>,
    /// The suite's identity service: its RS256 tokens are accepted too.
    pub core_url: Option<String>,
}

/// `[status]`: who may see `/status` and `/metrics`.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// Clients that need no token (CIDRs); loopback by default.
    pub allowed_ips: Vec<IpNet>,
    /// Opens them from anywhere: as a bearer token or the password of HTTP Basic.
    pub token: Option<Secret>,
}

impl Default for StatusConfig {
    fn default() -> StatusConfig {
        StatusConfig {
            // Both literals are valid networks, so the parse cannot fail.
            allowed_ips: ["127.0.0.0/8", "::1/128"]
                .map(|net| net.parse().expect("a valid network"))
                .to_vec(),
            token: None,
        }
    }
}

/// `[freshservice]`: a Freshservice account polled over its REST API.
#[derive(Debug, Clone)]
pub struct FreshserviceConfig {
    /// The account's domain, such as `yourcompany.freshservice.com`.
    pub domain: Option<String>,
    /// The API key of the account Codex reads tickets as.
    pub api_key: Option<Secret>,
    /// `https://{domain}/api/v2` unless set.
    pub api_base: Option<String>,
    /// API requests per minute, at most.
    pub max_requests_per_minute: u32,
    /// How far back the first sync looks, in days.
    pub initial_sync_days: u32,
    /// Tickets looked up one by one per reconcile run, at most.
    pub reconcile_max_tickets: u32,
    /// How long one API request may take.
    pub request_timeout: Duration,
    /// Status names that mean the ticket is finished (`closed_at` is set).
    pub done_statuses: Vec<String>,
    /// The account's zone: times without one, and abbreviations it uses.
    pub timezone: TimeZone,
    /// The workspace listings ask for; empty (`None`) asks for all
    /// (`workspace_id=0`).
    pub workspace_id: Option<u64>,
    /// The admin's own webhook body keys.
    pub webhook_fields: WebhookFields,
    /// The account's status codes to names.
    pub statuses: CodeTable,
    /// The account's priority codes to names.
    pub priorities: CodeTable,
}

impl Default for FreshserviceConfig {
    fn default() -> FreshserviceConfig {
        FreshserviceConfig {
            domain: None,
            api_key: None,
            api_base: None,
            max_requests_per_minute: 40,
            initial_sync_days: 30,
            reconcile_max_tickets: 50,
            request_timeout: Duration::from_secs(30),
            done_statuses: [
                "closed",
                "resolved",
                "job_complete_bill",
                "billing_complete",
                "spam",
                "trash",
                "deleted",
            ]
            .map(String::from)
            .to_vec(),
            timezone: TimeZone::UTC,
            workspace_id: None,
            webhook_fields: WebhookFields::default(),
            statuses: default_statuses(),
            priorities: default_priorities(),
        }
    }
}

impl FreshserviceConfig {
    /// The REST API base URL, without a trailing slash.
    pub fn api_base_url(&self) -> Option<String> {
        self.api_base
            .clone()
            .or_else(|| self.domain.as_ref().map(|d| format!("https://{d}/api/v2")))
    }
}

/// `[superops]`: a SuperOps account polled over its GraphQL API.
#[derive(Debug, Clone)]
pub struct SuperopsConfig {
    /// The GraphQL endpoint (US by default; EU `https://euapi.superops.ai/msp`).
    pub api_url: String,
    /// The account's subdomain, sent as `CustomerSubDomain`.
    pub subdomain: Option<String>,
    /// The API token of the account Codex reads tickets as.
    pub api_token: Option<Secret>,
    /// API requests per minute, at most.
    pub max_requests_per_minute: u32,
    /// The zone of SuperOps' offset-less times.
    pub timezone: TimeZone,
    /// How far back the first sync looks, in days.
    pub initial_sync_days: u32,
    /// Tickets looked up one by one per reconcile run, at most.
    pub reconcile_max_tickets: u32,
    /// How long one API request may take.
    pub request_timeout: Duration,
    /// Normalized status names after which a ticket is finished.
    pub done_statuses: Vec<String>,
    /// The account's status names to Codex's.
    pub statuses: NameMap,
    /// The account's priority names to Codex's.
    pub priorities: NameMap,
}

impl Default for SuperopsConfig {
    fn default() -> SuperopsConfig {
        SuperopsConfig {
            api_url: "https://api.superops.ai/msp".to_string(),
            subdomain: None,
            api_token: None,
            max_requests_per_minute: 400,
            timezone: TimeZone::UTC,
            initial_sync_days: 30,
            reconcile_max_tickets: 500,
            request_timeout: Duration::from_secs(30),
            done_statuses: ["resolved", "closed", "deleted"].map(String::from).to_vec(),
            statuses: superops_statuses(),
            priorities: superops_priorities(),
        }
    }
}

impl SuperopsConfig {
    /// True when an account (subdomain and token) is configured.
    pub fn configured(&self) -> bool {
        self.subdomain.is_some() && self.api_token.is_some()
    }
}

/// `[scheduler]`: when polling runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Whether the configured accounts are polled.
    pub sync_tickets_enabled: bool,
    /// How often to poll while webhooks do not demonstrably work.
    pub ticket_sync_interval: Duration,
    /// How often to poll while webhooks demonstrably work.
    pub ticket_sync_interval_with_webhooks: Duration,
    /// Webhooks count as working while a delivery arrived within this window.
    pub webhook_healthy_window: Duration,
    /// ...and at least this share of the last 24 h's changes came by webhook
    /// before a poll found them.
    pub min_webhook_coverage: f64,
    /// How often a sync is a full one: it also reads the complete listing and
    /// looks up each held ticket it left out.
    pub reconcile_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            sync_tickets_enabled: true,
            ticket_sync_interval: Duration::from_secs(5 * 60),
            ticket_sync_interval_with_webhooks: Duration::from_secs(60 * 60),
            webhook_healthy_window: Duration::from_secs(60 * 60),
            min_webhook_coverage: 0.95,
            reconcile_interval: Duration::from_secs(6 * 60 * 60),
        }
    }
}
