//! The HTTP side: a tiny_http server (vendored and patched, see
//! `vendor/tiny_http/PATCHES.md`) and a pool of worker threads that verify
//! and normalize deliveries and hand them to the writer.
//!
//! tiny_http serves each connection on a thread of its own, bounded in
//! number, and reads a request whole (head and body, each within its
//! deadline) before a worker sees it: a slow or hostile client holds its own
//! connection, never a worker.

mod api;
pub mod auth;
mod backlog;
mod endpoints;
mod failure;
pub mod gate;
mod jwt;
mod operator;
mod pool;
mod request;
pub mod response;
mod routes;
pub mod signature;
mod status_page;
pub mod tls;
mod webhooks;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use socket2::{Domain, Socket, Type};
use tiny_http::{Limits, Server};

use crate::config::ServerConfig;
pub use routes::AppState;

/// How long writing one response may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request line plus headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Descriptors kept for everything but connections (database, log, files).
const RESERVED_DESCRIPTORS: usize = 64;
/// The most connections served at once unless `[server] max_connections`
/// says otherwise (each costs a descriptor and a thread).
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// By default one client address may hold this share of the connections...
const PER_IP_SHARE: usize = 8;
/// ...and at least this many.
const MIN_PER_IP: usize = 8;
/// How long a stop waits for the requests read before it to be answered.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How long a stop waits for the connections still open once nothing is
/// accepted any more (each is answered 503 when its request is read).
const LAST_CONNECTIONS_LIMIT: Duration = Duration::from_secs(2);

/// Binds the listening socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What one client may cost, from `[server]`.
pub fn limits(server: &ServerConfig) -> Limits {
    let room = descriptor_room();
    if let (Some(configured), Some(room)) = (server.max_connections, room) {
        if configured > room {
            log::warn!(
                "[server] max_connections = {configured}, but the descriptor limit leaves room for \
                 about {room}: past that, connections wait until descriptors free up (raise `ulimit -n`)"
            );
        }
    }
    // By default as many connections as the descriptor limit leaves room
    // for (one descriptor each), within bounds.
    let default = room.map_or(DEFAULT_MAX_CONNECTIONS, |room| {
        room.clamp(16, DEFAULT_MAX_CONNECTIONS)
    });
    let max_connections = server.max_connections.unwrap_or(default);
    Limits {
        max_connections,
        max_connections_per_ip: server
            .max_connections_per_ip
            .unwrap_or((max_connections / PER_IP_SHARE).max(MIN_PER_IP)),
        // A new connection never waits longer than a kept-alive one.
        first_byte_timeout: server.first_byte_timeout.min(server.read_timeout),
        idle_timeout: server.read_timeout,
        header_timeout: server.header_timeout,
        body_timeout: server.body_timeout,
        write_timeout: WRITE_TIMEOUT,
        max_head_bytes: MAX_HEAD_BYTES,
        max_body_bytes: server.max_body_bytes,
        max_inflight_body_bytes: server.max_inflight_body_bytes,
    }
}

/// Descriptors left for connections under the process's soft limit; `None`
/// when it is unlimited or unknown.
fn descriptor_room() -> Option<usize> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse::<usize>()
        .ok()
        .map(|limit| limit.saturating_sub(RESERVED_DESCRIPTORS))
}

/// The running server and its pool of workers.
pub struct HttpServer {
    server: Arc<Server>,
    state: Arc<AppState>,
    workers: pool::Pool,
    addr: SocketAddr,
    /// The listening socket, kept so that what is still queued in its
    /// backlog when the server stops can be answered before it closes;
    /// `None` when systemd holds the socket (the next Codex answers them).
    backlog: Option<TcpListener>,
    /// The certificate served when Codex serves HTTPS.
    certificates: Option<Arc<tls::Certificates>>,
}

impl HttpServer {
    /// Starts workers (up to `threads`) answering requests on `listener`, over TLS
    /// with `certificates`. A fatal server error is sent on `fatal`.
    pub fn start(
        listener: TcpListener,
        state: Arc<AppState>,
        threads: usize,
        fatal: Sender<String>,
        certificates: Option<Arc<tls::Certificates>>,
    ) -> std::io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let backlog = Some(listener.try_clone()?);
        let limits = limits(&state.current().config.server);
        log::debug!(
            "serving at most {} connections at once",
            limits.max_connections
        );
        let gate = Arc::new(gate::HeadGate::new(state.clone()));
        let tls = certificates.clone().map(tls::Certificates::server_config);
        let server = Server::from_listener_with_tls(listener, limits, gate, tls)
            .map(Arc::new)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let workers = pool::Pool::start(server.clone(), state.clone(), threads, fatal)?;
        Ok(HttpServer {
            server,
            state,
            workers,
            addr,
            backlog,
            certificates,
        })
    }

    /// Leaves connections queued in the listen backlog at stop for the
    /// next process (systemd passed the socket and keeps it open).
    pub fn leave_backlog_queued(&mut self) {
        self.backlog = None;
    }

    /// The certificate served, when Codex serves HTTPS.
    pub fn certificates(&self) -> Option<&Arc<tls::Certificates>> {
        self.certificates.as_ref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Drains, then stops: a request read before the drain began is
    /// answered as usual, one read after it gets a 503 with Retry-After;
    /// once the earlier ones are answered (or after `DRAIN_LIMIT`), the
    /// server stops accepting, connections answer 503 themselves, those
    /// still in the listen backlog are answered 503 before the listener
    /// closes (so none is reset), the connections still open get up to
    /// `LAST_CONNECTIONS_LIMIT` to be answered, and the workers stop when
    /// nothing is queued.
    pub fn stop(mut self) -> std::thread::Result<()> {
        let started = self.state.begin_drain();
        let deadline = started + DRAIN_LIMIT;
        let idle = || self.state.in_flight() == 0 && self.server.queued_requests() == 0;
        while Instant::now() < deadline && !(idle() && settled(&idle)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.server.shut_down();
        if let Some(listener) = self.backlog.take() {
            let tls = self
                .certificates
                .clone()
                .map(tls::Certificates::server_config);
            let answered = backlog::answer_queued(listener, tls);
            if answered > 0 {
                log::info!("answered {answered} connections from the listen backlog with 503");
            }
        }
        while Instant::now() < deadline && self.server.queued_requests() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        // A connection accepted just before the server stopped accepting
        // may have its request still on the way: it is answered 503 when
        // read. Exiting first would make the kernel reset it, unanswered.
        let closing = Instant::now() + LAST_CONNECTIONS_LIMIT;
        while Instant::now() < closing.min(deadline) && self.server.open_connections() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let open = self.server.open_connections();
        if open > 0 {
            log::info!("stopping with {open} connections still open (idle, or not sending)");
        }
        let result = self.workers.stop();
        drop(self.server);
        result
    }
}

/// True if `idle` still holds a moment later (a worker may be between
/// taking a request and counting it).
fn settled(idle: &dyn Fn() -> bool) -> bool {
    std::thread::sleep(Duration::from_millis(50));
    idle()
}
