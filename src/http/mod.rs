//! The HTTP side: a tiny_http server and a pool of worker threads that
//! verify and normalize deliveries and hand them to the writer.

pub mod auth;
mod keep_alive;
pub mod response;
mod routes;

use std::net::{SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use socket2::{Domain, Socket, Type};
use tiny_http::Server;

pub use routes::AppState;

/// How often an idle worker checks whether the server is stopping.
const POLL: Duration = Duration::from_millis(200);

/// Binds the listening socket with read and write timeouts.
///
/// tiny_http has no timeouts of its own, and accepts the connections
/// itself; sockets accepted from this one inherit its timeouts, so a
/// connection that sends nothing for `timeout` is closed. The read timeout
/// applies to accept() as well, though: the keep-alive monitor connects
/// regularly (see `keep_alive`) so that accept() never waits that long.
pub fn bind(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The running server: its workers and the flag that stops them.
pub struct HttpServer {
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
    monitor: JoinHandle<()>,
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl HttpServer {
    /// Starts `threads` workers answering requests on `listener`. A fatal
    /// server error (the listener failing) is sent on `fatal`.
    pub fn start(
        listener: TcpListener,
        state: Arc<AppState>,
        threads: usize,
        fatal: Sender<String>,
    ) -> std::io::Result<HttpServer> {
        let heartbeat = state.config.server.read_timeout / 3;
        let addr = listener.local_addr()?;
        let server = Server::from_listener(listener, None)
            .map(Arc::new)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(threads);
        for n in 0..threads {
            let server = server.clone();
            let state = state.clone();
            let stopping = stopping.clone();
            let fatal = fatal.clone();
            let worker = std::thread::Builder::new()
                .name(format!("codex-http-{n}"))
                .stack_size(256 * 1024)
                .spawn(move || work(&server, &state, &stopping, &fatal))?;
            workers.push(worker);
        }
        let monitor = {
            let (state, stopping) = (state.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("codex-keepalive".to_string())
                .spawn(move || state.keep_alive.monitor(addr, heartbeat, &stopping))?
        };
        Ok(HttpServer {
            server,
            workers,
            monitor,
            stopping,
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests, lets every worker finish the one it is
    /// handling (its event committed or refused), then closes the listener.
    pub fn stop(self) -> std::thread::Result<()> {
        self.stopping.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        for worker in self.workers.into_iter().chain([self.monitor]) {
            if let Err(panic) = worker.join() {
                result = Err(panic);
            }
        }
        drop(self.server);
        result
    }
}

fn work(server: &Server, state: &AppState, stopping: &AtomicBool, fatal: &Sender<String>) {
    while !stopping.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(POLL) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(error) => {
                // tiny_http reports a failed accept() this way, and its accept
                // loop has ended: no new connection will arrive.
                let _ = fatal.send(format!("the HTTP listener failed: {error}"));
                return;
            }
        };
        // A bug in one request's handling must not take the worker down;
        // tiny_http answers a request dropped by a panic with a 500.
        if catch_unwind(AssertUnwindSafe(|| routes::handle(state, request))).is_err() {
            log::error!("a request handler panicked; the request was answered 500");
        }
    }
}
