//! A read connection beside the writer's, on the same SQLite file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{database_id, file};
use crate::error::StoreError;
use crate::store::Reads;
use crate::store::connection;

/// A read connection beside the writer's: WAL lets it read while the
/// writer commits, so reads never wait in the writer's queue.
pub struct SqliteReader {
    conn: Connection,
    path: PathBuf,
    /// The database file as opened (device, inode): the path must still
    /// name it at each read.
    file: (u64, u64),
}

impl SqliteReader {
    /// Opens the database for reading. It must exist and be the one Codex
    /// recorded; the writer creates and migrates it.
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        // Read-write without create: a read-only connection could not
        // take part in WAL when the -shm file is missing.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        SqliteReader::open_with(path, path.as_os_str().into(), flags)
    }

    /// Opens the database strictly read-only (`codex status`): nothing is
    /// written to the file or beside it. While another process has it open
    /// (its -shm file exists) the connection shares that process's WAL
    /// index; otherwise the file is read as immutable, since a read-only
    /// connection would leave a -wal and -shm behind, owned by whoever ran
    /// the command, which the service might not be able to open.
    pub fn open_read_only(path: &Path) -> Result<SqliteReader, StoreError> {
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if Path::new(&shm).exists() {
            return SqliteReader::open_with(path, path.as_os_str().into(), flags);
        }
        let uri = format!("file:{}?immutable=1", uri_path(path));
        SqliteReader::open_with(path, uri.into(), flags | OpenFlags::SQLITE_OPEN_URI)
    }

    fn open_with(
        path: &Path,
        name: std::ffi::OsString,
        flags: OpenFlags,
    ) -> Result<SqliteReader, StoreError> {
        let recorded = file::recorded_id(path)?;
        file::check_exists(path, recorded.as_deref())?;
        let conn = Connection::open_with_flags(Path::new(&name), flags)
            .and_then(|conn| {
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.execute_batch("PRAGMA query_only = 1")?;
                Ok(conn)
            })
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot open SQLite database {} for reading: {e}",
                    path.display()
                ))
            })?;
        let file = file_id(path)?;
        if let Some(recorded) = &recorded {
            file::check_id(path, recorded, database_id(&conn)?.as_deref())?;
        }
        Ok(SqliteReader {
            conn,
            path: path.to_path_buf(),
            file,
        })
    }
}

/// `path` for a `file:` URI: bytes other than unreserved ones and `/`
/// percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The device and inode of the file at `path`.
fn file_id(path: &Path) -> Result<(u64, u64), StoreError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", path.display())))
}

impl Reads for SqliteReader {
    /// The writer keeps the file it was writing when it is deleted or
    /// replaced (see `OpenFile`); the reader only lets go of it.
    fn verify(&mut self) -> Result<(), StoreError> {
        match file_id(&self.path) {
            Ok(file) if file == self.file => Ok(()),
            _ => Err(StoreError::WrongDatabase(format!(
                "the SQLite database {} was deleted or replaced; the read connection to it was closed",
                self.path.display()
            ))),
        }
    }

    fn connection(&self) -> &dyn connection::Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::uri_path;
    use std::path::Path;

    #[test]
    fn a_path_in_a_uri_escapes_what_a_uri_reads_otherwise() {
        assert_eq!(
            uri_path(Path::new("/var/lib/codex/codex.db")),
            "/var/lib/codex/codex.db"
        );
        assert_eq!(
            uri_path(Path::new("/tmp/a b?c#d%e")),
            "/tmp/a%20b%3Fc%23d%25e"
        );
    }
}
