//! The statements both backends run besides the upsert and the journal
//! insert, each written once in SQLite's spelling (`Dialect::render` makes
//! PostgreSQL's), and the `Backend` and `Reads` methods built on them: a
//! backend provides an `Engine` (its batch write, its liveness check, a
//! connection) and gets the rest of `Backend` from here; a read connection
//! provides a `ReadConnection` and gets `Reads`.

use super::activity::{self, Delivery, DeliveryCount};
use super::dialect::Dialect;
use super::ids;
use super::journal::{self, JournalEntryUpdate, JournalOutcome, JournalQuery, Journaled};
use super::records::{
    Outcome, Snapshot, SyncRun, SyncState, Tombstone, UnknownValue, WebhookCounts, WriteItem,
};
use super::sql::{self, Param};
use super::tickets::{self, TicketPage, TicketQuery, TicketRow};
use super::{Backend, Reads};
use crate::error::StoreError;
use crate::psa::{Field, Kind, Provider, Value};

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// One row of a result, read by position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cells(pub Vec<Cell>);

impl Cells {
    fn cell(&self, at: usize) -> Result<&Cell, StoreError> {
        self.0.get(at).ok_or_else(|| {
            StoreError::Statement(format!(
                "a result row has {} columns, not {}",
                self.0.len(),
                at + 1
            ))
        })
    }

    fn mismatch(&self, at: usize, wanted: &str) -> StoreError {
        StoreError::Statement(format!(
            "result column {at} holds {:?} where {wanted} was expected",
            self.0[at]
        ))
    }

    pub fn int(&self, at: usize) -> Result<Option<i64>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            _ => Err(self.mismatch(at, "an integer")),
        }
    }

    pub fn bytes(&self, at: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Bytes(bytes) => Ok(Some(bytes.clone())),
            Cell::Text(text) => Ok(Some(text.clone().into_bytes())),
            _ => Err(self.mismatch(at, "bytes")),
        }
    }

    pub fn text(&self, at: usize) -> Result<Option<String>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Text(text) => Ok(Some(text.clone())),
            _ => Err(self.mismatch(at, "text")),
        }
    }

    /// A number; an integer column reads as one too.
    pub fn float(&self, at: usize) -> Result<Option<f64>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Float(x) => Ok(Some(*x)),
            // Ticket hours fit an f64 exactly.
            #[allow(clippy::cast_precision_loss)]
            Cell::Int(n) => Ok(Some(*n as f64)),
            _ => Err(self.mismatch(at, "a number")),
        }
    }

    /// A boolean: SQLite stores it as an integer.
    pub fn bool(&self, at: usize) -> Result<Option<bool>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Bool(b) => Ok(Some(*b)),
            Cell::Int(n) => Ok(Some(*n != 0)),
            _ => Err(self.mismatch(at, "a boolean")),
        }
    }

    /// The `sql::snapshot_columns()` starting at column `at`.
    pub fn snapshot(&self, at: usize) -> Result<Snapshot, StoreError> {
        let mut values: [Option<Value>; Field::COUNT] = Default::default();
        for (i, field) in Field::ALL.iter().enumerate() {
            let column = at + 1 + i;
            values[i] = match field.kind() {
                Kind::Text => self.text(column)?.map(Value::Text),
                Kind::Int => self.int(column)?.map(Value::Int),
                Kind::Bool => self.bool(column)?.map(Value::Bool),
            };
        }
        Ok(Snapshot {
            revision: self.int(at)?.unwrap_or(0),
            values,
            last_updated_at: self.text(at + 1 + Field::COUNT)?,
        })
    }
}

/// A connection (or a transaction) that runs statements written in
/// SQLite's spelling, binding `Param`s to `?N`.
pub trait Connection {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;
    /// Runs one statement; returns its rows.
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Cells>, StoreError>;
}

/// What a backend provides; the rest of `Backend` follows (below).
pub trait Engine: Send {
    /// Applies `items` in one transaction (see `Backend::apply`).
    fn commit(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, StoreError>;

    /// Checks that the connection still works (see `Backend::ping`).
    fn check_alive(&mut self) -> Result<(), StoreError>;

    /// The connection the other statements run on.
    fn connection(&self) -> &dyn Connection;

    /// Runs `prune` unless another instance is pruning the same database:
    /// then nothing, and 0. By default no other instance can be.
    fn pruning(
        &mut self,
        prune: &mut dyn FnMut(&dyn Connection) -> Result<u64, StoreError>,
    ) -> Result<u64, StoreError> {
        prune(self.connection())
    }
}

/// What a read connection provides; `Reads` follows (below).
pub trait ReadConnection: Send {
    /// Fails when the connection no longer reads Codex's database (see
    /// `Reads::verify`).
    fn verify_source(&mut self) -> Result<(), StoreError>;

    /// The connection the reads run on.
    fn reads(&self) -> &dyn Connection;
}

/// A ticket's key in `ticket_details` and `ticket_tombstones`.
const TICKET_KEY: &str = "external_id = ?1 AND external_source = ?2";

/// The stored row of a ticket, as `sql::snapshot_columns()`.
pub fn ticket_select() -> String {
    format!(
        "SELECT {} FROM ticket_details WHERE {TICKET_KEY}",
        sql::snapshot_columns("")
    )
}

pub fn ticket_delete() -> String {
    format!("DELETE FROM ticket_details WHERE {TICKET_KEY}")
}

/// Tombstone statements (`ticket_tombstones`), parameters `?1` (ticket id)
/// and `?2` (provider) first.
pub fn tombstone_select() -> String {
    format!(
        "SELECT CAST(last_updated_at AS TEXT), CAST(status AS TEXT), CAST(status_id AS BIGINT), \
         CAST(closed_at AS TEXT) FROM ticket_tombstones WHERE {TICKET_KEY}"
    )
}

pub fn tombstone_delete() -> String {
    format!("DELETE FROM ticket_tombstones WHERE {TICKET_KEY}")
}

/// Records a delete, unless a newer one is recorded; `?3` … `?7`:
/// `last_updated_at, status, status_id, closed_at, recorded_at`.
pub const TOMBSTONE_UPSERT: &str = "INSERT INTO ticket_tombstones \
     (external_id, external_source, last_updated_at, status, status_id, closed_at, recorded_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (external_id, external_source) DO UPDATE SET \
     last_updated_at = excluded.last_updated_at, status = excluded.status, status_id = excluded.status_id, \
     closed_at = excluded.closed_at, recorded_at = excluded.recorded_at \
     WHERE excluded.last_updated_at IS NULL OR (ticket_tombstones.last_updated_at IS NOT NULL \
     AND excluded.last_updated_at >= ticket_tombstones.last_updated_at)";

pub const PRUNE_TOMBSTONES: &str = "DELETE FROM ticket_tombstones WHERE recorded_at < ?1";

pub const PRUNE_JOURNAL: &str = "DELETE FROM webhook_events WHERE id IN \
     (SELECT id FROM webhook_events WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)";

/// Tickets of `?1` whose status is not in the JSON array `?2`, with an id
/// above `?4`, by id, at most `?3`.
pub fn active_tickets(dialect: Dialect) -> String {
    format!(
        "SELECT CAST(external_id AS BIGINT), CAST(status_id AS BIGINT) FROM ticket_details \
         WHERE external_source = ?1 AND (status IS NULL OR status NOT IN ({})) \
         AND external_id > ?4 ORDER BY external_id LIMIT ?3",
        dialect.json_texts("CAST(?2 AS TEXT)")
    )
}

/// `WebhookCounts` of provider `?1` since `?2`.
pub fn webhook_counts() -> String {
    let applied = JournalOutcome::sql_list(&JournalOutcome::APPLIED);
    let refused = JournalOutcome::sql_list(&JournalOutcome::REFUSED);
    format!(
        "SELECT count(*), count(*) FILTER (WHERE outcome IN ({applied})), \
         count(*) FILTER (WHERE outcome IN ({refused})), \
         max(received_at) FILTER (WHERE outcome NOT IN ({refused})), max(received_at), \
         max(received_at) FILTER (WHERE event = 'ticket.deleted' AND outcome NOT IN ({refused})) \
         FROM webhook_events WHERE provider = ?1 AND received_at >= ?2"
    )
}

pub const SYNC_STATE_GET: &str =
    "SELECT cursor, last_reconcile_at FROM sync_state WHERE provider = ?1";

pub const SYNC_STATE_SET: &str = "INSERT INTO sync_state (provider, cursor, last_reconcile_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (provider) DO UPDATE SET cursor = excluded.cursor, \
     last_reconcile_at = excluded.last_reconcile_at";

pub const RUN_START: &str = "INSERT INTO sync_runs (provider, kind, started_at, outcome) \
     VALUES (?1, ?2, ?3, ?4) RETURNING id";

pub const RUN_FINISH: &str = "UPDATE sync_runs SET finished_at = ?2, outcome = ?3, \
     tickets_seen = ?4, tickets_changed = ?5, missed_by_webhooks = ?6, missed_ticket_ids = ?7, \
     api_calls = ?8, error = ?9 WHERE id = ?1";

/// The newest runs, of provider `?1` (or all when NULL), at most `?2`; the
/// columns `sync_run` reads.
pub const RUNS_RECENT: &str = "SELECT id, provider, kind, started_at, finished_at, outcome, \
     tickets_seen, tickets_changed, missed_by_webhooks, missed_ticket_ids, api_calls, error \
     FROM sync_runs WHERE CAST(?1 AS TEXT) IS NULL OR provider = ?1 ORDER BY id DESC LIMIT ?2";

pub const MISSED_SINCE: &str = "SELECT CAST(coalesce(sum(missed_by_webhooks), 0) AS BIGINT) \
     FROM sync_runs WHERE provider = ?1 AND started_at >= ?2 AND outcome = 'ok'";

pub const JOURNAL_ROWS: &str = "SELECT CAST(count(*) AS BIGINT) FROM webhook_events";

pub const META_GET: &str = "SELECT value FROM codex_meta WHERE key = ?1";

pub const META_SET: &str = "INSERT INTO codex_meta (key, value) VALUES (?1, ?2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Every statement above, for a migration to prepare before it commits.
pub fn all(dialect: Dialect) -> Vec<String> {
    let mut all = vec![
        ticket_select(),
        ticket_delete(),
        tombstone_select(),
        tombstone_delete(),
        active_tickets(dialect),
        webhook_counts(),
        journal::select(dialect),
        journal::mark_replayed(),
    ];
    all.extend(
        [
            TOMBSTONE_UPSERT,
            PRUNE_TOMBSTONES,
            PRUNE_JOURNAL,
            SYNC_STATE_GET,
            SYNC_STATE_SET,
            RUN_START,
            RUN_FINISH,
            RUNS_RECENT,
            MISSED_SINCE,
            JOURNAL_ROWS,
            META_GET,
            META_SET,
        ]
        .map(str::to_string),
    );
    all.extend(activity::STATEMENTS.map(str::to_string));
    all
}

/// A `sync_runs` row as `RUNS_RECENT` reads it.
pub fn sync_run(row: &Cells) -> Result<SyncRun, StoreError> {
    let parsed = |at: usize| row.text(at).map(Option::unwrap_or_default);
    let unknown = |error: UnknownValue| StoreError::Statement(error.to_string());
    Ok(SyncRun {
        id: row.int(0)?.unwrap_or_default(),
        provider: row.text(1)?.unwrap_or_default(),
        kind: parsed(2)?.parse().map_err(unknown)?,
        started_at: row.text(3)?.unwrap_or_default(),
        finished_at: row.text(4)?,
        outcome: parsed(5)?.parse().map_err(unknown)?,
        tickets_seen: row.int(6)?.unwrap_or_default(),
        tickets_changed: row.int(7)?.unwrap_or_default(),
        missed_by_webhooks: row.int(8)?.unwrap_or_default(),
        missed_ticket_ids: ids::split_ids(row.text(9)?.as_deref()),
        api_calls: row.int(10)?.unwrap_or_default(),
        error: row.text(11)?,
    })
}

/// A tombstone as `tombstone_select` reads it.
pub fn tombstone(row: &Cells) -> Result<Tombstone, StoreError> {
    Ok(Tombstone {
        last_updated_at: row.text(0)?,
        status: row.text(1)?,
        status_id: row.int(2)?,
        closed_at: row.text(3)?,
    })
}

/// The first row of a statement that returns one.
fn one(rows: Vec<Cells>) -> Result<Cells, StoreError> {
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::Statement("a statement that returns a row returned none".into()))
}

fn text(value: &str) -> Param<'_> {
    Param::Text(Some(value))
}

impl<E: Engine> Backend for E {
    fn apply(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, StoreError> {
        self.commit(items)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.check_alive()
    }

    fn prune_journal(&mut self, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
        self.pruning(&mut |conn| {
            conn.execute(PRUNE_TOMBSTONES, &[text(cutoff)])?;
            conn.execute(PRUNE_JOURNAL, &[text(cutoff), Param::Int(Some(limit))])
        })
    }

    fn save_sync_state(&mut self, provider: Provider, state: &SyncState) -> Result<(), StoreError> {
        let params = [
            text(provider.as_str()),
            Param::Text(state.cursor.as_deref()),
            Param::Text(state.last_reconcile_at.as_deref()),
        ];
        self.connection().execute(SYNC_STATE_SET, &params).map(drop)
    }

    fn mark_replayed(&mut self, update: &JournalEntryUpdate) -> Result<bool, StoreError> {
        let params = [
            Param::Int(Some(update.id)),
            Param::Text(update.event.as_deref()),
            Param::Int(update.ticket_id),
            text(update.outcome.as_str()),
            Param::Text(update.error.as_deref()),
        ];
        Ok(self
            .connection()
            .execute(&journal::mark_replayed(), &params)?
            > 0)
    }

    fn start_run(&mut self, run: &SyncRun) -> Result<i64, StoreError> {
        let params = [
            text(&run.provider),
            text(run.kind.as_str()),
            text(&run.started_at),
            text(run.outcome.as_str()),
        ];
        Ok(one(self.connection().query(RUN_START, &params)?)?
            .int(0)?
            .unwrap_or_default())
    }

    fn finish_run(&mut self, run: &SyncRun) -> Result<(), StoreError> {
        let missed = ids::join_ids(&run.missed_ticket_ids);
        let params = [
            Param::Int(Some(run.id)),
            Param::Text(run.finished_at.as_deref()),
            text(run.outcome.as_str()),
            Param::Int(Some(run.tickets_seen)),
            Param::Int(Some(run.tickets_changed)),
            Param::Int(Some(run.missed_by_webhooks)),
            Param::Text(missed.as_deref()),
            Param::Int(Some(run.api_calls)),
            Param::Text(run.error.as_deref()),
        ];
        self.connection().execute(RUN_FINISH, &params).map(drop)
    }
}

impl<R: ReadConnection> Reads for R {
    fn verify(&mut self) -> Result<(), StoreError> {
        self.verify_source()
    }

    fn recent_deliveries(&mut self, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        activity::recent(self.reads(), limit)
    }

    fn delivery_counts(&mut self, since: &str) -> Result<Vec<DeliveryCount>, StoreError> {
        activity::counts(self.reads(), since)
    }

    fn journaled(&mut self, query: &JournalQuery) -> Result<Vec<Journaled>, StoreError> {
        journal::read(self.reads(), query)
    }

    fn schema_version(&mut self) -> Result<Option<String>, StoreError> {
        let rows = self
            .reads()
            .query(META_GET, &[text(super::schema::VERSION_KEY)])?;
        rows.first().map_or(Ok(None), |row| row.text(0))
    }

    fn journal_rows(&mut self) -> Result<i64, StoreError> {
        Ok(one(self.reads().query(JOURNAL_ROWS, &[])?)?
            .int(0)?
            .unwrap_or_default())
    }

    fn tickets(&mut self, query: &TicketQuery) -> Result<TicketPage, StoreError> {
        tickets::page(self.reads(), query)
    }

    fn ticket(
        &mut self,
        external_id: i64,
        source: Option<&str>,
    ) -> Result<Option<TicketRow>, StoreError> {
        tickets::by_external_id(self.reads(), external_id, source)
    }

    fn company_tickets(
        &mut self,
        account_number: &str,
        year: Option<&str>,
    ) -> Result<Option<Vec<TicketRow>>, StoreError> {
        tickets::of_company(self.reads(), account_number, year)
    }

    fn active_tickets(
        &mut self,
        provider: Provider,
        excluded: &[String],
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
        let done = serde_json::to_string(excluded).unwrap_or_else(|_| "[]".to_string());
        let connection = self.reads();
        let params = [
            text(provider.as_str()),
            text(&done),
            Param::Int(Some(limit)),
            Param::Int(Some(after)),
        ];
        connection
            .query(&active_tickets(connection.dialect()), &params)?
            .iter()
            .map(|row| Ok((row.int(0)?.unwrap_or_default(), row.int(1)?)))
            .collect()
    }

    fn webhook_counts(
        &mut self,
        provider: Provider,
        since: &str,
    ) -> Result<WebhookCounts, StoreError> {
        let params = [text(provider.as_str()), text(since)];
        let row = one(self.reads().query(&webhook_counts(), &params)?)?;
        Ok(WebhookCounts {
            received: row.int(0)?.unwrap_or_default(),
            applied: row.int(1)?.unwrap_or_default(),
            rejected: row.int(2)?.unwrap_or_default(),
            last_processed_at: row.text(3)?,
            last_received_at: row.text(4)?,
            last_deletion_at: row.text(5)?,
        })
    }

    fn sync_state(&mut self, provider: Provider) -> Result<SyncState, StoreError> {
        let rows = self
            .reads()
            .query(SYNC_STATE_GET, &[text(provider.as_str())])?;
        match rows.first() {
            Some(row) => Ok(SyncState {
                cursor: row.text(0)?,
                last_reconcile_at: row.text(1)?,
            }),
            None => Ok(SyncState::default()),
        }
    }

    fn recent_runs(
        &mut self,
        provider: Option<Provider>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let params = [
            Param::Text(provider.map(Provider::as_str)),
            Param::Int(Some(limit)),
        ];
        self.reads()
            .query(RUNS_RECENT, &params)?
            .iter()
            .map(sync_run)
            .collect()
    }

    fn missed_since(&mut self, provider: Provider, since: &str) -> Result<i64, StoreError> {
        let params = [text(provider.as_str()), text(since)];
        Ok(one(self.reads().query(MISSED_SINCE, &params)?)?
            .int(0)?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_written_once_in_sqlite_spelling() {
        for statement in all(Dialect::Postgres) {
            assert!(!statement.contains('$'), "{statement}");
            let rendered = Dialect::Postgres.render(&statement);
            assert!(!rendered.contains("?1"), "{rendered}");
        }
        assert_eq!(
            Dialect::Postgres.render(SYNC_STATE_GET),
            "SELECT cursor, last_reconcile_at FROM sync_state WHERE provider = $1"
        );
    }

    #[test]
    fn webhook_counts_name_the_journal_outcomes() {
        let sql = webhook_counts();
        assert!(
            sql.contains("outcome IN ('created', 'updated', 'deleted', 'ignored')"),
            "{sql}"
        );
        assert!(
            sql.contains("outcome NOT IN ('rejected', 'failed')"),
            "{sql}"
        );
    }

    #[test]
    fn cells_read_what_each_database_returns() {
        let row = Cells(vec![
            Cell::Int(3),
            Cell::Null,
            Cell::Text("x".into()),
            Cell::Int(1),
        ]);
        assert_eq!(row.int(0).unwrap(), Some(3));
        assert_eq!(row.text(1).unwrap(), None);
        assert_eq!(row.text(2).unwrap().as_deref(), Some("x"));
        assert_eq!(row.bool(3).unwrap(), Some(true));
        assert!(row.int(2).is_err());
        assert!(row.text(4).is_err());
    }
}
