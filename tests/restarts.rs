//! Stopping and restarting without dropping a request: on SIGTERM every
//! request sent before it is answered (2xx when stored, 503 with
//! Retry-After otherwise), none is reset, including those still in the
//! listen backlog; and a listening socket handed from one Codex to the
//! next (as systemd's codex.socket does) refuses and resets nothing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Codex, SECRET, TestDb, base_config, seed_body, wait_until};

/// How one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Answered with this status.
    Answered(u16),
    /// The connection was refused (the listener is closed): nothing was
    /// sent, the client knows to retry.
    Refused,
    /// The request was sent and the connection failed before an answer.
    Lost(String),
}

/// Sends one delivery on a new connection and reads the whole answer.
fn deliver(addr: SocketAddr, ticket: i64) -> Outcome {
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Outcome::Refused;
        }
        Err(error) => return Outcome::Lost(format!("connect: {error}")),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = seed_body("ticket.updated", ticket, 2, "2024-05-01T00:00:00Z").to_string();
    let request = format!(
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         X-Webhook-Secret: {SECRET}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(error) = stream.write_all(request.as_bytes()) {
        return Outcome::Lost(format!("write: {error}"));
    }
    let mut answer = String::new();
    if let Err(error) = BufReader::new(&stream).read_to_string(&mut answer) {
        return Outcome::Lost(format!("read: {error} after {answer:?}"));
    }
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok());
    match status {
        Some(503) if !answer.contains("Retry-After") => {
            Outcome::Lost(format!("503 without Retry-After: {answer}"))
        }
        Some(status) => Outcome::Answered(status),
        None => Outcome::Lost(format!("no answer: {answer:?}")),
    }
}

/// `clients` threads sending deliveries one after another (a new
/// connection each) until `stop` is set; each delivery's outcome.
fn send_until(
    addr: SocketAddr,
    clients: i64,
    stop: &Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<Mutex<Vec<Outcome>>>) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let threads = (0..clients)
        .map(|client| {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let outcome = deliver(addr, 1 + client * 1_000_000 + n);
                    outcomes.lock().unwrap().push(outcome);
                    n += 1;
                }
            })
        })
        .collect();
    (threads, outcomes)
}

#[test]
fn sigterm_under_32_connections_resets_nothing_three_times() {
    for round in 0..3 {
        let db = TestDb::new(&Backend::Sqlite);
        let mut codex = Codex::start(&db, "[server]\nthreads = 8\n");
        let addr = codex.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let (threads, outcomes) = send_until(addr, 32, &stop);
        assert!(wait_until(Duration::from_secs(20), || {
            outcomes.lock().unwrap().len() >= 64
        }));
        // Clients keep connecting through the drain, until the listener
        // is closed (refused: nothing sent); every connection accepted
        // by the kernel, in the backlog or not, must be answered.
        let status = codex.terminate();
        stop.store(true, Ordering::SeqCst);
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(status.success(), "round {round}: {status:?}");
        let outcomes = outcomes.lock().unwrap();
        let lost: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Answered(200 | 201 | 503) | Outcome::Refused))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} deliveries not answered: {lost:?}\n{}",
            lost.len(),
            outcomes.len(),
            codex.logs()
        );
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Answered(200 | 201)))
            .count() as i64;
        assert!(
            db.count("SELECT count(*) FROM ticket_details") >= stored,
            "round {round}"
        );
    }
}

/// The supervisor holding the socket, and its stdout for its answers.
struct Supervisor {
    child: std::process::Child,
    answers: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl Supervisor {
    fn start(config: &Path, log: &Path) -> Supervisor {
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/socket_supervisor.py"))
            .arg(env!("CARGO_BIN_EXE_codex"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("CODEX_WEBHOOK_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("python3");
        let mut answers = BufReader::new(child.stdout.take().unwrap());
        let port = Supervisor::read(&mut answers)[1].parse().unwrap();
        Supervisor {
            child,
            answers,
            port,
        }
    }

    fn read(answers: &mut BufReader<std::process::ChildStdout>) -> Vec<String> {
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        line.split_whitespace().map(str::to_string).collect()
    }

    fn say(&mut self, command: &str) -> Vec<String> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        Supervisor::read(&mut self.answers)
    }
}

#[test]
fn a_second_codex_on_the_same_socket_refuses_and_resets_nothing() {
    let db = TestDb::new(&Backend::Sqlite);
    let config = db.dir.path().join("codex.conf");
    std::fs::write(&config, base_config(&db, "[server]\nthreads = 8\n")).unwrap();
    let log = db.dir.path().join("codex.log");
    let mut supervisor = Supervisor::start(&config, &log);
    let addr: SocketAddr = ([127, 0, 0, 1], supervisor.port).into();
    let first = supervisor.say("start")[1].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let (threads, outcomes) = send_until(addr, 16, &stop);
    let answered = |outcomes: &Arc<Mutex<Vec<Outcome>>>| {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Outcome::Answered(200 | 201)))
            .count()
    };
    assert!(wait_until(Duration::from_secs(20), || answered(&outcomes) >= 50));
    // A restart: the first stops (draining) while clients keep sending,
    // and only then is the second started; meanwhile connections wait in
    // the socket's queue.
    let stopped = supervisor.say(&format!("stop {first}"));
    assert_eq!(stopped[2], "0", "{stopped:?}");
    let before_second = answered(&outcomes);
    let second = supervisor.say("start")[1].clone();
    assert!(wait_until(Duration::from_secs(20), || {
        answered(&outcomes) >= before_second + 50
    }));
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    supervisor.say(&format!("stop {second}"));
    drop(supervisor.child.stdin.take());
    let _ = supervisor.child.wait();

    let outcomes = outcomes.lock().unwrap();
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Answered(200 | 201 | 503)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} deliveries refused or reset: {failed:?}\n{}",
        failed.len(),
        outcomes.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logs.matches("is not used").count(), 2, "{logs}");
}
