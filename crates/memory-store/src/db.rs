//! Connecting to Postgres and the helpers every write transaction shares.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, Statement, TransactionTrait,
};

use crate::{
    domain::{ChatId, StreamSeq},
    entity::chat_tombstones,
    error::StoreError,
    settings::DatabaseSettings,
};

/// Opens the pool and proves the server answers.
///
/// # Errors
/// [`StoreError::DatabaseUnavailable`] when Postgres cannot be reached within
/// the connect and acquire timeouts (memory-store must not start half-alive).
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, StoreError> {
    let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
    let acquire_timeout = Duration::from_millis(settings.acquire_timeout_ms);
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .connect_timeout(connect_timeout)
        .acquire_timeout(acquire_timeout)
        // No ping before every statement: a broken connection fails its statement
        // (UNAVAILABLE, retried by the caller) and is replaced by the pool.
        .test_before_acquire(false)
        .sqlx_logging(false);
    // sqlx retries refused connections until its own deadline; bound the whole
    // start-up so an unreachable server fails fast with one clear error.
    let deadline = connect_timeout + acquire_timeout;
    let db = tokio::time::timeout(deadline, Database::connect(options))
        .await
        .map_err(|_| {
            StoreError::DatabaseUnavailable(DbErr::Custom(format!(
                "no connection to Postgres within {} ms",
                deadline.as_millis()
            )))
        })?
        .map_err(StoreError::DatabaseUnavailable)?;
    db.ping().await.map_err(StoreError::DatabaseUnavailable)?;
    Ok(db)
}

/// Refuses to serve on a schema that is behind this binary.
///
/// Read-only: it never creates the migrations table, so it works for a role
/// without DDL rights and never races the migration Job.
///
/// # Errors
/// [`StoreError::SchemaNotMigrated`] listing the pending migrations.
pub async fn ensure_migrated(db: &DatabaseConnection) -> Result<(), StoreError> {
    let pending: Vec<String> = Migrator::get_pending_migrations_read_only(db)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaNotMigrated { pending })
    }
}

/// Opens a transaction holding the chat's write lock.
pub async fn begin_chat(
    db: &DatabaseConnection,
    chat_id: &ChatId,
) -> Result<DatabaseTransaction, StoreError> {
    let txn = db.begin().await?;
    lock_chat(&txn, chat_id).await?;
    Ok(txn)
}

/// Serialises every write of one chat: held until the transaction ends.
///
/// All checks (tombstone, applied sequence, version) and the writes that follow
/// run under this lock, so two deliveries of the same chat cannot interleave.
pub async fn lock_chat(txn: &DatabaseTransaction, chat_id: &ChatId) -> Result<(), StoreError> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        [chat_id.as_str().into()],
    ))
    .await?;
    Ok(())
}

/// Whether the chat was deleted after the job at `seq` was accepted.
pub async fn deleted_through(
    txn: &DatabaseTransaction,
    chat_id: &ChatId,
    seq: StreamSeq,
) -> Result<bool, StoreError> {
    let tombstone = chat_tombstones::Entity::find_by_id(chat_id.as_str())
        .one(txn)
        .await?;
    Ok(tombstone.is_some_and(|t| t.deleted_through_seq >= seq.get()))
}

/// The client span of one database operation (one transaction), per the
/// OpenTelemetry database conventions. Statements are not recorded: they are
/// fixed by the code, and their parameters may hold message content.
pub fn span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "postgres",
        otel.name = %format!("{operation} postgresql"),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.operation.batch.size = tracing::field::Empty,
    )
}

/// Runs `pass` at once, then every `interval`, until `cancel` fires: the
/// background passes (expiry, retention). A pass that overruns delays the
/// next one instead of bunching them up; a pass in progress is not cut short.
pub async fn every<F, Fut>(
    interval: Duration,
    cancel: &tokio_util::sync::CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        pass().await;
    }
}
