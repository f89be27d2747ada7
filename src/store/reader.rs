//! The read connection, owned by whoever reads (a poller thread, the
//! status thread, a one-shot command): reads that need no ordering with
//! writes never wait in the writer's queue, and a slow read never delays a
//! commit. `Reads` are the reads; `Reader` keeps a connection for them
//! through database faults.

use std::sync::Arc;
use std::time::Duration;

use super::command::retrying;
use super::connection::{Connection, Param, one};
use super::db_health::DbHealth;
use super::journal::{self, Delivery, DeliveryCount, JournalQuery, Journaled};
use super::records::{SyncRun, SyncState, WebhookCounts};
use super::tickets::{self, TicketPage, TicketQuery, TicketRow};
use super::{connect_reader, schema, statements};
use crate::config::DatabaseUrl;
use crate::error::StoreError;
use crate::psa::Provider;

/// The reads of a database, on a connection of the reader's own (see
/// `Reader`): nothing here waits for the writer, nor the writer for it.
/// A backend provides `verify` and the connection; the reads are written
/// once here.
pub trait Reads: Send {
    /// Fails when the connection reads something other than Codex's
    /// database (a SQLite file replaced under it); it is then reopened.
    fn verify(&mut self) -> Result<(), StoreError>;

    /// The connection the reads run on.
    fn connection(&self) -> &dyn Connection;

    /// The newest `limit` journaled deliveries, without their bodies.
    fn recent_deliveries(&mut self, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        journal::recent_deliveries(self.connection(), limit)
    }

    /// Deliveries per ten-minute slot and outcome since `since`.
    fn delivery_counts(&mut self, since: &str) -> Result<Vec<DeliveryCount>, StoreError> {
        journal::delivery_counts(self.connection(), since)
    }

    /// The journaled deliveries `query` names, bodies included, oldest first.
    fn journaled(&mut self, query: &JournalQuery) -> Result<Vec<Journaled>, StoreError> {
        journal::read(self.connection(), query)
    }

    /// The schema version recorded in `codex_meta`, as stored.
    fn schema_version(&mut self) -> Result<Option<String>, StoreError> {
        let rows = self
            .connection()
            .query(statements::META_GET, &[Param::text(schema::VERSION_KEY)])?;
        rows.first().map_or(Ok(None), |row| row.text(0))
    }

    /// Rows in the delivery journal (`webhook_events`).
    fn journal_rows(&mut self) -> Result<i64, StoreError> {
        Ok(
            one(self.connection().query(statements::JOURNAL_ROWS, &[])?)?
                .int(0)?
                .unwrap_or_default(),
        )
    }

    /// A page of tickets for the read API, and how many match its filters.
    fn tickets(&mut self, query: &TicketQuery) -> Result<TicketPage, StoreError> {
        tickets::page(self.connection(), query)
    }

    /// The ticket with the PSA's id `external_id` (of `source` when given).
    fn ticket(
        &mut self,
        external_id: i64,
        source: Option<&str>,
    ) -> Result<Option<TicketRow>, StoreError> {
        tickets::by_external_id(self.connection(), external_id, source)
    }

    /// A company's tickets (last updated in `year` when given), or `None`
    /// when the company is not known.
    fn company_tickets(
        &mut self,
        account_number: &str,
        year: Option<&str>,
    ) -> Result<Option<Vec<TicketRow>>, StoreError> {
        tickets::of_company(self.connection(), account_number, year)
    }

    /// Tickets whose status is not one of `excluded`, with their stored
    /// status ids: the first `limit` with an id above `after`, by id.
    fn active_tickets(
        &mut self,
        provider: Provider,
        excluded: &[String],
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
        let done = serde_json::to_string(excluded).unwrap_or_else(|_| "[]".to_string());
        let connection = self.connection();
        let params = [
            Param::text(provider.as_str()),
            Param::text(&done),
            Param::Int(Some(limit)),
            Param::Int(Some(after)),
        ];
        connection
            .query(&statements::active_tickets(connection.dialect()), &params)?
            .iter()
            .map(|row| Ok((row.int(0)?.unwrap_or_default(), row.int(1)?)))
            .collect()
    }

    fn webhook_counts(
        &mut self,
        provider: Provider,
        since: &str,
    ) -> Result<WebhookCounts, StoreError> {
        let params = [Param::text(provider.as_str()), Param::text(since)];
        let row = one(self
            .connection()
            .query(&statements::webhook_counts(), &params)?)?;
        Ok(WebhookCounts {
            received: row.int(0)?.unwrap_or_default(),
            applied: row.int(1)?.unwrap_or_default(),
            rejected: row.int(2)?.unwrap_or_default(),
            last_processed_at: row.text(3)?,
            last_received_at: row.text(4)?,
            last_deletion_at: row.text(5)?,
        })
    }

    fn sync_state(&mut self, provider: Provider) -> Result<SyncState, StoreError> {
        let rows = self.connection().query(
            statements::SYNC_STATE_GET,
            &[Param::text(provider.as_str())],
        )?;
        match rows.first() {
            Some(row) => Ok(SyncState {
                cursor: row.text(0)?,
                last_reconcile_at: row.text(1)?,
            }),
            None => Ok(SyncState::default()),
        }
    }

    /// The newest runs first.
    fn recent_runs(
        &mut self,
        provider: Option<Provider>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let params = [
            Param::Text(provider.map(Provider::as_str)),
            Param::Int(Some(limit)),
        ];
        self.connection()
            .query(statements::RUNS_RECENT, &params)?
            .iter()
            .map(statements::sync_run)
            .collect()
    }

    /// Changes missed by webhooks, summed over successful runs started since `since`.
    fn missed_since(&mut self, provider: Provider, since: &str) -> Result<i64, StoreError> {
        let params = [Param::text(provider.as_str()), Param::text(since)];
        Ok(
            one(self.connection().query(statements::MISSED_SINCE, &params)?)?
                .int(0)?
                .unwrap_or_default(),
        )
    }
}

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
            log::debug!("read connection closed; the next read opens another");
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
