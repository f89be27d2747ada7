//! Brings a database to the schema steps in `migrations/`, whatever it
//! holds: nothing (a fresh database), the predecessor's tables (a takeover),
//! or an older Codex schema. Both backends run the same plan through a
//! `Catalog`, inside one transaction their caller commits only after it has
//! also prepared every statement `serve` will run: a migration is all or
//! nothing.
//!
//! What the tables must look like is not parsed from the steps' text: the
//! steps are run in a scratch place and the database's own catalog is read
//! back (`Catalog::expected`).

use super::connection::Param;
use super::schema::{self, Catalog, Column, Conversion, Family, STEPS, Step, Table};
use super::statements;
use crate::error::StoreError;

/// The error of a step that does not run on an empty database: a
/// mistake in `migrations/`, which no operator can fix.
pub fn broken_step(step: &Step, error: &StoreError) -> StoreError {
    StoreError::Migration(format!(
        "schema step {} does not run on an empty database ({error}); this is a defect of this Codex build",
        step.file
    ))
}

/// A statement `serve` runs that does not prepare on the migrated schema
/// fails the migration, before it commits.
pub fn unpreparable(error: StoreError) -> StoreError {
    match error {
        StoreError::Statement(message) => StoreError::Migration(format!(
            "a statement Codex runs does not prepare: {message}"
        )),
        other => other,
    }
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
    Ok(meta(catalog, schema::VERSION_KEY)?.and_then(|v| v.trim().parse().ok()))
}

/// The value of `key` in `codex_meta`, if the table and the key exist.
fn meta(catalog: &mut dyn Catalog, key: &str) -> Result<Option<String>, StoreError> {
    if !catalog.table_exists("codex_meta")? {
        return Ok(None);
    }
    let rows = catalog
        .connection()
        .query(statements::META_GET, &[Param::Text(Some(key))])?;
    Ok(match rows.first() {
        Some(row) => row.text(0)?,
        None => None,
    })
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
    let found = match recorded_version(catalog)? {
        Some(version) if version > schema::VERSION => {
            let written_by = meta(catalog, schema::WRITTEN_BY_KEY)?
                .map(|release| release.trim().to_string())
                .filter(|release| !release.is_empty())
                .map(|release| format!("{release} or later"));
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: schema::VERSION,
                needs: written_by.unwrap_or_else(|| "a newer release".to_string()),
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
    let expected = catalog.expected(&STEPS)?;
    drop_other_indexes(catalog, &expected, &mut done)?;
    // A table is settled once it exists after a step: made by it, or
    // brought to what the steps expect right after it (before a later step
    // indexes a column it lacked).
    let mut settled: Vec<&str> = Vec::new();
    for step in &STEPS {
        let mut missing = Vec::new();
        for table in &expected {
            if !catalog.table_exists(&table.name)? {
                missing.push(table.name.as_str());
            }
        }
        catalog.run_script(&step.sql(catalog.dialect()))?;
        for table in &expected {
            let name = table.name.as_str();
            if settled.contains(&name) || !catalog.table_exists(name)? {
                continue;
            }
            if missing.contains(&name) {
                done.push(format!("creating table {name}"));
            } else {
                reconcile(catalog, table, &mut done)?;
            }
            settled.push(name);
        }
    }

    let key = ["external_id", "external_source"];
    let unique = catalog.indexes("ticket_details")?.into_iter().any(|index| {
        let mut columns = index.columns.clone();
        columns.sort_unstable();
        index.unique && columns == key
    });
    if !unique {
        catalog.run_script(
            "CREATE UNIQUE INDEX unique_ticket_external ON ticket_details (external_id, external_source)",
        )?;
        done.push("adding the unique key of ticket_details (external_id, external_source)".into());
    }

    if found != Found::Codex(schema::VERSION) {
        let ticket_details = expected
            .iter()
            .find(|t| t.name == "ticket_details")
            .ok_or_else(|| {
                StoreError::Migration("the schema steps make no ticket_details".into())
            })?;
        backfill(catalog, ticket_details, &mut done)?;
    }

    let version = schema::VERSION.to_string();
    for (key, value) in [
        (schema::VERSION_KEY, version.as_str()),
        (schema::WRITTEN_BY_KEY, env!("CARGO_PKG_VERSION")),
    ] {
        catalog.connection().execute(
            statements::META_SET,
            &[Param::Text(Some(key)), Param::Text(Some(value))],
        )?;
    }
    Ok(done)
}

/// Brings an existing table to `expected`: adds the columns it lacks,
/// converts columns of an older type, and lifts length limits.
fn reconcile(
    catalog: &mut dyn Catalog,
    expected: &Table,
    done: &mut Vec<String>,
) -> Result<(), StoreError> {
    let table = expected.name.as_str();
    let existing = catalog.columns(table)?;
    let mut convert = Vec::new();
    let mut widen: Vec<(&Column, String)> = Vec::new();
    // The primary key is left alone: a table always has one already, and
    // ALTER TABLE cannot add one.
    for target in expected.columns.iter().filter(|c| !c.primary_key) {
        let Some(have) = existing.iter().find(|e| e.name == target.name) else {
            catalog.run_script(&format!(
                "ALTER TABLE {table} ADD COLUMN {} {}",
                target.name,
                target.definition()
            ))?;
            done.push(format!("adding column {table}.{}", target.name));
            continue;
        };
        match (have.ty.family, target.ty.family) {
            (a, b) if a == b => {
                if have.ty.max_length.is_some() && b == Family::Text && writes_text(&target.name) {
                    widen.push((target, have.ty.declared.clone()));
                }
            }
            (Family::Text, Family::Int) => {
                if let Some(bad) = catalog.non_integer(table, &target.name)? {
                    return Err(StoreError::Migration(format!(
                        "{table}.{} is {} and holds '{bad}', which is not an integer, where Codex \
                         needs {}; correct or clear such values, then run codex migrate again",
                        target.name,
                        have.ty.declared,
                        target.definition()
                    )));
                }
                convert.push(target);
                done.push(format!(
                    "converting {table}.{} from {} to {}",
                    target.name,
                    have.ty.declared,
                    target.definition()
                ));
            }
            _ => {
                return Err(StoreError::Migration(format!(
                    "column {table}.{} is {} where Codex needs {}; it was made by neither Codex \
                     nor the predecessor: rename or drop it, then run codex migrate again",
                    target.name,
                    have.ty.declared,
                    target.definition()
                )));
            }
        }
    }
    if !convert.is_empty() {
        catalog.convert(&Conversion {
            expected,
            columns: convert,
            existing: &existing,
        })?;
    }
    if !widen.is_empty() {
        let columns: Vec<&Column> = widen.iter().map(|(c, _)| *c).collect();
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
    Ok(())
}

/// Drops indexes that carry the name of one the steps create but are on
/// other columns (the predecessor's single-column `idx_ticket_source` and
/// the like), so that the steps make them again as Codex needs them.
fn drop_other_indexes(
    catalog: &mut dyn Catalog,
    expected: &[Table],
    done: &mut Vec<String>,
) -> Result<(), StoreError> {
    for table in expected {
        if !catalog.table_exists(&table.name)? {
            continue;
        }
        let existing = catalog.indexes(&table.name)?;
        for wanted in table.indexes.iter().filter(|i| i.created) {
            let Some(have) = existing.iter().find(|i| i.name == wanted.name) else {
                continue;
            };
            if have.created && have.columns != wanted.columns {
                catalog.run_script(&format!("DROP INDEX {}", have.name))?;
                done.push(format!(
                    "rebuilding index {} with {} (an index whose one key holds every row slows every write)",
                    have.name,
                    wanted.columns[have.columns.len().min(wanted.columns.len())..].join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Fills in what rows written before this schema lack (once: each scans
/// the table).
fn backfill(
    catalog: &mut dyn Catalog,
    ticket_details: &Table,
    done: &mut Vec<String>,
) -> Result<(), StoreError> {
    // Rows Codex did not write are as of their last_updated_at: a delivery
    // older than that must not overwrite them (the upsert also treats a
    // NULL version of such a row so, for rows the predecessor writes later).
    let versions: Vec<&str> = ticket_details
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| name.ends_with("_as_of"))
        .collect();
    let set: Vec<String> = versions
        .iter()
        .map(|v| format!("{v} = COALESCE({v}, last_updated_at)"))
        .collect();
    let unversioned: Vec<String> = versions.iter().map(|v| format!("{v} IS NULL")).collect();
    let inherited = catalog.connection().execute(
        &format!(
            "UPDATE ticket_details SET {} WHERE last_source IS NULL AND last_updated_at IS NOT NULL \
             AND ({})",
            set.join(", "),
            unversioned.join(" OR ")
        ),
        &[],
    )?;
    if inherited > 0 {
        done.push(format!(
            "versioning {inherited} inherited tickets by their last_updated_at"
        ));
    }
    // Rows an older Codex wrote get what the predecessor's rows have.
    let numbered = catalog.connection().execute(
        "UPDATE ticket_details SET ticket_number = CAST(external_id AS TEXT) \
         WHERE ticket_number IS NULL AND last_source IS NOT NULL",
        &[],
    )?;
    if numbered > 0 {
        done.push(format!("numbering {numbered} tickets Codex stored"));
    }
    if companies_usable(catalog)? {
        let filled = catalog.connection().execute(
            &format!(
                "UPDATE ticket_details SET company_account_number = {} \
                 WHERE company_account_number IS NULL AND last_source IS NOT NULL AND department_id IS NOT NULL",
                statements::company_lookup(
                    "ticket_details.department_id",
                    "ticket_details.external_source"
                )
            ),
            &[],
        )?;
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

/// What `Catalog::expected` reads in a dialect's scratch place: checked
/// here against what the steps say, for both backends' tests.
#[cfg(test)]
pub(crate) fn check_expected(tables: &[Table], dialect: super::dialect::Dialect) {
    let table = |name: &str| {
        tables
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} in {tables:?}"))
    };
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "codex_meta",
            "ticket_details",
            "ticket_tombstones",
            "webhook_events",
            "sync_runs",
            "sync_state"
        ],
        "in the order step 1 makes them"
    );
    let tickets = table("ticket_details");
    let column = |name: &str| tickets.columns.iter().find(|c| c.name == name).unwrap();
    assert!(column("id").primary_key);
    assert!(!column("external_id").primary_key);
    let revision = column("revision");
    assert_eq!(revision.ty.family, Family::Int);
    assert!(revision.not_null);
    assert_eq!(revision.default.as_deref(), Some("1"));
    assert_eq!(column("subject").ty.family, Family::Text);
    assert_eq!(column("is_escalated").ty.family, Family::Bool);
    assert_eq!(column("total_hours_spent").ty.family, Family::Float);
    assert_eq!(
        table("webhook_events")
            .columns
            .iter()
            .find(|c| c.name == "body")
            .unwrap()
            .ty
            .family,
        Family::Blob
    );
    let source = tickets
        .indexes
        .iter()
        .find(|i| i.name == "idx_ticket_source")
        .unwrap();
    assert_eq!(source.columns, ["external_source", "external_id"]);
    assert!(source.created && !source.unique);
    // The table's unique constraint is an index the constraint owns.
    assert!(
        tickets
            .indexes
            .iter()
            .any(|i| i.unique && !i.created && i.columns == ["external_id", "external_source"]),
        "{dialect:?}: {:?}",
        tickets.indexes
    );
}
