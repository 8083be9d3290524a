//! GCRA arithmetic on one number, the theoretical arrival time (TAT), taken in
//! leases of several tokens at once.
//!
//! A budget of `n` calls per minute emits one token every `60 s / n` (the
//! interval) and holds at most `n` (the burst), as governor's
//! `Quota::per_minute(n)`. The TAT is the time at which the budget would be full
//! again if nothing more were taken; taking `k` tokens advances it by `k`
//! intervals, and is allowed while it stays within one burst of now. Times are
//! nanoseconds since the UNIX epoch, so every replica reads them alike (up to
//! NTP skew).

use std::time::Duration;

const NANOS_PER_MINUTE: u64 = 60_000_000_000;

/// One per-minute budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds between two tokens.
    interval: u64,
    /// Tokens a full budget holds.
    burst: u64,
}

/// What a lease got from the shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// `tokens` (1..=wanted) granted; `tat` is the state to store.
    Granted { tokens: u32, tat: u64 },
    /// Nothing left; the next token is emitted in `wait`.
    Denied { wait: Duration },
}

impl Gcra {
    /// `per_minute` calls a minute (at least 1).
    pub fn per_minute(per_minute: u32) -> Self {
        let per_minute = u64::from(per_minute.max(1));
        Self {
            interval: (NANOS_PER_MINUTE / per_minute).max(1),
            burst: per_minute,
        }
    }

    /// Takes up to `want` tokens at `now` from a budget whose stored TAT is `tat`
    /// (`None`: never used, or forgotten, so full).
    pub fn take(&self, tat: Option<u64>, now: u64, want: u32) -> Taken {
        // A TAT in the past means a full budget: tokens do not pile up beyond it.
        let start = tat.unwrap_or(0).max(now);
        let horizon = now.saturating_add(self.burst.saturating_mul(self.interval));
        let available = horizon.saturating_sub(start) / self.interval;
        let tokens = u32::try_from(available.min(u64::from(want))).unwrap_or(want);
        if tokens == 0 {
            // horizon < start + interval here, so the wait is positive.
            let next = start.saturating_add(self.interval);
            return Taken::Denied {
                wait: Duration::from_nanos(next.saturating_sub(horizon).max(1)),
            };
        }
        Taken::Granted {
            tokens,
            tat: start.saturating_add(u64::from(tokens).saturating_mul(self.interval)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const NOW: u64 = 1_700_000_000 * SECOND;

    #[test]
    fn a_fresh_budget_grants_a_whole_burst_and_then_nothing() {
        let gcra = Gcra::per_minute(60);
        let Taken::Granted { tokens, tat } = gcra.take(None, NOW, 100) else {
            panic!("a fresh budget denied");
        };
        assert_eq!(tokens, 60);
        assert_eq!(
            gcra.take(Some(tat), NOW, 1),
            Taken::Denied {
                wait: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn a_lease_advances_the_arrival_time_by_one_interval_per_token() {
        let gcra = Gcra::per_minute(60);
        assert_eq!(
            gcra.take(None, NOW, 5),
            Taken::Granted {
                tokens: 5,
                tat: NOW + 5 * SECOND
            }
        );
        assert_eq!(
            gcra.take(Some(NOW + 5 * SECOND), NOW, 5),
            Taken::Granted {
                tokens: 5,
                tat: NOW + 10 * SECOND
            }
        );
    }

    #[test]
    fn a_lease_near_the_end_of_the_budget_is_granted_in_part() {
        let gcra = Gcra::per_minute(60);
        let almost_full = NOW + 57 * SECOND;
        assert_eq!(
            gcra.take(Some(almost_full), NOW, 10),
            Taken::Granted {
                tokens: 3,
                tat: NOW + 60 * SECOND
            }
        );
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_never_beyond_one_burst() {
        let gcra = Gcra::per_minute(60);
        let empty = NOW + 60 * SECOND;
        let two_seconds_later = NOW + 2 * SECOND;
        assert!(matches!(
            gcra.take(Some(empty), two_seconds_later, 10),
            Taken::Granted { tokens: 2, .. }
        ));
        // An hour idle still gives one burst, not sixty.
        assert!(matches!(
            gcra.take(Some(NOW), NOW + 3600 * SECOND, 1000),
            Taken::Granted { tokens: 60, .. }
        ));
    }
}
