//! One test (or more) per Codex patch (see PATCHES.md), over real sockets
//! on 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tiny_http::{Gate, Head, Header, Limits, Response, Server};

/// Answers `/refused` with 401 from the head (codex patch 13); leaves
/// connections from 127.0.0.3 uncapped (codex patch 15).
struct RefuseAtHead;

impl Gate for RefuseAtHead {
    fn check(&self, head: &Head<'_>) -> Option<Response<std::io::Cursor<Vec<u8>>>> {
        (head.url == "/refused").then(|| Response::from_string("no").with_status_code(401))
    }

    fn caps_address(&self, ip: std::net::IpAddr) -> bool {
        ip != std::net::IpAddr::from([127, 0, 0, 3])
    }
}

/// A server on a free port with `workers` threads that answer each request
/// with "<url> <body length>" (a `Connection: close` answer for
/// `/close`), until the server is dropped.
fn serve(limits: Limits, workers: usize) -> (SocketAddr, Arc<Server>) {
    serve_gated(limits, workers, Arc::new(RefuseAtHead))
}

/// Like `serve`, with `gate` deciding on heads.
fn serve_gated(limits: Limits, workers: usize, gate: Arc<dyn Gate>) -> (SocketAddr, Arc<Server>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server::from_listener_with_gate(listener, limits, gate).unwrap());
    for _ in 0..workers {
        let server: Weak<Server> = Arc::downgrade(&server);
        std::thread::spawn(move || {
            while let Some(server) = server.upgrade() {
                if let Ok(Some(mut rq)) = server.recv_timeout(Duration::from_millis(50)) {
                    drop(server);
                    answer(&mut rq);
                    let url = rq.url().to_string();
                    let text = format!("{} {}", url, body_len(&mut rq));
                    let _ = rq.respond(Response::from_string(text));
                }
            }
        });
    }
    (addr, server)
}

fn answer(rq: &mut tiny_http::Request) {
    if rq.url() == "/close" {
        rq.close_connection();
    }
}

fn body_len(rq: &mut tiny_http::Request) -> usize {
    let mut body = Vec::new();
    let _ = rq.as_reader().read_to_end(&mut body);
    body.len()
}

fn limits() -> Limits {
    Limits {
        max_connections: 64,
        idle_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(2),
        max_head_bytes: 16 * 1024,
        max_body_bytes: 1024,
        ..Limits::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `bytes` and reads until the server closes the connection.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads one answer (head and a Content-Length body) off `stream`.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8];
    while !raw.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

// codex patch 3: a new connection is served at once, however many
// keep-alive connections are open.
#[test]
fn patch3_new_connections_are_served_beside_keep_alive_ones() {
    let (addr, _server) = serve(limits(), 2);
    let mut kept: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = connect(addr);
            stream.write_all(GET).unwrap();
            assert_eq!(status(&read_answer(&mut stream)), 200);
            stream
        })
        .collect();
    let started = Instant::now();
    let mut fresh = connect(addr);
    fresh.write_all(GET).unwrap();
    assert_eq!(status(&read_answer(&mut fresh)), 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    // The kept ones still serve.
    kept[0].write_all(GET).unwrap();
    assert_eq!(status(&read_answer(&mut kept[0])), 200);
}

// codex patch 3: beyond max_connections, a 503 with Retry-After.
#[test]
fn patch3_connections_beyond_the_bound_get_503() {
    let (addr, server) = serve(
        Limits {
            max_connections: 2,
            body_timeout: Duration::from_secs(10),
            ..limits()
        },
        1,
    );
    // Two connections with a request in progress (a body still to come):
    // neither is idle, so neither makes room (codex patch 15).
    let mut open = [connect(addr), connect(addr)];
    for stream in &mut open {
        stream
            .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 2));
    let answer = exchange(addr, GET);
    assert_eq!(status(&answer), 503, "{}", answer);
    assert!(answer.contains("Retry-After: 1"), "{}", answer);
    drop(open);
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 0));
    assert_eq!(status(&exchange(addr, b"GET /close HTTP/1.1\r\n\r\n")), 200);
}

// codex patch 3 (commit 6ad6a84): a refusal runs on the accept thread and
// reads at most 64 KiB of what the client sent, so a refused client that
// keeps sending does not hold the accept loop.
#[test]
fn patch3_a_refused_client_that_keeps_sending_does_not_hold_the_accept_loop() {
    let (addr, server) = serve(
        Limits {
            max_connections: 2,
            body_timeout: Duration::from_secs(10),
            ..limits()
        },
        1,
    );
    let mut open = [connect(addr), connect(addr)];
    for stream in &mut open {
        stream
            .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 2));
    // Sends without pause until the server closes the connection (or 10 s
    // or 8 GiB have gone by, so that a failing server ends the test).
    let mut flood = connect(addr);
    let chunk = vec![b'x'; 256 * 1024];
    flood.write_all(&chunk).unwrap();
    let sender = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(10);
        let mut sent = chunk.len();
        while Instant::now() < until && sent < 8 << 30 && flood.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let started = Instant::now();
    let answer = exchange(addr, GET);
    let waited = started.elapsed();
    assert_eq!(status(&answer), 503, "{}", answer);
    assert!(
        waited < Duration::from_secs(2),
        "the next client waited {:?} for its refusal",
        waited
    );
    let sent = sender.join().unwrap();
    assert!(
        sent < 8 << 30,
        "the refused connection was read for {} bytes",
        sent
    );
    drop(open);
}

// codex patch 3: pipelined requests are read one at a time: the next one
// only once the previous one is answered.
#[test]
fn patch3_pipelined_requests_are_read_one_at_a_time() {
    let (addr, server) = serve(limits(), 0);
    let mut stream = connect(addr);
    stream.write_all(&GET.repeat(5)).unwrap();
    assert!(wait_until(Duration::from_secs(5), || server
        .queued_requests()
        == 1));
    let first = server.recv().unwrap();
    assert!(
        !wait_until(Duration::from_millis(300), || server.queued_requests() > 0),
        "a second request was read before the first was answered"
    );
    first.respond(Response::from_string("one")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || server
        .queued_requests()
        == 1));
}

// codex patch 4: the head must arrive within header_timeout, however
// steadily it trickles in; an idle connection is closed without an answer.
#[test]
fn patch4_a_trickled_head_gets_408_and_an_idle_connection_is_closed() {
    let (addr, _server) = serve(
        Limits {
            idle_timeout: Duration::from_secs(1),
            first_byte_timeout: Duration::from_secs(1),
            ..limits()
        },
        1,
    );
    let mut trickle = connect(addr);
    trickle.write_all(b"GET /a HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    while started.elapsed() < Duration::from_secs(5) {
        if trickle.write_all(b"X").is_err() {
            break;
        }
        trickle
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 256];
        match trickle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    assert_eq!(status(&answer), 408, "{}", answer);
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut idle = connect(addr);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
}

// codex patch 5: bounded heads, strict lines, and 505 for HTTP versions
// other than 1.0 and 1.1 (upstream deadlocked on them).
#[test]
fn patch5_heads_are_bounded_and_strict_and_other_versions_get_505() {
    let (addr, _server) = serve(limits(), 1);
    let long = format!("GET /a HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000));
    let many: String = (0..200).map(|n| format!("X-{n}: 1\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (long.into_bytes(), 431),
        (format!("GET /a HTTP/1.1\r\n{many}\r\n").into_bytes(), 431),
        (b"GET /a HTTP/1.1\nHost: x\r\n\r\n".to_vec(), 400),
        (b"GET /a HTTP/1.1\r\nHost: x\rY\r\n\r\n".to_vec(), 400),
        (b"GET /a HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n".to_vec(), 400),
        (b"GET /a  HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET /a HTTP/1.1 extra\r\n\r\n".to_vec(), 400),
        (b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 505),
        (b"GET /a HTTP/0.9\r\n\r\n".to_vec(), 505),
    ];
    for (bytes, expected) in cases {
        let answer = exchange(addr, &bytes);
        assert_eq!(
            status(&answer),
            expected,
            "{:?}: {answer}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
        );
        assert!(answer.contains("Connection: close"), "{}", answer);
    }
}

// codex patch 6: framing a proxy could read differently is refused.
#[test]
fn patch6_ambiguous_framing_is_refused() {
    let (addr, _server) = serve(limits(), 1);
    let next = "GET /smuggled HTTP/1.1\r\n\r\n";
    let cases = [
        (
            format!("POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{next}"),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab{next}"),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nab{next}"),
            400,
        ),
        (format!("POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n{next}"), 400),
        (format!("POST /a HTTP/1.1\r\nContent-Length: +1\r\n\r\nx{next}"), 400),
        (
            format!("POST /a HTTP/1.1\r\nContent-Length: 184467440737095516160\r\n\r\n{next}"),
            400,
        ),
        (
            format!("POST /a HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n{next}"),
            501,
        ),
    ];
    for (bytes, expected) in cases {
        let answer = exchange(addr, bytes.as_bytes());
        assert_eq!(status(&answer), expected, "{bytes:?}: {answer}");
        assert!(!answer.contains("/smuggled"), "{}", answer);
    }
    // An empty line before a request line is skipped.
    let answer = exchange(
        addr,
        b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\nGET /close HTTP/1.1\r\n\r\n",
    );
    assert!(answer.ends_with("/close 0"), "{}", answer);
    // Repeated equal lengths are one length.
    let answer = exchange(
        addr,
        b"POST /close HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
    );
    assert!(answer.ends_with("/close 2"), "{}", answer);
}

// codex patch 7: an endless chunk-size line is refused, not collected.
#[test]
fn patch7_an_endless_chunk_size_line_gets_400() {
    let (addr, _server) = serve(limits(), 1);
    let mut stream = connect(addr);
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let block = [b'1'; 4096];
    for _ in 0..256 {
        if stream.write_all(&block).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 400, "{}", answer);
    // A proper chunked body is read.
    let answer = exchange(
        addr,
        b"POST /close HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert!(answer.ends_with("/close 5"), "{}", answer);
}

// codex patch 8: `Connection: close` on an answer, and the connection closes.
#[test]
fn patch8_an_answer_can_close_the_connection() {
    let (addr, _server) = serve(limits(), 1);
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /close HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.contains("Connection: close"), "{}", answer);
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{}", answer);
    let response = Response::from_string("x").with_header(Header {
        field: "Connection".parse().unwrap(),
        value: "close".parse().unwrap(),
    });
    assert!(response.closes_connection());
}

// codex patch 9: a body is read before a worker sees the request; a stalled
// one never reaches a worker and gets 408; one over the limit is not read
// and the connection closes after the answer.
#[test]
fn patch9_bodies_are_read_before_hand_off() {
    let (addr, server) = serve(limits(), 1);
    let mut stalled = connect(addr);
    stalled
        .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    assert!(!wait_until(Duration::from_millis(500), || server
        .queued_requests()
        > 0));
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert_eq!(status(&answer), 408, "{}", answer);

    let mut large = connect(addr);
    large
        .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\nabc")
        .unwrap();
    let mut answer = String::new();
    let _ = large.read_to_string(&mut answer);
    assert!(answer.ends_with("/a 0"), "{}", answer);
    assert!(answer.contains("Connection: close"), "{}", answer);

    let mut chunk = format!("{:x}\r\n", 5000).into_bytes();
    chunk.extend_from_slice(&[b'z'; 5000]);
    let mut request = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(&chunk);
    let answer = exchange(addr, &request);
    assert!(answer.ends_with("/a 1025"), "{}", answer);
    assert!(answer.contains("Connection: close"), "{}", answer);

    // Expect: 100-continue is answered by the connection before the body.
    let mut stream = connect(addr);
    stream
        .write_all(b"POST /close HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"abc").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.ends_with("/close 3"), "{}", answer);
}

// codex patch 10: after shut_down, the listener is closed and a request on
// an open connection gets a 503 with Retry-After from the connection itself.
#[test]
fn patch10_shut_down_refuses_with_503() {
    let (addr, server) = serve(limits(), 0);
    let mut kept = connect(addr);
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 1));
    server.shut_down();
    kept.write_all(GET).unwrap();
    let mut answer = String::new();
    let _ = kept.read_to_string(&mut answer);
    assert_eq!(status(&answer), 503, "{}", answer);
    assert!(answer.contains("Retry-After: 5"), "{}", answer);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is still open"
    );
}

// codex patch 11: a worker answers a client that does not read without
// waiting on it; the connection writes.
#[test]
fn patch11_a_client_that_does_not_read_holds_no_worker() {
    let (addr, _server) = serve(limits(), 1);
    let mut greedy = connect(addr);
    greedy
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut sent = 0;
    while sent < 50_000 && greedy.write_all(GET).is_ok() {
        sent += 1;
    }
    // The one worker still answers others at once.
    for _ in 0..5 {
        let started = Instant::now();
        let answer = exchange(addr, b"GET /close HTTP/1.1\r\n\r\n");
        assert_eq!(status(&answer), 200, "{}", answer);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}

// codex patch 12: `Connection: upgrade` is ignored: the body is framed as
// usual and the connection goes on with HTTP/1.1.
#[test]
fn patch12_upgrade_requests_are_served_as_http_1_1() {
    let (addr, _server) = serve(limits(), 1);
    let answer = exchange(
        addr,
        b"POST /a HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabcGET /close HTTP/1.1\r\n\r\n",
    );
    assert!(answer.contains("/a 3"), "{}", answer);
    assert!(answer.ends_with("/close 0"), "{}", answer);
}

/// Connects to `addr` from the local address `from` (any of 127.0.0.0/8).
fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local = SocketAddr::from((from, 0));
    socket.bind(&local.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// True when the server closed `stream` (without sending anything).
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

// codex patch 13: the gate answers a head at once, with `Connection:
// close`; the body is not waited for, and no `100 Continue` is sent.
#[test]
fn patch13_the_gate_answers_a_head_before_its_body() {
    let (addr, server) = serve(limits(), 1);
    let mut stream = connect(addr);
    stream
        .write_all(
            b"POST /refused HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
        )
        .unwrap();
    let answer = read_answer(&mut stream);
    assert_eq!(status(&answer), 401, "{}", answer);
    assert!(answer.contains("Connection: close"), "{}", answer);
    assert!(answer.ends_with("no"), "{}", answer);
    assert!(closed(&mut stream));

    // A body that is sent anyway is not read (beyond a bounded drain).
    let mut stream = connect(addr);
    stream
        .write_all(b"POST /refused HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc")
        .unwrap();
    let started = Instant::now();
    assert_eq!(status(&read_answer(&mut stream)), 401);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(server.queued_requests(), 0);
    assert_eq!(server.inflight_body_bytes(), 0);

    // Other requests go on as before.
    assert!(exchange(
        addr,
        b"POST /close HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    )
    .ends_with("/close 3"));
}

// codex patch 14: a body that does not fit in the in-flight budget is
// refused with 503 and Retry-After before it is read.
#[test]
fn patch14_bodies_beyond_the_in_flight_budget_get_503() {
    let (addr, server) = serve(
        Limits {
            max_inflight_body_bytes: 1000,
            body_timeout: Duration::from_secs(10),
            ..limits()
        },
        1,
    );
    let mut holding = connect(addr);
    holding
        .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 800\r\n\r\nabc")
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || server
        .inflight_body_bytes()
        == 800));
    let mut stream = connect(addr);
    stream
        .write_all(b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 300\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut stream);
    assert_eq!(status(&answer), 503, "{}", answer);
    assert!(answer.contains("Retry-After: 1"), "{}", answer);
    assert!(answer.contains("Connection: close"), "{}", answer);
    // A body that fits beside it is served.
    assert!(exchange(
        addr,
        b"POST /close HTTP/1.1\r\nContent-Length: 200\r\n\r\n"
            .iter()
            .chain(&[b'x'; 200])
            .copied()
            .collect::<Vec<u8>>()
            .as_slice()
    )
    .ends_with("/close 200"));
    holding.write_all(&[b'y'; 797]).unwrap();
    assert!(read_answer(&mut holding).ends_with("/a 800"));
    assert!(wait_until(Duration::from_secs(5), || server
        .inflight_body_bytes()
        == 0));
}

// codex patch 15: connections are capped per address (unless the gate
// exempts it), and a connection must send its first byte in time.
#[test]
fn patch15_connections_are_capped_per_address() {
    let (addr, server) = serve(
        Limits {
            max_connections_per_ip: 2,
            ..limits()
        },
        1,
    );
    let _held = [
        connect_from([127, 0, 0, 1], addr),
        connect_from([127, 0, 0, 1], addr),
    ];
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 2));
    let mut third = connect_from([127, 0, 0, 1], addr);
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert_eq!(status(&answer), 503, "{}", answer);
    assert!(answer.contains("from this address"), "{}", answer);
    for from in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let mut other = connect_from(from, addr);
        other.write_all(b"GET /close HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(status(&read_answer(&mut other)), 200);
    }
    let uncapped: Vec<TcpStream> = (0..4).map(|_| connect_from([127, 0, 0, 3], addr)).collect();
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 6));
    drop(uncapped);
}

// codex patch 15: when every slot is taken, the connection idle the
// longest is closed to make room for a new one.
#[test]
fn patch15_the_oldest_idle_connection_makes_room() {
    let (addr, server) = serve(
        Limits {
            max_connections: 2,
            ..limits()
        },
        1,
    );
    let mut oldest = connect(addr);
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 1));
    let mut newer = connect(addr);
    newer.write_all(GET).unwrap();
    assert_eq!(status(&read_answer(&mut newer)), 200);
    let mut third = connect(addr);
    third.write_all(b"GET /close HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(status(&read_answer(&mut third)), 200);
    assert!(closed(&mut oldest));
    // `newer` went idle after its answer, later than `oldest`: still open.
    newer.write_all(GET).unwrap();
    assert_eq!(status(&read_answer(&mut newer)), 200);
}

// codex patch 15: a new connection that sends nothing is closed after
// `first_byte_timeout`, sooner than a kept-alive one's `idle_timeout`.
#[test]
fn patch15_a_silent_new_connection_is_closed_after_the_first_byte_timeout() {
    let (addr, _server) = serve(
        Limits {
            first_byte_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(5),
            ..limits()
        },
        1,
    );
    let mut silent = connect(addr);
    let started = Instant::now();
    assert!(closed(&mut silent));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let mut kept = connect(addr);
    kept.write_all(GET).unwrap();
    assert_eq!(status(&read_answer(&mut kept)), 200);
    std::thread::sleep(Duration::from_millis(600));
    kept.write_all(GET).unwrap();
    assert_eq!(status(&read_answer(&mut kept)), 200);
}

// codex patch 16: obsolete line folding, empty field names and control
// characters in field values are 400.
#[test]
fn patch16_field_lines_are_strict() {
    let (addr, _server) = serve(limits(), 1);
    for head in [
        "POST /a HTTP/1.1\r\nX-Foo: a\r\n Content-Length: 3\r\n\r\nabc",
        "POST /a HTTP/1.1\r\nX-Foo: a\r\n\tTransfer-Encoding: chunked\r\n\r\n",
        "GET /a HTTP/1.1\r\n: empty\r\n\r\n",
        "GET /a HTTP/1.1\r\nX-Foo: a\x01b\r\n\r\n",
        "GET /a HTTP/1.1\r\nX-Foo: a\x1b[31m\r\n\r\n",
    ] {
        let answer = exchange(addr, head.as_bytes());
        assert_eq!(status(&answer), 400, "{:?}: {}", head, answer);
    }
    assert_eq!(
        status(&exchange(
            addr,
            b"GET /close HTTP/1.1\r\nX-Foo: a\tb\r\n\r\n"
        )),
        200
    );
}
