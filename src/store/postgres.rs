//! PostgreSQL, for shared deployments and several Codex instances on one
//! database. A batch is one transaction of few round trips: one upsert
//! statement per round (the distinct tickets of the batch), one journal
//! insert, COMMIT.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::diff::classify;
use super::ids;
use super::migrate::{self, Existing, Family};
use super::pg_client::{self, Client, Transaction};
use super::records::{
    Outcome, Snapshot, SyncRun, SyncState, Tombstone, UnknownValue, WebhookCounts, WriteItem,
};
use super::schema::{ColumnDef, Dialect};
use super::sql::{self, Param};
use super::{Backend, Reads};
use crate::config::PostgresUrl;
use crate::error::StoreError;
use crate::psa::{EventKind, Field, Kind, Provider, TicketEvent, Value};
use crate::timestamp;

/// Advisory lock keys ("codex" in ASCII, then a purpose number).
pub const LOCK_MIGRATE: i64 = 0x636f_6465_7801;
pub const LOCK_PRUNE: i64 = 0x636f_6465_7802;
/// The poller's lock for `provider`: one instance polls each PSA.
pub fn poller_lock(provider: Provider) -> i64 {
    0x636f_6465_7810 + provider as i64
}

/// Attempts for a batch that hits a deadlock or serialization failure
/// (two instances locking the same tickets): PostgreSQL aborts one
/// transaction, which is simply run again.
const CONFLICT_ATTEMPTS: usize = 5;

/// Deadlines on the client side, which hold when the server cannot
/// enforce its own (frozen, or unreachable behind a path that still ACKs):
/// connecting, one statement or round trip, a liveness check, and a
/// migration step (an index build on a large table takes a while).
const CONNECT_LIMIT: Duration = Duration::from_secs(3);
const CALL_LIMIT: Duration = Duration::from_secs(6);
const PING_LIMIT: Duration = Duration::from_secs(2);
const MIGRATE_LIMIT: Duration = Duration::from_secs(60);

pub struct PostgresBackend {
    client: Client,
    statements: Statements,
}

/// The statements a backend runs, prepared inside the migration's
/// transaction so that a schema `serve` cannot use is never committed.
struct Statements {
    upsert: Statement,
    journal: Statement,
    tombstone_select: Statement,
    tombstone_upsert: Statement,
    tombstone_delete: Statement,
    ticket_delete: Statement,
    /// Length limits the upsert's text values must fit (see `sql::fit`).
    limits: Vec<(usize, usize)>,
}

/// Opens a connection with timeouts that keep a dead server from hanging
/// the writer.
pub fn open_client(url: &PostgresUrl) -> Result<Client, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url.expose())
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", url.masked())))?;
    let connect_limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_LIMIT);
    config.connect_timeout(connect_limit);
    // A dropped path (no ACKs) is noticed by the kernel within seconds.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(5));
    config.keepalives_interval(Duration::from_secs(1));
    config.keepalives_retries(3);
    config.tcp_user_timeout(Duration::from_secs(5));
    if config.get_application_name().is_none() {
        config.application_name("codex");
    }
    let client = Client::connect(&config, connect_limit, CALL_LIMIT).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to {}: {}",
            url.masked(),
            describe(&e)
        ))
    })?;
    // The server gives up a little before the client does, so a slow
    // statement normally ends with the server's own error.
    client
        .batch_execute("SET statement_timeout = '5s'; SET lock_timeout = '4s'")
        .map_err(map_error)?;
    Ok(client)
}

/// See `store::check`: the migration `serve` would run, rolled back.
pub fn check(url: &PostgresUrl) -> Result<String, StoreError> {
    let mut client = open_client(url)?;
    client.set_timeout(MIGRATE_LIMIT);
    let (_, changes) = migrate(&mut client, false)?;
    Ok(super::describe_check(url.masked(), &changes))
}

/// The server's message for a database error, else the driver's.
fn describe(error: &pg_client::Error) -> String {
    let Some(error) = error.as_db() else {
        return error.to_string();
    };
    match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
    }
}

/// Lost connections and server-side shutdowns make the database
/// unavailable; anything else is the statement's own problem.
fn map_error(error: pg_client::Error) -> StoreError {
    let Some(db) = error.as_db() else {
        return StoreError::Unavailable(describe(&error));
    };
    let unavailable = match db.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "58030"
        }
    };
    if unavailable || db.is_closed() {
        StoreError::Unavailable(describe(&error))
    } else {
        StoreError::Statement(describe(&error))
    }
}

fn is_conflict(error: &pg_client::Error) -> bool {
    matches!(
        error.as_db().and_then(tokio_postgres::Error::code),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

impl PostgresBackend {
    pub fn connect(url: &PostgresUrl) -> Result<PostgresBackend, StoreError> {
        let mut client = open_client(url)?;
        client.set_timeout(MIGRATE_LIMIT);
        let (statements, changes) = migrate(&mut client, true)?;
        client.set_timeout(CALL_LIMIT);
        for change in &changes {
            log::info!("schema: {change}");
        }
        Ok(PostgresBackend { client, statements })
    }

    fn apply_once(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, pg_client::Error> {
        let now = timestamp::now();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; items.len()];
        // Round r holds the r-th event of each ticket, so no statement
        // touches a row twice and events of one ticket apply in order.
        let mut seen: HashMap<(Provider, i64), usize> = HashMap::new();
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match &item.event {
                Some(event) => {
                    let round = seen.entry((event.provider, event.ticket_id)).or_insert(0);
                    if rounds.len() <= *round {
                        rounds.push(Vec::new());
                    }
                    rounds[*round].push(index);
                    *round += 1;
                }
                None => outcomes[index] = Some(Outcome::Rejected),
            }
        }
        let mut tx = self.client.transaction()?;
        for round in &rounds {
            let events: Vec<&TicketEvent> = round
                .iter()
                .filter_map(|&i| items[i].event.as_ref())
                .collect();
            let results = apply_round(&mut tx, &self.statements, &events, &now)?;
            for (index, outcome) in round.iter().zip(results) {
                outcomes[*index] = Some(outcome);
            }
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Rejected))
            .collect();
        insert_journal(&mut tx, &self.statements.journal, items, &outcomes)?;
        tx.commit()?;
        Ok(outcomes)
    }

    /// Runs `f` in a transaction holding the advisory lock `key`, if no one
    /// else holds it; `None` when someone does.
    fn with_xact_lock<T>(
        &mut self,
        key: i64,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, pg_client::Error>,
    ) -> Result<Option<T>, StoreError> {
        let mut tx = self.client.transaction().map_err(map_error)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])
            .map_err(map_error)?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let value = f(&mut tx).map_err(map_error)?;
        tx.commit().map_err(map_error)?;
        Ok(Some(value))
    }
}

/// Creates or upgrades the schema, one instance at a time, and prepares
/// every statement the backend runs before committing; with `commit`
/// false (`check-config`) everything is rolled back.
fn migrate(client: &mut Client, commit: bool) -> Result<(Statements, Vec<String>), StoreError> {
    let mut tx = client.transaction().map_err(map_error)?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{}s'",
        MIGRATE_LIMIT.as_secs() - 5
    ))
    .map_err(map_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
        .map_err(map_error)?;
    // "already exists, skipping" notices would only clutter the log.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .map_err(map_error)?;
    let mut catalog = Catalog { tx: &mut tx };
    let changes = migrate::run(&mut catalog)?;
    let companies = migrate::companies_usable(&mut catalog)?;
    let statements = prepare(&mut tx, companies).map_err(|e| match map_error(e) {
        StoreError::Statement(message) => StoreError::Migration(format!(
            "a statement Codex runs does not prepare: {message}"
        )),
        other => other,
    })?;
    if commit {
        tx.commit().map_err(map_error)?;
    }
    Ok((statements, changes))
}

fn prepare(tx: &mut Transaction<'_>, companies: bool) -> Result<Statements, pg_client::Error> {
    let key = "WHERE external_id = $1 AND external_source = $2";
    let columns = sql::insert_columns();
    let limits = tx
        .query(
            "SELECT column_name::text, character_maximum_length::int8 FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'ticket_details' \
             AND character_maximum_length IS NOT NULL",
            &[],
        )?
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            let limit: i64 = row.get(1);
            let at = columns.iter().position(|c| *c == name)?;
            Some((at, usize::try_from(limit).ok()?))
        })
        .collect();
    Ok(Statements {
        limits,
        upsert: tx.prepare(&sql::postgres_upsert(companies))?,
        journal: tx.prepare(&format!(
            "INSERT INTO webhook_events ({}) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
             $4::text[], $5::int8[], $6::text[], $7::text[], $8::bytea[])",
            sql::JOURNAL_COLUMNS
        ))?,
        tombstone_select: tx.prepare(&format!(
            "SELECT last_updated_at::text, status::text, status_id::int8, closed_at::text FROM ticket_tombstones {key}"
        ))?,
        tombstone_upsert: tx.prepare(
            "INSERT INTO ticket_tombstones \
             (external_id, external_source, last_updated_at, status, status_id, closed_at, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (external_id, external_source) DO UPDATE SET \
             last_updated_at = excluded.last_updated_at, status = excluded.status, status_id = excluded.status_id, \
             closed_at = excluded.closed_at, recorded_at = excluded.recorded_at \
             WHERE excluded.last_updated_at IS NULL OR (ticket_tombstones.last_updated_at IS NOT NULL \
             AND excluded.last_updated_at >= ticket_tombstones.last_updated_at)",
        )?,
        tombstone_delete: tx.prepare(&format!("DELETE FROM ticket_tombstones {key}"))?,
        ticket_delete: tx.prepare(&format!("DELETE FROM ticket_details {key}"))?,
    })
}

/// The migration's view of a PostgreSQL database (its current schema).
struct Catalog<'a, 'b> {
    tx: &'a mut Transaction<'b>,
}

impl migrate::Catalog for Catalog<'_, '_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.batch_execute(sql).map_err(map_error)
    }

    fn update(&mut self, sql: &str) -> Result<u64, StoreError> {
        self.tx.execute(sql, &[]).map_err(map_error)
    }

    fn text(&mut self, sql: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .query_opt(sql, &[])
            .map_err(map_error)?
            .and_then(|row| row.get::<_, Option<String>>(0)))
    }

    fn table_exists(&mut self, table: &str) -> Result<bool, StoreError> {
        self.tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1)",
                &[&table],
            )
            .map(|row| row.get(0))
            .map_err(map_error)
    }

    fn columns(&mut self, table: &str) -> Result<Vec<Existing>, StoreError> {
        let rows = self
            .tx
            .query(
                "SELECT column_name::text, data_type::text, character_maximum_length::int8 \
                 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
                &[&table],
            )
            .map_err(map_error)?;
        Ok(rows
            .iter()
            .map(|row| {
                let data_type: String = row.get(1);
                let max_length: Option<i64> = row.get(2);
                Existing {
                    name: row.get(0),
                    family: Family::of_postgres_type(&data_type),
                    declared: match max_length {
                        Some(n) => format!("{data_type}({n})"),
                        None => data_type,
                    },
                    max_length,
                }
            })
            .collect())
    }

    fn has_unique_index(&mut self, table: &str, columns: &[&str]) -> Result<bool, StoreError> {
        let mut wanted: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        wanted.sort_unstable();
        self.tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index x \
                 WHERE x.indrelid = to_regclass($1::text) AND x.indisunique AND x.indpred IS NULL \
                 AND x.indexprs IS NULL \
                 AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a \
                      WHERE a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey::int2[])) = $2::text[] \
                 AND cardinality(x.indkey::int2[]) = cardinality($2::text[]))",
                &[&table, &wanted],
            )
            .map(|row| row.get(0))
            .map_err(map_error)
    }

    /// One ALTER TABLE for all of a table's columns (one rewrite at most):
    /// text holding integers to the integer type.
    fn convert(
        &mut self,
        table: &str,
        columns: &[&ColumnDef],
        _existing: &[Existing],
    ) -> Result<(), StoreError> {
        let clauses: Vec<String> = columns
            .iter()
            .map(|c| {
                let ty = c.definition.split_whitespace().next().unwrap_or("BIGINT");
                format!(
                    "ALTER COLUMN {0} TYPE {ty} USING trim({0}::text)::{ty}",
                    c.name
                )
            })
            .collect();
        self.execute(&format!("ALTER TABLE {table} {}", clauses.join(", ")))
            .map_err(|error| match error {
                // A view over the table blocks a type change.
                StoreError::Statement(message) => StoreError::Migration(format!(
                    "cannot change column types of {table} ({message}); drop what depends on them \
                     (for example a view), run codex migrate, then create it again"
                )),
                other => other,
            })
    }

    /// `VARCHAR(n)` to TEXT changes no stored value, so takes no rewrite.
    /// A column a view uses cannot change type; each is tried in a
    /// savepoint of its own, so such a column keeps its limit and the rest
    /// of the migration goes on.
    fn widen(
        &mut self,
        table: &str,
        columns: &[&ColumnDef],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut kept = Vec::new();
        for column in columns {
            self.tx
                .batch_execute("SAVEPOINT codex_widen")
                .map_err(map_error)?;
            let altered = self.tx.batch_execute(&format!(
                "ALTER TABLE {table} ALTER COLUMN {} TYPE TEXT",
                column.name
            ));
            match altered {
                Ok(()) => self
                    .tx
                    .batch_execute("RELEASE SAVEPOINT codex_widen")
                    .map_err(map_error)?,
                Err(error)
                    if error.as_db().and_then(tokio_postgres::Error::code)
                        == Some(&SqlState::FEATURE_NOT_SUPPORTED) =>
                {
                    self.tx
                        .batch_execute("ROLLBACK TO SAVEPOINT codex_widen")
                        .map_err(map_error)?;
                    kept.push((column.name.clone(), describe(&error)));
                }
                Err(error) => return Err(map_error(error)),
            }
        }
        Ok(kept)
    }
}

/// One column of a round, as a typed array parameter.
enum Column<'a> {
    Text(Vec<Option<&'a str>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
}

impl Column<'_> {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Text(values) => values,
            Column::Int(values) => values,
            Column::Bool(values) => values,
        }
    }
}

/// What the upsert returned for one event.
struct Upserted {
    old: Option<Snapshot>,
    new: Option<Snapshot>,
    inserted: bool,
    /// A tombstone of the ticket exists (a delete that came first).
    tombstoned: bool,
}

/// Applies one round (distinct tickets) and settles tombstones: a delete
/// that created a row takes it out again and leaves a tombstone; an event
/// that created a row a tombstone stands for gets the delete merged in.
/// Both are rare, so they cost statements of their own only when they happen.
fn apply_round(
    tx: &mut Transaction<'_>,
    statements: &Statements,
    events: &[&TicketEvent],
    now: &str,
) -> Result<Vec<Outcome>, pg_client::Error> {
    let results = upsert_round(tx, statements, events, now)?;
    let mut outcomes = Vec::with_capacity(events.len());
    let mut merges = Vec::new();
    for (i, (event, result)) in events.iter().zip(&results).enumerate() {
        let provider = event.provider.as_str();
        if result.inserted && event.kind == EventKind::Deleted {
            tx.execute(&statements.ticket_delete, &[&event.ticket_id, &provider])?;
            let tombstone = Tombstone::of(event);
            tx.execute(
                &statements.tombstone_upsert,
                &[
                    &event.ticket_id,
                    &provider,
                    &tombstone.last_updated_at,
                    &tombstone.status,
                    &tombstone.status_id.map(|id| id as i32),
                    &tombstone.closed_at,
                    &now,
                ],
            )?;
            outcomes.push(Outcome::Ignored {
                reason: "ticket not found".to_string(),
            });
            continue;
        }
        if result.inserted && result.tombstoned {
            if let Some(row) =
                tx.query_opt(&statements.tombstone_select, &[&event.ticket_id, &provider])?
            {
                let tombstone = Tombstone {
                    last_updated_at: row.try_get(0)?,
                    status: row.try_get(1)?,
                    status_id: row.try_get(2)?,
                    closed_at: row.try_get(3)?,
                };
                tx.execute(&statements.tombstone_delete, &[&event.ticket_id, &provider])?;
                merges.push((i, tombstone.event(event), tombstone));
            }
        }
        outcomes.push(classify(
            event,
            result.old.as_ref(),
            result.new.as_ref(),
            result.inserted,
        ));
    }
    if !merges.is_empty() {
        let deletes: Vec<&TicketEvent> = merges.iter().map(|(_, event, _)| event).collect();
        let merged = upsert_round(tx, statements, &deletes, now)?;
        for ((i, _, tombstone), result) in merges.iter().zip(merged) {
            outcomes[*i] = classify(
                events[*i],
                Some(&tombstone.snapshot()),
                result.new.as_ref().or(results[*i].new.as_ref()),
                false,
            );
        }
    }
    Ok(outcomes)
}

fn upsert_round(
    tx: &mut Transaction<'_>,
    statements: &Statements,
    events: &[&TicketEvent],
    now: &str,
) -> Result<Vec<Upserted>, pg_client::Error> {
    let rows: Vec<Vec<Param<'_>>> = events
        .iter()
        .map(|event| {
            let mut row = sql::row_params(event, now);
            sql::fit(&mut row, &statements.limits, event.ticket_id);
            row
        })
        .collect();
    let mut columns: Vec<Column<'_>> = rows[0]
        .iter()
        .map(|param| match param {
            Param::Text(_) => Column::Text(Vec::with_capacity(rows.len())),
            Param::Int(_) => Column::Int(Vec::with_capacity(rows.len())),
            Param::Bool(_) => Column::Bool(Vec::with_capacity(rows.len())),
        })
        .collect();
    for row in &rows {
        for (column, param) in columns.iter_mut().zip(row) {
            match (column, *param) {
                (Column::Text(values), Param::Text(v)) => values.push(v),
                (Column::Int(values), Param::Int(v)) => values.push(v),
                (Column::Bool(values), Param::Bool(v)) => values.push(v),
                // row_params yields the same types in the same order for
                // every event, so the columns always line up.
                _ => unreachable!("row_params changed column types between rows"),
            }
        }
    }
    let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(Column::as_sql).collect();
    let result = tx.query(&statements.upsert, &params)?;
    let width = Field::COUNT + 2;
    result
        .iter()
        .map(|row| {
            let had_old: bool = row.try_get(0)?;
            let has_new: bool = row.try_get(1 + width)?;
            Ok(Upserted {
                old: had_old.then(|| read_snapshot(row, 1)).transpose()?,
                inserted: row.try_get(2 + width)?,
                new: has_new.then(|| read_snapshot(row, 3 + width)).transpose()?,
                tombstoned: row.try_get(3 + 2 * width)?,
            })
        })
        .collect()
}

/// Reads `snapshot_columns()` starting at column `at`.
fn read_snapshot(row: &Row, at: usize) -> Result<Snapshot, pg_client::Error> {
    let mut values: [Option<Value>; Field::COUNT] = Default::default();
    for (i, field) in Field::ALL.iter().enumerate() {
        let column = at + 1 + i;
        values[i] = match field.kind() {
            Kind::Text => row.try_get::<_, Option<String>>(column)?.map(Value::Text),
            Kind::Int => row.try_get::<_, Option<i64>>(column)?.map(Value::Int),
            Kind::Bool => row.try_get::<_, Option<bool>>(column)?.map(Value::Bool),
        };
    }
    Ok(Snapshot {
        revision: row.try_get::<_, Option<i64>>(at)?.unwrap_or(0),
        values,
        last_updated_at: row.try_get(at + 1 + Field::COUNT)?,
    })
}

fn insert_journal(
    tx: &mut Transaction<'_>,
    statement: &Statement,
    items: &[WriteItem],
    outcomes: &[Outcome],
) -> Result<(), pg_client::Error> {
    let entries: Vec<_> = items
        .iter()
        .zip(outcomes)
        .filter_map(|(item, outcome)| item.journal.as_ref().map(|entry| (entry, outcome)))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let provider: Vec<&str> = entries.iter().map(|(e, _)| e.provider.as_str()).collect();
    let received: Vec<&str> = entries
        .iter()
        .map(|(e, _)| e.received_at.as_str())
        .collect();
    let ip: Vec<&str> = entries.iter().map(|(e, _)| e.client_ip.as_str()).collect();
    let event: Vec<Option<&str>> = entries.iter().map(|(e, _)| e.event.as_deref()).collect();
    let ticket: Vec<Option<i64>> = entries.iter().map(|(e, _)| e.ticket_id).collect();
    let outcome: Vec<&str> = entries
        .iter()
        .map(|(e, o)| e.outcome.unwrap_or(o.as_str()))
        .collect();
    let error: Vec<Option<&str>> = entries.iter().map(|(e, _)| e.error.as_deref()).collect();
    let body: Vec<&[u8]> = entries.iter().map(|(e, _)| e.body.as_slice()).collect();
    tx.execute(
        statement,
        &[
            &provider, &received, &ip, &event, &ticket, &outcome, &error, &body,
        ],
    )?;
    Ok(())
}

impl Backend for PostgresBackend {
    fn apply(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, StoreError> {
        let mut attempt = 1;
        loop {
            match self.apply_once(items) {
                Ok(outcomes) => return Ok(outcomes),
                Err(error) if is_conflict(&error) && attempt < CONFLICT_ATTEMPTS => {
                    log::debug!(
                        "batch conflicted with another writer ({}); retrying",
                        describe(&error)
                    );
                    attempt += 1;
                }
                Err(error) => return Err(map_error(error)),
            }
        }
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.client.is_valid(PING_LIMIT).map_err(map_error)
    }

    fn prune_journal(&mut self, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
        let deleted = self.with_xact_lock(LOCK_PRUNE, |tx| {
            tx.execute(
                "DELETE FROM ticket_tombstones WHERE recorded_at < $1",
                &[&cutoff],
            )?;
            tx.execute(
                "DELETE FROM webhook_events WHERE id IN \
                 (SELECT id FROM webhook_events WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
                &[&cutoff, &limit],
            )
        })?;
        Ok(deleted.unwrap_or(0))
    }

    fn save_sync_state(&mut self, provider: Provider, state: &SyncState) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO sync_state (provider, cursor, last_reconcile_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (provider) DO UPDATE SET cursor = excluded.cursor, last_reconcile_at = excluded.last_reconcile_at",
                &[&provider.as_str(), &state.cursor, &state.last_reconcile_at],
            )
            .map(|_| ())
            .map_err(map_error)
    }

    fn start_run(&mut self, run: &SyncRun) -> Result<i64, StoreError> {
        self.client
            .query_one(
                "INSERT INTO sync_runs (provider, kind, started_at, outcome) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&run.provider, &run.kind.as_str(), &run.started_at, &run.outcome.as_str()],
            )
            .map(|row| row.get(0))
            .map_err(map_error)
    }

    fn finish_run(&mut self, run: &SyncRun) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE sync_runs SET finished_at = $2, outcome = $3, tickets_seen = $4, tickets_changed = $5, \
                 missed_by_webhooks = $6, missed_ticket_ids = $7, api_calls = $8, error = $9 WHERE id = $1",
                &[
                    &run.id,
                    &run.finished_at,
                    &run.outcome.as_str(),
                    &run.tickets_seen,
                    &run.tickets_changed,
                    &run.missed_by_webhooks,
                    &ids::join_ids(&run.missed_ticket_ids),
                    &run.api_calls,
                    &run.error,
                ],
            )
            .map(|_| ())
            .map_err(map_error)
    }
}

/// A second, small connection for reads that need no ordering with
/// writes (the poller's schedule, status), so they never wait in the
/// writer's queue. Each call has the client-side deadline of the writer's.
pub struct PostgresReader {
    client: Client,
}

impl PostgresReader {
    pub fn connect(url: &PostgresUrl) -> Result<PostgresReader, StoreError> {
        Ok(PostgresReader {
            client: open_client(url)?,
        })
    }
}

/// A column holding one of an enum's stored texts.
fn parsed<T: FromStr<Err = UnknownValue>>(row: &Row, at: usize) -> Result<T, StoreError> {
    row.get::<_, &str>(at)
        .parse()
        .map_err(|error: UnknownValue| StoreError::Statement(error.to_string()))
}

impl Reads for PostgresReader {
    fn verify(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn active_tickets(
        &mut self,
        provider: Provider,
        done_statuses: &[String],
        limit: i64,
    ) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT external_id::int8, status_id::int8 FROM ticket_details WHERE external_source = $1 \
                 AND (status IS NULL OR NOT (status = ANY($2))) \
                 ORDER BY external_id LIMIT $3",
                &[&provider.as_str(), &done_statuses, &limit],
            )
            .map_err(map_error)?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get::<_, Option<i64>>(1)))
            .collect())
    }

    fn webhook_counts(
        &mut self,
        provider: Provider,
        since: &str,
    ) -> Result<WebhookCounts, StoreError> {
        let row = self
            .client
            .query_one(
                "SELECT count(*), \
                        count(*) FILTER (WHERE outcome IN ('created', 'updated', 'deleted', 'ignored')), \
                        count(*) FILTER (WHERE outcome IN ('rejected', 'failed')), \
                        max(received_at) FILTER (WHERE outcome NOT IN ('rejected', 'failed')), \
                        max(received_at) \
                 FROM webhook_events WHERE provider = $1 AND received_at >= $2",
                &[&provider.as_str(), &since],
            )
            .map_err(map_error)?;
        Ok(WebhookCounts {
            received: row.get(0),
            applied: row.get(1),
            rejected: row.get(2),
            last_processed_at: row.get(3),
            last_received_at: row.get(4),
        })
    }

    fn sync_state(&mut self, provider: Provider) -> Result<SyncState, StoreError> {
        let row = self
            .client
            .query_opt(
                "SELECT cursor, last_reconcile_at FROM sync_state WHERE provider = $1",
                &[&provider.as_str()],
            )
            .map_err(map_error)?;
        Ok(row
            .map(|row| SyncState {
                cursor: row.get(0),
                last_reconcile_at: row.get(1),
            })
            .unwrap_or_default())
    }

    fn recent_runs(
        &mut self,
        provider: Option<Provider>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT id, provider, kind, started_at, finished_at, outcome, tickets_seen, tickets_changed, \
                 missed_by_webhooks, missed_ticket_ids, api_calls, error FROM sync_runs \
                 WHERE $1::text IS NULL OR provider = $1 ORDER BY id DESC LIMIT $2",
                &[&provider.map(Provider::as_str), &limit],
            )
            .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(SyncRun {
                    id: row.get(0),
                    provider: row.get(1),
                    kind: parsed(row, 2)?,
                    started_at: row.get(3),
                    finished_at: row.get(4),
                    outcome: parsed(row, 5)?,
                    tickets_seen: row.get(6),
                    tickets_changed: row.get(7),
                    missed_by_webhooks: row.get(8),
                    missed_ticket_ids: ids::split_ids(row.get::<_, Option<&str>>(9)),
                    api_calls: row.get(10),
                    error: row.get(11),
                })
            })
            .collect()
    }

    fn missed_since(&mut self, provider: Provider, since: &str) -> Result<i64, StoreError> {
        self.client
            .query_one(
                "SELECT coalesce(sum(missed_by_webhooks), 0)::bigint FROM sync_runs \
                 WHERE provider = $1 AND started_at >= $2 AND outcome = 'ok'",
                &[&provider.as_str(), &since],
            )
            .map(|row| row.get(0))
            .map_err(map_error)
    }
}
