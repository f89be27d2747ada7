//! Test harness: starts the real `codex` binary on port 0 against a real
//! database (a temp SQLite file, or a throwaway PostgreSQL database), and
//! speaks HTTP to it over real sockets.

#![allow(dead_code)]

pub mod fake_freshservice;
pub mod fake_superops;
pub mod fault_proxy;
pub mod pg_cluster;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "Tst7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga";

/// Which database a test runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// An admin connection string to a server where test databases are created.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL server named by `CODEX_TEST_DATABASE_URL`. Tests that
    /// call this are ignored unless the build has `codex_postgres_tests`
    /// (see build.rs), which that same variable turns on.
    pub fn postgres() -> Backend {
        match std::env::var("CODEX_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Backend::Postgres(url),
            _ => panic!(
                "CODEX_TEST_DATABASE_URL was set when the tests were built but is not set now"
            ),
        }
    }
}

/// Generates one `#[test]` per backend for each named test function
/// `fn name(backend: Backend)`.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::common::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                #[cfg_attr(
                    not(codex_postgres_tests),
                    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
                )]
                fn $name() {
                    super::$name($crate::common::Backend::postgres())
                }
            )*
        }
    };
}

/// A database for one test, removed afterwards.
pub struct TestDb {
    pub backend: Backend,
    /// The connection string Codex is given.
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<(String, String)>,
}

impl TestDb {
    pub fn new(backend: &Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite:///{}", dir.path().join("codex.db").display());
                TestDb {
                    backend: backend.clone(),
                    url,
                    dir,
                    pg_name: None,
                }
            }
            Backend::Postgres(admin) => {
                let name = format!("codex_test_{}_{}", std::process::id(), unique());
                let mut client = postgres::Client::connect(admin, postgres::NoTls)
                    .expect("connect to test PostgreSQL");
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create database");
                let url = with_dbname(admin, &name);
                TestDb {
                    backend: backend.clone(),
                    url,
                    dir,
                    pg_name: Some((admin.clone(), name)),
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// SQL reading the journal's `body` as text.
    pub fn body_text(&self) -> &'static str {
        if self.is_postgres() {
            "convert_from(body, 'UTF8')"
        } else {
            "CAST(body AS TEXT)"
        }
    }

    /// Runs a query and returns every column as text (NULL as None).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match &self.backend {
            Backend::Sqlite => {
                let path = self.url.strip_prefix("sqlite:///").expect("sqlite url");
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                let mut stmt = conn.prepare(sql).expect("prepare");
                let n = stmt.column_count();
                stmt.query_map([], |row| {
                    (0..n)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Some(String::from_utf8_lossy(t).into_owned())
                                }
                                rusqlite::types::ValueRef::Blob(b) => {
                                    Some(String::from_utf8_lossy(b).into_owned())
                                }
                            })
                        })
                        .collect()
                })
                .expect("query")
                .collect::<Result<Vec<_>, _>>()
                .expect("rows")
            }
            Backend::Postgres(_) => {
                let mut client =
                    postgres::Client::connect(&self.url, postgres::NoTls).expect("connect");
                let rows = client.simple_query(sql).expect("query");
                rows.into_iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_string))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// Runs a script of several statements.
    pub fn execute(&self, script: &str) {
        match &self.backend {
            Backend::Sqlite => {
                let path = self.url.strip_prefix("sqlite:///").expect("sqlite url");
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                conn.execute_batch(script).expect("script");
            }
            Backend::Postgres(_) => {
                let mut client =
                    postgres::Client::connect(&self.url, postgres::NoTls).expect("connect");
                client.batch_execute(script).expect("script");
            }
        }
    }

    /// The single value of a one-row, one-column query.
    pub fn value(&self, sql: &str) -> Option<String> {
        self.rows(sql)
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.value(sql).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// The stored ticket as column -> text.
    pub fn ticket(&self, id: i64) -> Option<HashMap<String, Option<String>>> {
        self.ticket_of("freshservice", id)
    }

    /// The stored ticket of `provider` as column -> text.
    pub fn ticket_of(&self, provider: &str, id: i64) -> Option<HashMap<String, Option<String>>> {
        let columns = [
            "subject",
            "status",
            "priority",
            "status_id",
            "priority_id",
            "requester_email",
            "requester_name",
            "requester_id",
            "responder_id",
            "group_id",
            "department_id",
            "created_at",
            "last_updated_at",
            "closed_at",
            "webhook_updated_at",
            "synced_at",
            "last_source",
            "revision",
            "description",
            "is_escalated",
        ];
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("CAST({c} AS TEXT)"))
            .collect();
        let rows = self.rows(&format!(
            "SELECT {} FROM ticket_details WHERE external_id = {id} AND external_source = '{provider}'",
            select.join(", ")
        ));
        rows.into_iter()
            .next()
            .map(|row| columns.iter().map(|c| c.to_string()).zip(row).collect())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg_name {
            if let Ok(mut client) = postgres::Client::connect(admin, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Replaces the database name of a `postgresql://…/db?…` URL.
pub fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| scheme_end + i);
    let host = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    format!("{host}/{name}{query}")
}

/// A file of tests/fixtures.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A database with the predecessor's tables, created by its exact DDL.
pub fn predecessor_db(backend: &Backend) -> TestDb {
    let db = TestDb::new(backend);
    let ddl = if db.is_postgres() {
        "predecessor/ddl-postgresql.sql"
    } else {
        "predecessor/ddl-sqlite.sql"
    };
    db.execute(&fixture(ddl));
    db
}

/// A running `codex serve`.
pub struct Codex {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<String>>,
    pub config_path: PathBuf,
}

/// The configuration every test starts from, with `extra` merged over it
/// key by key.
pub fn base_config(db: &TestDb, extra: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let defaults = format!(
        "[server]\nbind = 127.0.0.1:0\nthreads = 8\n\
         [database]\nconnection_string = {}\n\
         [webhooks]\nenabled = true\nsecret = {SECRET}\nrate_limit_per_minute = 100000\n\
         [scheduler]\nsync_tickets_enabled = false\n",
        db.url
    );
    for text in [defaults.as_str(), extra] {
        let mut current = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                current = line.to_string();
                if !sections.iter().any(|(name, _)| *name == current) {
                    sections.push((current.clone(), Vec::new()));
                }
            } else if let Some((key, _)) = line.split_once('=') {
                let section = &mut sections
                    .iter_mut()
                    .find(|(name, _)| *name == current)
                    .expect("key before section")
                    .1;
                section.retain(|existing| {
                    existing.split_once('=').map(|(k, _)| k.trim()) != Some(key.trim())
                });
                section.push(line.to_string());
            }
        }
    }
    sections
        .into_iter()
        .map(|(name, lines)| format!("{name}\n{}\n", lines.join("\n")))
        .collect()
}

impl Codex {
    /// Starts Codex on `db` with `extra` configuration merged over the defaults.
    pub fn start(db: &TestDb, extra: &str) -> Codex {
        Codex::start_with_env(db, extra, &[])
    }

    pub fn start_with_env(db: &TestDb, extra: &str, env: &[(&str, &str)]) -> Codex {
        let config_path = db.dir.path().join(format!("codex-{}.conf", unique()));
        std::fs::write(&config_path, base_config(db, extra)).expect("write config");
        Codex::start_config(&config_path, env)
    }

    pub fn start_config(config_path: &Path, env: &[(&str, &str)]) -> Codex {
        Codex::start_program(
            config_path,
            env,
            Path::new(env!("CARGO_BIN_EXE_codex")),
            &[],
        )
    }

    /// Starts `program` (a codex binary) on `config_path`, run through
    /// `wrapper` when it is not empty (such as `prlimit --nofile=1024 --`,
    /// which executes it in its own place: the pid is codex's).
    pub fn start_program(
        config_path: &Path,
        env: &[(&str, &str)],
        program: &Path,
        wrapper: &[&str],
    ) -> Codex {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env_remove("CODEX_WEBHOOK_SECRET")
            .env_remove("CODEX_WEBHOOK_SIGNING_SECRETS")
            .env_remove("CODEX_DATABASE_URL")
            .env_remove("CODEX_FRESHSERVICE_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        Codex::spawn(command, config_path)
    }

    /// Starts `command` (a `codex serve`, possibly behind a wrapper that
    /// passes it a socket) and waits for it to say where it listens.
    pub fn spawn(mut command: Command, config_path: &Path) -> Codex {
        command.stderr(Stdio::piped());
        let mut child = command.spawn().expect("start codex");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let rest = line
                    .split("listening on http://")
                    .nth(1)
                    .or_else(|| line.split("listening on https://").nth(1));
                if let Some(rest) = rest {
                    if let Some(tx) = addr_tx.take() {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = tx.send(addr);
                    }
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                // The log is complete once the reader has seen the end of
                // stderr.
                wait_until(Duration::from_secs(5), || reader.is_finished());
                panic!(
                    "codex did not start ({status:?}):\n{}",
                    logs.lock().unwrap()
                );
            }
        };
        Codex {
            child: Some(child),
            addr,
            logs,
            config_path: config_path.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// POSTs a delivery to the Freshservice endpoint with the test secret.
    pub fn deliver(&self, body: &str) -> Response {
        self.request(
            "POST",
            "/webhooks/freshservice/ticket",
            &[
                ("X-Webhook-Secret", SECRET),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    pub fn deliver_json(&self, body: &Value) -> Response {
        self.deliver(&body.to_string())
    }

    /// POST /webhooks/test with `headers`.
    pub fn test_auth(&self, headers: &[(&str, &str)]) -> Response {
        self.request("POST", "/webhooks/test", headers, b"")
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        try_request(self.addr, method, path, headers, body).unwrap_or_else(|e| {
            // A failure here is rare and timing-dependent: say whether the
            // process was still there and what it logged, so it can be told apart.
            let state = self
                .child
                .as_ref()
                .and_then(|child| {
                    std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()
                })
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
                .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| "gone".to_string());
            panic!(
                "{method} {path}: {e} (codex process state: {state}); its log:\n{}",
                self.logs()
            )
        })
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        wait_with_deadline(&mut child, Duration::from_secs(30))
    }
}

impl Drop for Codex {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        // The poll interval of a wait with a deadline.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP response as the tests see it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like `request`, but a failed connection or an unreadable answer is an
/// error rather than a panic (for tests that stop the server mid-load).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    stream.write_all(body).map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("receive: {e}"))?;
    parse_response(&raw).ok_or_else(|| format!("bad response: {:?}", String::from_utf8_lossy(&raw)))
}

/// A connection to `addr` from the local address `from` (any address of
/// 127.0.0.0/8 is this machine's), with a 30 s read timeout.
pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect(&addr.into())?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// Reads one answer off `stream` until the server closes it.
pub fn read_response(stream: &mut TcpStream) -> Result<Response, String> {
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("receive: {e}"))?;
    parse_response(&raw).ok_or_else(|| format!("bad response: {:?}", String::from_utf8_lossy(&raw)))
}

/// POSTs a delivery with the test secret to `addr`, as `try_request`.
pub fn try_deliver(addr: SocketAddr, body: &str) -> Result<Response, String> {
    try_request(
        addr,
        "POST",
        "/webhooks/freshservice/ticket",
        &[
            ("X-Webhook-Secret", SECRET),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Polls `condition` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, condition: impl FnMut() -> bool) -> bool {
    wait_until_every(limit, Duration::from_millis(20), condition)
}

/// Polls `condition` every `interval` until it holds or `limit` passes:
/// for conditions whose every check costs the service something (a
/// delivery, say), so they are not tried more often than a sender would.
pub fn wait_until_every(
    limit: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        // The poll interval of a wait with a deadline: the only sleep
        // that stands between a test and its condition.
        std::thread::sleep(interval);
    }
}

/// The names of process `pid`'s threads (empty once it has ended).
pub fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim_end().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Threads of process `pid` serving a client connection (the vendored
/// tiny_http names each `tiny-http-conn`): one lives as long as its
/// connection, and its socket is closed before it ends.
pub fn connection_threads(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|name| *name == "tiny-http-conn")
        .count()
}

/// Request workers (`codex-http-N`) of process `pid`: the elastic pool.
pub fn request_workers(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|name| name.starts_with("codex-http-"))
        .count()
}

/// Waits until process `pid` serves no connection: the ones of requests
/// just answered have closed and their threads have ended.
pub fn wait_for_no_connections(pid: u32) -> bool {
    wait_until(Duration::from_secs(10), || connection_threads(pid) == 0)
}

/// A seed-shaped Freshservice delivery.
pub fn seed_body(event: &str, ticket_id: i64, status_id: i64, updated_at: &str) -> Value {
    serde_json::json!({
        "event": event,
        "ticket_id": ticket_id,
        "subject": format!("Ticket {ticket_id}"),
        "status_id": status_id,
        "priority_id": 2,
        "requester_email": "user@example.com",
        "requester_name": "A User",
        "requester_id": 1001,
        "responder_id": 2002,
        "group_id": 3003,
        "department_id": 4004,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": updated_at,
    })
}

/// Runs the `codex` binary with arguments and returns (status, stdout, stderr).
pub fn run_codex(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    run_codex_in(Path::new("."), args, env)
}

/// `run_codex` in the working directory `dir`.
pub fn run_codex_in(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codex"));
    command
        .current_dir(dir)
        .args(args)
        .env_remove("CODEX_CONFIG")
        .env_remove("CODEX_WEBHOOK_SECRET")
        .env_remove("CODEX_DATABASE_URL")
        .env_remove("CODEX_FRESHSERVICE_API_KEY")
        .env_remove("CODEX_SUPEROPS_API_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run codex");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `codex migrate` with the configuration at `conf` when its SQLite
/// database does not exist yet: `sync --once` and `status` never create
/// one.
pub fn migrate_once(conf: &Path) {
    let (status, _, err) = run_codex(&["migrate", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "codex migrate: {err}");
}

/// Fails naming the acknowledged deliveries missing from `stored`.
pub fn assert_all_stored(stored: &std::collections::HashSet<i64>, acknowledged: &[i64]) {
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged deliveries lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
}
