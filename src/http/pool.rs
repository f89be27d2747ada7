//! The request workers: an elastic pool that grows under load up to
//! `[server] threads` and shrinks back when idle, so that an idle appliance
//! keeps a couple of sleeping threads rather than dozens.
//!
//! A worker that takes a request while no other worker is waiting starts
//! one more (up to the limit), so a burst never waits for a worker to
//! finish; a worker that has waited `RETIRE_AFTER` without a request ends,
//! down to `MIN_WORKERS`. Idle workers sleep on the request queue itself:
//! nothing wakes them but a request, their retirement deadline, or a stop.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use tiny_http::Server;

use super::routes::{self, AppState};

/// Workers kept however long nothing arrives.
const MIN_WORKERS: usize = 2;
/// How long a worker above `MIN_WORKERS` waits for a request before it ends.
const RETIRE_AFTER: Duration = Duration::from_secs(20);
/// How often a worker looks at the queue once the server is stopping (a
/// stop also wakes every waiting worker at once).
const STOP_POLL: Duration = Duration::from_millis(50);
/// Each worker's stack: handlers keep little on it.
const STACK_SIZE: usize = 256 * 1024;

/// The pool: what every worker shares.
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    server: Arc<Server>,
    state: Arc<AppState>,
    fatal: Sender<String>,
    stopping: AtomicBool,
    /// The most workers at once (`[server] threads`).
    max: usize,
    /// Workers alive.
    live: AtomicUsize,
    /// Workers waiting for a request.
    idle: AtomicUsize,
    /// Workers started since the pool began, for thread names.
    started: AtomicUsize,
    /// Every worker's handle, the finished ones reaped as new ones start.
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts the pool with its first workers; it grows up to `max`.
    pub fn start(
        server: Arc<Server>,
        state: Arc<AppState>,
        max: usize,
        fatal: Sender<String>,
    ) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            server,
            state,
            fatal,
            stopping: AtomicBool::new(false),
            max: max.max(1),
            live: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            handles: Mutex::new(Vec::new()),
        });
        for _ in 0..MIN_WORKERS.min(shared.max) {
            if !Shared::grow(&shared)? {
                break;
            }
        }
        Ok(Pool { shared })
    }

    /// Stops the workers once nothing is queued, and waits for them; the
    /// first panic of a worker is returned.
    pub fn stop(self) -> std::thread::Result<()> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes every worker waiting for a request; one that is busy sees
        // `stopping` when it next looks at the queue.
        for _ in 0..self.shared.live.load(Ordering::SeqCst) {
            self.shared.server.unblock();
        }
        let mut result = Ok(());
        loop {
            let handles = std::mem::take(&mut *lock(&self.shared.handles));
            if handles.is_empty() {
                break;
            }
            for handle in handles {
                if let Err(panic) = handle.join() {
                    if result.is_ok() {
                        result = Err(panic);
                    }
                }
            }
        }
        result
    }
}

impl Shared {
    /// Starts one more worker unless the pool is full; false if full.
    fn grow(shared: &Arc<Shared>) -> std::io::Result<bool> {
        let reserved = shared
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| {
                (live < shared.max).then_some(live + 1)
            })
            .is_ok();
        if !reserved {
            return Ok(false);
        }
        // Counted as idle from the start, so that a burst does not start
        // a worker per request while this one is being created.
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let n = shared.started.fetch_add(1, Ordering::Relaxed);
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("codex-http-{n}"))
            .stack_size(STACK_SIZE)
            .spawn(move || worker.work());
        match spawned {
            Ok(handle) => {
                let mut handles = lock(&shared.handles);
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
                Ok(true)
            }
            Err(error) => {
                shared.idle.fetch_sub(1, Ordering::SeqCst);
                shared.live.fetch_sub(1, Ordering::SeqCst);
                Err(error)
            }
        }
    }

    /// One worker: answers requests until it retires or the server stops.
    /// It is counted in `live` and `idle` by whoever started it.
    fn work(self: Arc<Shared>) {
        loop {
            let stopping = self.stopping.load(Ordering::SeqCst);
            // After `stopping`, what is still queued gets its answer.
            if stopping && self.server.queued_requests() == 0 {
                break;
            }
            let wait = if stopping { STOP_POLL } else { RETIRE_AFTER };
            let request = match self.server.recv_timeout(wait) {
                Ok(Some(request)) => request,
                Ok(None) => {
                    if !self.stopping.load(Ordering::SeqCst) && self.retire() {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    let _ = self.fatal.send(format!("the HTTP server failed: {error}"));
                    break;
                }
            };
            // The last idle worker took a request: the next one would wait.
            if self.idle.fetch_sub(1, Ordering::SeqCst) == 1 && !stopping {
                let grown = Shared::grow(&self);
                if let Err(error) = grown {
                    log::warn!("cannot start another request worker: {error}");
                }
            }
            // A bug in one request's handling must not take the worker
            // down; tiny_http answers a request dropped by a panic with a
            // 500.
            if catch_unwind(AssertUnwindSafe(|| routes::handle(&self.state, request))).is_err() {
                log::error!("a request handler panicked; the request was answered 500");
            }
            self.idle.fetch_add(1, Ordering::SeqCst);
        }
        self.idle.fetch_sub(1, Ordering::SeqCst);
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Ends this idle worker unless the pool is at its minimum; true if it
    /// ended (it is no longer counted).
    fn retire(&self) -> bool {
        let retired = self
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| {
                (live > MIN_WORKERS).then(|| live - 1)
            })
            .is_ok();
        if retired {
            self.idle.fetch_sub(1, Ordering::SeqCst);
        }
        retired
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
