//! Error types of the layers below HTTP. The HTTP layer maps them to
//! responses in one place (`http::response`), so no internal detail reaches
//! a PSA.

use std::fmt;
use std::path::PathBuf;

/// Reading or validating `codex.conf`.
#[derive(Debug)]
pub enum ConfigError {
    /// The configuration file named by `--config` or `$CODEX_CONFIG` cannot be read.
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not INI (a section header without `]`, a key without a name).
    Syntax { origin: String, message: String },
    /// One or more values are invalid; each problem names its section and key.
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

/// Talking to the database. The writer, the migration and one-shot
/// commands (`migrate`, `check-config`, `status`, `sync --once`) return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// When the database cannot be reached or used at all: connection
    /// refused, lost or past its deadline, the server shutting down, a
    /// SQLite file that cannot be opened, a full disk, an I/O error. The
    /// writer drops the connection and opens another; writes are refused
    /// (503) until it answers.
    Unavailable(String),
    /// When one statement fails for reasons of its own (a constraint, a
    /// value out of range for its column, a result Codex cannot read); the
    /// connection is still usable.
    Statement(String),
    /// When `codex_meta` records a schema version newer than this binary's
    /// (a newer Codex migrated the database): refused at start-up.
    SchemaTooNew { found: i64, supported: i64 },
    /// When the migration cannot bring the schema up to date (a column of a
    /// type Codex cannot convert, values that are not ticket numbers, a
    /// statement the role may not run, a statement `serve` runs that does
    /// not prepare); the migration's transaction was rolled back, so
    /// nothing was changed.
    Migration(String),
    /// When the SQLite file is not the database Codex was using: deleted,
    /// replaced, or missing where Codex created one. Writes are refused
    /// until an operator restores it or says to start fresh.
    WrongDatabase(String),
    /// When an event the database refused could not be journaled either.
    NotJournaled(String),
    /// When the writer's queue stays full past the wait a sender allows:
    /// the database is not keeping up.
    Overloaded,
    /// When the writer does not answer within the caller's timeout.
    Timeout,
    /// When the writer thread has stopped (the service is shutting down).
    Stopped,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::SchemaTooNew { found, supported } => write!(
                f,
                "the database schema is version {found}, newer than this Codex supports ({supported}); upgrade Codex"
            ),
            StoreError::WrongDatabase(message) => f.write_str(message),
            StoreError::Unavailable(message) => write!(f, "database unavailable: {message}"),
            StoreError::Statement(message) => write!(f, "database statement failed: {message}"),
            StoreError::Migration(message) => write!(
                f,
                "the database schema cannot be brought up to date, nothing was changed: {message}"
            ),
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
