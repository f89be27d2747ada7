//! Running under systemd: the state notifications of a `Type=notify`
//! unit (ready, reloading, stopping, and the watchdog's keep-alive) and
//! the listening socket a `codex.socket` unit passes. Outside systemd
//! (no `NOTIFY_SOCKET`, no `LISTEN_FDS`) all of this does nothing.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
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
    /// last ping or the writer is waiting for work (an idle writer sleeps):
    /// a writer stuck on a call gets Codex restarted.
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
                let progress = || health.turns();
                let waiting = || !health.in_call();
                keep_alive(&progress, &waiting, every, &stopped, &|| {
                    send(&[NotifyState::Watchdog])
                });
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

/// Every `every` until `stopped` says so: `ping` when `progress` moved
/// since the last look or the writer is `waiting` for work, else (once per
/// stall) an error in the log.
fn keep_alive(
    progress: &dyn Fn() -> u64,
    waiting: &dyn Fn() -> bool,
    every: Duration,
    stopped: &Receiver<()>,
    ping: &dyn Fn(),
) {
    let mut seen = progress();
    let mut stall_logged = false;
    while stopped.recv_timeout(every).is_err_and(|e| e.is_timeout()) {
        let now = progress();
        if now != seen || waiting() {
            seen = now;
            stall_logged = false;
            ping();
        } else if !stall_logged {
            stall_logged = true;
            log::error!(
                "the writer has made no progress for {} ms; the watchdog is no longer fed",
                every.as_millis()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    #[test]
    fn the_watchdog_is_fed_only_while_the_writer_moves() {
        let turns = Arc::new(AtomicU64::new(0));
        let pings = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = bounded::<()>(1);
        let (t, p) = (turns.clone(), pings.clone());
        let thread = std::thread::spawn(move || {
            keep_alive(
                &|| t.load(Ordering::SeqCst),
                &|| false,
                Duration::from_millis(10),
                &stopped,
                &|| {
                    p.fetch_add(1, Ordering::SeqCst);
                },
            )
        });
        // A stuck writer: several intervals pass, no ping.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(pings.load(Ordering::SeqCst), 0);
        // It moves again: pinged.
        turns.fetch_add(1, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pings.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn the_watchdog_is_fed_while_the_writer_waits_for_work() {
        let pings = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = bounded::<()>(1);
        let p = pings.clone();
        // The writer's loop does not turn, but it is not in a call: idle.
        let thread = std::thread::spawn(move || {
            keep_alive(
                &|| 0,
                &|| true,
                Duration::from_millis(10),
                &stopped,
                &|| {
                    p.fetch_add(1, Ordering::SeqCst);
                },
            )
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pings.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(pings.load(Ordering::SeqCst) >= 2);
        stop.send(()).unwrap();
        thread.join().unwrap();
    }
}
