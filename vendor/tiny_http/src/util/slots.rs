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
