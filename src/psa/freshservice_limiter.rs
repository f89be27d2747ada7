//! Freshservice's rate limit, one budget per kind of call: under the
//! configured requests a minute and under the total the account reports,
//! spaced out when the account reports the budget nearly spent.

use std::time::{Duration, Instant};

use super::client::MinuteWindow;

/// When `X-RateLimit-Remaining` drops to this, requests are spaced out.
const REMAINING_LOW: u64 = 2;

/// The budget of one kind of call: under `max` requests a minute (and
/// under the total the account reports for this kind), spaced out when the
/// account reports this kind's budget nearly spent (other integrations
/// share it).
pub(super) struct Limiter {
    max: usize,
    sent: MinuteWindow,
    slow_until: Option<Instant>,
    /// `X-RateLimit-Total` last reported for this kind.
    pub(super) total: Option<u64>,
    /// `X-RateLimit-Remaining` last reported for this kind.
    pub(super) remaining: Option<u64>,
}

impl Limiter {
    pub(super) fn new(max_per_minute: u32) -> Limiter {
        Limiter {
            max: max_per_minute.max(1) as usize,
            sent: MinuteWindow::default(),
            slow_until: None,
            total: None,
            remaining: None,
        }
    }

    /// Requests a minute allowed: the configured maximum, or the account's
    /// own total for this kind when that is lower.
    fn per_minute(&self) -> usize {
        match self.total {
            Some(total) if total > 0 => self.max.min(total as usize),
            _ => self.max,
        }
    }

    /// How long from `now` to wait before the next request.
    pub(super) fn delay(&mut self, now: Instant) -> Duration {
        let per_minute = self.per_minute();
        let delay = self.sent.delay(now, per_minute);
        match self.slow_until {
            Some(until) => delay.max(until.saturating_duration_since(now)),
            None => delay,
        }
    }

    pub(super) fn sent(&mut self, now: Instant) {
        self.sent.sent(now);
    }

    /// Takes in this kind's headers. Near the end of its budget, the next
    /// request of this kind waits long enough for the budget to refill by a
    /// few requests, at the rate its own total refills.
    pub(super) fn reported(&mut self, now: Instant, total: Option<u64>, remaining: Option<u64>) {
        if total.is_some() {
            self.total = total;
        }
        let Some(remaining) = remaining else {
            return;
        };
        self.remaining = Some(remaining);
        self.slow_until = (remaining <= REMAINING_LOW)
            .then(|| now + Duration::from_secs(60) * 3 / self.per_minute() as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_keeps_under_the_budget() {
        let now = Instant::now();
        let mut limiter = Limiter::new(2);
        assert_eq!(limiter.delay(now), Duration::ZERO);
        limiter.sent(now);
        limiter.sent(now);
        assert_eq!(limiter.delay(now), Duration::from_secs(60));
        let mut limiter = Limiter::new(60);
        limiter.reported(now, None, Some(1));
        assert_eq!(limiter.delay(now), Duration::from_secs(3));
        limiter.reported(now, None, Some(30));
        assert_eq!(limiter.delay(now), Duration::ZERO);
        // The account's own total for the kind caps it, and paces it.
        let mut limiter = Limiter::new(600);
        limiter.reported(now, Some(3), Some(50));
        for _ in 0..3 {
            limiter.sent(now);
        }
        assert_eq!(limiter.delay(now), Duration::from_secs(60));
        let mut limiter = Limiter::new(600);
        limiter.reported(now, Some(30), Some(1));
        assert_eq!(limiter.delay(now), Duration::from_secs(6));
    }
}
