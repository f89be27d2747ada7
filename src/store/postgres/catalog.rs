//! The migration's view of a PostgreSQL database: its catalog, read in the
//! current schema, and the session's temporary schema as the scratch place
//! the steps run in first.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::client::{self, Client, Session, Transaction};
use super::{LOCK_MIGRATE, MIGRATE_LIMIT, Statements, describe, map_error};
use crate::error::StoreError;
use crate::store::dialect::Dialect;
use crate::store::migrate::{self};
use crate::store::schema::{self, Column, ColumnType, Conversion, Family, Index, Step, Table};
use crate::store::statements;

/// Creates or upgrades the schema, one instance at a time, and prepares
/// every statement the backend runs before committing; with `commit`
/// false (`check-config`) everything is rolled back.
pub(super) fn migrate(
    client: &mut Client,
    commit: bool,
) -> Result<(Statements, Vec<String>), StoreError> {
    let mut tx = client.transaction().map_err(map_error)?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{}s'",
        MIGRATE_LIMIT.as_secs() - 5
    ))
    .map_err(map_error)?;
    tx.query("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
        .map_err(map_error)?;
    // "already exists, skipping" notices would only clutter the log.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .map_err(map_error)?;
    let mut catalog = Catalog { tx: &mut tx };
    let changes = migrate::run(&mut catalog)?;
    let companies = migrate::companies_usable(&mut catalog)?;
    let statements = prepare(&tx, companies).map_err(|e| migrate::unpreparable(map_error(e)))?;
    // Kept in the connection's cache: the writer runs them from there.
    for statement in statements::all(Dialect::Postgres) {
        tx.prepare_cached(&Dialect::Postgres.render(&statement))
            .map_err(|e| migrate::unpreparable(map_error(e)))?;
    }
    if commit {
        tx.commit().map_err(map_error)?;
    }
    Ok((statements, changes))
}

fn prepare(tx: &Transaction<'_>, companies: bool) -> Result<Statements, client::Error> {
    let columns = statements::insert_columns();
    let limits = tx
        .query(
            "SELECT column_name::text, character_maximum_length::int8 FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'ticket_details' \
             AND character_maximum_length IS NOT NULL",
            &[],
        )?
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            let limit: i64 = row.get(1);
            let at = columns.iter().position(|c| *c == name)?;
            Some((at, usize::try_from(limit).ok()?))
        })
        .collect();
    let prepare = |sql: &str| tx.prepare_cached(&Dialect::Postgres.render(sql));
    Ok(Statements {
        limits,
        upsert: prepare(&statements::postgres_upsert(companies))?,
        journal: prepare(&format!(
            "INSERT INTO webhook_events ({}) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
             $4::text[], $5::int8[], $6::text[], $7::text[], $8::bytea[])",
            statements::JOURNAL_COLUMNS
        ))?,
        tombstone_select: prepare(&statements::tombstone_select())?,
        tombstone_upsert: prepare(statements::TOMBSTONE_UPSERT)?,
        tombstone_delete: prepare(&statements::tombstone_delete())?,
        ticket_delete: prepare(&statements::ticket_delete())?,
    })
}

/// The migration's view of a PostgreSQL database (its current schema).
struct Catalog<'a, 'b> {
    tx: &'a mut Transaction<'b>,
}

impl Catalog<'_, '_> {
    /// Runs `steps` in the session's temporary schema and reads it back.
    fn scratch(&mut self, steps: &[Step]) -> Result<Vec<Table>, StoreError> {
        for step in steps {
            self.tx
                .batch_execute(&step.sql(Dialect::Postgres))
                .map_err(|error| match error.as_db().and_then(tokio_postgres::Error::code) {
                    Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => {
                        StoreError::Migration(format!(
                            "{}: Codex runs its schema steps in a temporary scratch copy first; \
                             grant the role TEMP on the database (GRANT TEMP ON DATABASE <name> TO <role>)",
                            describe(&error)
                        ))
                    }
                    _ => migrate::broken_step(step, &map_error(error)),
                })?;
        }
        schema::read_tables(self)
    }

    fn rows(&self, sql: &str, table: &str) -> Result<Vec<Row>, StoreError> {
        self.tx.query(sql, &[&table]).map_err(map_error)
    }
}

impl schema::Catalog for Catalog<'_, '_> {
    fn connection(&self) -> &dyn crate::store::connection::Connection {
        &*self.tx
    }

    fn run_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.batch_execute(sql).map_err(map_error)
    }

    fn table_exists(&mut self, table: &str) -> Result<bool, StoreError> {
        let rows = self.rows(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind IN ('r', 'p')",
            table,
        )?;
        Ok(!rows.is_empty())
    }

    fn tables(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .tx
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.oid",
                &[],
            )
            .map_err(map_error)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn columns(&mut self, table: &str) -> Result<Vec<Column>, StoreError> {
        let rows = self.rows(
            "SELECT a.attname::text, format_type(a.atttypid, NULL), format_type(a.atttypid, a.atttypmod), \
             CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod > 4 \
                  THEN (a.atttypmod - 4)::int8 END, \
             a.attnotnull, pg_get_expr(d.adbin, d.adrelid), \
             EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = a.attrelid AND x.indisprimary \
                     AND a.attnum = ANY (x.indkey::int2[])) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE n.nspname = current_schema() AND c.relname = $1 AND a.attnum > 0 \
             AND NOT a.attisdropped ORDER BY a.attnum",
            table,
        )?;
        Ok(rows
            .iter()
            .map(|row| {
                let family: String = row.get(1);
                Column {
                    name: row.get(0),
                    ty: ColumnType {
                        family: Family::of_postgres_type(&family),
                        declared: row.get(2),
                        max_length: row.get(3),
                    },
                    not_null: row.get(4),
                    default: row.get(5),
                    primary_key: row.get(6),
                }
            })
            .collect())
    }

    fn indexes(&mut self, table: &str) -> Result<Vec<Index>, StoreError> {
        let rows = self.rows(
            "SELECT i.relname::text, x.indisunique, \
             NOT EXISTS (SELECT 1 FROM pg_constraint cn WHERE cn.conindid = x.indexrelid), \
             a.attname::text \
             FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_class i ON i.oid = x.indexrelid \
             CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum \
             WHERE n.nspname = current_schema() AND t.relname = $1 AND x.indpred IS NULL \
             ORDER BY i.relname, k.ord",
            table,
        )?;
        let rows = rows
            .iter()
            .map(|row| {
                let index = Index {
                    name: row.get(0),
                    columns: Vec::new(),
                    unique: row.get(1),
                    created: row.get(2),
                };
                (index, row.get(3))
            })
            .collect();
        Ok(schema::group_index_columns(rows))
    }

    /// The steps run in the session's temporary schema, inside a savepoint
    /// that is rolled back: nothing of them stays, and no privilege beyond
    /// TEMP is needed.
    fn expected(&mut self, steps: &[Step]) -> Result<Vec<Table>, StoreError> {
        self.tx
            .batch_execute("SAVEPOINT codex_expected; SET LOCAL search_path = pg_temp")
            .map_err(map_error)?;
        let tables = self.scratch(steps);
        self.tx
            .batch_execute("ROLLBACK TO SAVEPOINT codex_expected; RELEASE SAVEPOINT codex_expected")
            .map_err(map_error)?;
        tables
    }

    fn non_integer(&mut self, table: &str, column: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT {column}::text FROM {table} WHERE {column} IS NOT NULL \
                     AND {column}::text !~ '^\\s*[-+]?[0-9]{{1,18}}\\s*$' LIMIT 1"
                ),
                &[],
            )
            .map_err(map_error)?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    /// One ALTER TABLE for all of a table's columns (one rewrite at most):
    /// text holding integers to the integer type.
    fn convert(&mut self, conversion: &Conversion<'_>) -> Result<(), StoreError> {
        let table = conversion.expected.name.as_str();
        let clauses: Vec<String> = conversion
            .columns
            .iter()
            .map(|c| {
                format!(
                    "ALTER COLUMN {0} TYPE {ty} USING trim({0}::text)::{ty}",
                    c.name,
                    ty = c.ty.declared
                )
            })
            .collect();
        self.run_script(&format!("ALTER TABLE {table} {}", clauses.join(", ")))
            .map_err(|error| match error {
                // A view over the table blocks a type change.
                StoreError::Statement(message) => StoreError::Migration(format!(
                    "cannot change column types of {table} ({message}); drop what depends on them \
                     (for example a view), run codex migrate, then create it again"
                )),
                other => other,
            })
    }

    /// `VARCHAR(n)` to TEXT changes no stored value, so takes no rewrite.
    /// A column a view uses cannot change type; each is tried in a
    /// savepoint of its own, so such a column keeps its limit and the rest
    /// of the migration goes on.
    fn widen(
        &mut self,
        table: &str,
        columns: &[&Column],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut kept = Vec::new();
        for column in columns {
            self.tx
                .batch_execute("SAVEPOINT codex_widen")
                .map_err(map_error)?;
            let altered = self.tx.batch_execute(&format!(
                "ALTER TABLE {table} ALTER COLUMN {} TYPE TEXT",
                column.name
            ));
            match altered {
                Ok(()) => self
                    .tx
                    .batch_execute("RELEASE SAVEPOINT codex_widen")
                    .map_err(map_error)?,
                Err(error)
                    if error.as_db().and_then(tokio_postgres::Error::code)
                        == Some(&SqlState::FEATURE_NOT_SUPPORTED) =>
                {
                    self.tx
                        .batch_execute("ROLLBACK TO SAVEPOINT codex_widen")
                        .map_err(map_error)?;
                    kept.push((column.name.clone(), describe(&error)));
                }
                Err(error) => return Err(map_error(error)),
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::connection::tests::server;
    use crate::store::postgres::open_client;
    use crate::store::schema::Catalog as _;
    use crate::store::schema::STEPS;

    #[test]
    #[cfg_attr(
        not(codex_postgres_tests),
        ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
    )]
    fn expected_schema_is_read_from_the_temporary_schema_and_rolled_back() {
        let url = server();
        let mut client = open_client(&url).unwrap();
        let mut tx = client.transaction().unwrap();
        // An empty schema of its own, gone with the transaction.
        let schema = format!("codex_unit_{}", std::process::id());
        tx.batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET LOCAL search_path = {schema}"
        ))
        .unwrap();
        let mut catalog = Catalog { tx: &mut tx };
        let tables = catalog.expected(&STEPS).unwrap();
        migrate::check_expected(&tables, Dialect::Postgres);
        let revision = tables[1]
            .columns
            .iter()
            .find(|c| c.name == "revision")
            .unwrap();
        assert_eq!(revision.definition(), "bigint NOT NULL DEFAULT 1");
        // The scratch tables are gone and the search path is back.
        assert!(catalog.tables().unwrap().is_empty());
        assert!(!catalog.table_exists("ticket_details").unwrap());
        let current: String = tx
            .query_one("SELECT current_schema()::text", &[])
            .unwrap()
            .get(0);
        assert_eq!(current, schema);
    }
}
