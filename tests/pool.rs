//! The request workers: a pool that grows under load up to
//! `[server] threads` and shrinks back to two once idle (docs/http.md,
//! "Workers, and an idle Codex"). Workers are counted by their thread
//! names (`codex-http-N`) in /proc/PID/task.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    Backend, Codex, TestDb, request_workers, seed_body, thread_names, try_deliver, wait_until,
};

/// Workers kept however long nothing arrives.
const MIN_WORKERS: usize = 2;
/// Concurrent senders: more than `MIN_WORKERS` requests at once.
const SENDERS: usize = 16;

/// Runs `SENDERS` senders, each delivering its own tickets, until at least
/// `deliveries` are acknowledged; returns the most workers seen meanwhile.
/// Every answer must be a 2xx.
fn load(codex: &Codex, deliveries: usize) -> usize {
    let pid = codex.pid();
    let acked = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let mut peak = 0;
    std::thread::scope(|scope| {
        for sender in 0..SENDERS {
            let (acked, done, addr) = (&acked, &done, codex.addr);
            scope.spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    let id = (sender * 100_000 + n) as i64 + 1;
                    let minute = n % 60;
                    let body = seed_body(
                        "ticket.updated",
                        id,
                        2,
                        &format!("2026-01-01T00:{minute:02}:00Z"),
                    )
                    .to_string();
                    let response = try_deliver(addr, &body).expect("delivery");
                    assert!(
                        (200..300).contains(&response.status),
                        "answered {}",
                        response.status
                    );
                    acked.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            });
        }
        let reached = wait_until(Duration::from_secs(60), || {
            peak = peak.max(request_workers(pid));
            acked.load(Ordering::SeqCst) >= deliveries
        });
        done.store(true, Ordering::SeqCst);
        assert!(
            reached,
            "only {} deliveries acknowledged",
            acked.load(Ordering::SeqCst)
        );
    });
    peak
}

#[test]
fn the_pool_grows_under_load_and_shrinks_back_when_idle() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "[server]\nthreads = 64");
    let pid = codex.pid();
    assert!(
        wait_until(Duration::from_secs(5), || request_workers(pid)
            == MIN_WORKERS),
        "an idle Codex runs {} workers",
        request_workers(pid)
    );
    let peak = load(&codex, 500);
    assert!(
        peak > MIN_WORKERS,
        "{SENDERS} senders at once were served by {peak} workers"
    );
    // Workers idle for 20 s end, down to the minimum.
    assert!(
        wait_until(Duration::from_secs(60), || request_workers(pid)
            == MIN_WORKERS),
        "{} workers a minute after the load: {:?}",
        request_workers(pid),
        thread_names(pid)
    );
    let threads = thread_names(pid);
    assert!(threads.len() <= 16, "idle with {threads:?}");
    // And it grows again.
    assert!(load(&codex, 200) > MIN_WORKERS);
}

#[test]
fn the_pool_never_exceeds_server_threads() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "[server]\nthreads = 3");
    let peak = load(&codex, 300);
    assert!(peak <= 3, "{peak} workers with [server] threads = 3");
}
