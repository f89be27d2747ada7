//! The commands the binary offers: `serve` (the service until SIGTERM,
//! reloading on SIGHUP) and the one-shot `check-config`, `sync --once`,
//! `status`, `migrate`, `gen-secret`, `version` (`send-test`, `backup` and
//! `replay` have modules of their own). Those that use the database check
//! it first (`preflight`); those that write open it as the service does
//! (`service::open_store`), while `status` only reads (`Reader::read_only`).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde_json::Value;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::backup::BackupError;
use crate::config::{Config, ENV_WEBHOOK_SECRET, format_duration};
use crate::error::{ConfigError, StoreError, SyncError};
use crate::http::tls::Certificates;
use crate::preflight::{self, PreflightError};
use crate::psa::Provider;
use crate::send_test::SendTestError;
use crate::service::{Service, ShutdownError, StartError, open_store, run};
use crate::status::{Status, run_json};
use crate::store::{self, Reader, RunOutcome};
use crate::sync::{Plan, check_credentials, run_sync};
use crate::systemd;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration file cannot be found, read or accepted.
    #[error("{0}")]
    Config(ConfigError),
    /// The database or the address cannot be used as the command needs
    /// (see `PreflightError`); nothing was changed.
    #[error("{0}")]
    Preflight(#[from] PreflightError),
    /// `check-config`: what would keep `serve` from starting or from
    /// taking deliveries, every problem found.
    #[error("{}", problems(.0))]
    CheckFailed(Vec<String>),
    /// `serve`: systemd passed a socket (`LISTEN_FDS`) that is not a TCP
    /// listening socket.
    #[error("cannot use the socket systemd passed: {0}")]
    PassedSocket(std::io::Error),
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
    /// `man-pages`: the pages could not be written into the directory.
    #[error("cannot write the man pages into {}: {}", .0.display(), .1)]
    ManPages(std::path::PathBuf, std::io::Error),
    /// The system has no randomness to make a secret with.
    #[error("no randomness available: {0}")]
    NoRandomness(getrandom::Error),
    /// `send-test`: the delivery could not be sent, or was refused.
    #[error("{0}")]
    SendTest(#[from] SendTestError),
    /// `backup`: no copy was written.
    #[error("{0}")]
    Backup(#[from] BackupError),
    /// `status`: the database's schema version is not this binary's; the
    /// database was left as it is.
    #[error(
        "the database is at schema version {found}; this codex reads version {expected}: {hint}. Nothing was changed"
    )]
    SchemaVersion {
        found: String,
        expected: i64,
        hint: &'static str,
    },
    /// `replay`: some deliveries could not be written (each has its line).
    #[error("{0}")]
    Replay(String),
    /// The command line asks for something the command does not do.
    #[error("{0}")]
    Usage(String),
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

fn problems(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        _ => {
            let lines: Vec<String> = problems.iter().map(|p| format!("\n  - {p}")).collect();
            format!("{} problems:{}", problems.len(), lines.concat())
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
    preflight::serve_database(&config)?;
    let (listener, passed) = listen(config.server.bind)?;
    let signals = signals()?;
    let database = database_name(&config);
    let webhooks = config.webhooks.enabled;
    let mut service = run(config, listener).map_err(CommandError::Start)?;
    if passed {
        service.leave_backlog_queued();
    }
    log::info!(
        "listening on {}://{} (database {database}, webhooks {})",
        if service.serves_tls() {
            "https"
        } else {
            "http"
        },
        service.local_addr(),
        if webhooks { "enabled" } else { "disabled" }
    );
    // systemd hears READY=1 once the database answered too; until then
    // the loop looks again every tick.
    let (mut ready, mut watchdog) = (false, None);
    let fatal = loop {
        if !ready && service.database_ready() {
            ready = true;
            systemd::ready();
            watchdog = systemd::Watchdog::spawn(service.db_health()).unwrap_or_else(|error| {
                log::error!("cannot start the watchdog thread: {error}");
                None
            });
        }
        let tick = match ready {
            true => crossbeam_channel::never(),
            false => crossbeam_channel::after(Duration::from_millis(100)),
        };
        crossbeam_channel::select! {
            recv(signals) -> signal => match signal {
                Ok(SIGHUP) => {
                    systemd::reloading();
                    reload(&mut service, path);
                    if ready {
                        systemd::ready();
                    }
                }
                _ => break None,
            },
            recv(service.fatal()) -> message => break message.ok(),
            recv(tick) -> _ => {}
        }
    };
    if let Some(watchdog) = watchdog {
        watchdog.stop();
    }
    systemd::stopping();
    match &fatal {
        None => log::info!("shutting down: answering the requests already read, 503 to new ones"),
        Some(message) => log::error!("{message}; shutting down"),
    }
    service.shutdown().map_err(CommandError::Shutdown)?;
    log::info!("stopped");
    fatal.map_or(Ok(()), |message| Err(CommandError::Fatal(message)))
}

/// The listening socket: the one systemd passed (socket activation; then
/// `true`), else `[server] bind`.
fn listen(bind: SocketAddr) -> Result<(TcpListener, bool), CommandError> {
    match systemd::passed_listener().map_err(CommandError::PassedSocket)? {
        Some(listener) => {
            let addr = listener
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            log::info!(
                "serving on the socket systemd passed ({addr}); [server] bind = {bind} is not used"
            );
            Ok((listener, true))
        }
        None => Ok((preflight::listen(bind)?, false)),
    }
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
        Err(error @ StartError::Tls(_)) => {
            log::error!("reload refused, the configuration in force is kept: {error}")
        }
        Err(error) => log::error!("reload failed: {error}"),
    }
}

/// The database as logs and `check-config` name it: a SQLite file by its
/// absolute path, PostgreSQL with its password masked.
pub fn database_name(config: &Config) -> String {
    match preflight::sqlite_file(config) {
        Some(file) => format!("SQLite {}", file.path.display()),
        None => config.database.url.masked(),
    }
}

/// What `serve` would do with `config`, one line each: the address, the
/// database, the webhooks and each provider. `check-config` prints it
/// first.
pub fn plan(config: &Config) -> Vec<String> {
    let server = &config.server;
    let scheme = if server.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{}{}", server.bind, server.base_path);
    let mut lines = vec![format!("serve would listen on {base} ([server] bind)")];
    let chosen_by = preflight::sqlite_file(config).map(|f| format!(", {}", f.chosen_by));
    lines.push(format!(
        "  database: {}{}",
        database_name(config),
        chosen_by.unwrap_or_default()
    ));
    let secrets = config.webhooks.secrets.len();
    lines.push(match config.webhooks.enabled {
        true => format!(
            "  webhooks: enabled, {secrets} secret{}, deliveries to {base}/webhooks/<provider>/ticket",
            if secrets == 1 { "" } else { "s" }
        ),
        false => "  webhooks: disabled ([webhooks] enabled = false): deliveries are refused".into(),
    });
    let polled = Provider::polled(config);
    for provider in Provider::ALL {
        let line = match (provider.configured(config), polled.contains(&provider)) {
            (true, true) => format!(
                "polled every {} ({} while webhooks cover it)",
                format_duration(config.scheduler.ticket_sync_interval),
                format_duration(config.scheduler.ticket_sync_interval_with_webhooks)
            ),
            (true, false) => {
                "configured, not polled ([scheduler] sync_tickets_enabled = false)".into()
            }
            (false, _) => "not configured".into(),
        };
        lines.push(format!("  {provider}: {line}"));
    }
    lines
}

/// `codex check-config`: checks, without changing anything, that `serve`
/// would start and take deliveries: the address can be listened on (and
/// is let go), the database can be used (and may be created where it is
/// missing), each configured PSA accepts its credentials, and webhooks or
/// polling bring tickets in. Every check runs; `say` gets a line per check
/// passed, and the error lists every one that failed.
pub fn check_config(config: &Config, mut say: impl FnMut(&str)) -> Result<(), CommandError> {
    let mut problems = Vec::new();
    match preflight::try_listen(config.server.bind) {
        Ok(()) => say(&format!("address: {} is free", config.server.bind)),
        Err(error) => problems.push(error.to_string()),
    }
    if config.server.tls_cert.is_some() {
        match Certificates::from_config(&config.server) {
            Ok(_) => say(&format!(
                "tls: certificate {} and its key can be served",
                config
                    .server
                    .tls_cert
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            )),
            Err(error) => problems.push(error.to_string()),
        }
    }
    let database = preflight::serve_database(config)
        .map_err(CommandError::Preflight)
        .and_then(|()| store::check(&config.database.url).map_err(CommandError::Check));
    match database {
        Ok(database) => say(&format!("database: {database}")),
        Err(error) => problems.push(error.to_string()),
    }
    for provider in Provider::ALL.into_iter().filter(|p| p.configured(config)) {
        match check_credentials(config, provider) {
            Ok(checked_at) => say(&format!("{provider}: credentials accepted by {checked_at}")),
            Err(error) => problems.push(CommandError::Credentials(provider, error).to_string()),
        }
    }
    if !config.webhooks.enabled && Provider::polled(config).is_empty() {
        problems.push(format!(
            "serve would start but take no deliveries: webhooks are disabled and no PSA is polled; \
             set [webhooks] enabled = true and secret (run `codex gen-secret` for one) or \
             {ENV_WEBHOOK_SECRET}, or configure [freshservice] or [superops]"
        ));
    }
    match problems.is_empty() {
        true => {
            say("configuration is valid: serve would start and take deliveries");
            Ok(())
        }
        false => Err(CommandError::CheckFailed(problems)),
    }
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
    preflight::existing_database(config)?;
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

/// `codex status`: the status, read now, as text. The database is only
/// read (SQLite opened read-only): a missing one is not created, and one
/// whose schema is not this binary's is reported, not migrated.
pub fn status(config: &Config) -> Result<String, CommandError> {
    preflight::database_to_read(config)?;
    let mut reader = Reader::read_only(&config.database.url);
    let found = reader
        .read(|r| r.schema_version())
        .map_err(CommandError::Store)?;
    let expected = store::SCHEMA_VERSION;
    match found.as_deref().map(|v| v.trim().parse::<i64>()) {
        Some(Ok(version)) if version == expected => {}
        Some(Ok(version)) if version < expected => {
            return Err(CommandError::SchemaVersion {
                found: version.to_string(),
                expected,
                hint: "run `codex migrate` (serve also does at start) to upgrade it",
            });
        }
        other => {
            return Err(CommandError::SchemaVersion {
                found: match other {
                    None => "none".to_string(),
                    Some(_) => found.unwrap_or_default(),
                },
                expected,
                hint: "use the Codex release that wrote it, or `codex migrate` for a database without a version",
            });
        }
    }
    let status = Status::read_now(config, &mut reader).map_err(CommandError::Store)?;
    Ok(status.report())
}

/// What `codex migrate` did.
pub struct Migrated {
    /// The schema version in place.
    pub version: i64,
    /// The SQLite file it created (with its directory when that was
    /// missing too), absolute; `None` when the database was there.
    pub created: Option<std::path::PathBuf>,
}

/// `codex migrate`: creates the database when it is missing (SQLite: the
/// file, and its directory), creates or upgrades the schema (logging each
/// change) and returns what it did. With `adopt`, a SQLite file that is
/// missing or not the one Codex created is accepted as Codex's database.
pub fn migrate(config: &Config, adopt: bool) -> Result<Migrated, CommandError> {
    let file = preflight::sqlite_file(config).filter(|file| !file.path.exists());
    if let Some(directory) = file.as_ref().and_then(|f| f.path.parent()) {
        std::fs::create_dir_all(directory).map_err(|error| {
            CommandError::Store(crate::error::StoreError::Unavailable(format!(
                "cannot create directory {}: {error}",
                directory.display()
            )))
        })?;
    }
    let version = store::migrate(config, adopt).map_err(CommandError::Store)?;
    Ok(Migrated {
        version,
        created: file.map(|file| file.path),
    })
}

/// `codex gen-secret`: a new random webhook secret, 64 hex digits.
pub fn gen_secret() -> Result<String, CommandError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(CommandError::NoRandomness)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
