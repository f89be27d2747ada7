//! Start-up wiring: the store (writer and reader) that every command
//! opens the same way, and the running service around it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crossbeam_channel::{Receiver, unbounded};

use crate::config::Config;
use crate::error::{StoreError, TlsError};
use crate::http::tls::Certificates;
use crate::http::{AppState, HttpServer};
use crate::psa::Provider;
use crate::reload;
use crate::status::{StatusBoard, StatusThread};
use crate::store::{self, DbHealth, Reader, WriterHandle};
use crate::sync::{self, Poller};

/// Why the service (or a command that opens the store) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database cannot be used and waiting will not fix it (a newer
    /// schema, a SQLite file that is not the one Codex created, a failed
    /// migration).
    #[error("{0}")]
    Store(StoreError),
    /// A thread (writer, poller, status, HTTP worker) could not be started.
    #[error("cannot start: {0}")]
    Io(std::io::Error),
    /// The TLS certificate or key cannot be served.
    #[error("{0}")]
    Tls(TlsError),
}

/// A thread that panicked during an ordered shutdown; the others were
/// still stopped and joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.panicked.join(" panicked; ") + " panicked")]
pub struct ShutdownError {
    /// The threads that panicked: "an HTTP worker", "the poller", ...
    pub panicked: Vec<&'static str>,
}

/// The store as every command opens it: the writer thread (which owns the
/// writing connection) and a read connection.
pub(crate) struct Store {
    pub writer: WriterHandle,
    pub reader: Reader,
}

/// Opens and migrates the database, starts the writer, and makes a reader.
/// A database that cannot be reached does not stop this: the writer
/// connects when it can (and callers see `Unavailable` meanwhile). One
/// that waiting will not fix does.
pub(crate) fn open_store(config: &Config) -> Result<Store, StartError> {
    let url = &config.database.url;
    let first = store::connect_at_start(url).map_err(StartError::Store)?;
    let connected = first.is_ok();
    let writer = store::spawn_writer(first, url.clone(), config.webhooks.journal_retention_days)
        .map_err(StartError::Io)?;
    let mut reader = Reader::new(url, writer.client.health_handle());
    // Opened now, so that the service's descriptors are all taken at
    // start. Failing here is no worse than at the first read, which
    // tries again.
    if connected {
        if let Err(error) = reader.connect() {
            log::warn!("cannot open the read connection yet: {error}");
        }
    }
    Ok(Store { writer, reader })
}

/// The running service: HTTP workers, the writer, the poller, the status
/// thread.
pub struct Service {
    http: HttpServer,
    writer: WriterHandle,
    poller: Option<Poller>,
    board: Arc<StatusBoard>,
    status: StatusThread,
    fatal: Receiver<String>,
}

/// Starts the service on `listener` (bound by the caller, so tests can use
/// port 0): opens the store, then starts the status thread, the poller
/// (when configured) and the HTTP workers. Codex answers 503 while the
/// database cannot be reached.
pub fn run(config: Config, listener: TcpListener) -> Result<Service, StartError> {
    let config = Arc::new(config);
    let certificates = Certificates::from_config(&config.server).map_err(StartError::Tls)?;
    let Store { writer, reader } = open_store(&config)?;
    let board = Arc::new(StatusBoard::new(&config, writer.client.health_handle()));
    let status = StatusThread::spawn(board.clone(), reader).map_err(StartError::Io)?;
    let (fatal_tx, fatal) = unbounded();
    let poller = spawn_poller(&config, &writer, &board)?;
    let state = Arc::new(AppState::new(
        config.clone(),
        writer.client.clone(),
        board.clone(),
    ));
    let http = HttpServer::start(
        listener,
        state,
        config.server.threads,
        fatal_tx,
        certificates,
    )
    .map_err(StartError::Io)?;
    Ok(Service {
        http,
        writer,
        poller,
        board,
        status,
        fatal,
    })
}

/// Starts the poller when any provider is polled.
fn spawn_poller(
    config: &Arc<Config>,
    writer: &WriterHandle,
    board: &Arc<StatusBoard>,
) -> Result<Option<Poller>, StartError> {
    if Provider::polled(config).is_empty() {
        return Ok(None);
    }
    sync::spawn_poller(config.clone(), writer.client.clone(), board.pollers())
        .map(Some)
        .map_err(StartError::Io)
}

impl Service {
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// True when Codex serves HTTPS.
    pub fn serves_tls(&self) -> bool {
        self.http.certificates().is_some()
    }

    /// Puts a reloaded configuration in force without dropping a
    /// connection: requests read from now on use it; the poller restarts
    /// when polling settings changed. Returns what changed.
    /// With TLS, the certificate and key are read again first: when they
    /// cannot be served the reload is refused and nothing changes.
    pub fn reload(&mut self, config: Config) -> Result<reload::Plan, StartError> {
        let certificate = match self.http.certificates() {
            Some(certificates) => Some(certificates.reread().map_err(StartError::Tls)?),
            None => None,
        };
        let state = self.http.state();
        let current = state.current();
        let mut plan = reload::plan(&current.config, config);
        let config = Arc::new(std::mem::take(&mut plan.config));
        if plan.polling_changed {
            if let Some(poller) = self.poller.take() {
                if poller.stop().is_err() {
                    log::error!("the poller panicked");
                }
            }
            self.board.reset(&config);
            self.poller = spawn_poller(&config, &self.writer, &self.board)?;
        }
        log::set_max_level(config.server.log_level);
        state.replace(config);
        if let (Some(certificates), Some(key)) = (self.http.certificates(), certificate) {
            certificates.install(key);
            log::info!(
                "TLS certificate {} read again; new connections get it",
                certificates.cert_path().display()
            );
        }
        Ok(plan)
    }

    /// True once the database answered: the writer is connected and not
    /// stuck on a call.
    pub fn database_ready(&self) -> bool {
        self.writer.client.health().problem().is_none()
    }

    /// The writer's published state (the watchdog follows its progress).
    pub(crate) fn db_health(&self) -> Arc<DbHealth> {
        self.writer.client.health_handle()
    }

    /// Leaves connections still queued on the listening socket at shutdown
    /// for the next process: systemd passed the socket and keeps it open
    /// across restarts.
    pub fn leave_backlog_queued(&mut self) {
        self.http.leave_backlog_queued();
    }

    /// Receives a message when the service cannot go on (an HTTP worker found the server gone).
    pub fn fatal(&self) -> &Receiver<String> {
        &self.fatal
    }

    /// Ordered shutdown: stop taking requests and finish those in flight,
    /// stop the poller and the status thread, then let the writer commit
    /// what is queued and stop.
    pub fn shutdown(self) -> Result<(), ShutdownError> {
        let mut panicked = Vec::new();
        self.writer.client.health().close();
        if self.http.stop().is_err() {
            panicked.push("an HTTP worker");
        }
        if let Some(poller) = self.poller {
            if poller.stop().is_err() {
                panicked.push("the poller");
            }
        }
        if self.status.stop().is_err() {
            panicked.push("the status thread");
        }
        if self.writer.join().is_err() {
            panicked.push("the writer");
        }
        if panicked.is_empty() {
            Ok(())
        } else {
            Err(ShutdownError { panicked })
        }
    }
}
