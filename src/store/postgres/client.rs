//! A blocking PostgreSQL client whose every call has a client-side deadline.
//!
//! A frozen server (SIGSTOP) or a path that swallows packets while a
//! middlebox still ACKs them is invisible to TCP: keepalives and
//! `tcp_user_timeout` never fire, and the server's `statement_timeout`
//! cannot run on a server that does not run. So each call here is a
//! `tokio_postgres` future driven on a current-thread runtime the client
//! owns, under `tokio::time::timeout`. A call that times out breaks the
//! client: later calls fail at once, and dropping it drops the runtime and
//! with it the socket. A client and a transaction offer the same calls
//! (`Session`), named as the `postgres` crate's.
//!
//! Each connection prepares a statement once (`Session::prepare_cached`):
//! later calls run the kept `Statement`, one round trip instead of two.
//! The cache lives and dies with its connection, so a reconnect (after the
//! server restarted, say) starts with an empty one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls, Row, Statement};

/// What a call can fail with: the server's or driver's error, or no
/// answer within the deadline.
#[derive(Debug)]
pub enum Error {
    Db(tokio_postgres::Error),
    /// No answer within the deadline; the connection was given up.
    TimedOut(Duration),
    /// An earlier call timed out; the connection is no longer used.
    Broken,
    /// The runtime that would drive the connection could not be built.
    Runtime(std::io::Error),
    /// The server returned a value Codex cannot read as it needs.
    Decode(String),
}

impl Error {
    pub fn as_db(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::Db(error) => Some(error),
            Error::TimedOut(_) | Error::Broken | Error::Runtime(_) | Error::Decode(_) => None,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Error {
        Error::Db(error)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Db(error) => write!(f, "{error}"),
            Error::TimedOut(limit) => write!(
                f,
                "no answer from the database within {:.1} s; the connection was dropped",
                limit.as_secs_f64()
            ),
            Error::Broken => {
                f.write_str("the connection was dropped after a call that did not finish")
            }
            Error::Runtime(error) => write!(f, "cannot start the connection's runtime: {error}"),
            Error::Decode(message) => f.write_str(message),
        }
    }
}

/// A connection and the runtime that drives it.
pub struct Client {
    // Declared before `runtime`, so the client goes first on drop.
    client: tokio_postgres::Client,
    runtime: Option<Runtime>,
    timeout: Duration,
    broken: AtomicBool,
    statements: StatementCache,
}

/// The statements a connection has prepared, by their text. The texts are
/// Codex's own, a fixed set of a few dozen, so the cache stays small.
#[derive(Default)]
pub struct StatementCache {
    statements: Mutex<HashMap<String, Statement>>,
    /// Statements prepared on the server over the connection's life.
    prepared: AtomicU64,
}

impl StatementCache {
    fn get(&self, query: &str) -> Option<Statement> {
        self.lock().get(query).cloned()
    }

    fn insert(&self, query: &str, statement: &Statement) {
        self.prepared.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(query.to_string(), statement.clone());
    }

    /// Drops `query`'s statement, so the next call prepares it again.
    pub fn forget(&self, query: &str) {
        self.lock().remove(query);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        // The map is never left half-changed: a panic elsewhere cannot
        // have broken it.
        self.statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Drives `future` on `runtime` for at most `limit`.
fn run<T>(
    runtime: &Runtime,
    broken: &AtomicBool,
    limit: Duration,
    future: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    if broken.load(Ordering::Relaxed) {
        return Err(Error::Broken);
    }
    match runtime.block_on(async { tokio::time::timeout(limit, future).await }) {
        Ok(result) => result.map_err(Error::Db),
        Err(_) => {
            broken.store(true, Ordering::Relaxed);
            Err(Error::TimedOut(limit))
        }
    }
}

impl Client {
    /// Connects within `connect_limit` (TCP, TLS-less startup and
    /// authentication together); later calls each get `timeout`.
    pub fn connect(
        config: &tokio_postgres::Config,
        connect_limit: Duration,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Runtime)?;
        let broken = AtomicBool::new(false);
        let (client, connection) = run(&runtime, &broken, connect_limit, config.connect(NoTls))?;
        // The connection task runs whenever a call blocks on the runtime.
        runtime.spawn(async move {
            if let Err(error) = connection.await {
                log::debug!("PostgreSQL connection ended: {error}");
            }
        });
        Ok(Client {
            client,
            runtime: Some(runtime),
            timeout,
            broken,
            statements: StatementCache::default(),
        })
    }

    /// How many statements this connection has prepared through its cache.
    #[cfg(test)]
    pub fn prepared(&self) -> u64 {
        self.statements.prepared.load(Ordering::Relaxed)
    }

    fn run<T>(
        &self,
        limit: Duration,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        let runtime = self.runtime.as_ref().ok_or(Error::Broken)?;
        run(runtime, &self.broken, limit, future)
    }

    /// The deadline of each later call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A round trip within `limit`.
    pub fn is_valid(&self, limit: Duration) -> Result<(), Error> {
        self.run(limit, self.client.simple_query("")).map(|_| ())
    }

    pub fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let Client {
            client,
            runtime,
            timeout,
            broken,
            statements,
        } = self;
        let runtime = runtime.as_ref().ok_or(Error::Broken)?;
        let inner = run(runtime, broken, *timeout, client.transaction())?;
        Ok(Transaction {
            inner,
            runtime,
            broken,
            timeout: *timeout,
            statements,
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Never wait on a call stuck in the runtime (a DNS lookup, say).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A transaction; dropped without `commit`, it rolls back.
pub struct Transaction<'a> {
    inner: tokio_postgres::Transaction<'a>,
    runtime: &'a Runtime,
    broken: &'a AtomicBool,
    timeout: Duration,
    /// The connection's: a statement prepared in a transaction outlives it.
    statements: &'a StatementCache,
}

impl Transaction<'_> {
    pub fn commit(self) -> Result<(), Error> {
        let Transaction {
            inner,
            runtime,
            broken,
            timeout,
            statements: _,
        } = self;
        run(runtime, broken, timeout, inner.commit())
    }
}

/// What drives a session's calls: the runtime, the deadline of each, and
/// the flag a call that missed it sets.
pub struct Driver<'a> {
    runtime: &'a Runtime,
    broken: &'a AtomicBool,
    timeout: Duration,
}

/// The calls a client and a transaction share, each under the deadline.
pub trait Session {
    type Inner: GenericClient + Sync;

    /// The driver's connection or transaction, and what drives it.
    fn parts(&self) -> Result<(&Self::Inner, Driver<'_>), Error>;

    /// The connection's prepared statements.
    fn statements(&self) -> &StatementCache;

    /// Runs the call `f` makes on the inner client.
    fn call<'s, T, F>(&'s self, f: impl FnOnce(&'s Self::Inner) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let (inner, driver) = self.parts()?;
        run(driver.runtime, driver.broken, driver.timeout, f(inner))
    }

    fn batch_execute(&self, query: &str) -> Result<(), Error> {
        self.call(|c| c.batch_execute(query))
    }

    /// Prepares a statement (inside a transaction it outlives it, so a
    /// migration can prove its statements before it commits).
    fn prepare(&self, query: &str) -> Result<Statement, Error> {
        self.call(|c| c.prepare(query))
    }

    /// The statement for `query`, prepared on the first call on this
    /// connection and kept for the later ones.
    fn prepare_cached(&self, query: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements().get(query) {
            return Ok(statement);
        }
        let statement = self.prepare(query)?;
        self.statements().insert(query, &statement);
        Ok(statement)
    }

    /// Runs `query`, prepared once per connection.
    fn query(&self, query: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let statement = self.prepare_cached(query)?;
        self.query_prepared(&statement, params)
    }

    fn query_prepared(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.call(|c| c.query(statement, params))
    }

    fn execute(&self, statement: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        self.call(|c| c.execute(statement, params))
    }

    /// The one row a statement returns (prepared once per connection).
    fn query_one(&self, query: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let statement = self.prepare_cached(query)?;
        self.call(|c| c.query_one(&statement, params))
    }
}

impl Session for Client {
    type Inner = tokio_postgres::Client;

    fn parts(&self) -> Result<(&Self::Inner, Driver<'_>), Error> {
        let runtime = self.runtime.as_ref().ok_or(Error::Broken)?;
        let driver = Driver {
            runtime,
            broken: &self.broken,
            timeout: self.timeout,
        };
        Ok((&self.client, driver))
    }

    fn statements(&self) -> &StatementCache {
        &self.statements
    }
}

impl<'a> Session for Transaction<'a> {
    type Inner = tokio_postgres::Transaction<'a>;

    fn parts(&self) -> Result<(&Self::Inner, Driver<'_>), Error> {
        let driver = Driver {
            runtime: self.runtime,
            broken: self.broken,
            timeout: self.timeout,
        };
        Ok((&self.inner, driver))
    }

    fn statements(&self) -> &StatementCache {
        self.statements
    }
}
