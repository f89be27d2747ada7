//! Abstractions of Tcp and Unix socket types

use std::io::{Error, ErrorKind, Read};
#[cfg(unix)]
use std::os::unix::net as unix_net;
use std::sync::{Arc, Mutex, MutexGuard};
use std::{
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    path::PathBuf,
};

/// Unified listener. Either a [`TcpListener`] or [`std::os::unix::net::UnixListener`]
pub enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(unix_net::UnixListener),
}
impl Listener {
    pub(crate) fn local_addr(&self) -> std::io::Result<ListenAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().map(ListenAddr::from),
            #[cfg(unix)]
            Self::Unix(l) => l.local_addr().map(ListenAddr::from),
        }
    }

    pub(crate) fn accept(&self) -> std::io::Result<(Connection, Option<SocketAddr>)> {
        match self {
            Self::Tcp(l) => l
                .accept()
                .map(|(conn, addr)| (Connection::from(conn), Some(addr))),
            #[cfg(unix)]
            Self::Unix(l) => l.accept().map(|(conn, _)| (Connection::from(conn), None)),
        }
    }
}
impl From<TcpListener> for Listener {
    fn from(s: TcpListener) -> Self {
        Self::Tcp(s)
    }
}
#[cfg(unix)]
impl From<unix_net::UnixListener> for Listener {
    fn from(s: unix_net::UnixListener) -> Self {
        Self::Unix(s)
    }
}

/// Unified connection. Either a [`TcpStream`] or [`std::os::unix::net::UnixStream`],
/// or (codex patch 17) a TCP stream carrying TLS.
pub(crate) enum Connection {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(unix_net::UnixStream),
    Tls(TcpStream, Mutex<rustls::ServerConnection>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            #[cfg(unix)]
            Self::Unix(s) => f.debug_tuple("Unix").field(s).finish(),
            Self::Tls(s, _) => f.debug_tuple("Tls").field(s).finish(),
        }
    }
}
// codex patch 2: reading and writing through a shared reference, so that the
// reading and the writing half of a connection share one socket (and one file
// descriptor) instead of a `try_clone`d duplicate.
impl std::io::Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => (&*s).read(buf),
            #[cfg(unix)]
            Connection::Unix(s) => (&*s).read(buf),
            Connection::Tls(..) => loop {
                if let Some(n) = self.read_step(buf)? {
                    return Ok(n);
                }
            },
        }
    }
}
impl std::io::Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => (&*s).write(buf),
            #[cfg(unix)]
            Connection::Unix(s) => (&*s).write(buf),
            Connection::Tls(s, tls) => {
                let mut tls = lock(tls);
                let n = tls.writer().write(buf)?;
                send_records(s, &mut tls)?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Tcp(s) => (&*s).flush(),
            #[cfg(unix)]
            Connection::Unix(s) => (&*s).flush(),
            Connection::Tls(s, tls) => send_records(s, &mut lock(tls)),
        }
    }
}

// codex patch 17: TLS on accepted connections, with rustls. The session is
// behind a mutex because the reading and the writing half of a connection
// share it (codex patch 2); neither holds it while waiting for the client's
// bytes, and the connection reads its next request only once the previous
// one is answered (codex patch 3), so they do not contend.
fn lock(tls: &Mutex<rustls::ServerConnection>) -> MutexGuard<'_, rustls::ServerConnection> {
    tls.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes every TLS record waiting in `tls` to the socket (within the
/// socket's write timeout).
fn send_records(socket: &TcpStream, tls: &mut rustls::ServerConnection) -> std::io::Result<()> {
    let mut socket = socket;
    while tls.wants_write() {
        tls.write_tls(&mut socket)?;
    }
    Ok(())
}

/// A TLS error ends the connection without an HTTP answer: there is no
/// session to answer in.
fn tls_error(error: rustls::Error) -> Error {
    Error::new(ErrorKind::ConnectionAborted, format!("TLS: {error}"))
}

/// The most ciphertext read from the socket at once; small enough that the
/// plaintext it decrypts always fits rustls' receive buffer.
const RECORD_READ: usize = 4096;

impl Connection {
    /// Accepts a TCP connection as TLS with `config`; the handshake happens
    /// on the connection's own thread, as its first reads (codex patch 17).
    pub(crate) fn tls(
        self,
        config: &Arc<rustls::ServerConfig>,
    ) -> Result<Connection, (Connection, rustls::Error)> {
        match self {
            Self::Tcp(s) => match rustls::ServerConnection::new(config.clone()) {
                Ok(tls) => Ok(Self::Tls(s, Mutex::new(tls))),
                Err(e) => Err((Self::Tcp(s), e)),
            },
            other => Ok(other),
        }
    }

    /// Whether the connection carries TLS.
    pub(crate) fn secure(&self) -> bool {
        matches!(self, Self::Tls(..))
    }

    /// Reads plaintext with at most one read from the socket: `Some(n)` is
    /// `n` bytes (0 at the end), `None` that the socket gave bytes (a
    /// handshake message, a partial record) but no plaintext yet, so that
    /// the caller checks its deadline before reading again (codex patch 4).
    /// A plain connection reads as usual.
    pub(crate) fn read_step(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let (socket, tls) = match self {
            Self::Tls(socket, tls) => (socket, tls),
            mut plain => return plain.read(buf).map(Some),
        };
        {
            let mut session = lock(tls);
            match session.reader().read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // The peer closed the TCP connection without a TLS close.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) => return Err(e),
            }
            // Handshake messages are answered before waiting for more.
            send_records(socket, &mut session)?;
        }
        let mut raw = [0u8; RECORD_READ];
        let n = (&*socket).read(&mut raw)?;
        let mut session = lock(tls);
        let mut input = &raw[..n];
        loop {
            let taken = session.read_tls(&mut input)?;
            if let Err(error) = session.process_new_packets() {
                // The alert saying why, when the socket takes it.
                send_records(socket, &mut session).ok();
                return Err(tls_error(error));
            }
            if input.is_empty() || taken == 0 {
                break;
            }
        }
        send_records(socket, &mut session)?;
        Ok(None)
    }

    /// Ends the writing direction: a TLS connection sends its close
    /// notification first, so that the client knows the answer is whole.
    pub(crate) fn close_write(&self) {
        if let Self::Tls(socket, tls) = self {
            let mut session = lock(tls);
            session.send_close_notify();
            send_records(socket, &mut session).ok();
        }
        self.shutdown(Shutdown::Write).ok();
    }

    /// Gets the peer's address. Some for TCP, None for Unix sockets.
    pub(crate) fn peer_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        match self {
            Self::Tcp(s) | Self::Tls(s, _) => s.peer_addr().map(Some),
            #[cfg(unix)]
            Self::Unix(_) => Ok(None),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) | Self::Tls(s, _) => s.shutdown(how),
            #[cfg(unix)]
            Self::Unix(s) => s.shutdown(how),
        }
    }

    // codex patch 4: per-read deadlines and a write timeout.
    pub(crate) fn set_read_timeout(
        &self,
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) | Self::Tls(s, _) => s.set_read_timeout(timeout),
            #[cfg(unix)]
            Self::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) | Self::Tls(s, _) => s.set_nonblocking(nonblocking),
            #[cfg(unix)]
            Self::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }

    pub(crate) fn set_write_timeout(
        &self,
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) | Self::Tls(s, _) => s.set_write_timeout(timeout),
            #[cfg(unix)]
            Self::Unix(s) => s.set_write_timeout(timeout),
        }
    }
}
impl From<TcpStream> for Connection {
    fn from(s: TcpStream) -> Self {
        Self::Tcp(s)
    }
}
#[cfg(unix)]
impl From<unix_net::UnixStream> for Connection {
    fn from(s: unix_net::UnixStream) -> Self {
        Self::Unix(s)
    }
}

#[derive(Debug, Clone)]
pub enum ConfigListenAddr {
    IP(Vec<SocketAddr>),
    #[cfg(unix)]
    // TODO: use SocketAddr when bind_addr is stabilized
    Unix(std::path::PathBuf),
}
impl ConfigListenAddr {
    pub fn from_socket_addrs<A: ToSocketAddrs>(addrs: A) -> std::io::Result<Self> {
        addrs.to_socket_addrs().map(|it| Self::IP(it.collect()))
    }

    #[cfg(unix)]
    pub fn unix_from_path<P: Into<PathBuf>>(path: P) -> Self {
        Self::Unix(path.into())
    }

    pub(crate) fn bind(&self) -> std::io::Result<Listener> {
        match self {
            Self::IP(a) => TcpListener::bind(a.as_slice()).map(Listener::from),
            #[cfg(unix)]
            Self::Unix(a) => unix_net::UnixListener::bind(a).map(Listener::from),
        }
    }
}

/// Unified listen socket address. Either a [`SocketAddr`] or [`std::os::unix::net::SocketAddr`].
#[derive(Debug, Clone)]
pub enum ListenAddr {
    IP(SocketAddr),
    #[cfg(unix)]
    Unix(unix_net::SocketAddr),
}
impl ListenAddr {
    pub fn to_ip(self) -> Option<SocketAddr> {
        match self {
            Self::IP(s) => Some(s),
            #[cfg(unix)]
            Self::Unix(_) => None,
        }
    }

    /// Gets the Unix socket address.
    ///
    /// This is also available on non-Unix platforms, for ease of use, but always returns `None`.
    #[cfg(unix)]
    pub fn to_unix(self) -> Option<unix_net::SocketAddr> {
        match self {
            Self::IP(_) => None,
            Self::Unix(s) => Some(s),
        }
    }
    #[cfg(not(unix))]
    pub fn to_unix(self) -> Option<SocketAddr> {
        None
    }
}
impl From<SocketAddr> for ListenAddr {
    fn from(s: SocketAddr) -> Self {
        Self::IP(s)
    }
}
#[cfg(unix)]
impl From<unix_net::SocketAddr> for ListenAddr {
    fn from(s: unix_net::SocketAddr) -> Self {
        Self::Unix(s)
    }
}
impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IP(s) => s.fmt(f),
            #[cfg(unix)]
            Self::Unix(s) => std::fmt::Debug::fmt(s, f),
        }
    }
}
