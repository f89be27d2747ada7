//! The writer thread: the only code that writes to the database.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded, select};

use super::command::{Command, Reply, StoreClient};
use super::db_health::DbHealth;
use super::records::{JournalEntry, Outcome, WriteItem};
use super::{Backend, FirstConnection};
use crate::config::DatabaseUrl;
use crate::error::StoreError;
use crate::timestamp;

/// Commands waiting for the writer, at most. A full queue answers 503.
const QUEUE_CAPACITY: usize = 4096;
/// Items applied in one transaction, at most.
const MAX_BATCH: usize = 1024;
/// How often an idle writer checks the connection and housekeeping unless
/// asked to sooner (see `DbHealth::problem`): an idle appliance stays asleep.
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// The longest wait between connection attempts while there is no
/// connection (the backoff's own schedule is shorter).
const RECONNECT_CHECK: Duration = Duration::from_millis(500);
/// Reconnect backoff bounds: the first retry is quick, later ones at most
/// a second apart, so service resumes within seconds of the database.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often journal pruning runs, and how many rows one step deletes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_CHUNK: i64 = 5000;

/// The running writer: its client side and its thread.
pub struct WriterHandle {
    pub client: StoreClient,
    thread: JoinHandle<()>,
}

impl WriterHandle {
    /// Waits for the writer to drain and stop. It stops once every
    /// `StoreClient` clone has been dropped.
    pub fn join(self) -> std::thread::Result<()> {
        let WriterHandle { client, thread } = self;
        drop(client);
        thread.join()
    }
}

/// Starts the writer thread. `first` is an open connection if the
/// caller has one; without it (the database was down at start-up) the
/// writer connects, creating or upgrading the schema, as soon as it can.
/// `url` is used to reconnect whenever the connection is lost.
pub fn spawn_writer(
    first: FirstConnection,
    url: DatabaseUrl,
    journal_retention_days: u32,
) -> std::io::Result<WriterHandle> {
    let (tx, rx) = bounded(QUEUE_CAPACITY);
    let health = Arc::new(DbHealth::new(first.as_ref().err()));
    let writer = Writer {
        rx,
        backend: first.ok(),
        url,
        health: health.clone(),
        backoff: BACKOFF_MIN,
        next_connect: Instant::now(),
        retention_days: journal_retention_days,
        // The first prune runs soon after start, then every PRUNE_EVERY.
        next_prune: Instant::now() + Duration::from_secs(2),
        pruning: false,
    };
    let thread = std::thread::Builder::new()
        .name("codex-writer".to_string())
        .spawn(move || writer.run())?;
    Ok(WriterHandle {
        client: StoreClient::new(tx, health),
        thread,
    })
}

struct Writer {
    rx: Receiver<Command>,
    /// The connection; `None` while the database is unreachable.
    backend: Option<Box<dyn Backend>>,
    url: DatabaseUrl,
    health: Arc<DbHealth>,
    /// The wait after the next failed connection attempt.
    backoff: Duration,
    /// When the next connection attempt is due (while `backend` is `None`).
    next_connect: Instant,
    retention_days: u32,
    next_prune: Instant,
    /// True while a prune is under way (it runs a chunk per idle moment).
    pruning: bool,
}

/// Where a batch's outcomes go.
enum Batched {
    One(Reply<Outcome>),
    Many(Reply<Vec<Outcome>>, usize),
}

impl Writer {
    fn run(mut self) {
        let health = self.health.clone();
        loop {
            self.health.turn();
            // Reconnecting follows the backoff schedule, whether or not
            // work arrives: handlers fail fast while the database is
            // unavailable, so nothing else would try.
            if self.backend.is_none() && Instant::now() >= self.next_connect {
                self.busy(Self::connect);
            }
            let now = Instant::now();
            let wait = match self.backend {
                // A prune under way goes on between commands.
                Some(_) if self.pruning => Duration::ZERO,
                Some(_) => IDLE_CHECK.min(self.next_prune.saturating_duration_since(now)),
                None => self
                    .next_connect
                    .saturating_duration_since(now)
                    .clamp(Duration::from_millis(1), RECONNECT_CHECK),
            };
            let first = select! {
                recv(self.rx) -> command => match command {
                    Ok(command) => command,
                    Err(_) => break,
                },
                recv(health.check_asked()) -> _ => {
                    if self.backend.is_some() {
                        self.busy(Self::idle);
                    }
                    continue;
                },
                default(wait) => {
                    if self.backend.is_some() {
                        self.busy(Self::idle);
                    }
                    continue;
                },
            };
            let commands = self.gather(first);
            // A bug in a backend must not end the writer: the batch's
            // senders see their reply channel closed (503), the connection
            // (whose transaction rolled back on unwinding) is reopened.
            let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.busy(|writer| writer.process(commands))
            }));
            if processed.is_err() {
                self.health.end_call();
                log::error!("the writer panicked on a batch; its senders were told to retry");
                self.backend = None;
                self.next_connect = Instant::now();
            }
            if self.pruning && self.backend.is_some() {
                self.busy(Self::prune_step);
            }
        }
        log::debug!("writer stopped: every sender is gone and the queue is drained");
    }

    /// Runs `f`, publishing that the writer is waiting on the database
    /// meanwhile, so health and handlers see a database that stopped
    /// answering without asking the writer.
    fn busy<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.health.begin_call();
        let result = f(self);
        self.health.end_call();
        result
    }

    /// Collects a batch: the first command and everything queued behind
    /// it. While one batch commits the next accumulates, so batches grow
    /// with the load by themselves (group commit).
    fn gather(&self, first: Command) -> Vec<Command> {
        crate::metrics::metrics().queue_depth(self.rx.len() + 1);
        let mut commands = vec![first];
        while commands.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(command) => commands.push(command),
                Err(_) => break,
            }
        }
        commands
    }

    /// Applies the batch's writes in one transaction, answers them, then
    /// runs the sync bookkeeping commands in the order they came.
    fn process(&mut self, commands: Vec<Command>) {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        let mut bookkeeping = Vec::new();
        for command in commands {
            match command {
                Command::Write { item, reply } => {
                    items.push(*item);
                    replies.push(Batched::One(reply));
                }
                Command::WriteMany { items: many, reply } => {
                    replies.push(Batched::Many(reply, many.len()));
                    items.extend(many);
                }
                other => bookkeeping.push(other),
            }
        }
        if !items.is_empty() {
            for item in &mut items {
                if let Some(journal) = item.journal.as_mut() {
                    journal.sanitize();
                }
            }
            let started = Instant::now();
            let results = self.apply(&items);
            crate::metrics::metrics().commit(items.len(), started.elapsed());
            let mut results = results.into_iter();
            for reply in replies {
                match reply {
                    Batched::One(tx) => {
                        let result = results.next().unwrap_or(Err(StoreError::Stopped));
                        let _ = tx.send(result);
                    }
                    Batched::Many(tx, count) => {
                        let chunk: Result<Vec<Outcome>, StoreError> =
                            results.by_ref().take(count).collect();
                        let _ = tx.send(chunk);
                    }
                }
            }
        }
        for command in bookkeeping {
            match command {
                Command::StartRun { run, reply } => {
                    let result = self.call(|backend| backend.start_run(&run));
                    let _ = reply.send(result);
                }
                Command::FinishRun { run, reply } => {
                    let result = self.call(|backend| backend.finish_run(&run));
                    let _ = reply.send(result);
                }
                Command::MarkReplayed { update, reply } => {
                    let result = self.call(|backend| backend.mark_replayed(&update));
                    let _ = reply.send(result);
                }
                Command::SaveSyncState {
                    provider,
                    state,
                    reply,
                } => {
                    let result = self.call(|backend| backend.save_sync_state(provider, &state));
                    let _ = reply.send(result);
                }
                Command::Write { .. } | Command::WriteMany { .. } => {
                    unreachable!("writes were taken into the batch above")
                }
            }
        }
    }

    /// Runs one statement outside the batch; a failure that leaves the
    /// connection in doubt drops it.
    fn call<T>(
        &mut self,
        statement: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self
            .backend()
            .and_then(|backend| statement(backend.as_mut()));
        if let Err(error) = &result {
            self.lost(error);
        }
        result
    }

    /// Applies a batch; if it fails for a reason of its own (not the
    /// connection), applies each item alone so one bad item cannot fail
    /// the others.
    fn apply(&mut self, items: &[WriteItem]) -> Vec<Result<Outcome, StoreError>> {
        let backend = match self.backend() {
            Ok(backend) => backend,
            Err(error) => return items.iter().map(|_| Err(error.clone())).collect(),
        };
        match backend.apply(items) {
            Ok(outcomes) => {
                self.health.set(Ok(()));
                outcomes.into_iter().map(Ok).collect()
            }
            Err(error @ StoreError::Statement(_)) if items.len() > 1 => {
                log::warn!(
                    "batch of {} failed ({error}); applying its items one by one",
                    items.len()
                );
                items.iter().map(|item| self.apply_alone(item)).collect()
            }
            Err(StoreError::Statement(message)) => vec![self.journal_failure(&items[0], message)],
            Err(error) => {
                self.lost(&error);
                items.iter().map(|_| Err(error.clone())).collect()
            }
        }
    }

    fn apply_alone(&mut self, item: &WriteItem) -> Result<Outcome, StoreError> {
        let backend = self.backend()?;
        match backend.apply(std::slice::from_ref(item)) {
            Ok(mut outcomes) => outcomes.pop().ok_or(StoreError::Stopped),
            Err(StoreError::Statement(message)) => self.journal_failure(item, message),
            Err(error) => {
                self.lost(&error);
                Err(error)
            }
        }
    }

    /// Keeps the delivery of an event that cannot be stored, so that it is
    /// not lost, and reports the failure to its sender. If even the entry
    /// is refused, the body is kept with nothing else that could be at
    /// fault. The sender learns whether the journal has it.
    fn journal_failure(
        &mut self,
        item: &WriteItem,
        message: String,
    ) -> Result<Outcome, StoreError> {
        log::error!("cannot store event: {message}");
        let Some(journal) = &item.journal else {
            return Err(StoreError::Statement(message));
        };
        let mut entry = journal.clone();
        entry.error = Some(format!("not applied: {message}"));
        entry.outcome = Some(super::JournalOutcome::Failed);
        entry.sanitize();
        let minimal = JournalEntry {
            event: None,
            ticket_id: None,
            error: Some("not applied: the database refused the event".to_string()),
            ..entry.clone()
        };
        for entry in [entry, minimal] {
            let only_journal = WriteItem {
                event: None,
                journal: Some(entry),
            };
            let backend = self.backend()?;
            match backend.apply(std::slice::from_ref(&only_journal)) {
                Ok(_) => return Err(StoreError::Statement(message)),
                Err(StoreError::Statement(error)) => {
                    log::error!("cannot journal the failed delivery: {error}");
                }
                Err(error) => {
                    self.lost(&error);
                    return Err(error);
                }
            }
        }
        Err(StoreError::NotJournaled(message))
    }

    /// The backend, or why there is none.
    fn backend(&mut self) -> Result<&mut Box<dyn Backend>, StoreError> {
        match self.backend.as_mut() {
            Some(backend) => Ok(backend),
            None => Err(StoreError::Unavailable(
                self.health
                    .last_error()
                    .unwrap_or_else(|| "reconnecting".to_string()),
            )),
        }
    }

    /// One connection attempt; a failure schedules the next.
    fn connect(&mut self) {
        match super::connect(&self.url) {
            Ok(backend) => {
                self.backend = Some(backend);
                self.backoff = BACKOFF_MIN;
                self.health.set(Ok(()));
            }
            Err(error) => {
                self.next_connect = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.health.set(Err(&error));
            }
        }
    }

    /// Records a failure; one that leaves the connection in doubt drops
    /// it, and the first reconnect comes quickly.
    fn lost(&mut self, error: &StoreError) {
        if matches!(error, StoreError::Statement(_)) {
            return;
        }
        self.health.set(Err(error));
        if error.drops_connection() && self.backend.take().is_some() {
            self.backoff = BACKOFF_MIN;
            self.next_connect = Instant::now() + BACKOFF_MIN;
        }
    }

    fn idle(&mut self) {
        let result = self.backend().and_then(|backend| backend.ping());
        match result {
            Ok(()) => self.health.set(Ok(())),
            Err(error) => self.lost(&error),
        }
        if Instant::now() >= self.next_prune {
            self.next_prune = Instant::now() + PRUNE_EVERY;
            self.pruning = true;
        }
        if self.pruning && self.backend.is_some() {
            self.prune_step();
        }
    }

    /// Deletes one chunk of expired journal rows; work waiting in the queue
    /// runs between chunks.
    fn prune_step(&mut self) {
        let cutoff = timestamp::seconds_ago(u64::from(self.retention_days) * 86_400);
        let result = self
            .backend()
            .and_then(|b| b.prune_journal(&cutoff, PRUNE_CHUNK));
        match result {
            Ok(deleted) => {
                if deleted > 0 {
                    log::info!("journal: pruned {deleted} deliveries received before {cutoff}");
                }
                self.pruning = deleted as i64 >= PRUNE_CHUNK;
            }
            Err(error) => {
                log::warn!("journal pruning failed: {error}");
                self.pruning = false;
                self.lost(&error);
            }
        }
    }
}
