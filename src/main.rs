#![forbid(unsafe_code)]

//! The `codex` binary: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use codex::CommandError;

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
    codex::init_logging();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("codex: {error}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> Result<(), CommandError> {
    match command {
        Command::Serve(args) => codex::serve(args.config.as_deref()),
        Command::Migrate(args) => {
            let config = codex::load_config(args.config.config.as_deref())?;
            let version = codex::migrate(&config, args.adopt)?;
            println!(
                "schema version {version} is in place on {}",
                config.database.url.masked()
            );
            Ok(())
        }
        Command::GenSecret => {
            println!("{}", codex::gen_secret()?);
            Ok(())
        }
        Command::CheckConfig(args) => {
            let config = codex::load_config(args.config.as_deref())?;
            print!("{}", config.render_masked());
            codex::check_config(&config, |line| eprintln!("{line}"))
        }
        Command::Sync(args) => {
            let config = codex::load_config(args.config.config.as_deref())?;
            let providers = codex::sync_providers(&config, args.provider.as_deref())?;
            codex::sync_once(&config, &providers, |run| {
                println!("{}", serde_json::to_string_pretty(run).unwrap_or_default());
            })
        }
        Command::Status(args) => {
            let config = codex::load_config(args.config.as_deref())?;
            print!("{}", codex::status(&config)?);
            Ok(())
        }
    }
}
