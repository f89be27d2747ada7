//! A blocking PostgreSQL client whose every call has a client-side deadline.
//!
//! A frozen server (SIGSTOP) or a path that swallows packets while a
//! middlebox still ACKs them is invisible to TCP: keepalives and
//! `tcp_user_timeout` never fire, and the server's `statement_timeout`
//! cannot run on a server that does not run. So each call here is a
//! `tokio_postgres` future driven on a current-thread runtime the client
//! owns, under `tokio::time::timeout`. A call that times out breaks the
//! client: later calls fail at once, and dropping it drops the runtime and
//! with it the socket. The methods mirror the `postgres` crate's, so the
//! backend's call sites read the same.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement, ToStatement};

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
}

impl Error {
    pub fn as_db(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::Db(error) => Some(error),
            Error::TimedOut(_) | Error::Broken | Error::Runtime(_) => None,
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

    pub fn batch_execute(&self, query: &str) -> Result<(), Error> {
        self.run(self.timeout, self.client.batch_execute(query))
    }

    pub fn query<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.run(self.timeout, self.client.query(statement, params))
    }

    pub fn query_one<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.run(self.timeout, self.client.query_one(statement, params))
    }

    pub fn query_opt<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.run(self.timeout, self.client.query_opt(statement, params))
    }

    pub fn execute<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.run(self.timeout, self.client.execute(statement, params))
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
    fn run<T>(
        &self,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        run(self.runtime, self.broken, self.timeout, future)
    }

    pub fn batch_execute(&mut self, query: &str) -> Result<(), Error> {
        self.run(self.inner.batch_execute(query))
    }

    /// Prepares a statement inside the transaction (it outlives it), so a
    /// migration can prove its statements before it commits.
    pub fn prepare(&mut self, query: &str) -> Result<Statement, Error> {
        self.run(self.inner.prepare(query))
    }

    pub fn query<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.run(self.inner.query(statement, params))
    }

    pub fn query_one<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.run(self.inner.query_one(statement, params))
    }

    pub fn query_opt<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.run(self.inner.query_opt(statement, params))
    }

    pub fn execute<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.run(self.inner.execute(statement, params))
    }

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
