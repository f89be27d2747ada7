//! The writer's channel: the closed set of `Command`s it takes, and
//! `StoreClient`, the sending side that HTTP handlers and the poller hold.
//!
//! Every command that the sender waits for carries its reply channel; the
//! writer answers after COMMIT, so an answer means the change is durable.
//! Reads that need no ordering with writes do not come this way: they go
//! through a `Reader` of their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};

use super::db_health::DbHealth;
use super::journal::JournalEntryUpdate;
use super::records::{Outcome, SyncRun, SyncState, WriteItem};
use crate::error::StoreError;
use crate::psa::Provider;

/// Where the writer sends the result of a command.
pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the HTTP handlers and the poller send the writer.
pub enum Command {
    /// Apply one item (a webhook delivery, or a journal entry alone); the
    /// reply comes after COMMIT. Boxed so that the queue's slots stay small.
    Write {
        item: Box<WriteItem>,
        reply: Reply<Outcome>,
    },
    /// Apply several items (a poll page) in the same group commit; one
    /// outcome per item, in order.
    WriteMany {
        items: Vec<WriteItem>,
        reply: Reply<Vec<Outcome>>,
    },
    /// Record the start of a sync run in `sync_runs` (its `id` is
    /// ignored); the reply is the id the row got.
    StartRun {
        run: Box<SyncRun>,
        reply: Reply<i64>,
    },
    /// Record how a sync run ended (the row `run.id`).
    FinishRun { run: Box<SyncRun>, reply: Reply<()> },
    /// Record on a refused delivery's journal row what `codex replay` made
    /// of it; the reply says whether the row was changed.
    MarkReplayed {
        update: Box<JournalEntryUpdate>,
        reply: Reply<bool>,
    },
    /// Save a provider's poll state once a run completed: the cursor moves
    /// only through this.
    SaveSyncState {
        provider: Provider,
        state: Box<SyncState>,
        reply: Reply<()>,
    },
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
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl StoreClient {
    pub(super) fn new(tx: Sender<Command>, health: Arc<DbHealth>) -> StoreClient {
        StoreClient { tx, health }
    }

    pub fn health(&self) -> &DbHealth {
        &self.health
    }

    /// The published database state, shared with whoever renders status.
    pub fn health_handle(&self) -> Arc<DbHealth> {
        self.health.clone()
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
        self.request(timeout, |reply| Command::WriteMany {
            items: items.clone(),
            reply,
        })
    }

    /// Records the start of `run`; returns its id. Retries while the
    /// database is unavailable, until `timeout`.
    pub fn start_run(&self, run: &SyncRun, timeout: Duration) -> Result<i64, StoreError> {
        self.request(timeout, |reply| Command::StartRun {
            run: Box::new(run.clone()),
            reply,
        })
    }

    /// Records the end of `run`. Retries while the database is
    /// unavailable, until `timeout`.
    pub fn finish_run(&self, run: &SyncRun, timeout: Duration) -> Result<(), StoreError> {
        self.request(timeout, |reply| Command::FinishRun {
            run: Box::new(run.clone()),
            reply,
        })
    }

    /// Saves `provider`'s poll state. Retries while the database is
    /// unavailable, until `timeout`.
    pub fn save_sync_state(
        &self,
        provider: Provider,
        state: &SyncState,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.request(timeout, |reply| Command::SaveSyncState {
            provider,
            state: Box::new(state.clone()),
            reply,
        })
    }

    /// Records what a replay made of a refused delivery (see
    /// `Command::MarkReplayed`). Retries while the database is
    /// unavailable, until `timeout`.
    pub fn mark_replayed(
        &self,
        update: &JournalEntryUpdate,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.request(timeout, |reply| Command::MarkReplayed {
            update: Box::new(update.clone()),
            reply,
        })
    }

    /// Sends the command `make` builds around a reply channel and waits
    /// for the answer; while the database is unavailable, sends it again
    /// until `timeout` has passed.
    fn request<T>(
        &self,
        timeout: Duration,
        make: impl Fn(Reply<T>) -> Command,
    ) -> Result<T, StoreError> {
        retrying(&self.health, timeout, |left| {
            let (reply, answer) = oneshot::channel();
            self.send(make(reply))?;
            answer.recv_timeout(left).map_err(|_| StoreError::Timeout)?
        })
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.tx
            .send_timeout(command, QUEUE_WAIT)
            .map_err(|error| match error {
                SendTimeoutError::Timeout(_) => StoreError::Overloaded,
                SendTimeoutError::Disconnected(_) => StoreError::Stopped,
            })
    }
}

/// Runs `attempt` (given the time left) until it succeeds, fails for a
/// reason other than the database being unavailable, `timeout` passes,
/// or the service begins to shut down.
pub(super) fn retrying<T>(
    health: &DbHealth,
    timeout: Duration,
    mut attempt: impl FnMut(Duration) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match attempt(left) {
            Err(StoreError::Unavailable(message))
                if !health.is_closing() && Instant::now() + RETRY_PAUSE < deadline =>
            {
                log::debug!("waiting for the database: {message}");
                std::thread::sleep(RETRY_PAUSE);
            }
            other => return other,
        }
    }
}
