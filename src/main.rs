#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use codex::config::Config;
use codex::psa::Provider;

/// Codex keeps a local copy of PSA tickets current, from webhooks and polling.
#[derive(Parser)]
#[command(name = "codex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(ConfigArg),
    /// Create or upgrade the database schema (serve also does this at start).
    Migrate(MigrateArgs),
    /// Print a new random webhook secret.
    GenSecret,
    /// Validate the configuration and print it with secrets masked.
    CheckConfig(ConfigArg),
    /// Run one complete sync of each configured PSA (or one) in the foreground.
    Sync(SyncArgs),
    /// Print the last sync runs, webhook counts and coverage.
    Status(ConfigArg),
}

#[derive(clap::Args)]
struct SyncArgs {
    /// Run one complete sync (listing, deleted and spam, reconcile) and exit.
    #[arg(long, required = true)]
    once: bool,
    /// Sync only this provider (freshservice, superops).
    #[arg(long, value_name = "NAME")]
    provider: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// SQLite: take the file now at the database path as Codex's database,
    /// or create an empty one if there is none, even though Codex recorded
    /// a different database there (see README, "When the database fails").
    #[arg(long)]
    adopt: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file [default: $CODEX_CONFIG, else the first of ./codex.conf,
    /// ./instance/codex.conf and /etc/codex/codex.conf that exists]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything passes the filter unless RUST_LOG narrows it; `[server]
    // log_level` sets the level in force (and a reload changes it).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("trace")).init();
    log::set_max_level(log::LevelFilter::Info);
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Migrate(args) => migrate(&args),
        Command::GenSecret => gen_secret(),
        Command::CheckConfig(args) => check_config(&args),
        Command::Sync(args) => sync_once(&args),
        Command::Status(args) => status(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("codex: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ConfigArg) -> Result<Config, String> {
    let loaded = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    log::set_max_level(loaded.config.server.log_level);
    if let Some(path) = &loaded.config.source {
        log::info!("configuration read from {}", path.display());
    }
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    Ok(loaded.config)
}

fn serve(args: &ConfigArg) -> Result<(), String> {
    let config = load(args)?;
    keep_freed_memory();
    let addr = config.server.bind;
    let listener = codex::http::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let signals = signals()?;
    let database = config.database.url.masked();
    let webhooks = config.webhooks.enabled;
    let mut service = codex::run(config, listener).map_err(|e| e.to_string())?;
    log::info!(
        "listening on http://{} (database {database}, webhooks {})",
        service.local_addr(),
        if webhooks { "enabled" } else { "disabled" }
    );
    let fatal = loop {
        crossbeam_channel::select! {
            recv(signals) -> signal => match signal {
                Ok(SIGHUP) => reload(&mut service, args),
                _ => break None,
            },
            recv(service.fatal()) -> message => break message.ok(),
        }
    };
    match &fatal {
        None => log::info!("shutting down: answering the requests already read, 503 to new ones"),
        Some(message) => log::error!("{message}; shutting down"),
    }
    service.shutdown()?;
    log::info!("stopped");
    fatal.map_or(Ok(()), Err)
}

/// SIGTERM, SIGINT and SIGHUP, delivered on a channel.
fn signals() -> Result<crossbeam_channel::Receiver<i32>, String> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install the signal handlers: {e}"))?;
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
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(rx)
}

/// Reads the configuration again (SIGHUP) and puts it in force; an invalid
/// file changes nothing.
fn reload(service: &mut codex::Service, args: &ConfigArg) {
    let loaded = match Config::load(args.config.as_deref()) {
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

fn migrate(args: &MigrateArgs) -> Result<(), String> {
    let config = load(&args.config)?;
    let version = codex::store::migrate(&config, args.adopt).map_err(|e| e.to_string())?;
    println!(
        "schema version {version} is in place on {}",
        config.database.url.masked()
    );
    Ok(())
}

fn gen_secret() -> Result<(), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
    Ok(())
}

fn check_config(args: &ConfigArg) -> Result<(), String> {
    let config = load(args)?;
    print!("{}", config.render_masked());
    let database =
        codex::store::check(&config.database.url).map_err(|e| format!("database: {e}"))?;
    eprintln!("database: {database}");
    if config.freshservice_configured() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut client =
            codex::psa::freshservice_api::FreshserviceClient::new(&config.freshservice, stop)
                .map_err(|e| format!("freshservice: {e}"))?;
        client
            .check_credentials()
            .map_err(|e| format!("freshservice: {e}"))?;
        eprintln!(
            "freshservice: credentials accepted by {}",
            config.freshservice.api_base_url().unwrap_or_default()
        );
    }
    if config.superops.configured() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut client = codex::psa::superops_api::SuperopsClient::new(&config.superops, stop)
            .map_err(|e| format!("superops: {e}"))?;
        client
            .check_credentials()
            .map_err(|e| format!("superops: {e}"))?;
        eprintln!(
            "superops: credentials accepted by {}",
            config.superops.api_url
        );
    }
    eprintln!("configuration is valid");
    Ok(())
}

fn sync_once(args: &SyncArgs) -> Result<(), String> {
    let config = load(&args.config)?;
    let providers = match args.provider.as_deref() {
        Some(name) => {
            let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            let provider = Provider::from_name(name.trim().to_ascii_lowercase().as_str())
                .ok_or_else(|| {
                    format!("unknown provider '{name}'; use one of {}", names.join(", "))
                })?;
            if !provider.configured(&config) {
                return Err(format!(
                    "no {provider} account is configured: {}",
                    setup_hint(provider)
                ));
            }
            vec![provider]
        }
        None => {
            let configured: Vec<Provider> = Provider::ALL
                .into_iter()
                .filter(|p| p.configured(&config))
                .collect();
            if configured.is_empty() {
                let hints: Vec<String> = Provider::ALL.into_iter().map(setup_hint).collect();
                return Err(format!(
                    "no PSA account is configured: {}",
                    hints.join("; or ")
                ));
            }
            configured
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    // A database that is down is waited for (up to the sync's store
    // timeout), as the service would.
    let backend =
        codex::store::connect_at_start(&config.database.url).map_err(|e| e.to_string())?;
    let writer = codex::store::spawn_writer(
        backend,
        config.database.url.clone(),
        config.webhooks.journal_retention_days,
    )
    .map_err(|e| format!("cannot start the writer: {e}"))?;
    let mut failures = Vec::new();
    for provider in providers {
        let run = codex::sync::run_sync(
            &config,
            &writer.client,
            provider,
            codex::sync::RunKind::Full,
            stop.clone(),
        );
        let record = codex::sync::run_json(&run);
        println!(
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        );
        if run.outcome != "ok" {
            failures.push(format!(
                "{provider} sync failed: {}",
                run.error.unwrap_or_default()
            ));
        }
    }
    writer
        .join()
        .map_err(|_| "the writer panicked".to_string())?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// What to set to configure a provider's account.
fn setup_hint(provider: Provider) -> String {
    match provider {
        Provider::Freshservice => {
            "set [freshservice] domain and api_key (or CODEX_FRESHSERVICE_API_KEY)".to_string()
        }
        Provider::SuperOps => {
            "set [superops] subdomain and api_token (or CODEX_SUPEROPS_API_TOKEN)".to_string()
        }
    }
}

fn status(args: &ConfigArg) -> Result<(), String> {
    let config = load(args)?;
    let report = codex::sync::status_report(&config).map_err(|e| e.to_string())?;
    print!("{report}");
    Ok(())
}

/// Raises glibc's heap trim threshold by freeing one large block.
///
/// SQLite allocates and frees a 64 KiB statement-journal buffer for most
/// writing statements. With glibc's defaults each free returns that memory
/// to the kernel (a brk or madvise call, and TLB shootdowns across cores),
/// and the next statement asks for it again: a syscall pair per event on
/// the writer's hot path. glibc raises its mmap and trim thresholds when a
/// block it mmapped is freed (mallopt(3), "dynamic mmap threshold"), so
/// one 256 KiB block freed here keeps such buffers in the heap. Other
/// allocators ignore this; it costs nothing there.
fn keep_freed_memory() {
    let block: Vec<u8> = Vec::with_capacity(256 * 1024);
    std::hint::black_box(&block);
    drop(block);
}
