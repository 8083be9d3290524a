//! Failed authentications per client IP address, in this process.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{Quota, RateLimiter};

/// Distinct client addresses tracked before idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Limits calls that fail authentication (missing, malformed, expired, forged
/// token), per client IP address, in this process.
///
/// A client over its budget is answered RESOURCE_EXHAUSTED with a retry-after
/// instead of UNAUTHENTICATED, so a well-behaved one backs off. The token is
/// still checked first (each refusal is still audited as `denied`): that is
/// what keeps callers with valid tokens from ever being slowed by it, even
/// behind the same NAT or load balancer as an attacker; a flood of forged
/// tokens from one address still costs a signature check each (DEBT D-42). It is per replica on purpose:
/// an unauthenticated flood must not turn into writes to the shared NATS store.
pub struct FailedAuthLimiter {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
}

impl FailedAuthLimiter {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Records one failed authentication from `ip`: `Err(wait)` once its budget is spent.
    ///
    /// # Errors
    /// How long until `ip` may fail again.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > MAX_TRACKED_ADDRESSES {
            // Addresses whose budget is full again carry no information.
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }
}
