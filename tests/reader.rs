//! The read connections (the status thread's and the poller's, beside the
//! writer's) survive the database going away: after PostgreSQL is killed
//! with -9 and started again, health's coverage and the poller's runs come
//! back without a restart of Codex.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_freshservice::FakeFreshservice;
use common::pg_cluster::PgCluster;
use common::{Codex, SECRET, seed_body, wait_until};
use serde_json::Value;

/// How long the database stays away.
const OUTAGE: Duration = Duration::from_secs(3);
/// How long Codex may take to read again once the database is back.
const READS_RESUME_WITHIN: Duration = Duration::from_secs(15);

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn reads_resume_after_postgresql_is_killed_and_restarted() {
    let cluster = PgCluster::start();
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("codex.conf");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = 127.0.0.1:0\n[database]\nconnection_string = {}\n\
             [webhooks]\nenabled = true\nsecret = {SECRET}\n{}\
             [scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1s\n\
             ticket_sync_interval_with_webhooks = 1s\n",
            cluster.url(),
            fake.config()
        ),
    )
    .unwrap();
    let codex = Codex::start_config(&conf, &[]);
    let health = || codex.get("/webhooks/health").json();
    let by_webhook =
        |health: &Value| health["webhook_coverage"]["freshservice"]["changes_by_webhook"].clone();

    // Both readers work: the poller's (its runs) and the status thread's
    // (coverage from the journal).
    assert!(
        wait_until(Duration::from_secs(20), || health()["last_sync_outcome"]
            == "ok"),
        "{}",
        health()
    );
    let body = seed_body("ticket.updated", 1, 3, "2030-01-01T00:00:00Z");
    assert_eq!(codex.deliver_json(&body).status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || by_webhook(&health()) == 1),
        "{}",
        health()
    );

    let pids = cluster.server_pids();
    cluster.signal_all("KILL");
    assert!(wait_until(Duration::from_secs(5), || pids.iter().all(
        |p| {
            let status = format!("/proc/{p}/status");
            !Path::new(&status).exists()
                || std::fs::read_to_string(&status).is_ok_and(|s| s.contains("State:\tZ"))
        }
    )));
    assert!(
        wait_until(Duration::from_secs(10), || health()["database"]
            == "unavailable"),
        "{}",
        health()
    );
    // The outage lasts a while (longer than the reconnect backoff); health
    // answers promptly all along.
    let outage = Instant::now();
    while outage.elapsed() < OUTAGE {
        let asked = Instant::now();
        let during = health();
        assert!(asked.elapsed() < Duration::from_secs(1), "{during}");
        assert_eq!(during["database"], "unavailable", "{during}");
    }

    cluster.start_server();
    let restarted = Instant::now();
    let mut last = Value::Null;
    let runs_before = |h: &Value| h["polling"]["last_sync"]["id"].as_i64().unwrap_or(0);
    let run_seen = runs_before(&health());
    // A new delivery is journaled (the writer reconnected) and counted
    // (the status thread's reader reconnected); a new run succeeds (the
    // poller's reader and the writer both answer it).
    assert!(wait_until(READS_RESUME_WITHIN, || {
        let body = seed_body("ticket.updated", 2, 3, "2030-01-01T00:00:00Z");
        codex.deliver_json(&body).status == 200
    }));
    assert!(
        wait_until(READS_RESUME_WITHIN, || {
            last = health();
            by_webhook(&last) == 2
                && last["last_sync_outcome"] == "ok"
                && runs_before(&last) > run_seen
        }),
        "reads did not resume within {READS_RESUME_WITHIN:?} of the restart: {last}"
    );
    assert!(restarted.elapsed() < READS_RESUME_WITHIN * 2);
}
