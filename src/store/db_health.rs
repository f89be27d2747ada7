//! The database's state as the writer publishes it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::error::StoreError;

/// How long the writer may wait on the database for one call before
/// health reports it unavailable and handlers stop waiting for it.
const STALL_AFTER: Duration = Duration::from_millis(500);
/// How long a database found working is taken as working: someone asking
/// after that (health, a handler) has the writer check it again.
const CHECKED_FRESH_FOR: Duration = Duration::from_secs(1);

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
    /// Turns of the writer's loop: it moves with every batch and every
    /// check (the systemd watchdog follows it).
    turns: AtomicU64,
    /// When the writer last found the database working, in milliseconds
    /// since `epoch` plus one.
    checked: AtomicU64,
    /// Asks an idle writer to check the database now: an idle writer
    /// sleeps until work or this arrives, rather than polling.
    check: Sender<()>,
    check_asked: Receiver<()>,
    /// Told when the database becomes unavailable (see `lost`).
    lost: Sender<()>,
    lost_rx: Receiver<()>,
}

impl DbHealth {
    pub(super) fn new(first_error: Option<&StoreError>) -> DbHealth {
        let (check, check_asked) = bounded(1);
        let (lost, lost_rx) = bounded(1);
        DbHealth {
            unavailable: AtomicBool::new(first_error.is_some()),
            call_started: AtomicU64::new(0),
            epoch: Instant::now(),
            closing: AtomicBool::new(false),
            last_error: Mutex::new(first_error.map(ToString::to_string)),
            turns: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            check,
            check_asked,
            lost,
            lost_rx,
        }
    }

    /// Why the database cannot take writes now, if it cannot. When the
    /// database was last found working more than `CHECKED_FRESH_FOR` ago,
    /// the writer is asked to check it again, so that whoever asks next
    /// (health polls) learns of a database that went away while idle.
    pub fn problem(&self) -> Option<String> {
        if self
            .now_millis()
            .saturating_sub(self.checked.load(Ordering::Relaxed))
            > CHECKED_FRESH_FOR.as_millis() as u64
        {
            // A full channel means a check is already asked for.
            let _ = self.check.try_send(());
        }
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

    /// How many turns the writer's loop has made; it changes with every
    /// batch and every check of the database.
    pub fn turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }

    /// True while the writer waits on the database for a call (a writer
    /// waiting for work is not in one).
    pub fn in_call(&self) -> bool {
        self.call_started.load(Ordering::Relaxed) != 0
    }

    /// Where checks of the database are asked for (see `problem`).
    pub(super) fn check_asked(&self) -> &Receiver<()> {
        &self.check_asked
    }

    /// Receives when the database becomes unavailable (at most one
    /// message waits), for the one thread that must let go of its own
    /// connection then, without polling for it.
    pub fn lost(&self) -> &Receiver<()> {
        &self.lost_rx
    }

    fn now_millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn begin_call(&self) {
        self.call_started
            .store(self.now_millis(), Ordering::Relaxed);
    }

    pub(super) fn end_call(&self) {
        self.call_started.store(0, Ordering::Relaxed);
    }

    pub(super) fn set(&self, result: Result<(), &StoreError>) {
        let was_available = !self.unavailable.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.checked.store(self.now_millis(), Ordering::Relaxed);
                self.unavailable.store(false, Ordering::Relaxed);
                if !was_available {
                    log::info!("database available again");
                }
            }
            Err(error) => {
                if was_available {
                    let _ = self.lost.try_send(());
                }
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
