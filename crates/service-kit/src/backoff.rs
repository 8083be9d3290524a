//! The one backoff every retry loop of the services waits with: exponential
//! with jitter. The n-th retry waits a random time in `[base/2, base]` where
//! `base = min(initial * 2^(n-1), max)`; jitter keeps processes that failed
//! together from retrying together.
//!
//! Who retries what, and with which bounds, is in docs/reliability.md ("Who
//! retries what"): each failure has one owner.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter between `initial` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits from about `initial`, doubling per retry, up to `max` (raised to
    /// `initial` if smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
        }
    }

    /// Delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let half = base / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }

    /// The retries of one loop: [`Retries::next_delay`] grows the wait,
    /// [`Retries::reset`] starts over after a success.
    pub fn retries(self) -> Retries {
        Retries {
            backoff: self,
            retry: 0,
        }
    }
}

/// A retry count with its backoff, for a loop that retries until it succeeds.
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    retry: u32,
}

impl Retries {
    /// The wait before the next retry; each call waits longer, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        self.retry = self.retry.saturating_add(1);
        self.backoff.delay(self.retry)
    }

    /// After a success: the next failure waits about `initial` again.
    pub fn reset(&mut self) {
        self.retry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let backoff = Backoff::new(initial, max);
        for retry in 1..30 {
            let d = backoff.delay(retry);
            let base = (initial * 2u32.pow(retry.saturating_sub(1).min(20))).min(max);
            assert!(
                d >= base / 2 && d <= base,
                "retry {retry}: {d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[test]
    fn retries_grow_until_reset_and_start_over_after_it() {
        let mut retries =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).retries();
        let first = retries.next_delay();
        let _ = retries.next_delay();
        let third = retries.next_delay();
        retries.reset();
        let again = retries.next_delay();

        assert!(first <= Duration::from_millis(100), "{first:?}");
        assert!(third >= Duration::from_millis(200), "{third:?}");
        assert!(again <= Duration::from_millis(100), "{again:?}");
    }
}
