//! `codex backup PATH`: a consistent copy of an SQLite database while Codex
//! runs, through SQLite's online backup API, checked with
//! `PRAGMA integrity_check` before it is put at `PATH`. For PostgreSQL it
//! says which `pg_dump` command to run instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::config::{Config, DatabaseUrl};

/// How long the copy waits for a writer's lock before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a backup was not written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The configured database file is not there: nothing is created.
    #[error("there is no database at {0} (set [database] connection_string, or pass --config)")]
    NoDatabase(PathBuf),
    /// The target exists; a backup never overwrites a file.
    #[error("{0} already exists; choose a new path or move that file away first")]
    TargetExists(PathBuf),
    /// SQLite refused to read the database or write the copy.
    #[error("{0}")]
    Sqlite(String),
    /// The copy does not pass `integrity_check`; it was removed.
    #[error(
        "the copy failed integrity_check ({0}) and was removed; the database itself may be damaged: run `sqlite3 <database> 'PRAGMA integrity_check'`"
    )]
    Corrupt(String),
    /// Setting the copy's permissions or moving it into place failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// What a backup did, for the command to print.
pub struct Report {
    pub lines: Vec<String>,
}

/// Writes a consistent copy of the configured database to `target`.
pub fn backup(config: &Config, target: &Path) -> Result<Report, BackupError> {
    match &config.database.url {
        DatabaseUrl::Sqlite(source) => sqlite(source, target),
        DatabaseUrl::Postgres(url) => Ok(Report {
            lines: vec![
                "the database is PostgreSQL: take a consistent copy with pg_dump (it reads one snapshot while Codex keeps writing):".to_string(),
                format!(
                    "  pg_dump --format=custom --file={} '{}'",
                    shell_word(&target.display().to_string()),
                    url.masked().replace(":***@", "@"),
                ),
                "with the password in PGPASSWORD or ~/.pgpass; restore with pg_restore --clean --dbname=<url> <file>".to_string(),
            ],
        }),
    }
}

fn sqlite(source: &Path, target: &Path) -> Result<Report, BackupError> {
    if !source.is_file() {
        return Err(BackupError::NoDatabase(absolute(source)));
    }
    if target.exists() {
        return Err(BackupError::TargetExists(target.to_path_buf()));
    }
    let sqlite_error = |error: rusqlite::Error| BackupError::Sqlite(error.to_string());
    // Read-only: a backup never changes the database, nor creates one.
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error)?;
    from.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    // The copy is made beside the target and renamed into place once it
    // passed the check, so `target` is whole or absent.
    let partial = partial_path(target);
    let _ = std::fs::remove_file(&partial);
    let result = copy(&from, &partial).and_then(|tickets| {
        restrict(&partial)?;
        std::fs::rename(&partial, target)
            .map_err(|error| BackupError::Io(target.to_path_buf(), error))?;
        Ok(tickets)
    });
    let tickets = match result {
        Ok(tickets) => tickets,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    Ok(Report {
        lines: vec![
            format!(
                "backup of {} written to {} ({tickets} tickets); integrity_check: ok",
                absolute(source).display(),
                absolute(target).display()
            ),
            "to restore: stop Codex, copy the backup over the database file (remove its -wal and -shm files), start Codex".to_string(),
        ],
    })
}

/// Copies `from` to a new file at `to` in one step of the online backup
/// API (one read transaction, so the copy is one moment of the database
/// even while Codex commits), then checks the copy. Returns its ticket count.
fn copy(from: &Connection, to: &Path) -> Result<i64, BackupError> {
    let sqlite_error = |error: rusqlite::Error| BackupError::Sqlite(error.to_string());
    let mut copy = Connection::open(to).map_err(sqlite_error)?;
    {
        let backup = Backup::new(from, &mut copy).map_err(sqlite_error)?;
        loop {
            // -1: every page in one step. Several smaller steps would start
            // over whenever Codex commits in between.
            match backup.step(-1).map_err(sqlite_error)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {}
            }
        }
    }
    let verdict: String = copy
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(sqlite_error)?;
    if verdict != "ok" {
        return Err(BackupError::Corrupt(verdict));
    }
    let tickets = copy
        .query_row("SELECT count(*) FROM ticket_details", [], |row| row.get(0))
        .unwrap_or(0);
    copy.close().map_err(|(_, error)| sqlite_error(error))?;
    Ok(tickets)
}

/// Only the owner may read the copy: it holds every ticket.
fn restrict(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| BackupError::Io(path.to_path_buf(), error))
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `text` quoted for a POSIX shell when it needs it.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_database_is_named_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("codex.db");
        let target = dir.path().join("copy.db");
        let error = sqlite(&source, &target).err().unwrap();
        assert!(matches!(error, BackupError::NoDatabase(_)), "{error}");
        assert!(!source.exists() && !target.exists());
    }

    #[test]
    fn an_existing_target_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("codex.db");
        Connection::open(&source)
            .unwrap()
            .execute_batch("CREATE TABLE ticket_details (id INTEGER PRIMARY KEY)")
            .unwrap();
        let target = dir.path().join("copy.db");
        std::fs::write(&target, b"keep me").unwrap();
        let error = sqlite(&source, &target).err().unwrap();
        assert!(matches!(error, BackupError::TargetExists(_)), "{error}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn words_with_spaces_are_quoted_for_the_shell() {
        assert_eq!(
            shell_word("/var/backups/codex.dump"),
            "/var/backups/codex.dump"
        );
        assert_eq!(shell_word("my dump's"), "'my dump'\\''s'");
    }
}
