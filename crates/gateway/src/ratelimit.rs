//! Per-user rate limits shared by every gateway replica.
//!
//! The algorithm is governor's GCRA; its state (one "theoretical arrival time"
//! per user) lives in a NATS key-value bucket instead of process memory, so all
//! replicas draw from one budget. governor's [`StateStore`] contract is a
//! compare-and-swap loop ("read the old value, compute the new one, replace it
//! if nobody else did"), which maps onto KV revisions: `update(key, value,
//! revision)` fails when another replica wrote first, and the loop re-reads.
//!
//! Two details make the state comparable across processes:
//! - the clock is wall-clock time since the UNIX epoch ([`EpochClock`]), so
//!   replicas agree up to NTP skew;
//! - governor stores times relative to the limiter's creation instant, which
//!   differs per replica; the store converts to absolute epoch nanoseconds on
//!   write and back on read, using the clock's first reading (which governor
//!   takes as that instant in `RateLimiter::new`).
//!
//! governor's state store is synchronous, so a check runs on the blocking pool
//! and waits for NATS there. When NATS fails the check lets the request through
//! and logs it (fail open): the gateway cannot accept updates without NATS anyway,
//! and refusing reads because the limiter's store is down would turn a limiter
//! outage into a full outage.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;
use tokio::runtime::Handle;

use crate::auth::{Principal, Scope};

/// Compare-and-swap rounds before a check gives up and lets the request through.
const MAX_CAS_ATTEMPTS: usize = 64;

/// `[rate_limit]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per minute per user, for tokens without a scope listed in `by_scope`.
    pub per_minute: u32,
    /// Per-scope budgets (`"memory:admin" = 1000`); a token gets the largest of
    /// its scopes' budgets, or `per_minute`.
    pub by_scope: BTreeMap<String, u32>,
    /// NATS KV bucket holding the shared state (created if absent).
    pub bucket: String,
    /// Calls with a missing or invalid token per client IP address per minute,
    /// per gateway replica; beyond it they get RESOURCE_EXHAUSTED (see [`FailedAuthLimiter`]).
    pub failed_auth_per_minute_per_ip: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_minute: 100,
            by_scope: BTreeMap::new(),
            bucket: "chat_memory_ratelimit".into(),
            failed_auth_per_minute_per_ip: 60,
        }
    }
}

impl RateLimitSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.per_minute == 0 {
            return Err(SettingsError::invalid(
                "rate_limit.per_minute",
                "must be at least 1",
            ));
        }
        if self.failed_auth_per_minute_per_ip == 0 {
            return Err(SettingsError::invalid(
                "rate_limit.failed_auth_per_minute_per_ip",
                "must be at least 1",
            ));
        }
        for (scope, limit) in &self.by_scope {
            if Scope::parse(scope).is_none() || *limit == 0 {
                return Err(SettingsError::invalid(
                    "rate_limit.by_scope",
                    format!("{scope:?}: must be a memory:* scope with a positive limit"),
                ));
            }
        }
        let ok = !self.bucket.is_empty()
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(SettingsError::invalid(
                "rate_limit.bucket",
                "must be non-empty [A-Za-z0-9_-]",
            ));
        }
        Ok(())
    }

    /// The per-minute budget of `principal`.
    pub fn limit_for(&self, principal: &Principal) -> u32 {
        principal
            .scopes
            .iter()
            .filter_map(|s| self.by_scope.get(s.as_str()).copied())
            .max()
            .unwrap_or(self.per_minute)
    }
}

/// Why the shared limiter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit bucket {bucket}: {reason}")]
pub struct LimiterError {
    pub bucket: String,
    pub reason: String,
}

type SharedLimiter = RateLimiter<String, KvState, EpochClock, NoOpMiddleware<Nanos>>;

/// The limiters, one per distinct budget.
pub struct Limiters {
    settings: RateLimitSettings,
    by_budget: BTreeMap<u32, Arc<SharedLimiter>>,
}

impl Limiters {
    /// Opens (creating if needed) the KV bucket and builds one limiter per budget.
    ///
    /// # Errors
    /// [`LimiterError`] when JetStream refuses the bucket.
    pub async fn open(
        js: &jetstream::Context,
        settings: RateLimitSettings,
    ) -> Result<Self, LimiterError> {
        let store = open_bucket(js, &settings.bucket).await?;
        let mut budgets: Vec<u32> = settings.by_scope.values().copied().collect();
        budgets.push(settings.per_minute);
        let mut by_budget = BTreeMap::new();
        for budget in budgets {
            let per_minute = NonZeroU32::new(budget).unwrap_or(NonZeroU32::MIN);
            let start = Arc::new(OnceLock::new());
            let clock = EpochClock {
                first: Arc::clone(&start),
            };
            let state = KvState {
                kv: store.clone(),
                start,
                prefix: format!("b{budget}"),
                runtime: Handle::current(),
            };
            by_budget.insert(
                budget,
                Arc::new(SharedLimiter::new(
                    Quota::per_minute(per_minute),
                    state,
                    clock,
                )),
            );
        }
        Ok(Self {
            settings,
            by_budget,
        })
    }

    /// `Ok` when `principal` may make one more call; else how long to wait.
    pub async fn check(&self, principal: &Principal) -> Result<(), Duration> {
        let budget = self.settings.limit_for(principal);
        let Some(limiter) = self.by_budget.get(&budget).cloned() else {
            return Ok(());
        };
        let key = format!("{}.{}", hex(&principal.tenant), hex(&principal.user));
        let checked = tokio::task::spawn_blocking(move || {
            let clock = EpochClock {
                first: Arc::new(OnceLock::new()),
            };
            limiter
                .check_key(&key)
                .map_err(|not_until| not_until.wait_time_from(clock.now()))
        })
        .await;
        match checked {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "rate-limit check panicked; allowing the call");
                Ok(())
            }
        }
    }
}

/// Distinct client addresses tracked before idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Limits calls that fail authentication (missing, malformed, expired, forged
/// token), per client IP address, in this process.
///
/// Token guessing and floods of garbage then cost the attacker time instead of
/// costing the gateway signature checks and audit rows without end. Only
/// failures count: callers with valid tokens are never slowed by it, even behind
/// the same NAT or load balancer as an attacker. It is per replica on purpose:
/// an unauthenticated flood must not turn into writes to the shared NATS store.
pub struct FailedAuthLimiter {
    limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
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
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > MAX_TRACKED_ADDRESSES {
            // Addresses whose budget is full again carry no information.
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }
}

/// Creates the KV bucket's stream by hand (NATS 2.9 cannot answer
/// `create_key_value`, see STACK-NOTES) and opens it.
async fn open_bucket(js: &jetstream::Context, bucket: &str) -> Result<kv::Store, LimiterError> {
    let err = |reason: String| LimiterError {
        bucket: bucket.to_owned(),
        reason,
    };
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        // One value per key: the latest arrival time.
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        // A user idle for an hour has a full budget again; older state is useless.
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(60),
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| err(e.to_string()))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| err(e.to_string()))
}

/// Wall-clock time since the UNIX epoch, shared by every replica.
#[derive(Clone)]
pub struct EpochClock {
    /// The first reading: governor takes it as the limiter's start instant.
    first: Arc<OnceLock<Nanos>>,
}

impl Clock for EpochClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let now = Nanos::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO),
        );
        // The first reading is the limiter's start (see the module docs).
        self.first.get_or_init(|| now);
        now
    }
}

/// governor's per-key state in NATS KV, as absolute epoch nanoseconds.
pub struct KvState {
    kv: kv::Store,
    /// The limiter's start instant (the clock's first reading).
    start: Arc<OnceLock<Nanos>>,
    /// Keeps budgets apart: a user's state under one budget is not another's.
    prefix: String,
    runtime: Handle,
}

impl StateStore for KvState {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let start = self.start.get().copied().unwrap_or_else(|| Nanos::from(0));
        let key = format!("{}.{key}", self.prefix);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let entry = match self.runtime.block_on(self.kv.entry(key.as_str())) {
                Ok(entry) => entry,
                Err(e) => return fail_open(&f, &e),
            };
            let (previous, revision) = match entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    decode(&e.value).map(|abs| abs.duration_since(start)),
                    Some(e.revision),
                ),
                Some(e) => (None, Some(e.revision)),
                None => (None, None),
            };
            // A denial (Err) writes nothing, as in governor's in-memory store.
            let (value, next) = f(previous)?;
            let absolute = Bytes::from((start + next).as_u64().to_be_bytes().to_vec());
            let written = match revision {
                Some(rev) => self
                    .runtime
                    .block_on(self.kv.update(key.as_str(), absolute, rev))
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .runtime
                    .block_on(self.kv.create(key.as_str(), absolute))
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(_) => return Ok(value),
                // Another replica wrote first: read again and recompute.
                Err((true, _)) => {}
                Err((false, reason)) => return fail_open(&f, &reason),
            }
        }
        fail_open(&f, &"too much contention on the rate-limit key")
    }
}

/// Lets the call through when the shared state cannot be used (see module docs).
fn fail_open<T, F, E>(f: &F, error: &dyn std::fmt::Display) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    tracing::warn!(error = %error, "rate-limit state unavailable; allowing the call");
    f(None).map(|(value, _)| value)
}

fn decode(raw: &[u8]) -> Option<Nanos> {
    let bytes: [u8; 8] = raw.try_into().ok()?;
    Some(Nanos::from(u64::from_be_bytes(bytes)))
}

/// Lower-case hex: KV keys allow only `[-/_=.A-Za-z0-9]`, user ids may hold anything.
fn hex(raw: &str) -> String {
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[Scope]) -> Principal {
        Principal {
            tenant: "t".into(),
            user: "u".into(),
            scopes: scopes.iter().copied().collect(),
        }
    }

    #[test]
    fn a_token_gets_the_largest_budget_of_its_scopes() {
        let settings = RateLimitSettings {
            by_scope: BTreeMap::from([("memory:admin".to_owned(), 1000)]),
            ..RateLimitSettings::default()
        };
        assert_eq!(settings.limit_for(&principal(&[Scope::Read])), 100);
        assert_eq!(
            settings.limit_for(&principal(&[Scope::Read, Scope::Admin])),
            1000
        );
    }

    #[test]
    fn keys_are_valid_kv_tokens() {
        assert_eq!(hex("a/b c"), "612f622063");
    }
}
