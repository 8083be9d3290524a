//! memory-store: the only component that touches Postgres. It keeps each chat's
//! memory, the lifecycle of update jobs, and tombstones of deleted chats, and
//! applies every job exactly once, in acceptance order per chat.
//!
//! # Layout
//! - [`run`]: connect, check the schema, serve gRPC and health until shutdown.
//! - [`settings`]: typed settings (`listen_addr`, `database`, `telemetry`).
//! - [`error`]: [`StoreError`] and its one mapping to `tonic::Status`.
//!
//! Imports run one way: `domain` → `db` → `rows` → the query modules →
//! `grpc` → [`run`].
//!
//! - [`domain`]: parsed inputs, the caller's [`domain::Access`], and operation
//!   results; imports nothing of this crate but [`error`].
//! - `entity`: sea-orm entities of `memories`, `jobs`, `chat_tombstones`,
//!   `audit_log`, `chat_owners`.
//! - `db`: pool set-up, the schema check, the per-chat lock and the
//!   transaction that holds it, and the timer of the background passes.
//! - `rows`: row mappers (a memory's columns to content, the answers of the
//!   plpgsql job functions to domain results).
//! - Queries, transport-free, each write serialised per chat by an advisory
//!   lock: [`access`] (tenant namespaces and chat owners; a chat the caller
//!   may not see is NOT_FOUND, never PERMISSION_DENIED), [`jobs`] (the job
//!   lifecycle), [`memories`] (commit, read, delete), [`audit`] (the
//!   append-only log), [`audit_batch`] (group commit of the gateway's audit
//!   rows), [`expiry`] (the sweep that purges inactive chats), [`retention`]
//!   (audit days dropped, ended job records purged). The hot writes
//!   (RecordAccepted, ClaimChat, BeginJobs, CommitJobs) are one round trip
//!   each: plpgsql functions of migrations m20261206_000001/000002.
//! - `grpc`: the `MemoryStore` adapter; converts requests and nothing else.
//! - `health`: `grpc.health.v1` driven by a periodic database ping.

//! # Security
//! Every RPC except health requires the service token (`service_token`,
//! compared in constant time by `service_kit::service_auth`); the listener
//! serves TLS (and mTLS) when `tls` is configured.
//!
//! # Exactly once
//! The worker calls `BeginJobs` for a batch of one chat's jobs, computes, then
//! `CommitJobs`. Both re-check, under the chat's lock: the chat's tombstone
//! (deleted after acceptance), each job's state (already applied or failed),
//! the chat's last applied stream sequence (a later job already applied) and,
//! for the commit, the memory version the worker built on. The memory row and
//! every job's `succeeded` state are written in one transaction, so a
//! redelivery after a crash finds them all written or none, never the memory
//! without its jobs (which would apply them twice).

use std::future::Future;

use chat_memory_proto::store::memory_store_server::MemoryStoreServer;
use service_kit::service_auth::{AcceptedTokens, ServiceTokenLayer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

pub mod access;
pub mod audit;
pub mod audit_batch;
mod db;
pub mod domain;
mod entity;
pub mod error;
pub mod expiry;
mod grpc;
mod health;
pub mod jobs;
pub mod memories;
pub mod retention;
mod rows;
pub mod settings;

pub use error::StoreError;
pub use settings::Settings;

/// Serves memory-store on `listener` until `shutdown` resolves.
///
/// # Errors
/// - [`StoreError::DatabaseUnavailable`] when Postgres cannot be reached at start;
/// - [`StoreError::SchemaNotMigrated`] when migrations are pending (run
///   `chat-memory-migrate up`; memory-store never migrates by itself);
/// - [`StoreError::Serve`] when the gRPC server fails.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    let db = db::connect(&settings.database).await?;
    db::ensure_migrated(&db).await?;

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::report(&reporter, ServingStatus::Serving).await;
    let watcher = tokio::spawn(health::watch_database(db.clone(), reporter));

    let sweep_cancel = CancellationToken::new();
    let sweeper = tokio::spawn(expiry::run(
        db.clone(),
        settings.expiry.clone(),
        sweep_cancel.clone(),
    ));

    let retention = tokio::spawn(retention::run(
        db.clone(),
        settings.retention.clone(),
        sweep_cancel.clone(),
    ));

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = settings.tls.server_config()? {
        builder = builder.tls_config(tls)?;
    }
    tracing::info!(addr = ?listener.local_addr().ok(), tls = settings.tls.enabled(), "memory-store serving");
    let served = builder
        .trace_fn(service_kit::telemetry::grpc::server_span)
        .layer(ServiceTokenLayer::new(AcceptedTokens::new(
            settings.service_token.as_ref(),
            settings.service_token_previous.as_ref(),
        )))
        .add_service(health_service)
        .add_service(MemoryStoreServer::new(grpc::StoreService::new(
            db.clone(),
            &settings.expiry,
        )))
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: Nagle plus delayed ACKs would add up to 40 ms per call.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;

    sweep_cancel.cancel();
    let _ = sweeper.await;
    let _ = retention.await;
    watcher.abort();
    if let Err(e) = db.close().await {
        tracing::warn!(error = %service_kit::entry::cause_chain(&e), "closing the database pool failed");
    }
    tracing::info!("memory-store stopped");
    served.map_err(StoreError::from)
}
