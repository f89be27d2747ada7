//! The database's state as the writer publishes it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::StoreError;

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
    /// Turns of the writer's loop: it moves at least every tick unless the
    /// writer is stuck (the systemd watchdog follows it).
    turns: AtomicU64,
}

impl DbHealth {
    pub(super) fn new(first_error: Option<&StoreError>) -> DbHealth {
        DbHealth {
            unavailable: AtomicBool::new(first_error.is_some()),
            call_started: AtomicU64::new(0),
            epoch: Instant::now(),
            closing: AtomicBool::new(false),
            last_error: Mutex::new(first_error.map(ToString::to_string)),
            turns: AtomicU64::new(0),
        }
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

    /// True once the service is shutting down.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// How many turns the writer's loop has made; it changes at least
    /// every half second while the writer makes progress.
    pub fn turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }

    pub(super) fn turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn begin_call(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.call_started.store(now, Ordering::Relaxed);
    }

    pub(super) fn end_call(&self) {
        self.call_started.store(0, Ordering::Relaxed);
    }

    pub(super) fn set(&self, result: Result<(), &StoreError>) {
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
