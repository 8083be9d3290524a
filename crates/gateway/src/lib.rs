//! The gateway: chat-memory's public gRPC API (`chatmemory.v1.MemoryService`).
//!
//! It parses and validates requests, publishes update jobs to JetStream (an update
//! is accepted once JetStream acknowledges it), and forwards reads, job status and
//! deletes to memory-store. It never touches Postgres.
//!
//! # Layout
//! - [`settings`]: typed settings of the gateway.
//! - [`auth`]: bearer JWTs -> [`auth::Principal`] (verification, JWKS reloads).
//! - [`gate`]: the layer in front of every RPC (token, scope, rate limit, audit
//!   of refusals), built on `auth`, `ratelimit` and `audit`.
//! - [`ratelimit`]: GCRA budgets per user (per tenant for tokens acting for it),
//!   shared by replicas through NATS KV and leased to each replica in blocks.
//! - [`accept`]: accepting an update (backpressure, ownership claim, job id,
//!   publish, registration, deduplication), apart from gRPC.
//! - [`backpressure`]: refuses updates (RESOURCE_EXHAUSTED) while the queue is too deep.
//! - [`owners`]: chats whose owner was confirmed recently (skips `ClaimChat`).
//! - [`store`]: memory-store's calls on a caller's behalf, typed (requests from
//!   domain values, errors classified once).
//! - [`audit`]: one audit row per call, written through memory-store, or through
//!   the JetStream audit outbox while memory-store is down ([`audit::relay`]);
//!   which calls are refused rather than answered unaudited.
//! - [`validation`]: request -> domain types (`ChatId`, `UpdateCommand`), with
//!   the limits, NFC normalisation and the tenant namespace of chat ids.
//! - [`cache`]: memories this gateway read, dropped on every change event of
//!   their chat (versioned, bounded, with a TTL as the last bound).
//! - [`changes`]: every chat's change events (core NATS), handed to the
//!   waits and streams of their chat; the events the gateway itself announces.
//! - [`reads`]: memory-store reads, and reads that wait for a version
//!   (read-your-writes) without polling.
//! - [`watch`]: WatchMemory streams (bounded, audited at open and end).
//! - [`service`]: the gRPC handlers: convert, call the domain on the caller's
//!   behalf, map the error, audit.
//! - [`error`]: `GatewayError` and its one mapping to `tonic::Status`.
//! - [`metrics`]: API request and retrieval metrics (a layer outside the gate).
//! - [`run`]: wires NATS, the store client, the gate, health and reflection, and serves.
//!
//! See `docs/security.md` for the security model.

pub mod accept;
pub mod audit;
pub mod auth;
pub mod backpressure;
pub mod cache;
pub mod changes;
pub mod error;
pub mod gate;
pub mod metrics;
pub mod owners;
pub mod ratelimit;
pub mod reads;
pub mod service;
pub mod settings;
pub mod store;
pub mod validation;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chat_memory_proto::{
    store::memory_store_client::MemoryStoreClient, v1::memory_service_server::MemoryServiceServer,
};
use job_queue::{JobPublisher, QueueError};
use service_kit::service_auth::AttachToken;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};

use crate::audit::AuditSink;
use crate::auth::Verifier;
pub use crate::error::GatewayError;
use crate::gate::{Gate, GateLayer};
use crate::ratelimit::{LimiterError, Limiters};
use crate::service::MemoryApi;
pub use crate::settings::Settings;

/// memory-store's client, presenting the service token on every call.
pub type StoreClient = MemoryStoreClient<InterceptedService<Channel, AttachToken>>;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Settings(#[from] service_kit::settings::SettingsError),
    #[error(transparent)]
    RateLimiter(#[from] LimiterError),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("subscribing to change events: {0}")]
    Changes(String),
}

/// Connects to NATS (failing fast if it is down), makes sure the jobs stream
/// exists, and serves the public API on `listener` until `shutdown` resolves.
///
/// memory-store is connected lazily: while it is down, reads answer `UNAVAILABLE`.
///
/// # Errors
/// [`StartError`] when NATS is unreachable, the stream cannot be created, or serving fails.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (connection_events, connection) = tokio::sync::mpsc::unbounded_channel();
    let js = job_queue::connect_reporting(&settings.nats, "chat-memory-gateway", connection_events)
        .await?;
    job_queue::ensure_stream(&js, &settings.nats).await?;
    job_queue::audit_outbox::ensure_outbox_stream(&js, &settings.nats).await?;
    let mut publisher = JobPublisher::new(js.clone(), settings.nats.clone());
    if settings.backpressure.enabled {
        publisher = publisher.with_chat_limit(settings.backpressure.max_chat_jobs);
    }

    let store = MemoryStoreClient::with_interceptor(
        settings.store.lazy_channel()?,
        settings.store.token_interceptor()?,
    );
    let verifier = Arc::new(Verifier::new(&settings.auth)?);
    let limiters = Limiters::open(&js, settings.rate_limit.clone(), settings.nats.replicas).await?;
    let audit = AuditSink::new(
        store.clone(),
        js.clone(),
        settings.nats.clone(),
        &settings.audit,
    );
    let audit_relay = tokio::spawn(audit::relay::run(
        js.clone(),
        settings.nats.clone(),
        store.clone(),
    ));
    let gate = Arc::new(Gate {
        verifier: verifier.clone(),
        limiters,
        failed_auth: ratelimit::FailedAuthLimiter::new(
            settings.rate_limit.failed_auth_per_minute_per_ip,
            settings.rate_limit.trusted_proxies(),
        ),
        audit: audit.clone(),
    });
    let jwks_watch = tokio::spawn(auth::watch_jwks(
        verifier,
        std::time::Duration::from_secs(settings.auth.jwks_reload_secs),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<MemoryServiceServer<MemoryApi>>()
        .await;
    let health_watch = tokio::spawn(watch_nats_health(js.client(), health_reporter));

    // Only what this listener serves is advertised: memory-store's internal
    // API shares the descriptor set but is not served here.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(chat_memory_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("chatmemory.v1.MemoryService")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let backpressure = Arc::new(backpressure::Backpressure::new(
        js.clone(),
        settings.nats.clone(),
        settings.backpressure.clone(),
    ));
    let cache = Arc::new(cache::MemoryCache::new(&settings.read_cache));
    let owners = Arc::new(owners::OwnerCache::new(&settings.ownership_cache));
    let feed = changes::ChangeFeed::new(
        settings.watch.buffer,
        Some(cache.clone()),
        Some(owners.clone()),
    );
    let connection_watch = tokio::spawn(changes::follow_connection(
        connection,
        cache.clone(),
        owners.clone(),
    ));
    let change_feed = tokio::spawn(
        feed.subscribe_all(&js.client(), &settings.nats.subject_prefix)
            .await
            .map_err(|e| StartError::Changes(e.to_string()))?,
    );
    let reads = reads::Reads::new(
        store.clone(),
        &service_kit::gather::BatchSettings {
            max_in_flight: settings.read_cache.store_calls_in_flight,
            linger_ms: 0,
            ..settings.store_batches.clone()
        },
        feed,
        cache,
    );
    let watches = watch::Watches::new(
        reads.clone(),
        audit.clone(),
        settings.limits.clone(),
        settings.watch.clone(),
    );
    let shutdown = {
        let watches = watches.clone();
        async move {
            shutdown.await;
            watches.shut_down();
        }
    };
    let changes = changes::ChangeAnnouncer::new(
        job_queue::changes::Publisher::new(js.client(), settings.nats.subject_prefix.clone()),
        std::time::Duration::from_millis(settings.nats.publish_timeout_ms),
    );
    let store = store::Store::new(store, &settings.store_batches);
    let api = MemoryApi {
        accept: accept::Acceptor {
            publisher: publisher.clone(),
            store: store.clone(),
            backpressure,
            owners: owners.clone(),
            changes: changes.clone(),
        },
        publisher,
        store,
        limits: settings.limits.clone(),
        audit,
        owners,
        reads,
        watches,
        changes,
    };
    let max_decode = settings.limits.max_request_bytes + 64 * 1024;
    let mut builder = Server::builder();
    if let Some(tls) = settings.tls.server_config()? {
        builder = builder.tls_config(tls)?;
    }
    tracing::info!(addr = ?listener.local_addr().ok(), tls = settings.tls.enabled(), "gateway serving");
    let served = builder
        .trace_fn(service_kit::telemetry::grpc::server_span)
        .layer(metrics::ApiMetricsLayer)
        .layer(GateLayer::new(gate))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(MemoryServiceServer::new(api).max_decoding_message_size(max_decode))
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: Nagle plus delayed ACKs would add up to 40 ms per call.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    health_watch.abort();
    jwks_watch.abort();
    audit_relay.abort();
    change_feed.abort();
    connection_watch.abort();
    served?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Reports NOT_SERVING while the NATS connection is down, so a load balancer
/// sends updates to a gateway that can accept them.
async fn watch_nats_health(
    client: async_nats::Client,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut serving = true;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if connected != serving {
            serving = connected;
            if connected {
                tracing::info!("NATS connection restored");
                reporter
                    .set_serving::<MemoryServiceServer<MemoryApi>>()
                    .await;
            } else {
                tracing::warn!("NATS connection lost");
                reporter
                    .set_not_serving::<MemoryServiceServer<MemoryApi>>()
                    .await;
            }
        }
    }
}
