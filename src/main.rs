#![forbid(unsafe_code)]

//! The `codex` binary: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Write the man pages (codex.1 and one per command) into DIR; the
    /// packages are built with it.
    #[command(hide = true)]
    ManPages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the version (as --version does).
    Version,
    /// Post the guide's Freshservice template with the configured secret to
    /// the running Codex and say what the answer means.
    SendTest(SendTestArgs),
    /// Apply journaled deliveries again through today's normalizer and
    /// ordering rules (after fixing the configuration that refused them),
    /// while Codex may run; print what each became.
    Replay(ReplayArgs),
    /// Write a consistent copy of the SQLite database while Codex runs, and
    /// check it (for PostgreSQL: print the pg_dump command to use).
    Backup(BackupArgs),
}

#[derive(clap::Args)]
struct SendTestArgs {
    /// Which of the guide's workflows to imitate.
    #[arg(long, value_name = "EVENT", default_value = "updated",
          value_parser = ["created", "updated", "deleted"])]
    event: String,
    /// Post here instead of the configured endpoint
    /// (http://<[server] bind><[server] base_path>/webhooks/freshservice/ticket,
    /// https:// trusting the certificate of [server] tls_cert when it is set).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "since"])))]
struct ReplayArgs {
    /// The journal row (webhook_events id) to replay, whatever its outcome.
    #[arg(long, value_name = "N")]
    id: Option<i64>,
    /// Replay the deliveries received at or after TIME (any form Codex
    /// reads: 2024-01-15T10:30:00Z, "2024-01-15 10:30", Unix seconds...;
    /// UTC without a zone).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// With --since: the journal outcomes to replay, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "rejected,failed",
        requires = "since"
    )]
    outcome: String,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
struct BackupArgs {
    /// Where the copy goes; an existing file is never overwritten.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    #[command(flatten)]
    config: ConfigArg,
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
    /// a different database there (see docs/database-failures.md).
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
            let migrated = codex::migrate(&config, args.adopt)?;
            if let Some(path) = &migrated.created {
                println!("created the SQLite database {}", path.display());
            }
            println!(
                "schema version {} is in place on {}",
                migrated.version,
                codex::database_name(&config)
            );
            Ok(())
        }
        Command::Version => {
            println!("codex {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::GenSecret => {
            println!("{}", codex::gen_secret()?);
            Ok(())
        }
        Command::CheckConfig(args) => {
            let config = codex::load_config(args.config.as_deref())?;
            // What serve would do comes first; the checks follow, then the
            // whole configuration.
            println!("{}\n", codex::plan(&config).join("\n"));
            let checked = codex::check_config(&config, |line| eprintln!("{line}"));
            print!("\n{}", config.render_masked());
            checked
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
        Command::SendTest(args) => {
            let config = codex::load_config(args.config.config.as_deref())?;
            let event = codex::TestEvent::from_name(&args.event)
                .ok_or_else(|| CommandError::Usage(format!("unknown event '{}'", args.event)))?;
            let exchange = codex::send_test(&config, event, args.url.as_deref())?;
            println!(
                "{} answered {} {}",
                exchange.url, exchange.status, exchange.answer
            );
            println!("{}", exchange.meaning);
            Ok(())
        }
        Command::Replay(args) => {
            let config = codex::load_config(args.config.config.as_deref())?;
            let selection = match (args.id, args.since) {
                (Some(id), _) => codex::Selection::Id(id),
                (None, since) => codex::Selection::Since {
                    since: since.unwrap_or_default(),
                    outcomes: codex::Selection::outcomes(&args.outcome)?,
                },
            };
            let count = codex::replay(&config, &selection, |replayed| println!("{replayed}"))?;
            if count == 0 {
                println!("no journaled delivery matches");
            }
            Ok(())
        }
        Command::Backup(args) => {
            let config = codex::load_config(args.config.config.as_deref())?;
            for line in codex::backup(&config, &args.path)?.lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::ManPages { dir } => {
            man_pages(&dir).map_err(|error| CommandError::ManPages(dir.clone(), error))
        }
    }
}

/// Writes `codex.1` and `codex-<command>.1` for each visible command into
/// `dir`, from the same definitions as `--help`.
fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let command = Cli::command();
    let mut pages = vec![(
        "codex.1".to_string(),
        clap_mangen::Man::new(command.clone()),
    )];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("codex-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        pages.push((format!("{name}.1"), clap_mangen::Man::new(page)));
    }
    for (file, page) in pages {
        let mut text = Vec::new();
        page.render(&mut text)?;
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}
