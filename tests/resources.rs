//! What a client without the secret can cost Codex: a head, never a body;
//! a slot, never every slot; a rate-limit bucket, never unbounded memory.
//! Each attack is made over real sockets against the release binary
//! (`CODEX_TEST_RELEASE_BIN`, built by `scripts/test.sh`), while
//! authenticated deliveries are timed and the process's resident memory
//! (/proc/PID/status) is sampled.
//!
//! Attackers use their own loopback addresses (all of 127.0.0.0/8 is this
//! machine), so per-address bounds apply to them as they would on a
//! network.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{
    Backend, Codex, SECRET, TestDb, base_config, connect_from, read_response, seed_body,
    wait_for_no_connections,
};

/// Resident memory one open connection may cost beyond the body budget
/// (its thread's stack pages, buffers, bookkeeping), as stated in
/// docs/http.md. Measured: see that page.
const PER_CONNECTION_KIB: u64 = 64;
/// `[server] max_inflight_body_bytes` by default, in KiB.
const BODY_BUDGET_KIB: u64 = 32 * 1024;
/// Attack connections held at once.
const ATTACKERS: usize = 600;
/// Just under `[server] max_body_bytes`: a body Codex would read whole.
const DECLARED: usize = 1024 * 1024 - 1;

/// One test at a time: each times deliveries and measures memory.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The release binary. `scripts/test.sh` builds it and names it in
/// `CODEX_TEST_RELEASE_BIN` (build.rs turns that into the `cfg` these tests
/// need; under CI its absence fails `tests/environment.rs`).
fn release_binary() -> PathBuf {
    match std::env::var_os("CODEX_TEST_RELEASE_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "CODEX_TEST_RELEASE_BIN is not set: run scripts/test.sh, which builds the release binary"
        ),
    }
}

/// Starts the release binary on `db`, through `wrapper` if any.
fn start_release(db: &TestDb, extra: &str, wrapper: &[&str]) -> Codex {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let config_path = db.dir.path().join(format!(
        "codex-release-{}.conf",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&config_path, base_config(db, extra)).unwrap();
    Codex::start_program(&config_path, &[], &release_binary(), wrapper)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

static NEXT_TICKET: AtomicI64 = AtomicI64::new(50_000);

/// An authenticated delivery from `from`: its status and how long it took.
fn deliver_from(from: IpAddr, addr: SocketAddr) -> (u16, Duration) {
    let id = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    let body = seed_body("ticket.created", id, 2, "2024-01-01T00:00:00Z").to_string();
    let started = Instant::now();
    let mut stream = connect_from(from, addr).unwrap();
    write!(
        stream,
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: {addr}\r\nX-Webhook-Secret: {SECRET}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let response = read_response(&mut stream).unwrap();
    (response.status, started.elapsed())
}

/// Runs `during` while authenticated deliveries from 127.0.0.2 are made
/// every 50 ms and resident memory is sampled; asserts every delivery got
/// a 2xx within a second. Returns the peak resident memory (KiB) and the
/// slowest delivery.
fn under_watch<T>(codex: &Codex, during: impl FnOnce() -> T) -> (T, u64, Duration) {
    let pid = codex.pid();
    let addr = codex.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                // time is what is tested here: memory sampled every 10 ms
                // through the attack, for its peak.
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let deliverer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut results = Vec::new();
            while !stop.load(Ordering::Relaxed) || results.len() < 5 {
                results.push(deliver_from(ip(127, 0, 0, 2), addr));
                // time is what is tested here: a delivery every 50 ms for
                // as long as the attack lasts, each timed.
                std::thread::sleep(Duration::from_millis(50));
            }
            results
        })
    };
    let outcome = during();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let deliveries = deliverer.join().unwrap();
    let slowest = deliveries.iter().map(|(_, took)| *took).max().unwrap();
    for (status, took) in &deliveries {
        assert!(
            matches!(status, 200 | 201) && *took < Duration::from_secs(1),
            "a delivery got {status} after {took:?}\n{}",
            codex.logs()
        );
    }
    (outcome, peak.load(Ordering::Relaxed), slowest)
}

/// The service after a delivery, once its connection has closed: what it
/// costs idle.
fn settled_rss(codex: &Codex) -> u64 {
    let (status, _) = deliver_from(ip(127, 0, 0, 2), codex.addr);
    assert!(matches!(status, 200 | 201));
    assert!(
        wait_for_no_connections(codex.pid()),
        "a connection stayed open after its delivery"
    );
    rss_kib(codex.pid())
}

/// How one attack connection behaves.
struct Attack {
    /// The head, for the service at `addr`.
    head: fn(SocketAddr) -> String,
    /// Bytes of body sent after the head (the rest is never sent: Codex
    /// must answer without waiting for it).
    body: usize,
    /// The answer expected, from the head alone.
    status: u16,
}

/// `ATTACKERS` connections, held open at once from ten addresses, each
/// sending `attack`'s head: each is answered `attack.status` within a
/// second of its head, while deliveries go on and memory stays within the
/// body budget plus `PER_CONNECTION_KIB` a connection.
fn head_attack(attack: Attack) {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start_release(&db, "", &[]);
    let addr = codex.addr;
    let before = settled_rss(&codex);
    let attack = Arc::new(attack);
    let (answers, peak, slowest) = under_watch(&codex, || {
        let threads: Vec<_> = (0..10u8)
            .map(|n| {
                let attack = attack.clone();
                std::thread::spawn(move || {
                    let from = ip(127, 0, 1, n + 1);
                    let mut streams: Vec<TcpStream> = (0..ATTACKERS / 10)
                        .map(|_| connect_from(from, addr).unwrap())
                        .collect();
                    let body = vec![b'x'; attack.body];
                    let mut answers = Vec::new();
                    for stream in &mut streams {
                        let head = (attack.head)(addr);
                        let sent = Instant::now();
                        stream.write_all(head.as_bytes()).unwrap();
                        // The server may answer and close before taking all.
                        let _ = stream.write_all(&body);
                        let mut raw = Vec::new();
                        let _ = stream.read_to_end(&mut raw);
                        answers.push((String::from_utf8_lossy(&raw).into_owned(), sent.elapsed()));
                    }
                    answers
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(answers.len(), ATTACKERS);
    let mut longest = Duration::ZERO;
    for (answer, took) in &answers {
        let status: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert_eq!(status, attack.status, "{answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        longest = longest.max(*took);
    }
    assert!(
        longest < Duration::from_secs(1),
        "an answer took {longest:?}"
    );
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{ATTACKERS} attackers: resident {before} KiB before, peak {peak} KiB (+{grown} KiB); \
         slowest refusal {longest:?}, slowest delivery {slowest:?}"
    );
    assert!(
        grown <= BODY_BUDGET_KIB + ATTACKERS as u64 * PER_CONNECTION_KIB,
        "resident memory grew by {grown} KiB"
    );
}

fn ticket_head(addr: SocketAddr, fields: &str) -> String {
    format!(
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {DECLARED}\r\n{fields}\r\n"
    )
}

#[test]
#[cfg_attr(
    not(codex_release_tests),
    ignore = "needs the release binary: run scripts/test.sh, or set CODEX_TEST_RELEASE_BIN"
)]
fn six_hundred_wrong_secrets_with_1_mib_bodies_cost_a_head_each() {
    head_attack(Attack {
        head: |addr| {
            ticket_head(
                addr,
                "X-Webhook-Secret: Wr0ngSecretWr0ngSecretWr0ngSecret\r\n",
            )
        },
        body: 60 * 1024,
        status: 401,
    });
}

#[test]
#[cfg_attr(
    not(codex_release_tests),
    ignore = "needs the release binary: run scripts/test.sh, or set CODEX_TEST_RELEASE_BIN"
)]
fn six_hundred_missing_secrets_with_1_mib_bodies_cost_a_head_each() {
    head_attack(Attack {
        head: |addr| ticket_head(addr, ""),
        body: 60 * 1024,
        status: 401,
    });
}

#[test]
#[cfg_attr(
    not(codex_release_tests),
    ignore = "needs the release binary: run scripts/test.sh, or set CODEX_TEST_RELEASE_BIN"
)]
fn six_hundred_wrong_secrets_expecting_100_continue_get_no_continue() {
    head_attack(Attack {
        head: |addr| {
            ticket_head(
                addr,
                "X-Webhook-Secret: Wr0ngSecretWr0ngSecretWr0ngSecret\r\nExpect: 100-continue\r\n",
            )
        },
        body: 0,
        status: 401,
    });
}

#[test]
#[cfg_attr(
    not(codex_release_tests),
    ignore = "needs the release binary: run scripts/test.sh, or set CODEX_TEST_RELEASE_BIN"
)]
fn six_hundred_unknown_paths_with_1_mib_bodies_cost_a_head_each() {
    head_attack(Attack {
        head: |addr| {
            format!(
                "POST /no/such/endpoint HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {DECLARED}\r\n\r\n"
            )
        },
        body: 60 * 1024,
        status: 404,
    });
}

/// True when the server has closed `stream` or answered on it (a refusal):
/// the crowd reconnects then.
fn gone(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 512];
    stream.set_nonblocking(true).ok();
    let gone = match (&*stream).read(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).ok();
    gone
}

#[test]
#[cfg_attr(
    not(codex_release_tests),
    ignore = "needs the release binary: run scripts/test.sh, or set CODEX_TEST_RELEASE_BIN"
)]
fn a_thousand_idle_connections_from_one_address_do_not_stop_deliveries() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    // systemd's default descriptor limit: max_connections comes to 960.
    let codex = start_release(&db, "", &["prlimit", "--nofile=1024", "--"]);
    let addr = codex.addr;
    let crowd_ip = ip(127, 0, 0, 1);
    let ((), _, slowest) = under_watch(&codex, || {
        let mut crowd: Vec<Option<TcpStream>> = (0..1000)
            .map(|_| connect_from(crowd_ip, addr).ok())
            .collect();
        // For longer than the first-byte timeout (5 s), the crowd
        // reconnects as its connections are refused or closed.
        let until = Instant::now() + Duration::from_secs(7);
        while Instant::now() < until {
            for slot in &mut crowd {
                if slot.as_ref().is_none_or(gone) {
                    *slot = connect_from(crowd_ip, addr).ok();
                }
            }
            // A health check from a third address is served too.
            let mut health = connect_from(ip(127, 0, 0, 3), addr).unwrap();
            write!(
                health,
                "GET /webhooks/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let health = read_response(&mut health).unwrap();
            assert_eq!(health.status, 200, "{health:?}");
            // time is what is tested here: the crowd keeps at it for
            // longer than the first-byte timeout, checking health every
            // 100 ms.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    eprintln!("1,000 idle connections from one address: slowest delivery {slowest:?}");
}

#[test]
#[cfg_attr(
    not(codex_release_tests),
    ignore = "needs the release binary: run scripts/test.sh, or set CODEX_TEST_RELEASE_BIN"
)]
fn thirty_thousand_addresses_at_one_request_a_minute_keep_memory_and_latency_flat() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start_release(&db, "[webhooks]\nrate_limit_per_minute = 1\n", &[]);
    let addr = codex.addr;
    const ADDRESSES: usize = 30_000;
    const THREADS: usize = 4;
    let address = |n: usize| {
        ip(
            127,
            10 + (n / 62_500) as u8,
            (n / 250 % 250) as u8,
            (n % 250 + 1) as u8,
        )
    };
    let check = move |from: IpAddr| -> (u16, Duration) {
        let started = Instant::now();
        let mut stream = connect_from(from, addr).unwrap();
        write!(
            stream,
            "POST /webhooks/test HTTP/1.1\r\nHost: {addr}\r\nX-Webhook-Secret: {SECRET}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let response = read_response(&mut stream).unwrap();
        (response.status, started.elapsed())
    };
    assert_eq!(check(ip(127, 9, 0, 1)).0, 200);
    let before = rss_kib(codex.pid());
    let latencies: Vec<Vec<Duration>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    (t..ADDRESSES)
                        .step_by(THREADS)
                        .map(|n| {
                            let (status, took) = check(address(n));
                            assert_eq!(status, 200, "the first request from {}", address(n));
                            took
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let after = rss_kib(codex.pid());
    // The limit still holds for a recent address.
    assert_eq!(check(address(ADDRESSES - 1)).0, 429);
    let p99 = |part: &[Duration]| {
        let mut part = part.to_vec();
        part.sort();
        part[part.len() * 99 / 100]
    };
    // Each thread's first and last tenth, in the order they were made.
    let tenth = |first: bool| -> Vec<Duration> {
        latencies
            .iter()
            .flat_map(|own| {
                let n = own.len() / 10;
                if first {
                    &own[..n]
                } else {
                    &own[own.len() - n..]
                }
            })
            .copied()
            .collect()
    };
    let (first, last) = (p99(&tenth(true)), p99(&tenth(false)));
    eprintln!(
        "{ADDRESSES} addresses: resident {before} KiB before, {after} KiB after; p99 {first:?} \
         over the first tenth, {last:?} over the last"
    );
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    assert!(
        last <= first * 3 + Duration::from_millis(20),
        "p99 went from {first:?} to {last:?}"
    );
}
