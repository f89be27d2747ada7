//! Storage. One writer thread owns the database connection for writing:
//! HTTP handlers and the poller send it `Command`s over a bounded channel;
//! it applies whatever is waiting in one transaction (group commit) and
//! only then answers, so an answer means the change is durable. Reads that
//! need no ordering with writes go through a `Reader`, a connection of the
//! reader's own.
//!
//! The nouns, one file each:
//! - `command`: the writer's commands, and `StoreClient` that sends them;
//!   `writer`: the writer thread; `db_health`: what it publishes.
//! - `reader`: the read connection (`Reader`) and the reads (`Reads`).
//! - `records`: what is stored and answered, and what an upsert did.
//! - `connection`: how a statement runs on either backend (`Param`,
//!   `Cells`, `Connection`); `dialect`: where the two spellings differ.
//! - `statements`: the statements both backends run (the upsert first);
//!   `journal` and `tickets`: the delivery journal's and the read API's.
//! - `coverage`: what the poll scheduler and the status read of a provider.
//! - `schema`: the steps in `migrations/` and a database's catalog;
//!   `migrate`: the plan that brings the one to the other.
//! - `sqlite/` and `postgres/`: the backends, one folder each.
//!
//! `Backend` (the writer's) and `Reads` (a read connection's) are ordinary
//! traits that each backend implements. Each backend writes its own batch
//! (`apply`), liveness check and connection; the other methods are
//! provided, written once on that `Connection` with the shared statements.

mod command;
mod connection;
mod coverage;
mod db_health;
mod dialect;
mod journal;
mod migrate;
mod postgres;
mod reader;
mod records;
mod schema;
mod sqlite;
mod statements;
mod tickets;
mod writer;

use crate::config::{Config, DatabaseUrl};
use crate::error::StoreError;
use crate::psa::Provider;
use connection::{Connection, Param, one};

pub use command::StoreClient;
pub use coverage::{COVERAGE_WINDOW_SECS, ProviderSummary};
pub use db_health::DbHealth;
pub use journal::{
    Delivery, DeliveryCount, JournalEntryUpdate, JournalOutcome, JournalQuery, Journaled,
};
pub use reader::{Reader, Reads};
pub use records::{
    JournalEntry, Outcome, RunKind, RunOutcome, SyncRun, SyncState, WebhookCounts, WriteItem,
};
pub use schema::VERSION as SCHEMA_VERSION;
pub use tickets::{Position, TicketPage, TicketQuery, TicketRow};
pub use writer::{WriterHandle, spawn_writer};

/// A database Codex can keep tickets in, as the writer uses it.
/// Implementations own one connection and are used only by the writer
/// thread (and by one-shot commands).
pub trait Backend: Send {
    /// Applies `items` in one transaction, returning an outcome per item in
    /// order. On error nothing of the batch is committed.
    fn apply(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, StoreError>;

    /// Checks that the connection still works.
    fn ping(&mut self) -> Result<(), StoreError>;

    /// The connection the other statements run on.
    fn connection(&self) -> &dyn Connection;

    /// Deletes up to `limit` journal rows received before `cutoff`; returns
    /// how many went. Does nothing when another instance is pruning (by
    /// default no other instance can be).
    fn prune_journal(&mut self, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
        statements::prune(self.connection(), cutoff, limit)
    }

    fn save_sync_state(&mut self, provider: Provider, state: &SyncState) -> Result<(), StoreError> {
        let params = [
            Param::text(provider.as_str()),
            Param::Text(state.cursor.as_deref()),
            Param::Text(state.last_reconcile_at.as_deref()),
        ];
        self.connection()
            .execute(statements::SYNC_STATE_SET, &params)
            .map(drop)
    }

    /// Records on a refused delivery's journal row what a replay made of
    /// it; false (and nothing changed) when the row is gone or was not
    /// refused.
    fn mark_replayed(&mut self, update: &JournalEntryUpdate) -> Result<bool, StoreError> {
        let params = [
            Param::Int(Some(update.id)),
            Param::Text(update.event.as_deref()),
            Param::Int(update.ticket_id),
            Param::text(update.outcome.as_str()),
            Param::Text(update.error.as_deref()),
        ];
        Ok(self
            .connection()
            .execute(&journal::mark_replayed(), &params)?
            > 0)
    }

    /// Inserts a run (`id` ignored) and returns its id.
    fn start_run(&mut self, run: &SyncRun) -> Result<i64, StoreError> {
        let params = [
            Param::text(&run.provider),
            Param::text(run.kind.as_str()),
            Param::text(&run.started_at),
            Param::text(run.outcome.as_str()),
        ];
        Ok(
            one(self.connection().query(statements::RUN_START, &params)?)?
                .int(0)?
                .unwrap_or_default(),
        )
    }

    fn finish_run(&mut self, run: &SyncRun) -> Result<(), StoreError> {
        let missed = records::join_ids(&run.missed_ticket_ids);
        let params = [
            Param::Int(Some(run.id)),
            Param::Text(run.finished_at.as_deref()),
            Param::text(run.outcome.as_str()),
            Param::Int(Some(run.tickets_seen)),
            Param::Int(Some(run.tickets_changed)),
            Param::Int(Some(run.missed_by_webhooks)),
            Param::Text(missed.as_deref()),
            Param::Int(Some(run.api_calls)),
            Param::Text(run.error.as_deref()),
        ];
        self.connection()
            .execute(statements::RUN_FINISH, &params)
            .map(drop)
    }
}

/// Opens a backend for `url`, creating or upgrading the schema.
pub fn connect(url: &DatabaseUrl) -> Result<Box<dyn Backend>, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => Ok(Box::new(sqlite::SqliteBackend::open(path)?)),
        DatabaseUrl::Postgres(url) => Ok(Box::new(postgres::PostgresBackend::connect(url)?)),
    }
}

/// Opens a read connection for `url`. The database must exist: the
/// writer creates and migrates it. `read_only`: SQLite is opened so that
/// nothing is written to the file or beside it (see
/// `SqliteReader::open_read_only`).
pub fn connect_reader(url: &DatabaseUrl, read_only: bool) -> Result<Box<dyn Reads>, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) if read_only => {
            Ok(Box::new(sqlite::SqliteReader::open_read_only(path)?))
        }
        DatabaseUrl::Sqlite(path) => Ok(Box::new(sqlite::SqliteReader::open(path)?)),
        DatabaseUrl::Postgres(url) => Ok(Box::new(postgres::PostgresReader::connect(url)?)),
    }
}

/// The first connection of a service or command: an open backend, or why
/// there is none yet (the writer keeps trying).
pub type FirstConnection = Result<Box<dyn Backend>, StoreError>;

/// Connects at start-up. A database that cannot be reached yet is not an
/// error here (Codex starts and connects when it can); one that waiting
/// will not fix is.
pub fn connect_at_start(url: &DatabaseUrl) -> Result<FirstConnection, StoreError> {
    match connect(url) {
        Ok(backend) => Ok(Ok(backend)),
        Err(error) if error.is_permanent() => Err(error),
        Err(error) => {
            log::error!("{error}; starting anyway, writes are refused until it answers");
            Ok(Err(error))
        }
    }
}

/// The line `check` prints for a migration that would make `changes`.
pub(crate) fn describe_check(name: &str, changes: &[String]) -> String {
    match changes {
        [] => format!(
            "{name} is reachable, schema version {} is in place",
            schema::VERSION
        ),
        _ => format!(
            "{name} is reachable; codex migrate (or serve at start-up) will: {}",
            changes.join("; ")
        ),
    }
}

/// Checks, without changing anything, that `serve` can use the database:
/// reachable, credentials accepted, schema not newer than this binary, and
/// the migration `serve` would run succeeds (it is run and rolled back,
/// statements prepared included). Returns a line describing it.
pub fn check(url: &DatabaseUrl) -> Result<String, StoreError> {
    match url {
        DatabaseUrl::Sqlite(path) => sqlite::check(path),
        DatabaseUrl::Postgres(url) => postgres::check(url),
    }
}

/// Runs `codex migrate`: creates or upgrades the schema (logging each
/// change) and reports the version. With `adopt`, a SQLite file that is missing or not the one
/// Codex created is accepted as Codex's database (an empty one is created
/// if none is there).
pub fn migrate(config: &Config, adopt: bool) -> Result<i64, StoreError> {
    if let (true, DatabaseUrl::Sqlite(path)) = (adopt, &config.database.url) {
        sqlite::forget_id(path)?;
    }
    connect(&config.database.url)?;
    Ok(schema::VERSION)
}

/// Leadership for work that must run on one instance only (the poller).
pub trait Leadership: Send {
    /// True while this instance leads for `provider`; takes the lead when
    /// it is free.
    fn lead(&mut self, provider: Provider) -> bool;
}

/// Leadership on the database at `url`: on SQLite there is one instance,
/// which always leads; on PostgreSQL an advisory lock per provider (see
/// `postgres::AdvisoryLeadership`).
pub fn leadership(url: &DatabaseUrl) -> Box<dyn Leadership> {
    match url {
        DatabaseUrl::Sqlite(_) => Box::new(sqlite::AlwaysLeads),
        DatabaseUrl::Postgres(url) => Box::new(postgres::AdvisoryLeadership::new(url)),
    }
}
