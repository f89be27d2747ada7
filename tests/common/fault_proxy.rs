//! A TCP forwarder between Codex and a database that fails on command:
//! `forward`, `black_hole` (bytes are taken, ACKed by the kernel, and not
//! passed on, as on a path that drops packets behind a middlebox; they go
//! through once the path is back, as TCP retransmission would have them)
//! and `reset` (every connection, open or new, is cut with an RST).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

const FORWARD: u8 = 0;
const BLACK_HOLE: u8 = 1;
const RESET: u8 = 2;

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listens on a free port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_mode, accept_stop) = (mode.clone(), stop.clone());
        std::thread::spawn(move || {
            // Dropping the proxy sets `stop` and connects once to wake
            // this accept.
            for client in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { break };
                if accept_mode.load(Ordering::SeqCst) == RESET {
                    reset(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    reset(&client);
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (mode, stop) = (accept_mode.clone(), accept_stop.clone());
                    std::thread::spawn(move || pump(from, to, &mode, &stop));
                }
            }
        });
        FaultProxy { addr, mode, stop }
    }

    pub fn forward(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
    }

    pub fn black_hole(&self) {
        self.mode.store(BLACK_HOLE, Ordering::SeqCst);
    }

    pub fn reset(&self) {
        self.mode.store(RESET, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Makes the close of `stream` (when its last handle is dropped) an RST
/// rather than a FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Copies `from` to `to`, holding data while the path is black-holed.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buffer = vec![0u8; 64 * 1024];
    let mut held: Vec<u8> = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match mode.load(Ordering::SeqCst) {
            RESET => {
                // Both directions' threads end within a read timeout,
                // dropping the last handles: the sockets close with RST.
                reset(&from);
                reset(&to);
                return;
            }
            FORWARD if !held.is_empty() => {
                if to.write_all(&held).is_err() {
                    break;
                }
                held.clear();
            }
            _ => {}
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                held.extend_from_slice(&buffer[..n]);
                if mode.load(Ordering::SeqCst) == FORWARD {
                    if to.write_all(&held).is_err() {
                        break;
                    }
                    held.clear();
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
