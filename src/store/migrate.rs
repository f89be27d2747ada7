//! Brings a database to `schema.sql`, whatever it holds: nothing (a fresh
//! database), the predecessor's tables (a takeover), or an older Codex
//! schema. Both backends run the same plan through a `Catalog`, inside one
//! transaction their caller commits only after it has also prepared every
//! statement `serve` will run: a migration is all or nothing.

use super::schema::{self, ColumnDef, Dialect};
use crate::error::StoreError;

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
    /// The family of a column definition in `schema.sql`.
    pub fn of_definition(definition: &str) -> Family {
        Family::of_sqlite_type(definition.split_whitespace().next().unwrap_or(""))
    }

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

    /// The family of a PostgreSQL `information_schema.columns.data_type`.
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

/// A column as the database has it.
#[derive(Debug, Clone)]
pub struct Existing {
    pub name: String,
    /// The type as the database names it, for messages.
    pub declared: String,
    pub family: Family,
    /// The length limit of a `VARCHAR(n)` (PostgreSQL enforces it).
    pub max_length: Option<i64>,
}

/// What a backend offers the plan. Every call runs inside the migration's
/// transaction.
pub trait Catalog {
    fn dialect(&self) -> Dialect;
    fn execute(&mut self, sql: &str) -> Result<(), StoreError>;
    /// Runs a statement and returns how many rows it changed.
    fn update(&mut self, sql: &str) -> Result<u64, StoreError>;
    /// The first column of the first row of `sql`, as text.
    fn text(&mut self, sql: &str) -> Result<Option<String>, StoreError>;
    fn table_exists(&mut self, table: &str) -> Result<bool, StoreError>;
    fn columns(&mut self, table: &str) -> Result<Vec<Existing>, StoreError>;
    /// Whether some unique index covers exactly `columns`.
    fn has_unique_index(&mut self, table: &str, columns: &[&str]) -> Result<bool, StoreError>;
    /// Changes the type of `columns` of `table` to their definitions in
    /// `schema.sql` (text holding integers to an integer type).
    fn convert(
        &mut self,
        table: &str,
        columns: &[&ColumnDef],
        existing: &[Existing],
    ) -> Result<(), StoreError>;
    /// Lifts the length limit of `columns` (`VARCHAR(n)` to TEXT). Returns
    /// the columns whose limit stays, with why: something the database
    /// will not change the type under, such as a view. Codex cuts values
    /// for those to their limit (see `sql::fit`).
    fn widen(
        &mut self,
        table: &str,
        columns: &[&ColumnDef],
    ) -> Result<Vec<(String, String)>, StoreError>;
}

/// Columns of `ticket_details` Codex writes text into, whose inherited
/// `VARCHAR(n)` limits are lifted so no PSA value is refused (or cut).
/// `ticket_number` (the id as text) and `company_account_number` (copied
/// from `companies`) always fit theirs.
fn writes_text(column: &str) -> bool {
    !matches!(column, "ticket_number" | "company_account_number")
}

/// What the database held before the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Empty,
    /// A `ticket_details` table Codex never migrated: the predecessor's.
    Predecessor,
    Codex(i64),
}

/// The version recorded in `codex_meta`, if Codex ever migrated the database.
pub fn recorded_version(catalog: &mut dyn Catalog) -> Result<Option<i64>, StoreError> {
    if !catalog.table_exists("codex_meta")? {
        return Ok(None);
    }
    Ok(catalog
        .text(&format!(
            "SELECT value FROM codex_meta WHERE key = '{}'",
            schema::VERSION_KEY
        ))?
        .and_then(|v| v.trim().parse().ok()))
}

/// Runs the plan; returns what it did, one line per change (empty when the
/// database was already up to date). A statement the database refuses
/// (missing privileges, a lock timeout) fails the whole migration.
pub fn run(catalog: &mut dyn Catalog) -> Result<Vec<String>, StoreError> {
    plan(catalog).map_err(|error| match error {
        StoreError::Statement(message) => StoreError::Migration(format!(
            "{message}; fix that (the tables' owner can run codex migrate), then run codex migrate again"
        )),
        other => other,
    })
}

fn plan(catalog: &mut dyn Catalog) -> Result<Vec<String>, StoreError> {
    let dialect = catalog.dialect();
    let found = match recorded_version(catalog)? {
        Some(version) if version > schema::VERSION => {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: schema::VERSION,
            });
        }
        Some(version) => Found::Codex(version),
        None if catalog.table_exists("ticket_details")? => Found::Predecessor,
        None => Found::Empty,
    };
    let mut done = Vec::new();
    match found {
        Found::Empty => done.push(format!("creating schema version {}", schema::VERSION)),
        Found::Predecessor => done.push(
            "taking over the predecessor's ticket_details: adding Codex's columns and tables"
                .to_string(),
        ),
        Found::Codex(version) if version < schema::VERSION => done.push(format!(
            "upgrading schema version {version} to {}",
            schema::VERSION
        )),
        Found::Codex(_) => {}
    }
    let statements = schema::statements(dialect);
    let is_index = |s: &str| s.starts_with("CREATE INDEX") || s.starts_with("CREATE UNIQUE INDEX");
    for statement in statements.iter().filter(|s| !is_index(s)) {
        let table = table_of(statement);
        if table.is_some_and(|t| !catalog.table_exists(t).unwrap_or(true)) {
            done.push(format!("creating table {}", table.unwrap_or_default()));
        }
        catalog.execute(statement)?;
    }

    let targets = schema::columns(dialect);
    let mut tables: Vec<&str> = targets.iter().map(|c| c.table.as_str()).collect();
    tables.dedup();
    for table in tables {
        let existing = catalog.columns(table)?;
        let mut convert = Vec::new();
        let mut widen: Vec<(&ColumnDef, String)> = Vec::new();
        for target in targets.iter().filter(|c| c.table == table) {
            let wanted = Family::of_definition(&target.definition);
            let Some(have) = existing.iter().find(|e| e.name == target.name) else {
                catalog.execute(&format!(
                    "ALTER TABLE {table} ADD COLUMN {} {}",
                    target.name, target.definition
                ))?;
                done.push(format!("adding column {table}.{}", target.name));
                continue;
            };
            match (have.family, wanted) {
                (a, b) if a == b => {
                    if have.max_length.is_some()
                        && wanted == Family::Text
                        && writes_text(&target.name)
                    {
                        widen.push((target, have.declared.clone()));
                    }
                }
                (Family::Text, Family::Int) => {
                    if let Some(bad) = catalog.text(&non_integer(dialect, table, &target.name))? {
                        return Err(StoreError::Migration(format!(
                            "{table}.{} is {} and holds '{bad}', which is not an integer, where Codex \
                             needs {}; correct or clear such values, then run codex migrate again",
                            target.name, have.declared, target.definition
                        )));
                    }
                    convert.push(target);
                    done.push(format!(
                        "converting {table}.{} from {} to {}",
                        target.name, have.declared, target.definition
                    ));
                }
                _ => {
                    return Err(StoreError::Migration(format!(
                        "column {table}.{} is {} where Codex needs {}; it was made by neither Codex \
                         nor the predecessor: rename or drop it, then run codex migrate again",
                        target.name, have.declared, target.definition
                    )));
                }
            }
        }
        if !convert.is_empty() {
            catalog.convert(table, &convert, &existing)?;
        }
        if !widen.is_empty() {
            let columns: Vec<&ColumnDef> = widen.iter().map(|(c, _)| *c).collect();
            let kept = catalog.widen(table, &columns)?;
            for (column, declared) in &widen {
                match kept.iter().find(|(name, _)| *name == column.name) {
                    Some((_, why)) => done.push(format!(
                        "keeping {table}.{} {declared} ({why}): longer values will be stored cut to fit, with a warning",
                        column.name
                    )),
                    None => done.push(format!(
                        "widening {table}.{} from {declared} to TEXT",
                        column.name
                    )),
                }
            }
        }
    }

    let key = ["external_id", "external_source"];
    if !catalog.has_unique_index("ticket_details", &key)? {
        catalog.execute(
            "CREATE UNIQUE INDEX unique_ticket_external ON ticket_details (external_id, external_source)",
        )?;
        done.push("adding the unique key of ticket_details (external_id, external_source)".into());
    }
    for statement in statements.iter().filter(|s| is_index(s)) {
        if let Some(name) = single_column_index(catalog, statement)? {
            catalog.execute(&format!("DROP INDEX {name}"))?;
            done.push(format!(
                "rebuilding index {name} with external_id (an index whose one key holds every row slows every write)"
            ));
        }
        catalog.execute(statement)?;
    }

    if found != Found::Codex(schema::VERSION) {
        backfill(catalog, &mut done)?;
    }

    catalog.execute(&format!(
        "INSERT INTO codex_meta (key, value) VALUES ('{key}', '{version}') \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key = schema::VERSION_KEY,
        version = schema::VERSION
    ))?;
    Ok(done)
}

/// Fills in what rows written before this schema lack (once: each scans
/// the table).
fn backfill(catalog: &mut dyn Catalog, done: &mut Vec<String>) -> Result<(), StoreError> {
    // Rows Codex did not write are as of their last_updated_at: a delivery
    // older than that must not overwrite them (the upsert also treats a
    // NULL version of such a row so, for rows the predecessor writes later).
    let versions: Vec<String> = schema::columns(catalog.dialect())
        .into_iter()
        .filter(|c| c.table == "ticket_details" && c.name.ends_with("_as_of"))
        .map(|c| c.name)
        .collect();
    let set: Vec<String> = versions
        .iter()
        .map(|v| format!("{v} = COALESCE({v}, last_updated_at)"))
        .collect();
    let unversioned: Vec<String> = versions.iter().map(|v| format!("{v} IS NULL")).collect();
    let inherited = catalog.update(&format!(
        "UPDATE ticket_details SET {} WHERE last_source IS NULL AND last_updated_at IS NOT NULL \
         AND ({})",
        set.join(", "),
        unversioned.join(" OR ")
    ))?;
    if inherited > 0 {
        done.push(format!(
            "versioning {inherited} inherited tickets by their last_updated_at"
        ));
    }
    // Rows an older Codex wrote get what the predecessor's rows have.
    let numbered = catalog.update(
        "UPDATE ticket_details SET ticket_number = CAST(external_id AS TEXT) \
         WHERE ticket_number IS NULL AND last_source IS NOT NULL",
    )?;
    if numbered > 0 {
        done.push(format!("numbering {numbered} tickets Codex stored"));
    }
    if companies_usable(catalog)? {
        let filled = catalog.update(&format!(
            "UPDATE ticket_details SET company_account_number = {} \
             WHERE company_account_number IS NULL AND last_source IS NOT NULL AND department_id IS NOT NULL",
            super::sql::company_lookup("ticket_details.department_id", "ticket_details.external_source")
        ))?;
        if filled > 0 {
            done.push(format!(
                "filling company_account_number of {filled} tickets from companies"
            ));
        }
    }

    Ok(())
}

/// Whether the predecessor's `companies` table is there with the columns
/// Codex maps departments through.
pub fn companies_usable(catalog: &mut dyn Catalog) -> Result<bool, StoreError> {
    if !catalog.table_exists("companies")? {
        return Ok(false);
    }
    let columns = catalog.columns("companies")?;
    let has = |name: &str| columns.iter().any(|c| c.name == name);
    let usable = has("account_number") && has("external_id") && has("external_source");
    if !usable {
        log::warn!(
            "a companies table exists without account_number, external_id and external_source; \
             company_account_number will not be filled"
        );
    }
    Ok(usable)
}

/// The name of the index `statement` creates when the database has an
/// index of that name on one column only where `schema.sql` adds
/// `external_id` (the predecessor's `idx_ticket_source` and the like).
fn single_column_index(
    catalog: &mut dyn Catalog,
    statement: &str,
) -> Result<Option<String>, StoreError> {
    let Some(rest) = statement.strip_prefix("CREATE INDEX IF NOT EXISTS ") else {
        return Ok(None);
    };
    let name = rest.split_whitespace().next().unwrap_or_default();
    if !statement.contains(", external_id)") {
        return Ok(None);
    }
    let query = match catalog.dialect() {
        Dialect::Sqlite => {
            format!("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = '{name}'")
        }
        Dialect::Postgres => format!(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = '{name}'"
        ),
    };
    Ok(catalog
        .text(&query)?
        .filter(|definition| !definition.contains("external_id"))
        .map(|_| name.to_string()))
}

/// The table a `CREATE TABLE IF NOT EXISTS` statement creates.
fn table_of(statement: &str) -> Option<&str> {
    statement
        .strip_prefix("CREATE TABLE IF NOT EXISTS ")?
        .split_whitespace()
        .next()
}

/// A query for one value of `table.column` that is not an integer.
fn non_integer(dialect: Dialect, table: &str, column: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "SELECT CAST({column} AS TEXT) FROM {table} WHERE {column} IS NOT NULL \
             AND CAST(CAST({column} AS INTEGER) AS TEXT) <> CAST({column} AS TEXT) LIMIT 1"
        ),
        Dialect::Postgres => format!(
            "SELECT {column}::text FROM {table} WHERE {column} IS NOT NULL \
             AND {column}::text !~ '^\\s*[-+]?[0-9]{{1,18}}\\s*$' LIMIT 1"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_the_declared_types() {
        assert_eq!(Family::of_sqlite_type("VARCHAR(150)"), Family::Text);
        assert_eq!(Family::of_sqlite_type("BIGINT"), Family::Int);
        assert_eq!(Family::of_sqlite_type("FLOAT"), Family::Float);
        assert_eq!(Family::of_sqlite_type("BOOLEAN"), Family::Bool);
        assert_eq!(
            Family::of_definition("BIGINT NOT NULL DEFAULT 1"),
            Family::Int
        );
        assert_eq!(Family::of_postgres_type("character varying"), Family::Text);
        assert_eq!(Family::of_postgres_type("double precision"), Family::Float);
    }
}
