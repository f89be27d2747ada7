//! The schema steps in `migrations/`, compiled in: the one schema both
//! backends run (see `migrations/README.md` and `migrate`).

use std::borrow::Cow;

use super::dialect::Dialect;

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
}
