//! The one-shot commands: `check-config`, `sync --once`, `status`,
//! `migrate`, `gen-secret`. Those that use the database open it as the
//! service does (`service::open_store`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::Value;

use crate::config::Config;
use crate::error::{StoreError, SyncError};
use crate::psa::Provider;
use crate::service::{StartError, open_store};
use crate::status::{Status, run_json};
use crate::store::{self, RunKind, RunOutcome};
use crate::sync::{check_credentials, run_sync};

/// Why a one-shot command failed.
#[derive(Debug)]
pub enum CommandError {
    /// The store could not be opened (see `StartError`).
    Start(StartError),
    /// `check-config`: the database cannot be used as `serve` would.
    Check(StoreError),
    /// The database refused or could not answer a read or write.
    Store(StoreError),
    /// `sync --provider` names a provider Codex does not know.
    UnknownProvider(String),
    /// `sync` was asked for a provider (or, with `None`, any provider)
    /// whose account is not configured.
    NotConfigured(Option<Provider>),
    /// `check-config`: a PSA refused the credentials or could not be reached.
    Credentials(Provider, SyncError),
    /// `sync --once`: one or more runs failed, each with its error.
    SyncFailed(Vec<(Provider, String)>),
    /// The system has no randomness to make a secret with.
    NoRandomness(getrandom::Error),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Start(error) => write!(f, "{error}"),
            CommandError::Check(error) => write!(f, "database: {error}"),
            CommandError::Store(error) => write!(f, "{error}"),
            CommandError::UnknownProvider(name) => {
                let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
                write!(
                    f,
                    "unknown provider '{name}'; use one of {}",
                    names.join(", ")
                )
            }
            CommandError::NotConfigured(Some(provider)) => write!(
                f,
                "no {provider} account is configured: {}",
                setup_hint(*provider)
            ),
            CommandError::NotConfigured(None) => {
                let hints: Vec<&str> = Provider::ALL.into_iter().map(setup_hint).collect();
                write!(f, "no PSA account is configured: {}", hints.join("; or "))
            }
            CommandError::Credentials(provider, error) => write!(f, "{provider}: {error}"),
            CommandError::SyncFailed(failures) => {
                let lines: Vec<String> = failures
                    .iter()
                    .map(|(provider, error)| format!("{provider} sync failed: {error}"))
                    .collect();
                f.write_str(&lines.join("; "))
            }
            CommandError::NoRandomness(error) => write!(f, "no randomness available: {error}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// What to set to configure a provider's account.
fn setup_hint(provider: Provider) -> &'static str {
    match provider {
        Provider::Freshservice => {
            "set [freshservice] domain and api_key (or CODEX_FRESHSERVICE_API_KEY)"
        }
        Provider::SuperOps => {
            "set [superops] subdomain and api_token (or CODEX_SUPEROPS_API_TOKEN)"
        }
    }
}

/// `codex check-config`: checks, without changing anything, that `serve`
/// can use the database and that each configured PSA accepts its
/// credentials. `say` gets a line per check passed.
pub fn check_config(config: &Config, mut say: impl FnMut(&str)) -> Result<(), CommandError> {
    let database = store::check(&config.database.url).map_err(CommandError::Check)?;
    say(&format!("database: {database}"));
    for provider in Provider::ALL.into_iter().filter(|p| p.configured(config)) {
        let checked_at = check_credentials(config, provider)
            .map_err(|error| CommandError::Credentials(provider, error))?;
        say(&format!("{provider}: credentials accepted by {checked_at}"));
    }
    say("configuration is valid");
    Ok(())
}

/// The providers `sync --once` runs: the one named, or every configured one.
pub fn sync_providers(config: &Config, name: Option<&str>) -> Result<Vec<Provider>, CommandError> {
    let Some(name) = name else {
        let configured: Vec<Provider> = Provider::ALL
            .into_iter()
            .filter(|p| p.configured(config))
            .collect();
        return match configured.is_empty() {
            true => Err(CommandError::NotConfigured(None)),
            false => Ok(configured),
        };
    };
    let provider = Provider::from_name(name.trim().to_ascii_lowercase().as_str())
        .ok_or_else(|| CommandError::UnknownProvider(name.to_string()))?;
    if !provider.configured(config) {
        return Err(CommandError::NotConfigured(Some(provider)));
    }
    Ok(vec![provider])
}

/// `codex sync --once`: one full run of each of `providers`, through the
/// same writer and reader as the service; `report` gets each run as JSON
/// when it ends. A database that is down is waited for (up to the sync's
/// store timeout), as the service would. `stop` interrupts it.
pub fn sync_once(
    config: &Config,
    providers: &[Provider],
    stop: Arc<AtomicBool>,
    mut report: impl FnMut(&Value),
) -> Result<(), CommandError> {
    let store = open_store(config).map_err(CommandError::Start)?;
    let (writer, mut reader) = (store.writer, store.reader);
    let mut failures = Vec::new();
    for &provider in providers {
        let run = run_sync(
            config,
            &writer.client,
            &mut reader,
            provider,
            RunKind::Full,
            stop.clone(),
        );
        report(&run_json(&run));
        if run.outcome != RunOutcome::Ok {
            failures.push((provider, run.error.unwrap_or_default()));
        }
    }
    if writer.join().is_err() {
        log::error!("the writer panicked");
    }
    match failures.is_empty() {
        true => Ok(()),
        false => Err(CommandError::SyncFailed(failures)),
    }
}

/// `codex status`: the status, read now, as text.
pub fn status(config: &Config) -> Result<String, CommandError> {
    let store = open_store(config).map_err(CommandError::Start)?;
    let (writer, mut reader) = (store.writer, store.reader);
    let status = Status::read_now(config, &mut reader);
    drop(reader);
    if writer.join().is_err() {
        log::error!("the writer panicked");
    }
    Ok(status.map_err(CommandError::Store)?.report())
}

/// `codex migrate`: creates or upgrades the schema (logging each change)
/// and returns the version in place. With `adopt`, a SQLite file that is
/// missing or not the one Codex created is accepted as Codex's database.
pub fn migrate(config: &Config, adopt: bool) -> Result<i64, CommandError> {
    store::migrate(config, adopt).map_err(CommandError::Store)
}

/// `codex gen-secret`: a new random webhook secret, 64 hex digits.
pub fn gen_secret() -> Result<String, CommandError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(CommandError::NoRandomness)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
