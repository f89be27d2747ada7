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

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls, Row, Statement, ToStatement};

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
        })
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
        } = self;
        let runtime = runtime.as_ref().ok_or(Error::Broken)?;
        let inner = run(runtime, broken, *timeout, client.transaction())?;
        Ok(Transaction {
            inner,
            runtime,
            broken,
            timeout: *timeout,
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
}

impl Transaction<'_> {
    pub fn commit(self) -> Result<(), Error> {
        let Transaction {
            inner,
            runtime,
            broken,
            timeout,
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

    fn query<T: ?Sized + ToStatement + Sync + Send>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.call(|c| c.query(statement, params))
    }

    fn execute(&self, statement: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        self.call(|c| c.execute(statement, params))
    }

    /// The one row a statement returns.
    fn query_one(&self, statement: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        self.call(|c| c.query_one(statement, params))
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
}
