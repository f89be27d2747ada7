//! A PostgreSQL connection as the store uses it: opened with deadlines,
//! its errors told apart (the database is away, or the statement is at
//! fault), and the shared statements run on it (`Connection`).

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::client::{self, Client, Session};
use super::{CALL_LIMIT, CONNECT_LIMIT};
use crate::config::PostgresUrl;
use crate::error::StoreError;
use crate::store::connection::{Cell, Cells, Connection, Param};
use crate::store::dialect::Dialect;

/// Opens a connection with timeouts that keep a dead server from hanging
/// the writer.
pub fn open_client(url: &PostgresUrl) -> Result<Client, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url.expose())
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", url.masked())))?;
    let connect_limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_LIMIT);
    config.connect_timeout(connect_limit);
    // A dropped path (no ACKs) is noticed by the kernel within seconds.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(5));
    config.keepalives_interval(Duration::from_secs(1));
    config.keepalives_retries(3);
    config.tcp_user_timeout(Duration::from_secs(5));
    if config.get_application_name().is_none() {
        config.application_name("codex");
    }
    let client = Client::connect(&config, connect_limit, CALL_LIMIT).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to {}: {}",
            url.masked(),
            describe(&e)
        ))
    })?;
    // The server gives up a little before the client does, so a slow
    // statement normally ends with the server's own error.
    client
        .batch_execute("SET statement_timeout = '5s'; SET lock_timeout = '4s'")
        .map_err(map_error)?;
    Ok(client)
}

/// The server's message for a database error, else the driver's.
pub(super) fn describe(error: &client::Error) -> String {
    let Some(error) = error.as_db() else {
        return error.to_string();
    };
    match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
    }
}

/// Lost connections and server-side shutdowns make the database
/// unavailable; anything else is the statement's own problem.
pub(super) fn map_error(error: client::Error) -> StoreError {
    if let client::Error::Decode(message) = error {
        return StoreError::Statement(message);
    }
    let Some(db) = error.as_db() else {
        return StoreError::Unavailable(describe(&error));
    };
    let unavailable = match db.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "58030"
        }
    };
    if unavailable || db.is_closed() {
        StoreError::Unavailable(describe(&error))
    } else {
        StoreError::Statement(describe(&error))
    }
}

/// A client or transaction runs the shared statements: rendered for
/// PostgreSQL, prepared once per connection, and each parameter bound as
/// the type the server inferred for it (an INTEGER column takes an `i32`).
impl<S: Session> Connection for S {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let sql = Dialect::Postgres.render(sql);
        let (statement, values) = bind(self, &sql, params)?;
        let values: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        Session::execute(self, &statement, &values).map_err(|error| stale(self, &sql, error))
    }

    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Cells>, StoreError> {
        let sql = Dialect::Postgres.render(sql);
        let (statement, values) = bind(self, &sql, params)?;
        let values: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
        let rows = Session::query_prepared(self, &statement, &values)
            .map_err(|error| stale(self, &sql, error))?;
        rows.iter()
            .map(|row| cells(row).map_err(map_error))
            .collect()
    }
}

/// `error` as a `StoreError`. A kept statement the server no longer runs
/// (its result type changed under it, after another instance's migration,
/// or it is gone, behind a pooler) is forgotten first, so that the next
/// call prepares it again.
fn stale(session: &impl Session, sql: &str, error: client::Error) -> StoreError {
    if let Some(code) = error.as_db().and_then(tokio_postgres::Error::code) {
        if *code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::INVALID_SQL_STATEMENT_NAME
        {
            session.statements().forget(sql);
        }
    }
    map_error(error)
}

/// A parameter as the Rust type of the server's type for it.
type Bound<'a> = Box<dyn ToSql + Sync + 'a>;

/// The statement for `sql` (PostgreSQL's spelling), prepared on its first
/// use on this connection, and `params` converted to the types the server
/// inferred for them.
fn bind<'a>(
    session: &impl Session,
    sql: &str,
    params: &[Param<'a>],
) -> Result<(Statement, Vec<Bound<'a>>), StoreError> {
    let statement = session.prepare_cached(sql).map_err(map_error)?;
    let values = params
        .iter()
        .zip(statement.params())
        .map(|(param, ty)| typed(*param, ty))
        .collect::<Result<_, _>>()?;
    Ok((statement, values))
}

fn typed<'a>(param: Param<'a>, ty: &Type) -> Result<Bound<'a>, StoreError> {
    let narrow = |n: i64| StoreError::Statement(format!("{n} is out of range for type {ty}"));
    Ok(match param {
        Param::Int(n) if *ty == Type::INT4 => Box::new(
            n.map(|n| i32::try_from(n).map_err(|_| narrow(n)))
                .transpose()?,
        ),
        Param::Int(n) if *ty == Type::INT2 => Box::new(
            n.map(|n| i16::try_from(n).map_err(|_| narrow(n)))
                .transpose()?,
        ),
        Param::Int(n) => Box::new(n),
        Param::Text(text) => Box::new(text),
        Param::Bool(b) => Box::new(b),
    })
}

/// A row as `Cells`, each value read as its column's type.
pub(super) fn cells(row: &Row) -> Result<Cells, client::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (at, column) in row.columns().iter().enumerate() {
        values.push(
            match column.type_().name() {
                "int8" => row.try_get::<_, Option<i64>>(at)?.map(Cell::Int),
                "int4" => row
                    .try_get::<_, Option<i32>>(at)?
                    .map(|n| Cell::Int(n.into())),
                "int2" => row
                    .try_get::<_, Option<i16>>(at)?
                    .map(|n| Cell::Int(n.into())),
                "bool" => row.try_get::<_, Option<bool>>(at)?.map(Cell::Bool),
                "float8" => row.try_get::<_, Option<f64>>(at)?.map(Cell::Float),
                "float4" => row
                    .try_get::<_, Option<f32>>(at)?
                    .map(|x| Cell::Float(x.into())),
                "bytea" => row.try_get::<_, Option<Vec<u8>>>(at)?.map(Cell::Bytes),
                _ => row.try_get::<_, Option<String>>(at)?.map(Cell::Text),
            }
            .unwrap_or(Cell::Null),
        );
    }
    Ok(Cells(values))
}

/// A value the server returned that Codex cannot read, as a call's error.
pub(super) fn decoded<T>(result: Result<T, StoreError>) -> Result<T, client::Error> {
    result.map_err(|error| client::Error::Decode(error.to_string()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::DatabaseUrl;
    use crate::store::connection::Connection;

    /// The server the suite runs against (scripts/test.sh starts one).
    pub(in crate::store::postgres) fn server() -> PostgresUrl {
        let url = std::env::var("CODEX_TEST_DATABASE_URL").unwrap_or_default();
        match url.parse() {
            Ok(DatabaseUrl::Postgres(url)) => url,
            other => panic!("CODEX_TEST_DATABASE_URL is not a PostgreSQL URL: {other:?}"),
        }
    }

    #[test]
    #[cfg_attr(
        not(codex_postgres_tests),
        ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
    )]
    fn parameters_take_the_type_the_server_inferred() {
        let url = server();
        let client = open_client(&url).unwrap();
        let conn: &dyn Connection = &client;
        let rows = conn
            .query(
                "SELECT CAST(?1 AS INTEGER) + 1, CAST(?2 AS TEXT), CAST(?3 AS SMALLINT)",
                &[Param::Int(Some(41)), Param::Text(None), Param::Int(Some(2))],
            )
            .unwrap();
        assert_eq!(rows[0].int(0).unwrap(), Some(42));
        assert_eq!(rows[0].text(1).unwrap(), None);
        assert_eq!(rows[0].int(2).unwrap(), Some(2));
        let error = conn
            .query("SELECT CAST(?1 AS INTEGER)", &[Param::Int(Some(1 << 40))])
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::Statement(m) if m.contains("out of range")),
            "{error}"
        );
    }
}
