//! The calibration for `scripts/bench.sh`: the durable work of a webhook
//! delivery and nothing else, in Codex's shape, so that Codex's figures can
//! be read as a share of what this design does on the same machine.
//!
//! tiny_http (the vendored copy Codex serves with) and a pool of worker
//! threads; each worker reads a delivery, parses it with serde_json and
//! hands it over a bounded channel to the one SQLite writer, which commits
//! whatever has queued as one transaction (group commit): an upsert into the
//! predecessor's `ticket_details` (with its seven indexes) of the columns
//! Codex writes from such a delivery (the status and priority also by name,
//! as the predecessor stores them), and a journal row with the raw body per
//! delivery, WAL with `synchronous = FULL`. A worker
//! answers 200 once its delivery's COMMIT has returned. No checks, no
//! versioning, no logging, no metrics.
//!
//!   calibration <bind address> <database file> [worker threads (64)]
//!
//! It takes the requests of `scripts/bench/deliveries.lua` (any path, any
//! headers) and serves until killed.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, params};
use serde::Deserialize;
use socket2::{Domain, Socket, Type};
use tiny_http::{Header, Limits, Response, Server};

/// The predecessor's tables and indexes, as Codex takes them over.
const PREDECESSOR_DDL: &str = include_str!("../tests/fixtures/predecessor/ddl-sqlite.sql");
/// The journal: one row per delivery, raw body included.
const JOURNAL_DDL: &str = "CREATE TABLE webhook_events (id INTEGER PRIMARY KEY, \
    provider TEXT NOT NULL, received_at TEXT NOT NULL, event TEXT, ticket_id BIGINT, body BLOB NOT NULL)";
const UPSERT: &str = "INSERT INTO ticket_details (external_id, external_source, subject, status_id, \
    priority_id, requester_email, requester_name, requester_id, responder_id, group_id, \
    department_id, last_updated_at, webhook_updated_at, status, priority) \
    VALUES (?1, 'freshservice', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
    ON CONFLICT (external_id, external_source) DO UPDATE SET subject = excluded.subject, \
    status_id = excluded.status_id, priority_id = excluded.priority_id, \
    status = excluded.status, priority = excluded.priority, \
    requester_email = excluded.requester_email, requester_name = excluded.requester_name, \
    requester_id = excluded.requester_id, responder_id = excluded.responder_id, \
    group_id = excluded.group_id, department_id = excluded.department_id, \
    last_updated_at = excluded.last_updated_at, webhook_updated_at = excluded.webhook_updated_at";
const JOURNAL: &str = "INSERT INTO webhook_events (provider, received_at, event, ticket_id, body) \
    VALUES ('freshservice', ?1, ?2, ?3, ?4)";
/// Deliveries that may wait for the writer (the workers block beyond it).
const QUEUE: usize = 1024;
/// The most deliveries one transaction takes.
const BATCH: usize = 512;

/// The fields of a seed-shaped Freshservice delivery.
#[derive(Deserialize)]
struct Ticket {
    event: Option<String>,
    ticket_id: i64,
    subject: Option<String>,
    status_id: Option<i64>,
    priority_id: Option<i64>,
    requester_email: Option<String>,
    requester_name: Option<String>,
    requester_id: Option<i64>,
    responder_id: Option<i64>,
    group_id: Option<i64>,
    department_id: Option<i64>,
    updated_at: Option<String>,
}

/// One delivery for the writer, and where to say it is committed.
struct Write {
    received_at: String,
    ticket: Ticket,
    body: Vec<u8>,
    done: oneshot::Sender<bool>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: calibration <bind address> <database file> [worker threads]");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("a bind address such as 127.0.0.1:8080");
    let threads: usize = args
        .next()
        .map_or(64, |n| n.parse().expect("a thread count"));

    let conn = Connection::open(&path).expect("open the database");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA synchronous = FULL").unwrap();
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'ticket_details'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    if !exists {
        conn.execute_batch(PREDECESSOR_DDL).unwrap();
        conn.execute_batch(JOURNAL_DDL).unwrap();
    }

    let (writes, queue) = crossbeam_channel::bounded(QUEUE);
    std::thread::Builder::new()
        .name("cal-writer".into())
        .spawn(move || write(conn, &queue))
        .unwrap();

    let server =
        Arc::new(Server::from_listener_with_limits(bind(addr), Limits::default()).unwrap());
    let workers: Vec<_> = (0..threads)
        .map(|n| {
            let server = server.clone();
            let writes = writes.clone();
            std::thread::Builder::new()
                .name(format!("cal-http-{n}"))
                .stack_size(256 * 1024)
                .spawn(move || serve(&server, &writes))
                .unwrap()
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

/// The listening socket as Codex binds it (address reuse, no Nagle, a
/// backlog of 1024).
fn bind(addr: SocketAddr) -> TcpListener {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_tcp_nodelay(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(1024).unwrap();
    socket.into()
}

/// A worker: read, parse, hand to the writer, wait for the COMMIT, answer.
fn serve(server: &Server, writes: &Sender<Write>) {
    let json = Header::from_bytes("Content-Type", "application/json").unwrap();
    loop {
        let Ok(mut request) = server.recv() else {
            return;
        };
        let received_at = jiff::Timestamp::now().to_string();
        let mut body = Vec::new();
        let parsed = request
            .as_reader()
            .read_to_end(&mut body)
            .ok()
            .and_then(|_| serde_json::from_slice::<Ticket>(&body).ok());
        let status = match parsed {
            Some(ticket) => {
                let (done, committed) = oneshot::channel();
                writes
                    .send(Write {
                        received_at,
                        ticket,
                        body,
                        done,
                    })
                    .unwrap();
                if committed.recv().unwrap_or(false) {
                    200
                } else {
                    500
                }
            }
            None => 400,
        };
        let answer = Response::from_string(if status == 200 {
            r#"{"status":"ok"}"#
        } else {
            "{}"
        })
        .with_status_code(status)
        .with_header(json.clone());
        let _ = request.respond(answer);
    }
}

/// The writer: takes what has queued (at least one delivery, at most
/// `BATCH`), writes it in one transaction, then answers every one of them.
fn write(mut conn: Connection, queue: &Receiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let committed = commit(&mut conn, &batch).is_ok();
        for write in batch.drain(..) {
            let _ = write.done.send(committed);
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Write]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT)?;
        let mut journal = tx.prepare_cached(JOURNAL)?;
        for write in batch {
            let t = &write.ticket;
            upsert.execute(params![
                t.ticket_id,
                t.subject,
                t.status_id,
                t.priority_id,
                t.requester_email,
                t.requester_name,
                t.requester_id,
                t.responder_id,
                t.group_id,
                t.department_id,
                t.updated_at,
                t.updated_at,
                t.status_id.map(status),
                t.priority_id.map(priority),
            ])?;
            journal.execute(params![write.received_at, t.event, t.ticket_id, write.body])?;
        }
    }
    tx.commit()
}

/// Freshservice's status names for the ids the benchmark sends.
fn status(id: i64) -> &'static str {
    match id {
        2 => "open",
        3 => "pending",
        4 => "resolved",
        5 => "closed",
        8 => "scheduled",
        9 => "waiting_customer",
        13 => "under_investigation",
        _ => "unknown",
    }
}

/// Freshservice's priority names.
fn priority(id: i64) -> &'static str {
    match id {
        1 => "low",
        2 => "medium",
        3 => "high",
        _ => "urgent",
    }
}
