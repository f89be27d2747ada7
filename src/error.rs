//! Error types of the layers below HTTP. The HTTP layer maps them to
//! responses in one place (`http::failure`), so no internal detail reaches
//! a PSA.

use std::path::PathBuf;

use thiserror::Error;

/// Reading or validating `codex.conf`.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file named by `--config` or `$CODEX_CONFIG`, or
    /// found on the search path, cannot be read (missing, unreadable, not
    /// UTF-8).
    #[error("cannot read configuration file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not INI (a section header without `]`, a key without a name).
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// One or more values are invalid, or two keys contradict each other;
    /// every problem is listed, each naming its section and key (or the
    /// `CODEX_*` variable it came from).
    #[error("{origin}: invalid configuration:{}", bullets(problems))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
}

/// `problems` as an indented list, one per line.
fn bullets(problems: &[String]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

/// The certificate or key of `[server] tls_cert` and `tls_key` cannot be
/// served (at start, `check-config`, or a reload, which then keeps the
/// certificate in force).
#[derive(Debug, Error)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no PEM certificate.
    #[error("[server] tls_cert {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    /// The key file cannot be read or holds no PEM private key.
    #[error("[server] tls_key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    /// The key file grants others access: anyone on the machine could read it.
    #[error(
        "[server] tls_key {} is open to other users (mode {mode:04o}): run `chmod 600 {}` (or 640 with group codex)",
        path.display(),
        path.display()
    )]
    KeyMode { path: PathBuf, mode: u32 },
    /// The key is of a kind rustls cannot use, or not the certificate's key.
    #[error("[server] tls_key {} cannot serve tls_cert {}: {reason}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// One value that cannot be used, from `codex.conf` or a `CODEX_*`
/// variable, or a table entry: what was found and what is expected. The
/// reader adds where it was found and gathers them into
/// [`ConfigError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Talking to the database. The writer, the migration and one-shot
/// commands (`migrate`, `check-config`, `status`, `sync --once`) return it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// When the database cannot be reached or used at all: connection
    /// refused, lost or past its deadline, the server shutting down, a
    /// SQLite file that cannot be opened, a full disk, an I/O error. The
    /// writer drops the connection and opens another; writes are refused
    /// (503) until it answers.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// When one statement fails for reasons of its own (a constraint, a
    /// value out of range for its column, a result Codex cannot read); the
    /// connection is still usable.
    #[error("database statement failed: {0}")]
    Statement(String),
    /// When `codex_meta` records a schema version newer than this binary's
    /// (a newer Codex migrated the database): refused at start-up, naming
    /// the release that wrote it (`needs`: "0.2.0 or later").
    #[error(
        "the database schema is version {found}, newer than this Codex {} supports ({supported}); upgrade Codex to {needs} (or restore the copy of the database taken before the upgrade)",
        env!("CARGO_PKG_VERSION")
    )]
    SchemaTooNew {
        found: i64,
        supported: i64,
        needs: String,
    },
    /// When the migration cannot bring the schema up to date (a column of a
    /// type Codex cannot convert, values that are not ticket numbers, a
    /// statement the role may not run, a statement `serve` runs that does
    /// not prepare); the migration's transaction was rolled back, so
    /// nothing was changed.
    #[error("the database schema cannot be brought up to date, nothing was changed: {0}")]
    Migration(String),
    /// When the SQLite file is not the database Codex was using: deleted,
    /// replaced, or missing where Codex created one. Writes are refused
    /// until an operator restores it or says to start fresh.
    #[error("{0}")]
    WrongDatabase(String),
    /// When an event the database refused could not be journaled either.
    #[error("database statement failed and the delivery could not be journaled: {0}")]
    NotJournaled(String),
    /// When the writer's queue stays full past the wait a sender allows:
    /// the database is not keeping up.
    #[error("the database writer queue is full")]
    Overloaded,
    /// When the writer does not answer within the caller's timeout.
    #[error("the database writer did not answer in time")]
    Timeout,
    /// When the writer thread has stopped (the service is shutting down).
    #[error("the database writer has stopped")]
    Stopped,
}

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
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncError {
    /// The API refused the credentials (401/403); retrying will not help.
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    /// The API kept failing (network error, timeout, 5xx, 429) after retries.
    #[error("API error: {0}")]
    Api(String),
    /// The API answered with something that is not what its documentation says.
    #[error("unexpected API answer: {0}")]
    Protocol(String),
    /// Writing the results failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Shutdown was requested mid-run.
    #[error("interrupted by shutdown")]
    Interrupted,
}

/// Reading a time zone name or a timestamp (`timestamp`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimestampError {
    /// A configured zone name is in neither the system's time zone database
    /// nor the copy built into Codex.
    #[error("'{0}' is not an IANA time zone name such as Asia/Kolkata")]
    UnknownZone(String),
    /// The text is longer than any timestamp; `start` is its beginning.
    #[error("'{start}…' ({bytes} bytes) is too long to be a timestamp")]
    TooLong { start: String, bytes: usize },
    /// The text is in none of the forms Codex reads.
    #[error(
        "'{0}' is not a timestamp Codex reads; send RFC 3339 (2024-01-15T10:30:00Z), \
         YYYY-MM-DD HH:MM:SS with an offset, or a date with a month name"
    )]
    Unreadable(String),
    /// The text gives an hour outside 1 to 12 with AM or PM.
    #[error("'{text}': hour {hour} cannot have AM/PM")]
    HourWithMeridiem { text: String, hour: i8 },
    /// The parts read are no real date and time (February 30, 25:00).
    #[error("'{text}': not a date and time: {reason}")]
    NotADateTime { text: String, reason: String },
    /// The date and time cannot be placed in its zone or at its offset
    /// (outside the range a timestamp holds).
    #[error("'{text}': {reason}")]
    OutOfRange { text: String, reason: String },
    /// The text names a zone abbreviation that is neither in Codex's table
    /// (docs/freshservice-bodies.md lists it) nor the configured zone's own.
    #[error(
        "'{text}': the zone '{abbreviation}' is not one Codex knows; \
         set [freshservice] timezone to the account's zone"
    )]
    UnknownAbbreviation { text: String, abbreviation: String },
}

/// Reading what a PSA sent (`psa`): one value of a webhook body or an API
/// ticket, or an API ticket as a whole.
/// A value that cannot be read is a warning and the field is left alone;
/// an API ticket that cannot be read is skipped with a warning. `shown` is
/// the value as the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PsaError {
    /// An id is neither a positive whole number nor one behind a prefix
    /// such as `INC-`.
    #[error("{shown} is not an id")]
    NotAnId { shown: String },
    /// An id is a whole number but zero or negative.
    #[error("{shown} is not a positive id")]
    NotAPositiveId { shown: String },
    /// A text field holds an object or a list.
    #[error("{shown} is not text")]
    NotText { shown: String },
    /// A true/false field holds something else.
    #[error("{shown} is not true or false")]
    NotABool { shown: String },
    /// A timestamp field holds an object, a list or a boolean.
    #[error("{shown} is not a timestamp")]
    NotATimestamp { shown: String },
    /// A timestamp field holds text that is not a timestamp Codex reads.
    #[error("{0}")]
    Timestamp(#[from] TimestampError),
    /// A SuperOps `client.accountId` is not a whole number from 1 to
    /// `i64::MAX` (the predecessor's `companies.external_id`).
    #[error(
        "{shown} is not an account id Codex can store (a whole number from 1 to {})",
        i64::MAX
    )]
    NotAnAccountId { shown: String },
    /// A status or priority object has no `name`.
    #[error("{shown} has no name")]
    NoName { shown: String },
    /// A status or priority is an object without a name, a list or a boolean.
    #[error("{shown} is not a name")]
    NotAName { shown: String },
    /// An API answer lists something other than an object as a ticket.
    #[error("a ticket in the API answer is not a JSON object")]
    TicketNotAnObject,
    /// An API ticket has no usable id (`key` is the API's name for it).
    #[error("a ticket in the API answer has no usable {key}")]
    TicketWithoutId { key: &'static str },
    /// An API ticket has no usable version (`key`: `updated_at`,
    /// `updatedTime`), so it cannot be ordered against other events.
    #[error("ticket {ticket_id} in the API answer has no usable {key}")]
    TicketWithoutVersion { ticket_id: i64, key: &'static str },
}
