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

/// How often each server process (one per connection) was asked to parse
/// each statement text, from the server's log: with
/// `log_min_duration_statement = 0` every parse, bind and execute of the
/// extended protocol is logged with its text, after a `pid|` prefix.
fn statement_phases(log: &str, phase: &str) -> HashMap<(String, String), usize> {
    let marker = format!("  {phase} ");
    let mut seen = HashMap::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once('|') else {
            continue;
        };
        let Some((_, statement)) = rest.split_once(&marker) else {
            continue;
        };
        // `s3: SELECT ...`, or `<unnamed>: SELECT ...`
        let Some((_, text)) = statement.split_once(": ") else {
            continue;
        };
        *seen.entry((pid.to_string(), text.to_string())).or_insert(0) += 1;
    }
    seen
}

/// Issue 22: a PostgreSQL connection prepares each statement once, and
/// after the server is killed with -9 and started again, the new
/// connections prepare theirs again (the kept ones died with the old).
#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn each_connection_prepares_each_statement_once_and_again_after_a_kill_9() {
    const TOKEN: &str = "Api7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0GaT";
    const ROUNDS: usize = 10;
    let cluster = PgCluster::start();
    let url = cluster.url();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute("ALTER SYSTEM SET log_min_duration_statement = 0")
        .unwrap();
    admin
        .batch_execute("ALTER SYSTEM SET log_line_prefix = '%p|'")
        .unwrap();
    admin.execute("SELECT pg_reload_conf()", &[]).unwrap();
    let data: String = admin.query_one("SHOW data_directory", &[]).unwrap().get(0);
    let server_log = std::path::Path::new(&data)
        .parent()
        .unwrap()
        .join("server.log");
    drop(admin);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let value: String = client
                .query_one("SHOW log_min_duration_statement", &[])
                .unwrap()
                .get(0);
            value == "0"
        }),
        "the server did not take the logging settings"
    );

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("codex.conf");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = 127.0.0.1:0\n[database]\nconnection_string = {url}\n\
             [webhooks]\nenabled = true\nsecret = {SECRET}\n[scheduler]\nsync_tickets_enabled = false\n\
             [api]\ntokens = {TOKEN}\n"
        ),
    )
    .unwrap();
    let codex = Codex::start_config(&conf, &[]);
    let bearer = format!("Bearer {TOKEN}");
    let read = |path: &str| {
        codex
            .request("GET", path, &[("Authorization", &bearer)], b"")
            .status
    };
    let deliver = |id: i64| {
        codex
            .deliver(
                &common::seed_body("ticket.created", id, 2, "2024-08-01T00:00:00Z").to_string(),
            )
            .status
    };
    let reads = |rounds: usize| {
        for _ in 0..rounds {
            assert_eq!(read("/api/tickets?limit=5"), 200);
            assert_eq!(read("/api/ticket/1"), 200);
        }
    };
    assert_eq!(deliver(1), 201);
    reads(ROUNDS);

    // Every connection parsed each statement once.
    let once = |log: &str| {
        let parsed = statement_phases(log, "parse");
        let twice: Vec<_> = parsed.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "parsed more than once: {twice:#?}");
        parsed
    };
    let before = std::fs::read_to_string(&server_log).unwrap();
    let parsed = once(&before);
    let listing = |((_, text), _): (&(String, String), &usize)| text.contains("ORDER BY");
    let executed = statement_phases(&before, "execute");
    let listing_parses = parsed.iter().filter(|e| listing(*e)).count();
    let listing_runs: usize = executed
        .iter()
        .filter(|e| listing(*e))
        .map(|(_, n)| n)
        .sum();
    assert!(
        listing_runs >= ROUNDS && listing_parses < listing_runs,
        "{listing_parses} parses for {listing_runs} runs"
    );

    // kill -9 every server process, then start it again.
    let pids = cluster.server_pids();
    cluster.signal_all("KILL");
    // Gone, and reaped: the postmaster refuses to start while its old
    // pid still names a process, even a zombie.
    assert!(wait_until(Duration::from_secs(10), || pids
        .iter()
        .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())));
    cluster.start_server();
    assert!(
        wait_until(Duration::from_secs(20), || read("/api/tickets?limit=5")
            == 200),
        "the read API did not come back after the restart"
    );
    assert!(
        wait_until(Duration::from_secs(20), || deliver(2) == 201),
        "the writer did not come back after the restart"
    );
    reads(ROUNDS);
    let after = std::fs::read_to_string(&server_log).unwrap();
    let parsed_after = once(&after[before.len()..]);
    assert!(
        parsed_after
            .keys()
            .any(|(_, text)| text.contains("ORDER BY")),
        "the new connections prepared the listing again"
    );
    assert!(
        !after.contains("does not exist") && !codex.logs().contains("does not exist"),
        "a statement kept from before the restart was used: {}",
        codex.logs()
    );
    // What the cache saved: each execution after a connection's first of
    // a statement would otherwise have been preceded by a parse, one round
    // trip each.
    let executed = statement_phases(&after, "execute");
    let parsed = statement_phases(&after, "parse");
    let mut connections: Vec<(String, usize, usize)> = Vec::new();
    for ((pid, text), runs) in &executed {
        let parses = parsed
            .get(&(pid.clone(), text.clone()))
            .copied()
            .unwrap_or(0);
        match connections.iter_mut().find(|(p, _, _)| p == pid) {
            Some(entry) => {
                entry.1 += runs;
                entry.2 += parses;
            }
            None => connections.push((pid.clone(), *runs, parses)),
        }
    }
    for (pid, runs, parses) in &connections {
        eprintln!("connection {pid}: {runs} executions, {parses} parses");
    }
}
