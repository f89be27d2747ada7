// codex patch 14: one budget for the request bodies being held. Each
// connection reads a body into memory before the hand-off (codex patch 9);
// without a global bound, many connections each sending a body just under
// `max_body_bytes` add up to any amount of memory. A body is read only once
// its size is reserved here, and the reservation is given back when the
// request (and with it the body) is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of request bodies held at once, across every connection.
pub(crate) struct BodyBudget {
    limit: usize,
    used: AtomicUsize,
}

/// A share of the budget, given back on drop.
pub(crate) struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyBudget {
    pub(crate) fn new(limit: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Reserves `bytes`, or `None` when they do not fit beside what is held.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .ok()
            .map(|_| Reservation {
                budget: self.clone(),
                bytes,
            })
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::BodyBudget;

    #[test]
    fn reservations_fit_within_the_limit_and_are_given_back() {
        let budget = BodyBudget::new(100);
        let a = budget.reserve(60).expect("fits");
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).expect("fits exactly");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(budget.reserve(usize::MAX).is_none());
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
