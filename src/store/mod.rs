//! Storage: one writer thread owns the database connection. HTTP handlers
//! and the poller send it `Command`s over a bounded channel; it applies
//! whatever is waiting in one transaction (group commit) and only then
//! answers, so an answer means the change is durable.

mod dialect;
mod journal;
mod migrate;
mod postgres;
mod queries;
mod schema;
mod sql;
mod sqlite;
mod writer;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::{Config, DatabaseUrl};
use crate::error::StoreError;
use crate::psa::{Field, Provider, TicketEvent, Value};

pub use journal::JournalOutcome;
pub use writer::{WriterHandle, spawn_writer};

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The ticket did not exist and now does.
    Created,
    /// The event was applied; `changes` describes it. `advanced` is true
    /// when it carried a newer version than the stored one (rather than
    /// filling in fields of the same or an older version).
    Updated {
        changes: Vec<String>,
        advanced: bool,
    },
    /// The ticket is now deleted or spam.
    Deleted { new_status: String, advanced: bool },
    /// Nothing to do, with why (a delete of a ticket never seen).
    Ignored { reason: String },
    /// The same content again (a duplicate delivery).
    Unchanged,
    /// Older than what is stored; nothing changed.
    Stale { stored_updated_at: String },
    /// A delivery that could not be parsed, journaled only.
    Rejected,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated { .. } => "updated",
            Outcome::Deleted { .. } => "deleted",
            Outcome::Ignored { .. } => "ignored",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale { .. } => "stale",
            Outcome::Rejected => "rejected",
        }
    }

    /// True when something was stored.
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Outcome::Created
                | Outcome::Updated { .. }
                | Outcome::Deleted { .. }
                | Outcome::Ignored { .. }
        )
    }

    /// True when a version newer than any stored was stored: a change
    /// Codex had not heard of before.
    pub fn is_new_version(&self) -> bool {
        match self {
            Outcome::Created | Outcome::Ignored { .. } => true,
            Outcome::Updated { advanced, .. } | Outcome::Deleted { advanced, .. } => *advanced,
            Outcome::Unchanged | Outcome::Stale { .. } | Outcome::Rejected => false,
        }
    }
}

/// One authenticated webhook delivery as the journal keeps it.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub provider: Provider,
    pub received_at: String,
    pub client_ip: String,
    pub event: Option<String>,
    pub ticket_id: Option<i64>,
    /// Why the delivery was rejected or not applied, for one that was.
    pub error: Option<String>,
    /// The outcome to record instead of the apply's (`Failed` for an event
    /// the database refused).
    pub outcome: Option<JournalOutcome>,
    pub body: Vec<u8>,
}

impl JournalEntry {
    /// Makes the text columns storable anywhere: PostgreSQL's TEXT cannot
    /// hold U+0000, which a body's JSON escapes can put in an event name
    /// or an error quoting it. The body itself is kept byte for byte.
    pub fn sanitize(&mut self) {
        for text in [&mut self.client_ip, &mut self.received_at]
            .into_iter()
            .chain([&mut self.event, &mut self.error].into_iter().flatten())
        {
            if text.contains('\0') {
                *text = text.replace('\0', "\\u0000");
            }
        }
    }
}

/// One unit of work for the writer: an event to apply, a journal entry to
/// keep, or both (a webhook delivery that parsed).
#[derive(Debug, Clone)]
pub struct WriteItem {
    pub event: Option<TicketEvent>,
    pub journal: Option<JournalEntry>,
}

/// A ticket row as stored, for diffing and for readers.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub values: [Option<Value>; Field::COUNT],
    pub last_updated_at: Option<String>,
}

impl Snapshot {
    pub fn get(&self, field: Field) -> Option<&Value> {
        self.values[field.index()].as_ref()
    }
}

/// A delete of a ticket Codex never stored, as `ticket_tombstones` keeps
/// it: what the delete would have written to the ticket's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub last_updated_at: Option<String>,
    pub status: Option<String>,
    pub status_id: Option<i64>,
    pub closed_at: Option<String>,
}

impl Tombstone {
    pub fn of(event: &TicketEvent) -> Tombstone {
        Tombstone {
            last_updated_at: event.updated_at.clone(),
            status: event.status().map(str::to_string),
            status_id: match event.get(Field::StatusId) {
                Some(Some(Value::Int(id))) => Some(*id),
                _ => None,
            },
            closed_at: event.closed_at.clone(),
        }
    }

    /// The delete again, for merging into the row a later event created:
    /// the upsert's ordering then decides, as if the delete had found the
    /// row (an older create stays deleted, a newer one restores it).
    pub fn event(&self, created: &TicketEvent) -> TicketEvent {
        let mut event = TicketEvent::new(
            created.provider,
            created.ticket_id,
            crate::psa::EventKind::Deleted,
            created.source,
        );
        event.updated_at = self.last_updated_at.clone();
        event.closed_at = self.closed_at.clone();
        if let Some(status) = &self.status {
            event.set(Field::Status, Some(Value::Text(status.clone())));
        }
        if let Some(id) = self.status_id {
            event.set(Field::StatusId, Some(Value::Int(id)));
        }
        event
    }

    /// The delete as the row it stands for, to describe what the later
    /// event changed.
    pub fn snapshot(&self) -> Snapshot {
        let mut values: [Option<Value>; Field::COUNT] = Default::default();
        values[Field::Status.index()] = self.status.clone().map(Value::Text);
        values[Field::StatusId.index()] = self.status_id.map(Value::Int);
        Snapshot {
            revision: 0,
            values,
            last_updated_at: self.last_updated_at.clone(),
        }
    }
}

/// A job the writer runs with its backend, for everything but event writes
/// (sync bookkeeping, status queries, pruning). It receives the error
/// instead when the database is unavailable.
/// A job on the writer's connection. It replies to its sender itself and
/// returns its error, so the writer can drop a connection the job found
/// broken.
pub type Job = Box<dyn FnOnce(Result<&mut dyn Backend, StoreError>) -> Option<StoreError> + Send>;

/// What the HTTP handlers and the poller send the writer.
pub enum Command {
    /// Apply one item; the reply comes after COMMIT. Boxed so that the
    /// queue's slots stay small.
    Write {
        item: Box<WriteItem>,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    /// Apply several items (a poll page) in the same group commit.
    WriteMany {
        items: Vec<WriteItem>,
        reply: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
    },
    Job(Job),
}

/// Counts behind webhook coverage, per provider, over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookCounts {
    /// Authenticated deliveries received.
    pub received: i64,
    /// Deliveries that stored a new version.
    pub applied: i64,
    /// Deliveries refused as unreadable.
    pub rejected: i64,
    /// When the last delivery Codex could process (whatever its outcome,
    /// a duplicate included) arrived: proof that webhooks reach Codex.
    pub last_processed_at: Option<String>,
    /// When the last authenticated delivery arrived.
    pub last_received_at: Option<String>,
}

/// One row of `sync_runs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncRun {
    pub id: i64,
    pub provider: String,
    pub kind: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub tickets_seen: i64,
    pub tickets_changed: i64,
    pub missed_by_webhooks: i64,
    pub missed_ticket_ids: Vec<i64>,
    pub api_calls: i64,
    pub error: Option<String>,
}

/// Per-provider poll state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncState {
    pub cursor: Option<String>,
    pub last_reconcile_at: Option<String>,
}

/// A database Codex can keep tickets in. Implementations own one connection
/// and are used only by the writer thread (and by one-shot commands).
pub trait Backend: Send {
    /// Applies `items` in one transaction, returning an outcome per item in
    /// order. On error nothing of the batch is committed.
    fn apply(&mut self, items: &[WriteItem]) -> Result<Vec<Outcome>, StoreError>;

    /// Checks that the connection still works.
    fn ping(&mut self) -> Result<(), StoreError>;

    /// Deletes up to `limit` journal rows received before `cutoff`; returns
    /// how many went. Does nothing when another instance is pruning.
    fn prune_journal(&mut self, cutoff: &str, limit: i64) -> Result<u64, StoreError>;

    /// Reads one ticket as stored.
    fn ticket(
        &mut self,
        provider: Provider,
        ticket_id: i64,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Tickets not in a done status, with their stored status ids.
    fn active_tickets(
        &mut self,
        provider: Provider,
        done_statuses: &[String],
        limit: i64,
    ) -> Result<Vec<(i64, Option<i64>)>, StoreError>;

    fn webhook_counts(
        &mut self,
        provider: Provider,
        since: &str,
    ) -> Result<WebhookCounts, StoreError>;

    fn sync_state(&mut self, provider: Provider) -> Result<SyncState, StoreError>;

    fn save_sync_state(&mut self, provider: Provider, state: &SyncState) -> Result<(), StoreError>;

    /// Inserts a run (`id` ignored) and returns its id.
    fn start_run(&mut self, run: &SyncRun) -> Result<i64, StoreError>;

    fn finish_run(&mut self, run: &SyncRun) -> Result<(), StoreError>;

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

/// How long the writer may wait on the database for one call before
/// health reports it unavailable and handlers stop waiting for it.
const STALL_AFTER: Duration = Duration::from_millis(500);

/// The database's state as the writer publishes it: read by health and by
/// handlers without a round trip through the writer's queue, so a writer
/// stuck on a frozen database is seen within a second.
#[derive(Debug)]
pub struct DbHealth {
    unavailable: AtomicBool,
    /// When the writer's current database call began, in milliseconds
    /// since `epoch` plus one; 0 while it is not in a call.
    call_started: AtomicU64,
    epoch: Instant,
    /// Set at shutdown: callers stop retrying.
    closing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl DbHealth {
    fn new(first_error: Option<&StoreError>) -> DbHealth {
        DbHealth {
            unavailable: AtomicBool::new(first_error.is_some()),
            call_started: AtomicU64::new(0),
            epoch: Instant::now(),
            closing: AtomicBool::new(false),
            last_error: Mutex::new(first_error.map(ToString::to_string)),
        }
    }

    /// True when the writer is connected and not stuck in a call.
    pub fn is_available(&self) -> bool {
        self.problem().is_none()
    }

    /// Why the database cannot take writes now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.unavailable.load(Ordering::Relaxed) {
            return Some(
                self.last_error()
                    .unwrap_or_else(|| "reconnecting".to_string()),
            );
        }
        self.stalled().map(|waited| {
            format!(
                "the database has not answered for {:.1} s",
                waited.as_secs_f64()
            )
        })
    }

    /// How long the writer has been waiting on the database, once that is
    /// longer than `STALL_AFTER`.
    pub fn stalled(&self) -> Option<Duration> {
        let started = self.call_started.load(Ordering::Relaxed);
        if started == 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let waited = Duration::from_millis(now.saturating_sub(started));
        (waited > STALL_AFTER).then_some(waited)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// Tells callers waiting for the database to stop retrying.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn begin_call(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.call_started.store(now, Ordering::Relaxed);
    }

    fn end_call(&self) {
        self.call_started.store(0, Ordering::Relaxed);
    }

    fn set(&self, result: Result<(), &StoreError>) {
        let was_available = !self.unavailable.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.unavailable.store(false, Ordering::Relaxed);
                if !was_available {
                    log::info!("database available again");
                }
            }
            Err(error) => {
                self.unavailable.store(true, Ordering::Relaxed);
                let message = error.to_string();
                let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
                // Each new reason is logged once, not each retry.
                if was_available || last.as_deref() != Some(message.as_str()) {
                    log::error!("{message}");
                }
                *last = Some(message);
            }
        }
    }
}

/// The sending side of the writer, cloned into every handler and the poller.
#[derive(Clone)]
pub struct StoreClient {
    tx: Sender<Command>,
    health: Arc<DbHealth>,
}

/// How long a sender waits for room in a full queue before answering 503.
const QUEUE_WAIT: Duration = Duration::from_millis(200);
/// How often a waiting handler checks that the writer is not stuck.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// The pause between attempts of a caller that waits out an outage.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl StoreClient {
    pub fn health(&self) -> &DbHealth {
        &self.health
    }

    /// Writes one item and waits for its commit, at most `timeout`. Fails
    /// fast while the database is unavailable, and stops waiting once the
    /// writer has been stuck on the database for `STALL_AFTER`: the
    /// sender gets a prompt 503 and retries, where waiting could outlast
    /// its own timeout.
    pub fn write(&self, item: WriteItem, timeout: Duration) -> Result<Outcome, StoreError> {
        if item.event.is_some() {
            if let Some(problem) = self.health.problem() {
                return Err(StoreError::Unavailable(problem));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Write {
            item: Box::new(item),
            reply,
        })?;
        self.wait(&answer, timeout)
    }

    /// Waits for a reply, at most `timeout`, and no longer than the writer
    /// has been stuck on the database for `STALL_AFTER`.
    fn wait<T>(
        &self,
        answer: &oneshot::Receiver<Result<T, StoreError>>,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            match answer.recv_timeout(WAIT_SLICE) {
                Ok(result) => return result,
                Err(oneshot::RecvTimeoutError::Disconnected) => return Err(StoreError::Stopped),
                Err(oneshot::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            if let Some(waited) = self.health.stalled() {
                return Err(StoreError::Unavailable(format!(
                    "the database has not answered for {:.1} s",
                    waited.as_secs_f64()
                )));
            }
        }
    }

    /// Writes several items in one group commit and waits for it; while
    /// the database is unavailable, retries until `timeout` has passed.
    pub fn write_many(
        &self,
        items: Vec<WriteItem>,
        timeout: Duration,
    ) -> Result<Vec<Outcome>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying(timeout, |left| {
            let (reply, answer) = oneshot::channel();
            self.send(Command::WriteMany {
                items: items.clone(),
                reply,
            })?;
            answer.recv_timeout(left).map_err(|_| StoreError::Timeout)?
        })
    }

    /// Runs `job` on the writer thread and waits for its result; while
    /// the database is unavailable, retries until `timeout` has passed.
    pub fn call<T: Send + 'static>(
        &self,
        timeout: Duration,
        job: impl Fn(&mut dyn Backend) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<T, StoreError> {
        let job = Arc::new(job);
        self.retrying(timeout, |left| {
            let (reply, answer) = oneshot::channel();
            let job = job.clone();
            self.send(Command::Job(Box::new(move |backend| {
                let result = backend.and_then(|backend| job(backend));
                let error = result.as_ref().err().cloned();
                let _ = reply.send(result);
                error
            })))?;
            answer.recv_timeout(left).map_err(|_| StoreError::Timeout)?
        })
    }

    /// Runs `job` on the writer thread once, for a caller that must answer
    /// promptly (health): no retry, and no waiting on a stuck writer.
    pub fn call_once<T: Send + 'static>(
        &self,
        timeout: Duration,
        job: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Some(problem) = self.health.problem() {
            return Err(StoreError::Unavailable(problem));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Job(Box::new(move |backend| {
            let result = backend.and_then(job);
            let error = result.as_ref().err().cloned();
            let _ = reply.send(result);
            error
        })))?;
        self.wait(&answer, timeout)
    }

    /// Runs `attempt` (given the time left) until it succeeds, fails for a
    /// reason other than the database being unavailable, or `timeout`
    /// passes.
    fn retrying<T>(
        &self,
        timeout: Duration,
        mut attempt: impl FnMut(Duration) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match attempt(left) {
                Err(StoreError::Unavailable(message))
                    if !self.health.closing.load(Ordering::Relaxed)
                        && Instant::now() + RETRY_PAUSE < deadline =>
                {
                    log::debug!("waiting for the database: {message}");
                    std::thread::sleep(RETRY_PAUSE);
                }
                other => return other,
            }
        }
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        use crossbeam_channel::SendTimeoutError;
        self.tx
            .send_timeout(command, QUEUE_WAIT)
            .map_err(|error| match error {
                SendTimeoutError::Timeout(_) => StoreError::Overloaded,
                SendTimeoutError::Disconnected(_) => StoreError::Stopped,
            })
    }
}

/// Describes what changed between two versions of a ticket, in the
/// predecessor's style (`status: open -> pending`, `subject updated`).
pub fn describe_changes(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let show =
        |value: Option<&Value>| value.map_or_else(|| "none".to_string(), ToString::to_string);
    let mut changes = Vec::new();
    for field in Field::ALL {
        let (before, after) = (old.get(field), new.get(field));
        if before == after {
            continue;
        }
        match field {
            // The id is shown only when the names do not tell the change.
            Field::StatusId if old.get(Field::Status) != new.get(Field::Status) => {}
            Field::PriorityId if old.get(Field::Priority) != new.get(Field::Priority) => {}
            Field::Subject
            | Field::Description
            | Field::RequesterEmail
            | Field::RequesterName
            | Field::DueBy
            | Field::FrDueBy => changes.push(format!("{} updated", field.column())),
            _ => changes.push(format!(
                "{}: {} -> {}",
                field.column(),
                show(before),
                show(after)
            )),
        }
    }
    changes
}

/// Decides the outcome of an upsert from the row before (`old`) and the row
/// the statement returned (`new`, absent when the guard refused it).
pub fn classify(
    event: &TicketEvent,
    old: Option<&Snapshot>,
    new: Option<&Snapshot>,
    inserted: bool,
) -> Outcome {
    use crate::psa::EventKind;
    use crate::psa::freshservice::{STATUS_DELETED, STATUS_SPAM};
    let is_gone = |s: Option<&Snapshot>| {
        matches!(
            s.and_then(|s| s.get(Field::StatusId)),
            Some(Value::Int(STATUS_SPAM | STATUS_DELETED))
        )
    };
    match new {
        Some(_) if inserted && event.kind == EventKind::Deleted => Outcome::Ignored {
            reason: "ticket not found".to_string(),
        },
        Some(_) if inserted => Outcome::Created,
        Some(new_row) => {
            let advanced = match (
                old.and_then(|o| o.last_updated_at.as_deref()),
                event.updated_at.as_deref(),
            ) {
                (Some(stored), Some(incoming)) => incoming > stored,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if event.kind == EventKind::Deleted || (is_gone(Some(new_row)) && !is_gone(old)) {
                Outcome::Deleted {
                    new_status: new_row
                        .get(Field::Status)
                        .map_or_else(|| "deleted".to_string(), ToString::to_string),
                    advanced,
                }
            } else {
                Outcome::Updated {
                    changes: old
                        .map(|old| describe_changes(old, new_row))
                        .unwrap_or_default(),
                    advanced,
                }
            }
        }
        None => match (
            old.and_then(|o| o.last_updated_at.as_deref()),
            event.updated_at.as_deref(),
        ) {
            (Some(stored), Some(incoming)) if incoming < stored => Outcome::Stale {
                stored_updated_at: stored.to_string(),
            },
            _ => Outcome::Unchanged,
        },
    }
}

/// `1,2,3` for the `missed_ticket_ids` column.
pub fn join_ids(ids: &[i64]) -> Option<String> {
    (!ids.is_empty()).then(|| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

pub fn split_ids(text: Option<&str>) -> Vec<i64> {
    text.unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
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
