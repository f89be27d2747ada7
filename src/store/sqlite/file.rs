//! Which SQLite file is Codex's database.
//!
//! Two guards keep Codex from acknowledging into a file that is gone:
//! - `OpenFile` holds the database file open and, around each commit,
//!   compares it with what the path names now. A file deleted (its link
//!   count drops to 0) or replaced (the path names another inode) under a
//!   running Codex is noticed before the next acknowledgement.
//! - The identity file beside the database (`<database>.identity`)
//!   records the random id Codex gave the database it created. When the
//!   database is missing, or the file at the path carries another id,
//!   Codex refuses it instead of silently beginning an empty database.
//!   `codex migrate --adopt` is the operator's way to start fresh (or take
//!   the file now at the path) on purpose.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::StoreError;

/// The database file as opened, to compare with the path later.
pub struct OpenFile {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
}

impl OpenFile {
    pub fn open(path: &Path) -> Result<OpenFile, StoreError> {
        let file = File::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let metadata = file
            .metadata()
            .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", path.display())))?;
        Ok(OpenFile {
            path: path.to_path_buf(),
            file,
            dev: metadata.dev(),
            ino: metadata.ino(),
        })
    }

    /// Fails when the open file is no longer the one at the path. The
    /// file left behind stays open until Codex exits, so what was
    /// committed to it can be copied back from /proc.
    pub fn check(&self) -> Result<(), StoreError> {
        let what = match std::fs::metadata(&self.path) {
            Ok(now) if now.dev() == self.dev && now.ino() == self.ino => {
                match self.file.metadata() {
                    Ok(open) if open.nlink() == 0 => "deleted",
                    _ => return Ok(()),
                }
            }
            Ok(_) => "replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "deleted",
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot stat {}: {e}",
                    self.path.display()
                )));
            }
        };
        let kept = self.keep();
        Err(StoreError::WrongDatabase(format!(
            "the SQLite database {path} was {what} while Codex had it open; writes are refused.              {kept}Put Codex's database back at {path} (or run `codex migrate --adopt` and restart              to start fresh) and Codex resumes",
            path = self.path.display(),
        )))
    }

    /// Keeps the file open for the rest of the process; says where it is.
    fn keep(&self) -> String {
        static KEPT: Mutex<Vec<File>> = Mutex::new(Vec::new());
        let Ok(file) = self.file.try_clone() else {
            return String::new();
        };
        let fd = file.as_raw_fd();
        KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(file);
        format!(
            "Until Codex exits, the file it was writing can be copied from /proc/{}/fd/{fd}. ",
            std::process::id()
        )
    }
}

/// `<database>.identity`, beside the database file.
pub fn identity_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".identity");
    PathBuf::from(name)
}

/// The database id the identity file records, if there is one.
pub fn recorded_id(path: &Path) -> Result<Option<String>, StoreError> {
    let marker = identity_path(path);
    match std::fs::read_to_string(&marker) {
        Ok(text) => Ok(text
            .lines()
            .find_map(|line| line.strip_prefix("database_id = "))
            .map(|id| id.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot read {}: {e}",
            marker.display()
        ))),
    }
}

/// Refuses a database file that is missing where Codex created one.
pub fn check_exists(path: &Path, recorded: Option<&str>) -> Result<(), StoreError> {
    match (recorded, path.try_exists()) {
        (Some(id), Ok(false)) => Err(StoreError::WrongDatabase(format!(
            "the SQLite database {} is missing, but {} records that Codex created a database there \
             (id {id}); Codex will not start an empty one in its place. Restore the file, or run \
             `codex migrate --adopt` to start with an empty database on purpose",
            path.display(),
            identity_path(path).display()
        ))),
        _ => Ok(()),
    }
}

/// Refuses a database whose id is not the recorded one.
pub fn check_id(path: &Path, recorded: &str, found: Option<&str>) -> Result<(), StoreError> {
    if found == Some(recorded) {
        return Ok(());
    }
    Err(StoreError::WrongDatabase(format!(
        "{} is not the database Codex created there: {} records id {recorded}, the file has {}. \
         Restore Codex's database, or run `codex migrate --adopt` to use this file on purpose",
        path.display(),
        identity_path(path).display(),
        found.map_or_else(|| "none".to_string(), |id| format!("id {id}"))
    )))
}

/// A new random database id.
pub fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("no randomness for a database id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the identity file (atomically: a temporary file renamed over it).
pub fn record_id(path: &Path, id: &str) -> Result<(), StoreError> {
    let marker = identity_path(path);
    let failed = |e: std::io::Error| {
        StoreError::Unavailable(format!("cannot write {}: {e}", marker.display()))
    };
    let mut temporary = marker.as_os_str().to_os_string();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let text = format!(
        "# Written by Codex: the identity of the SQLite database at\n\
         # {}.\n\
         # If that file goes missing or is replaced by another database, Codex\n\
         # refuses to use it rather than start an empty one. To start fresh on\n\
         # purpose, run `codex migrate --adopt` (see docs/database-failures.md).\n\
         database_id = {id}\n",
        path.display()
    );
    let mut file = File::create(&temporary).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, &marker).map_err(failed)?;
    if let Some(dir) = marker.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
    }
    Ok(())
}

/// Forgets the recorded identity (`codex migrate --adopt`).
pub fn forget_id(path: &Path) -> Result<(), StoreError> {
    let marker = identity_path(path);
    match std::fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot remove {}: {e}",
            marker.display()
        ))),
    }
}
