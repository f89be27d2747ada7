//! Embedded SQLite: WAL mode with `synchronous=FULL`, so a committed batch
//! is on disk before anyone is told so.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

use super::schema::{self, Dialect};
use super::sql::{self, Param};
use super::sqlite_file::{self, OpenFile};
use super::{
    Backend, JournalEntry, Outcome, Snapshot, SyncRun, SyncState, WebhookCounts, WriteItem,
    classify,
};
use crate::error::StoreError;
use crate::psa::{Field, Kind, Provider, TicketEvent, Value};
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
        let conn = Connection::open(path).map_err(unavailable)?;
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
        let mut backend = SqliteBackend {
            conn,
            file,
            _checkpointer: Checkpointer::start(path)?,
            upsert_sql: sql::sqlite_upsert(),
            select_sql: format!(
                "SELECT {} FROM ticket_details WHERE external_id = ?1 AND external_source = ?2",
                sql::snapshot_columns("")
            ),
            journal_sql: format!(
                "INSERT INTO webhook_events ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                sql::JOURNAL_COLUMNS
            ),
        };
        backend.migrate()?;
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

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_error)?;
        let has_meta: bool = tx
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'codex_meta'",
                [],
                |row| row.get(0),
            )
            .map_err(map_error)?;
        if has_meta {
            let found: Option<String> = tx
                .query_row(
                    "SELECT value FROM codex_meta WHERE key = ?1",
                    [schema::VERSION_KEY],
                    |row| row.get(0),
                )
                .optional()
                .map_err(map_error)?;
            if let Some(found) = found.and_then(|v| v.parse::<i64>().ok()) {
                if found > schema::VERSION {
                    return Err(StoreError::SchemaTooNew {
                        found,
                        supported: schema::VERSION,
                    });
                }
            }
        }
        for statement in schema::statements(Dialect::Sqlite) {
            if statement.starts_with("CREATE INDEX") || statement.starts_with("CREATE UNIQUE INDEX")
            {
                // Indexes may name columns an older table lacks; they run
                // after the columns are added below.
                continue;
            }
            tx.execute_batch(&statement).map_err(map_error)?;
        }
        for column in schema::columns(Dialect::Sqlite) {
            let exists: bool = tx
                .query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    params![column.table, column.name],
                    |row| row.get(0),
                )
                .map_err(map_error)?;
            if !exists {
                log::info!("schema: adding column {}.{}", column.table, column.name);
                tx.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    column.table, column.name, column.definition
                ))
                .map_err(map_error)?;
            }
        }
        for statement in schema::statements(Dialect::Sqlite) {
            if statement.starts_with("CREATE INDEX") || statement.starts_with("CREATE UNIQUE INDEX")
            {
                tx.execute_batch(&statement).map_err(map_error)?;
            }
        }
        tx.execute(
            "INSERT INTO codex_meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![schema::VERSION_KEY, schema::VERSION.to_string()],
        )
        .map_err(map_error)?;
        tx.commit().map_err(map_error)
    }

    /// Applies one event with the batch's prepared statements.
    fn upsert(
        statements: &mut Statements<'_>,
        event: &TicketEvent,
        now: &str,
    ) -> rusqlite::Result<Outcome> {
        let external_id = event.ticket_id.to_string();
        let provider = event.provider.as_str();
        let old = statements
            .select
            .query_row(params![external_id, provider], read_snapshot)
            .optional()?;
        let row = sql::row_params(event, &external_id, now);
        let new = statements
            .upsert
            .query_row(
                rusqlite::params_from_iter(row.iter().map(to_sql)),
                read_snapshot,
            )
            .optional()?;
        Ok(classify(event, old.as_ref(), new.as_ref(), old.is_none()))
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
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    if let Some(recorded) = &recorded {
        sqlite_file::check_id(path, recorded, database_id(&conn)?.as_deref())?;
    }
    let version: Option<i64> = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM codex_meta WHERE key = ?1",
            [schema::VERSION_KEY],
            |row| row.get(0),
        )
        .optional()
        .or_else(|e| match e {
            // No codex_meta yet: a database Codex has not migrated.
            rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => {
                Ok(None)
            }
            other => Err(StoreError::Unavailable(format!(
                "cannot read {}: {other}",
                path.display()
            ))),
        })?;
    describe_version(&path.display().to_string(), version)
}

/// The line `check` prints for a database at schema `version`.
pub(super) fn describe_version(name: &str, version: Option<i64>) -> Result<String, StoreError> {
    match version {
        Some(found) if found > schema::VERSION => Err(StoreError::SchemaTooNew {
            found,
            supported: schema::VERSION,
        }),
        Some(found) => Ok(format!("{name} is reachable, schema version {found}")),
        None => Ok(format!(
            "{name} is reachable; its schema will be created at start-up"
        )),
    }
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
                "DELETE FROM webhook_events WHERE id IN \
                 (SELECT id FROM webhook_events WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
                params![cutoff, limit],
            )
            .map(|n| n as u64)
            .map_err(map_error)
    }

    fn ticket(
        &mut self,
        provider: Provider,
        ticket_id: i64,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.conn
            .prepare_cached(&self.select_sql)
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![ticket_id.to_string(), provider.as_str()],
                    read_snapshot,
                )
                .optional()
            })
            .map_err(map_error)
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
                "SELECT external_id, status_id FROM ticket_details WHERE external_source = ?1 \
                 AND (status IS NULL OR status NOT IN (SELECT value FROM json_each(?2))) \
                 ORDER BY CAST(external_id AS INTEGER) LIMIT ?3",
            )
            .map_err(map_error)?;
        let rows = stmt
            .query_map(params![provider.as_str(), done, limit], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?))
            })
            .map_err(map_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, status) = row.map_err(map_error)?;
            if let Ok(id) = id.parse() {
                out.push((id, status));
            }
        }
        Ok(out)
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
                params![run.provider, run.kind, run.started_at, run.outcome],
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
                    run.outcome,
                    run.tickets_seen,
                    run.tickets_changed,
                    run.missed_by_webhooks,
                    super::join_ids(&run.missed_ticket_ids),
                    run.api_calls,
                    run.error
                ],
            )
            .map(|_| ())
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
                    kind: row.get(2)?,
                    started_at: row.get(3)?,
                    finished_at: row.get(4)?,
                    outcome: row.get(5)?,
                    tickets_seen: row.get(6)?,
                    tickets_changed: row.get(7)?,
                    missed_by_webhooks: row.get(8)?,
                    missed_ticket_ids: super::split_ids(
                        row.get::<_, Option<String>>(9)?.as_deref(),
                    ),
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
