//! Storage: one writer thread owns the database connection for writing.
//! HTTP handlers and the poller send it `Command`s over a bounded channel
//! (`command.rs`); it applies whatever is waiting in one transaction
//! (group commit) and only then answers, so an answer means the change is
//! durable. Reads that need no ordering with writes go through a `Reader`,
//! a connection of the reader's own.
//!
//! `records` holds what is stored and answered, `diff` what an upsert did,
//! `sqlite` and `postgres` the two backends.

mod activity;
mod command;
mod coverage;
mod db_health;
mod dialect;
mod diff;
mod ids;
mod journal;
mod migrate;
mod postgres;
mod queries;
mod reader;
mod records;
mod schema;
mod sql;
mod sqlite;
mod tickets;
mod writer;

use crate::config::{Config, DatabaseUrl};
use crate::error::StoreError;
use crate::psa::Provider;

pub use activity::{Delivery, DeliveryCount};
pub use command::StoreClient;
pub use coverage::{COVERAGE_WINDOW_SECS, ProviderSummary};
pub use db_health::DbHealth;
pub use journal::{JournalEntryUpdate, JournalOutcome, JournalQuery, Journaled};
pub use reader::Reader;
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

    /// Deletes up to `limit` journal rows received before `cutoff`; returns
    /// how many went. Does nothing when another instance is pruning.
    fn prune_journal(&mut self, cutoff: &str, limit: i64) -> Result<u64, StoreError>;

    fn save_sync_state(&mut self, provider: Provider, state: &SyncState) -> Result<(), StoreError>;

    /// Records on a refused delivery's journal row what a replay made of
    /// it; false (and nothing changed) when the row is gone or was not
    /// refused.
    fn mark_replayed(&mut self, update: &JournalEntryUpdate) -> Result<bool, StoreError>;

    /// Inserts a run (`id` ignored) and returns its id.
    fn start_run(&mut self, run: &SyncRun) -> Result<i64, StoreError>;

    fn finish_run(&mut self, run: &SyncRun) -> Result<(), StoreError>;
}

/// The reads of a database, on a connection of the reader's own (see
/// `Reader`): nothing here waits for the writer, nor the writer for it.
pub trait Reads: Send {
    /// Fails when the connection reads something other than Codex's
    /// database (a SQLite file replaced under it); it is then reopened.
    fn verify(&mut self) -> Result<(), StoreError>;

    /// The newest `limit` journaled deliveries, without their bodies.
    fn recent_deliveries(&mut self, limit: i64) -> Result<Vec<Delivery>, StoreError>;

    /// Deliveries per ten-minute slot and outcome since `since`.
    fn delivery_counts(&mut self, since: &str) -> Result<Vec<DeliveryCount>, StoreError>;

    /// The journaled deliveries `query` names, bodies included, oldest first.
    fn journaled(&mut self, query: &JournalQuery) -> Result<Vec<Journaled>, StoreError>;

    /// The schema version recorded in `codex_meta`, as stored.
    fn schema_version(&mut self) -> Result<Option<String>, StoreError>;

    /// Rows in the delivery journal (`webhook_events`).
    fn journal_rows(&mut self) -> Result<i64, StoreError>;

    /// A page of tickets for the read API, and how many match its filters.
    fn tickets(&mut self, query: &TicketQuery) -> Result<TicketPage, StoreError>;

    /// The ticket with the PSA's id `external_id` (of `source` when given).
    fn ticket(
        &mut self,
        external_id: i64,
        source: Option<&str>,
    ) -> Result<Option<TicketRow>, StoreError>;

    /// A company's tickets (last updated in `year` when given), or `None`
    /// when the company is not known.
    fn company_tickets(
        &mut self,
        account_number: &str,
        year: Option<&str>,
    ) -> Result<Option<Vec<TicketRow>>, StoreError>;

    /// Tickets whose status is not one of `excluded`, with their stored
    /// status ids: the first `limit` with an id above `after`, by id.
    fn active_tickets(
        &mut self,
        provider: Provider,
        excluded: &[String],
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Option<i64>)>, StoreError>;

    fn webhook_counts(
        &mut self,
        provider: Provider,
        since: &str,
    ) -> Result<WebhookCounts, StoreError>;

    fn sync_state(&mut self, provider: Provider) -> Result<SyncState, StoreError>;

    /// The newest runs first.
    fn recent_runs(
        &mut self,
        provider: Option<Provider>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError>;

    /// Changes missed by webhooks, summed over successful runs started since `since`.
    fn missed_since(&mut self, provider: Provider, since: &str) -> Result<i64, StoreError>;
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
