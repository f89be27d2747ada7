//! `codex.conf`: one struct, read and validated once at start-up, then shared
//! read-only. The structs are written out in `sections.rs`; every key is
//! declared once, in `SETTINGS` below: the field it sets, its default,
//! how its text is read, its environment override and what a reload
//! (SIGHUP) does with it. Reading the file, `check-config`'s rendering, the
//! reload plan, `docs/configuration.md` (`reference.rs`) and the test that
//! keeps `codex.conf.example` true all walk that one table.

#[cfg(test)]
mod reference;
mod sections;
mod tables;
#[cfg(test)]
mod tests;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use configparser::ini::{Ini, IniDefault};

use self::tables::Table;
use self::value::{
    Show, address, base_path, duration_within, file_path, flag, fraction, host, log_level, names,
    number, optional, secret, secrets, signature_scheme, strong, url, zone,
};
use crate::error::{ConfigError, InvalidValue};

pub use self::sections::*;
pub use self::tables::{CodeTable, FIELD_KEYS, NameMap, WebhookFields, slug};
#[cfg(test)]
use self::value::mask_url_password;
pub use self::value::{
    DatabaseUrl, PostgresUrl, Secret, SignatureScheme, format_duration, parse_duration,
    parse_networks,
};

/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "CODEX_CONFIG";
/// Environment variable overriding `[webhooks] secret`.
pub const ENV_WEBHOOK_SECRET: &str = "CODEX_WEBHOOK_SECRET";
/// Environment variable overriding `[api] tokens`.
pub const ENV_API_TOKENS: &str = "CODEX_API_TOKENS";
/// Environment variable overriding `[status] token`.
pub const ENV_STATUS_TOKEN: &str = "CODEX_STATUS_TOKEN";
/// Environment variable overriding `[webhooks] signing_secrets`.
pub const ENV_WEBHOOK_SIGNING_SECRETS: &str = "CODEX_WEBHOOK_SIGNING_SECRETS";
/// Environment variable overriding `[database] connection_string`.
pub const ENV_DATABASE_URL: &str = "CODEX_DATABASE_URL";
/// Environment variable overriding `[freshservice] api_key`.
pub const ENV_FRESHSERVICE_API_KEY: &str = "CODEX_FRESHSERVICE_API_KEY";
/// Environment variable overriding `[superops] api_token`.
pub const ENV_SUPEROPS_API_TOKEN: &str = "CODEX_SUPEROPS_API_TOKEN";
/// Where systemd puts the files of the unit's `LoadCredential=`; each
/// secret's environment variable name is also its credential's name.
pub const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Where Codex looks for its configuration without `--config` or
/// `$CODEX_CONFIG`, in order: its own file, the Python predecessor's
/// (its installer writes `instance/codex.conf`), the system-wide one.
pub const SEARCH_PATH: [&str; 3] = ["codex.conf", "instance/codex.conf", "/etc/codex/codex.conf"];

/// What a reload (SIGHUP) does with a changed setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReload {
    /// It is in force for the next request.
    Now,
    /// It is in force once polling restarts, which the reload does.
    Poller,
    /// The running value is kept until Codex restarts.
    Restart,
}

/// One key of `codex.conf`, or one table section (whose every line is an
/// entry), as `SETTINGS` declares it.
pub struct Setting {
    pub section: &'static str,
    /// `None` for a table section.
    pub key: Option<&'static str>,
    /// The field of the section's struct (`sections.rs`) it sets. Read by
    /// the reference and the test that checks the table against the structs.
    #[cfg_attr(not(test), allow(dead_code))]
    pub field: &'static str,
    /// The default as the file would write it; empty for a table, whose
    /// default entries are those of `Config::default()`. Read by the
    /// reference and the test that checks it against `Config::default()`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub default: &'static str,
    pub on_reload: OnReload,
    /// The environment variable that, when set and not empty, overrides the file.
    pub env: Option<&'static str>,
    /// Shown masked; a reload says only that it changed.
    pub secret: bool,
    /// Reads one line's text (a key's value, or a table's entry) into `Config`.
    pub set: fn(&mut Config, &str, &str) -> Result<(), InvalidValue>,
    /// The `key = value` lines `check-config` prints.
    pub lines: fn(&Config) -> Vec<(String, String)>,
    /// Whether two configurations hold the same value (secrets compared too).
    pub same: fn(&Config, &Config) -> bool,
    /// Puts the value of the second configuration back into the first.
    pub keep: fn(&mut Config, &Config),
}

impl Setting {
    /// `[section] key`, or `[section]` for a table.
    pub fn name(&self) -> String {
        match self.key {
            Some(key) => format!("[{}] {key}", self.section),
            None => format!("[{}]", self.section),
        }
    }
}

/// Whether a field's type is shown masked (`Show::SECRET`); `SETTINGS`
/// names the field by a closure so the type need not be written twice.
const fn secret_of<T: Show>(_field: fn(&Config) -> &T) -> bool {
    T::SECRET
}

/// One key of `SETTINGS`: `key!(section.field [as "key"] = "default",
/// OnReload, parse [, env VAR])`. The field is in `sections.rs`; the
/// key is the field's name unless `as` gives the one the file uses.
macro_rules! key {
    ($section:ident . $field:ident as $key:literal = $default:literal, $on_reload:ident,
        $parse:expr, env $env:expr) => {
        key!(@ $section.$field, $key, $default, $on_reload, $parse, Some($env))
    };
    ($section:ident . $field:ident as $key:literal = $default:literal, $on_reload:ident,
        $parse:expr) => {
        key!(@ $section.$field, $key, $default, $on_reload, $parse, None)
    };
    ($section:ident . $field:ident = $default:literal, $on_reload:ident, $parse:expr,
        env $env:expr) => {
        key!(@ $section.$field, stringify!($field), $default, $on_reload, $parse, Some($env))
    };
    ($section:ident . $field:ident = $default:literal, $on_reload:ident, $parse:expr) => {
        key!(@ $section.$field, stringify!($field), $default, $on_reload, $parse, None)
    };
    (@ $section:ident . $field:ident, $key:expr, $default:literal, $on_reload:ident,
        $parse:expr, $env:expr) => {
        Setting {
            section: stringify!($section),
            key: Some($key),
            field: stringify!($field),
            default: $default,
            on_reload: OnReload::$on_reload,
            env: $env,
            secret: secret_of(|config: &Config| &config.$section.$field),
            set: |config, _, text| {
                config.$section.$field = ($parse)(text)?;
                Ok(())
            },
            lines: |config| vec![($key.to_string(), config.$section.$field.show())],
            same: |a, b| a.$section.$field == b.$section.$field,
            keep: |new, old| new.$section.$field = old.$section.$field.clone(),
        }
    };
}

/// One table section of `SETTINGS`: `table!(section.field, OnReload)`,
/// read from `[section.field]`, whose every line is an entry.
macro_rules! table {
    ($section:ident . $field:ident, $on_reload:ident) => {
        Setting {
            section: concat!(stringify!($section), ".", stringify!($field)),
            key: None,
            field: stringify!($field),
            default: "",
            on_reload: OnReload::$on_reload,
            env: None,
            secret: false,
            set: |config, key, text| config.$section.$field.add(key, text),
            lines: |config| config.$section.$field.lines(),
            same: |a, b| a.$section.$field == b.$section.$field,
            keep: |new, old| new.$section.$field = old.$section.$field.clone(),
        }
    };
}

/// Every setting, in the order `check-config` prints them and
/// `docs/configuration.md` lists them.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    key!(server.bind = "127.0.0.1:5010", Restart, address),
    key!(server.threads = "64", Restart, |v| number(v, 1, 1024)),
    key!(server.base_path = "", Now, base_path),
    key!(server.max_body_bytes = "1048576", Restart, |v| number(v, 1024, 64 << 20)),
    key!(server.max_inflight_body_bytes = "33554432", Restart, |v| number(v, 1024, 1 << 40)),
    key!(server.trusted_proxies = "", Now, parse_networks),
    key!(server.first_byte_timeout = "5s", Restart, |v| duration_within(v, 1, 3600)),
    key!(server.read_timeout = "30s", Restart, |v| duration_within(v, 1, 3600)),
    key!(server.header_timeout = "10s", Restart, |v| duration_within(v, 1, 300)),
    key!(server.body_timeout = "30s", Restart, |v| duration_within(v, 1, 3600)),
    key!(server.max_connections = "", Restart, optional(|v| number(v, 16, 1_000_000))),
    key!(server.max_connections_per_ip = "", Restart, optional(|v| number(v, 1, 1_000_000))),
    key!(server.log_level = "info", Now, log_level),
    key!(server.tls_cert = "", Restart, optional(file_path)),
    key!(server.tls_key = "", Restart, optional(file_path)),

    key!(database.url as "connection_string" = "sqlite:///codex.db", Restart, str::parse,
        env ENV_DATABASE_URL),

    key!(webhooks.enabled = "false", Poller, flag),
    key!(webhooks.secrets as "secret" = "", Now, secrets, env ENV_WEBHOOK_SECRET),
    key!(webhooks.allowed_ips = "", Now, parse_networks),
    key!(webhooks.log_payloads = "false", Now, flag),
    key!(webhooks.rate_limit_per_minute = "600", Now, |v| number(v, 0, 100_000_000)),
    key!(webhooks.journal_retention_days = "30", Restart, |v| number(v, 1, 36_500)),
    key!(webhooks.signature = "none", Now, signature_scheme),
    key!(webhooks.signing_secrets = "", Now, secrets, env ENV_WEBHOOK_SIGNING_SECRETS),

    key!(api.tokens = "", Now, secrets, env ENV_API_TOKENS),
    key!(api.core_url = "", Now, optional(|v| url(v, "https://core.example.com"))),

    key!(status.allowed_ips = "127.0.0.0/8, ::1/128", Now, parse_networks),
    key!(status.token = "", Now, optional(strong), env ENV_STATUS_TOKEN),

    key!(freshservice.domain = "", Poller, optional(|v| host(
        v.trim().trim_start_matches("https://").trim_end_matches('/'),
        &[],
        "a domain such as yourcompany.freshservice.com",
    ))),
    key!(freshservice.api_key = "", Poller, optional(secret), env ENV_FRESHSERVICE_API_KEY),
    key!(freshservice.api_base = "", Poller,
        optional(|v| url(v, "https://yourcompany.freshservice.com/api/v2"))),
    key!(freshservice.max_requests_per_minute = "40", Poller, |v| number(v, 1, 10_000)),
    key!(freshservice.initial_sync_days = "30", Poller, |v| number(v, 1, 3650)),
    key!(freshservice.reconcile_max_tickets = "50", Poller, |v| number(v, 0, 100_000)),
    key!(freshservice.request_timeout = "30s", Poller, parse_duration),
    key!(freshservice.done_statuses =
        "closed, resolved, job_complete_bill, billing_complete, spam, trash, deleted",
        Poller, names),
    key!(freshservice.timezone = "UTC", Poller, zone),
    key!(freshservice.workspace_id = "", Poller, optional(|v| number(v, 0, u64::MAX >> 1))),

    table!(freshservice.webhook_fields, Poller),
    table!(freshservice.statuses, Poller),
    table!(freshservice.priorities, Poller),

    key!(superops.api_url = "https://api.superops.ai/msp", Poller,
        |v| url(v, "https://euapi.superops.ai/msp")),
    key!(superops.subdomain = "", Poller, optional(|v| host(
        v,
        &[':'],
        "a subdomain; write the part before .superops.ai, such as yourcompany",
    ))),
    key!(superops.api_token = "", Poller, optional(secret), env ENV_SUPEROPS_API_TOKEN),
    key!(superops.max_requests_per_minute = "400", Poller, |v| number(v, 1, 800)),
    key!(superops.timezone = "UTC", Poller, zone),
    key!(superops.initial_sync_days = "30", Poller, |v| number(v, 1, 36_500)),
    key!(superops.reconcile_max_tickets = "500", Poller, |v| number(v, 0, 100_000)),
    key!(superops.request_timeout = "30s", Poller, parse_duration),
    key!(superops.done_statuses = "resolved, closed, deleted", Poller, names),
    table!(superops.statuses, Poller),
    table!(superops.priorities, Poller),

    key!(scheduler.sync_tickets_enabled = "true", Poller, flag),
    key!(scheduler.ticket_sync_interval = "5m", Poller, parse_duration),
    key!(scheduler.ticket_sync_interval_with_webhooks = "1h", Poller, parse_duration),
    key!(scheduler.webhook_healthy_window = "1h", Poller, parse_duration),
    key!(scheduler.min_webhook_coverage = "0.95", Poller, fraction),
    key!(scheduler.reconcile_interval = "6h", Poller, parse_duration),

];

/// The override for a secret setting: the environment variable `name` when
/// it is set and not empty, else the systemd credential of the same name
/// (`$CREDENTIALS_DIRECTORY/<name>`, from the unit's `LoadCredential=`)
/// when that file exists.
fn secret_override(name: &str) -> Option<String> {
    let from_env = std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    from_env.or_else(|| {
        credential(
            Path::new(&std::env::var_os(ENV_CREDENTIALS_DIRECTORY)?),
            name,
        )
    })
}

/// The credential `name` in `dir` without its trailing newline; `None`
/// when there is no such file (a missing credential is fine: the file's
/// value stands). One that exists but cannot be read is logged.
fn credential(dir: &Path, name: &str) -> Option<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_string()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            log::warn!("cannot read the credential {}: {error}", path.display());
            None
        }
    }
}

/// A loaded configuration and the warnings found while reading it.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The INI file as configparser reads it: section -> key -> value.
type IniMap = HashMap<String, HashMap<String, Option<String>>>;

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
        Config::from_ini(&text, path, &secret_override)
    }

    /// Reads configuration text; `env` supplies the environment overrides.
    /// Every problem is gathered before any is reported.
    pub fn from_ini(
        text: &str,
        source: Option<PathBuf>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let origin = origin(source.as_deref());
        let map = read_ini(text, &origin)?;
        let mut warnings = Vec::new();
        let mut config = Config::default();
        let mut problems = unknown_names(&map);
        for setting in SETTINGS {
            for (place, key, text) in texts(setting, &map, env) {
                if let Err(error) = (setting.set)(&mut config, &key, &text) {
                    problems.push(format!("{place}: {error}"));
                }
            }
        }
        problems.extend(config.contradictions());
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { origin, problems });
        }
        if source.is_none() {
            let database = match &config.database.url {
                DatabaseUrl::Sqlite(path) => {
                    let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                    format!("SQLite {}", path.display())
                }
                url => url.masked(),
            };
            warnings.push(format!(
                "no configuration file found (looked for {}); using built-in defaults, database {database}",
                SEARCH_PATH.join(", ")
            ));
        }
        config.source = source;
        Ok(Loaded { config, warnings })
    }

    /// Settings that are each valid but wrong together: webhooks without a
    /// secret, half of an account's credentials (neither half means no
    /// account, which is fine).
    fn contradictions(&self) -> Vec<String> {
        let (fs, so) = (&self.freshservice, &self.superops);
        let fs_endpoint = fs.domain.is_some() || fs.api_base.is_some();
        let polling = self.scheduler.sync_tickets_enabled;
        [
            (self.server.max_inflight_body_bytes < self.server.max_body_bytes, format!("[server] max_inflight_body_bytes = {} is smaller than max_body_bytes = {}: no body of the largest size could ever be read", self.server.max_inflight_body_bytes, self.server.max_body_bytes)),
            (self.server.tls_cert.is_some() && self.server.tls_key.is_none(), "[server] tls_cert is set but tls_key is not: set [server] tls_key to the certificate's private key (PEM), or remove tls_cert to serve plain HTTP".into()),
            (self.server.tls_cert.is_none() && self.server.tls_key.is_some(), "[server] tls_key is set but tls_cert is not: set [server] tls_cert to the certificate chain (PEM), or remove tls_key to serve plain HTTP".into()),
            (self.webhooks.enabled && self.webhooks.secrets.is_empty() && self.webhooks.signature == SignatureScheme::None, format!("[webhooks] enabled = true but no secret is set: set [webhooks] secret (see `codex gen-secret`) or {ENV_WEBHOOK_SECRET}, or a signature scheme")),
            (self.webhooks.signature != SignatureScheme::None && self.webhooks.signing_secrets.is_empty(), format!("[webhooks] signature = {} but no signing secret is set: set [webhooks] signing_secrets or {ENV_WEBHOOK_SIGNING_SECRETS}", self.webhooks.signature.as_str())),
            (self.webhooks.signature == SignatureScheme::StandardWebhooks && !self.webhooks.signing_secrets.iter().all(|s| crate::http::signature::standard_key(s).is_some()), "[webhooks] signing_secrets: a standard-webhooks secret is whsec_ followed by base64, as the sender shows it".into()),
            (fs_endpoint && fs.api_key.is_none() && polling, format!("[freshservice] domain is set but api_key is not: set [freshservice] api_key or {ENV_FRESHSERVICE_API_KEY}, or sync_tickets_enabled = false")),
            (!fs_endpoint && fs.api_key.is_some(), "[freshservice] api_key is set but domain is not: set [freshservice] domain, such as yourcompany.freshservice.com".into()),
            (so.subdomain.is_some() && so.api_token.is_none(), format!("[superops] subdomain is set but api_token is not: set [superops] api_token or {ENV_SUPEROPS_API_TOKEN}")),
            (so.subdomain.is_none() && so.api_token.is_some(), "[superops] api_token is set but subdomain is not: set [superops] subdomain, such as yourcompany".into()),
        ]
        .into_iter()
        .filter_map(|(wrong, problem)| wrong.then_some(problem))
        .collect()
    }

    /// True when a Freshservice account (API endpoint and key) is configured.
    pub fn freshservice_configured(&self) -> bool {
        self.freshservice.api_key.is_some()
            && (self.freshservice.domain.is_some() || self.freshservice.api_base.is_some())
    }

    /// The effective configuration as INI text, secrets masked: every
    /// setting of `SETTINGS`, section by section.
    pub fn render_masked(&self) -> String {
        let mut out = format!(
            "# effective configuration from {}\n",
            origin(self.source.as_deref())
        );
        let mut section = "";
        for setting in SETTINGS {
            if setting.section != section {
                let gap = if section.is_empty() { "" } else { "\n" };
                section = setting.section;
                out += &format!("{gap}[{section}]\n");
            }
            for (key, value) in (setting.lines)(self) {
                out += &format!("{key} = {value}\n");
            }
        }
        out
    }
}

/// Whether the configuration file at `path` sets `[section] key`; false
/// when it cannot be read.
pub fn file_sets(path: &Path, section: &str, key: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    read_ini(&text, "")
        .ok()
        .and_then(|map| Some(map.get(section)?.contains_key(key)))
        .unwrap_or(false)
}

fn origin(source: Option<&Path>) -> String {
    source.map_or_else(
        || "built-in defaults".to_string(),
        |path| path.display().to_string(),
    )
}

/// The texts given for a setting, each with the place a problem names and
/// its key: a key's `CODEX_*` variable when set and not empty, else its
/// line in the file (else nothing: the default stands); a table's lines.
fn texts(
    setting: &Setting,
    map: &IniMap,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String, String)> {
    let section = map.get(setting.section);
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let Some(key) = setting.key else {
        let lines = BTreeMap::from_iter(section.into_iter().flatten());
        let place = |key| format!("[{}] {key}", setting.section);
        return lines
            .into_iter()
            .map(|(key, value)| (place(key), key.clone(), text(value)))
            .collect();
    };
    let from_env = setting
        .env
        .and_then(|name| Some((name.to_string(), env(name)?)));
    let from_file = || Some((setting.name(), text(section?.get(key)?)));
    from_env
        .filter(|(_, value)| !value.trim().is_empty())
        .or_else(from_file)
        .map(|(place, value)| (place, key.to_string(), value))
        .into_iter()
        .collect()
}

/// Parses INI text (`origin` names it in the error). Values are taken
/// literally, like Python's configparser: a `#` or `;` inside a secret is
/// part of the secret, not a comment.
fn read_ini(text: &str, origin: &str) -> Result<IniMap, ConfigError> {
    let mut defaults = IniDefault::default();
    defaults.enable_inline_comments = false;
    let ini = Ini::new_from_defaults(defaults).read(text.to_string());
    ini.map_err(|message| ConfigError::Syntax {
        origin: origin.to_string(),
        message,
    })
}

/// A problem for every section and key Codex does not read, with what was
/// most likely meant: a key of another section says where it belongs; a
/// typo (transposed letters included) is answered with the closest known
/// name of any section.
fn unknown_names(map: &IniMap) -> Vec<String> {
    let mut sections: Vec<&str> = SETTINGS.iter().map(|s| s.section).collect();
    sections.dedup();
    let mut problems = Vec::new();
    for (section, keys) in BTreeMap::from_iter(map) {
        let settings: Vec<&Setting> = SETTINGS.iter().filter(|s| s.section == section).collect();
        if settings.is_empty() {
            let hint = did_you_mean(section, sections.iter().copied())
                .map(|s| format!("; did you mean [{s}]?"))
                .or_else(|| home_of(keys).map(|s| format!("; its keys belong in [{s}]")));
            problems.push(format!(
                "[{section}] is not a section Codex reads{}",
                hint.unwrap_or_default()
            ));
            continue;
        }
        let known: Vec<&str> = settings.iter().filter_map(|s| s.key).collect();
        if known.is_empty() {
            continue; // A table: its keys are data.
        }
        for key in BTreeMap::from_iter(keys).into_keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            problems.push(format!(
                "[{section}] {key} is not a key Codex reads{}",
                key_hint(key, &known)
            ));
        }
    }
    problems
}

/// The one section every key of `keys` belongs to, if there is one.
fn home_of(keys: &HashMap<String, Option<String>>) -> Option<&'static str> {
    let mut homes = keys.keys().map(|key| {
        let mut found = SETTINGS.iter().filter(|s| s.key == Some(key.as_str()));
        match (found.next(), found.next()) {
            (Some(only), None) => Some(only.section),
            _ => None,
        }
    });
    let first = homes.next()??;
    homes.all(|home| home == Some(first)).then_some(first)
}

/// What an unknown key most likely meant: the same key in another
/// section, else a close key in its own section, else a close key of
/// another section.
fn key_hint(key: &str, known_here: &[&str]) -> String {
    let elsewhere: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.key == Some(key))
        .map(|s| s.section)
        .collect();
    if !elsewhere.is_empty() {
        let sections: Vec<String> = elsewhere.iter().map(|s| format!("[{s}]")).collect();
        return format!("; `{key}` belongs in {}", sections.join(" or "));
    }
    if let Some(name) = did_you_mean(key, known_here.iter().copied()) {
        return format!("; did you mean {name}?");
    }
    let everywhere = SETTINGS.iter().filter_map(|s| s.key);
    match did_you_mean(key, everywhere) {
        Some(name) => {
            let section = SETTINGS.iter().find(|s| s.key == Some(name));
            let section = section.map_or("", |s| s.section);
            format!("; did you mean [{section}] {name}?")
        }
        None => String::new(),
    }
}

/// The known name closest to `unknown`, when it is close enough to be a
/// typo of it: a third of its letters or fewer differ, counting two
/// swapped letters as one difference (`bnid` is one from `bind`).
fn did_you_mean<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let most = (unknown.chars().count() / 3).max(1);
    known
        .map(|name| (strsim::osa_distance(unknown, name), name))
        .filter(|(distance, _)| *distance <= most)
        .min()
        .map(|(_, name)| name)
}
