#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use codex::Config;

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
    let addr = config.server.bind;
    let listener = codex::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
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
    service.shutdown().map_err(|e| e.to_string())?;
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
    let version = codex::migrate(&config, args.adopt).map_err(|e| e.to_string())?;
    println!(
        "schema version {version} is in place on {}",
        config.database.url.masked()
    );
    Ok(())
}

fn gen_secret() -> Result<(), String> {
    println!("{}", codex::gen_secret().map_err(|e| e.to_string())?);
    Ok(())
}

fn check_config(args: &ConfigArg) -> Result<(), String> {
    let config = load(args)?;
    print!("{}", config.render_masked());
    codex::check_config(&config, |line| eprintln!("{line}")).map_err(|e| e.to_string())
}

fn sync_once(args: &SyncArgs) -> Result<(), String> {
    let config = load(&args.config)?;
    let providers =
        codex::sync_providers(&config, args.provider.as_deref()).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    codex::sync_once(&config, &providers, stop, |run| {
        println!("{}", serde_json::to_string_pretty(run).unwrap_or_default());
    })
    .map_err(|e| e.to_string())
}

fn status(args: &ConfigArg) -> Result<(), String> {
    let config = load(args)?;
    print!("{}", codex::status(&config).map_err(|e| e.to_string())?);
    Ok(())
}
