//! Rate limits shared by every gateway replica, and failed authentications per address.
//!
//! Every authenticated call draws one token from a budget shared by all
//! replicas (GCRA, [`gcra`]): per user (tenant + `sub`), or per tenant for a
//! token acting for its whole tenant (`memory:service`: an agent service calling
//! on behalf of many end users; `memory:admin`: operators), see [`RateLimitSettings::budget_for`].
//!
//! The state of a budget is one number in a NATS key-value bucket ([`kv`]).
//! Replicas do not touch it per call: each leases a few tokens at a time (at
//! most `lease_per_mille` of the per-minute budget) with one compare-and-set,
//! serves calls from the lease in memory, and refills in the background before
//! it runs out ([`lease`], which also derives the error bound).
//!
//! When NATS fails, calls are let through and the failure logged (fail open):
//! the gateway cannot accept updates without NATS anyway, and refusing reads
//! because the limiter's store is down would turn a limiter outage into a full
//! outage.
//!
//! # Layout
//! - [`gcra`]: the arithmetic of a lease of `k` tokens on the stored TAT.
//! - [`lease`]: per-replica leases, refills, denials and fail-open; generic over
//!   the store ([`lease::SharedBudget`]).
//! - [`kv`]: the store in NATS KV.
//! - [`failed_auth`]: failed authentications per client IP, in process memory.

mod failed_auth;
pub mod gcra;
pub mod kv;
pub mod lease;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;

pub use self::failed_auth::FailedAuthLimiter;
use self::kv::KvBudget;
use self::lease::{Clock, LeasedLimiter};
use crate::auth::{Principal, Scope};

/// Largest lease, in thousandths of the budget (see [`lease`] for the error it allows).
const MAX_LEASE_PER_MILLE: u32 = 50;

/// `[rate_limit]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per minute per user, for tokens without a scope listed in `by_scope`.
    pub per_minute: u32,
    /// Per-scope budgets of per-user tokens (`"memory:read" = 600`); a token
    /// gets the largest of its scopes' budgets, or `per_minute`.
    pub by_scope: BTreeMap<String, u32>,
    /// Requests per minute of a tenant's tokens that act for the whole tenant
    /// (`memory:service`: agent services calling for many end users; `memory:admin`: operators),
    /// all such tokens of the tenant together. They do not use `per_minute`.
    pub per_tenant_per_minute: u32,
    /// Tokens a replica leases at once, in thousandths of the per-minute budget
    /// (at least one token). Bounds the error of the shared limit: see docs/security.md.
    pub lease_per_mille: u32,
    /// NATS KV bucket holding the shared state (created if absent).
    pub bucket: String,
    /// Calls with a missing or invalid token per client IP address per minute,
    /// per gateway replica; beyond it they get RESOURCE_EXHAUSTED (see [`FailedAuthLimiter`]).
    pub failed_auth_per_minute_per_ip: u32,
    /// Addresses or CIDR ranges of the proxies in front of the gateway (a load
    /// balancer, chat-memory-mcp) whose `x-forwarded-for` is believed when
    /// finding a failed call's client address. Empty: the connection's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_minute: 100,
            by_scope: BTreeMap::new(),
            per_tenant_per_minute: 6000,
            lease_per_mille: 20,
            bucket: "chat_memory_ratelimit".into(),
            failed_auth_per_minute_per_ip: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The budget a call draws on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The KV key of its shared state: the user's (or the tenant's), whatever
    /// the size. Budgets of different sizes share it: the state is a time
    /// (see [`gcra`]) that each call moves on by `60 s / per_minute` of its
    /// own budget, within one minute of now for every size, so a user's
    /// tokens of different scopes (`by_scope`) draw on one minute, and a
    /// changed setting goes on from the state the old one left.
    pub key: String,
    pub per_minute: u32,
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
        if self.per_tenant_per_minute == 0 {
            return Err(SettingsError::invalid(
                "rate_limit.per_tenant_per_minute",
                "must be at least 1",
            ));
        }
        if self.lease_per_mille == 0 || self.lease_per_mille > MAX_LEASE_PER_MILLE {
            return Err(SettingsError::invalid(
                "rate_limit.lease_per_mille",
                format!("must be 1..={MAX_LEASE_PER_MILLE}"),
            ));
        }
        if self.failed_auth_per_minute_per_ip == 0 {
            return Err(SettingsError::invalid(
                "rate_limit.failed_auth_per_minute_per_ip",
                "must be at least 1",
            ));
        }
        for (scope, limit) in &self.by_scope {
            if matches!(Scope::parse(scope), Some(Scope::Admin | Scope::Service)) {
                return Err(SettingsError::invalid(
                    "rate_limit.by_scope",
                    format!(
                        "{scope} tokens act for their tenant: set rate_limit.per_tenant_per_minute"
                    ),
                ));
            }
            if Scope::parse(scope).is_none() || *limit == 0 {
                return Err(SettingsError::invalid(
                    "rate_limit.by_scope",
                    format!("{scope:?}: must be a memory:* scope with a positive limit"),
                ));
            }
        }
        for proxy in &self.trusted_proxies {
            if failed_auth::parse_proxy(proxy).is_none() {
                return Err(SettingsError::invalid(
                    "rate_limit.trusted_proxies",
                    format!("{proxy:?}: must be an IP address or a CIDR range (10.0.0.0/8)"),
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

    /// The trusted proxies' ranges (entries [`Self::validate`] refused are left out).
    pub fn trusted_proxies(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| failed_auth::parse_proxy(p))
            .collect()
    }

    /// The per-minute budget of a per-user `principal`.
    pub fn limit_for(&self, principal: &Principal) -> u32 {
        principal
            .scopes
            .iter()
            .filter_map(|s| self.by_scope.get(s.as_str()).copied())
            .max()
            .unwrap_or(self.per_minute)
    }

    /// The budget `principal`'s calls draw on: its tenant's when it acts for the
    /// tenant, else its own user's.
    ///
    /// A tenant-acting token names no end user the gate could key on (the API
    /// has no such field, and the gate runs before the body is read); keying on
    /// a caller-chosen header would let it pick fresh budgets at will. So it gets
    /// one budget per tenant, sized for the tenant's service traffic, which
    /// neither the per-user limit throttles nor lets grow without bound.
    pub fn budget_for(&self, principal: &Principal) -> Budget {
        let tenant = hex(&principal.tenant);
        if principal.acts_for_tenant() {
            return Budget {
                key: format!("t.{tenant}"),
                per_minute: self.per_tenant_per_minute,
            };
        }
        Budget {
            key: format!("u.{tenant}.{}", hex(&principal.user)),
            per_minute: self.limit_for(principal),
        }
    }
}

/// Why the shared limiter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit bucket {bucket}: {reason}")]
pub struct LimiterError {
    pub bucket: String,
    pub reason: String,
}

/// The shared limiter of every authenticated call.
pub struct Limiters {
    settings: RateLimitSettings,
    leases: LeasedLimiter<KvBudget>,
}

impl Limiters {
    /// Opens (creating if needed, with `replicas` replicas) the KV bucket.
    ///
    /// # Errors
    /// [`LimiterError`] when JetStream refuses the bucket.
    pub async fn open(
        js: &jetstream::Context,
        settings: RateLimitSettings,
        replicas: usize,
    ) -> Result<Self, LimiterError> {
        let store = KvBudget::open(js, &settings.bucket, replicas).await?;
        let clock: Clock = Arc::new(epoch_nanos);
        let leases = LeasedLimiter::new(store, settings.lease_per_mille, clock);
        Ok(Self { settings, leases })
    }

    /// `Ok` when `principal` may make one more call; else how long to wait.
    ///
    /// # Errors
    /// The retry delay when the principal's budget is spent.
    pub async fn check(&self, principal: &Principal) -> Result<(), Duration> {
        let budget = self.settings.budget_for(principal);
        self.leases.check(&budget.key, budget.per_minute).await
    }
}

/// Wall-clock time since the UNIX epoch, which replicas agree on up to NTP skew.
fn epoch_nanos() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// Lower-case hex: KV keys allow only `[-/_=.A-Za-z0-9]`, user ids may hold anything.
fn hex(raw: &str) -> String {
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: &str, user: &str, scopes: &[Scope]) -> Principal {
        Principal {
            tenant: tenant.into(),
            user: user.into(),
            scopes: scopes.iter().copied().collect(),
        }
    }

    #[test]
    fn a_per_user_token_gets_the_largest_budget_of_its_scopes() {
        let settings = RateLimitSettings {
            by_scope: BTreeMap::from([("memory:write".to_owned(), 1000)]),
            ..RateLimitSettings::default()
        };
        assert_eq!(
            settings.limit_for(&principal("t", "u", &[Scope::Read])),
            100
        );
        assert_eq!(
            settings.limit_for(&principal("t", "u", &[Scope::Read, Scope::Write])),
            1000
        );
    }

    #[test]
    fn per_user_tokens_draw_on_their_own_users_budget() {
        let settings = RateLimitSettings::default();
        let alice = settings.budget_for(&principal("t", "alice", &[Scope::Read]));
        let bob = settings.budget_for(&principal("t", "bob", &[Scope::Read]));
        let other_tenant = settings.budget_for(&principal("t2", "alice", &[Scope::Read]));
        assert_eq!(alice.per_minute, 100);
        assert_ne!(alice.key, bob.key);
        assert_ne!(alice.key, other_tenant.key);
    }

    #[test]
    fn a_users_tokens_of_different_scopes_draw_on_one_key_with_their_own_sizes() {
        let settings = RateLimitSettings {
            by_scope: BTreeMap::from([("memory:read".to_owned(), 600)]),
            ..RateLimitSettings::default()
        };
        let reader = settings.budget_for(&principal("t", "alice", &[Scope::Read]));
        let writer = settings.budget_for(&principal("t", "alice", &[Scope::Write]));
        assert_eq!(reader.key, writer.key);
        assert_eq!((reader.per_minute, writer.per_minute), (600, 100));
        let changed =
            RateLimitSettings::default().budget_for(&principal("t", "alice", &[Scope::Read]));
        assert_eq!(changed.key, reader.key, "a changed size keeps the key");
    }

    #[test]
    fn tokens_acting_for_a_tenant_share_one_per_tenant_budget_apart_from_other_tenants() {
        let settings = RateLimitSettings {
            per_tenant_per_minute: 20_000,
            ..RateLimitSettings::default()
        };
        let agent = settings.budget_for(&principal("t", "agent-svc", &[Scope::Service]));
        let operator = settings.budget_for(&principal("t", "ops", &[Scope::Admin, Scope::Read]));
        let other_tenant = settings.budget_for(&principal("t2", "agent-svc", &[Scope::Service]));
        let end_user = settings.budget_for(&principal("t", "agent-svc", &[Scope::Read]));
        assert_eq!(agent.per_minute, 20_000);
        assert_eq!(agent.key, operator.key);
        assert_ne!(agent.key, other_tenant.key);
        assert_ne!(agent.key, end_user.key);
        assert_eq!(end_user.per_minute, 100);
    }

    #[test]
    fn budgets_are_refused_when_unusable() {
        let cases: [(&str, RateLimitSettings); 6] = [
            (
                "rate_limit.trusted_proxies",
                RateLimitSettings {
                    trusted_proxies: vec!["10.0.0.0/8".into(), "the-load-balancer".into()],
                    ..RateLimitSettings::default()
                },
            ),
            (
                "rate_limit.by_scope",
                RateLimitSettings {
                    by_scope: BTreeMap::from([("memory:admin".to_owned(), 1000)]),
                    ..RateLimitSettings::default()
                },
            ),
            (
                "rate_limit.by_scope",
                RateLimitSettings {
                    by_scope: BTreeMap::from([("memory:service".to_owned(), 1000)]),
                    ..RateLimitSettings::default()
                },
            ),
            (
                "rate_limit.per_tenant_per_minute",
                RateLimitSettings {
                    per_tenant_per_minute: 0,
                    ..RateLimitSettings::default()
                },
            ),
            (
                "rate_limit.lease_per_mille",
                RateLimitSettings {
                    lease_per_mille: 0,
                    ..RateLimitSettings::default()
                },
            ),
            (
                "rate_limit.lease_per_mille",
                RateLimitSettings {
                    lease_per_mille: MAX_LEASE_PER_MILLE + 1,
                    ..RateLimitSettings::default()
                },
            ),
        ];
        for (field, settings) in cases {
            let error = settings.validate().expect_err(field).to_string();
            assert!(error.contains(field), "{error} does not name {field}");
        }
        RateLimitSettings::default()
            .validate()
            .expect("the defaults are valid");
    }

    #[test]
    fn keys_are_valid_kv_tokens() {
        assert_eq!(hex("a/b c"), "612f622063");
        let key = RateLimitSettings::default()
            .budget_for(&principal("t", "a/b c", &[Scope::Read]))
            .key;
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
            "{key}"
        );
    }
}
