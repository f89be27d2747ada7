//! Error types of the layers below HTTP. The HTTP layer maps them to
//! responses in one place (`http::response`), so no internal detail reaches
//! a PSA.

use std::fmt;
use std::path::PathBuf;

/// Reading or validating `codex.conf`.
#[derive(Debug)]
pub enum ConfigError {
    /// The configuration file named by `--config` or `$CODEX_CONFIG`, or
    /// found on the search path, cannot be read (missing, unreadable, not
    /// UTF-8).
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not INI (a section header without `]`, a key without a name).
    Syntax { origin: String, message: String },
    /// One or more values are invalid, or two keys contradict each other;
    /// every problem is listed, each naming its section and key (or the
    /// `CODEX_*` variable it came from).
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(
                    f,
                    "cannot read configuration file {}: {error}",
                    path.display()
                )
            }
            ConfigError::Syntax { origin, message } => write!(f, "{origin}: {message}"),
            ConfigError::Invalid { origin, problems } => {
                write!(f, "{origin}: invalid configuration:")?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// One value that cannot be used, from `codex.conf` or a `CODEX_*`
/// variable, or a table entry: what was found and what is expected. The
/// reader adds where it was found and gathers them into
/// [`ConfigError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue(pub String);

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidValue {}

/// Talking to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The database cannot be reached (connection refused or lost, file not
    /// openable, disk I/O error). Writes are refused until it comes back.
    Unavailable(String),
    /// A statement failed for reasons of its own (constraint, bad data);
    /// the connection is still usable.
    Statement(String),
    /// The database was migrated by a newer Codex than this one.
    SchemaTooNew { found: i64, supported: i64 },
    /// The schema cannot be brought up to date (a column of a type Codex
    /// cannot convert, values that are not ticket numbers); the migration's
    /// transaction was rolled back, so nothing was changed.
    Migration(String),
    /// The SQLite file is not the database Codex was using: deleted,
    /// replaced, or missing where Codex created one. Writes are refused
    /// until an operator restores it or says to start fresh.
    WrongDatabase(String),
    /// The event could not be stored and not even journaled.
    NotJournaled(String),
    /// The writer's queue is full: the database is not keeping up.
    Overloaded,
    /// The writer did not answer in time.
    Timeout,
    /// The writer thread has stopped (the service is shutting down).
    Stopped,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(message) => write!(f, "database unavailable: {message}"),
            StoreError::Statement(message) => write!(f, "database statement failed: {message}"),
            StoreError::SchemaTooNew { found, supported } => write!(
                f,
                "the database schema is version {found}, newer than this Codex supports ({supported}); upgrade Codex"
            ),
            StoreError::Migration(message) => write!(
                f,
                "the database schema cannot be brought up to date, nothing was changed: {message}"
            ),
            StoreError::WrongDatabase(message) => f.write_str(message),
            StoreError::NotJournaled(message) => write!(
                f,
                "database statement failed and the delivery could not be journaled: {message}"
            ),
            StoreError::Overloaded => f.write_str("the database writer queue is full"),
            StoreError::Timeout => f.write_str("the database writer did not answer in time"),
            StoreError::Stopped => f.write_str("the database writer has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// True for failures that leave the connection in doubt: it is
    /// dropped and a new one opened.
    pub fn drops_connection(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::WrongDatabase(_)
                | StoreError::SchemaTooNew { .. }
        )
    }

    /// True for failures at start-up that waiting will not fix: Codex
    /// refuses to start rather than answer 503 for good.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::WrongDatabase(_)
                | StoreError::SchemaTooNew { .. }
                | StoreError::Migration(_)
        )
    }
}

/// Calling a PSA's REST API during a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The API refused the credentials (401/403); retrying will not help.
    BadCredentials(String),
    /// The API kept failing (network error, timeout, 5xx, 429) after retries.
    Api(String),
    /// The API answered with something that is not what its documentation says.
    Protocol(String),
    /// Writing the results failed.
    Store(StoreError),
    /// Shutdown was requested mid-run.
    Interrupted,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::BadCredentials(message) => write!(f, "bad credentials: {message}"),
            SyncError::Api(message) => write!(f, "API error: {message}"),
            SyncError::Protocol(message) => write!(f, "unexpected API answer: {message}"),
            SyncError::Store(error) => write!(f, "{error}"),
            SyncError::Interrupted => f.write_str("interrupted by shutdown"),
        }
    }
}

impl std::error::Error for SyncError {}

impl From<StoreError> for SyncError {
    fn from(error: StoreError) -> SyncError {
        SyncError::Store(error)
    }
}
