//! Embedded SQLite: WAL mode with `synchronous=FULL`, so a committed batch
//! is on disk before anyone is told so.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

use super::dialect::Dialect;
use super::journal::JournalOutcome;
use super::migrate::{self, Column, ColumnType, Conversion, Family, Index, Table};
use super::queries::{self, Cell, Cells, Engine};
use super::schema::Step;
use super::sql::{self, Param};
use super::sqlite_file::{self, OpenFile};
use super::{JournalEntry, Leadership, Outcome, Snapshot, Tombstone, WriteItem, classify};
use crate::error::StoreError;
use crate::psa::{EventKind, Provider, TicketEvent};
use crate::timestamp;

pub struct SqliteBackend {
    conn: Connection,
    /// The database file as opened: checked at each commit.
    file: OpenFile,
    /// Copies committed WAL frames into the database file off the writer's
    /// path; stops when the backend is dropped.
    _checkpointer: Checkpointer,
    /// The statements a batch runs, in `Statements` order (the upsert is
    /// this database's: with or without companies).
    sql: [String; 6],
}

/// The one instance on a SQLite file always leads.
pub struct AlwaysLeads;

impl Leadership for AlwaysLeads {
    fn lead(&mut self, _provider: Provider) -> bool {
        true
    }
}

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
        let (sql, changes) = {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_error)?;
            let migrated = migrate(&tx)?;
            tx.commit().map_err(map_error)?;
            migrated
        };
        for change in &changes {
            log::info!("schema: {change}");
        }
        let backend = SqliteBackend {
            conn,
            file,
            _checkpointer: Checkpointer::start(path)?,
            sql,
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
                .map(|row| queries::tombstone(&row))
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

/// Creates or upgrades the schema in `tx` and prepares every statement the
/// backend runs (so a migration that `serve` could not use fails before it
/// commits). Returns the statements of a batch and the changes made.
fn migrate(tx: &rusqlite::Transaction<'_>) -> Result<([String; 6], Vec<String>), StoreError> {
    let mut catalog = Catalog {
        conn: tx,
        scratch: None,
    };
    let changes = migrate::run(&mut catalog)?;
    let companies = migrate::companies_usable(&mut catalog)?;
    let sql = [
        sql::sqlite_upsert(companies),
        queries::ticket_select(),
        format!(
            "INSERT INTO webhook_events ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            sql::JOURNAL_COLUMNS
        ),
        queries::tombstone_select(),
        queries::TOMBSTONE_UPSERT.to_string(),
        queries::tombstone_delete(),
    ];
    for statement in sql.iter().chain(&queries::all(Dialect::Sqlite)) {
        tx.prepare(statement)
            .map_err(|e| migrate::unpreparable(map_error(e)))?;
    }
    Ok((sql, changes))
}

/// The migration's view of a SQLite database.
struct Catalog<'a> {
    conn: &'a Connection,
    /// The in-memory database `expected` ran the steps in, kept for the
    /// table definitions a conversion copies.
    scratch: Option<Connection>,
}

impl migrate::Catalog for Catalog<'_> {
    fn connection(&self) -> &dyn queries::Connection {
        self.conn
    }

    fn run_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(map_error)
    }

    fn table_exists(&mut self, table: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
            .map_err(map_error)
    }

    fn tables(&mut self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
            .map_err(map_error)?;
        let names = stmt.query_map([], |row| row.get(0)).map_err(map_error)?;
        names.collect::<rusqlite::Result<_>>().map_err(map_error)
    }

    fn columns(&mut self, table: &str) -> Result<Vec<Column>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")
            .map_err(map_error)?;
        let rows = stmt
            .query_map([table], |row| {
                let declared: String = row.get(1)?;
                Ok(Column {
                    name: row.get(0)?,
                    ty: ColumnType {
                        family: Family::of_sqlite_type(&declared),
                        declared,
                        // SQLite does not enforce VARCHAR(n).
                        max_length: None,
                    },
                    not_null: row.get(2)?,
                    default: row.get(3)?,
                    primary_key: row.get::<_, i64>(4)? > 0,
                })
            })
            .map_err(map_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_error)
    }

    fn indexes(&mut self, table: &str) -> Result<Vec<Index>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT l.name, l.\"unique\", l.origin = 'c', i.name \
                 FROM pragma_index_list(?1) l, pragma_index_info(l.name) i \
                 WHERE l.partial = 0 ORDER BY l.seq, i.seqno",
            )
            .map_err(map_error)?;
        let rows = stmt
            .query_map([table], |row| {
                Ok((
                    Index {
                        name: row.get(0)?,
                        columns: Vec::new(),
                        unique: row.get(1)?,
                        created: row.get(2)?,
                    },
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(map_error)?;
        let rows = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_error)?;
        Ok(migrate::group_index_columns(rows))
    }

    fn expected(&mut self, steps: &[Step]) -> Result<Vec<Table>, StoreError> {
        let scratch = Connection::open_in_memory().map_err(map_error)?;
        for step in steps {
            scratch
                .execute_batch(&step.sql(Dialect::Sqlite))
                .map_err(|e| migrate::broken_step(step, &map_error(e)))?;
        }
        let tables = migrate::read_tables(&mut Catalog {
            conn: &scratch,
            scratch: None,
        })?;
        self.scratch = Some(scratch);
        Ok(tables)
    }

    fn non_integer(&mut self, table: &str, column: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT CAST({column} AS TEXT) FROM {table} WHERE {column} IS NOT NULL \
                     AND CAST(CAST({column} AS INTEGER) AS TEXT) <> CAST({column} AS TEXT) LIMIT 1"
                ),
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(map_error)
    }

    /// SQLite does not enforce `VARCHAR(n)`: nothing to lift.
    fn widen(
        &mut self,
        _table: &str,
        _columns: &[&Column],
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// SQLite cannot change a column's type: the table is rebuilt (the
    /// documented create, copy, drop, rename), inside the migration's
    /// transaction, keeping columns and indexes Codex does not know.
    fn convert(&mut self, conversion: &Conversion<'_>) -> Result<(), StoreError> {
        let Conversion {
            expected,
            columns,
            existing,
        } = conversion;
        let table = expected.name.as_str();
        let rebuilt = format!("{table}__codex_rebuild");
        // The definition the steps gave the table, under the new name:
        // renamed in the scratch copy, SQLite rewrites it itself.
        let scratch = self
            .scratch
            .as_ref()
            .ok_or_else(|| StoreError::Migration(format!("no expected definition of {table}")))?;
        let create: String = scratch
            .execute_batch(&format!("ALTER TABLE {table} RENAME TO {rebuilt}"))
            .and_then(|()| {
                scratch.query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [&rebuilt],
                    |row| row.get(0),
                )
            })
            .and_then(|create| {
                scratch.execute_batch(&format!("ALTER TABLE {rebuilt} RENAME TO {table}"))?;
                Ok(create)
            })
            .map_err(map_error)?;
        self.run_script(&create)?;
        let new_columns = self.columns(&rebuilt)?;
        for column in existing.iter() {
            if !new_columns.iter().any(|c| c.name == column.name) {
                self.run_script(&format!(
                    "ALTER TABLE {rebuilt} ADD COLUMN {} {}",
                    column.name, column.ty.declared
                ))?;
            }
        }
        let names: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
        let values: Vec<String> = existing
            .iter()
            .map(|c| match columns.iter().find(|t| t.name == c.name) {
                Some(t) if t.ty.family == Family::Int => format!("CAST({} AS INTEGER)", c.name),
                _ => c.name.clone(),
            })
            .collect();
        // Indexes of the old table that are not Codex's own, recreated on the
        // new one (Codex's come from the steps after the conversion; the
        // first schema's unique index is the new table's constraint).
        let mut stmt = self
            .conn
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
        self.run_script(&format!(
            "INSERT INTO {rebuilt} ({}) SELECT {} FROM {table}",
            names.join(", "),
            values.join(", ")
        ))?;
        self.run_script(&format!("DROP TABLE {table}"))?;
        self.run_script(&format!("ALTER TABLE {rebuilt} RENAME TO {table}"))?;
        for index in indexes {
            self.run_script(&index)?;
        }
        Ok(())
    }
}

impl queries::Connection for Connection {
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
        let row = sql::row_params(event, now);
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

impl Engine for SqliteBackend {
    fn commit(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, StoreError> {
        let now = timestamp::now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_error)?;
        let mut outcomes = Vec::with_capacity(items.len());
        {
            let prepare = |sql: &str| tx.prepare_cached(sql).map_err(map_error);
            let [
                upsert,
                select,
                journal,
                tombstone_select,
                tombstone_upsert,
                tombstone_delete,
            ] = &self.sql;
            let mut statements = Statements {
                upsert: prepare(upsert)?,
                select: prepare(select)?,
                journal: prepare(journal)?,
                tombstone_select: prepare(tombstone_select)?,
                tombstone_upsert: prepare(tombstone_upsert)?,
                tombstone_delete: prepare(tombstone_delete)?,
            };
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
        // Committed into the file the path still names, or not
        // acknowledged at all.
        self.file.check()?;
        Ok(outcomes)
    }

    fn check_alive(&mut self) -> Result<(), StoreError> {
        self.file.check()?;
        self.conn
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            .map(|_| ())
            .map_err(map_error)
    }

    /// One instance writes a SQLite file, so pruning needs no lock.
    fn connection(&self) -> &dyn queries::Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::Catalog as _;
    use crate::store::schema::STEPS;

    fn catalog(conn: &Connection) -> Catalog<'_> {
        Catalog {
            conn,
            scratch: None,
        }
    }

    #[test]
    fn expected_schema_is_read_from_a_scratch_database() {
        let conn = Connection::open_in_memory().unwrap();
        let mut catalog = catalog(&conn);
        let tables = catalog.expected(&STEPS).unwrap();
        migrate::check_expected(&tables, Dialect::Sqlite);
        // Nothing of the scratch copy is in the database.
        assert!(catalog.tables().unwrap().is_empty());
    }

    #[test]
    fn steps_run_in_order_and_a_second_run_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A predecessor-like table, with a single-column index under a name
        // step 2 gives an index on two columns.
        conn.execute_batch(
            "CREATE TABLE ticket_details (id INTEGER PRIMARY KEY, external_id BIGINT NOT NULL, \
             external_source VARCHAR(50) NOT NULL, subject VARCHAR(150), last_updated_at TEXT); \
             CREATE INDEX idx_ticket_source ON ticket_details (external_source); \
             INSERT INTO ticket_details (external_id, external_source, subject, last_updated_at) \
             VALUES (7, 'freshservice', 'Printer', '2024-01-15T10:00:00Z')",
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        let (_, changes) = migrate(&tx).unwrap();
        tx.commit().unwrap();
        let at = |line: &str| {
            changes
                .iter()
                .position(|c| c.starts_with(line))
                .unwrap_or_else(|| panic!("{line} in {changes:?}"))
        };
        // The index goes before step 1 and comes back with step 2; the
        // columns step 2 indexes are there by then.
        assert!(
            at("rebuilding index idx_ticket_source with external_id")
                < at("creating table codex_meta")
        );
        assert!(at("adding column ticket_details.status") < at("versioning 1 inherited tickets"));
        let indexes = catalog(&conn).indexes("ticket_details").unwrap();
        let source = indexes
            .iter()
            .find(|i| i.name == "idx_ticket_source")
            .unwrap();
        assert_eq!(source.columns, ["external_source", "external_id"]);
        assert!(indexes.iter().any(|i| i.name == "idx_ticket_status"));
        let status_as_of: Option<String> = conn
            .query_row("SELECT status_as_of FROM ticket_details", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(status_as_of.as_deref(), Some("2024-01-15T10:00:00Z"));

        let tx = conn.transaction().unwrap();
        let (_, again) = migrate(&tx).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_step_that_does_not_run_names_itself() {
        let conn = Connection::open_in_memory().unwrap();
        // Step 2 alone indexes tables that do not exist yet.
        let error = catalog(&conn).expected(&STEPS[1..]).unwrap_err();
        assert!(
            matches!(&error, StoreError::Migration(m) if m.contains("0002_indexes.sql")),
            "{error}"
        );
    }
}
