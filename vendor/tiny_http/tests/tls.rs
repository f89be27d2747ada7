//! Codex patch 17: TLS on accepted connections, over real sockets on
//! 127.0.0.1, with a self-signed certificate made by `openssl` for the test.

use std::convert::TryFrom;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tiny_http::{Gate, Head, Limits, Response, Server};

/// Answers `/refused` with 401 from the head (codex patch 13).
struct RefuseAtHead;

impl Gate for RefuseAtHead {
    fn check(&self, head: &Head<'_>) -> Option<Response<std::io::Cursor<Vec<u8>>>> {
        (head.url == "/refused").then(|| Response::from_string("no").with_status_code(401))
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
fn certificate(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tiny-http-tls-{}-{}", std::process::id(), name));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let pair = (
        CertificateDer::from_pem_file(&cert).unwrap(),
        PrivateKeyDer::from_pem_file(&key).unwrap(),
    );
    std::fs::remove_dir_all(&dir).ok();
    pair
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server on a free port whose workers answer "<url> <body length>".
fn serve(
    limits: Limits,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (SocketAddr, Arc<Server>) {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(
        Server::from_listener_with_tls(
            listener,
            limits,
            Arc::new(RefuseAtHead),
            Some(Arc::new(config)),
        )
        .unwrap(),
    );
    for _ in 0..2 {
        let server: Weak<Server> = Arc::downgrade(&server);
        std::thread::spawn(move || {
            while let Some(server) = server.upgrade() {
                if let Ok(Some(mut rq)) = server.recv_timeout(Duration::from_millis(50)) {
                    drop(server);
                    let mut body = Vec::new();
                    rq.as_reader().read_to_end(&mut body).ok();
                    let text = format!("{} {} {}", rq.url(), body.len(), rq.secure());
                    let _ = rq.respond(Response::from_string(text));
                }
            }
        });
    }
    (addr, server)
}

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client that trusts only `cert`.
fn connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(session, socket)
}

/// Reads one answer: its status line and its body (by `Content-Length`).
fn answer(client: &mut Client) -> (String, String) {
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
    let mut body = vec![0u8; length];
    client.read_exact(&mut body).unwrap();
    let status = head.lines().next().unwrap().to_string();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn patch17_requests_over_tls_keep_alive_read_bodies_and_pass_the_gate() {
    let (cert, key) = certificate("serve");
    let (addr, _server) = serve(Limits::default(), cert.clone(), key);
    let mut client = connect(addr, &cert);
    client
        .write_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(
        answer(&mut client),
        ("HTTP/1.1 200 OK".to_string(), "/first 0 true".to_string())
    );
    // The same connection, a body bigger than one read from the socket.
    let body = vec![b'x'; 40_000];
    write!(
        client,
        "POST /second HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    client.write_all(&body).unwrap();
    assert_eq!(answer(&mut client).1, "/second 40000 true");
    // The gate answers the head over TLS as over plain TCP.
    client
        .write_all(b"POST /refused HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let (status, _) = answer(&mut client);
    assert!(status.starts_with("HTTP/1.1 401"), "{}", status);
}

#[test]
fn patch17_plain_http_and_a_stalled_handshake_are_closed() {
    let (cert, key) = certificate("refuse");
    let limits = Limits {
        first_byte_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (addr, server) = serve(limits, cert, key);
    // Plain HTTP to the TLS port: closed, no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let read = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(read.is_ok() || read.unwrap_err().kind() != ErrorKind::WouldBlock);
    // A handshake begun and never finished is closed at the first-byte
    // deadline, however the bytes trickle.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stalled.write_all(&[0x00]).ok();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{:?}",
        waited
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.open_connections() > 0 {
        assert!(Instant::now() < deadline, "connections stay open");
        std::thread::sleep(Duration::from_millis(10));
    }
}
