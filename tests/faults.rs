//! The fault suite: every database failure ends with Codex acknowledging
//! deliveries again within 5 s of the database answering, by itself. Each
//! case runs senders and a health watcher through the fault and checks the
//! codes seen (503 and nothing else, each within 10 s), health (told the
//! truth, and answered within a second), the recovery time, that service
//! stays up afterwards, and that every acknowledged event is stored.
//!
//! Each case prints one row of the recovery table (`| case | ...`);
//! `scripts/faults.sh` collects them for BENCHMARKS.md.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::fake_freshservice::FakeFreshservice;
use common::fault_proxy::FaultProxy;
use common::pg_cluster::PgCluster;
use common::{
    Backend, Codex, SECRET, TestDb, run_codex, try_deliver, try_request, wait_until,
    wait_until_every,
};
use serde_json::{Value, json};

/// Longer than the writer's reconnect backoff maximum (1 s).
const OUTAGE: Duration = Duration::from_secs(3);
/// The bounds.
const RESUME_WITHIN: Duration = Duration::from_secs(5);
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const HEALTH_WITHIN: Duration = Duration::from_secs(1);

static NEXT_ID: AtomicI64 = AtomicI64::new(1);

/// One delivery as a sender saw it.
#[derive(Clone, Debug)]
struct Sent {
    id: i64,
    started: Instant,
    took: Duration,
    /// The status, or the transport error.
    status: Result<u16, String>,
}

/// Senders posting distinct tickets until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl Load {
    fn start(addr: SocketAddr, senders: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..senders)
            .map(|_| {
                let (stop, sent) = (stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
                        let body =
                            common::seed_body("ticket.created", id, 2, "2024-09-01T00:00:00Z")
                                .to_string();
                        let started = Instant::now();
                        let status = try_deliver(addr, &body).map(|r| r.status);
                        let failed = status != Ok(201);
                        sent.lock().unwrap().push(Sent {
                            id,
                            started,
                            took: started.elapsed(),
                            status,
                        });
                        // time is what is tested here: load paced like a PSA
                        // retrying through the fault, gentler while refused.
                        let pause = if failed { 50 } else { 5 };
                        std::thread::sleep(Duration::from_millis(pause));
                    }
                })
            })
            .collect();
        Load {
            stop,
            handles,
            sent,
        }
    }

    fn acked_after(&self, after: Instant) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.started >= after && s.status == Ok(201))
            .map(|s| s.started + s.took)
            .min()
    }

    fn acked_count(&self) -> usize {
        let sent = self.sent.lock().unwrap();
        sent.iter().filter(|s| s.status == Ok(201)).count()
    }

    fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles {
            handle.join().unwrap();
        }
        self.sent.lock().unwrap().clone()
    }
}

/// One health check: when, how long it took, what `database` said.
#[derive(Clone, Debug)]
struct Check {
    at: Instant,
    took: Duration,
    database: String,
    error: String,
}

/// Polls `/webhooks/health` every 100 ms.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
    checks: Arc<Mutex<Vec<Check>>>,
}

impl HealthWatch {
    fn start(addr: SocketAddr) -> HealthWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let checks = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, checks) = (stop.clone(), checks.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let answer = try_request(addr, "GET", "/webhooks/health", &[], b"");
                    let took = at.elapsed();
                    let (database, error) = match answer {
                        Ok(response) => {
                            let body = response.json();
                            (
                                body["database"].as_str().unwrap_or("?").to_string(),
                                body["database_error"].as_str().unwrap_or("").to_string(),
                            )
                        }
                        Err(e) => ("no answer".to_string(), e),
                    };
                    checks.lock().unwrap().push(Check {
                        at,
                        took,
                        database,
                        error,
                    });
                    // time is what is tested here: when health first said
                    // so, to within this 100 ms period.
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        HealthWatch {
            stop,
            handle,
            checks,
        }
    }

    fn first_after(&self, after: Instant, database: &str) -> Option<Check> {
        self.checks
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.at >= after && c.database == database)
            .cloned()
    }

    fn finish(self) -> Vec<Check> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
        self.checks.lock().unwrap().clone()
    }
}

/// What a fault came to, for the table and the assertions.
struct Outcome {
    outage: Duration,
    /// When health's first answer saying `unavailable` came (`None`: it
    /// said so from the start).
    noticed: Option<Duration>,
    resumed: Duration,
    codes: BTreeMap<String, usize>,
    acknowledged: Vec<i64>,
}

/// Runs senders through `inject` ... `OUTAGE` ... `heal` and checks what
/// every case must show. `error_names` is a word health's error must hold.
fn through_fault(
    codex: &Codex,
    senders: usize,
    outage: Duration,
    error_names: &str,
    inject: impl FnOnce(),
    heal: impl FnOnce(),
) -> Outcome {
    let load = Load::start(codex.addr, senders);
    let health = HealthWatch::start(codex.addr);
    assert!(
        wait_until(Duration::from_secs(30), || load.acked_count() >= 30),
        "no deliveries acknowledged before the fault:\n{}",
        codex.logs()
    );
    let fault = Instant::now();
    inject();
    let noticed = wait_until(Duration::from_secs(5), || {
        health.first_after(fault, "unavailable").is_some()
    });
    assert!(
        noticed,
        "health did not report the fault:\n{}",
        codex.logs()
    );
    let notice = health.first_after(fault, "unavailable").unwrap();
    assert!(
        notice.error.contains(error_names),
        "health's database_error {:?} does not mention {error_names:?}",
        notice.error
    );
    let remaining = outage.saturating_sub(fault.elapsed());
    // time is what is tested here: the fault lasts `outage`.
    std::thread::sleep(remaining);
    let healed = Instant::now();
    heal();
    assert!(
        wait_until(RESUME_WITHIN + Duration::from_secs(5), || load
            .acked_after(healed)
            .is_some()),
        "no delivery acknowledged after the fault ended:\n{}",
        codex.logs()
    );
    let resumed = load.acked_after(healed).unwrap() - healed;
    assert!(
        wait_until(Duration::from_secs(5), || health
            .first_after(healed, "ok")
            .is_some()),
        "health did not recover"
    );
    // Service holds: a while of deliveries after health came back.
    let steady = Instant::now();
    let acked = load.acked_count();
    assert!(wait_until(Duration::from_secs(20), || {
        load.acked_count() >= acked + 50 && steady.elapsed() >= Duration::from_secs(2)
    }));
    let sent = load.finish();
    let checks = health.finish();

    assert!(
        resumed <= RESUME_WITHIN,
        "deliveries were acknowledged again only {resumed:?} after the database answered"
    );
    let mut codes = BTreeMap::new();
    for s in sent
        .iter()
        .filter(|s| s.started >= fault && s.started < healed)
    {
        let code = match &s.status {
            Ok(code) => code.to_string(),
            Err(_) => "error".to_string(),
        };
        *codes.entry(code).or_insert(0) += 1;
    }
    let bad: Vec<_> = sent
        .iter()
        .filter(|s| !matches!(s.status, Ok(201 | 503)) || s.took > ANSWER_WITHIN)
        .collect();
    assert!(
        bad.is_empty(),
        "deliveries answered other than 201/503 within 10 s: {:?}",
        &bad[..bad.len().min(5)]
    );
    let flapped: Vec<_> = sent
        .iter()
        .filter(|s| s.started >= steady && s.status != Ok(201))
        .collect();
    assert!(
        flapped.is_empty(),
        "refused after recovery: {:?}",
        &flapped[..flapped.len().min(5)]
    );
    assert!(
        checks
            .iter()
            .filter(|c| c.at >= steady)
            .all(|c| c.database == "ok"),
        "health flapped after recovery"
    );
    let slow: Vec<_> = checks
        .iter()
        .filter(|c| c.took > HEALTH_WITHIN || c.database == "no answer")
        .collect();
    assert!(
        slow.is_empty(),
        "health answered late or not at all: {slow:?}"
    );
    Outcome {
        outage,
        noticed: Some(notice.at + notice.took - fault),
        resumed,
        codes,
        acknowledged: sent
            .iter()
            .filter(|s| s.status == Ok(201))
            .map(|s| s.id)
            .collect(),
    }
}

/// Prints a row of the recovery table.
fn table_row(case: &str, backend: &str, outcome: &Outcome) {
    let codes: Vec<String> = outcome
        .codes
        .iter()
        .map(|(code, n)| format!("{n}x{code}"))
        .collect();
    eprintln!(
        "| {case} | {backend} | {:.1} s | {} | {:.2} s | {} | {} | 0 |",
        outcome.outage.as_secs_f64(),
        outcome.noticed.map_or_else(
            || "at start".to_string(),
            |d| format!("{:.2} s", d.as_secs_f64())
        ),
        outcome.resumed.as_secs_f64(),
        codes.join(" "),
        outcome.acknowledged.len(),
    );
}

fn assert_stored(stored: &HashSet<i64>, acknowledged: &[i64]) {
    common::assert_all_stored(stored, acknowledged);
}

/// A configuration file for `url` in `dir`.
fn config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!(
        "codex-{}.conf",
        NEXT_ID.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(
        &path,
        format!(
            "[server]\nbind = 127.0.0.1:0\nthreads = 8\n[database]\nconnection_string = {url}\n\
             [webhooks]\nenabled = true\nsecret = {SECRET}\nrate_limit_per_minute = 10000000\n\
             [scheduler]\nsync_tickets_enabled = false\n{extra}"
        ),
    )
    .unwrap();
    path
}

// ---------------------------------------------------------------- PostgreSQL

fn pg_stored(url: &str) -> HashSet<i64> {
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    client
        .query("SELECT external_id FROM ticket_details", &[])
        .unwrap()
        .iter()
        .map(|row| row.get::<_, i64>(0))
        .collect()
}

/// A private cluster and a Codex on it (through `via`, if given).
fn pg_case(
    senders: usize,
    via_proxy: bool,
) -> (PgCluster, Option<FaultProxy>, tempfile::TempDir, Codex) {
    let cluster = PgCluster::start();
    let proxy = via_proxy.then(|| FaultProxy::start(([127, 0, 0, 1], cluster.port).into()));
    let url = match &proxy {
        Some(proxy) => cluster.url().replace(
            &format!(":{}/", cluster.port),
            &format!(":{}/", proxy.addr.port()),
        ),
        None => cluster.url(),
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = config(
        dir.path(),
        &url,
        &format!("[server]\nthreads = {}\n", senders.min(16)),
    );
    let codex = Codex::start_config(&conf, &[]);
    (cluster, proxy, dir, codex)
}

fn pg_fault(
    case: &str,
    senders: usize,
    inject: impl FnOnce(&PgCluster),
    heal: impl FnOnce(&PgCluster),
) {
    let (cluster, _, _dir, codex) = pg_case(senders, false);
    let outcome = through_fault(
        &codex,
        senders,
        OUTAGE,
        "",
        || inject(&cluster),
        || heal(&cluster),
    );
    assert_stored(&pg_stored(&cluster.url()), &outcome.acknowledged);
    table_row(case, "PostgreSQL", &outcome);
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_stopped_fast() {
    pg_fault(
        "pg_ctl stop -m fast, then start",
        4,
        |c| c.stop_server_mode("fast"),
        PgCluster::start_server,
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_stopped_immediate() {
    pg_fault(
        "pg_ctl stop -m immediate, then start",
        4,
        |c| c.stop_server_mode("immediate"),
        PgCluster::start_server,
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_killed_9() {
    pg_fault(
        "kill -9 every server process, then start",
        4,
        |c| {
            let pids = c.server_pids();
            c.signal_all("KILL");
            assert!(wait_until(Duration::from_secs(5), || pids.iter().all(
                |p| !Path::new(&format!("/proc/{p}/status")).exists()
                    || std::fs::read_to_string(format!("/proc/{p}/status"))
                        .is_ok_and(|s| s.contains("State:\tZ"))
            )));
        },
        PgCluster::start_server,
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_frozen_with_sigstop_under_80_senders() {
    pg_fault(
        "every server process SIGSTOPped (80 senders)",
        80,
        |c| c.signal_all("STOP"),
        |c| c.signal_all("CONT"),
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_path_black_holed() {
    let (cluster, proxy, _dir, codex) = pg_case(4, true);
    let proxy = proxy.unwrap();
    let outcome = through_fault(
        &codex,
        4,
        OUTAGE,
        "",
        || proxy.black_hole(),
        || proxy.forward(),
    );
    assert_stored(&pg_stored(&cluster.url()), &outcome.acknowledged);
    table_row("path black-holed (proxy)", "PostgreSQL", &outcome);
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_path_black_holed_past_the_call_deadline() {
    let (cluster, proxy, _dir, codex) = pg_case(4, true);
    let proxy = proxy.unwrap();
    // Longer than the client-side deadline of a call (6 s): the writer
    // gives the connection up rather than wait on it, and opens another.
    let outage = Duration::from_secs(8);
    let outcome = through_fault(
        &codex,
        4,
        outage,
        "",
        || proxy.black_hole(),
        || proxy.forward(),
    );
    assert!(
        codex.logs().contains("no answer from the database within"),
        "{}",
        codex.logs()
    );
    assert_stored(&pg_stored(&cluster.url()), &outcome.acknowledged);
    table_row(
        "path black-holed past the 6 s call deadline (proxy)",
        "PostgreSQL",
        &outcome,
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_path_reset() {
    let (cluster, proxy, _dir, codex) = pg_case(4, true);
    let proxy = proxy.unwrap();
    let outcome = through_fault(&codex, 4, OUTAGE, "", || proxy.reset(), || proxy.forward());
    assert_stored(&pg_stored(&cluster.url()), &outcome.acknowledged);
    table_row("every connection reset (proxy)", "PostgreSQL", &outcome);
}

/// Delivers until one is acknowledged; returns when that happened.
fn first_ack(addr: SocketAddr, within: Duration) -> Option<(Instant, i64)> {
    let mut acked = None;
    // One delivery every 50 ms, as a PSA retrying would.
    wait_until_every(within, Duration::from_millis(50), || {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let body = common::seed_body("ticket.created", id, 2, "2024-09-01T00:00:00Z").to_string();
        let started = Instant::now();
        match try_deliver(addr, &body) {
            Ok(r) if r.status == 201 => acked = Some((Instant::now(), id)),
            Ok(r) => {
                assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
                assert!(started.elapsed() < ANSWER_WITHIN);
            }
            Err(e) => panic!("delivery failed: {e}"),
        }
        acked.is_some()
    });
    acked
}

fn health_database(codex: &Codex) -> String {
    let started = Instant::now();
    let body = codex.get("/webhooks/health").json();
    assert!(started.elapsed() < HEALTH_WITHIN);
    body["database"].as_str().unwrap_or("?").to_string()
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_restarted_while_idle() {
    let (cluster, _, _dir, codex) = pg_case(4, false);
    let (_, before) = first_ack(codex.addr, Duration::from_secs(10)).expect("first delivery");
    let fault = Instant::now();
    cluster.stop_server_mode("fast");
    assert!(
        wait_until(Duration::from_secs(5), || health_database(&codex)
            == "unavailable"),
        "an idle Codex did not notice the database going away"
    );
    let noticed = fault.elapsed();
    // time is what is tested here: the database is down for OUTAGE.
    std::thread::sleep(OUTAGE.saturating_sub(fault.elapsed()));
    cluster.start_server();
    let healed = Instant::now();
    let (at, after) = first_ack(codex.addr, RESUME_WITHIN + Duration::from_secs(5))
        .expect("no delivery acknowledged after the restart");
    let resumed = at - healed;
    assert!(resumed <= RESUME_WITHIN, "resumed after {resumed:?}");
    assert_stored(&pg_stored(&cluster.url()), &[before, after]);
    table_row(
        "restarted while no deliveries arrive",
        "PostgreSQL",
        &Outcome {
            outage: OUTAGE,
            noticed: Some(noticed),
            resumed,
            codes: BTreeMap::new(),
            acknowledged: vec![before, after],
        },
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn postgres_down_when_serve_starts() {
    let cluster = PgCluster::start();
    cluster.stop_server_mode("fast");
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &cluster.url(), "");
    // Codex starts anyway, says why it cannot store, and refuses promptly.
    let codex = Codex::start_config(&conf, &[]);
    let health = codex.get("/webhooks/health").json();
    assert_eq!(health["database"], "unavailable", "{health}");
    assert_eq!(health["status"], "degraded");
    assert!(
        health["database_error"].as_str().is_some_and(
            |e| e.contains("cannot connect") && !e.contains(common::pg_cluster::PASSWORD)
        ),
        "{health}"
    );
    let started = Instant::now();
    let refused = codex.deliver_json(&common::seed_body(
        "ticket.created",
        1,
        2,
        "2024-09-01T00:00:00Z",
    ));
    assert_eq!(refused.status, 503);
    assert!(refused.header("Retry-After").is_some());
    assert!(started.elapsed() < ANSWER_WITHIN);
    // time is what is tested here: the outage lasts OUTAGE.
    std::thread::sleep(OUTAGE);
    cluster.start_server();
    let healed = Instant::now();
    let (at, id) = first_ack(codex.addr, RESUME_WITHIN + Duration::from_secs(5))
        .expect("Codex did not connect once the database came up");
    let resumed = at - healed;
    assert!(resumed <= RESUME_WITHIN, "resumed after {resumed:?}");
    assert_eq!(health_database(&codex), "ok");
    // The schema was created on that first connection.
    assert!(pg_stored(&cluster.url()).contains(&id));
    table_row(
        "down when serve starts",
        "PostgreSQL",
        &Outcome {
            outage: OUTAGE,
            noticed: None,
            resumed,
            codes: BTreeMap::from([("503".to_string(), 1)]),
            acknowledged: vec![id],
        },
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn sync_once_waits_for_a_database_that_comes_back() {
    let cluster = PgCluster::start();
    cluster.stop_server_mode("fast");
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 5, 2);
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &cluster.url(), &fake.config());
    let conf_arg = conf.to_str().unwrap().to_string();
    let sync =
        std::thread::spawn(move || run_codex(&["sync", "--once", "--config", &conf_arg], &[]));
    // time is what is tested here: the outage lasts OUTAGE.
    std::thread::sleep(OUTAGE);
    cluster.start_server();
    let (status, out, err) = sync.join().unwrap();
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(pg_stored(&cluster.url()).len(), 5, "{out}");
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn poller_resumes_after_an_outage() {
    let cluster = PgCluster::start();
    let fake = FakeFreshservice::start();
    fake.add_tickets(1, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let polling = format!(
        "{}[scheduler]\nsync_tickets_enabled = true\nticket_sync_interval = 1s\nticket_sync_interval_with_webhooks = 1s\n",
        fake.config()
    );
    let conf = config(dir.path(), &cluster.url(), &polling);
    let codex = Codex::start_config(&conf, &[]);
    let ok_runs = || {
        let mut client = ::postgres::Client::connect(&cluster.url(), ::postgres::NoTls).unwrap();
        client
            .query_one("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'", &[])
            .unwrap()
            .get::<_, i64>(0)
    };
    assert!(wait_until(Duration::from_secs(20), || ok_runs() >= 1));
    cluster.stop_server_mode("fast");
    // time is what is tested here: the outage lasts OUTAGE.
    std::thread::sleep(OUTAGE);
    cluster.start_server();
    let before = ok_runs();
    fake.add_tickets(10, 2, 2);
    assert!(
        wait_until(Duration::from_secs(15), || ok_runs() > before
            && pg_stored(&cluster.url()).contains(&11)),
        "the poller did not sync again after the outage:\n{}",
        codex.logs()
    );
}

// -------------------------------------------------------------------- SQLite

/// A tmpfs of its own (root only), unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size`; the tests that call this are ignored
    /// unless the build has `codex_mount_tests` (see build.rs), so failing
    /// to mount here is an error, not a skip.
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (this test needs root; unset CODEX_TEST_MOUNTS to skip it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn sqlite_stored(path: &Path) -> HashSet<i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT external_id FROM ticket_details")
        .unwrap();
    stmt.query_map([], |row| row.get::<_, i64>(0))
        .unwrap()
        .filter_map(Result::ok)
        .collect()
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite:///{}", path.display())
}

#[test]
#[cfg_attr(
    not(codex_mount_tests),
    ignore = "mounts a tmpfs (needs root): run scripts/test.sh as root, or set CODEX_TEST_MOUNTS=1"
)]
fn sqlite_disk_full_then_space_freed() {
    let tmpfs = Tmpfs::mount("24m");
    let db = tmpfs.path().join("codex.db");
    let conf = config(tmpfs.path(), &sqlite_url(&db), "");
    let codex = Codex::start_config(&conf, &[]);
    let filler = tmpfs.path().join("filler");
    let outcome = through_fault(
        &codex,
        4,
        OUTAGE,
        "full",
        || {
            use std::io::Write;
            let mut file = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 64 * 1024];
            while file.write_all(&chunk).is_ok() {}
            let _ = file.sync_all();
        },
        || std::fs::remove_file(&filler).unwrap(),
    );
    assert_stored(&sqlite_stored(&db), &outcome.acknowledged);
    table_row("disk full, then space freed (tmpfs)", "SQLite", &outcome);
}

#[test]
fn sqlite_locked_by_another_process() {
    let db = TestDb::new(&Backend::Sqlite);
    let path = PathBuf::from(db.url.strip_prefix("sqlite:///").unwrap());
    let codex = Codex::start(&db, "");
    let holder: Arc<Mutex<Option<rusqlite::Connection>>> = Arc::new(Mutex::new(None));
    let outcome = through_fault(
        &codex,
        4,
        OUTAGE,
        "not answered",
        || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            *holder.lock().unwrap() = Some(conn);
        },
        || {
            let conn = holder.lock().unwrap().take().unwrap();
            conn.execute_batch("ROLLBACK").unwrap();
        },
    );
    assert_stored(&sqlite_stored(&path), &outcome.acknowledged);
    table_row("write lock held by another process", "SQLite", &outcome);
}

/// Files under /proc/<pid>/fd that are `path`, deleted.
fn deleted_fds(pid: u32, path: &Path) -> Vec<PathBuf> {
    let wanted = format!("{} (deleted)", path.display());
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|fd| std::fs::read_link(fd).is_ok_and(|t| t.to_string_lossy() == wanted))
        .collect()
}

#[test]
fn sqlite_file_deleted_under_load_is_refused_then_restored() {
    let db = TestDb::new(&Backend::Sqlite);
    let path = PathBuf::from(db.url.strip_prefix("sqlite:///").unwrap());
    let codex = Codex::start(&db, "");
    let load = Load::start(codex.addr, 4);
    assert!(wait_until(Duration::from_secs(30), || load.acked_count() >= 50));
    std::fs::remove_file(&path).unwrap();
    let deleted = Instant::now();
    // Refused from the next commit on, and said so in health and the log.
    assert!(wait_until(Duration::from_secs(5), || {
        let health = codex.get("/webhooks/health").json();
        health["database"] == "unavailable"
            && health["database_error"]
                .as_str()
                .is_some_and(|e| e.contains("was deleted"))
    }));
    let noticed = deleted.elapsed();
    assert!(codex.logs().contains("was deleted while Codex had it open"));
    // Nothing recreated the file behind the operator's back.
    // time is what is tested here: two seconds span at least two of the
    // writer's reconnect attempts (its backoff is at most 1 s), and none
    // may create a new file.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !path.exists(),
        "Codex started an empty database in place of the deleted one"
    );
    // The operator copies the file back from /proc, as docs/database-failures.md says.
    assert!(wait_until(Duration::from_secs(10), || deleted_fds(
        codex.pid(),
        &path
    )
    .len()
        == 1));
    let kept = deleted_fds(codex.pid(), &path).pop().unwrap();
    std::fs::copy(&kept, &path).unwrap();
    let restored = Instant::now();
    assert!(
        wait_until(RESUME_WITHIN, || load.acked_after(restored).is_some()),
        "not resumed after the file was restored:\n{}",
        codex.logs()
    );
    let sent = load.finish();
    let after_delete: Vec<_> = sent
        .iter()
        .filter(|s| s.started >= deleted && s.started < restored && s.status == Ok(201))
        .collect();
    assert!(
        after_delete.is_empty(),
        "acknowledged into the deleted file: {after_delete:?}"
    );
    let acknowledged: Vec<i64> = sent
        .iter()
        .filter(|s| s.status == Ok(201))
        .map(|s| s.id)
        .collect();
    assert_stored(&sqlite_stored(&path), &acknowledged);
    let mut codes = BTreeMap::new();
    for s in sent
        .iter()
        .filter(|s| s.started >= deleted && s.started < restored)
    {
        *codes
            .entry(format!("{:?}", s.status.clone().unwrap_or(0)))
            .or_insert(0) += 1;
    }
    assert!(codes.keys().all(|c| c == "503"), "{codes:?}");
    table_row(
        "file deleted, copied back from /proc",
        "SQLite",
        &Outcome {
            outage: restored - deleted,
            noticed: Some(noticed),
            resumed: load_resumed(&sent, restored),
            codes,
            acknowledged,
        },
    );
}

fn load_resumed(sent: &[Sent], after: Instant) -> Duration {
    sent.iter()
        .filter(|s| s.started >= after && s.status == Ok(201))
        .map(|s| s.started + s.took - after)
        .min()
        .unwrap_or_default()
}

#[test]
fn sqlite_file_replaced_is_refused_and_not_silently_restarted() {
    let db = TestDb::new(&Backend::Sqlite);
    let path = PathBuf::from(db.url.strip_prefix("sqlite:///").unwrap());
    let mut codex = Codex::start(&db, "");
    let first = codex.deliver_json(&common::seed_body(
        "ticket.created",
        1,
        2,
        "2024-09-01T00:00:00Z",
    ));
    assert_eq!(first.status, 201);
    // Another database (a fresh Codex one) is moved over it.
    let other = db.dir.path().join("other.db");
    let (status, _, err) = run_codex(
        &[
            "migrate",
            "--config",
            config(db.dir.path(), &sqlite_url(&other), "")
                .to_str()
                .unwrap(),
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    std::fs::rename(&other, &path).unwrap();
    let refused = codex.deliver_json(&common::seed_body(
        "ticket.created",
        2,
        2,
        "2024-09-01T00:00:00Z",
    ));
    assert_eq!(refused.status, 503);
    let health = codex.get("/webhooks/health").json();
    assert!(
        health["database_error"]
            .as_str()
            .is_some_and(|e| e.contains("replaced") || e.contains("not the database Codex created")),
        "{health}"
    );
    codex.terminate();
    // A restart refuses it, naming the identity file and the way out.
    let (status, _, err) = run_codex(
        &["serve", "--config", codex.config_path.to_str().unwrap()],
        &[],
    );
    assert!(!status.success());
    assert!(
        err.contains("codex.db.identity") && err.contains("--adopt"),
        "{err}"
    );
    // So does a missing file: no empty database where one existed.
    std::fs::remove_file(&path).unwrap();
    let (status, _, err) = run_codex(
        &["serve", "--config", codex.config_path.to_str().unwrap()],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("is missing"), "{err}");
    assert!(!path.exists());
    // Starting fresh on purpose.
    let (status, _, err) = run_codex(
        &[
            "migrate",
            "--adopt",
            "--config",
            codex.config_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    let fresh = Codex::start_config(&codex.config_path, &[]);
    let created = fresh.deliver_json(&common::seed_body(
        "ticket.created",
        3,
        2,
        "2024-09-01T00:00:00Z",
    ));
    assert_eq!(created.status, 201);
}

#[test]
#[cfg_attr(
    not(codex_mount_tests),
    ignore = "mounts a tmpfs (needs root): run scripts/test.sh as root, or set CODEX_TEST_MOUNTS=1"
)]
fn sqlite_read_only_filesystem_at_start_then_writable() {
    let tmpfs = Tmpfs::mount("16m");
    let db = tmpfs.path().join("codex.db");
    let conf = config(tmpfs.path(), &sqlite_url(&db), "");
    let mut codex = Codex::start_config(&conf, &[]);
    let (_, before) = first_ack(codex.addr, Duration::from_secs(10)).unwrap();
    codex.terminate();
    // Linux refuses to remount a filesystem read-only while a process
    // holds a file on it open for writing, so the filesystem turns
    // read-only between runs, and writable again while Codex runs.
    tmpfs.remount("ro");
    let codex = Codex::start_config(&conf, &[]);
    let health = codex.get("/webhooks/health").json();
    assert_eq!(health["database"], "unavailable", "{health}");
    let started = Instant::now();
    let refused = codex.deliver_json(&common::seed_body(
        "ticket.created",
        1,
        2,
        "2024-09-01T00:00:00Z",
    ));
    assert_eq!(refused.status, 503);
    assert!(started.elapsed() < ANSWER_WITHIN);
    // time is what is tested here: the outage lasts OUTAGE.
    std::thread::sleep(OUTAGE);
    tmpfs.remount("rw");
    let healed = Instant::now();
    let (at, after) = first_ack(codex.addr, RESUME_WITHIN + Duration::from_secs(5))
        .expect("not resumed once the filesystem was writable");
    let resumed = at - healed;
    assert!(resumed <= RESUME_WITHIN, "resumed after {resumed:?}");
    drop(codex);
    assert_stored(&sqlite_stored(&db), &[before, after]);
    table_row(
        "read-only filesystem at start, then writable",
        "SQLite",
        &Outcome {
            outage: OUTAGE,
            noticed: None,
            resumed,
            codes: BTreeMap::from([("503".to_string(), 1)]),
            acknowledged: vec![before, after],
        },
    );
}

// ---------------------------------------------------------------- NUL bytes

for_each_backend!(nul_in_every_field_is_journaled_and_answered_4xx);

/// The journal's newest row: its body as hex, and its outcome.
fn newest_journal(db: &TestDb) -> (String, String) {
    let hex = if db.is_postgres() {
        "encode(body, 'hex')"
    } else {
        "lower(hex(body))"
    };
    let row = db
        .rows(&format!(
            "SELECT {hex}, outcome FROM webhook_events ORDER BY id DESC LIMIT 1"
        ))
        .pop()
        .expect("a journal row");
    (
        row[0].clone().unwrap_or_default(),
        row[1].clone().unwrap_or_default(),
    )
}

fn nul_in_every_field_is_journaled_and_answered_4xx(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let base = common::seed_body("ticket.updated", 7, 2, "2024-09-01T00:00:00Z");
    let Value::Object(fields) = &base else {
        unreachable!()
    };
    let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();
    for (field, value) in fields
        .iter()
        .chain([(&"description".to_string(), &json!("text"))])
    {
        // The escape, inside the value (numbers become strings holding it).
        let mut body = base.clone();
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        body[field] = json!(format!(
            "{}\u{0}{}",
            &text[..text.len() / 2],
            &text[text.len() / 2..]
        ));
        bodies.push((format!("{field} (\\u0000)"), body.to_string().into_bytes()));
    }
    // A raw NUL byte in the body, outside and inside a string.
    let text = base.to_string();
    bodies.push((
        "raw NUL in a string".to_string(),
        text.replacen("Ticket 7", "Ticket\0 7", 1).into_bytes(),
    ));
    bodies.push((
        "raw NUL between fields".to_string(),
        text.replacen(',', ",\0", 1).into_bytes(),
    ));
    for (case, body) in bodies {
        let before = db.count("SELECT count(*) FROM webhook_events");
        let response = codex.request(
            "POST",
            "/webhooks/freshservice/ticket",
            &[
                ("X-Webhook-Secret", SECRET),
                ("Content-Type", "application/json"),
            ],
            &body,
        );
        let answer = String::from_utf8_lossy(&response.body).into_owned();
        assert!(
            (200..300).contains(&response.status) || (400..500).contains(&response.status),
            "{case}: {} {answer}",
            response.status
        );
        assert_eq!(
            db.count("SELECT count(*) FROM webhook_events"),
            before + 1,
            "{case}: not journaled ({} {answer})",
            response.status
        );
        let (hex, outcome) = newest_journal(&db);
        let sent: String = body.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, sent,
            "{case}: the journal does not hold the body as sent"
        );
        if (400..500).contains(&response.status) {
            assert_eq!(outcome, "rejected", "{case}");
            assert!(
                response.json()["message"].is_string() || response.json()["error"].is_string(),
                "{case}: {answer}"
            );
        }
        // Free text keeps its NUL out of the ticket: dropped by the
        // normalizer, or the delivery refused by name.
        if response.status == 400
            && ["subject", "requester_name", "description"]
                .iter()
                .any(|f| case.starts_with(f))
        {
            assert!(answer.contains("NUL"), "{case}: {answer}");
        }
    }
    // Nothing with a NUL reached the ticket.
    let ticket = db.ticket(7);
    if let Some(ticket) = ticket {
        assert!(
            ticket.values().flatten().all(|v| !v.contains('\0')),
            "{ticket:?}"
        );
    }
    assert_eq!(codex.get("/webhooks/health").json()["database"], "ok");
}
