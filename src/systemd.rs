//! Running under systemd: the state notifications of a `Type=notify`
//! unit (ready, reloading, stopping, and the watchdog's keep-alive) and
//! the listening socket a `codex.socket` unit passes. Outside systemd
//! (no `NOTIFY_SOCKET`, no `LISTEN_FDS`) all of this does nothing.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};
use sd_notify::NotifyState;

use crate::store::DbHealth;

/// The listening socket systemd passed (`LISTEN_FDS`, for this process by
/// `LISTEN_PID`), if it passed one. An fd that is not a TCP listening
/// socket is an error: the unit is wrong, and guessing would hide it.
pub fn passed_listener() -> std::io::Result<Option<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if fds.len() > 1 {
        log::warn!("systemd passed {} sockets; serving on the first", fds.len());
    }
    fds.take_tcp_listener(0)
}

/// Codex listens and its database answered (`READY=1`); also the end of a
/// reload.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload (SIGHUP) began: `RELOADING=1` with the monotonic time, as
/// `Type=notify-reload` expects and `Type=notify` accepts.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Codex began draining (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        log::warn!("cannot notify systemd: {error}");
    }
}

/// The thread that sends `WATCHDOG=1` while the writer makes progress.
pub struct Watchdog {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    /// Starts the keep-alive when the unit has `WatchdogSec=` (systemd sets
    /// `WATCHDOG_USEC` for this process); `None` otherwise. It pings twice
    /// per interval, each time only if the writer's loop turned since the
    /// last ping: a writer stuck on a call gets Codex restarted.
    pub fn spawn(health: Arc<DbHealth>) -> std::io::Result<Option<Watchdog>> {
        let mut usec = 0;
        if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
            return Ok(None);
        }
        let every = Duration::from_micros(usec) / 2;
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("codex-watchdog".to_string())
            .spawn(move || {
                let mut seen = health.turns();
                let mut stuck_logged = false;
                while stopped.recv_timeout(every).is_err_and(|e| e.is_timeout()) {
                    let turns = health.turns();
                    if turns != seen {
                        seen = turns;
                        stuck_logged = false;
                        send(&[NotifyState::Watchdog]);
                    } else if !stuck_logged {
                        stuck_logged = true;
                        log::error!(
                            "the writer has made no progress for {} ms; the watchdog is no longer fed",
                            every.as_millis()
                        );
                    }
                }
            })?;
        Ok(Some(Watchdog { stop, thread }))
    }

    /// Stops the keep-alive (before `STOPPING=1`: a drain is not a hang).
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            log::error!("the watchdog thread panicked");
        }
    }
}
