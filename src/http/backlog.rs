//! The last step of a drain: the connections still waiting in the
//! listen backlog once the server stopped accepting. Closing a listener
//! with connections queued makes the kernel reset them, unanswered; so
//! each is accepted, its request read, and answered as a request read
//! during the drain is (`Failure::ShuttingDown`: 503 with Retry-After)
//! before the listener closes (over TLS when Codex serves HTTPS).
//!
//! First the kernel is told to start no new handshake on the listener
//! (`refuse_new_handshakes`), then the queue is emptied until no
//! connection has arrived for `HANDSHAKE_GRACE` (the handshakes already
//! under way complete and are answered too): otherwise a client connecting
//! between the last accept and the close would be reset, its connection
//! accepted by the kernel and never answered.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{SockFilter, SockRef};

use super::failure::Failure;

/// How long the drain waits for the next connection before it closes the
/// listener: a handshake under way when new ones were refused completes
/// within a round trip.
const HANDSHAKE_GRACE: Duration = Duration::from_millis(250);
/// How long one queued client may take to send its request, and then to
/// close its side after the answer.
const CLIENT_LIMIT: Duration = Duration::from_secs(2);
/// The most of a queued request read before answering (a larger one is
/// answered all the same; reading keeps the kernel from resetting).
const MAX_READ: usize = 2 * 1024 * 1024;

/// Stops new handshakes on `listener`, accepts what is queued until no
/// connection has arrived for `HANDSHAKE_GRACE`, answering each
/// connection 503 on a thread of its own, then closes the listener and
/// waits for the answers; with `tls`, each speaks TLS. Returns how many
/// were answered.
pub fn answer_queued(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> usize {
    // accept() waits at most HANDSHAKE_GRACE for the next connection.
    let waits = listener
        .set_nonblocking(false)
        .and_then(|()| SockRef::from(&listener).set_read_timeout(Some(HANDSHAKE_GRACE)));
    if let Err(error) = waits {
        log::warn!("cannot drain the listen backlog: {error}");
        return 0;
    }
    refuse_new_handshakes(&listener);
    let answer_bytes: Arc<[u8]> = Failure::ShuttingDown.answer().to_http().into();
    let mut answering: Vec<JoinHandle<()>> = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let tls = tls.clone();
                let reply = answer_bytes.clone();
                let spawned = std::thread::Builder::new()
                    .name("codex-backlog".to_string())
                    .stack_size(128 * 1024)
                    .spawn(move || answer(stream, tls, &reply));
                match spawned {
                    Ok(thread) => answering.push(thread),
                    Err(error) => log::warn!("cannot answer a queued connection: {error}"),
                }
            }
            // Nothing arrived within HANDSHAKE_GRACE: the queue is empty
            // and no handshake is finishing.
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break;
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if error.kind() == ErrorKind::ConnectionAborted => {}
            Err(error) => {
                log::warn!("draining the listen backlog stopped: {error}");
                break;
            }
        }
    }
    drop(listener);
    let answered = answering.len();
    for thread in answering {
        let _ = thread.join();
    }
    answered
}

/// Makes the kernel drop every SYN that would start a connection on
/// `listener` from now on: a socket filter (classic BPF) that looks at the
/// TCP flags. Such a client gets no SYN-ACK, sends its SYN again a second
/// later and then finds the listener closed (refused, nothing sent) or the
/// next Codex listening. Every other packet passes, so handshakes already
/// under way complete into the queue, and the connections accepted from
/// it (which inherit the filter) carry their requests as before. Should
/// the kernel refuse the filter, the drain goes on without it (the old,
/// narrow window).
fn refuse_new_handshakes(listener: &TcpListener) {
    /// A socket filter sees the segment from its TCP header on; byte 13
    /// holds the flags. "SYN without ACK" is dropped (return 0, keep no
    /// byte); anything else is kept whole.
    const DROP_NEW_SYN: [SockFilter; 5] = [
        SockFilter::new(0x30, 0, 0, 13),       // ldb [13]
        SockFilter::new(0x54, 0, 0, 0x12),     // and #(SYN | ACK)
        SockFilter::new(0x15, 0, 1, 0x02),     // jeq #SYN, drop, keep
        SockFilter::new(0x06, 0, 0, 0),        // drop: ret #0
        SockFilter::new(0x06, 0, 0, u32::MAX), // keep: ret #all
    ];
    if let Err(error) = SockRef::from(listener).attach_filter(&DROP_NEW_SYN) {
        log::warn!(
            "cannot stop new connections before answering the listen backlog: {error}; \
             a client connecting in the last moment may be reset"
        );
    }
}

/// Answers one queued connection `reply`, in TLS with `tls`.
fn answer(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, reply: &[u8]) {
    let deadline = Instant::now() + CLIENT_LIMIT;
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let Some(config) = tls else {
        exchange(&mut &stream, &stream, deadline, reply, |_| {});
        return;
    };
    let Ok(mut session) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut socket = &stream;
    let mut secured = rustls::Stream::new(&mut session, &mut socket);
    exchange(&mut secured, &stream, deadline, reply, |secured| {
        secured.conn.send_close_notify();
        let _ = secured.flush();
    });
}

/// Reads one request (head and, by Content-Length, body) from `stream`,
/// answers `reply`, ends its side (`finish`, then a FIN on `socket`), and
/// closes only once the client has closed its side (or after
/// `CLIENT_LIMIT`), so that no unread byte makes the kernel reset.
fn exchange<S: Read + Write>(
    stream: &mut S,
    socket: &TcpStream,
    deadline: Instant,
    reply: &[u8],
    finish: impl FnOnce(&mut S),
) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    while !request_complete(&received) && received.len() < MAX_READ {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        if socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .is_err()
        {
            return;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = socket.set_write_timeout(Some(CLIENT_LIMIT));
    let _ = stream.write_all(reply);
    let _ = stream.flush();
    finish(stream);
    let _ = socket.shutdown(Shutdown::Write);
    let _ = socket.set_read_timeout(Some(CLIENT_LIMIT));
    while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
}

/// Whether `received` holds a whole request: the head, and as many body
/// bytes as its Content-Length says.
fn request_complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]);
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    received.len() >= end + 4 + length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_complete_with_its_whole_body() {
        assert!(!request_complete(b"POST / HTTP/1.1\r\nHost: x\r\n"));
        assert!(request_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        let head = b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\n";
        assert!(!request_complete(&[&head[..], b"ab"].concat()));
        assert!(request_complete(&[&head[..], b"abcd"].concat()));
    }

    #[test]
    fn after_the_filter_no_new_connection_is_completed_and_queued_ones_are_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let queued = TcpStream::connect(addr).unwrap();
        refuse_new_handshakes(&listener);
        // The SYN is dropped: no SYN-ACK, so the connect cannot complete.
        let late = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            matches!(&late, Err(e) if e.kind() == ErrorKind::TimedOut),
            "{late:?}"
        );
        // The connection queued before the filter is still there, and its
        // bytes pass.
        listener.set_nonblocking(true).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), queued.local_addr().unwrap());
        assert!(matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock));
        (&queued).write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        accepted
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn the_answer_is_the_drains_and_says_its_length() {
        let bytes = Failure::ShuttingDown.answer().to_http();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nRetry-After: 5\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(body, r#"{"error":"Codex is shutting down; retry later"}"#);
    }
}
