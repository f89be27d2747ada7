//! Hostile clients cost bounded resources: each attack is made over real
//! sockets against the real binary, while a normal delivery is timed, and
//! the process's descriptors (/proc/PID/fd) and threads (/proc/PID/task) are
//! counted before and after.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{
    Backend, Codex, SECRET, TestDb, request_workers, seed_body, wait_for_no_connections, wait_until,
};

/// These tests open hundreds of sockets each: one at a time, so the test
/// process stays well within its own descriptor limit.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
}

fn usage(pid: u32) -> Usage {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .map(|entries| entries.count())
            .unwrap_or_else(|e| panic!("/proc/{pid}/{dir}: {e}"))
    };
    Usage {
        fds: count("fd"),
        threads: count("task"),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `[server] threads` in the test configuration (tests/common).
const WORKERS: usize = 8;

/// The service after one delivery (database open) with its request pool
/// grown to `[server] threads` by bursts of concurrent health checks (the pool
/// is elastic, docs/http.md): what it costs with no client connected, so
/// that what a hostile client adds is its connection alone.
fn baseline(codex: &Codex) -> Usage {
    deliver_in_time(codex);
    let pid = codex.pid();
    let grown = wait_until(Duration::from_secs(30), || {
        std::thread::scope(|scope| {
            for _ in 0..4 * WORKERS {
                scope.spawn(|| {
                    let answer = exchange(
                        codex.addr,
                        b"GET /webhooks/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    );
                    assert_eq!(status_of(&answer), 200, "{answer}");
                });
            }
        });
        request_workers(pid) == WORKERS
    });
    assert!(
        grown,
        "the pool has {} workers, not {WORKERS}",
        request_workers(pid)
    );
    // The connection of the delivery just made closes, its thread ends.
    assert!(
        wait_for_no_connections(pid),
        "a connection stayed open after its delivery"
    );
    usage(pid)
}

/// Waits for the process to be back where it was: nothing leaked. One
/// descriptor and one thread of slack for a connection of the test's own
/// closing at that moment.
fn assert_back_to(codex: &Codex, before: Usage, what: &str) {
    let pid = codex.pid();
    let mut now = usage(pid);
    let back = wait_until(Duration::from_secs(15), || {
        now = usage(pid);
        now.fds <= before.fds + 1 && now.threads <= before.threads + 1
    });
    assert!(
        back,
        "{what}: {before:?} before, {now:?} after\n{}",
        codex.logs()
    );
}

static NEXT_TICKET: AtomicI64 = AtomicI64::new(1000);

/// A normal, authenticated delivery on a new connection: it must be
/// acknowledged within a second.
fn deliver_in_time(codex: &Codex) -> Duration {
    let id = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let response = codex.deliver_json(&seed_body("ticket.created", id, 2, "2024-01-01T00:00:00Z"));
    let took = started.elapsed();
    assert!(
        matches!(response.status, 200 | 201),
        "{response:?}\n{}",
        codex.logs()
    );
    assert!(
        took < Duration::from_secs(1),
        "a normal delivery took {took:?}"
    );
    took
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Sends `bytes` on a new connection and reads until the server closes it.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn start(db: &TestDb, extra: &str) -> Codex {
    Codex::start(db, extra)
}

#[test]
fn huge_content_length_and_closing_leaks_nothing() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(&db, "");
    let before = baseline(&codex);
    for n in 0..20 {
        let path = if n % 2 == 0 {
            "/webhooks/health"
        } else {
            "/webhooks/freshservice/ticket"
        };
        let answer = exchange(
            codex.addr,
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Length: 100000000000000\r\n\r\nabc"
            )
            .as_bytes(),
        );
        assert!(
            answer.contains("Connection: close"),
            "the connection must close after the answer: {answer}"
        );
    }
    deliver_in_time(&codex);
    assert_back_to(&codex, before, "20 requests with a forged Content-Length");
}

#[test]
fn five_hundred_slow_or_idle_connections_do_not_delay_a_delivery() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(&db, "[server]\nheader_timeout = 3s\nread_timeout = 30s\n");
    let before = baseline(&codex);
    let mut idle = Vec::new();
    let mut slow = Vec::new();
    for n in 0..500 {
        let mut stream = connect(codex.addr);
        if n % 2 == 0 {
            // Begins a request and never finishes its headers.
            stream
                .write_all(b"POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            slow.push(stream);
        } else {
            idle.push(stream);
        }
    }
    let opened = Instant::now();
    for _ in 0..5 {
        deliver_in_time(&codex);
    }
    // A client trickling its headers one byte at a time is cut off at
    // header_timeout with a 408 (not at each byte's own read timeout).
    let mut trickle = connect(codex.addr);
    trickle
        .write_all(b"GET /webhooks/health HTTP/1.1\r\n")
        .unwrap();
    let trickle_started = Instant::now();
    trickle.set_nonblocking(true).unwrap();
    let mut answer = Vec::new();
    while trickle_started.elapsed() < Duration::from_secs(10) {
        let _ = trickle.write_all(b"X");
        let mut buf = [0u8; 512];
        match trickle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        // time is what is tested here: a client dribbling a byte every
        // 200 ms, each within the read timeout, is cut off at header_timeout.
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(
        trickle_started.elapsed() < Duration::from_secs(6),
        "{:?}",
        trickle_started.elapsed()
    );
    // The slow ones got the same answer once header_timeout passed.
    for stream in slow.iter_mut().take(10) {
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert_eq!(status_of(&answer), 408, "{answer}");
    }
    assert!(opened.elapsed() < Duration::from_secs(20));
    deliver_in_time(&codex);
    drop(slow);
    drop(idle);
    drop(trickle);
    assert_back_to(&codex, before, "500 slow or idle connections");
}

#[test]
fn sixty_four_stalled_bodies_do_not_delay_a_delivery() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(&db, "[server]\nbody_timeout = 3s\n");
    let before = baseline(&codex);
    let mut stalled: Vec<TcpStream> = (0..64)
        .map(|n| {
            let mut stream = connect(codex.addr);
            // Half with the right secret, whose bodies are waited for; the
            // others are refused at the head, their bodies never read.
            let secret = if n % 2 == 0 { SECRET } else { "wrong" };
            write!(
                stream,
                "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {secret}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{"
            )
            .unwrap();
            stream
        })
        .collect();
    for _ in 0..5 {
        deliver_in_time(&codex);
    }
    let started = Instant::now();
    for (n, stream) in stalled.iter_mut().enumerate() {
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let expected = if n % 2 == 0 { 408 } else { 401 };
        assert_eq!(status_of(&answer), expected, "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    deliver_in_time(&codex);
    drop(stalled);
    assert_back_to(&codex, before, "64 stalled bodies");
}

#[test]
fn clients_pipelining_without_reading_stall_only_themselves() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(&db, "");
    let before = baseline(&codex);
    // More greedy clients than the 8 workers of the test configuration.
    const GREEDY: usize = 12;
    let addr = codex.addr;
    let greedy: Vec<(TcpStream, usize)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..GREEDY)
            .map(|_| {
                scope.spawn(move || {
                    let mut stream = connect(addr);
                    stream
                        .set_write_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let request = b"GET /webhooks/health HTTP/1.1\r\nHost: x\r\n\r\n";
                    let mut sent = 0;
                    // Until the socket buffers are full both ways (the
                    // server stops reading), at most 20,000 requests.
                    while sent < 20_000 && stream.write_all(request).is_ok() {
                        sent += 1;
                    }
                    (stream, sent)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (_, sent) in &greedy {
        assert!(*sent >= 490, "only {sent} requests could be sent");
    }
    let during = usage(codex.pid());
    for _ in 0..5 {
        deliver_in_time(&codex);
    }
    // A connection costs one thread and one descriptor however much it
    // pipelines; no worker waits on a client that does not read.
    assert!(
        during.threads <= before.threads + GREEDY + 1 && during.fds <= before.fds + GREEDY + 1,
        "{before:?} before, {during:?} while pipelining"
    );
    drop(greedy);
    assert_back_to(&codex, before, "a pipelining client that never reads");
}

#[test]
fn http2_request_lines_get_505_and_leak_nothing() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(&db, "");
    let before = baseline(&codex);
    for n in 0..100 {
        let bytes: &[u8] = match n % 3 {
            0 => b"GET /webhooks/health HTTP/2.0\r\nHost: x\r\n\r\n",
            1 => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            _ => b"GET /webhooks/health HTTP/3.0\r\nHost: x\r\n\r\n",
        };
        let answer = exchange(codex.addr, bytes);
        assert_eq!(status_of(&answer), 505, "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    deliver_in_time(&codex);
    assert_back_to(&codex, before, "100 HTTP/2 request lines");
}

#[test]
fn smuggling_framings_get_400_and_the_connection_closed() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(&db, "");
    let before = baseline(&codex);
    let head = format!(
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Type: application/json\r\n"
    );
    let smuggled = "GET /webhooks/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            400,
        ),
        (
            "Transfer-Encoding with Content-Length",
            format!(
                "{head}Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            400,
        ),
        (
            "two different Content-Length",
            format!("{head}Content-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}{smuggled}"),
            400,
        ),
        (
            "negative Content-Length",
            format!("{head}Content-Length: -1\r\n\r\n{smuggled}"),
            400,
        ),
        (
            "overflowing Content-Length",
            format!("{head}Content-Length: 99999999999999999999999\r\n\r\n{smuggled}"),
            400,
        ),
        (
            "an unknown transfer coding",
            format!("{head}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            501,
        ),
        (
            "a bare LF",
            format!("GET /webhooks/health HTTP/1.1\nHost: x\r\n\r\n{smuggled}"),
            400,
        ),
    ];
    for (what, bytes, status) in &cases {
        let answer = exchange(codex.addr, bytes.as_bytes());
        assert_eq!(status_of(&answer), *status, "{what}: {answer}");
        assert!(answer.contains("Connection: close"), "{what}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: the smuggled request was served: {answer}"
        );
    }
    // Bad UTF-8 in a header: answered, not silently closed.
    let mut bytes = b"GET /webhooks/health HTTP/1.1\r\nX-Name: caf\xc3\x28\r\n\r\n".to_vec();
    bytes.extend_from_slice(smuggled.as_bytes());
    let answer = exchange(codex.addr, &bytes);
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    // The same length twice is one length.
    let answer = exchange(
        codex.addr,
        b"GET /webhooks/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    deliver_in_time(&codex);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM webhook_events"),
        2,
        "only the two timed deliveries reached the journal"
    );
    assert_back_to(&codex, before, "smuggling framings");
}

#[test]
fn an_endless_chunk_size_line_is_refused_in_bounded_memory() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(&db, "");
    let before = baseline(&codex);
    let rss_before = rss_kib(codex.pid());
    let mut stream = connect(codex.addr);
    write!(
        stream,
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Up to 64 MB of chunk-size line, until the server stops reading.
    let block = vec![b'1'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 << 20 && stream.write_all(&block).is_ok() {
        sent += block.len();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), 400, "after {sent} bytes: {answer}");
    let grown = rss_kib(codex.pid()).saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "resident memory grew by {grown} KiB");
    deliver_in_time(&codex);
    drop(stream);
    assert_back_to(&codex, before, "an endless chunk-size line");
}

#[test]
fn connections_beyond_the_bound_are_refused_with_503() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    let codex = start(
        &db,
        "[server]\nmax_connections = 40\nmax_connections_per_ip = 40\n",
    );
    let before = baseline(&codex);
    // Each with a request in progress (its body awaited): none is idle, so
    // none is closed to make room.
    let open: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut stream = connect(codex.addr);
            write!(
                stream,
                "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: {SECRET}\r\nContent-Length: 10\r\n\r\n{{"
            )
            .unwrap();
            stream
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || usage(codex.pid())
        .fds
        >= before.fds + 40));
    let answer = exchange(
        codex.addr,
        b"GET /webhooks/health HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.contains("Retry-After: "), "{answer}");
    drop(open);
    assert!(wait_until(Duration::from_secs(5), || {
        common::try_deliver(
            codex.addr,
            &seed_body("ticket.created", 7, 2, "2024-01-01T00:00:00Z").to_string(),
        )
        .is_ok_and(|r| r.status == 201)
    }));
    deliver_in_time(&codex);
    assert_back_to(&codex, before, "connections beyond the bound");
}

#[test]
fn the_listener_survives_descriptor_exhaustion() {
    let _serial = one_at_a_time();
    let db = TestDb::new(&Backend::Sqlite);
    // A bound above the descriptor limit, so that accept() itself fails.
    let codex = start(&db, "[server]\nmax_connections = 5000\n");
    let before = baseline(&codex);
    let pid = codex.pid().to_string();
    let limit = before.fds + 40;
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={limit}:{limit}")])
        .status()
        .expect("prlimit");
    assert!(lowered.success());
    // Twice as many connections as there are descriptors left.
    let mut open = Vec::new();
    for _ in 0..80 {
        match TcpStream::connect_timeout(&codex.addr, Duration::from_secs(2)) {
            Ok(stream) => open.push(stream),
            Err(_) => break,
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || codex
            .logs()
            .contains("accepting a connection failed")),
        "accept() never ran out of descriptors\n{}",
        codex.logs()
    );
    drop(open);
    // Once descriptors are free again, the same listener serves.
    assert!(
        wait_until(Duration::from_secs(10), || {
            common::try_request(codex.addr, "GET", "/webhooks/health", &[], b"")
                .is_ok_and(|r| r.status == 200)
        }),
        "{}",
        codex.logs()
    );
    deliver_in_time(&codex);
    assert_back_to(&codex, before, "descriptor exhaustion");
}
