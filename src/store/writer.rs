//! The writer thread: the only code that writes to the database.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

use super::{Backend, Command, DbHealth, Outcome, StoreClient, WriteItem};
use crate::config::DatabaseUrl;
use crate::error::StoreError;
use crate::timestamp;

/// Commands waiting for the writer, at most. A full queue answers 503.
const QUEUE_CAPACITY: usize = 4096;
/// Items applied in one transaction, at most.
const MAX_BATCH: usize = 1024;
/// How often an idle writer checks the connection and housekeeping.
const TICK: Duration = Duration::from_millis(500);
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

/// Starts the writer thread on an open backend. `url` is used to reconnect
/// after the connection is lost.
pub fn spawn_writer(
    backend: Box<dyn Backend>,
    url: DatabaseUrl,
    journal_retention_days: u32,
) -> std::io::Result<WriterHandle> {
    let (tx, rx) = bounded(QUEUE_CAPACITY);
    let health = Arc::new(DbHealth::default());
    let writer = Writer {
        rx,
        backend: Some(backend),
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
        client: StoreClient { tx, health },
        thread,
    })
}

struct Writer {
    rx: Receiver<Command>,
    backend: Option<Box<dyn Backend>>,
    url: DatabaseUrl,
    health: Arc<DbHealth>,
    backoff: Duration,
    next_connect: Instant,
    retention_days: u32,
    next_prune: Instant,
    /// True while a prune is under way (it runs a chunk per idle moment).
    pruning: bool,
}

/// Where a batch's outcomes go.
enum Reply {
    One(oneshot::Sender<Result<Outcome, StoreError>>),
    Many(oneshot::Sender<Result<Vec<Outcome>, StoreError>>, usize),
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(TICK) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let commands = self.gather(first);
            // A bug in a backend must not end the writer: the batch's
            // senders see their reply channel closed (503), the connection
            // (whose transaction rolled back on unwinding) is reopened.
            let processed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(commands)));
            if processed.is_err() {
                log::error!("the writer panicked on a batch; its senders were told to retry");
                self.backend = None;
                self.next_connect = Instant::now();
            }
            if self.pruning {
                self.prune_step();
            }
        }
        log::debug!("writer stopped: every sender is gone and the queue is drained");
    }

    /// Collects a batch: the first command and everything queued behind
    /// it. While one batch commits the next accumulates, so batches grow
    /// with the load by themselves (group commit).
    fn gather(&self, first: Command) -> Vec<Command> {
        let mut commands = vec![first];
        while commands.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(command) => commands.push(command),
                Err(_) => break,
            }
        }
        commands
    }

    fn process(&mut self, commands: Vec<Command>) {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        let mut jobs = Vec::new();
        for command in commands {
            match command {
                Command::Write { item, reply } => {
                    items.push(*item);
                    replies.push(Reply::One(reply));
                }
                Command::WriteMany { items: many, reply } => {
                    replies.push(Reply::Many(reply, many.len()));
                    items.extend(many);
                }
                Command::Job(job) => jobs.push(job),
            }
        }
        if !items.is_empty() {
            let results = self.apply(&items);
            let mut results = results.into_iter();
            for reply in replies {
                match reply {
                    Reply::One(tx) => {
                        let result = results.next().unwrap_or(Err(StoreError::Stopped));
                        let _ = tx.send(result);
                    }
                    Reply::Many(tx, count) => {
                        let chunk: Result<Vec<Outcome>, StoreError> =
                            results.by_ref().take(count).collect();
                        let _ = tx.send(chunk);
                    }
                }
            }
        }
        for job in jobs {
            match self.backend() {
                Ok(backend) => job(Ok(backend.as_mut())),
                Err(error) => job(Err(error)),
            }
        }
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
    /// not lost, and reports the failure to its sender.
    fn journal_failure(
        &mut self,
        item: &WriteItem,
        message: String,
    ) -> Result<Outcome, StoreError> {
        log::error!("cannot store event: {message}");
        if let (Some(journal), Ok(backend)) = (&item.journal, self.backend()) {
            let mut entry = journal.clone();
            entry.error = Some(format!("not applied: {message}"));
            entry.outcome = Some("failed");
            let only_journal = WriteItem {
                event: None,
                journal: Some(entry),
            };
            if let Err(error) = backend.apply(std::slice::from_ref(&only_journal)) {
                log::error!("cannot journal the failed delivery either: {error}");
            }
        }
        Err(StoreError::Statement(message))
    }

    /// The backend, reconnecting if the connection was lost and the backoff
    /// has passed.
    fn backend(&mut self) -> Result<&mut Box<dyn Backend>, StoreError> {
        if self.backend.is_none() {
            if Instant::now() < self.next_connect {
                return Err(StoreError::Unavailable(
                    self.health
                        .last_error()
                        .unwrap_or_else(|| "reconnecting".to_string()),
                ));
            }
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
                    return Err(error);
                }
            }
        }
        self.backend.as_mut().ok_or(StoreError::Stopped)
    }

    /// Drops a connection that failed; the next use reconnects.
    fn lost(&mut self, error: &StoreError) {
        self.health.set(Err(error));
        if matches!(error, StoreError::Unavailable(_)) {
            self.backend = None;
            self.next_connect = Instant::now() + self.backoff;
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
        if self.pruning {
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
            }
        }
    }
}
