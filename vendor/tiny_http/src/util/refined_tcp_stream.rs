// codex patch 2: the reading and the writing half of a connection share its
// socket through an `Arc` instead of a `try_clone`d duplicate: one file
// descriptor per connection instead of two, and no panic when the process is
// out of descriptors (upstream unwrapped the clone here, which killed the
// accept thread: "refined_tcp_stream.rs:18"). Upstream's TLS variants are
// gone with the TLS features; codex patch 17 puts TLS in `Connection`.
//
// codex patch 4: the reading half reads against a deadline the connection
// sets (the idle wait for a request, the request head, its body), so a client
// trickling one byte at a time cannot hold a connection past the deadline.

use std::io::Result as IoResult;
use std::io::{Error, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;

/// When the current read must be over; shared by a connection and the reading
/// half of its socket. `None`: no deadline.
#[derive(Clone, Default)]
pub(crate) struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    pub(crate) fn set(&self, within: Option<Duration>) {
        let deadline = within.map(|d| Instant::now() + d);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct RefinedTcpStream {
    stream: Arc<Connection>,
    deadline: Deadline,
    close_read: bool,
    close_write: bool,
}

impl RefinedTcpStream {
    // codex patch 15: the socket comes shared already (its slot holds it too).
    pub(crate) fn new(stream: Arc<Connection>) -> (RefinedTcpStream, RefinedTcpStream) {
        let deadline = Deadline::default();

        let read = RefinedTcpStream {
            stream: stream.clone(),
            deadline: deadline.clone(),
            close_read: true,
            close_write: false,
        };

        let write = RefinedTcpStream {
            stream,
            deadline,
            close_read: false,
            close_write: true,
        };

        (read, write)
    }

    // codex patch 17: TLS connections are secure.
    #[inline]
    pub(crate) fn secure(&self) -> bool {
        self.stream.secure()
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.stream.peer_addr()
    }

    pub(crate) fn socket(&self) -> Arc<Connection> {
        self.stream.clone()
    }

    pub(crate) fn deadline(&self) -> Deadline {
        self.deadline.clone()
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            self.stream.close_write();
        }
    }
}

impl Read for RefinedTcpStream {
    // codex patch 17: a TLS connection may read several times from its
    // socket (the handshake, a record in pieces) before it has plaintext;
    // each read waits only for what is left of the deadline.
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        loop {
            let timeout = match self.deadline.get() {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::new(ErrorKind::TimedOut, "read deadline passed"));
                    }
                    Some(left)
                }
                None => None,
            };
            self.stream.set_read_timeout(timeout)?;
            match self.stream.read_step(buf) {
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {}
                // A socket read timeout is reported as WouldBlock on Unix.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(Error::new(ErrorKind::TimedOut, "read deadline passed"))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        (&*self.stream).write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        (&*self.stream).flush()
    }
}
