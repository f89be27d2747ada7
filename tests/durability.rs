//! A 2xx means the event is on disk: neither kill -9 nor SIGTERM loses an
//! acknowledged delivery.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Backend, Codex, TestDb, seed_body, try_deliver, wait_until};

for_each_backend!(
    kill_9_loses_no_acknowledged_delivery,
    sigterm_finishes_in_flight_and_exits_0
);

/// Senders posting distinct tickets until stopped, recording which were
/// acknowledged with a 2xx.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    acknowledged: Arc<Mutex<Vec<i64>>>,
}

impl Load {
    fn start(addr: SocketAddr, senders: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicI64::new(1));
        let handles = (0..senders)
            .map(|_| {
                let (stop, acknowledged, next) = (stop.clone(), acknowledged.clone(), next.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let id = next.fetch_add(1, Ordering::SeqCst);
                        let body =
                            seed_body("ticket.created", id, 2, "2024-05-01T00:00:00Z").to_string();
                        // A refused or reset connection is simply not an acknowledgement.
                        if let Ok(response) = try_deliver(addr, &body) {
                            if response.status == 201 {
                                acknowledged.lock().unwrap().push(id);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            handles,
            acknowledged,
        }
    }

    fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles {
            handle.join().expect("sender thread");
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

fn assert_all_stored(db: &TestDb, acknowledged: &[i64]) {
    let stored: HashSet<i64> = db
        .rows("SELECT external_id FROM ticket_details")
        .into_iter()
        .filter_map(|row| row[0].as_deref().and_then(|id| id.parse().ok()))
        .collect();
    common::assert_all_stored(&stored, acknowledged);
}

fn kill_9_loses_no_acknowledged_delivery(backend: Backend) {
    let db = TestDb::new(&backend);
    let mut codex = Codex::start(&db, "[server]\nthreads = 16\n");
    let load = Load::start(codex.addr, 16);
    assert!(
        wait_until(Duration::from_secs(60), || load.acknowledged_count() >= 500),
        "deliveries were not acknowledged"
    );
    // Killed while deliveries are in flight.
    codex.kill9();
    let acknowledged = load.finish();
    assert!(acknowledged.len() >= 500);
    assert_all_stored(&db, &acknowledged);
    // The database opens cleanly afterwards.
    let restarted = Codex::start(&db, "");
    assert_eq!(restarted.get("/webhooks/health").json()["database"], "ok");
}

fn sigterm_finishes_in_flight_and_exits_0(backend: Backend) {
    let db = TestDb::new(&backend);
    let mut codex = Codex::start(&db, "[server]\nthreads = 16\n");
    let load = Load::start(codex.addr, 8);
    assert!(wait_until(Duration::from_secs(60), || load
        .acknowledged_count()
        >= 200));
    let status = codex.terminate();
    let acknowledged = load.finish();
    assert!(status.success(), "exit status {status:?}\n{}", codex.logs());
    assert_all_stored(&db, &acknowledged);
    assert!(codex.logs().contains("stopped"), "{}", codex.logs());
}
