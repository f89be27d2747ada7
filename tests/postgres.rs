//! PostgreSQL as a shared backend: several Codex processes on one
//! database, an outage and recovery, leadership for polling, and errors
//! that name the problem without the password.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_freshservice::FakeFreshservice;
use common::pg_cluster::{PASSWORD, PgCluster};
use common::{Backend, Codex, SECRET, TestDb, run_codex, try_deliver, wait_until};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::json;

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn two_processes_write_the_same_tickets_to_the_newest_state() {
    let backend = Backend::postgres();
    let db = TestDb::new(&backend);
    let a = Codex::start(&db, "[server]\nthreads = 16\n");
    let b = Codex::start(&db, "[server]\nthreads = 16\n");
    let addrs = [a.addr, b.addr];
    // Six versions of each of 40 tickets, delivered in a random order by 16
    // senders that alternate between the two processes.
    let mut deliveries = Vec::new();
    for ticket in 1..=40i64 {
        for version in 0..6 {
            deliveries.push((ticket, version));
        }
    }
    let mut runner = TestRunner::new(ProptestConfig::default());
    let order = Just(deliveries)
        .prop_shuffle()
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let queue = Arc::new(Mutex::new(order));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..16)
        .map(|n| {
            let (queue, failures) = (queue.clone(), failures.clone());
            std::thread::spawn(move || {
                loop {
                    let Some((ticket, version)) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let status_id = [2, 3, 4, 5, 8, 9][version as usize];
                    let body = json!({
                        "event": "ticket.updated",
                        "ticket_id": ticket,
                        "subject": format!("ticket {ticket} version {version}"),
                        "status_id": status_id,
                        "responder_id": 100 + version,
                        "updated_at": format!("2024-07-01T00:00:{:02}Z", version),
                    });
                    match try_deliver(addrs[(n + version as usize) % 2], &body.to_string()) {
                        Ok(response) if response.status == 200 || response.status == 201 => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("{ticket}/{version}: {other:?}")),
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    for ticket in 1..=40 {
        let stored = db.ticket(ticket).unwrap();
        assert_eq!(
            stored["subject"].as_deref(),
            Some(format!("ticket {ticket} version 5").as_str())
        );
        assert_eq!(stored["status"].as_deref(), Some("waiting_customer"));
        assert_eq!(stored["responder_id"].as_deref(), Some("105"));
        assert_eq!(
            stored["last_updated_at"].as_deref(),
            Some("2024-07-01T00:00:05Z")
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM ticket_details"), 40);
    assert_eq!(db.count("SELECT count(*) FROM webhook_events"), 240);
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn outage_refuses_what_it_cannot_store_and_recovers_within_5_seconds() {
    let cluster = PgCluster::start();
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("codex.conf");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = 127.0.0.1:0\nthreads = 8\n[database]\nconnection_string = {url}\n\
             [webhooks]\nenabled = true\nsecret = {}\nrate_limit_per_minute = 1000000\n[scheduler]\nsync_tickets_enabled = false\n",
            common::SECRET
        ),
    )
    .unwrap();
    let codex = Codex::start_config(&conf, &[]);
    let addr = codex.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(1));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, next, acknowledged, statuses, problems) = (
                stop.clone(),
                next.clone(),
                acknowledged.clone(),
                statuses.clone(),
                problems.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    let body = common::seed_body("ticket.created", id, 2, "2024-08-01T00:00:00Z")
                        .to_string();
                    match try_deliver(addr, &body) {
                        Ok(response) => {
                            *statuses.lock().unwrap().entry(response.status).or_default() += 1;
                            match response.status {
                                201 => acknowledged.lock().unwrap().push(id),
                                503 if response.header("Retry-After").is_some() => {}
                                other => problems.lock().unwrap().push(format!("{id}: {other}")),
                            }
                        }
                        Err(error) => problems.lock().unwrap().push(format!("{id}: {error}")),
                    }
                    // time is what is tested here: a steady stream of
                    // deliveries through the outage, each sender pausing
                    // 2 ms between them as a PSA would, not a spin.
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(30), || acknowledged
        .lock()
        .unwrap()
        .len()
        >= 200));

    cluster.stop_server();
    assert!(
        wait_until(Duration::from_secs(10), || codex
            .get("/webhooks/health")
            .json()["database"]
            == "unavailable"),
        "health did not notice the outage"
    );
    assert_eq!(codex.get("/webhooks/health").json()["status"], "degraded");
    assert!(wait_until(Duration::from_secs(10), || statuses
        .lock()
        .unwrap()
        .get(&503)
        .copied()
        .unwrap_or(0)
        >= 20));

    let acknowledged_before = acknowledged.lock().unwrap().len();
    cluster.start_server();
    let restarted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || acknowledged
            .lock()
            .unwrap()
            .len()
            > acknowledged_before),
        "no delivery acknowledged within 5 s of PostgreSQL coming back"
    );
    let recovery = restarted.elapsed();
    assert!(wait_until(Duration::from_secs(5), || codex
        .get("/webhooks/health")
        .json()["database"]
        == "ok"));
    assert!(wait_until(Duration::from_secs(30), || acknowledged
        .lock()
        .unwrap()
        .len()
        > acknowledged_before + 100));
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.join().unwrap();
    }
    assert!(
        problems.lock().unwrap().is_empty(),
        "{:?}",
        problems.lock().unwrap()
    );

    // Every acknowledged delivery is stored.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let stored: std::collections::HashSet<i64> = client
        .query("SELECT external_id FROM ticket_details", &[])
        .unwrap()
        .iter()
        .map(|row| row.get::<_, i64>(0))
        .collect();
    common::assert_all_stored(&stored, &acknowledged.lock().unwrap());
    eprintln!(
        "service resumed {recovery:?} after PostgreSQL restarted; statuses {:?}",
        statuses.lock().unwrap()
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn bad_credentials_and_hosts_are_named_without_the_password() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = "definitely-wrong-pw-77";
    let cases = [
        (
            format!(
                "postgresql://postgres:{wrong}@127.0.0.1:{}/postgres",
                cluster.port
            ),
            "password authentication failed",
        ),
        (
            format!("postgresql://postgres:{wrong}@127.0.0.1:1/postgres"),
            "cannot connect",
        ),
    ];
    for (url, expected) in cases {
        let conf = dir.path().join("codex.conf");
        std::fs::write(&conf, format!("[database]\nconnection_string = {url}\n")).unwrap();
        // serve starts anyway (the database may come later), answers 503,
        // and names the problem in health and the log, password masked.
        let serve_conf = dir.path().join("serve.conf");
        std::fs::write(
            &serve_conf,
            format!(
                "[server]\nbind = 127.0.0.1:0\n[database]\nconnection_string = {url}\n\
                 [webhooks]\nenabled = true\nsecret = {}\n",
                common::SECRET
            ),
        )
        .unwrap();
        let codex = Codex::start_config(&serve_conf, &[]);
        let health = codex.get("/webhooks/health").json();
        assert_eq!(health["database"], "unavailable", "{health}");
        let error = health["database_error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{health}");
        assert!(
            !health.to_string().contains(wrong),
            "health printed the password"
        );
        let refused = codex.deliver_json(&common::seed_body(
            "ticket.created",
            1,
            2,
            "2024-08-01T00:00:00Z",
        ));
        assert_eq!(refused.status, 503);
        assert!(codex.logs().contains(expected), "{}", codex.logs());
        assert!(!codex.logs().contains(wrong), "serve logged the password");
        drop(codex);
        for command in ["check-config", "migrate"] {
            let (status, out, err) = run_codex(&[command, "--config", conf.to_str().unwrap()], &[]);
            assert!(!status.success(), "{command} succeeded with {url}");
            assert!(err.contains(expected), "{command}: {err}");
            assert!(
                !err.contains(wrong) && !out.contains(wrong),
                "{command} printed the password: {out}{err}"
            );
        }
    }
    // With the right password it works, and check-config still masks it.
    let conf = dir.path().join("good.conf");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = 127.0.0.1:0\n[webhooks]\nenabled = true\nsecret = {SECRET}\n\
             [database]\nconnection_string = {}\n",
            cluster.url()
        ),
    )
    .unwrap();
    let (status, out, err) = run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    assert!(out.contains("postgresql://postgres:***@127.0.0.1"), "{out}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn only_one_of_two_instances_polls_and_the_other_takes_over() {
    let backend = Backend::postgres();
    let db = TestDb::new(&backend);
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 5, 2);
    let polling = format!(
        "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1s\nticket_sync_interval_with_webhooks = 1s\n",
        fake.config()
    );
    let mut instances = [Codex::start(&db, &polling), Codex::start(&db, &polling)];
    let role = |codex: &Codex| {
        codex.get("/webhooks/health").json()["polling"]["role"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(wait_until(Duration::from_secs(20), || {
        let roles = [role(&instances[0]), role(&instances[1])];
        roles.contains(&"leader".to_string()) && roles.contains(&"standby".to_string())
    }));
    // Over a few seconds the runs are one poller's worth: about one a second.
    // time is what is tested here: the number of runs in a five-second window.
    let start = db.count("SELECT count(*) FROM sync_runs");
    std::thread::sleep(Duration::from_secs(5));
    let runs = db.count("SELECT count(*) FROM sync_runs") - start;
    assert!(
        (2..=7).contains(&runs),
        "{runs} runs in 5 s with a 1 s interval"
    );
    // The leader goes away; the other instance takes the lock.
    let leader = if role(&instances[0]) == "leader" {
        0
    } else {
        1
    };
    instances[leader].kill9();
    let follower = &instances[1 - leader];
    assert!(
        wait_until(Duration::from_secs(15), || role(follower) == "leader"),
        "the standby did not take over"
    );
    let before = db.count("SELECT count(*) FROM sync_runs");
    assert!(wait_until(Duration::from_secs(10), || db
        .count("SELECT count(*) FROM sync_runs")
        > before));
}
