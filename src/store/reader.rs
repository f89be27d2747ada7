//! A read connection, owned by whoever reads (a poller thread, the status
//! thread, a one-shot command): reads that need no ordering with writes
//! never wait in the writer's queue, and a slow read never delays a commit.

use std::sync::Arc;
use std::time::Duration;

use super::command::retrying;
use super::db_health::DbHealth;
use super::{Reads, connect_reader};
use crate::config::DatabaseUrl;
use crate::error::StoreError;

/// A lazily opened read connection that survives database faults: a
/// failure that leaves the connection in doubt drops it and is reported;
/// the next read opens a new one. Every call has a deadline (the
/// backend's: a PostgreSQL client-side call limit, SQLite's busy timeout).
pub struct Reader {
    url: DatabaseUrl,
    conn: Option<Box<dyn Reads>>,
    /// The writer's published state, for `closing`: a caller waiting out
    /// an outage stops when the service shuts down.
    health: Arc<DbHealth>,
}

impl Reader {
    /// A reader of `url`; it connects on first use.
    pub fn new(url: &DatabaseUrl, health: Arc<DbHealth>) -> Reader {
        Reader {
            url: url.clone(),
            conn: None,
            health,
        }
    }

    /// Runs `read` once, connecting first if need be.
    pub fn read<T>(
        &mut self,
        read: impl FnOnce(&mut dyn Reads) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self.conn.insert(connect_reader(&self.url)?),
        };
        let result = conn.verify().and_then(|()| read(conn.as_mut()));
        if let Err(error) = &result {
            if error.drops_connection() {
                log::debug!("read connection dropped: {error}");
                self.conn = None;
            }
        }
        result
    }

    /// Runs `read`, and again while the database is unavailable, until
    /// `timeout` has passed or the service shuts down.
    pub fn read_waiting<T>(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&mut dyn Reads) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let health = self.health.clone();
        retrying(&health, timeout, |_| self.read(&mut read))
    }
}
