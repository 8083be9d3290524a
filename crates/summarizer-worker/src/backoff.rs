//! Exponential backoff with full jitter: the n-th retry waits a random time in
//! `[base/2, base]` where `base = min(initial * 2^(n-1), max)`. Jitter keeps
//! workers that failed together from retrying together.

use std::time::Duration;

use rand::Rng;

/// Delay before retry number `retry` (1 for the first retry).
pub fn delay(retry: u32, initial: Duration, max: Duration) -> Duration {
    let exp = retry.saturating_sub(1).min(20);
    let base = initial.saturating_mul(1u32 << exp).min(max);
    let half = base / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for retry in 1..30 {
            let d = delay(retry, initial, max);
            let base = (initial * 2u32.pow(retry.saturating_sub(1).min(20))).min(max);
            assert!(
                d >= base / 2 && d <= base,
                "retry {retry}: {d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
    }
}
