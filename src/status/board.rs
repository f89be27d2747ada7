//! The running service's status: `StatusBoard` brings together the
//! writer's view of the database, what the pollers publish and what the
//! status thread reads, and `StatusThread` reads what the database holds
//! when health asks, on a connection of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};

use super::{ProviderStatus, Status};
use crate::config::Config;
use crate::psa::Provider;
use crate::store::{DbHealth, ProviderSummary, Reader};
use crate::sync::PollerBoard;

/// How long what was read from the database is reused for health.
const STORED_FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a health answer waits for the database: health answers within
/// a second even while the database is slow, without the stored part when
/// it cannot have it in time.
const STORED_WAIT: Duration = Duration::from_millis(300);
/// Runs health shows: the newest.
const HEALTH_RUNS: i64 = 1;

/// The running service's status as it changes: the pollers publish on
/// their board, the status thread fills in what the database holds, health
/// reads it.
pub struct StatusBoard {
    database: Arc<DbHealth>,
    database_name: String,
    /// What the pollers publish.
    pollers: Arc<PollerBoard>,
    webhooks_enabled: Mutex<bool>,
    /// Per provider, in `Provider::ALL` order: what the status thread read
    /// from the database, and when.
    stored: Mutex<Vec<Option<(Instant, ProviderSummary)>>>,
    /// Counts the status thread's refreshes, so a waiter knows when one
    /// it asked for is done.
    refreshes: AtomicU64,
    refreshed: Condvar,
    /// Asks the status thread for a refresh (one pending at most).
    refresh: Sender<()>,
    requests: Receiver<()>,
    started: Instant,
}

impl StatusBoard {
    pub fn new(config: &Config, database: Arc<DbHealth>) -> StatusBoard {
        let (refresh, requests) = bounded(1);
        StatusBoard {
            database,
            database_name: config.database.url.masked().to_string(),
            pollers: Arc::new(PollerBoard::new(config)),
            webhooks_enabled: Mutex::new(config.webhooks.enabled),
            stored: Mutex::new(vec![None; Provider::ALL.len()]),
            refreshes: AtomicU64::new(0),
            refreshed: Condvar::new(),
            refresh,
            requests,
            started: Instant::now(),
        }
    }

    /// Where the pollers publish their state.
    pub fn pollers(&self) -> Arc<PollerBoard> {
        self.pollers.clone()
    }

    /// Starts over with a reloaded configuration whose polling changed:
    /// the pollers start again.
    pub fn reset(&self, config: &Config) {
        self.pollers.reset(config);
        *lock(&self.webhooks_enabled) = config.webhooks.enabled;
    }

    /// The status now. What the database holds is reused when read within
    /// the last second (by a poller or the status thread), else asked of
    /// the status thread and waited for at most `STORED_WAIT`; it is left
    /// out while the database is unavailable or does not answer in time.
    pub fn status(&self) -> Status {
        let database_problem = self.database.problem();
        let mut stored = self.fresh_stored();
        if stored.iter().any(Option::is_none) && database_problem.is_none() {
            self.wait_for_refresh();
            stored = self.fresh_stored();
        }
        Status {
            database_problem,
            database_name: self.database_name.clone(),
            webhooks_enabled: *lock(&self.webhooks_enabled),
            uptime: Some(self.started.elapsed()),
            activity: None,
            providers: Provider::ALL
                .into_iter()
                .zip(self.pollers.states())
                .zip(stored)
                .map(|((provider, poller), stored)| ProviderStatus {
                    provider,
                    poller,
                    stored,
                })
                .collect(),
        }
    }

    /// What the database held, per provider, where read within the last
    /// second: the newer of the status thread's read and the poller's.
    fn fresh_stored(&self) -> Vec<Option<ProviderSummary>> {
        let by_pollers = self.pollers.read();
        lock(&self.stored)
            .iter()
            .zip(by_pollers)
            .map(|(own, poller)| {
                let newest = match (own, poller) {
                    (Some(own), Some(poller)) if poller.0 > own.0 => Some(poller),
                    (Some(own), _) => Some(own.clone()),
                    (None, poller) => poller,
                };
                newest
                    .filter(|(at, _)| at.elapsed() < STORED_FRESH_FOR)
                    .map(|(_, stored)| stored)
            })
            .collect()
    }

    /// Asks the status thread for a refresh and waits for one to finish,
    /// at most `STORED_WAIT`.
    fn wait_for_refresh(&self) {
        let seen = self.refreshes.load(Ordering::SeqCst);
        // A full channel means a refresh is already asked for.
        let _ = self.refresh.try_send(());
        let deadline = Instant::now() + STORED_WAIT;
        let mut stored = lock(&self.stored);
        while self.refreshes.load(Ordering::SeqCst) == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::debug!("health: the database did not answer in time for coverage");
                return;
            }
            stored = self
                .refreshed
                .wait_timeout(stored, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Reads what the database holds for every provider (the status
    /// thread's work), and wakes whoever waits for it.
    fn refresh_from(&self, reader: &mut Reader) {
        let mut read = Vec::new();
        for provider in Provider::ALL {
            match reader.read(|r| ProviderSummary::read(r, provider, HEALTH_RUNS)) {
                Ok(stored) => read.push((provider, stored)),
                Err(error) => {
                    log::debug!("health: cannot read webhook coverage: {error}");
                    break;
                }
            }
        }
        let mut stored = lock(&self.stored);
        for (provider, entry) in read {
            stored[provider.index()] = Some((Instant::now(), entry));
        }
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.refreshed.notify_all();
    }
}

/// The status thread: reads what the database holds when health asks.
pub struct StatusThread {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl StatusThread {
    /// Starts the thread, with `reader` as its connection.
    pub fn spawn(board: Arc<StatusBoard>, mut reader: Reader) -> std::io::Result<StatusThread> {
        let (stop, stopped) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("codex-status".to_string())
            .spawn(move || {
                loop {
                    select! {
                        recv(board.requests) -> _ => board.refresh_from(&mut reader),
                        recv(stopped) -> _ => break,
                        // Health does not ask while the database is
                        // unavailable; the connection is let go of then,
                        // so that only the writer holds a deleted file.
                        recv(board.database.lost()) -> _ => reader.disconnect(),
                    }
                }
            })?;
        Ok(StatusThread { stop, thread })
    }

    /// Stops the thread (after the read under way, if any) and waits.
    pub fn stop(self) -> std::thread::Result<()> {
        drop(self.stop);
        self.thread.join()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(dir: &std::path::Path) -> (Arc<StatusBoard>, crate::store::WriterHandle) {
        let mut config = Config::default();
        config.database.url = crate::config::DatabaseUrl::Sqlite(dir.join("codex.db"));
        let first = crate::store::connect_at_start(&config.database.url).unwrap();
        let writer = crate::store::spawn_writer(first, config.database.url.clone(), 30).unwrap();
        let board = Arc::new(StatusBoard::new(&config, writer.client.health_handle()));
        (board, writer)
    }

    #[test]
    fn health_waits_for_the_database_no_longer_than_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (board, writer) = board(dir.path());
        // No status thread answers: health goes on without what the
        // database holds, after STORED_WAIT.
        let started = Instant::now();
        let status = board.status();
        let waited = started.elapsed();
        assert!(
            waited >= STORED_WAIT && waited < STORED_WAIT * 3,
            "{waited:?}"
        );
        assert!(status.providers.iter().all(|p| p.stored.is_none()));
        assert_eq!(status.database_problem, None);
        drop(board);
        writer.join().unwrap();
    }

    #[test]
    fn the_status_thread_fills_in_what_the_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (board, writer) = board(dir.path());
        let reader = Reader::new(
            &crate::config::DatabaseUrl::Sqlite(dir.path().join("codex.db")),
            writer.client.health_handle(),
        );
        let thread = StatusThread::spawn(board.clone(), reader).unwrap();
        let status = board.status();
        assert!(
            status
                .providers
                .iter()
                .all(|p| p.stored == Some(ProviderSummary::default())),
            "{status:?}"
        );
        // Read within the last second: reused, not read again.
        let refreshes = board.refreshes.load(Ordering::SeqCst);
        board.status();
        assert_eq!(board.refreshes.load(Ordering::SeqCst), refreshes);
        thread.stop().unwrap();
        drop(board);
        writer.join().unwrap();
    }
}
