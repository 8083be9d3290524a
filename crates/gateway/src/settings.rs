//! Gateway settings: `[nats]`, `[store]`, `[limits]`, `[auth]`, `[rate_limit]`, `[backpressure]`,
//! `[ownership_cache]`,
//! `[tls]`, `[telemetry]` and the listen address.

use std::net::SocketAddr;

use job_queue::QueueSettings;
use serde::{Deserialize, Serialize};
use service_kit::grpc_client::ClientSettings;
use service_kit::settings::{SettingsError, Validate};
use service_kit::telemetry::TelemetrySettings;
use service_kit::tls::ServerTls;

use crate::auth::AuthSettings;
use crate::backpressure::BackpressureSettings;
use crate::owners::OwnershipCacheSettings;
use crate::ratelimit::RateLimitSettings;
use crate::validation::Limits;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address of the public gRPC listener.
    pub listen_addr: String,
    pub nats: QueueSettings,
    /// How to reach memory-store.
    pub store: ClientSettings,
    pub limits: Limits,
    /// How bearer tokens are verified.
    pub auth: AuthSettings,
    /// Per-user and per-tenant request budgets, shared by all replicas through
    /// NATS KV and leased to each in blocks.
    pub rate_limit: RateLimitSettings,
    /// Refusing updates while the queue is too deep.
    pub backpressure: BackpressureSettings,
    /// Recently confirmed chat owners (skips a memory-store round trip per update).
    pub ownership_cache: OwnershipCacheSettings,
    /// Ownership claims and registrations of accepted jobs, gathered into batches.
    pub store_batches: service_kit::gather::BatchSettings,
    /// WatchMemory streams.
    pub watch: crate::watch::WatchSettings,
    /// Where audit rows are made durable before a call answers.
    pub audit: crate::audit::AuditSettings,
    /// Memories cached for plain reads.
    pub read_cache: crate::cache::ReadCacheSettings,
    /// TLS of the public listener.
    pub tls: ServerTls,
    /// The tokio runtime (worker threads).
    pub runtime: service_kit::entry::RuntimeSettings,
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:50051".into(),
            nats: QueueSettings::default(),
            store: ClientSettings::new("http://127.0.0.1:50052"),
            limits: Limits::default(),
            auth: AuthSettings::default(),
            rate_limit: RateLimitSettings::default(),
            backpressure: BackpressureSettings::default(),
            ownership_cache: OwnershipCacheSettings::default(),
            store_batches: service_kit::gather::BatchSettings::default(),
            watch: crate::watch::WatchSettings::default(),
            audit: crate::audit::AuditSettings::default(),
            read_cache: crate::cache::ReadCacheSettings::default(),
            tls: ServerTls::default(),
            runtime: service_kit::entry::RuntimeSettings::default(),
            telemetry: TelemetrySettings::default().with_metrics_addr("127.0.0.1:9101"),
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.runtime.validate()?;
        self.listen_addr
            .parse::<SocketAddr>()
            .map_err(|e| SettingsError::invalid("listen_addr", e.to_string()))?;
        self.nats.validate()?;
        self.store.validate("store")?;
        self.limits.validate()?;
        self.auth.validate()?;
        self.rate_limit.validate()?;
        self.backpressure.validate()?;
        self.ownership_cache.validate()?;
        self.store_batches.validate()?;
        self.watch.validate()?;
        self.read_cache.validate()?;
        self.tls.validate("tls")
    }
}

service_kit::service_settings!(Settings);
