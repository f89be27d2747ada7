//! `codex.conf`: one struct, read and validated once at start-up, then shared
//! read-only. Every key is documented in `codex.conf.example`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use configparser::ini::{Ini, IniDefault};
use ipnet::IpNet;

use crate::error::ConfigError;
use crate::psa::freshservice::{
    CodeTable, DEFAULT_DONE_STATUSES, WebhookFields, default_priorities, default_statuses,
};
use crate::psa::superops::{self, NameMap};

/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "CODEX_CONFIG";
/// Environment variable overriding `[webhooks] secret`.
pub const ENV_WEBHOOK_SECRET: &str = "CODEX_WEBHOOK_SECRET";
/// Environment variable overriding `[database] connection_string`.
pub const ENV_DATABASE_URL: &str = "CODEX_DATABASE_URL";
/// Environment variable overriding `[freshservice] api_key`.
pub const ENV_FRESHSERVICE_API_KEY: &str = "CODEX_FRESHSERVICE_API_KEY";
/// Environment variable overriding `[superops] api_token`.
pub const ENV_SUPEROPS_API_TOKEN: &str = "CODEX_SUPEROPS_API_TOKEN";

/// Where Codex looks for its configuration without `--config` or
/// `$CODEX_CONFIG`, in order: its own file, the Python predecessor's
/// (its installer writes `instance/codex.conf`), the system-wide one.
pub const SEARCH_PATH: [&str; 3] = ["codex.conf", "instance/codex.conf", "/etc/codex/codex.conf"];

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; `None` when built-in defaults are used.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub webhooks: WebhookConfig,
    pub freshservice: FreshserviceConfig,
    pub superops: SuperopsConfig,
    pub scheduler: SchedulerConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub threads: usize,
    /// Path prefix the proxy forwards (e.g. `/codex`); empty for none.
    pub base_path: String,
    pub max_body_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    /// A connection that sends nothing for this long is closed.
    pub read_timeout: Duration,
    /// How long a request line and headers may take once begun.
    pub header_timeout: Duration,
    /// How long a request body may take once the headers are in.
    pub body_timeout: Duration,
    /// Connections served at once; `None`: derived from the descriptor limit.
    pub max_connections: Option<usize>,
    /// The most detailed log messages written (`RUST_LOG` can only narrow it).
    pub log_level: log::LevelFilter,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub enabled: bool,
    /// Every secret that is accepted (several during a rotation).
    pub secrets: Vec<Secret>,
    /// Empty means every address is allowed.
    pub allowed_ips: Vec<IpNet>,
    pub log_payloads: bool,
    /// Requests per minute per client IP; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    pub journal_retention_days: u32,
}

#[derive(Debug, Clone)]
pub struct FreshserviceConfig {
    pub statuses: CodeTable,
    pub priorities: CodeTable,
    /// Status names that mean the ticket is finished (`closed_at` is set).
    pub done_statuses: Vec<String>,
    pub domain: Option<String>,
    pub api_key: Option<Secret>,
    /// `https://{domain}/api/v2` unless set.
    pub api_base: Option<String>,
    pub max_requests_per_minute: u32,
    pub initial_sync_days: u32,
    /// Tickets looked up one by one per reconcile run, at most.
    pub reconcile_max_tickets: u32,
    /// How long one API request may take.
    pub request_timeout: Duration,
    /// The account's zone: times without one, and abbreviations it uses.
    pub timezone: jiff::tz::TimeZone,
    /// The workspace listings ask for; `None` asks for all (`workspace_id=0`).
    pub workspace_id: Option<u64>,
    /// `[freshservice.webhook_fields]`: the admin's own body keys.
    pub webhook_fields: WebhookFields,
}

/// `[superops]`: a SuperOps account polled over its GraphQL API.
#[derive(Debug, Clone)]
pub struct SuperopsConfig {
    /// The GraphQL endpoint (US by default; EU `https://euapi.superops.ai/msp`).
    pub api_url: String,
    /// The account's subdomain, sent as `CustomerSubDomain`.
    pub subdomain: Option<String>,
    pub api_token: Option<Secret>,
    pub max_requests_per_minute: u32,
    /// The zone of SuperOps' offset-less times.
    pub timezone: jiff::tz::TimeZone,
    pub initial_sync_days: u32,
    /// Tickets looked up one by one per reconcile run, at most.
    pub reconcile_max_tickets: u32,
    pub request_timeout: Duration,
    /// Normalized status names after which a ticket is finished.
    pub done_statuses: Vec<String>,
    /// `[superops.statuses]`: the account's status names to Codex's.
    pub statuses: NameMap,
    /// `[superops.priorities]`: the account's priority names to Codex's.
    pub priorities: NameMap,
}

impl SuperopsConfig {
    /// True when an account (subdomain and token) is configured.
    pub fn configured(&self) -> bool {
        self.subdomain.is_some() && self.api_token.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub sync_tickets_enabled: bool,
    pub ticket_sync_interval: Duration,
    pub ticket_sync_interval_with_webhooks: Duration,
    pub webhook_healthy_window: Duration,
    pub min_webhook_coverage: f64,
    pub reconcile_interval: Duration,
}

/// Where tickets are kept.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection string; the password never leaves it except to
/// the driver.
#[derive(Clone)]
pub struct PostgresUrl {
    url: String,
    masked: String,
}

/// A value that must never be logged, printed or returned.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for comparison or for the one API that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl PostgresUrl {
    /// The connection string as the driver needs it, password included.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The connection string with the password replaced by `***`.
    pub fn masked(&self) -> &str {
        &self.masked
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl DatabaseUrl {
    /// The connection string with any password masked, for logs and output.
    pub fn masked(&self) -> String {
        match self {
            // An absolute path keeps its leading '/', giving sqlite:////abs.db.
            DatabaseUrl::Sqlite(path) => format!("sqlite:///{}", path.display()),
            DatabaseUrl::Postgres(url) => url.masked.clone(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    /// Accepts the predecessor's SQLAlchemy-style URLs:
    /// `sqlite:///relative.db`, `sqlite:////absolute.db`,
    /// `postgresql://…`, `postgres://…`, `postgresql+psycopg2://…`.
    fn from_str(text: &str) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite:///") {
            if path.is_empty() || path == ":memory:" {
                return Err(format!(
                    "'{text}' names no database file; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("sqlite:") {
            return Err(format!(
                "'{text}' is not a SQLite URL Codex understands; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            ));
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            "expected a URL such as sqlite:///codex.db or postgresql://user:password@host:5432/codex"
                .to_string()
        })?;
        let scheme_base = scheme.split('+').next().unwrap_or(scheme);
        if scheme_base != "postgresql" && scheme_base != "postgres" {
            return Err(format!(
                "unsupported database scheme '{scheme}'; use sqlite:/// or postgresql://"
            ));
        }
        let url = format!("postgresql://{rest}");
        let masked = mask_url_password(&url);
        if let Err(error) = tokio_postgres::Config::from_str(&url) {
            return Err(format!(
                "'{masked}' is not a valid PostgreSQL connection string: {error}"
            ));
        }
        Ok(DatabaseUrl::Postgres(PostgresUrl { url, masked }))
    }
}

/// Replaces the password of `scheme://user:password@host/...` (and a
/// `password=` query parameter) with `***`.
pub fn mask_url_password(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find('/')
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = authority_start + colon + 1;
                out.replace_range(start..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

/// Reads `300`, `90s`, `5m`, `1h`, `1h30m`, `2 hours` as a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let signed: jiff::SignedDuration = text.parse().map_err(|_| {
                format!("'{text}' is not a duration; write seconds (300) or a unit (5m, 1h)")
            })?;
            Duration::try_from(signed).map_err(|_| format!("'{text}' must not be negative"))?
        }
    };
    if duration.is_zero() {
        return Err(format!("'{text}' must be longer than zero"));
    }
    Ok(duration)
}

/// `parse_duration`, within `min..=max`.
fn parse_duration_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if (min..=max).contains(&duration) {
        Ok(duration)
    } else {
        Err(format!(
            "'{}' must be between {} and {}",
            text.trim(),
            format_duration(min),
            format_duration(max)
        ))
    }
}

/// Formats a duration the way `parse_duration` reads it back.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds > 0 && seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds > 0 && seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("'{other}' is not a boolean; use true or false")),
    }
}

/// Parses `10.0.0.1, 192.168.0.0/16, 2001:db8::/32` (bare addresses become
/// single-host networks).
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, String> {
    split_list(text)
        .map(|item| {
            if let Ok(net) = item.parse::<IpNet>() {
                return Ok(net.trunc());
            }
            item.parse::<std::net::IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("'{item}' is neither an IP address nor a CIDR network"))
        })
        .collect()
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// The sections and keys Codex reads; anything else gets a warning.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "bind",
            "threads",
            "base_path",
            "max_body_bytes",
            "trusted_proxies",
            "read_timeout",
            "header_timeout",
            "body_timeout",
            "max_connections",
            "log_level",
        ],
    ),
    ("database", &["connection_string"]),
    (
        "webhooks",
        &[
            "enabled",
            "secret",
            "allowed_ips",
            "log_payloads",
            "rate_limit_per_minute",
            "journal_retention_days",
        ],
    ),
    (
        "freshservice",
        &[
            "domain",
            "api_key",
            "api_base",
            "max_requests_per_minute",
            "initial_sync_days",
            "reconcile_max_tickets",
            "request_timeout",
            "done_statuses",
            "timezone",
            "workspace_id",
        ],
    ),
    (
        "superops",
        &[
            "api_url",
            "subdomain",
            "api_token",
            "max_requests_per_minute",
            "timezone",
            "initial_sync_days",
            "reconcile_max_tickets",
            "request_timeout",
            "done_statuses",
        ],
    ),
    (
        "scheduler",
        &[
            "sync_tickets_enabled",
            "ticket_sync_interval",
            "ticket_sync_interval_with_webhooks",
            "webhook_healthy_window",
            "min_webhook_coverage",
            "reconcile_interval",
        ],
    ),
];

/// Sections whose keys are data (status and priority ids), not settings.
const TABLE_SECTIONS: &[&str] = &[
    "freshservice.statuses",
    "freshservice.priorities",
    "freshservice.webhook_fields",
    "superops.statuses",
    "superops.priorities",
];

/// A loaded configuration and the warnings found while reading it.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// Finds the configuration file (`--config`, else `$CODEX_CONFIG`, else
    /// the first of `SEARCH_PATH` that exists, else none) and reads it,
    /// applying the environment overrides.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
        let path = match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => match std::env::var_os(ENV_CONFIG) {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => SEARCH_PATH
                    .iter()
                    .map(PathBuf::from)
                    .find(|path| path.is_file()),
            },
        };
        let text = match &path {
            Some(path) => std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.clone(),
                error,
            })?,
            None => String::new(),
        };
        Config::from_ini(&text, path, &|name| std::env::var(name).ok())
    }

    /// Reads configuration text; `env` supplies the environment overrides.
    pub fn from_ini(
        text: &str,
        source: Option<PathBuf>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let origin = source.as_ref().map_or_else(
            || "built-in defaults".to_string(),
            |p| p.display().to_string(),
        );
        // Values are taken literally, like Python's configparser: a `#` or `;`
        // inside a secret is part of the secret, not a comment.
        let mut defaults = IniDefault::default();
        defaults.enable_inline_comments = false;
        let mut ini = Ini::new_from_defaults(defaults);
        let map = ini
            .read(text.to_string())
            .map_err(|message| ConfigError::Syntax {
                origin: origin.clone(),
                message,
            })?;
        let mut reader = Reader {
            map: &map,
            problems: Vec::new(),
        };
        let mut warnings = reader.unknown_keys(&origin);

        let server = ServerConfig {
            bind: reader.parse("server", "bind", "127.0.0.1:5010", |v| {
                v.to_socket_addrs()
                    .map_err(|e| format!("'{v}' is not an address to listen on ({e})"))?
                    .next()
                    .ok_or_else(|| format!("'{v}' resolves to no address"))
            }),
            threads: reader.parse("server", "threads", "64", |v| {
                parse_range(v, 1, 1024).map(|n| n as usize)
            }),
            base_path: reader.parse("server", "base_path", "", |v| {
                let trimmed = v.trim().trim_end_matches('/');
                if trimmed.is_empty() {
                    Ok(String::new())
                } else if trimmed.starts_with('/') && !trimmed.contains(['?', '#', ' ']) {
                    Ok(trimmed.to_string())
                } else {
                    Err(format!(
                        "'{v}' must be a path starting with '/', such as /codex"
                    ))
                }
            }),
            max_body_bytes: reader.parse("server", "max_body_bytes", "1048576", |v| {
                parse_range(v, 1024, 64 * 1024 * 1024).map(|n| n as usize)
            }),
            trusted_proxies: reader.parse("server", "trusted_proxies", "", parse_networks),
            read_timeout: reader.parse("server", "read_timeout", "30s", |v| {
                let timeout = parse_duration(v)?;
                if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&timeout) {
                    Ok(timeout)
                } else {
                    Err(format!("'{}' must be between 1s and 1h", v.trim()))
                }
            }),
            header_timeout: reader.parse("server", "header_timeout", "10s", |v| {
                parse_duration_within(v, Duration::from_secs(1), Duration::from_secs(300))
            }),
            body_timeout: reader.parse("server", "body_timeout", "30s", |v| {
                parse_duration_within(v, Duration::from_secs(1), Duration::from_secs(3600))
            }),
            max_connections: reader.parse("server", "max_connections", "", |v| {
                if v.trim().is_empty() {
                    Ok(None)
                } else {
                    parse_range(v, 16, 1_000_000).map(|n| Some(n as usize))
                }
            }),
            log_level: reader.parse("server", "log_level", "info", |v| {
                v.trim().parse().map_err(|_| {
                    format!(
                        "'{}' is not a log level; use error, warn, info, debug, trace or off",
                        v.trim()
                    )
                })
            }),
        };

        let database_text = env(ENV_DATABASE_URL).filter(|v| !v.trim().is_empty());
        let database = DatabaseConfig {
            url: match database_text {
                Some(text) => text.parse().unwrap_or_else(|message| {
                    reader
                        .problems
                        .push(format!("{ENV_DATABASE_URL}: {message}"));
                    DatabaseUrl::Sqlite(PathBuf::from("codex.db"))
                }),
                None => reader.parse(
                    "database",
                    "connection_string",
                    "sqlite:///codex.db",
                    DatabaseUrl::from_str,
                ),
            },
        };

        let secret_text = env(ENV_WEBHOOK_SECRET)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| reader.raw("webhooks", "secret"))
            .unwrap_or_default();
        let webhooks = WebhookConfig {
            enabled: reader.parse("webhooks", "enabled", "false", parse_bool),
            secrets: split_list(&secret_text).map(Secret::new).collect(),
            allowed_ips: reader.parse("webhooks", "allowed_ips", "", parse_networks),
            log_payloads: reader.parse("webhooks", "log_payloads", "false", parse_bool),
            rate_limit_per_minute: reader.parse("webhooks", "rate_limit_per_minute", "600", |v| {
                parse_range(v, 0, 100_000_000).map(|n| n as u32)
            }),
            journal_retention_days: reader.parse("webhooks", "journal_retention_days", "30", |v| {
                parse_range(v, 1, 36_500).map(|n| n as u32)
            }),
        };
        if webhooks.enabled && webhooks.secrets.is_empty() {
            reader.problems.push(format!(
                "[webhooks] enabled = true but no secret is set: set [webhooks] secret (see `codex gen-secret`) or {ENV_WEBHOOK_SECRET}"
            ));
        }

        let done_statuses = reader.parse(
            "freshservice",
            "done_statuses",
            &DEFAULT_DONE_STATUSES.join(", "),
            |v| {
                Ok(split_list(v)
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>())
            },
        );
        let mut statuses = default_statuses();
        let mut priorities = default_priorities();
        reader.code_table("freshservice.statuses", &mut statuses);
        reader.code_table("freshservice.priorities", &mut priorities);
        let api_key = env(ENV_FRESHSERVICE_API_KEY)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| reader.raw("freshservice", "api_key"))
            .map(|v| Secret::new(v.trim()))
            .filter(|s| !s.expose().is_empty());
        let freshservice = FreshserviceConfig {
            statuses,
            priorities,
            done_statuses,
            domain: reader.optional("freshservice", "domain", |v| {
                let v = v
                    .trim()
                    .trim_start_matches("https://")
                    .trim_end_matches('/');
                if v.contains(['/', ' ', '?']) {
                    Err(format!(
                        "'{v}' is not a domain such as yourcompany.freshservice.com"
                    ))
                } else {
                    Ok(v.to_string())
                }
            }),
            api_key,
            api_base: reader.optional("freshservice", "api_base", |v| {
                let v = v.trim().trim_end_matches('/');
                if v.starts_with("http://") || v.starts_with("https://") {
                    Ok(v.to_string())
                } else {
                    Err(format!("'{v}' must be an http:// or https:// URL"))
                }
            }),
            max_requests_per_minute: reader.parse(
                "freshservice",
                "max_requests_per_minute",
                "40",
                |v| parse_range(v, 1, 10_000).map(|n| n as u32),
            ),
            initial_sync_days: reader.parse("freshservice", "initial_sync_days", "30", |v| {
                parse_range(v, 1, 3650).map(|n| n as u32)
            }),
            reconcile_max_tickets: reader.parse(
                "freshservice",
                "reconcile_max_tickets",
                "50",
                |v| parse_range(v, 0, 100_000).map(|n| n as u32),
            ),
            request_timeout: reader.parse("freshservice", "request_timeout", "30s", parse_duration),
            timezone: reader.parse("freshservice", "timezone", "UTC", |v| {
                crate::timestamp::zone(v.trim()).map_err(|e| e.to_string())
            }),
            workspace_id: reader.optional("freshservice", "workspace_id", |v| {
                parse_range(v, 0, u64::MAX >> 1)
            }),
            webhook_fields: reader.webhook_fields("freshservice.webhook_fields"),
        };

        let superops = reader.superops(env);

        let scheduler = SchedulerConfig {
            sync_tickets_enabled: reader.parse(
                "scheduler",
                "sync_tickets_enabled",
                "true",
                parse_bool,
            ),
            ticket_sync_interval: reader.parse(
                "scheduler",
                "ticket_sync_interval",
                "5m",
                parse_duration,
            ),
            ticket_sync_interval_with_webhooks: reader.parse(
                "scheduler",
                "ticket_sync_interval_with_webhooks",
                "1h",
                parse_duration,
            ),
            webhook_healthy_window: reader.parse(
                "scheduler",
                "webhook_healthy_window",
                "1h",
                parse_duration,
            ),
            min_webhook_coverage: reader.parse("scheduler", "min_webhook_coverage", "0.95", |v| {
                match v.trim().parse::<f64>() {
                    Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
                    _ => Err(format!(
                        "'{v}' must be a fraction between 0 and 1, such as 0.95"
                    )),
                }
            }),
            reconcile_interval: reader.parse(
                "scheduler",
                "reconcile_interval",
                "24h",
                parse_duration,
            ),
        };
        // Neither endpoint nor key means no Freshservice account is configured
        // (webhooks only); half of the pair is a mistake worth stopping for.
        let has_endpoint = freshservice.domain.is_some() || freshservice.api_base.is_some();
        match (has_endpoint, freshservice.api_key.is_some()) {
            (true, false) if scheduler.sync_tickets_enabled => reader.problems.push(format!(
                "[freshservice] domain is set but api_key is not: set [freshservice] api_key or {ENV_FRESHSERVICE_API_KEY}, or sync_tickets_enabled = false"
            )),
            (false, true) => reader.problems.push(
                "[freshservice] api_key is set but domain is not: set [freshservice] domain, such as yourcompany.freshservice.com"
                    .to_string(),
            ),
            _ => {}
        }

        if !reader.problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin,
                problems: reader.problems,
            });
        }
        if source.is_none() {
            warnings.push("no configuration file found; using built-in defaults".to_string());
        }
        Ok(Loaded {
            config: Config {
                source,
                server,
                database,
                webhooks,
                freshservice,
                superops,
                scheduler,
            },
            warnings,
        })
    }

    /// True when a Freshservice account (API endpoint and key) is configured.
    pub fn freshservice_configured(&self) -> bool {
        self.freshservice.api_key.is_some()
            && (self.freshservice.domain.is_some() || self.freshservice.api_base.is_some())
    }

    /// True when the poller runs: an account is configured and syncing is on.
    pub fn freshservice_polling(&self) -> bool {
        self.scheduler.sync_tickets_enabled && self.freshservice_configured()
    }

    /// The effective configuration as INI text, secrets masked.
    pub fn render_masked(&self) -> String {
        let nets = |list: &[IpNet]| {
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let masked = |secret: Option<&Secret>| match secret {
            Some(_) => "*** (set)".to_string(),
            None => String::new(),
        };
        let s = &self.server;
        let w = &self.webhooks;
        let f = &self.freshservice;
        let sch = &self.scheduler;
        let mut out = format!(
            "# effective configuration from {}\n",
            self.source.as_ref().map_or_else(
                || "built-in defaults".to_string(),
                |p| p.display().to_string()
            )
        );
        out += &format!(
            "[server]\nbind = {}\nthreads = {}\nbase_path = {}\nmax_body_bytes = {}\ntrusted_proxies = {}\nread_timeout = {}\n",
            s.bind,
            s.threads,
            s.base_path,
            s.max_body_bytes,
            nets(&s.trusted_proxies),
            format_duration(s.read_timeout)
        );
        out += &format!(
            "header_timeout = {}\nbody_timeout = {}\nmax_connections = {}\nlog_level = {}\n\n",
            format_duration(s.header_timeout),
            format_duration(s.body_timeout),
            s.max_connections
                .map_or_else(String::new, |n| n.to_string()),
            s.log_level.as_str().to_ascii_lowercase()
        );
        out += &format!(
            "[database]\nconnection_string = {}\n\n",
            self.database.url.masked()
        );
        out += &format!(
            "[webhooks]\nenabled = {}\nsecret = {}\nallowed_ips = {}\nlog_payloads = {}\nrate_limit_per_minute = {}\njournal_retention_days = {}\n\n",
            w.enabled,
            match w.secrets.len() {
                0 => String::new(),
                1 => "*** (1 secret)".to_string(),
                n => format!("*** ({n} secrets)"),
            },
            nets(&w.allowed_ips),
            w.log_payloads,
            w.rate_limit_per_minute,
            w.journal_retention_days
        );
        out += &format!(
            "[freshservice]\ndomain = {}\napi_key = {}\napi_base = {}\nmax_requests_per_minute = {}\ninitial_sync_days = {}\nreconcile_max_tickets = {}\nrequest_timeout = {}\ndone_statuses = {}\ntimezone = {}\nworkspace_id = {}\n\n",
            f.domain.as_deref().unwrap_or(""),
            masked(f.api_key.as_ref()),
            f.api_base.as_deref().unwrap_or(""),
            f.max_requests_per_minute,
            f.initial_sync_days,
            f.reconcile_max_tickets,
            format_duration(f.request_timeout),
            f.done_statuses.join(", "),
            f.timezone.iana_name().unwrap_or("UTC"),
            f.workspace_id.map(|id| id.to_string()).unwrap_or_default()
        );
        out += "[freshservice.webhook_fields]\n";
        out += &f.webhook_fields.render();
        out += "\n";
        out += "[freshservice.statuses]\n";
        out += &f.statuses.render();
        out += "\n[freshservice.priorities]\n";
        out += &f.priorities.render();
        out += &self.superops.render();
        out += &format!(
            "\n[scheduler]\nsync_tickets_enabled = {}\nticket_sync_interval = {}\nticket_sync_interval_with_webhooks = {}\nwebhook_healthy_window = {}\nmin_webhook_coverage = {}\nreconcile_interval = {}\n",
            sch.sync_tickets_enabled,
            format_duration(sch.ticket_sync_interval),
            format_duration(sch.ticket_sync_interval_with_webhooks),
            format_duration(sch.webhook_healthy_window),
            sch.min_webhook_coverage,
            format_duration(sch.reconcile_interval)
        );
        out
    }
}

fn parse_range(text: &str, min: u64, max: u64) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{}' must be a whole number from {min} to {max}",
            text.trim()
        )),
    }
}

/// Reads typed values out of the parsed INI map, collecting every problem
/// instead of stopping at the first.
struct Reader<'a> {
    map: &'a std::collections::HashMap<String, std::collections::HashMap<String, Option<String>>>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn raw(&self, section: &str, key: &str) -> Option<String> {
        self.map
            .get(section)
            .and_then(|keys| keys.get(key))
            .map(|value| value.clone().unwrap_or_default())
    }

    fn parse<T>(
        &mut self,
        section: &str,
        key: &str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        if let Some(value) = self.raw(section, key) {
            match parse(&value) {
                Ok(parsed) => return parsed,
                Err(message) => self.problems.push(format!("[{section}] {key}: {message}")),
            }
        }
        // A built-in default always parses; it is covered by the tests.
        parse(default).unwrap_or_else(|message| panic!("default for [{section}] {key}: {message}"))
    }

    fn optional<T>(
        &mut self,
        section: &str,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.raw(section, key).filter(|v| !v.trim().is_empty())?;
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.problems.push(format!("[{section}] {key}: {message}"));
                None
            }
        }
    }

    /// `[freshservice.statuses]`: `<id> = <name>` or `<id> = <name>, <Display Name>`.
    fn code_table(&mut self, section: &str, table: &mut CodeTable) {
        let Some(entries) = self.map.get(section) else {
            return;
        };
        let mut entries: Vec<_> = entries.iter().collect();
        entries.sort();
        for (key, value) in entries {
            let value = value.clone().unwrap_or_default();
            let Ok(id) = key.trim().parse::<i64>() else {
                self.problems.push(format!(
                    "[{section}] {key}: keys here are numeric ids, such as 11 = awaiting_parts, Awaiting Parts"
                ));
                continue;
            };
            let (name, display) = match value.split_once(',') {
                Some((name, display)) => (name.trim(), Some(display.trim())),
                None => (value.trim(), None),
            };
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                self.problems.push(format!(
                    "[{section}] {key}: '{name}' must be a lower-case name of letters, digits and '_', such as awaiting_parts"
                ));
                continue;
            }
            table.insert(id, name, display.filter(|d| !d.is_empty()));
        }
    }

    /// `[freshservice.webhook_fields]`: `<codex field> = <body key>[, <body key>…]`.
    fn webhook_fields(&mut self, section: &str) -> WebhookFields {
        let mut fields = WebhookFields::default();
        let Some(entries) = self.map.get(section) else {
            return fields;
        };
        let mut entries: Vec<_> = entries.iter().collect();
        entries.sort();
        for (field, keys) in entries {
            let keys: Vec<String> = split_list(keys.as_deref().unwrap_or_default())
                .map(str::to_string)
                .collect();
            if let Err(message) = fields.insert(field.trim(), keys) {
                self.problems
                    .push(format!("[{section}] {field}: {message}"));
            }
        }
        fields
    }

    /// `[superops]`, `[superops.statuses]` and `[superops.priorities]`.
    fn superops(&mut self, env: &dyn Fn(&str) -> Option<String>) -> SuperopsConfig {
        let section = "superops";
        let api_token = env(ENV_SUPEROPS_API_TOKEN)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.raw(section, "api_token"))
            .map(|v| Secret::new(v.trim()))
            .filter(|s| !s.expose().is_empty());
        let mut statuses = NameMap::from_pairs(&superops::DEFAULT_STATUSES);
        let mut priorities = NameMap::from_pairs(&superops::DEFAULT_PRIORITIES);
        self.name_map("superops.statuses", &mut statuses);
        self.name_map("superops.priorities", &mut priorities);
        let config = SuperopsConfig {
            api_url: self.parse(section, "api_url", "https://api.superops.ai/msp", |v| {
                let v = v.trim().trim_end_matches('/');
                if v.starts_with("http://") || v.starts_with("https://") {
                    Ok(v.to_string())
                } else {
                    Err(format!(
                        "'{v}' must be an http:// or https:// URL, such as https://euapi.superops.ai/msp"
                    ))
                }
            }),
            subdomain: self.optional(section, "subdomain", |v| {
                let v = v.trim();
                if v.contains(['/', ' ', '?', ':']) {
                    Err(format!(
                        "'{v}' is not a subdomain; write the part before .superops.ai, such as yourcompany"
                    ))
                } else {
                    Ok(v.to_string())
                }
            }),
            api_token,
            max_requests_per_minute: self.parse(section, "max_requests_per_minute", "400", |v| {
                parse_range(v, 1, 800).map(|n| n as u32)
            }),
            timezone: self.parse(section, "timezone", "UTC", |v| {
                crate::timestamp::zone(v.trim()).map_err(|e| e.to_string())
            }),
            initial_sync_days: self.parse(section, "initial_sync_days", "30", |v| {
                parse_range(v, 1, 36_500).map(|n| n as u32)
            }),
            reconcile_max_tickets: self.parse(section, "reconcile_max_tickets", "500", |v| {
                parse_range(v, 0, 100_000).map(|n| n as u32)
            }),
            request_timeout: self.parse(section, "request_timeout", "30s", parse_duration),
            done_statuses: self.parse(
                section,
                "done_statuses",
                &superops::DEFAULT_DONE_STATUSES.join(", "),
                |v| Ok(split_list(v).map(str::to_ascii_lowercase).collect()),
            ),
            statuses,
            priorities,
        };
        match (config.subdomain.is_some(), config.api_token.is_some()) {
            (true, false) => self.problems.push(format!(
                "[superops] subdomain is set but api_token is not: set [superops] api_token or {ENV_SUPEROPS_API_TOKEN}"
            )),
            (false, true) => self.problems.push(
                "[superops] api_token is set but subdomain is not: set [superops] subdomain, such as yourcompany"
                    .to_string(),
            ),
            _ => {}
        }
        config
    }

    /// `[superops.statuses]`: `<SuperOps name> = <codex_name>`.
    fn name_map(&mut self, section: &str, map: &mut NameMap) {
        let Some(entries) = self.map.get(section) else {
            return;
        };
        let mut entries: Vec<_> = entries.iter().collect();
        entries.sort();
        for (name, value) in entries {
            let value = value.clone().unwrap_or_default();
            let value = value.trim();
            let valid = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if valid {
                map.insert(name, value);
            } else {
                self.problems.push(format!(
                    "[{section}] {name}: '{value}' must be a lower-case name of letters, digits and '_', such as awaiting_parts"
                ));
            }
        }
    }

    fn unknown_keys(&self, origin: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut sections: Vec<_> = self.map.iter().collect();
        sections.sort_by(|a, b| a.0.cmp(b.0));
        for (section, keys) in sections {
            if TABLE_SECTIONS.contains(&section.as_str()) {
                continue;
            }
            let Some((_, known)) = KNOWN_KEYS.iter().find(|(name, _)| name == section) else {
                warnings.push(format!("{origin}: unknown section [{section}] is ignored"));
                continue;
            };
            let mut keys: Vec<_> = keys.keys().collect();
            keys.sort();
            for key in keys {
                if !known.contains(&key.as_str()) {
                    warnings.push(format!(
                        "{origin}: unknown key [{section}] {key} is ignored"
                    ));
                }
            }
        }
        warnings
    }
}

impl SuperopsConfig {
    /// The `[superops]` sections as INI text, the token masked.
    fn render(&self) -> String {
        format!(
            "\n[superops]\napi_url = {}\nsubdomain = {}\napi_token = {}\nmax_requests_per_minute = {}\ntimezone = {}\ninitial_sync_days = {}\nreconcile_max_tickets = {}\nrequest_timeout = {}\ndone_statuses = {}\n\n[superops.statuses]\n{}\n[superops.priorities]\n{}",
            self.api_url,
            self.subdomain.as_deref().unwrap_or(""),
            if self.api_token.is_some() {
                "*** (set)"
            } else {
                ""
            },
            self.max_requests_per_minute,
            self.timezone.iana_name().unwrap_or("UTC"),
            self.initial_sync_days,
            self.reconcile_max_tickets,
            format_duration(self.request_timeout),
            self.done_statuses.join(", "),
            self.statuses.render(),
            self.priorities.render(),
        )
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

impl Default for Config {
    fn default() -> Config {
        Config::from_ini("", None, &|_| None)
            .map(|loaded| loaded.config)
            .unwrap_or_else(|error| panic!("built-in defaults are invalid: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, ConfigError> {
        Config::from_ini(text, Some(PathBuf::from("test.conf")), &|_| None)
    }

    #[test]
    fn the_example_documents_every_key_with_its_default() {
        let example = include_str!("../codex.conf.example");
        let loaded = Config::from_ini(example, Some(PathBuf::from("codex.conf.example")), &|_| {
            None
        })
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let body = |text: String| text.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(
            body(loaded.config.render_masked()),
            body(Config::default().render_masked())
        );
        for (section, keys) in KNOWN_KEYS {
            assert!(example.contains(&format!("[{section}]")), "[{section}]");
            for key in *keys {
                assert!(
                    example.contains(&format!("\n{key} =")),
                    "[{section}] {key} is not documented"
                );
            }
        }
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = Config::default();
        assert_eq!(config.server.bind.to_string(), "127.0.0.1:5010");
        assert_eq!(config.server.max_body_bytes, 1_048_576);
        assert!(!config.webhooks.enabled);
        assert_eq!(config.webhooks.rate_limit_per_minute, 600);
        assert_eq!(
            config.scheduler.ticket_sync_interval,
            Duration::from_secs(300)
        );
        assert_eq!(config.database.url.masked(), "sqlite:///codex.db");
    }

    #[test]
    fn every_problem_is_named_with_section_and_key() {
        let error = load("[server]\nthreads = many\n[webhooks]\nenabled = maybe\nallowed_ips = 10.0.0.0/8, nonsense\n")
            .err()
            .expect("invalid values are refused");
        let text = error.to_string();
        assert!(text.contains("test.conf"), "{text}");
        assert!(text.contains("[server] threads"), "{text}");
        assert!(text.contains("[webhooks] enabled"), "{text}");
        assert!(text.contains("'nonsense'"), "{text}");
    }

    #[test]
    fn enabled_without_secret_is_refused() {
        let error = load("[webhooks]\nenabled = true\n").err().expect("refused");
        assert!(error.to_string().contains("no secret is set"), "{error}");
    }

    #[test]
    fn secrets_are_trimmed_split_and_kept_literally() {
        let loaded = load("[webhooks]\nenabled = true\nsecret =  old#1 , new;2  \n").unwrap();
        let secrets: Vec<_> = loaded
            .config
            .webhooks
            .secrets
            .iter()
            .map(|s| s.expose().to_string())
            .collect();
        assert_eq!(secrets, ["old#1", "new;2"]);
        let rendered = loaded.config.render_masked();
        assert!(
            !rendered.contains("old#1") && !rendered.contains("new;2"),
            "{rendered}"
        );
        assert!(!format!("{:?}", loaded.config).contains("old#1"));
    }

    #[test]
    fn environment_overrides_file() {
        let env = |name: &str| match name {
            ENV_WEBHOOK_SECRET => Some("from-env".to_string()),
            ENV_DATABASE_URL => Some("sqlite:////tmp/x.db".to_string()),
            _ => None,
        };
        let loaded = Config::from_ini("[webhooks]\nsecret = file\n", None, &env).unwrap();
        assert_eq!(loaded.config.webhooks.secrets[0].expose(), "from-env");
        assert_eq!(loaded.config.database.url.masked(), "sqlite:////tmp/x.db");
    }

    #[test]
    fn unknown_keys_warn() {
        let loaded = load("[server]\nbindd = 1\n[extra]\nx = 1\n").unwrap();
        assert!(loaded.warnings.iter().any(|w| w.contains("[server] bindd")));
        assert!(loaded.warnings.iter().any(|w| w.contains("[extra]")));
    }

    #[test]
    fn database_urls() {
        match "sqlite:///data/codex.db".parse::<DatabaseUrl>().unwrap() {
            DatabaseUrl::Sqlite(path) => assert_eq!(path, PathBuf::from("data/codex.db")),
            other => panic!("{other:?}"),
        }
        match "sqlite:////var/lib/codex.db"
            .parse::<DatabaseUrl>()
            .unwrap()
        {
            DatabaseUrl::Sqlite(path) => assert_eq!(path, PathBuf::from("/var/lib/codex.db")),
            other => panic!("{other:?}"),
        }
        let pg: DatabaseUrl = "postgresql+psycopg2://codex:s3cret@db:5432/codex"
            .parse()
            .unwrap();
        assert_eq!(pg.masked(), "postgresql://codex:***@db:5432/codex");
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
        assert!("sqlite:///".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn masks_query_passwords() {
        assert_eq!(
            mask_url_password("postgresql://u@h/db?password=pw&sslmode=disable"),
            "postgresql://u@h/db?password=***&sslmode=disable"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0").is_err());
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn status_table_overrides() {
        let loaded =
            load("[freshservice.statuses]\n11 = awaiting_parts, Awaiting Parts\n2 = opened\n")
                .unwrap();
        let statuses = &loaded.config.freshservice.statuses;
        assert_eq!(statuses.name(11), Some("awaiting_parts"));
        assert_eq!(statuses.name(2), Some("opened"));
        assert_eq!(statuses.lookup_name("Awaiting Parts"), Some(11));
        let error = load("[freshservice.statuses]\nx = a\n12 = Bad Name\n")
            .err()
            .unwrap();
        let text = error.to_string();
        assert!(text.contains("[freshservice.statuses] x"), "{text}");
        assert!(text.contains("[freshservice.statuses] 12"), "{text}");
    }

    #[test]
    fn freshservice_zone_workspace_and_webhook_fields() {
        let loaded = load(
            "[freshservice]\ntimezone = Asia/Kolkata\nworkspace_id = 3\n\
             [freshservice.webhook_fields]\nticket_id = TicketNumber, Ref\n",
        )
        .unwrap();
        let f = &loaded.config.freshservice;
        assert_eq!(f.timezone.iana_name(), Some("Asia/Kolkata"));
        assert_eq!(f.workspace_id, Some(3));
        let rendered = loaded.config.render_masked();
        assert!(
            rendered.contains("ticket_id = TicketNumber, Ref"),
            "{rendered}"
        );
        assert!(rendered.contains("timezone = Asia/Kolkata"), "{rendered}");
        assert_eq!(Config::default().freshservice.workspace_id, None);
        let error = load(
            "[freshservice]\ntimezone = Mars/Olympus\n[freshservice.webhook_fields]\ncolour = c\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("[freshservice] timezone"), "{error}");
        assert!(
            error.contains("[freshservice.webhook_fields] colour"),
            "{error}"
        );
    }

    #[test]
    fn superops_section() {
        let defaults = Config::default().superops;
        assert_eq!(defaults.api_url, "https://api.superops.ai/msp");
        assert_eq!(defaults.max_requests_per_minute, 400);
        assert!(!defaults.configured());
        assert_eq!(
            defaults.statuses.get("WAITING ON  customer"),
            Some("waiting_customer")
        );
        let env = |name: &str| (name == ENV_SUPEROPS_API_TOKEN).then(|| "tok-from-env".to_string());
        let loaded = Config::from_ini(
            "[superops]\nsubdomain = acme\napi_url = https://euapi.superops.ai/msp/\ntimezone = Europe/Berlin\n\
             [superops.statuses]\nAwaiting Parts = awaiting_parts\nOpen = new\n",
            None,
            &env,
        )
        .unwrap();
        let so = &loaded.config.superops;
        assert!(so.configured());
        assert_eq!(so.api_token.as_ref().unwrap().expose(), "tok-from-env");
        assert_eq!(so.api_url, "https://euapi.superops.ai/msp");
        assert_eq!(so.statuses.get("awaiting parts"), Some("awaiting_parts"));
        assert_eq!(so.statuses.get("Open"), Some("new"));
        assert_eq!(so.statuses.get("Closed"), Some("closed"));
        let rendered = loaded.config.render_masked();
        assert!(
            !rendered.contains("tok-from-env")
                && !format!("{:?}", loaded.config).contains("tok-from-env")
        );
        assert!(
            rendered.contains("awaiting parts = awaiting_parts"),
            "{rendered}"
        );
        let error = load("[superops]\nsubdomain = acme\nmax_requests_per_minute = 900\n[superops.priorities]\nP1 = Top Priority\n")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("api_token is not"), "{error}");
        assert!(
            error.contains("[superops] max_requests_per_minute"),
            "{error}"
        );
        assert!(error.contains("[superops.priorities] p1"), "{error}");
    }

    #[test]
    fn networks() {
        let nets = parse_networks("10.0.0.1, 192.168.1.7/24, 2001:db8::/32").unwrap();
        assert_eq!(nets[0].to_string(), "10.0.0.1/32");
        assert_eq!(nets[1].to_string(), "192.168.1.0/24");
        assert!(parse_networks("10.0.0.0/33").is_err());
    }
}
