//! HTTPS without a proxy (issue 17): `[server] tls_cert` and `tls_key`,
//! with a self-signed certificate made by `openssl` for each test; curl and
//! a rustls client speak to the real service over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use common::{Backend, Codex, SECRET, TestDb, seed_body, wait_until, wait_with_deadline};

/// A certificate for `localhost` and 127.0.0.1 and its key (mode 0600),
/// written as `<name>.crt` and `<name>.key` in `dir`.
fn make_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

fn tls_config(cert: &Path, key: &Path) -> String {
    format!(
        "[server]\ntls_cert = {}\ntls_key = {}\n",
        cert.display(),
        key.display()
    )
}

/// curl over HTTPS trusting only `ca`: the status code and the body.
fn curl(addr: SocketAddr, ca: &Path, args: &[&str], path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&output.stderr)),
    )
}

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A kept-alive TLS connection trusting only the certificate in `ca`.
fn connect(addr: SocketAddr, ca: &Path) -> Client {
    let socket = TcpStream::connect(addr).unwrap();
    connect_over(socket, ca)
}

/// TLS on `socket`, trusting only the certificate in `ca`.
fn connect_over(socket: TcpStream, ca: &Path) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let session =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(session, socket)
}

/// GET `path` on `client` (kept alive); the status code.
fn get(client: &mut Client, path: &str) -> u16 {
    write!(client, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).expect("an answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    client.read_exact(&mut vec![0u8; length]).unwrap();
    head[9..12].parse().unwrap()
}

/// The certificate the server presented on `client`.
fn presented(client: &Client) -> Vec<u8> {
    client.conn.peer_certificates().unwrap()[0].to_vec()
}

fn der(cert: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(cert).unwrap().to_vec()
}

#[test]
fn health_is_served_over_https() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let codex = Codex::start(&db, &tls_config(&cert, &key));
    assert!(wait_until(Duration::from_secs(10), || codex
        .logs()
        .contains("listening on https://")));
    let (status, body) = curl(codex.addr, &cert, &[], "/webhooks/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\""), "{body}");
}

#[test]
fn a_delivery_over_https_is_stored() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let codex = Codex::start(&db, &tls_config(&cert, &key));
    let body = seed_body("ticket_created", 4101, 2, "2026-01-05T10:00:00Z").to_string();
    let secret = format!("X-Webhook-Secret: {SECRET}");
    let args = [
        "-X",
        "POST",
        "-H",
        secret.as_str(),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body.as_str(),
    ];
    let (status, answer) = curl(codex.addr, &cert, &args, "/webhooks/freshservice/ticket");
    assert!((200..300).contains(&status), "{status} {answer}");
    assert!(
        wait_until(Duration::from_secs(10), || db.ticket(4101).is_some()),
        "the ticket is stored"
    );
}

#[test]
fn a_wrong_secret_gets_401_over_https() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let codex = Codex::start(&db, &tls_config(&cert, &key));
    let body = seed_body("ticket_created", 4102, 2, "2026-01-05T10:00:00Z").to_string();
    let args = [
        "-X",
        "POST",
        "-H",
        "X-Webhook-Secret: Wrg7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body.as_str(),
    ];
    let (status, answer) = curl(codex.addr, &cert, &args, "/webhooks/freshservice/ticket");
    assert_eq!(status, 401, "{answer}");
    assert!(db.ticket(4102).is_none());
}

#[test]
fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let (next_cert, next_key) = make_certificate(db.dir.path(), "second");
    let codex = Codex::start(&db, &tls_config(&cert, &key));
    let mut open = connect(codex.addr, &cert);
    assert_eq!(get(&mut open, "/webhooks/health"), 200);
    assert_eq!(presented(&open), der(&cert));

    // The files are replaced in place, as a renewal does.
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &codex.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        wait_until(Duration::from_secs(10), || codex
            .logs()
            .contains("read again; new connections get it")),
        "{}",
        codex.logs()
    );

    // The open connection goes on; a new one sees the new certificate.
    assert_eq!(get(&mut open, "/webhooks/health"), 200);
    let mut fresh = connect(codex.addr, &next_cert);
    assert_eq!(get(&mut fresh, "/webhooks/health"), 200);
    assert_eq!(presented(&fresh), der(&next_cert));
    assert_eq!(curl(codex.addr, &next_cert, &[], "/webhooks/health").0, 200);
}

#[test]
fn a_reload_with_a_broken_certificate_is_refused_and_the_old_one_kept() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let original = std::fs::read(&cert).unwrap();
    let codex = Codex::start(&db, &tls_config(&cert, &key));
    let mut open = connect(codex.addr, &cert);
    assert_eq!(get(&mut open, "/webhooks/health"), 200);
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &codex.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        wait_until(Duration::from_secs(10), || codex.logs().contains(
            "reload refused, the configuration in force is kept: [server] tls_cert"
        )),
        "{}",
        codex.logs()
    );
    assert_eq!(get(&mut open, "/webhooks/health"), 200);
    std::fs::write(&cert, &original).unwrap();
    let mut fresh = connect(codex.addr, &cert);
    assert_eq!(get(&mut fresh, "/webhooks/health"), 200);
    assert_eq!(presented(&fresh), der(&cert));
}

/// Runs `codex <command> --config <conf> <args>`, which must exit on its
/// own; whether it succeeded and its output.
fn run_codex(command: &str, conf: &Path) -> (bool, String) {
    run_codex_with(command, conf, &[])
}

fn run_codex_with(command: &str, conf: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_codex"))
        .args([command, "--config", conf.to_str().unwrap()])
        .args(args)
        .env_remove("CODEX_CONFIG")
        .env_remove("CODEX_WEBHOOK_SECRET")
        .env_remove("CODEX_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.success(), out)
}

#[test]
fn a_key_readable_by_others_is_refused_at_start_and_by_check_config() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let conf = db.dir.path().join("codex.conf");
    std::fs::write(&conf, common::base_config(&db, &tls_config(&cert, &key))).unwrap();
    let expected = format!("chmod 600 {}", key.display());
    for command in ["serve", "check-config"] {
        let (ok, out) = run_codex(command, &conf);
        assert!(!ok, "{command}: {out}");
        assert!(
            out.contains(&expected) && out.contains("open to other users"),
            "{command}: {out}"
        );
    }
}

#[test]
fn tls_cert_without_tls_key_is_refused() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, _) = make_certificate(db.dir.path(), "first");
    let conf = db.dir.path().join("codex.conf");
    let extra = format!("[server]\ntls_cert = {}\n", cert.display());
    std::fs::write(&conf, common::base_config(&db, &extra)).unwrap();
    for command in ["serve", "check-config"] {
        let (ok, out) = run_codex(command, &conf);
        assert!(!ok, "{command}: {out}");
        assert!(
            out.contains("[server] tls_cert is set but tls_key is not: set [server] tls_key"),
            "{command}: {out}"
        );
    }
}

#[test]
fn send_test_posts_over_https_trusting_the_configured_certificate() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let codex = Codex::start(&db, &tls_config(&cert, &key));
    let conf = db.dir.path().join("send-test.conf");
    std::fs::write(&conf, common::base_config(&db, &tls_config(&cert, &key))).unwrap();
    let url = format!("https://{}/webhooks/freshservice/ticket", codex.addr);
    let (ok, out) = run_codex_with("send-test", &conf, &["--url", &url]);
    assert!(ok, "{out}");
    assert!(out.contains("answered 201"), "{out}");
}

/// How one delivery over TLS went: `Ok(status)`, `Err(None)` when the
/// connection was refused (nothing sent), `Err(Some(why))` when it failed
/// after it was accepted.
fn deliver_once(addr: SocketAddr, ca: &Path, ticket: i64) -> Result<u16, Option<String>> {
    let socket = match TcpStream::connect(addr) {
        Ok(socket) => socket,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(None),
        Err(e) => return Err(Some(format!("connect: {e}"))),
    };
    let mut client = connect_over(socket, ca);
    let body = seed_body("ticket.updated", ticket, 2, "2024-05-01T00:00:00Z").to_string();
    let request = format!(
        "POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         X-Webhook-Secret: {SECRET}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client
        .write_all(request.as_bytes())
        .map_err(|e| Some(format!("write: {e}")))?;
    let mut answer = String::new();
    client
        .read_to_string(&mut answer)
        .map_err(|e| Some(format!("read: {e} after {answer:?}")))?;
    match answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
    {
        Some(503) if !answer.contains("Retry-After") => Err(Some(answer)),
        Some(status) => Ok(status),
        None => Err(Some(format!("no answer: {answer:?}"))),
    }
}

#[test]
fn sigterm_over_tls_answers_every_accepted_connection() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let mut codex = Codex::start(&db, &tls_config(&cert, &key));
    let addr = codex.addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..16i64)
        .map(|client| {
            let (stop, outcomes, cert) = (stop.clone(), outcomes.clone(), cert.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let outcome = deliver_once(addr, &cert, 1 + client * 1_000_000 + n);
                    outcomes.lock().unwrap().push(outcome);
                    n += 1;
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || {
        outcomes.lock().unwrap().len() >= 64
    }));
    let status = codex.terminate();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(status.success(), "{status:?}");
    let outcomes = outcomes.lock().unwrap();
    let drained = codex.logs();
    let drained = drained
        .lines()
        .find(|l| l.contains("from the listen backlog"))
        .unwrap_or("no connection was in the listen backlog");
    eprintln!("{} deliveries; {drained}", outcomes.len());
    let lost: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Ok(200 | 201 | 503) | Err(None)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} not answered: {lost:?}\n{}",
        lost.len(),
        outcomes.len(),
        codex.logs()
    );
}

#[test]
fn the_head_gate_refuses_before_100_continue_over_tls() {
    let db = TestDb::new(&Backend::Sqlite);
    let (cert, key) = make_certificate(db.dir.path(), "first");
    let codex = Codex::start(&db, &tls_config(&cert, &key));
    let mut client = connect(codex.addr, &cert);
    client
        .write_all(
            b"POST /webhooks/freshservice/ticket HTTP/1.1\r\nHost: localhost\r\n\
              X-Webhook-Secret: Wrg7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga\r\n\
              Content-Type: application/json\r\nExpect: 100-continue\r\n\
              Content-Length: 100000\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}
