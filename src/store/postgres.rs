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

use super::pg_client::{self, Client, Transaction};
use super::schema::{self, Dialect};
use super::sql::{self, Param};
use super::{Backend, Outcome, Snapshot, SyncRun, SyncState, WebhookCounts, WriteItem, classify};
use crate::config::PostgresUrl;
use crate::error::StoreError;
use crate::psa::{Field, Kind, Provider, Value};
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
    upsert: Statement,
    journal: Statement,
    select: Statement,
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

/// See `store::check`.
pub fn check(url: &PostgresUrl) -> Result<String, StoreError> {
    let client = open_client(url)?;
    let has_meta: bool = client
        .query_one("SELECT to_regclass('codex_meta') IS NOT NULL", &[])
        .map_err(map_error)?
        .get(0);
    let version = if has_meta {
        client
            .query_opt(
                "SELECT value FROM codex_meta WHERE key = $1",
                &[&schema::VERSION_KEY],
            )
            .map_err(map_error)?
            .and_then(|row| row.get::<_, String>(0).parse::<i64>().ok())
    } else {
        None
    };
    super::sqlite::describe_version(url.masked(), version)
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
        migrate(&mut client)?;
        client.set_timeout(CALL_LIMIT);
        let upsert = client.prepare(&sql::postgres_upsert()).map_err(map_error)?;
        let journal = client
            .prepare(&format!(
                "INSERT INTO webhook_events ({}) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[])",
                sql::JOURNAL_COLUMNS
            ))
            .map_err(map_error)?;
        let select = client
            .prepare(&format!(
                "SELECT {} FROM ticket_details WHERE external_id = $1 AND external_source = $2",
                sql::snapshot_columns("")
            ))
            .map_err(map_error)?;
        Ok(PostgresBackend {
            client,
            upsert,
            journal,
            select,
        })
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
            let results = upsert_round(&mut tx, &self.upsert, items, round, &now)?;
            for (index, outcome) in round.iter().zip(results) {
                outcomes[*index] = Some(outcome);
            }
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Rejected))
            .collect();
        insert_journal(&mut tx, &self.journal, items, &outcomes)?;
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

/// Creates or upgrades the schema, one instance at a time.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(map_error)?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{}s'",
        MIGRATE_LIMIT.as_secs() - 5
    ))
    .map_err(map_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
        .map_err(map_error)?;
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('codex_meta') IS NOT NULL", &[])
        .map_err(map_error)?
        .get(0);
    if has_meta {
        let found = tx
            .query_opt(
                "SELECT value FROM codex_meta WHERE key = $1",
                &[&schema::VERSION_KEY],
            )
            .map_err(map_error)?
            .and_then(|row| row.get::<_, String>(0).parse::<i64>().ok());
        if let Some(found) = found.filter(|v| *v > schema::VERSION) {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: schema::VERSION,
            });
        }
    }
    let statements = schema::statements(Dialect::Postgres);
    let is_index = |s: &str| s.starts_with("CREATE INDEX") || s.starts_with("CREATE UNIQUE INDEX");
    for statement in statements.iter().filter(|s| !is_index(s)) {
        tx.batch_execute(statement).map_err(map_error)?;
    }
    for column in schema::columns(Dialect::Postgres) {
        tx.batch_execute(&format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
            column.table, column.name, column.definition
        ))
        .map_err(map_error)?;
    }
    for statement in statements.iter().filter(|s| is_index(s)) {
        tx.batch_execute(statement).map_err(map_error)?;
    }
    tx.execute(
        "INSERT INTO codex_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&schema::VERSION_KEY, &schema::VERSION.to_string()],
    )
    .map_err(map_error)?;
    tx.commit().map_err(map_error)
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

fn upsert_round(
    tx: &mut Transaction<'_>,
    statement: &Statement,
    items: &[WriteItem],
    round: &[usize],
    now: &str,
) -> Result<Vec<Outcome>, pg_client::Error> {
    let events: Vec<_> = round
        .iter()
        .filter_map(|&i| items[i].event.as_ref())
        .collect();
    let ids: Vec<String> = events.iter().map(|e| e.ticket_id.to_string()).collect();
    let rows: Vec<Vec<Param<'_>>> = events
        .iter()
        .zip(&ids)
        .map(|(event, id)| sql::row_params(event, id, now))
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
    let result = tx.query(statement, &params)?;
    let width = Field::COUNT + 2;
    events
        .iter()
        .zip(result)
        .map(|(event, row)| {
            let had_old: bool = row.try_get(0)?;
            let old = if had_old {
                Some(read_snapshot(&row, 1)?)
            } else {
                None
            };
            let has_new: bool = row.try_get(1 + width)?;
            let inserted: bool = row.try_get(2 + width)?;
            let new = if has_new {
                Some(read_snapshot(&row, 3 + width)?)
            } else {
                None
            };
            Ok(classify(event, old.as_ref(), new.as_ref(), inserted))
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
    let ticket: Vec<Option<&str>> = entries
        .iter()
        .map(|(e, _)| e.ticket_id.as_deref())
        .collect();
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
                "DELETE FROM webhook_events WHERE id IN \
                 (SELECT id FROM webhook_events WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
                &[&cutoff, &limit],
            )
        })?;
        Ok(deleted.unwrap_or(0))
    }

    fn ticket(
        &mut self,
        provider: Provider,
        ticket_id: i64,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = self
            .client
            .query_opt(&self.select, &[&ticket_id.to_string(), &provider.as_str()])
            .map_err(map_error)?;
        row.map(|row| read_snapshot(&row, 0))
            .transpose()
            .map_err(map_error)
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
                "SELECT external_id, status_id FROM ticket_details WHERE external_source = $1 \
                 AND (status IS NULL OR NOT (status = ANY($2))) \
                 ORDER BY length(external_id), external_id LIMIT $3",
                &[&provider.as_str(), &done_statuses, &limit],
            )
            .map_err(map_error)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let id: String = row.get(0);
                id.parse().ok().map(|id| (id, row.get::<_, Option<i64>>(1)))
            })
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
                &[&run.provider, &run.kind, &run.started_at, &run.outcome],
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
                    &run.outcome,
                    &run.tickets_seen,
                    &run.tickets_changed,
                    &run.missed_by_webhooks,
                    &super::join_ids(&run.missed_ticket_ids),
                    &run.api_calls,
                    &run.error,
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
        let rows = self
            .client
            .query(
                "SELECT id, provider, kind, started_at, finished_at, outcome, tickets_seen, tickets_changed, \
                 missed_by_webhooks, missed_ticket_ids, api_calls, error FROM sync_runs \
                 WHERE $1::text IS NULL OR provider = $1 ORDER BY id DESC LIMIT $2",
                &[&provider.map(Provider::as_str), &limit],
            )
            .map_err(map_error)?;
        Ok(rows
            .iter()
            .map(|row| SyncRun {
                id: row.get(0),
                provider: row.get(1),
                kind: row.get(2),
                started_at: row.get(3),
                finished_at: row.get(4),
                outcome: row.get(5),
                tickets_seen: row.get(6),
                tickets_changed: row.get(7),
                missed_by_webhooks: row.get(8),
                missed_ticket_ids: super::split_ids(row.get::<_, Option<&str>>(9)),
                api_calls: row.get(10),
                error: row.get(11),
            })
            .collect())
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
