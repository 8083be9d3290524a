//! memory-store: the only component that touches Postgres. It keeps each chat's
//! memory, the lifecycle of update jobs, and tombstones of deleted chats, and
//! applies every job exactly once, in acceptance order per chat.
//!
//! # Layout
//! - [`run`]: connect, check the schema, serve gRPC and health until shutdown.
//! - [`settings`]: typed settings (`listen_addr`, `database`, `telemetry`).
//! - [`error`]: [`StoreError`] and its one mapping to `tonic::Status`.
//! - `grpc`: the `MemoryStore` adapter; converts requests and nothing else.
//! - [`jobs`], [`memories`]: the transport-free query layer, one transaction per
//!   operation, each serialised per chat by an advisory lock.
//! - [`domain`]: parsed inputs and operation results.
//! - `db`: pool set-up, the schema check, the per-chat lock.
//! - `entity`: sea-orm entities of `memories`, `jobs`, `chat_tombstones`.
//! - `health`: `grpc.health.v1` driven by a periodic database ping.
//!
//! # Exactly once
//! The worker calls `BeginJob`, computes, then `CommitJob`. Both re-check, under
//! the chat's lock: the chat's tombstone (deleted after acceptance), the job's
//! state (already applied or failed), the chat's last applied stream sequence
//! (a later job already applied) and, for the commit, the memory version the
//! worker built on. The memory row and the job's `succeeded` state are written
//! in one transaction, so a redelivery after a crash finds both written or
//! neither, never the memory without the job (which would apply it twice).

use std::future::Future;

use chat_memory_proto::store::memory_store_server::MemoryStoreServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

mod db;
pub mod domain;
mod entity;
pub mod error;
mod grpc;
mod health;
pub mod jobs;
pub mod memories;
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

    tracing::info!(addr = ?listener.local_addr().ok(), "memory-store serving");
    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(MemoryStoreServer::new(grpc::StoreService::new(db.clone())))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;

    watcher.abort();
    if let Err(e) = db.close().await {
        tracing::warn!(error = %error::cause_chain(&e), "closing the database pool failed");
    }
    tracing::info!("memory-store stopped");
    served.map_err(StoreError::from)
}
