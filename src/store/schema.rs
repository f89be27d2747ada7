//! The schema: the steps in `migrations/`, compiled in (the one schema
//! both backends run, see `migrations/README.md`), and what a database's
//! catalog says it holds (tables, columns, indexes), read through each
//! backend's `Catalog`. `migrate` brings the one to the other.

use std::borrow::Cow;

use super::connection::Connection;
use super::dialect::Dialect;
use crate::error::StoreError;

/// The schema version this binary writes and understands, recorded in
/// `codex_meta`: raised when rows written before a change need filling in.
pub const VERSION: i64 = 2;

/// Key in `codex_meta` holding the version.
pub const VERSION_KEY: &str = "schema_version";

/// Key in `codex_meta` holding the Codex release that last migrated the
/// database, so that an older binary can say which release it needs.
pub const WRITTEN_BY_KEY: &str = "schema_written_by";

/// One file of `migrations/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Its number: steps run in this order.
    pub number: u32,
    /// The file's name.
    pub file: &'static str,
    sql: &'static str,
}

impl Step {
    /// The step's statements in `dialect`, for the database to split and run.
    pub fn sql(&self, dialect: Dialect) -> Cow<'static, str> {
        dialect.render(self.sql)
    }
}

/// Every step, in order.
pub const STEPS: [Step; 2] = [
    Step {
        number: 1,
        file: "0001_tables.sql",
        sql: include_str!("../../migrations/0001_tables.sql"),
    },
    Step {
        number: 2,
        file: "0002_indexes.sql",
        sql: include_str!("../../migrations/0002_indexes.sql"),
    },
];

/// The type family of a column: what matters to the statements Codex runs.
/// The width of an integer or the length of a string does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Text,
    Int,
    Float,
    Bool,
    Blob,
}

impl Family {
    /// SQLite's affinity rules (section 3.1 of its datatype page), with
    /// BOOLEAN and BLOB told apart.
    pub fn of_sqlite_type(declared: &str) -> Family {
        let upper = declared.to_ascii_uppercase();
        if upper.contains("INT") {
            Family::Int
        } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
            Family::Text
        } else if upper.contains("BOOL") {
            Family::Bool
        } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
            Family::Float
        } else {
            Family::Blob
        }
    }

    /// The family of a PostgreSQL type as `format_type(oid, NULL)` names it.
    pub fn of_postgres_type(data_type: &str) -> Family {
        match data_type {
            "smallint" | "integer" | "bigint" => Family::Int,
            "text" | "character varying" | "character" => Family::Text,
            "boolean" => Family::Bool,
            "real" | "double precision" | "numeric" => Family::Float,
            _ => Family::Blob,
        }
    }
}

/// A column's type as a database's catalog names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// As the database names it (`BIGINT`, `character varying(150)`).
    pub declared: String,
    pub family: Family,
    /// The length limit of a `VARCHAR(n)` (PostgreSQL enforces it).
    pub max_length: Option<i64>,
}

/// A column as a database's catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub not_null: bool,
    /// The default, as the SQL expression the catalog holds.
    pub default: Option<String>,
    pub primary_key: bool,
}

impl Column {
    /// The column's definition after its name, as `ALTER TABLE … ADD
    /// COLUMN` takes it.
    pub fn definition(&self) -> String {
        let mut definition = self.ty.declared.clone();
        if self.not_null {
            definition.push_str(" NOT NULL");
        }
        if let Some(default) = &self.default {
            definition.push_str(" DEFAULT ");
            definition.push_str(default);
        }
        definition
    }
}

/// A plain index (on columns, not expressions, and not partial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    /// Its columns, in key order.
    pub columns: Vec<String>,
    pub unique: bool,
    /// Made by `CREATE INDEX` rather than for a constraint (which owns it).
    pub created: bool,
}

/// A table as the schema steps make it.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
}

/// Columns of a table whose type changes to the expected one.
pub struct Conversion<'a> {
    /// The table as the steps make it.
    pub expected: &'a Table,
    /// The columns to convert, as `expected` has them.
    pub columns: Vec<&'a Column>,
    /// Every column of the table as it is now.
    pub existing: &'a [Column],
}

/// What a backend offers the plan: its connection (for statements in
/// SQLite's spelling), and its catalog. Every call runs inside the
/// migration's transaction.
pub trait Catalog {
    fn connection(&self) -> &dyn Connection;
    fn dialect(&self) -> Dialect {
        self.connection().dialect()
    }
    /// Runs a whole script; the database splits it into statements.
    fn run_script(&mut self, sql: &str) -> Result<(), StoreError>;
    fn table_exists(&mut self, table: &str) -> Result<bool, StoreError>;
    /// The tables of the schema the connection works in, oldest first.
    fn tables(&mut self) -> Result<Vec<String>, StoreError>;
    fn columns(&mut self, table: &str) -> Result<Vec<Column>, StoreError>;
    fn indexes(&mut self, table: &str) -> Result<Vec<Index>, StoreError>;
    /// The tables `steps` make in an empty database: run in a scratch place
    /// that is gone afterwards, and read back with `read_tables`.
    fn expected(&mut self, steps: &[Step]) -> Result<Vec<Table>, StoreError>;
    /// One value of `table.column` that is not an integer, as text.
    fn non_integer(&mut self, table: &str, column: &str) -> Result<Option<String>, StoreError>;
    /// Changes the types of columns to those the steps give them (text
    /// holding integers to an integer type).
    fn convert(&mut self, conversion: &Conversion<'_>) -> Result<(), StoreError>;
    /// Lifts the length limit of `columns` (`VARCHAR(n)` to TEXT). Returns
    /// the columns whose limit stays, with why: something the database
    /// will not change the type under, such as a view. Codex cuts values
    /// for those to their limit (see `statements::fit`).
    fn widen(
        &mut self,
        table: &str,
        columns: &[&Column],
    ) -> Result<Vec<(String, String)>, StoreError>;
}

/// Every table of the catalog's schema, with its columns and indexes.
pub fn read_tables(catalog: &mut dyn Catalog) -> Result<Vec<Table>, StoreError> {
    let mut tables = Vec::new();
    for name in catalog.tables()? {
        tables.push(Table {
            columns: catalog.columns(&name)?,
            indexes: catalog.indexes(&name)?,
            name,
        });
    }
    Ok(tables)
}

/// Groups `(index, column)` rows, in key order, into indexes; an index
/// with a column that is an expression (`None`) is left out.
pub fn group_index_columns(rows: Vec<(Index, Option<String>)>) -> Vec<Index> {
    let mut indexes: Vec<Index> = Vec::new();
    let mut expressions: Vec<String> = Vec::new();
    for (index, column) in rows {
        let Some(column) = column else {
            expressions.push(index.name);
            continue;
        };
        match indexes.last_mut() {
            Some(last) if last.name == index.name => last.columns.push(column),
            _ => indexes.push(Index {
                columns: vec![column],
                ..index
            }),
        }
    }
    indexes.retain(|index| !expressions.contains(&index.name));
    indexes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_the_folder_in_order() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = STEPS.iter().map(|s| s.file).collect();
        assert_eq!(
            files, listed,
            "every file of migrations/ is a step, in order"
        );
        for (at, step) in STEPS.iter().enumerate() {
            assert_eq!(
                step.number as usize,
                at + 1,
                "{} is numbered in sequence",
                step.file
            );
            assert!(
                step.file.starts_with(&format!("{:04}_", step.number)),
                "{} starts with its number",
                step.file
            );
            let on_disk = std::fs::read_to_string(folder.join(step.file)).unwrap();
            assert_eq!(on_disk, step.sql, "{} is compiled in as it is", step.file);
        }
    }

    #[test]
    fn each_dialect_gets_its_words() {
        for step in STEPS {
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                let sql = step.sql(dialect);
                assert!(!sql.contains("@ID@") && !sql.contains("@BLOB@"), "{sql}");
            }
        }
        assert!(STEPS[0].sql(Dialect::Postgres).contains("BYTEA"));
        assert!(STEPS[0].sql(Dialect::Sqlite).contains("body BLOB NOT NULL"));
    }

    #[test]
    fn the_tables_come_before_their_indexes() {
        let tables = STEPS[0].sql(Dialect::Sqlite);
        let indexes = STEPS[1].sql(Dialect::Sqlite);
        assert!(tables.contains("CREATE TABLE IF NOT EXISTS ticket_details"));
        assert!(indexes.contains("ON ticket_details"));
        // A fresh database takes the steps in order, and only in order.
        let db = rusqlite::Connection::open_in_memory().unwrap();
        assert!(db.execute_batch(&indexes).is_err());
        for step in STEPS {
            db.execute_batch(&step.sql(Dialect::Sqlite)).unwrap();
        }
        // And again: every statement is idempotent.
        for step in STEPS {
            db.execute_batch(&step.sql(Dialect::Sqlite)).unwrap();
        }
    }

    #[test]
    fn families_follow_the_declared_types() {
        assert_eq!(Family::of_sqlite_type("VARCHAR(150)"), Family::Text);
        assert_eq!(Family::of_sqlite_type("BIGINT"), Family::Int);
        assert_eq!(Family::of_sqlite_type("FLOAT"), Family::Float);
        assert_eq!(Family::of_sqlite_type("BOOLEAN"), Family::Bool);
        assert_eq!(Family::of_postgres_type("character varying"), Family::Text);
        assert_eq!(Family::of_postgres_type("double precision"), Family::Float);
    }

    #[test]
    fn a_definition_says_type_null_and_default() {
        let column = Column {
            name: "revision".into(),
            ty: ColumnType {
                declared: "BIGINT".into(),
                family: Family::Int,
                max_length: None,
            },
            not_null: true,
            default: Some("1".into()),
            primary_key: false,
        };
        assert_eq!(column.definition(), "BIGINT NOT NULL DEFAULT 1");
        let plain = Column {
            not_null: false,
            default: None,
            ..column
        };
        assert_eq!(plain.definition(), "BIGINT");
    }
}
