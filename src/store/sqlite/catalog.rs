//! The migration's view of a SQLite database: its catalog, and an
//! in-memory database as the scratch place the steps run in first.

use rusqlite::{Connection, OptionalExtension};

use super::{BatchSql, map_error};
use crate::error::StoreError;
use crate::store::connection;
use crate::store::dialect::Dialect;
use crate::store::migrate::{self};
use crate::store::schema::{self, Column, ColumnType, Conversion, Family, Index, Step, Table};
use crate::store::statements;

/// Creates or upgrades the schema in `tx` and prepares every statement the
/// backend runs (so a migration that `serve` could not use fails before it
/// commits). Returns the statements of a batch and the changes made.
pub(super) fn migrate(
    tx: &rusqlite::Transaction<'_>,
) -> Result<(BatchSql, Vec<String>), StoreError> {
    let mut catalog = Catalog {
        conn: tx,
        scratch: None,
    };
    let changes = migrate::run(&mut catalog)?;
    let companies = migrate::companies_usable(&mut catalog)?;
    let sql = BatchSql {
        upsert: statements::sqlite_upsert(companies),
        select: statements::ticket_select(),
        journal: format!(
            "INSERT INTO webhook_events ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            statements::JOURNAL_COLUMNS
        ),
        tombstone_select: statements::tombstone_select(),
        tombstone_upsert: statements::TOMBSTONE_UPSERT.to_string(),
        tombstone_delete: statements::tombstone_delete(),
    };
    let shared = statements::all(Dialect::Sqlite);
    for statement in sql
        .all()
        .into_iter()
        .chain(shared.iter().map(String::as_str))
    {
        tx.prepare(statement)
            .map_err(|e| migrate::unpreparable(map_error(e)))?;
    }
    Ok((sql, changes))
}

/// The migration's view of a SQLite database.
struct Catalog<'a> {
    conn: &'a Connection,
    /// The in-memory database `expected` ran the steps in, kept for the
    /// table definitions a conversion copies.
    scratch: Option<Connection>,
}

impl schema::Catalog for Catalog<'_> {
    fn connection(&self) -> &dyn connection::Connection {
        self.conn
    }

    fn run_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(map_error)
    }

    fn table_exists(&mut self, table: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
            .map_err(map_error)
    }

    fn tables(&mut self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
            .map_err(map_error)?;
        let names = stmt.query_map([], |row| row.get(0)).map_err(map_error)?;
        names.collect::<rusqlite::Result<_>>().map_err(map_error)
    }

    fn columns(&mut self, table: &str) -> Result<Vec<Column>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")
            .map_err(map_error)?;
        let rows = stmt
            .query_map([table], |row| {
                let declared: String = row.get(1)?;
                Ok(Column {
                    name: row.get(0)?,
                    ty: ColumnType {
                        family: Family::of_sqlite_type(&declared),
                        declared,
                        // SQLite does not enforce VARCHAR(n).
                        max_length: None,
                    },
                    not_null: row.get(2)?,
                    default: row.get(3)?,
                    primary_key: row.get::<_, i64>(4)? > 0,
                })
            })
            .map_err(map_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_error)
    }

    fn indexes(&mut self, table: &str) -> Result<Vec<Index>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT l.name, l.\"unique\", l.origin = 'c', i.name \
                 FROM pragma_index_list(?1) l, pragma_index_info(l.name) i \
                 WHERE l.partial = 0 ORDER BY l.seq, i.seqno",
            )
            .map_err(map_error)?;
        let rows = stmt
            .query_map([table], |row| {
                Ok((
                    Index {
                        name: row.get(0)?,
                        columns: Vec::new(),
                        unique: row.get(1)?,
                        created: row.get(2)?,
                    },
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(map_error)?;
        let rows = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_error)?;
        Ok(schema::group_index_columns(rows))
    }

    fn expected(&mut self, steps: &[Step]) -> Result<Vec<Table>, StoreError> {
        let scratch = Connection::open_in_memory().map_err(map_error)?;
        for step in steps {
            scratch
                .execute_batch(&step.sql(Dialect::Sqlite))
                .map_err(|e| migrate::broken_step(step, &map_error(e)))?;
        }
        let tables = schema::read_tables(&mut Catalog {
            conn: &scratch,
            scratch: None,
        })?;
        self.scratch = Some(scratch);
        Ok(tables)
    }

    fn non_integer(&mut self, table: &str, column: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT CAST({column} AS TEXT) FROM {table} WHERE {column} IS NOT NULL \
                     AND CAST(CAST({column} AS INTEGER) AS TEXT) <> CAST({column} AS TEXT) LIMIT 1"
                ),
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(map_error)
    }

    /// SQLite does not enforce `VARCHAR(n)`: nothing to lift.
    fn widen(
        &mut self,
        _table: &str,
        _columns: &[&Column],
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// SQLite cannot change a column's type: the table is rebuilt (the
    /// documented create, copy, drop, rename), inside the migration's
    /// transaction, keeping columns and indexes Codex does not know.
    fn convert(&mut self, conversion: &Conversion<'_>) -> Result<(), StoreError> {
        let Conversion {
            expected,
            columns,
            existing,
        } = conversion;
        let table = expected.name.as_str();
        let rebuilt = format!("{table}__codex_rebuild");
        // The definition the steps gave the table, under the new name:
        // renamed in the scratch copy, SQLite rewrites it itself.
        let scratch = self
            .scratch
            .as_ref()
            .ok_or_else(|| StoreError::Migration(format!("no expected definition of {table}")))?;
        let create: String = scratch
            .execute_batch(&format!("ALTER TABLE {table} RENAME TO {rebuilt}"))
            .and_then(|()| {
                scratch.query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [&rebuilt],
                    |row| row.get(0),
                )
            })
            .and_then(|create| {
                scratch.execute_batch(&format!("ALTER TABLE {rebuilt} RENAME TO {table}"))?;
                Ok(create)
            })
            .map_err(map_error)?;
        self.run_script(&create)?;
        let new_columns = self.columns(&rebuilt)?;
        for column in existing.iter() {
            if !new_columns.iter().any(|c| c.name == column.name) {
                self.run_script(&format!(
                    "ALTER TABLE {rebuilt} ADD COLUMN {} {}",
                    column.name, column.ty.declared
                ))?;
            }
        }
        let names: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
        let values: Vec<String> = existing
            .iter()
            .map(|c| match columns.iter().find(|t| t.name == c.name) {
                Some(t) if t.ty.family == Family::Int => format!("CAST({} AS INTEGER)", c.name),
                _ => c.name.clone(),
            })
            .collect();
        // Indexes of the old table that are not Codex's own, recreated on the
        // new one (Codex's come from the steps after the conversion; the
        // first schema's unique index is the new table's constraint).
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL \
                 AND name NOT LIKE 'idx_ticket_%' AND name <> 'ticket_details_external_id_external_source_key'",
            )
            .map_err(map_error)?;
        let indexes = stmt
            .query_map([table], |row| row.get::<_, String>(0))
            .map_err(map_error)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_error)?;
        drop(stmt);
        self.run_script(&format!(
            "INSERT INTO {rebuilt} ({}) SELECT {} FROM {table}",
            names.join(", "),
            values.join(", ")
        ))?;
        self.run_script(&format!("DROP TABLE {table}"))?;
        self.run_script(&format!("ALTER TABLE {rebuilt} RENAME TO {table}"))?;
        for index in indexes {
            self.run_script(&index)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::Catalog as _;
    use crate::store::schema::STEPS;

    fn catalog(conn: &Connection) -> Catalog<'_> {
        Catalog {
            conn,
            scratch: None,
        }
    }

    #[test]
    fn expected_schema_is_read_from_a_scratch_database() {
        let conn = Connection::open_in_memory().unwrap();
        let mut catalog = catalog(&conn);
        let tables = catalog.expected(&STEPS).unwrap();
        migrate::check_expected(&tables, Dialect::Sqlite);
        // Nothing of the scratch copy is in the database.
        assert!(catalog.tables().unwrap().is_empty());
    }

    #[test]
    fn steps_run_in_order_and_a_second_run_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A predecessor-like table, with a single-column index under a name
        // step 2 gives an index on two columns.
        conn.execute_batch(
            "CREATE TABLE ticket_details (id INTEGER PRIMARY KEY, external_id BIGINT NOT NULL, \
             external_source VARCHAR(50) NOT NULL, subject VARCHAR(150), last_updated_at TEXT); \
             CREATE INDEX idx_ticket_source ON ticket_details (external_source); \
             INSERT INTO ticket_details (external_id, external_source, subject, last_updated_at) \
             VALUES (7, 'freshservice', 'Printer', '2024-01-15T10:00:00Z')",
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        let (_, changes) = migrate(&tx).unwrap();
        tx.commit().unwrap();
        let at = |line: &str| {
            changes
                .iter()
                .position(|c| c.starts_with(line))
                .unwrap_or_else(|| panic!("{line} in {changes:?}"))
        };
        // The index goes before step 1 and comes back with step 2; the
        // columns step 2 indexes are there by then.
        assert!(
            at("rebuilding index idx_ticket_source with external_id")
                < at("creating table codex_meta")
        );
        assert!(at("adding column ticket_details.status") < at("versioning 1 inherited tickets"));
        let indexes = catalog(&conn).indexes("ticket_details").unwrap();
        let source = indexes
            .iter()
            .find(|i| i.name == "idx_ticket_source")
            .unwrap();
        assert_eq!(source.columns, ["external_source", "external_id"]);
        assert!(indexes.iter().any(|i| i.name == "idx_ticket_status"));
        let status_as_of: Option<String> = conn
            .query_row("SELECT status_as_of FROM ticket_details", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(status_as_of.as_deref(), Some("2024-01-15T10:00:00Z"));

        let tx = conn.transaction().unwrap();
        let (_, again) = migrate(&tx).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_step_that_does_not_run_names_itself() {
        let conn = Connection::open_in_memory().unwrap();
        // Step 2 alone indexes tables that do not exist yet.
        let error = catalog(&conn).expected(&STEPS[1..]).unwrap_err();
        assert!(
            matches!(&error, StoreError::Migration(m) if m.contains("0002_indexes.sql")),
            "{error}"
        );
    }
}
