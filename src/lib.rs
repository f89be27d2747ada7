//! Codex keeps a local copy of PSA tickets current, from webhooks and from
//! polling.
//!
//! A delivery flows: `http` (verify, normalize with `psa`) -> a bounded
//! channel -> the `store` writer thread (group commit) -> the answer. The
//! `sync` poller sends its changes through the same writer.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod http;
pub mod psa;
pub mod reload;
pub mod store;
pub mod sync;
pub mod timestamp;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crossbeam_channel::{Receiver, unbounded};

use crate::config::Config;
use crate::error::StoreError;
use crate::http::{AppState, HttpServer};
use crate::store::WriterHandle;
use crate::sync::{Poller, SyncStatus};

/// The running service: HTTP workers, the writer, the poller.
pub struct Service {
    http: HttpServer,
    writer: WriterHandle,
    poller: Option<Poller>,
    fatal: Receiver<String>,
}

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The database cannot be opened, reached or migrated.
    Store(StoreError),
    /// A thread could not be started.
    Io(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(error) => write!(f, "{error}"),
            StartError::Io(error) => write!(f, "cannot start: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Starts the service on `listener` (bound by the caller, so tests can use
/// port 0): opens and migrates the database, starts the writer, the HTTP
/// workers and, when configured, the poller. A database that cannot be
/// reached does not stop the start: Codex answers 503 meanwhile and the
/// writer connects when it can. One that waiting will not fix (a newer
/// schema, a SQLite file that is not the one Codex created) does.
pub fn run(config: Config, listener: TcpListener) -> Result<Service, StartError> {
    let config = Arc::new(config);
    let backend = store::connect_at_start(&config.database.url).map_err(StartError::Store)?;
    let writer = store::spawn_writer(
        backend,
        config.database.url.clone(),
        config.webhooks.journal_retention_days,
    )
    .map_err(StartError::Io)?;
    let sync_status = Arc::new(SyncStatus::new(&config));
    let (fatal_tx, fatal) = unbounded();
    let poller = if !psa::Provider::polled(&config).is_empty() {
        Some(
            sync::spawn_poller(config.clone(), writer.client.clone(), sync_status.clone())
                .map_err(StartError::Io)?,
        )
    } else {
        None
    };
    let state = Arc::new(AppState::new(
        config.clone(),
        writer.client.clone(),
        sync_status,
    ));
    let http = HttpServer::start(listener, state, config.server.threads, fatal_tx)
        .map_err(StartError::Io)?;
    Ok(Service {
        http,
        writer,
        poller,
        fatal,
    })
}

impl Service {
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Puts a reloaded configuration in force without dropping a
    /// connection: requests read from now on use it; the poller restarts
    /// when polling settings changed. Returns what changed.
    pub fn reload(&mut self, config: Config) -> Result<reload::Plan, StartError> {
        let state = self.http.state();
        let current = state.current();
        let mut plan = reload::plan(&current.config, config);
        let config = Arc::new(std::mem::take(&mut plan.config));
        let sync = if plan.polling_changed {
            if let Some(poller) = self.poller.take() {
                if poller.stop().is_err() {
                    log::error!("the poller panicked");
                }
            }
            let sync = Arc::new(SyncStatus::new(&config));
            if !psa::Provider::polled(&config).is_empty() {
                self.poller = Some(
                    sync::spawn_poller(config.clone(), self.writer.client.clone(), sync.clone())
                        .map_err(StartError::Io)?,
                );
            }
            sync
        } else {
            current.sync.clone()
        };
        log::set_max_level(config.server.log_level);
        state.replace(config, sync);
        Ok(plan)
    }

    /// Receives a message when the service cannot go on (an HTTP worker found the server gone).
    pub fn fatal(&self) -> &Receiver<String> {
        &self.fatal
    }

    /// Ordered shutdown: stop taking requests and finish those in flight,
    /// stop the poller, then let the writer commit what is queued and stop.
    pub fn shutdown(self) -> Result<(), String> {
        let mut problems = Vec::new();
        self.writer.client.health().close();
        if self.http.stop().is_err() {
            problems.push("an HTTP worker panicked".to_string());
        }
        if let Some(poller) = self.poller {
            if poller.stop().is_err() {
                problems.push("the poller panicked".to_string());
            }
        }
        if self.writer.join().is_err() {
            problems.push("the writer panicked".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
