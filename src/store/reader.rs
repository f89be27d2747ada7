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
    /// Opened so that nothing is written (`codex status`).
    read_only: bool,
}

impl Reader {
    /// A reader of `url`; it connects on first use.
    pub fn new(url: &DatabaseUrl, health: Arc<DbHealth>) -> Reader {
        Reader {
            url: url.clone(),
            conn: None,
            health,
            read_only: false,
        }
    }

    /// A reader of `url` for a command that must change nothing, with no
    /// writer beside it: SQLite is opened read-only (see
    /// `SqliteReader::open_read_only`).
    pub fn read_only(url: &DatabaseUrl) -> Reader {
        Reader {
            read_only: true,
            ..Reader::new(url, Arc::new(DbHealth::new(None)))
        }
    }

    /// Opens the connection now, if it is not open, rather than at the
    /// first read: a service's descriptors are then all taken at start.
    pub fn connect(&mut self) -> Result<(), StoreError> {
        self.connection().map(|_| ())
    }

    /// Closes the connection (the next read opens a new one): a reader
    /// must not hold on to a database the writer found unusable.
    pub fn disconnect(&mut self) {
        if self.conn.take().is_some() {
            log::debug!("read connection closed while the database is unavailable");
        }
    }

    fn connection(&mut self) -> Result<&mut Box<dyn Reads>, StoreError> {
        match self.conn {
            Some(ref mut conn) => Ok(conn),
            None => Ok(self.conn.insert(connect_reader(&self.url, self.read_only)?)),
        }
    }

    /// Runs `read` once, connecting first if need be.
    pub fn read<T>(
        &mut self,
        read: impl FnOnce(&mut dyn Reads) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.connection()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psa::Provider;
    use crate::store::{Backend, SyncState, sqlite::SqliteBackend};

    fn state(cursor: &str) -> SyncState {
        SyncState {
            cursor: Some(cursor.to_string()),
            last_reconcile_at: None,
        }
    }

    #[test]
    fn a_sqlite_reader_sees_commits_and_reopens_after_the_file_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codex.db");
        let mut writer = SqliteBackend::open(&path).unwrap();
        let mut reader = Reader::new(
            &DatabaseUrl::Sqlite(path.clone()),
            Arc::new(DbHealth::new(None)),
        );
        let read = |reader: &mut Reader| reader.read(|r| r.sync_state(Provider::Freshservice));
        assert_eq!(read(&mut reader), Ok(SyncState::default()));

        // A commit on the writer's connection is seen on the reader's.
        writer
            .save_sync_state(Provider::Freshservice, &state("2024-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(read(&mut reader), Ok(state("2024-01-01T00:00:00Z")));

        // The file moved away: the reader says so and drops its connection
        // rather than read a file that is no longer the database.
        let aside = dir.path().join("aside.db");
        std::fs::rename(&path, &aside).unwrap();
        assert!(matches!(
            read(&mut reader),
            Err(StoreError::WrongDatabase(_))
        ));
        assert!(reader.conn.is_none());
        assert!(matches!(
            read(&mut reader),
            Err(StoreError::WrongDatabase(_) | StoreError::Unavailable(_))
        ));

        // Back in place: the next read opens a new connection and works.
        std::fs::rename(&aside, &path).unwrap();
        assert_eq!(read(&mut reader), Ok(state("2024-01-01T00:00:00Z")));
    }

    #[test]
    fn waiting_reads_stop_at_their_deadline_while_the_database_is_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = Reader::new(
            &DatabaseUrl::Sqlite(dir.path().join("missing").join("codex.db")),
            Arc::new(DbHealth::new(None)),
        );
        let started = std::time::Instant::now();
        let result = reader.read_waiting(Duration::from_millis(700), |r| {
            r.sync_state(Provider::Freshservice)
        });
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
