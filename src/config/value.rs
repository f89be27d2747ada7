//! The kinds of value a key holds: how each is read from its text (with the
//! message a person gets when it cannot be) and how `check-config` shows it.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use jiff::tz::TimeZone;

use crate::error::InvalidValue;

/// `Err(InvalidValue(format!(...)))`: what was found, and what is expected.
macro_rules! invalid {
    ($($message:tt)*) => {
        Err(InvalidValue(format!($($message)*)))
    };
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

/// Where tickets are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection string; the password never leaves it except to
/// the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
    masked: String,
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
    type Err = InvalidValue;

    /// Accepts the predecessor's SQLAlchemy-style URLs:
    /// `sqlite:///relative.db`, `sqlite:////absolute.db`,
    /// `postgresql://…`, `postgres://…`, `postgresql+psycopg2://…`.
    fn from_str(text: &str) -> Result<DatabaseUrl, InvalidValue> {
        let text = text.trim();
        let use_sqlite = "use sqlite:///relative/path.db or sqlite:////absolute/path.db";
        if let Some(path) = text.strip_prefix("sqlite:///") {
            if path.is_empty() || path == ":memory:" {
                return invalid!("'{text}' names no database file; {use_sqlite}");
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("sqlite:") {
            return invalid!("'{text}' is not a SQLite URL Codex understands; {use_sqlite}");
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return invalid!(
                "expected a URL such as sqlite:///codex.db or postgresql://user:password@host:5432/codex"
            );
        };
        if !matches!(scheme.split('+').next(), Some("postgresql" | "postgres")) {
            return invalid!(
                "unsupported database scheme '{scheme}'; use sqlite:/// or postgresql://"
            );
        }
        let url = format!("postgresql://{rest}");
        let masked = mask_url_password(&url);
        match tokio_postgres::Config::from_str(&url) {
            Ok(_) => Ok(DatabaseUrl::Postgres(PostgresUrl { url, masked })),
            Err(error) => {
                invalid!("'{masked}' is not a valid PostgreSQL connection string: {error}")
            }
        }
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
pub fn parse_duration(text: &str) -> Result<Duration, InvalidValue> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => match text.parse::<jiff::SignedDuration>().map(Duration::try_from) {
            Ok(Ok(duration)) => duration,
            Ok(Err(_)) => return invalid!("'{text}' must not be negative"),
            Err(_) => {
                return invalid!(
                    "'{text}' is not a duration; write seconds (300) or a unit (5m, 1h)"
                );
            }
        },
    };
    if duration.is_zero() {
        return invalid!("'{text}' must be longer than zero");
    }
    Ok(duration)
}

/// `parse_duration`, from `min` to `max` seconds.
pub fn duration_within(text: &str, min: u64, max: u64) -> Result<Duration, InvalidValue> {
    let duration = parse_duration(text)?;
    let [min, max] = [min, max].map(Duration::from_secs);
    if (min..=max).contains(&duration) {
        return Ok(duration);
    }
    let [min, max] = [min, max].map(format_duration);
    invalid!("'{}' must be between {min} and {max}", text.trim())
}

/// Formats a duration the way `parse_duration` reads it back.
pub fn format_duration(duration: Duration) -> String {
    match duration.as_secs() {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A whole number within `min..=max`.
pub fn number<T: TryFrom<u64>>(text: &str, min: u64, max: u64) -> Result<T, InvalidValue> {
    let text = text.trim();
    let within = text.parse().ok().filter(|n| (min..=max).contains(n));
    match within.and_then(|n| T::try_from(n).ok()) {
        Some(number) => Ok(number),
        None => invalid!("'{text}' must be a whole number from {min} to {max}"),
    }
}

/// `true`/`yes`/`on`/`1` or `false`/`no`/`off`/`0`, in any case.
pub fn flag(text: &str) -> Result<bool, InvalidValue> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => invalid!("'{other}' is not a boolean; use true or false"),
    }
}

/// A fraction from 0 to 1, such as `0.95`.
pub fn fraction(text: &str) -> Result<f64, InvalidValue> {
    match text.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => invalid!("'{text}' must be a fraction between 0 and 1, such as 0.95"),
    }
}

/// Parses `10.0.0.1, 192.168.0.0/16, 2001:db8::/32` (bare addresses become
/// single-host networks).
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, InvalidValue> {
    let network = |item: &str| match (item.parse::<IpNet>(), item.parse::<IpAddr>()) {
        (Ok(net), _) => Ok(net.trunc()),
        (_, Ok(address)) => Ok(IpNet::from(address)),
        _ => invalid!("'{item}' is neither an IP address nor a CIDR network"),
    };
    split_list(text).map(network).collect()
}

/// The items of a comma-separated list, trimmed, empty ones skipped.
pub fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// A comma-separated list of names, in lower case.
pub fn names(text: &str) -> Result<Vec<String>, InvalidValue> {
    Ok(split_list(text).map(str::to_ascii_lowercase).collect())
}

/// One secret or several, comma-separated (for rotating), taken literally;
/// each must pass `strong_secret`.
pub fn secrets(text: &str) -> Result<Vec<Secret>, InvalidValue> {
    let list: Vec<&str> = split_list(text).collect();
    for (n, secret) in list.iter().enumerate() {
        if let Err(InvalidValue(why)) = strong_secret(secret) {
            let which = match list.len() {
                1 => "the secret".to_string(),
                _ => format!("secret {} of {}", n + 1, list.len()),
            };
            return invalid!("{which} {why}");
        }
    }
    Ok(list.into_iter().map(Secret::new).collect())
}

/// The fewest characters a secret Codex checks may have: `codex gen-secret`
/// prints 64.
pub const MIN_SECRET_CHARS: usize = 32;

/// Placeholders seen in documentation and examples (README's among them),
/// lower case, separators removed: a secret containing one is a copy of an
/// example, not a secret.
const PLACEHOLDERS: &[&str] = &[
    "yoursecret",
    "secrethere",
    "changeme",
    "replaceme",
    "placeholder",
    "example",
    "insertsecret",
    "yourkey",
    "yourtoken",
    "xxxxxx",
    "dummy",
];

/// Words a person picks when asked for a secret. A secret whose letters
/// are only these (digits and punctuation aside) is guessable whatever its
/// length.
const WORDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "secrets",
    "webhook",
    "webhooks",
    "hook",
    "codex",
    "admin",
    "test",
    "testing",
    "token",
    "key",
    "api",
    "freshservice",
    "superops",
    "letmein",
    "qwerty",
    "abc",
    "welcome",
    "default",
    "bench",
    "rotated",
    "another",
    "new",
    "old",
    "signing",
];

/// Checks that a secret Codex verifies (a webhook or signing secret) is
/// worth the name: at least `MIN_SECRET_CHARS` characters, not a
/// placeholder, and not visibly low in entropy (one character class only,
/// a few distinct characters repeated, or nothing but common words and
/// digits). The message never quotes the secret. Secrets a PSA issues (API
/// keys and tokens) are not Codex's to judge and are not checked.
pub fn strong_secret(secret: &str) -> Result<(), InvalidValue> {
    let fix = "run `codex gen-secret` for a strong one";
    let chars = secret.chars().count();
    if chars < MIN_SECRET_CHARS {
        return invalid!("is {chars} characters long; it needs at least {MIN_SECRET_CHARS}: {fix}");
    }
    let letters: String = secret
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let squeezed: String = secret
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if PLACEHOLDERS.iter().any(|p| squeezed.contains(p)) {
        return invalid!("is a placeholder from an example, not a secret: {fix}");
    }
    let classes = [
        secret.chars().any(|c| c.is_ascii_lowercase()),
        secret.chars().any(|c| c.is_ascii_uppercase()),
        secret.chars().any(|c| c.is_ascii_digit()),
        secret.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    if classes.iter().filter(|&&present| present).count() < 2 {
        return invalid!("uses one kind of character only; {fix}");
    }
    let mut distinct: Vec<char> = secret.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 10 {
        return invalid!("repeats {} different characters; {fix}", distinct.len());
    }
    if letters.is_empty() || only_words(&letters) {
        return invalid!("is common words and digits, easy to guess; {fix}");
    }
    Ok(())
}

/// True when `letters` splits entirely into `WORDS`.
fn only_words(letters: &str) -> bool {
    // ends[i]: the first i letters split into words.
    let mut ends = vec![false; letters.len() + 1];
    ends[0] = true;
    for i in 0..letters.len() {
        if !ends[i] {
            continue;
        }
        for word in WORDS {
            if letters[i..].starts_with(word) {
                ends[i + word.len()] = true;
            }
        }
    }
    ends[letters.len()]
}

/// One secret, trimmed.
pub fn secret(text: &str) -> Result<Secret, InvalidValue> {
    Ok(Secret::new(text.trim()))
}

/// A secret Codex checks that people choose (not one a PSA issued): held
/// to `strong_secret`.
pub fn strong(text: &str) -> Result<Secret, InvalidValue> {
    strong_secret(text.trim())?;
    secret(text)
}

/// `parse` for a value that may be left empty (`None`).
pub fn optional<T>(
    parse: impl Fn(&str) -> Result<T, InvalidValue>,
) -> impl Fn(&str) -> Result<Option<T>, InvalidValue> {
    move |text| match text.trim() {
        "" => Ok(None),
        _ => parse(text).map(Some),
    }
}

/// An address to listen on, `host:port` (a name is resolved).
pub fn address(text: &str) -> Result<SocketAddr, InvalidValue> {
    match text.to_socket_addrs().map(|mut found| found.next()) {
        Ok(Some(address)) => Ok(address),
        Ok(None) => invalid!("'{text}' resolves to no address"),
        Err(error) => invalid!("'{text}' is not an address to listen on ({error})"),
    }
}

/// A file's path, as written (relative to the working directory).
pub fn file_path(text: &str) -> Result<PathBuf, InvalidValue> {
    Ok(PathBuf::from(text.trim()))
}

/// A path prefix such as `/codex`, without a trailing `/`; empty for none.
pub fn base_path(text: &str) -> Result<String, InvalidValue> {
    let path = text.trim().trim_end_matches('/');
    if path.is_empty() || (path.starts_with('/') && !path.contains(['?', '#', ' '])) {
        return Ok(path.to_string());
    }
    invalid!("'{text}' must be a path starting with '/', such as /codex")
}

/// A log level name, such as `info`.
pub fn log_level(text: &str) -> Result<log::LevelFilter, InvalidValue> {
    let text = text.trim();
    let levels = "use error, warn, info, debug, trace or off";
    let message = || InvalidValue(format!("'{text}' is not a log level; {levels}"));
    text.parse().map_err(|_| message())
}

/// An http(s) URL without a trailing `/`; `example` shows one that works.
pub fn url(text: &str, example: &str) -> Result<String, InvalidValue> {
    let text = text.trim().trim_end_matches('/');
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(text.to_string());
    }
    invalid!("'{text}' must be an http:// or https:// URL, such as {example}")
}

/// A host name (or the part of one) Codex puts into URLs: no path, query,
/// space or `forbidden` character; `what` says what is expected.
pub fn host(text: &str, forbidden: &[char], what: &str) -> Result<String, InvalidValue> {
    let text = text.trim();
    if text.contains(['/', ' ', '?']) || text.contains(forbidden) {
        return invalid!("'{text}' is not {what}");
    }
    Ok(text.to_string())
}

/// How a delivery's body is signed, from `[webhooks] signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// Bodies are not signed; the shared secret alone authenticates.
    None,
    /// Standard Webhooks (Svix, Hookdeck): `webhook-id`, `webhook-timestamp`
    /// and `webhook-signature`, with `whsec_` secrets.
    StandardWebhooks,
    /// GitHub style: `X-Hub-Signature-256: sha256=<hex>` over the body.
    HmacSha256,
}

impl SignatureScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::None => "none",
            SignatureScheme::StandardWebhooks => "standard-webhooks",
            SignatureScheme::HmacSha256 => "hmac-sha256",
        }
    }
}

/// `none`, `standard-webhooks` or `hmac-sha256`.
pub fn signature_scheme(text: &str) -> Result<SignatureScheme, InvalidValue> {
    let text = text.trim();
    [
        SignatureScheme::None,
        SignatureScheme::StandardWebhooks,
        SignatureScheme::HmacSha256,
    ]
    .into_iter()
    .find(|scheme| scheme.as_str().eq_ignore_ascii_case(text))
    .ok_or_else(|| {
        InvalidValue(format!(
            "'{text}' is not a signature scheme; use none, standard-webhooks or hmac-sha256"
        ))
    })
}

/// An IANA time zone name such as `Asia/Kolkata`.
pub fn zone(text: &str) -> Result<TimeZone, InvalidValue> {
    crate::timestamp::zone(text.trim()).map_err(|error| InvalidValue(error.to_string()))
}

/// How `check-config` shows a value: as `parse` reads it back, secrets
/// masked.
pub trait Show {
    /// A secret: shown masked, and a reload says only that it changed.
    const SECRET: bool = false;

    fn show(&self) -> String;
}

/// `Show` for each type: `Type => |value| text`.
macro_rules! show {
    ($($type:ty => |$value:ident| $text:expr;)*) => {
        $(impl Show for $type {
            fn show(&self) -> String {
                let $value = self;
                $text
            }
        })*
    };
}

show! {
    SocketAddr => |v| v.to_string();
    usize => |v| v.to_string();
    u32 => |v| v.to_string();
    u64 => |v| v.to_string();
    bool => |v| v.to_string();
    f64 => |v| v.to_string();
    String => |v| v.clone();
    PathBuf => |v| v.display().to_string();
    Duration => |v| format_duration(*v);
    log::LevelFilter => |v| v.as_str().to_ascii_lowercase();
    TimeZone => |v| v.iana_name().unwrap_or("UTC").to_string();
    DatabaseUrl => |v| v.masked();
    Vec<IpNet> => |v| v.iter().map(IpNet::to_string).collect::<Vec<_>>().join(", ");
    Vec<String> => |v| v.join(", ");
    SignatureScheme => |v| v.as_str().to_string();
}

impl<T: Show> Show for Option<T> {
    const SECRET: bool = T::SECRET;

    fn show(&self) -> String {
        self.as_ref().map_or_else(String::new, Show::show)
    }
}

impl Show for Secret {
    const SECRET: bool = true;

    fn show(&self) -> String {
        "*** (set)".to_string()
    }
}

impl Show for Vec<Secret> {
    const SECRET: bool = true;

    fn show(&self) -> String {
        match self.len() {
            0 => String::new(),
            1 => "*** (1 secret)".to_string(),
            n => format!("*** ({n} secrets)"),
        }
    }
}
