//! Security of the public and internal APIs on the real stack: every RPC needs
//! credentials, tenants and users are isolated, scopes are enforced, rate limits
//! hold across gateway replicas, every call leaves one audit row (even when
//! memory-store is down and the gateway dies), inactive chats expire, and the
//! services talk over TLS/mTLS with tokens verified from a JWKS.
//!
//! - [`authentication`]: the auth matrix of every RPC of every service, scopes.
//! - [`isolation`]: another tenant or user cannot touch or see a chat.
//! - [`rate_limits`]: one per-user limit across two gateways; failed authentications per address.
//! - [`audit`]: one row per call without content, the audit outbox, expiry.
//! - [`transport`]: TLS, mTLS, JWKS tokens; the agent's service token.

mod audit;
mod authentication;
mod isolation;
mod rate_limits;
mod transport;

use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(30);
const RW: &[&str] = &["memory:read", "memory:write"];
