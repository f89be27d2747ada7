//! What a command checks before it changes anything, so that a mistake in
//! `codex.conf` or on the machine is told as its fix, before it costs a
//! delivery: where the SQLite database is and what chose it, whether it
//! may be created there, whether Codex may write it, and whether the
//! address in `[server] bind` can be listened on.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, DatabaseUrl, ENV_DATABASE_URL};

/// Why a command will not go on: each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// `status`, `sync --once`, `replay`: the SQLite file does not exist;
    /// they read an existing database and never create one.
    #[error(
        "the database {} does not exist ({chosen_by}); nothing was created. Run Codex from the \
         directory it was set up in, point [database] connection_string at the database, or run \
         `codex migrate` to create it",
        path.display()
    )]
    NoDatabase { path: PathBuf, chosen_by: String },
    /// `serve`, `check-config`: the directory the SQLite file would be
    /// created in does not exist (Codex creates a file, never directories).
    #[error(
        "the directory {} for the database {} does not exist ({chosen_by}); create it, or set \
         [database] connection_string to a path in an existing directory",
        path.parent().unwrap_or(Path::new("/")).display(),
        path.display()
    )]
    NoDirectory { path: PathBuf, chosen_by: String },
    /// The user Codex runs as may not read and write the database file or
    /// create files in its directory (SQLite writes `-wal` and `-shm`
    /// files beside it).
    #[error(
        "permission denied on {}: Codex runs as {user}; give that user read and write access to \
         {} and its directory {}, or run Codex as the user that owns them",
        denied.display(),
        path.display(),
        path.parent().unwrap_or(Path::new("/")).display()
    )]
    PermissionDenied {
        path: PathBuf,
        denied: PathBuf,
        user: String,
    },
    /// `serve`, `check-config`: the address in `[server] bind` cannot be
    /// listened on (in use, not this machine's, a privileged port).
    #[error("cannot listen on {addr}: {error}; {hint}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
        hint: String,
    },
}

/// An SQLite database as a command will use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFile {
    /// The path made absolute (a relative path is relative to the directory
    /// Codex was started in).
    pub path: PathBuf,
    /// What chose it: the variable, the configuration file, or the default.
    pub chosen_by: String,
}

/// The SQLite database `config` names, or `None` for PostgreSQL.
pub fn sqlite_file(config: &Config) -> Option<SqliteFile> {
    let DatabaseUrl::Sqlite(path) = &config.database.url else {
        return None;
    };
    let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
    Some(SqliteFile {
        path,
        chosen_by: chosen_by(config),
    })
}

/// What chose the database: `CODEX_DATABASE_URL`, the configuration
/// file's `[database] connection_string`, or the default.
fn chosen_by(config: &Config) -> String {
    if std::env::var(ENV_DATABASE_URL).is_ok_and(|v| !v.trim().is_empty()) {
        return format!("set by {ENV_DATABASE_URL}");
    }
    match &config.source {
        Some(file) => {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            match crate::config::file_sets(&file, "database", "connection_string") {
                true => format!("set by [database] connection_string in {}", file.display()),
                false => format!(
                    "the default, as {} sets no [database] connection_string",
                    file.display()
                ),
            }
        }
        None => "the built-in default, as no configuration file was found".to_string(),
    }
}

/// `sync --once`, `replay`: the database must already exist, and Codex
/// may write it.
pub fn existing_database(config: &Config) -> Result<(), PreflightError> {
    let Some(file) = sqlite_file(config) else {
        return Ok(());
    };
    if !file.path.exists() {
        return Err(PreflightError::NoDatabase {
            path: file.path,
            chosen_by: file.chosen_by,
        });
    }
    writable(&file)
}

/// `status`: the database must already exist; it is only read, so
/// nothing more is asked of the file or its directory.
pub fn database_to_read(config: &Config) -> Result<(), PreflightError> {
    match sqlite_file(config) {
        Some(file) if !file.path.exists() => Err(PreflightError::NoDatabase {
            path: file.path,
            chosen_by: file.chosen_by,
        }),
        _ => Ok(()),
    }
}

/// `serve`, `check-config`: the database exists, or its directory does
/// (`serve` then creates the file); either way Codex may write there.
pub fn serve_database(config: &Config) -> Result<(), PreflightError> {
    let Some(file) = sqlite_file(config) else {
        return Ok(());
    };
    let directory = file.path.parent().unwrap_or(Path::new("/"));
    if !file.path.exists() && !directory.is_dir() {
        return Err(PreflightError::NoDirectory {
            path: file.path,
            chosen_by: file.chosen_by,
        });
    }
    writable(&file)
}

/// Fails when the user Codex runs as cannot write the file (opened to
/// find out, never created) or create files in its directory.
fn writable(file: &SqliteFile) -> Result<(), PreflightError> {
    let denied = |denied: &Path| PreflightError::PermissionDenied {
        path: file.path.clone(),
        denied: denied.to_path_buf(),
        user: running_as(),
    };
    if file.path.exists() {
        let opened = OpenOptions::new().read(true).write(true).open(&file.path);
        if opened.is_err_and(|e| e.kind() == ErrorKind::PermissionDenied) {
            return Err(denied(&file.path));
        }
    }
    let directory = file.path.parent().unwrap_or(Path::new("/"));
    match may_write(directory) {
        Some(false) => Err(denied(directory)),
        _ => Ok(()),
    }
}

/// Who this process is, as the kernel sees it: the effective user, group
/// and supplementary groups (from `/proc/self/status`).
struct Identity {
    uid: u32,
    groups: Vec<u32>,
}

fn identity() -> Option<Identity> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Uid and Gid list real, effective, saved and filesystem ids.
    let uid = *field("Uid:").get(1)?;
    let mut groups = field("Groups:");
    groups.extend(field("Gid:").get(1));
    Some(Identity { uid, groups })
}

/// Whether this process may create files in `directory`, from its mode
/// bits; `None` when that cannot be told.
fn may_write(directory: &Path) -> Option<bool> {
    let metadata = std::fs::metadata(directory).ok()?;
    let me = identity()?;
    let mode = metadata.mode();
    Some(match () {
        _ if me.uid == 0 => true,
        _ if metadata.uid() == me.uid => mode & 0o200 != 0,
        _ if me.groups.contains(&metadata.gid()) => mode & 0o020 != 0,
        _ => mode & 0o002 != 0,
    })
}

/// The user Codex runs as, by name when `/etc/passwd` has it:
/// `codex (uid 998)`.
pub fn running_as() -> String {
    let Some(me) = identity() else {
        return "an unknown user".to_string();
    };
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let uid = fields.nth(1)?.parse::<u32>().ok()?;
                (uid == me.uid).then(|| name.to_string())
            })
        });
    match name {
        Some(name) => format!("user {name} (uid {})", me.uid),
        None => format!("uid {}", me.uid),
    }
}

/// Listens on `addr` as `serve` does, with the fix in the error.
pub fn listen(addr: SocketAddr) -> Result<std::net::TcpListener, PreflightError> {
    crate::http::bind(addr).map_err(|error| {
        let hint = listen_hint(addr, &error);
        PreflightError::Listen { addr, error, hint }
    })
}

/// `check-config`: listens on `addr` and lets go at once, changing nothing.
pub fn try_listen(addr: SocketAddr) -> Result<(), PreflightError> {
    listen(addr).map(drop)
}

/// What to do when `addr` cannot be listened on.
fn listen_hint(addr: SocketAddr, error: &std::io::Error) -> String {
    match error.kind() {
        ErrorKind::AddrInUse => {
            let holder =
                listening_process(addr.port()).unwrap_or_else(|| "another process".to_string());
            format!(
                "{holder} is listening on port {}; stop it, or set [server] bind to a free \
                 address such as {}:{}",
                addr.port(),
                addr.ip(),
                addr.port().wrapping_add(1).max(1024)
            )
        }
        ErrorKind::PermissionDenied => format!(
            "ports below 1024 need privileges Codex should not have; set [server] bind to a port \
             above 1023, such as {}:5010, and let the proxy forward to it",
            addr.ip()
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine; set [server] bind to one of its addresses, \
             such as 127.0.0.1:{}",
            addr.ip(),
            addr.port()
        ),
        _ => "set [server] bind to an address Codex can listen on".to_string(),
    }
}

/// The process listening on TCP `port`, as `name (pid N)`, when the
/// kernel tells: the socket's inode from `/proc/net/tcp{,6}`, then the
/// process holding it among those whose descriptors this user may read.
fn listening_process(port: u16) -> Option<String> {
    const LISTEN: &str = "0A";
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit_once(':')?.1;
                    let listening = *fields.get(3)? == LISTEN;
                    let same = u16::from_str_radix(local_port, 16).ok()? == port;
                    (listening && same).then(|| fields.get(9).map(|s| s.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("{} (pid {pid})", name.trim()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_names_the_process_and_the_key() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let error = try_listen(addr).unwrap_err().to_string();
        assert!(error.contains("[server] bind"), "{error}");
        assert!(
            error.contains(&format!("(pid {})", std::process::id())),
            "{error}"
        );
    }

    #[test]
    fn a_free_port_is_let_go() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(try_listen(addr).is_ok());
    }

    #[test]
    fn the_user_is_named() {
        let user = running_as();
        assert!(user.contains("uid "), "{user}");
    }

    #[test]
    fn permission_denied_names_the_path_and_the_user() {
        let error = PreflightError::PermissionDenied {
            path: PathBuf::from("/srv/codex/codex.db"),
            denied: PathBuf::from("/srv/codex/codex.db"),
            user: "user codex (uid 998)".to_string(),
        }
        .to_string();
        assert!(
            error.starts_with(
                "permission denied on /srv/codex/codex.db: Codex runs as user codex (uid 998)"
            ),
            "{error}"
        );
    }
}
