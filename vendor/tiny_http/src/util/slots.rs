// codex patch 15: connection slots. Every open connection holds a slot
// (a descriptor and a thread). Upstream had no bound at all; codex patch 3
// bounded the total, which let one address take every slot with idle
// connections and refuse service to everyone else. Now connections are
// also capped per client address, and when every slot is taken the
// connection idle the longest (waiting for a request, none in progress) is
// closed to make room for the new one.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::connection::Connection;

/// The open connections: how many per address, and which are idle.
pub(crate) struct Slots {
    max_total: usize,
    max_per_address: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Slot>,
    per_address: HashMap<IpAddr, usize>,
}

struct Slot {
    address: Option<IpAddr>,
    counted: bool,
    socket: Arc<Connection>,
    // `Some` while the connection waits for a request.
    idle_since: Option<Instant>,
}

/// Why a connection was not given a slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is taken by a connection with a request in progress.
    Full,
    /// The client's address holds `max_connections_per_ip` connections.
    AddressFull,
}

/// A connection's slot, freed on drop.
pub(crate) struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
}

impl Slots {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max_total,
            max_per_address,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `socket`, from `address`, a slot; `capped` says whether the
    /// per-address cap applies to it. A new connection counts as idle until
    /// the first byte of a request arrives.
    pub(crate) fn admit(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        capped: bool,
        socket: Arc<Connection>,
    ) -> Result<SlotGuard, Refusal> {
        let mut inner = self.lock();
        let counted = capped && address.is_some();
        if let (true, Some(ip)) = (counted, address) {
            if inner.per_address.get(&ip).copied().unwrap_or(0) >= self.max_per_address {
                return Err(Refusal::AddressFull);
            }
        }
        if inner.open.len() >= self.max_total {
            let oldest = inner
                .open
                .iter()
                .filter_map(|(id, slot)| slot.idle_since.map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id);
            let Some(oldest) = oldest else {
                return Err(Refusal::Full);
            };
            // Its thread sees the socket closed and ends; the slot is free now.
            if let Some(slot) = inner.remove(oldest) {
                slot.socket.shutdown(Shutdown::Both).ok();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        if let (true, Some(ip)) = (counted, address) {
            *inner.per_address.entry(ip).or_insert(0) += 1;
        }
        inner.open.insert(
            id,
            Slot {
                address,
                counted,
                socket,
                idle_since: Some(Instant::now()),
            },
        );
        Ok(SlotGuard {
            slots: self.clone(),
            id,
        })
    }

    /// Connections holding a slot now.
    pub(crate) fn open(&self) -> usize {
        self.lock().open.len()
    }
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Slot> {
        let slot = self.open.remove(&id)?;
        if let (true, Some(ip)) = (slot.counted, slot.address) {
            if let Some(count) = self.per_address.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
        Some(slot)
    }
}

impl SlotGuard {
    /// The connection waits for a request: it may be closed to make room.
    pub(crate) fn idle(&self) {
        if let Some(slot) = self.slots.lock().open.get_mut(&self.id) {
            slot.idle_since = Some(Instant::now());
        }
    }

    /// A request is in progress on the connection.
    pub(crate) fn busy(&self) {
        if let Some(slot) = self.slots.lock().open.get_mut(&self.id) {
            slot.idle_since = None;
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::{Refusal, Slots};
    use crate::connection::Connection;
    use std::io::Read;
    use std::net::{IpAddr, TcpListener, TcpStream};
    use std::sync::Arc;

    /// A connected pair: the server's end as a `Connection`, and the client.
    fn pair(listener: &TcpListener) -> (Arc<Connection>, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Arc::new(Connection::from(server)), client)
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn an_address_holds_at_most_its_share_unless_uncapped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let slots = Slots::new(10, 2);
        let (a, _ca) = pair(&listener);
        let (b, _cb) = pair(&listener);
        let (c, _cc) = pair(&listener);
        let first = slots.admit(ip(1), true, a).ok().unwrap();
        let _second = slots.admit(ip(1), true, b.clone()).ok().unwrap();
        assert_eq!(
            slots.admit(ip(1), true, c.clone()).err(),
            Some(Refusal::AddressFull)
        );
        let _uncapped = slots.admit(ip(1), false, c.clone()).ok().unwrap();
        drop(first);
        let _again = slots.admit(ip(1), true, c).ok().unwrap();
        assert_eq!(slots.open(), 3);
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_do_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let slots = Slots::new(2, 10);
        let (a, mut ca) = pair(&listener);
        let (b, _cb) = pair(&listener);
        let (c, _cc) = pair(&listener);
        let (d, _cd) = pair(&listener);
        let oldest = slots.admit(ip(1), true, a).ok().unwrap();
        let newer = slots.admit(ip(2), true, b).ok().unwrap();
        let third = slots.admit(ip(3), true, c).ok().unwrap();
        // `oldest` was shut down: its client sees the end of the stream.
        let mut byte = [0u8];
        assert_eq!(ca.read(&mut byte).unwrap_or(0), 0);
        assert_eq!(slots.open(), 2);
        newer.busy();
        third.busy();
        assert_eq!(slots.admit(ip(4), true, d).err(), Some(Refusal::Full));
        drop(oldest);
        assert_eq!(slots.open(), 2);
    }
}
