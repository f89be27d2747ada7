//! PostgreSQL, for shared deployments and several Codex instances on one
//! database. A batch is one transaction of few round trips: one upsert
//! statement per round (the distinct tickets of the batch), one journal
//! insert, COMMIT.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Statement;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

mod catalog;
mod client;
mod connection;

use super::connection::Param;
use super::journal::JournalOutcome;
use super::records::{Outcome, Snapshot, Tombstone, WriteItem, classify};
use super::statements;
use super::{Backend, Leadership, Reads};
use crate::config::PostgresUrl;
use crate::error::StoreError;
use crate::psa::{EventKind, Field, Provider, TicketEvent};
use crate::timestamp;
use client::{Client, Session, Transaction};
use connection::{cells, decoded, describe, map_error, open_client};

/// Advisory lock keys ("codex" in ASCII, then a purpose number).
const LOCK_MIGRATE: i64 = 0x636f_6465_7801;
const LOCK_PRUNE: i64 = 0x636f_6465_7802;
/// The poller's lock for `provider`: one instance polls each PSA.
fn poller_lock(provider: Provider) -> i64 {
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
    /// Length limits the upsert's text values must fit (see `statements::fit`).
    limits: Vec<(usize, usize)>,
}

/// See `store::check`: the migration `serve` would run, rolled back.
pub fn check(url: &PostgresUrl) -> Result<String, StoreError> {
    let mut client = open_client(url)?;
    client.set_timeout(MIGRATE_LIMIT);
    let (_, changes) = catalog::migrate(&mut client, false)?;
    Ok(super::describe_check(url.masked(), &changes))
}

fn is_conflict(error: &client::Error) -> bool {
    matches!(
        error.as_db().and_then(tokio_postgres::Error::code),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

impl PostgresBackend {
    pub fn connect(url: &PostgresUrl) -> Result<PostgresBackend, StoreError> {
        let mut client = open_client(url)?;
        client.set_timeout(MIGRATE_LIMIT);
        let (statements, changes) = catalog::migrate(&mut client, true)?;
        client.set_timeout(CALL_LIMIT);
        for change in &changes {
            log::info!("schema: {change}");
        }
        Ok(PostgresBackend { client, statements })
    }

    fn apply_once(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, client::Error> {
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
}

/// One column of a round, as a typed array parameter.
enum Array<'a> {
    Text(Vec<Option<&'a str>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
}

impl Array<'_> {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Array::Text(values) => values,
            Array::Int(values) => values,
            Array::Bool(values) => values,
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
) -> Result<Vec<Outcome>, client::Error> {
    let results = statements.upsert_round(tx, events, now)?;
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
            let rows =
                tx.query_prepared(&statements.tombstone_select, &[&event.ticket_id, &provider])?;
            if let Some(row) = rows.first() {
                let tombstone = decoded(statements::tombstone(&cells(row)?))?;
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
        let merged = statements.upsert_round(tx, &deletes, now)?;
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

impl Statements {
    /// Runs the upsert for a round of events (distinct tickets).
    fn upsert_round(
        &self,
        tx: &Transaction<'_>,
        events: &[&TicketEvent],
        now: &str,
    ) -> Result<Vec<Upserted>, client::Error> {
        let rows: Vec<Vec<Param<'_>>> = events
            .iter()
            .map(|event| {
                let mut row = statements::row_params(event, now);
                statements::fit(&mut row, &self.limits, event.ticket_id);
                row
            })
            .collect();
        let mut columns: Vec<Array<'_>> = rows[0]
            .iter()
            .map(|param| match param {
                Param::Text(_) => Array::Text(Vec::with_capacity(rows.len())),
                Param::Int(_) => Array::Int(Vec::with_capacity(rows.len())),
                Param::Bool(_) => Array::Bool(Vec::with_capacity(rows.len())),
            })
            .collect();
        for row in &rows {
            for (column, param) in columns.iter_mut().zip(row) {
                match (column, *param) {
                    (Array::Text(values), Param::Text(v)) => values.push(v),
                    (Array::Int(values), Param::Int(v)) => values.push(v),
                    (Array::Bool(values), Param::Bool(v)) => values.push(v),
                    // row_params yields the same types in the same order for
                    // every event, so the columns always line up.
                    _ => unreachable!("row_params changed column types between rows"),
                }
            }
        }
        let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(Array::as_sql).collect();
        let result = tx.query_prepared(&self.upsert, &params)?;
        let width = Field::COUNT + 2;
        result
            .iter()
            .map(|row| {
                let had_old: bool = row.try_get(0)?;
                let has_new: bool = row.try_get(1 + width)?;
                let inserted: bool = row.try_get(2 + width)?;
                let tombstoned: bool = row.try_get(3 + 2 * width)?;
                let row = cells(row)?;
                Ok(Upserted {
                    old: had_old.then(|| decoded(row.snapshot(1))).transpose()?,
                    inserted,
                    new: has_new
                        .then(|| decoded(row.snapshot(3 + width)))
                        .transpose()?,
                    tombstoned,
                })
            })
            .collect()
    }
}

fn insert_journal(
    tx: &mut Transaction<'_>,
    statement: &Statement,
    items: &[WriteItem],
    outcomes: &[Outcome],
) -> Result<(), client::Error> {
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
        .map(|(e, o)| e.outcome.unwrap_or(JournalOutcome::from(*o)).as_str())
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

    fn connection(&self) -> &dyn super::connection::Connection {
        &self.client
    }

    /// In a transaction holding the prune lock, if no other instance does.
    fn prune_journal(&mut self, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
        let tx = self.client.transaction().map_err(map_error)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_PRUNE])
            .map_err(map_error)?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let deleted = statements::prune(&tx, cutoff, limit)?;
        tx.commit().map_err(map_error)?;
        Ok(deleted)
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

impl Reads for PostgresReader {
    /// A server is the same database whatever happens to its files.
    fn verify(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn connection(&self) -> &dyn super::connection::Connection {
        &self.client
    }
}

/// Leadership by PostgreSQL session advisory locks, one per provider, on
/// a connection of its own: N instances on one database poll each PSA
/// once, and another takes over within a check when the holder goes away.
pub struct AdvisoryLeadership {
    url: PostgresUrl,
    client: Option<Client>,
    /// The providers whose lock this connection holds.
    held: Vec<Provider>,
}

impl AdvisoryLeadership {
    pub fn new(url: &PostgresUrl) -> AdvisoryLeadership {
        AdvisoryLeadership {
            url: url.clone(),
            client: None,
            held: Vec::new(),
        }
    }
}

impl Leadership for AdvisoryLeadership {
    fn lead(&mut self, provider: Provider) -> bool {
        if let Some(client) = self.client.as_mut() {
            if client.is_valid(PING_LIMIT).is_err() {
                if !self.held.is_empty() {
                    log::warn!(
                        "lost the connection holding the poller lock; another instance may take over"
                    );
                }
                self.client = None;
                self.held.clear();
            }
        }
        let client = match self.client.as_mut() {
            Some(client) => client,
            None => match open_client(&self.url) {
                Ok(client) => self.client.insert(client),
                Err(error) => {
                    log::debug!("cannot connect for the poller lock: {error}");
                    return false;
                }
            },
        };
        if !self.held.contains(&provider) {
            let taken = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&poller_lock(provider)])
                .map(|row| row.get::<_, bool>(0))
                .unwrap_or(false);
            if taken {
                self.held.push(provider);
            }
        }
        self.held.contains(&provider)
    }
}

#[cfg(test)]
mod tests;
