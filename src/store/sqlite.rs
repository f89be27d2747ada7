//! Embedded SQLite: WAL mode with `synchronous=FULL`, so a committed batch
//! is on disk before anyone is told so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};

use super::diff::classify;
use super::ids;
use super::migrate::{self, Existing, Family};
use super::records::{
    JournalEntry, Outcome, Snapshot, SyncRun, SyncState, Tombstone, UnknownValue, WebhookCounts,
    WriteItem,
};
use super::schema::{self, ColumnDef, Dialect};
use super::sql::{self, Param};
use super::sqlite_file::{self, OpenFile};
use super::{Backend, Reads};
use crate::error::StoreError;
use crate::psa::{EventKind, Field, Kind, Provider, TicketEvent, Value};
use crate::timestamp;

pub struct SqliteBackend {
    conn: Connection,
    /// The database file as opened: checked at each commit.
    file: OpenFile,
    /// Copies committed WAL frames into the database file off the writer's
    /// path; stops when the backend is dropped.
    _checkpointer: Checkpointer,
    upsert_sql: String,
    select_sql: String,
    journal_sql: String,
}

/// Tombstone statements (`ticket_tombstones`), parameters `?1` (ticket id)
/// and `?2` (provider) first.
const TOMBSTONE_SELECT: &str = "SELECT last_updated_at, status, CAST(status_id AS INTEGER), closed_at \
     FROM ticket_tombstones WHERE external_id = ?1 AND external_source = ?2";
const TOMBSTONE_DELETE: &str =
    "DELETE FROM ticket_tombstones WHERE external_id = ?1 AND external_source = ?2";
const TOMBSTONE_UPSERT: &str = "INSERT INTO ticket_tombstones \
     (external_id, external_source, last_updated_at, status, status_id, closed_at, recorded_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (external_id, external_source) DO UPDATE SET \
     last_updated_at = excluded.last_updated_at, status = excluded.status, status_id = excluded.status_id, \
     closed_at = excluded.closed_at, recorded_at = excluded.recorded_at \
     WHERE excluded.last_updated_at IS NULL OR (ticket_tombstones.last_updated_at IS NOT NULL \
     AND excluded.last_updated_at >= ticket_tombstones.last_updated_at)";

impl SqliteBackend {
    /// Opens (creating if need be) the database file and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        let unavailable = |e: rusqlite::Error| {
            StoreError::Unavailable(format!(
                "cannot open SQLite database {}: {e}",
                path.display()
            ))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let recorded = sqlite_file::recorded_id(path)?;
        sqlite_file::check_exists(path, recorded.as_deref())?;
        let mut conn = Connection::open(path).map_err(unavailable)?;
        let file = OpenFile::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        // Before anything writes to it: is this Codex's database?
        let found = database_id(&conn)?;
        if let Some(recorded) = &recorded {
            sqlite_file::check_id(path, recorded, found.as_deref())?;
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
        let (upsert_sql, changes) = {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_error)?;
            let (upsert_sql, changes) = migrate(&tx)?;
            tx.commit().map_err(map_error)?;
            (upsert_sql, changes)
        };
        for change in &changes {
            log::info!("schema: {change}");
        }
        let backend = SqliteBackend {
            conn,
            file,
            _checkpointer: Checkpointer::start(path)?,
            upsert_sql,
            select_sql: select_sql(),
            journal_sql: journal_sql(),
        };
        let id = match found {
            Some(id) => id,
            None => {
                let id = sqlite_file::new_id()?;
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
            sqlite_file::record_id(path, &id)?;
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
    ) -> rusqlite::Result<Outcome> {
        let provider = event.provider.as_str();
        let key = params![event.ticket_id, provider];
        let old = statements.select.query_row(key, read_snapshot).optional()?;
        if old.is_none() && event.kind == EventKind::Deleted {
            let tombstone = Tombstone::of(event);
            statements.tombstone_upsert.execute(params![
                event.ticket_id,
                provider,
                tombstone.last_updated_at,
                tombstone.status,
                tombstone.status_id,
                tombstone.closed_at,
                now
            ])?;
            return Ok(Outcome::Ignored {
                reason: "ticket not found".to_string(),
            });
        }
        let tombstone = match old {
            Some(_) => None,
            None => statements
                .tombstone_select
                .query_row(key, |row| {
                    Ok(Tombstone {
                        last_updated_at: row.get(0)?,
                        status: row.get(1)?,
                        status_id: row.get(2)?,
                        closed_at: row.get(3)?,
                    })
                })
                .optional()?,
        };
        let new = statements.run_upsert(event, now)?;
        let Some(tombstone) = tombstone else {
            return Ok(classify(event, old.as_ref(), new.as_ref(), old.is_none()));
        };
        let merged = statements.run_upsert(&tombstone.event(event), now)?;
        statements.tombstone_delete.execute(key)?;
        Ok(classify(
            event,
            Some(&tombstone.snapshot()),
            merged.or(new).as_ref(),
            false,
        ))
    }
}

/// Creates or upgrades the schema in `tx` and prepares every statement the
/// backend runs (so a migration that `serve` could not use fails before it
/// commits). Returns the upsert for this database and the changes made.
fn migrate(tx: &rusqlite::Transaction<'_>) -> Result<(String, Vec<String>), StoreError> {
    let mut catalog = Catalog { tx };
    let changes = migrate::run(&mut catalog)?;
    let companies = migrate::companies_usable(&mut catalog)?;
    let upsert_sql = sql::sqlite_upsert(companies);
    for statement in [
        upsert_sql.as_str(),
        &select_sql(),
        &journal_sql(),
        TOMBSTONE_SELECT,
        TOMBSTONE_DELETE,
        TOMBSTONE_UPSERT,
    ] {
        tx.prepare(statement).map_err(|e| match map_error(e) {
            StoreError::Statement(message) => StoreError::Migration(format!(
                "a statement Codex runs does not prepare: {message}"
            )),
            other => other,
        })?;
    }
    Ok((upsert_sql, changes))
}

fn select_sql() -> String {
    format!(
        "SELECT {} FROM ticket_details WHERE external_id = ?1 AND external_source = ?2",
        sql::snapshot_columns("")
    )
}

fn journal_sql() -> String {
    format!(
        "INSERT INTO webhook_events ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        sql::JOURNAL_COLUMNS
    )
}

/// The migration's view of a SQLite database.
struct Catalog<'a, 'conn> {
    tx: &'a rusqlite::Transaction<'conn>,
}

impl migrate::Catalog for Catalog<'_, '_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.execute_batch(sql).map_err(map_error)
    }

    fn update(&mut self, sql: &str) -> Result<u64, StoreError> {
        self.tx
            .execute(sql, [])
            .map(|n| n as u64)
            .map_err(map_error)
    }

    fn text(&mut self, sql: &str) -> Result<Option<String>, StoreError> {
        self.tx
            .query_row(sql, [], |row| row.get::<_, Option<String>>(0))
            .optional()
            .map(Option::flatten)
            .map_err(map_error)
    }

    fn table_exists(&mut self, table: &str) -> Result<bool, StoreError> {
        self.tx
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
            .map_err(map_error)
    }

    fn columns(&mut self, table: &str) -> Result<Vec<Existing>, StoreError> {
        let mut stmt = self
            .tx
            .prepare("SELECT name, type FROM pragma_table_info(?1)")
            .map_err(map_error)?;
        let rows = stmt
            .query_map([table], |row| {
                let declared: String = row.get(1)?;
                Ok(Existing {
                    name: row.get(0)?,
                    family: Family::of_sqlite_type(&declared),
                    declared,
                    // SQLite does not enforce VARCHAR(n).
                    max_length: None,
                })
            })
            .map_err(map_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_error)
    }

    fn has_unique_index(&mut self, table: &str, columns: &[&str]) -> Result<bool, StoreError> {
        let wanted = {
            let mut wanted = columns.to_vec();
            wanted.sort_unstable();
            wanted.join(",")
        };
        self.tx
            .query_row(
                "SELECT count(*) > 0 FROM pragma_index_list(?1) l WHERE l.\"unique\" = 1 AND l.partial = 0 \
                 AND (SELECT group_concat(name, ',') FROM \
                      (SELECT i.name FROM pragma_index_info(l.name) i ORDER BY i.name)) = ?2",
                params![table, wanted],
                |row| row.get(0),
            )
            .map_err(map_error)
    }

    /// SQLite does not enforce `VARCHAR(n)`: nothing to lift.
    fn widen(
        &mut self,
        _table: &str,
        _columns: &[&ColumnDef],
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// SQLite cannot change a column's type: the table is rebuilt (the
    /// documented create, copy, drop, rename), inside the migration's
    /// transaction, keeping columns and indexes Codex does not know.
    fn convert(
        &mut self,
        table: &str,
        columns: &[&ColumnDef],
        existing: &[Existing],
    ) -> Result<(), StoreError> {
        let create = schema::statements(Dialect::Sqlite)
            .into_iter()
            .find_map(|s| {
                s.strip_prefix(&format!("CREATE TABLE IF NOT EXISTS {table} "))
                    .map(str::to_string)
            })
            .ok_or_else(|| StoreError::Migration(format!("schema.sql does not create {table}")))?;
        let rebuilt = format!("{table}__codex_rebuild");
        self.execute(&format!("CREATE TABLE {rebuilt} {create}"))?;
        let new_columns = self.columns(&rebuilt)?;
        for column in existing {
            if !new_columns.iter().any(|c| c.name == column.name) {
                self.execute(&format!(
                    "ALTER TABLE {rebuilt} ADD COLUMN {} {}",
                    column.name, column.declared
                ))?;
            }
        }
        let names: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
        let values: Vec<String> = existing
            .iter()
            .map(|c| match columns.iter().find(|t| t.name == c.name) {
                Some(t) if Family::of_definition(&t.definition) == Family::Int => {
                    format!("CAST({} AS INTEGER)", c.name)
                }
                _ => c.name.clone(),
            })
            .collect();
        // Indexes of the old table that are not Codex's own, recreated on the
        // new one (Codex's come from schema.sql after the conversion; the
        // first schema's unique index is the new table's constraint).
        let mut stmt = self
            .tx
            .prepare(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL \
                 AND name NOT LIKE 'idx_ticket_%' AND name <> 'ticket_details_external_id_external_source_key'",
            )
            .map_err(map_error)?;
        let indexes = stmt
            .query_map([table], |row| row.get::<_, String>(0))
            .map_err(map_error)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_error)?;
        drop(stmt);
        self.execute(&format!(
            "INSERT INTO {rebuilt} ({}) SELECT {} FROM {table}",
            names.join(", "),
            values.join(", ")
        ))?;
        self.execute(&format!("DROP TABLE {table}"))?;
        self.execute(&format!("ALTER TABLE {rebuilt} RENAME TO {table}"))?;
        for index in indexes {
            self.execute(&index)?;
        }
        Ok(())
    }
}

/// The `codex_meta` key of the id Codex gives a database it creates.
const DATABASE_ID_KEY: &str = "database_id";

/// The database's id, if it has one (none in a new or foreign file).
fn database_id(conn: &Connection) -> Result<Option<String>, StoreError> {
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
/// stays short without the writer ever pausing to do it.
struct Checkpointer {
    _stop: crossbeam_channel::Sender<()>,
}

/// How often the checkpointer runs. A passive checkpoint never blocks the
/// writer; between runs the WAL grows by at most this much traffic.
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
        std::thread::Builder::new()
            .name("codex-checkpoint".to_string())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
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
                }
                // A final full checkpoint leaves a short WAL behind.
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { _stop: stop })
    }
}

/// See `store::check`.
pub fn check(path: &Path) -> Result<String, StoreError> {
    let recorded = sqlite_file::recorded_id(path)?;
    sqlite_file::check_exists(path, recorded.as_deref())?;
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
        sqlite_file::check_id(path, recorded, database_id(&conn)?.as_deref())?;
    }
    // The migration serve would run, rolled back when the transaction drops.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_error)?;
    let (_, changes) = migrate(&tx)?;
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

/// Reads `snapshot_columns()` from a row.
fn read_snapshot(row: &Row<'_>) -> rusqlite::Result<Snapshot> {
    let mut values: [Option<Value>; Field::COUNT] = Default::default();
    for (i, field) in Field::ALL.iter().enumerate() {
        let at = i + 1;
        values[i] = match field.kind() {
            Kind::Text => row.get::<_, Option<String>>(at)?.map(Value::Text),
            Kind::Int => row.get::<_, Option<i64>>(at)?.map(Value::Int),
            Kind::Bool => row.get::<_, Option<bool>>(at)?.map(Value::Bool),
        };
    }
    Ok(Snapshot {
        revision: row.get(0)?,
        values,
        last_updated_at: row.get(Field::COUNT + 1)?,
    })
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
    fn run_upsert(&mut self, event: &TicketEvent, now: &str) -> rusqlite::Result<Option<Snapshot>> {
        let row = sql::row_params(event, now);
        self.upsert
            .query_row(
                rusqlite::params_from_iter(row.iter().map(to_sql)),
                read_snapshot,
            )
            .optional()
    }
}

fn insert_journal(
    journal: &mut rusqlite::CachedStatement<'_>,
    entry: &JournalEntry,
    outcome: &str,
) -> rusqlite::Result<()> {
    journal.execute(params![
        entry.provider.as_str(),
        entry.received_at,
        entry.client_ip,
        entry.event,
        entry.ticket_id,
        outcome,
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
            let mut statements = Statements {
                select: tx.prepare_cached(&self.select_sql).map_err(map_error)?,
                upsert: tx.prepare_cached(&self.upsert_sql).map_err(map_error)?,
                journal: tx.prepare_cached(&self.journal_sql).map_err(map_error)?,
                tombstone_select: tx.prepare_cached(TOMBSTONE_SELECT).map_err(map_error)?,
                tombstone_upsert: tx.prepare_cached(TOMBSTONE_UPSERT).map_err(map_error)?,
                tombstone_delete: tx.prepare_cached(TOMBSTONE_DELETE).map_err(map_error)?,
            };
            for item in items {
                let outcome = match &item.event {
                    Some(event) => Self::upsert(&mut statements, event, &now).map_err(map_error)?,
                    None => Outcome::Rejected,
                };
                if let Some(entry) = &item.journal {
                    insert_journal(
                        &mut statements.journal,
                        entry,
                        entry.outcome.unwrap_or(outcome.as_str()),
                    )
                    .map_err(map_error)?;
                }
                outcomes.push(outcome);
            }
        }
        tx.commit().map_err(map_error)?;
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

    fn prune_journal(&mut self, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "DELETE FROM ticket_tombstones WHERE recorded_at < ?1",
                [cutoff],
            )
            .map_err(map_error)?;
        self.conn
            .execute(
                "DELETE FROM webhook_events WHERE id IN \
                 (SELECT id FROM webhook_events WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
                params![cutoff, limit],
            )
            .map(|n| n as u64)
            .map_err(map_error)
    }

    fn save_sync_state(&mut self, provider: Provider, state: &SyncState) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sync_state (provider, cursor, last_reconcile_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (provider) DO UPDATE SET cursor = excluded.cursor, last_reconcile_at = excluded.last_reconcile_at",
                params![provider.as_str(), state.cursor, state.last_reconcile_at],
            )
            .map(|_| ())
            .map_err(map_error)
    }

    fn start_run(&mut self, run: &SyncRun) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "INSERT INTO sync_runs (provider, kind, started_at, outcome) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                params![run.provider, run.kind.as_str(), run.started_at, run.outcome.as_str()],
                |row| row.get(0),
            )
            .map_err(map_error)
    }

    fn finish_run(&mut self, run: &SyncRun) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sync_runs SET finished_at = ?2, outcome = ?3, tickets_seen = ?4, tickets_changed = ?5, \
                 missed_by_webhooks = ?6, missed_ticket_ids = ?7, api_calls = ?8, error = ?9 WHERE id = ?1",
                params![
                    run.id,
                    run.finished_at,
                    run.outcome.as_str(),
                    run.tickets_seen,
                    run.tickets_changed,
                    run.missed_by_webhooks,
                    ids::join_ids(&run.missed_ticket_ids),
                    run.api_calls,
                    run.error
                ],
            )
            .map(|_| ())
            .map_err(map_error)
    }
}

/// A read connection beside the writer's: WAL lets it read while the
/// writer commits, so reads never wait in the writer's queue.
pub struct SqliteReader {
    conn: Connection,
    path: PathBuf,
    /// The database file as opened (device, inode): the path must still
    /// name it at each read.
    file: (u64, u64),
}

impl SqliteReader {
    /// Opens the database for reading. It must exist and be the one Codex
    /// recorded; the writer creates and migrates it.
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        let recorded = sqlite_file::recorded_id(path)?;
        sqlite_file::check_exists(path, recorded.as_deref())?;
        // Read-write without create: a read-only connection could not
        // take part in WAL when the -shm file is missing.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .and_then(|conn| {
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.execute_batch("PRAGMA query_only = 1")?;
                Ok(conn)
            })
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot open SQLite database {} for reading: {e}",
                    path.display()
                ))
            })?;
        let file = file_id(path)?;
        if let Some(recorded) = &recorded {
            sqlite_file::check_id(path, recorded, database_id(&conn)?.as_deref())?;
        }
        Ok(SqliteReader {
            conn,
            path: path.to_path_buf(),
            file,
        })
    }
}

/// A column holding one of an enum's stored texts.
fn parsed<T: std::str::FromStr<Err = UnknownValue>>(
    row: &Row<'_>,
    at: usize,
) -> rusqlite::Result<T> {
    row.get::<_, String>(at)?.parse().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(error))
    })
}

/// The device and inode of the file at `path`.
fn file_id(path: &Path) -> Result<(u64, u64), StoreError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", path.display())))
}

impl Reads for SqliteReader {
    /// The writer keeps the file it was writing when it is deleted or
    /// replaced (see `OpenFile`); the reader only lets go of it.
    fn verify(&mut self) -> Result<(), StoreError> {
        match file_id(&self.path) {
            Ok(file) if file == self.file => Ok(()),
            _ => Err(StoreError::WrongDatabase(format!(
                "the SQLite database {} was deleted or replaced; the read connection to it was closed",
                self.path.display()
            ))),
        }
    }

    fn active_tickets(
        &mut self,
        provider: Provider,
        done_statuses: &[String],
        limit: i64,
    ) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
        let done = serde_json::to_string(done_statuses).unwrap_or_else(|_| "[]".to_string());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT CAST(external_id AS INTEGER), CAST(status_id AS INTEGER) FROM ticket_details \
                 WHERE external_source = ?1 AND (status IS NULL OR status NOT IN (SELECT value FROM json_each(?2))) \
                 ORDER BY external_id LIMIT ?3",
            )
            .map_err(map_error)?;
        let rows = stmt
            .query_map(params![provider.as_str(), done, limit], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
            })
            .map_err(map_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_error)
    }

    fn webhook_counts(
        &mut self,
        provider: Provider,
        since: &str,
    ) -> Result<WebhookCounts, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*), \
                        coalesce(sum(CASE WHEN outcome IN ('created', 'updated', 'deleted', 'ignored') THEN 1 ELSE 0 END), 0), \
                        coalesce(sum(CASE WHEN outcome IN ('rejected', 'failed') THEN 1 ELSE 0 END), 0), \
                        max(CASE WHEN outcome NOT IN ('rejected', 'failed') THEN received_at END), \
                        max(received_at) \
                 FROM webhook_events WHERE provider = ?1 AND received_at >= ?2",
                params![provider.as_str(), since],
                |row| {
                    Ok(WebhookCounts {
                        received: row.get(0)?,
                        applied: row.get(1)?,
                        rejected: row.get(2)?,
                        last_processed_at: row.get(3)?,
                        last_received_at: row.get(4)?,
                    })
                },
            )
            .map_err(map_error)
    }

    fn sync_state(&mut self, provider: Provider) -> Result<SyncState, StoreError> {
        self.conn
            .query_row(
                "SELECT cursor, last_reconcile_at FROM sync_state WHERE provider = ?1",
                [provider.as_str()],
                |row| {
                    Ok(SyncState {
                        cursor: row.get(0)?,
                        last_reconcile_at: row.get(1)?,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(map_error)
    }

    fn recent_runs(
        &mut self,
        provider: Option<Provider>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, provider, kind, started_at, finished_at, outcome, tickets_seen, tickets_changed, \
                 missed_by_webhooks, missed_ticket_ids, api_calls, error FROM sync_runs \
                 WHERE ?1 IS NULL OR provider = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(map_error)?;
        let rows = stmt
            .query_map(params![provider.map(Provider::as_str), limit], |row| {
                Ok(SyncRun {
                    id: row.get(0)?,
                    provider: row.get(1)?,
                    kind: parsed(row, 2)?,
                    started_at: row.get(3)?,
                    finished_at: row.get(4)?,
                    outcome: parsed(row, 5)?,
                    tickets_seen: row.get(6)?,
                    tickets_changed: row.get(7)?,
                    missed_by_webhooks: row.get(8)?,
                    missed_ticket_ids: ids::split_ids(row.get::<_, Option<String>>(9)?.as_deref()),
                    api_calls: row.get(10)?,
                    error: row.get(11)?,
                })
            })
            .map_err(map_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_error)
    }

    fn missed_since(&mut self, provider: Provider, since: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(missed_by_webhooks), 0) FROM sync_runs \
                 WHERE provider = ?1 AND started_at >= ?2 AND outcome = 'ok'",
                params![provider.as_str(), since],
                |row| row.get(0),
            )
            .map_err(map_error)
    }
}
