//! SIGTERM drains (answers what was read, 503 with Retry-After to what
//! comes after, exits 0); SIGHUP reloads codex.conf without dropping a
//! connection, and keeps the configuration in force when the new file is
//! invalid.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Codex, SECRET, TestDb, base_config, seed_body, wait_until};

/// One answer read off a keep-alive connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: bool,
    close: bool,
    body: String,
}

/// A keep-alive HTTP/1.1 client.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one request; `Err` when the connection fails before an answer.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<Answer> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body.as_bytes())?;
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut length, mut retry_after, mut close) = (0usize, false, false);
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "retry-after" => retry_after = true,
                "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(Answer {
            status,
            retry_after,
            close,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn deliver(&mut self, id: i64, secret: &str) -> std::io::Result<Answer> {
        let body = seed_body("ticket.created", id, 2, "2024-01-01T00:00:00Z").to_string();
        self.send(
            "POST",
            "/webhooks/freshservice/ticket",
            &[
                ("X-Webhook-Secret", secret),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
    }
}

fn signal(codex: &Codex, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &codex.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[derive(Default)]
struct Tally {
    acknowledged: Vec<i64>,
    refused_503: usize,
    other: Vec<String>,
    unanswered: usize,
}

fn sigterm_under_load_answers_2xx_or_503_and_exits_0(backend: Backend) {
    let db = TestDb::new(&backend);
    let mut codex = Codex::start(&db, "[server]\nthreads = 16\n");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|n| {
            let (addr, tally, stop) = (codex.addr, tally.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut id = 1_000_000 * (n + 1);
                let mut client: Option<Client> = None;
                // Bounded: the service is gone within a minute at most.
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    let mut current = match client.take() {
                        Some(client) => client,
                        None => match Client::connect(addr) {
                            Ok(client) => client,
                            // The listener is closed: the service stopped.
                            Err(_) => break,
                        },
                    };
                    id += 1;
                    match current.deliver(id, SECRET) {
                        Ok(answer) => {
                            let mut tally = tally.lock().unwrap();
                            match answer.status {
                                200 | 201 => tally.acknowledged.push(id),
                                503 if answer.retry_after => tally.refused_503 += 1,
                                _ => tally.other.push(format!("{answer:?}")),
                            }
                            if !answer.close {
                                client = Some(current);
                            }
                        }
                        Err(_) => tally.lock().unwrap().unanswered += 1,
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(60), || tally
        .lock()
        .unwrap()
        .acknowledged
        .len()
        >= 300));
    let status = codex.terminate();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(status.code(), Some(0), "{}", codex.logs());
    let tally = tally.lock().unwrap();
    eprintln!(
        "acknowledged {}, refused 503 {}, unanswered {}",
        tally.acknowledged.len(),
        tally.refused_503,
        tally.unanswered
    );
    assert!(tally.other.is_empty(), "{:?}", tally.other);
    assert!(
        tally.refused_503 > 0,
        "no request was refused while draining"
    );
    // Every request sent got an answer: connections stay open through the
    // drain, and the listener closes before the last ones are answered.
    assert_eq!(tally.unanswered, 0, "requests were left unanswered");
    let stored: std::collections::HashSet<i64> = db
        .rows("SELECT external_id FROM ticket_details")
        .into_iter()
        .filter_map(|row| row[0].as_deref().and_then(|id| id.parse().ok()))
        .collect();
    common::assert_all_stored(&stored, &tally.acknowledged);
}

for_each_backend!(sigterm_under_load_answers_2xx_or_503_and_exits_0);

#[test]
fn sighup_reloads_without_dropping_a_connection() {
    let db = TestDb::new(&Backend::Sqlite);
    // RUST_LOG lets everything through; log_level decides.
    let codex = Codex::start_with_env(&db, "", &[("RUST_LOG", "trace")]);
    let mut client = Client::connect(codex.addr).unwrap();
    assert_eq!(client.deliver(1, SECRET).unwrap().status, 201);
    assert!(!codex.logs().contains("DEBUG"), "{}", codex.logs());

    let new_secret = "Rot4Wd8Qp2Yt6Mn1Bv9Cx3Zr7Ls5Kf0Ej";
    std::fs::write(
        &codex.config_path,
        base_config(
            &db,
            &format!(
                "[server]\nlog_level = debug\ntrusted_proxies = 10.0.0.0/8\nthreads = 3\n\
                 [webhooks]\nsecret = {new_secret}\nallowed_ips = 127.0.0.1/32\nrate_limit_per_minute = 4\n"
            ),
        ),
    )
    .unwrap();
    signal(&codex, "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || codex
            .logs()
            .contains("rate_limit_per_minute: 100000 -> 4")),
        "{}",
        codex.logs()
    );
    let logs = codex.logs();
    for change in [
        "configuration reloaded: [webhooks] secret: changed",
        "configuration reloaded: [webhooks] allowed_ips:  -> 127.0.0.1/32",
        "configuration reloaded: [server] trusted_proxies:  -> 10.0.0.0/8",
        "configuration reloaded: [server] log_level: info -> debug",
        "[server] threads changed, but takes effect only after a restart",
    ] {
        assert!(logs.contains(change), "missing '{change}' in\n{logs}");
    }
    assert!(!logs.contains(new_secret), "a secret was logged:\n{logs}");

    // The same connection, still open, now answers to the new settings.
    assert_eq!(client.deliver(2, new_secret).unwrap().status, 201);
    let old = client.deliver(3, SECRET).unwrap();
    assert_eq!(old.status, 401, "{old:?}");
    // A refusal on the head closes its connection (its body is not read).
    let mut client = Client::connect(codex.addr).unwrap();
    // The new rate limit: 4 a minute (refused requests count too), of
    // which 2 are spent.
    assert_eq!(client.deliver(4, new_secret).unwrap().status, 201);
    assert_eq!(client.deliver(5, new_secret).unwrap().status, 201);
    let limited = client.deliver(6, new_secret).unwrap();
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.retry_after);
    assert!(
        codex
            .logs()
            .contains("POST /webhooks/freshservice/ticket from 127.0.0.1"),
        "log_level = debug is not in force:\n{}",
        codex.logs()
    );
}

#[test]
fn sighup_with_an_invalid_file_keeps_the_configuration_in_force() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "");
    let mut client = Client::connect(codex.addr).unwrap();
    assert_eq!(client.deliver(1, SECRET).unwrap().status, 201);
    std::fs::write(
        &codex.config_path,
        base_config(
            &db,
            "[server]\nthreads = many\n[webhooks]\nsecret = Ano5Gh2Jk8Lq3Wr9Ty4Ui7Op1As6Df0Zx\nallowed_ips = nonsense\n",
        ),
    )
    .unwrap();
    signal(&codex, "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || codex
            .logs()
            .contains("reload refused, the configuration in force is kept")),
        "{}",
        codex.logs()
    );
    assert!(
        codex.logs().contains("[webhooks] allowed_ips"),
        "{}",
        codex.logs()
    );
    // Still running, same connection, same secret.
    let answer = client.deliver(2, SECRET).unwrap();
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(
        client
            .deliver(3, "Ano5Gh2Jk8Lq3Wr9Ty4Ui7Op1As6Df0Zx")
            .unwrap()
            .status,
        401
    );
    // A later valid file is taken.
    std::fs::write(
        &codex.config_path,
        base_config(&db, "[webhooks]\nrate_limit_per_minute = 3\n"),
    )
    .unwrap();
    signal(&codex, "HUP");
    assert!(wait_until(Duration::from_secs(10), || codex
        .logs()
        .contains("rate_limit_per_minute: 100000 -> 3")));
}

#[test]
fn sighup_turns_polling_on_with_the_new_settings() {
    let db = TestDb::new(&Backend::Sqlite);
    let fake = common::fake_freshservice::FakeFreshservice::start();
    fake.add_tickets(1, 3, 2);
    let codex = Codex::start(&db, "");
    assert_eq!(
        codex.get("/webhooks/health").json()["polling"]["role"],
        "disabled"
    );
    assert!(fake.requests().is_empty());
    std::fs::write(
        &codex.config_path,
        base_config(
            &db,
            &format!(
                "{}[scheduler]\nsync_tickets_enabled = true\n",
                fake.config()
            ),
        ),
    )
    .unwrap();
    let mut client = Client::connect(codex.addr).unwrap();
    assert_eq!(client.deliver(100, SECRET).unwrap().status, 201);
    signal(&codex, "HUP");
    assert!(
        wait_until(Duration::from_secs(30), || db.count(
            "SELECT COUNT(*) FROM ticket_details WHERE external_id IN ('1', '2', '3')"
        ) == 3),
        "{}",
        codex.logs()
    );
    assert!(
        codex
            .logs()
            .contains("configuration reloaded: [scheduler] sync_tickets_enabled: false -> true"),
        "{}",
        codex.logs()
    );
    assert_ne!(
        codex.get("/webhooks/health").json()["polling"]["role"],
        "disabled"
    );
    // The connection opened before the reload still serves.
    assert_eq!(client.deliver(101, SECRET).unwrap().status, 201);
}
