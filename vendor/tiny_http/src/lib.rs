//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]
// Upstream's style, kept as vendored: these lints fire on code Codex did not
// write. Codex's patches (marked `codex patch N`) are clean of them.
#![allow(
    clippy::all,
    elided_lifetimes_in_paths,
    mismatched_lifetime_syntaxes,
    unexpected_cfgs
)]

use std::error::Error;
use std::io::Cursor;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use client::ClientConnection;
use connection::Connection;
use std::io::{Read, Write};
use util::budget::BodyBudget;
use util::slots::{Refusal, Slots};
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::Request;
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // codex patch 3, 15: connections open now, per address and idle or not
    slots: Arc<Slots>,

    // codex patch 14: bytes of request bodies held now
    budget: Arc<BodyBudget>,

    // codex patch 10: closed when the accept thread has closed the listener
    accept_ended: Mutex<mpsc::Receiver<()>>,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
#[allow(dead_code)] // a compile-time check only
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

// codex patch 13: the head gate.
/// A request's line and headers, read before any byte of its body
/// (codex patch 13).
pub struct Head<'a> {
    pub method: &'a Method,
    pub url: &'a str,
    pub http_version: &'a HTTPVersion,
    pub headers: &'a [Header],
    pub remote_addr: Option<SocketAddr>,
}

/// Decides on requests from their heads (codex patch 13) and on which
/// addresses a connection cap applies to (codex patch 15).
pub trait Gate: Send + Sync {
    /// `None` lets the request go on: its body is read (within the budget
    /// of codex patch 14, answering `Expect: 100-continue` first) and the
    /// request queued for `recv`. `Some(response)` answers it at once with
    /// `Connection: close`: its body is never read (at most 64 KiB of it are
    /// drained so that the answer reaches the client) and no `100 Continue`
    /// is sent.
    fn check(&self, head: &Head<'_>) -> Option<Response<Cursor<Vec<u8>>>>;

    /// Whether connections from `ip` count against
    /// `Limits::max_connections_per_ip` (a trusted proxy's might not).
    fn caps_address(&self, _ip: IpAddr) -> bool {
        true
    }
}

/// The gate of a server built without one: every head goes on.
struct OpenGate;

impl Gate for OpenGate {
    fn check(&self, _head: &Head<'_>) -> Option<Response<Cursor<Vec<u8>>>> {
        None
    }
}

/// What every connection of a server shares (codex patch 13, 14).
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    pub(crate) gate: Arc<dyn Gate>,
    pub(crate) budget: Arc<BodyBudget>,
    // codex patch 17: accepted connections speak TLS with this.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        if ssl_config.is_some() {
            return Err("this build of tiny_http has no TLS support (see PATCHES.md)".into());
        }
        Self::from_listener_with_limits(listener, Limits::default())
    }

    // codex patch 1, 3: the accept loop. Each accepted connection gets a
    // thread of its own, started at once, up to `limits.max_connections`
    // (upstream queued new connections in a pool, behind keep-alive
    // connections that might never close); beyond the bound a connection is
    // refused with a 503. A failed `accept` (out of descriptors, most often)
    // is logged and retried after a pause instead of ending the loop (upstream
    // stopped accepting for good).
    /// Like `from_listener`, with explicit bounds on what a client may cost.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_gate(listener, limits, Arc::new(OpenGate))
    }

    /// Like `from_listener_with_limits`, with every request's head shown to
    /// `gate` before its body is read (codex patch 13).
    pub fn from_listener_with_gate<L: Into<Listener>>(
        listener: L,
        limits: Limits,
        gate: Arc<dyn Gate>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_tls(listener, limits, gate, None)
    }

    /// Like `from_listener_with_gate`; with `tls`, every TCP connection
    /// accepted speaks TLS with that configuration (codex patch 17). The
    /// handshake is the start of the connection's first read, under
    /// `Limits::first_byte_timeout`; the configuration's certificate
    /// resolver is asked at each handshake, so one that changes its answer
    /// serves a new certificate to new connections only.
    pub fn from_listener_with_tls<L: Into<Listener>>(
        listener: L,
        limits: Limits,
        gate: Arc<dyn Gate>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        let close_trigger = Arc::new(AtomicBool::new(false));
        let local_addr = listener.local_addr()?;
        log::debug!("Server listening on {}", local_addr);

        let messages = MessagesQueue::with_capacity(8);
        let slots = Slots::new(limits.max_connections, limits.max_connections_per_ip);
        let budget = BodyBudget::new(limits.max_inflight_body_bytes);
        let shared = Arc::new(Shared {
            limits,
            gate,
            budget: budget.clone(),
            tls,
        });

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let inside_slots = slots.clone();
        let (accepting, accept_ended) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("tiny-http-accept".to_string())
            .spawn(move || {
                // Dropped, closing the channel, once the listener is closed.
                let _accepting = accepting;
                accept_loop(
                    listener,
                    &shared,
                    &inside_close_trigger,
                    &inside_messages,
                    &inside_slots,
                )
            })?;

        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            slots,
            budget,
            accept_ended: Mutex::new(accept_ended),
        })
    }

    /// The number of connections open now (codex patch 3).
    pub fn open_connections(&self) -> usize {
        self.slots.open()
    }

    /// Bytes of request bodies held now, read or being read (codex patch 14).
    pub fn inflight_body_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }

    // codex patch 10: a graceful stop. Upstream could only be dropped, and a
    // request read meanwhile was answered with an empty 500.
    /// Stops taking connections and requests: the listener is closed, and
    /// every request read from now on is answered `503 Service Unavailable`
    /// with `Retry-After` by its connection instead of being queued. Requests
    /// queued before stay for `recv`.
    pub fn shut_down(&self) {
        if !self.close.swap(true, Relaxed) {
            self.wake_accept();
            // The listener first, so that no client connects in the moment
            // between the last request answered and the listener's close
            // (the kernel would reset it, unanswered). Bounded: the wake-up
            // connection may fail, out of descriptors.
            let accept_ended = self.accept_ended.lock().unwrap_or_else(|p| p.into_inner());
            let _ = accept_ended.recv_timeout(Duration::from_secs(1));
        }
        self.messages.close();
    }

    /// Requests read and waiting for `recv` (codex patch 10).
    pub fn queued_requests(&self) -> usize {
        self.messages.len()
    }

    // Connects briefly to ourselves to unblock the accept thread
    fn wake_accept(&self) {
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// What one client may cost (codex patch 3, 4, 5, 9). Every bound holds per
/// connection, whatever the client sends.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; beyond it the connection idle the
    /// longest is closed to make room, or, when none is idle, the new one is
    /// answered 503 and closed (codex patch 3, 15).
    pub max_connections: usize,
    /// Connections from one client address at once; more are answered 503
    /// and closed (codex patch 15).
    pub max_connections_per_ip: usize,
    /// How long a new connection may wait before the first byte of its first
    /// request (codex patch 15).
    pub first_byte_timeout: Duration,
    /// How long a kept-alive connection may wait for the first byte of its
    /// next request.
    pub idle_timeout: Duration,
    /// How long a request line and headers may take once begun.
    pub header_timeout: Duration,
    /// How long a request body may take once the headers are read.
    pub body_timeout: Duration,
    /// How long writing a response may block.
    pub write_timeout: Duration,
    /// Largest request line plus headers, in bytes; more is answered 431.
    pub max_head_bytes: usize,
    /// Bodies up to this size are read by the connection before the request
    /// is handed over; a larger one is left unread and the connection closed
    /// after the answer.
    pub max_body_bytes: usize,
    /// Bytes of bodies held at once across all connections; a request whose
    /// body does not fit is answered 503 with `Retry-After` before its body
    /// is read (codex patch 14).
    pub max_inflight_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 128,
            first_byte_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_inflight_body_bytes: 32 * 1024 * 1024,
        }
    }
}

// codex patch 1, 3: see `Server::from_listener_with_limits`.
fn accept_loop(
    listener: Listener,
    shared: &Arc<Shared>,
    close: &AtomicBool,
    messages: &Arc<MessagesQueue<Message>>,
    slots: &Arc<Slots>,
) {
    log::debug!("Running accept thread");
    let mut pause = Duration::from_millis(10);
    let mut last_warning: Option<Instant> = None;
    while !close.load(Relaxed) {
        let sock = match listener.accept() {
            Ok((sock, _)) => {
                pause = Duration::from_millis(10);
                sock
            }
            Err(e) => {
                if close.load(Relaxed) {
                    break;
                }
                // A connection reset while queued, or a signal: nothing to
                // wait for (a client resetting at will must not slow the
                // accepting down).
                if matches!(
                    e.kind(),
                    IoErrorKind::ConnectionAborted
                        | IoErrorKind::ConnectionReset
                        | IoErrorKind::Interrupted
                ) {
                    continue;
                }
                // Out of descriptors (EMFILE, ENFILE) or memory: the listener
                // itself is fine, and pending connections stay queued in the
                // kernel meanwhile.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    log::warn!("accepting a connection failed ({}); retrying", e);
                    last_warning = Some(Instant::now());
                }
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        // codex patch 17: TLS from here on, when configured.
        let sock = match &shared.tls {
            Some(config) => match sock.tls(config) {
                Ok(sock) => sock,
                Err((sock, e)) => {
                    log::warn!("cannot start TLS on a new connection: {}", e);
                    sock.shutdown(Shutdown::Both).ok();
                    continue;
                }
            },
            None => sock,
        };
        // codex patch 15: a slot per connection, capped per address; when
        // all are taken, the connection idle the longest makes room.
        let sock = Arc::new(sock);
        let address = sock
            .peer_addr()
            .ok()
            .flatten()
            .map(|addr| addr.ip().to_canonical());
        let capped = address.is_some_and(|ip| shared.gate.caps_address(ip));
        let slot = match slots.admit(address, capped, sock.clone()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(&sock, &refusal);
                continue;
            }
        };
        let messages = messages.clone();
        let shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("tiny-http-conn".to_string())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve_connection(ClientConnection::new(sock, shared, slot), &messages);
            });
        if let Err(e) = spawned {
            // The connection is closed with the closure that owned it.
            log::warn!("cannot start a thread for a new connection: {}", e);
        }
    }
    drop(listener);
    log::debug!("Terminating accept thread");
}

// codex patch 3, 15: answers a connection given no slot with a 503 and
// closes it, without blocking the accept loop.
fn refuse(sock: &Connection, refusal: &Refusal) {
    let reason = match refusal {
        Refusal::Full => "too many open connections; retry later",
        Refusal::AddressFull => "too many connections from this address; retry later",
    };
    // codex patch 17: a TLS connection is closed without an answer: the
    // handshake would hold the accept loop.
    if sock.secure() {
        let _ = sock.shutdown(Shutdown::Both);
        return;
    }
    let _ = sock.set_nonblocking(true);
    let mut writer = sock;
    let _ = writer.write_all(
        format!(
            concat!(
                "HTTP/1.1 503 Service Unavailable\r\n",
                "Retry-After: 1\r\n",
                "Connection: close\r\n",
                "Content-Type: text/plain\r\n",
                "Content-Length: {}\r\n\r\n{}",
            ),
            reason.len(),
            reason
        )
        .as_bytes(),
    );
    let _ = sock.shutdown(Shutdown::Write);
    drain_refused(sock);
}

// codex patch 3 (commit 6ad6a84): what a refused client already sent is
// read, so that closing does not reset the connection before the client
// reads the answer; but at most 64 KiB of it, in sixteen reads, because
// this runs on the accept thread: a client that kept sending must not hold
// it. Returns how many bytes were read.
fn drain_refused(mut reader: impl Read) -> usize {
    let mut buf = [0u8; 4096];
    let mut read = 0;
    for _ in 0..16 {
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => read += n,
            _ => break,
        }
    }
    read
}

// codex patch 3: serves one connection's requests one at a time: the next
// request is read only once the previous one is answered. Upstream read ahead
// and queued every pipelined request, each then holding a worker that waited
// for the previous answer to be written: one client that pipelined and never
// read stalled every worker.
fn serve_connection(mut client: ClientConnection, messages: &MessagesQueue<Message>) {
    let (sender, receiver) = std::sync::mpsc::channel();
    while let Some(rq) = client.next() {
        let rq = rq.with_notify_sender(sender.clone());
        // codex patch 10: once the server shuts down, a request is answered
        // here rather than queued for workers that may be gone.
        let keep_open = match messages.push_unless_closed(rq.into()) {
            Ok(()) => rq_answered(&receiver),
            Err(Message::NewRequest(rq)) => {
                refuse_shutting_down(rq);
                false
            }
            Err(Message::Error(_)) => false,
        };
        // codex patch 11: the answer the worker wrote goes out from here.
        if client.write_replies().is_err() || !keep_open {
            break;
        }
    }
    client.close();
}

// codex patch 10: the answer to a request read while the server shuts down.
fn refuse_shutting_down(mut rq: Request) {
    rq.close_connection();
    let retry_after = Header {
        field: "Retry-After".parse().expect("a valid field name"),
        value: ascii::AsciiString::from_ascii("5").expect("ASCII"),
    };
    let _ = rq.respond(
        Response::from_string("the server is shutting down; retry later")
            .with_status_code(503)
            .with_header(retry_after),
    );
}

// codex patch 3: waits for the answer; true if the connection stays open.
fn rq_answered(receiver: &std::sync::mpsc::Receiver<bool>) -> bool {
    receiver.recv().unwrap_or_default()
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    // codex patch 3 (commit 6ad6a84): a refusal reads at most 64 KiB,
    // however much the client sent.
    #[test]
    fn a_refusal_reads_at_most_64_kib_of_what_the_client_sent() {
        let endless = std::io::repeat(b'x').take(1 << 20);
        assert_eq!(super::drain_refused(endless), 64 * 1024);
        assert_eq!(super::drain_refused(std::io::repeat(b'x').take(100)), 100);
        assert_eq!(super::drain_refused(std::io::empty()), 0);
    }
}
