//! Read connections for what is read on request, never on the writer's
//! connection: the read API's tickets, the status page's last deliveries
//! and runs, and the journal's size for `/metrics`. A few idle connections
//! are kept between requests.

use std::sync::{Arc, Mutex};

use crate::config::DatabaseUrl;
use crate::error::StoreError;
use crate::metrics::Scraped;
use crate::status::{Activity, Status, StatusBoard};
use crate::store::{DbHealth, Reader, Reads, StoreClient};

/// Read connections kept open between requests.
const IDLE_READERS: usize = 4;

/// The idle read connections to the database in force.
pub struct Readers {
    url: DatabaseUrl,
    health: Arc<DbHealth>,
    idle: Mutex<Vec<Reader>>,
}

impl Readers {
    pub fn new(url: &DatabaseUrl, health: Arc<DbHealth>) -> Readers {
        Readers {
            url: url.clone(),
            health,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on an idle read connection, or a new one.
    pub fn read<T>(
        &self,
        read: impl FnOnce(&mut dyn Reads) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut reader = idle.unwrap_or_else(|| Reader::new(&self.url, self.health.clone()));
        let result = reader.read(read);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(reader);
        }
        result
    }

    /// What the status page shows: the board's status, with the last
    /// deliveries and runs read now (none when the database does not
    /// answer: the page says so).
    pub fn status(&self, board: &StatusBoard) -> Status {
        let mut status = board.status();
        status.activity = match self.read(Activity::read) {
            Ok(activity) => Some(activity),
            Err(error) => {
                log::debug!("status page: cannot read the activity: {error}");
                None
            }
        };
        status
    }

    /// What `/metrics` reads at scrape time: the database's state from the
    /// writer, coverage from the status board, the journal's size from a
    /// read connection.
    pub fn scrape(&self, board: &StatusBoard, store: &StoreClient) -> Scraped {
        let coverage = board
            .status()
            .providers
            .iter()
            .map(|p| (p.provider, p.stored.as_ref().and_then(|s| s.coverage())))
            .collect();
        let journal_rows = match self.read(|r| r.journal_rows()) {
            Ok(rows) => Some(rows),
            Err(error) => {
                log::debug!("metrics: cannot count the journal: {error}");
                None
            }
        };
        Scraped {
            database_up: store.health().problem().is_none(),
            coverage,
            journal_rows,
        }
    }
}
