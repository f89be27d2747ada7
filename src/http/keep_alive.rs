//! Unsticking connections that tiny_http has queued behind keep-alive ones.
//!
//! tiny_http serves each connection on a thread of its own pool, and its
//! pool queues (rather than starts a thread for) a connection accepted
//! while an idle thread is still waking up. In a burst of new connections
//! (a proxy or a load generator opening many at once) the queued ones wait
//! until a running connection closes, which for keep-alive clients may be
//! never: their requests sit unread in the socket.
//!
//! The monitor here finds such connections the way `ss` would: established
//! sockets on our port whose receive queue has held unread bytes for two
//! scans in a row. For each, one busy connection is asked to reconnect
//! (`Connection: close` on its next response); its thread is then free to
//! take a queued connection. Nothing is closed while nothing is stuck.
//!
//! The same thread knocks on the listener regularly: see `http::bind`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often the monitor looks at the sockets while nothing is stuck.
/// Reading the kernel's socket table costs a few milliseconds of CPU
/// however few sockets there are, so this is not done often.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How soon a socket seen with unread bytes is looked at again (bytes
/// still unread then are stuck, not merely in flight).
const CONFIRM_AFTER: Duration = Duration::from_millis(50);

/// Shared between the request handlers and the monitor.
#[derive(Default)]
pub struct KeepAlive {
    /// Responses still to be sent with `Connection: close`.
    recycle: AtomicUsize,
    /// Connections deliberately left open and unread (see
    /// `routes::abandon`); they are not stuck in the queue.
    abandoned: Mutex<HashSet<SocketAddr>>,
}

impl KeepAlive {
    /// True when this response should ask the client to reconnect.
    pub fn should_close(&self) -> bool {
        self.recycle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn abandoned(&self, peer: SocketAddr) {
        self.abandoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
    }

    /// Runs until `stopping`: sets the number of connections to recycle to
    /// the number found stuck, looking again soon while any are; and
    /// connects to the listener every `heartbeat` (see `http::bind`).
    pub fn monitor(&self, listener: SocketAddr, heartbeat: Duration, stopping: &AtomicBool) {
        let every = SCAN_EVERY.min(heartbeat);
        let mut pause = every;
        let mut last_heartbeat = std::time::Instant::now();
        while sleep_unless(stopping, pause) {
            pause = every;
            if last_heartbeat.elapsed() >= heartbeat {
                last_heartbeat = std::time::Instant::now();
                knock(listener);
            }
            let waiting = unread_connections(listener);
            if waiting.is_empty() || !sleep_unless(stopping, CONFIRM_AFTER) {
                self.recycle.store(0, Ordering::Relaxed);
                continue;
            }
            let again = unread_connections(listener);
            let abandoned = self
                .abandoned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let stuck = waiting
                .iter()
                .filter(|peer| again.contains(peer) && !abandoned.contains(peer))
                .count();
            if stuck > 0 {
                log::debug!(
                    "{stuck} connections are queued behind keep-alive connections; recycling as many"
                );
                pause = CONFIRM_AFTER * 2;
            }
            self.recycle.store(stuck, Ordering::Relaxed);
        }
    }
}

/// Opens and closes a connection to `listener`, so that tiny_http's
/// accept() returns before the listening socket's read timeout (which
/// would end its accept loop). An unspecified address is knocked on over
/// loopback.
fn knock(listener: SocketAddr) {
    let mut target = listener;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    if let Err(error) = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
        log::warn!("cannot reach the listener at {target}: {error}");
    }
}

/// Sleeps for `duration`; false if `stopping` was set meanwhile.
fn sleep_unless(stopping: &AtomicBool, duration: Duration) -> bool {
    let deadline = std::time::Instant::now() + duration;
    while !stopping.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    false
}

/// Peers of established connections to `listener` with unread bytes.
fn unread_connections(listener: SocketAddr) -> HashSet<SocketAddr> {
    let table = if listener.is_ipv4() {
        "/proc/self/net/tcp"
    } else {
        "/proc/self/net/tcp6"
    };
    std::fs::read_to_string(table)
        .map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| parse_line(line, listener.port()))
                .collect()
        })
        .unwrap_or_default()
}

/// One `/proc/net/tcp` line: `sl local rem st tx_queue:rx_queue …`, with
/// addresses as hex `IP:PORT`. Returns the peer when the socket is an
/// established connection to `port` with a non-empty receive queue.
fn parse_line(line: &str, port: u16) -> Option<SocketAddr> {
    let mut fields = line.split_whitespace().skip(1);
    let local = parse_address(fields.next()?)?;
    let remote = parse_address(fields.next()?)?;
    let state = fields.next()?;
    let (_, rx_queue) = fields.next()?.split_once(':')?;
    let established = state == "01";
    let unread = u64::from_str_radix(rx_queue, 16).ok()? > 0;
    (established && unread && local.port() == port).then_some(remote)
}

/// `0100007F:1F90` (IPv4, little-endian words) or the 32-digit IPv6 form.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (word, chunk) in bytes.chunks_mut(4).enumerate() {
                let value = u32::from_str_radix(&ip[word * 8..word * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&value.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_net_tcp_lines() {
        let stuck = "   3: 0100007F:1451 0100007F:9C40 01 00000000:000001EA 00:00000000 00000000     0        0 12345 1";
        assert_eq!(
            parse_line(stuck, 5201),
            Some("127.0.0.1:40000".parse().unwrap())
        );
        let drained = "   4: 0100007F:1451 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 12346 1";
        assert_eq!(parse_line(drained, 5201), None);
        let listening = "   0: 0100007F:1451 00000000:0000 0A 00000000:00000005 00:00000000 00000000     0        0 1 1";
        assert_eq!(parse_line(listening, 5201), None);
        assert_eq!(parse_line(stuck, 80), None);
        let v6 = "   0: 00000000000000000000000001000000:1451 0000000000000000FFFF00000100007F:9C40 01 00000000:00000010 00:00000000 00000000 0 0 1 1";
        assert_eq!(
            parse_line(v6, 5201),
            Some("127.0.0.1:40000".parse().unwrap())
        );
    }

    #[test]
    fn recycles_only_as_many_as_found_stuck() {
        let keep_alive = KeepAlive::default();
        assert!(!keep_alive.should_close());
        keep_alive.recycle.store(2, Ordering::Relaxed);
        assert!(keep_alive.should_close());
        assert!(keep_alive.should_close());
        assert!(!keep_alive.should_close());
    }

    #[test]
    fn finds_a_connection_nobody_reads() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(address).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let peer = client.local_addr().unwrap();
        let mut found = false;
        for _ in 0..100 {
            if unread_connections(address).contains(&peer) {
                found = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(found, "{peer} not found with unread bytes");
    }
}
