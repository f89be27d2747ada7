//! Time as the PSA clients see it: what their rate limits count requests
//! against and what their backoffs sleep on. The service runs on
//! [`SystemClock`]; tests hand a client a [`ManualClock`], which moves only
//! when the client sleeps, so a wait of a minute takes no time at all
//! (it exists in test builds only).

#[cfg(test)]
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A source of instants that can be slept on.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;

    /// Lets `duration` pass.
    fn sleep(&self, duration: Duration);
}

/// The machine's monotonic clock and `std::thread::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A clock that stands still until someone sleeps on it (or calls
/// [`ManualClock::advance`]); sleeping moves it forward at once.
#[cfg(test)]
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

#[cfg(test)]
impl ManualClock {
    /// A clock standing at the real now.
    pub fn new() -> ManualClock {
        ManualClock {
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        // A poisoned lock only means another thread panicked mid-update of
        // a plain Duration, which is still a valid value.
        let mut elapsed = self.elapsed.lock().unwrap_or_else(|e| e.into_inner());
        *elapsed += duration;
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new()
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_slept_on() {
        let clock = ManualClock::new();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.sleep(Duration::from_secs(60));
        assert_eq!(clock.now() - start, Duration::from_secs(60));
        clock.advance(Duration::from_millis(5));
        assert_eq!(clock.elapsed(), Duration::from_millis(60_005));
    }
}
