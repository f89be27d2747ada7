//! Codex patches 1 and 2, which count and exhaust this process's file
//! descriptors: a process of their own (this file), one test at a time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tiny_http::{Limits, Response, Server};

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps the log messages, to see what the accept loop reported.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

fn logged(text: &str) -> bool {
    LOGS.0
        .lock()
        .unwrap()
        .iter()
        .any(|line| line.contains(text))
}

fn serve() -> (SocketAddr, Arc<Server>) {
    let _ = log::set_logger(&LOGS);
    log::set_max_level(log::LevelFilter::Warn);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server::from_listener_with_limits(listener, Limits::default()).unwrap());
    let weak: Weak<Server> = Arc::downgrade(&server);
    std::thread::spawn(move || {
        while let Some(server) = weak.upgrade() {
            if let Ok(Some(rq)) = server.recv_timeout(Duration::from_millis(50)) {
                drop(server);
                let _ = rq.respond(Response::from_string("ok"));
            }
        }
    });
    (addr, server)
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
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

fn get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

// codex patch 1: accept() failing for want of descriptors does not end the
// accept loop: the connection waiting meanwhile is served once descriptors
// are free again.
#[test]
fn patch1_the_accept_loop_survives_descriptor_exhaustion() {
    let _serial = one_at_a_time();
    let (addr, _server) = serve();
    assert!(get(addr).ends_with("ok"));
    // A soft limit a little above what is open, so that taking every
    // descriptor left is quick.
    let limit = open_descriptors() + 200;
    let lowered = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("prlimit");
    assert!(lowered.success());
    let mut hogs = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        match std::fs::File::open("/dev/null") {
            Ok(file) => hogs.push(file),
            Err(_) => break,
        }
    }
    // One back for the client; the server's accept() then has none.
    hogs.pop();
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || logged(
            "accepting a connection failed"
        )),
        "accept() did not run out of descriptors ({} taken)",
        hogs.len()
    );
    drop(hogs);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = waiting.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", answer);
    assert!(get(addr).ends_with("ok"));
}

// codex patch 2: one descriptor per connection on the server's side
// (upstream duplicated each socket).
#[test]
fn patch2_a_connection_costs_one_descriptor() {
    let _serial = one_at_a_time();
    let (addr, server) = serve();
    // What the previous test left closing is closed first.
    let mut before = open_descriptors();
    wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(200));
        let now = open_descriptors();
        std::mem::replace(&mut before, now) == now
    });
    let clients: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    assert!(wait_until(Duration::from_secs(5), || server
        .open_connections()
        == 20));
    // 20 for the clients here, 20 for the server's side.
    assert!(wait_until(Duration::from_secs(5), || open_descriptors() == before + 40));
    assert_eq!(open_descriptors(), before + 40);
    drop(clients);
    assert!(wait_until(Duration::from_secs(5), || open_descriptors() == before));
}
