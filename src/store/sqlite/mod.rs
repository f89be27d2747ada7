//! Embedded SQLite: WAL mode with `synchronous=FULL`, so a committed batch
//! is on disk before anyone is told so.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

mod catalog;
mod file;
mod reader;

pub use file::forget_id;
pub use reader::SqliteReader;

use super::connection::{self, Cell, Cells, Param};
use super::dialect::Dialect;
use super::journal::JournalOutcome;
use super::records::{JournalEntry, Outcome, Snapshot, Tombstone, WriteItem, classify};
use super::statements;
use super::{Backend, Leadership};
use crate::error::StoreError;
use crate::psa::{EventKind, Provider, TicketEvent};
use crate::timestamp;
use file::OpenFile;

pub struct SqliteBackend {
    conn: Connection,
    /// The database file as opened: checked at each commit.
    file: OpenFile,
    /// Copies committed WAL frames into the database file off the writer's
    /// path; stops when the backend is dropped.
    checkpointer: Checkpointer,
    /// The statements a batch runs.
    sql: BatchSql,
}

/// The one instance on a SQLite file always leads.
pub struct AlwaysLeads;

impl Leadership for AlwaysLeads {
    fn lead(&mut self, _provider: Provider) -> bool {
        true
    }
}

impl SqliteBackend {
    /// Opens (creating the file, in an existing directory, if need be) the
    /// database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        let unavailable = |e: rusqlite::Error| {
            StoreError::Unavailable(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        };
        // A file is created where none is, but never a directory: a path
        // into a directory that does not exist is a mistake, not a wish.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(StoreError::Unavailable(format!(
                    "cannot create SQLite database {}: the directory {} does not exist",
                    path.display(),
                    parent.display()
                )));
            }
        }
        let recorded = file::recorded_id(path)?;
        file::check_exists(path, recorded.as_deref())?;
        let mut conn = Connection::open(path).map_err(unavailable)?;
        let file = OpenFile::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        // Before anything writes to it: is this Codex's database?
        let found = database_id(&conn)?;
        if let Some(recorded) = &recorded {
            file::check_id(path, recorded, found.as_deref())?;
        }
        // WAL lets readers (dashboards) read while Codex writes; FULL syncs
        // the WAL on every commit, which is what makes a 2xx durable.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(unavailable)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "SQLite database {} cannot use WAL mode (got {mode})",
                path.display()
            )));
        }
        // After a checkpoint the WAL shrinks back to this size, so space
        // freed after a disk-full stays free.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 16777216")
            .map_err(unavailable)?;
        let (sql, changes) = {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_error)?;
            let migrated = catalog::migrate(&tx)?;
            tx.commit().map_err(map_error)?;
            migrated
        };
        for change in &changes {
            log::info!("schema: {change}");
        }
        let backend = SqliteBackend {
            conn,
            file,
            checkpointer: Checkpointer::start(path)?,
            sql,
        };
        let id = match found {
            Some(id) => id,
            None => {
                let id = file::new_id()?;
                backend
                    .conn
                    .execute(
                        "INSERT INTO codex_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                        params![DATABASE_ID_KEY, id],
                    )
                    .map_err(map_error)?;
                id
            }
        };
        if recorded.is_none() {
            file::record_id(path, &id)?;
        }
        // Whatever the WAL holds goes into the database file before any
        // write is accepted: after a disk-full, service resumes only once
        // there is room for it, rather than for a moment.
        backend
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(map_error)?;
        Ok(backend)
    }

    /// Applies one event with the batch's prepared statements. A delete of
    /// a ticket never stored leaves a tombstone instead of a row; an event
    /// that then creates the ticket is merged with it.
    fn upsert(
        statements: &mut Statements<'_>,
        event: &TicketEvent,
        now: &str,
    ) -> Result<Outcome, StoreError> {
        let provider = event.provider.as_str();
        let key = params![event.ticket_id, provider];
        let old = statements
            .select
            .query_row(key, cells)
            .optional()
            .map_err(map_error)?
            .map(|row| row.snapshot(0))
            .transpose()?;
        if old.is_none() && event.kind == EventKind::Deleted {
            let tombstone = Tombstone::of(event);
            statements
                .tombstone_upsert
                .execute(params![
                    event.ticket_id,
                    provider,
                    tombstone.last_updated_at,
                    tombstone.status,
                    tombstone.status_id,
                    tombstone.closed_at,
                    now
                ])
                .map_err(map_error)?;
            return Ok(Outcome::Ignored {
                reason: "ticket not found".to_string(),
            });
        }
        let tombstone = match old {
            Some(_) => None,
            None => statements
                .tombstone_select
                .query_row(key, cells)
                .optional()
                .map_err(map_error)?
                .map(|row| statements::tombstone(&row))
                .transpose()?,
        };
        let new = statements.run_upsert(event, now)?;
        let Some(tombstone) = tombstone else {
            return Ok(classify(event, old.as_ref(), new.as_ref(), old.is_none()));
        };
        let merged = statements.run_upsert(&tombstone.event(event), now)?;
        statements
            .tombstone_delete
            .execute(key)
            .map_err(map_error)?;
        Ok(classify(
            event,
            Some(&tombstone.snapshot()),
            merged.or(new).as_ref(),
            false,
        ))
    }
}

impl connection::Connection for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        self.prepare_cached(sql)
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params_from_iter(params.iter().map(to_sql)))
            })
            .map(|n| n as u64)
            .map_err(map_error)
    }

    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Cells>, StoreError> {
        let mut stmt = self.prepare_cached(sql).map_err(map_error)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter().map(to_sql)), cells)
            .map_err(map_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_error)
    }
}

/// A row as `Cells`.
fn cells(row: &Row<'_>) -> rusqlite::Result<Cells> {
    (0..row.as_ref().column_count())
        .map(|at| {
            Ok(match row.get_ref(at)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(n) => Cell::Int(n),
                ValueRef::Real(x) => Cell::Float(x),
                ValueRef::Text(text) => Cell::Text(String::from_utf8_lossy(text).into_owned()),
                ValueRef::Blob(bytes) => Cell::Bytes(bytes.to_vec()),
            })
        })
        .collect::<rusqlite::Result<_>>()
        .map(Cells)
}

/// The `codex_meta` key of the id Codex gives a database it creates.
const DATABASE_ID_KEY: &str = "database_id";

/// The database's id, if it has one (none in a new or foreign file).
pub(super) fn database_id(conn: &Connection) -> Result<Option<String>, StoreError> {
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'codex_meta'",
            [],
            |row| row.get(0),
        )
        .map_err(map_error)?;
    if !has_meta {
        return Ok(None);
    }
    conn.query_row(
        "SELECT value FROM codex_meta WHERE key = ?1",
        [DATABASE_ID_KEY],
        |row| row.get(0),
    )
    .optional()
    .map_err(map_error)
}

/// A thread with a connection of its own that checkpoints the WAL: copies
/// committed frames into the database file (and syncs it), so the WAL
/// stays short without the writer ever pausing to do it. It runs after
/// commits, at most every `CHECKPOINT_EVERY`, and sleeps while nothing is
/// committed.
struct Checkpointer {
    /// Dropped with the backend: the thread checkpoints a last time and ends.
    _stop: crossbeam_channel::Sender<()>,
    /// Holds one "something was committed" at most.
    committed: crossbeam_channel::Sender<()>,
}

/// How often the checkpointer runs at most. A passive checkpoint never
/// blocks the writer; between runs the WAL grows by at most this much
/// traffic.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        })?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (committed, commits) = crossbeam_channel::bounded::<()>(1);
        std::thread::Builder::new()
            .name("codex-checkpoint".to_string())
            .spawn(move || {
                loop {
                    crossbeam_channel::select! {
                        recv(commits) -> _ => {},
                        recv(stopped) -> _ => break,
                    }
                    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                    });
                    match result {
                        Ok((log, done)) if log > 262_144 && done < log => log::warn!(
                            "the SQLite WAL has {log} frames, {done} checkpointed: a long-running reader may be holding it"
                        ),
                        Ok(_) => {}
                        Err(error) => log::warn!("WAL checkpoint failed: {error}"),
                    }
                    // Commits meanwhile wait for the next run.
                    if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
                        stopped.recv_timeout(CHECKPOINT_EVERY)
                    {
                        break;
                    }
                }
                // A final full checkpoint leaves a short WAL behind.
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            _stop: stop,
            committed,
        })
    }

    /// Tells the thread that a transaction was committed.
    fn committed(&self) {
        // A full channel means a run is already due.
        let _ = self.committed.try_send(());
    }
}

/// See `store::check`.
pub fn check(path: &Path) -> Result<String, StoreError> {
    let recorded = file::recorded_id(path)?;
    file::check_exists(path, recorded.as_deref())?;
    if !path.exists() {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let existing = parent
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let writable = std::fs::metadata(existing)
            .map(|m| !m.permissions().readonly())
            .unwrap_or(false);
        return if writable {
            Ok(format!(
                "{} does not exist yet; it will be created at start-up",
                path.display()
            ))
        } else {
            Err(StoreError::Unavailable(format!(
                "{} does not exist and {} is not writable",
                path.display(),
                existing.display()
            )))
        };
    }
    let mut conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    if let Some(recorded) = &recorded {
        file::check_id(path, recorded, database_id(&conn)?.as_deref())?;
    }
    // The migration serve would run, rolled back when the transaction drops.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_error)?;
    let (_, changes) = catalog::migrate(&tx)?;
    Ok(super::describe_check(&path.display().to_string(), &changes))
}

fn to_sql<'a>(param: &Param<'a>) -> ToSqlOutput<'a> {
    ToSqlOutput::Borrowed(match *param {
        Param::Text(Some(text)) => ValueRef::Text(text.as_bytes()),
        Param::Int(Some(n)) => ValueRef::Integer(n),
        Param::Bool(Some(b)) => ValueRef::Integer(i64::from(b)),
        Param::Text(None) | Param::Int(None) | Param::Bool(None) => ValueRef::Null,
    })
}

/// The text of the statements a batch runs, as the migration chose them
/// (the upsert is this database's: with or without companies).
pub(super) struct BatchSql {
    pub upsert: String,
    pub select: String,
    pub journal: String,
    pub tombstone_select: String,
    pub tombstone_upsert: String,
    pub tombstone_delete: String,
}

impl BatchSql {
    /// Each statement, for the migration to prepare.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.upsert,
            &self.select,
            &self.journal,
            &self.tombstone_select,
            &self.tombstone_upsert,
            &self.tombstone_delete,
        ]
    }

    /// The statements from the connection's cache, for one batch.
    fn prepare<'conn>(&self, conn: &'conn Connection) -> Result<Statements<'conn>, StoreError> {
        let prepare = |sql: &str| conn.prepare_cached(sql).map_err(map_error);
        Ok(Statements {
            upsert: prepare(&self.upsert)?,
            select: prepare(&self.select)?,
            journal: prepare(&self.journal)?,
            tombstone_select: prepare(&self.tombstone_select)?,
            tombstone_upsert: prepare(&self.tombstone_upsert)?,
            tombstone_delete: prepare(&self.tombstone_delete)?,
        })
    }
}

/// The statements a batch runs, looked up once per batch: the upsert is
/// long, and the statement cache hashes its text on every lookup.
struct Statements<'conn> {
    select: rusqlite::CachedStatement<'conn>,
    upsert: rusqlite::CachedStatement<'conn>,
    journal: rusqlite::CachedStatement<'conn>,
    tombstone_select: rusqlite::CachedStatement<'conn>,
    tombstone_upsert: rusqlite::CachedStatement<'conn>,
    tombstone_delete: rusqlite::CachedStatement<'conn>,
}

impl Statements<'_> {
    /// Runs the upsert for `event`; the row as stored, or `None` when the
    /// event changed nothing.
    fn run_upsert(
        &mut self,
        event: &TicketEvent,
        now: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = statements::row_params(event, now);
        self.upsert
            .query_row(rusqlite::params_from_iter(row.iter().map(to_sql)), cells)
            .optional()
            .map_err(map_error)?
            .map(|row| row.snapshot(0))
            .transpose()
    }
}

fn insert_journal(
    journal: &mut rusqlite::CachedStatement<'_>,
    entry: &JournalEntry,
    outcome: JournalOutcome,
) -> rusqlite::Result<()> {
    journal.execute(params![
        entry.provider.as_str(),
        entry.received_at,
        entry.client_ip,
        entry.event,
        entry.ticket_id,
        outcome.as_str(),
        entry.error,
        entry.body,
    ])?;
    Ok(())
}

/// Connection-level failures make the database unavailable (the writer
/// reopens it); anything else is the statement's own problem.
fn map_error(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &error {
        if matches!(
            failure.code,
            ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::PermissionDenied
                | ErrorCode::OutOfMemory
        ) {
            return StoreError::Unavailable(error.to_string());
        }
    }
    StoreError::Statement(error.to_string())
}

impl Backend for SqliteBackend {
    fn apply(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, StoreError> {
        let now = timestamp::now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_error)?;
        let mut outcomes = Vec::with_capacity(items.len());
        {
            let mut statements = self.sql.prepare(&tx)?;
            for item in items {
                let outcome = match &item.event {
                    Some(event) => Self::upsert(&mut statements, event, &now)?,
                    None => Outcome::Rejected,
                };
                if let Some(entry) = &item.journal {
                    let recorded = entry.outcome.unwrap_or(JournalOutcome::from(&outcome));
                    insert_journal(&mut statements.journal, entry, recorded).map_err(map_error)?;
                }
                outcomes.push(outcome);
            }
        }
        tx.commit().map_err(map_error)?;
        self.checkpointer.committed();
        // Committed into the file the path still names, or not
        // acknowledged at all.
        self.file.check()?;
        Ok(outcomes)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.file.check()?;
        self.conn
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            .map(|_| ())
            .map_err(map_error)
    }

    /// One instance writes a SQLite file, so pruning (provided) needs no
    /// lock.
    fn connection(&self) -> &dyn connection::Connection {
        &self.conn
    }
}
