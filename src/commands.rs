//! The commands the binary offers: `serve` (the service until SIGTERM,
//! reloading on SIGHUP) and the one-shot `check-config`, `sync --once`,
//! `status`, `migrate`, `gen-secret`. Those that use the database open it
//! as the service does (`service::open_store`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::Receiver;
use serde_json::Value;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::error::{ConfigError, StoreError, SyncError};
use crate::psa::Provider;
use crate::service::{Service, ShutdownError, StartError, open_store, run};
use crate::status::{Status, run_json};
use crate::store::{self, RunOutcome};
use crate::sync::{Plan, check_credentials, run_sync};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration file cannot be found, read or accepted.
    #[error("{0}")]
    Config(ConfigError),
    /// `serve`: the address in `[server] bind` cannot be listened on (in
    /// use, not this machine's, a privileged port).
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The signal handlers or the thread that receives signals could not
    /// be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    /// The store could not be opened, or `serve` could not start (see
    /// `StartError`).
    #[error("{0}")]
    Start(StartError),
    /// `serve`: the service could not go on (an HTTP worker found the
    /// server gone); it was shut down in order.
    #[error("{0}")]
    Fatal(String),
    /// `serve`: a thread panicked while the service shut down.
    #[error("{0}")]
    Shutdown(ShutdownError),
    /// `check-config`: the database cannot be used as `serve` would.
    #[error("database: {0}")]
    Check(StoreError),
    /// The database refused or could not answer a read or write.
    #[error("{0}")]
    Store(StoreError),
    /// `sync --provider` names a provider Codex does not know.
    #[error("unknown provider '{0}'; use one of {names}", names = provider_names())]
    UnknownProvider(String),
    /// `sync` was asked for a provider (or, with `None`, any provider)
    /// whose account is not configured.
    #[error("{}", not_configured(*.0))]
    NotConfigured(Option<Provider>),
    /// `check-config`: a PSA refused the credentials or could not be reached.
    #[error("{0}: {1}")]
    Credentials(Provider, SyncError),
    /// `sync --once`: one or more runs failed, each with its error.
    #[error("{}", failures(.0))]
    SyncFailed(Vec<(Provider, String)>),
    /// The system has no randomness to make a secret with.
    #[error("no randomness available: {0}")]
    NoRandomness(getrandom::Error),
}

fn provider_names() -> String {
    let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
    names.join(", ")
}

fn not_configured(provider: Option<Provider>) -> String {
    match provider {
        Some(provider) => format!(
            "no {provider} account is configured: {}",
            setup_hint(provider)
        ),
        None => {
            let hints: Vec<&str> = Provider::ALL.into_iter().map(setup_hint).collect();
            format!("no PSA account is configured: {}", hints.join("; or "))
        }
    }
}

fn failures(failures: &[(Provider, String)]) -> String {
    let lines: Vec<String> = failures
        .iter()
        .map(|(provider, error)| format!("{provider} sync failed: {error}"))
        .collect();
    lines.join("; ")
}

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

/// Reads the configuration (`--config`, else the search path), puts its
/// log level in force and logs where it came from and every warning.
pub fn load_config(path: Option<&Path>) -> Result<Config, CommandError> {
    let loaded = Config::load(path).map_err(CommandError::Config)?;
    log::set_max_level(loaded.config.server.log_level);
    if let Some(path) = &loaded.config.source {
        log::info!("configuration read from {}", path.display());
    }
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    Ok(loaded.config)
}

/// `codex serve`: runs the service with the configuration at `path` until
/// SIGTERM or SIGINT (then drains and stops in order), reading the file
/// again on SIGHUP.
pub fn serve(path: Option<&Path>) -> Result<(), CommandError> {
    let config = load_config(path)?;
    let addr = config.server.bind;
    let listener = crate::http::bind(addr).map_err(|e| CommandError::Listen(addr, e))?;
    let signals = signals()?;
    let database = config.database.url.masked();
    let webhooks = config.webhooks.enabled;
    let mut service = run(config, listener).map_err(CommandError::Start)?;
    log::info!(
        "listening on http://{} (database {database}, webhooks {})",
        service.local_addr(),
        if webhooks { "enabled" } else { "disabled" }
    );
    let fatal = loop {
        crossbeam_channel::select! {
            recv(signals) -> signal => match signal {
                Ok(SIGHUP) => reload(&mut service, path),
                _ => break None,
            },
            recv(service.fatal()) -> message => break message.ok(),
        }
    };
    match &fatal {
        None => log::info!("shutting down: answering the requests already read, 503 to new ones"),
        Some(message) => log::error!("{message}; shutting down"),
    }
    service.shutdown().map_err(CommandError::Shutdown)?;
    log::info!("stopped");
    fatal.map_or(Ok(()), |message| Err(CommandError::Fatal(message)))
}

/// SIGTERM, SIGINT and SIGHUP, delivered on a channel.
fn signals() -> Result<Receiver<i32>, CommandError> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(CommandError::Signals)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("codex-signals".to_string())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        })
        .map_err(CommandError::Signals)?;
    Ok(rx)
}

/// Reads the configuration again (SIGHUP) and puts it in force; an invalid
/// file changes nothing.
fn reload(service: &mut Service, path: Option<&Path>) {
    let loaded = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(error) => {
            log::error!("reload refused, the configuration in force is kept: {error}");
            return;
        }
    };
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    match service.reload(loaded.config) {
        Ok(plan) => {
            if plan.applied.is_empty() && plan.needs_restart.is_empty() {
                log::info!("configuration reloaded: nothing changed");
            }
            for change in &plan.applied {
                log::info!("configuration reloaded: {change}");
            }
            for key in &plan.needs_restart {
                log::warn!(
                    "configuration reloaded: {key} changed, but takes effect only after a restart"
                );
            }
        }
        Err(error) => log::error!("reload failed: {error}"),
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
/// store timeout), as the service would. SIGTERM or SIGINT interrupts it.
pub fn sync_once(
    config: &Config,
    providers: &[Provider],
    mut report: impl FnMut(&Value),
) -> Result<(), CommandError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(CommandError::Signals)?;
    }
    let store = open_store(config).map_err(CommandError::Start)?;
    let (writer, mut reader) = (store.writer, store.reader);
    let mut failures = Vec::new();
    for &provider in providers {
        let run = run_sync(
            config,
            &writer.client,
            &mut reader,
            provider,
            Plan::full(),
            &mut None,
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
