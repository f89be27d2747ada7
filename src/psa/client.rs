//! What the PSA API clients share: the HTTP agent, waits that shutdown cuts
//! short, retries with backoff, and the per-minute request window, all on
//! a [`Clock`] a test can replace.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Provider;
use super::clock::{Clock, SystemClock};
use crate::error::SyncError;

/// Attempts for a request that meets a network error or a 5xx.
pub(crate) const ATTEMPTS: u32 = 4;
/// First retry delay; doubled on each further retry.
pub(crate) const BACKOFF: Duration = Duration::from_millis(500);
/// Rate-limit answers tolerated for one request before the run gives up
/// (the next run starts over from the unchanged cursor).
pub(crate) const MAX_RATE_LIMITED: u32 = 5;
/// Wait after a rate-limit answer without `Retry-After`: both PSAs count
/// their limits per minute.
pub(crate) const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// A `Retry-After` is honoured up to this long.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Largest API answer read (a page of 100 tickets with descriptions).
pub(crate) const MAX_BODY: u64 = 32 * 1024 * 1024;
/// Pages one listing reads at most (200,000 tickets at 100 a page): a
/// server whose pages never end fails the run instead of holding it.
pub(crate) const MAX_PAGES: u32 = 2_000;

/// The window the per-minute budgets count in.
const MINUTE: Duration = Duration::from_secs(60);
/// The longest a wait sleeps before looking at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The HTTP agent of an API client: status codes are answers, not errors,
/// and every request ends within `timeout`.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("codex/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The clock an API client reads and sleeps on, with the flag that asks
/// it to stop waiting (shutdown).
#[derive(Clone)]
pub(crate) struct Pacer {
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
}

impl Pacer {
    /// Real time, interrupted by `stop`.
    pub(crate) fn new(stop: Arc<AtomicBool>) -> Pacer {
        Pacer {
            clock: Arc::new(SystemClock),
            stop,
        }
    }

    /// The same stop flag on another clock.
    #[cfg(test)]
    pub(crate) fn with_clock(self, clock: Arc<dyn Clock>) -> Pacer {
        Pacer { clock, ..self }
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Lets `duration` pass (a backoff, a rate-limit wait), returning
    /// `Interrupted` early when shutdown is requested.
    pub(crate) fn wait(&self, duration: Duration) -> Result<(), SyncError> {
        let deadline = self.clock.now() + duration;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(SyncError::Interrupted);
            }
            let now = self.clock.now();
            if now >= deadline {
                return Ok(());
            }
            self.clock.sleep((deadline - now).min(STOP_CHECK));
        }
    }
}

/// The failures and rate-limit answers one request has met so far.
pub(crate) struct Retries {
    provider: Provider,
    failures: u32,
    rate_limited: u32,
}

impl Retries {
    pub(crate) fn new(provider: Provider) -> Retries {
        Retries {
            provider,
            failures: 0,
            rate_limited: 0,
        }
    }

    /// After a network error, a timeout or a 5xx (`error` says which):
    /// waits the next backoff, or gives up after [`ATTEMPTS`].
    pub(crate) fn failed(&mut self, error: String, pacer: &Pacer) -> Result<(), SyncError> {
        self.failures += 1;
        if self.failures >= ATTEMPTS {
            return Err(SyncError::Api(format!(
                "{error} (gave up after {ATTEMPTS} attempts)"
            )));
        }
        let delay = BACKOFF * 2u32.pow(self.failures - 1);
        log::warn!(
            "{}: {error}; retrying in {} ms",
            self.provider,
            delay.as_millis()
        );
        pacer.wait(delay)
    }

    /// After a rate-limit answer to `what`: how long to wait before
    /// retrying (its `Retry-After`, else a minute, at most two), or an error
    /// after [`MAX_RATE_LIMITED`] of them.
    pub(crate) fn rate_limited(
        &mut self,
        what: &str,
        retry_after: Option<Duration>,
    ) -> Result<Duration, SyncError> {
        self.rate_limited += 1;
        crate::metrics::metrics().rate_limit_wait(self.provider);
        if self.rate_limited > MAX_RATE_LIMITED {
            return Err(SyncError::Api(format!(
                "{what} is still rate limited after {MAX_RATE_LIMITED} waits"
            )));
        }
        Ok(retry_after.unwrap_or(RATE_LIMIT_WAIT).min(MAX_RETRY_AFTER))
    }
}

/// Where a client sends its credentials: the scheme, host and port of the
/// configured API address. A page link elsewhere is not followed, so the
/// `Authorization` header never leaves for a host the operator did not name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http(s)` URL, `None` for anything else.
    pub(crate) fn of(url: &str) -> Option<Origin> {
        let uri = ureq::http::Uri::try_from(url).ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        Some(Origin {
            host: uri.host()?.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        })
    }

    /// `link` (absolute, or a path on this origin) as an absolute URL on
    /// this origin; an error naming the host when it points anywhere else.
    pub(crate) fn follow(&self, link: &str) -> Result<String, SyncError> {
        if link.starts_with('/') && !link.starts_with("//") {
            return Ok(format!("{self}{link}"));
        }
        match Origin::of(link) {
            Some(origin) if origin == *self => Ok(link.to_string()),
            Some(origin) => Err(SyncError::Protocol(format!(
                "the next page is on {origin}, not on the configured {self}: not followed, \
                 so the credentials stay with {self}"
            ))),
            None => Err(SyncError::Protocol(format!(
                "the next page link is not an http(s) address on {self}: not followed"
            ))),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// `Err` once a listing has read [`MAX_PAGES`] pages and has more.
pub(crate) fn page_cap(what: &str, pages: u32) -> Result<(), SyncError> {
    if pages >= MAX_PAGES {
        return Err(SyncError::Protocol(format!(
            "{what} still has more after {MAX_PAGES} pages: stopped there (the page cap)"
        )));
    }
    Ok(())
}

/// The requests sent in the last minute, for a per-minute budget.
#[derive(Debug, Default)]
pub(crate) struct MinuteWindow {
    sent: VecDeque<Instant>,
}

impl MinuteWindow {
    /// How long from `now` until one more request keeps at most `max`
    /// (at least 1) in any minute: until the oldest of the last `max` ages out.
    pub(crate) fn delay(&mut self, now: Instant, max: usize) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            self.sent.pop_front();
        }
        match self.sent.front() {
            Some(oldest) if self.sent.len() >= max.max(1) => {
                (*oldest + MINUTE).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    /// Counts a request sent at `now`.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.sent.push_back(now);
    }
}

/// A PSA API on a local port for the clients' tests, whose arrivals are
/// logged on a manual clock.
#[cfg(test)]
pub(crate) mod fake {
    use std::io::Cursor;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use crate::psa::clock::{Clock, ManualClock};

    pub(crate) type Answer = tiny_http::Response<Cursor<Vec<u8>>>;

    /// Serves each request with `answer(url, base)` until `arrivals`.
    pub(crate) struct FakeApi {
        /// `http://127.0.0.1:<port>`.
        pub(crate) base: String,
        done: Arc<AtomicBool>,
        serve: JoinHandle<Vec<Instant>>,
    }

    impl FakeApi {
        pub(crate) fn start(
            clock: Arc<ManualClock>,
            answer: impl Fn(&str, &str) -> Answer + Send + 'static,
        ) -> FakeApi {
            let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
            let base = format!("http://{}", server.server_addr().to_ip().unwrap());
            let done = Arc::new(AtomicBool::new(false));
            let (stop, url_base) = (done.clone(), base.clone());
            let serve = std::thread::spawn(move || {
                let mut arrivals = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(request) = server.recv_timeout(Duration::from_millis(50)).unwrap()
                    else {
                        continue;
                    };
                    arrivals.push(clock.now());
                    let response = answer(request.url(), &url_base);
                    request.respond(response).unwrap();
                }
                arrivals
            });
            FakeApi { base, done, serve }
        }

        /// Stops serving; when each request arrived, in order.
        pub(crate) fn arrivals(self) -> Vec<Instant> {
            self.done.store(true, Ordering::Relaxed);
            self.serve.join().unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psa::clock::ManualClock;

    #[test]
    fn the_window_holds_at_most_max_requests_a_minute() {
        let clock = ManualClock::new();
        let mut window = MinuteWindow::default();
        for _ in 0..3 {
            assert_eq!(window.delay(clock.now(), 3), Duration::ZERO);
            window.sent(clock.now());
            clock.advance(Duration::from_secs(10));
        }
        // Sent at 0, 10 and 20 s; now 30 s: the fourth waits for the first.
        assert_eq!(window.delay(clock.now(), 3), Duration::from_secs(30));
        clock.advance(Duration::from_secs(30));
        assert_eq!(window.delay(clock.now(), 3), Duration::ZERO);
    }

    #[test]
    fn waits_pass_on_the_clock_and_stop_cuts_them_short() {
        let clock = Arc::new(ManualClock::new());
        let stop = Arc::new(AtomicBool::new(false));
        let pacer = Pacer::new(stop.clone()).with_clock(clock.clone());
        pacer.wait(Duration::from_secs(90)).unwrap();
        assert_eq!(clock.elapsed(), Duration::from_secs(90));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(
            pacer.wait(Duration::from_secs(90)),
            Err(SyncError::Interrupted)
        );
        assert_eq!(clock.elapsed(), Duration::from_secs(90));
    }

    #[test]
    fn links_are_followed_only_on_the_configured_origin() {
        let origin = Origin::of("https://Acme.freshservice.com/api/v2").unwrap();
        assert_eq!(origin.to_string(), "https://acme.freshservice.com:443");
        let same = "https://acme.freshservice.com:443/api/v2/tickets?page=2";
        assert_eq!(origin.follow(same).unwrap(), same);
        assert_eq!(
            origin.follow("/api/v2/tickets?page=2").unwrap(),
            "https://acme.freshservice.com:443/api/v2/tickets?page=2"
        );
        for elsewhere in [
            "https://evil.example/api/v2/tickets?page=2",
            "http://acme.freshservice.com/api/v2/tickets?page=2",
            "https://acme.freshservice.com:8443/api/v2/tickets?page=2",
            "https://acme.freshservice.com.evil.example/x",
            "https://acme.freshservice.com@evil.example/x",
            "//evil.example/x",
            "ftp://acme.freshservice.com/x",
        ] {
            let error = origin.follow(elsewhere).unwrap_err().to_string();
            assert!(error.contains("not followed"), "{elsewhere}: {error}");
        }
        let error = origin
            .follow("https://evil.example/api")
            .unwrap_err()
            .to_string();
        assert!(error.contains("evil.example"), "{error}");
        assert!(page_cap("x", MAX_PAGES - 1).is_ok());
        assert!(
            page_cap("x", MAX_PAGES)
                .unwrap_err()
                .to_string()
                .contains("page cap")
        );
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let clock = Arc::new(ManualClock::new());
        let pacer = Pacer::new(Arc::new(AtomicBool::new(false))).with_clock(clock.clone());
        let mut retries = Retries::new(Provider::Freshservice);
        for _ in 1..ATTEMPTS {
            retries.failed("boom".to_string(), &pacer).unwrap();
        }
        // 0.5 + 1 + 2 s of backoff, then the fourth failure ends it.
        assert_eq!(clock.elapsed(), Duration::from_millis(3500));
        let error = retries.failed("boom".to_string(), &pacer).unwrap_err();
        assert_eq!(
            error,
            SyncError::Api("boom (gave up after 4 attempts)".to_string())
        );
        for _ in 0..MAX_RATE_LIMITED {
            assert_eq!(
                retries.rate_limited("x", Some(Duration::from_secs(500))),
                Ok(MAX_RETRY_AFTER)
            );
        }
        assert!(retries.rate_limited("x", None).is_err());
    }
}
