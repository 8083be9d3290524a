//! The one error type of memory-store and its one mapping to `tonic::Status`.
//!
//! Expected failures (bad input, unknown ids) carry a message meant for the
//! caller. Unexpected ones (database down, database bugs) are logged with their
//! cause chain here and reach the caller only as a generic message.

use sea_orm::{DbErr, RuntimeErr, sqlx};
use service_kit::entry::cause_chain;
use tonic::{Code, Status};

/// Everything that can go wrong in memory-store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A request field is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidArgument {
        field: std::borrow::Cow<'static, str>,
        reason: String,
    },
    /// The request conflicts with what is stored (an idempotency key already
    /// used for a different request).
    #[error("{field}: {reason}")]
    Conflict { field: &'static str, reason: String },
    /// The requested record does not exist. The message names only the kind of record.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Like [`StoreError::NotFound`] (same answer to the caller), for a chat
    /// that has no memory at all, whoever asks: the gateway may cache that.
    #[error("{0} not found")]
    Absent(&'static str),
    /// Postgres cannot be reached, the pool is exhausted, or a connection broke.
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] DbErr),
    /// The database exists but migrations are pending: memory-store never migrates itself.
    #[error(
        "database schema is not migrated (pending: {}); run `chat-memory-migrate up` first",
        pending.join(", ")
    )]
    SchemaNotMigrated { pending: Vec<String> },
    /// Any other database error: a bug or a broken invariant.
    #[error("database error")]
    Database(#[source] DbErr),
    /// A stored row holds a value the code does not understand.
    #[error("corrupt row in {table}: {reason}")]
    CorruptRow { table: &'static str, reason: String },
    /// The gRPC server failed (bind, accept, HTTP/2).
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
    /// Settings that only fail when used (an unreadable TLS file).
    #[error(transparent)]
    Settings(#[from] service_kit::settings::SettingsError),
}

impl StoreError {
    /// An invalid request field.
    pub fn invalid(
        field: impl Into<std::borrow::Cow<'static, str>>,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            Self::DatabaseUnavailable(err)
        } else {
            Self::Database(err)
        }
    }
}

/// Whether a database error means "Postgres is not reachable right now" (worth
/// retrying elsewhere or later) rather than "this statement is wrong".
fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception), 57P0x (server shutting
                // down), 53300 (too many connections).
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08") || code.starts_with("57P0") || code == "53300"
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::InvalidArgument { .. } => Status::invalid_argument(err.to_string()),
            StoreError::Conflict { .. } => Status::failed_precondition(err.to_string()),
            StoreError::NotFound(_) => Status::not_found(err.to_string()),
            StoreError::Absent(_) => {
                let mut status = Status::not_found(err.to_string());
                status.metadata_mut().insert(
                    chat_memory_proto::store::ABSENT_METADATA,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                status
            }
            StoreError::DatabaseUnavailable(_) => {
                tracing::warn!(error = %cause_chain(&err), "database unavailable");
                Status::new(Code::Unavailable, "database unavailable, retry later")
            }
            StoreError::SchemaNotMigrated { .. } => {
                tracing::error!(error = %err, "schema not migrated");
                Status::new(Code::Unavailable, "storage not ready, retry later")
            }
            StoreError::Database(_)
            | StoreError::CorruptRow { .. }
            | StoreError::Serve(_)
            | StoreError::Settings(_) => {
                tracing::error!(error = %cause_chain(&err), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_arguments_name_the_field() {
        let status = Status::from(StoreError::invalid("chat_id", "must not be empty"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "chat_id: must not be empty");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = StoreError::from(DbErr::Custom("secret table detail".into()));
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        let err = StoreError::from(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout));
        assert!(matches!(err, StoreError::DatabaseUnavailable(_)));
        assert_eq!(Status::from(err).code(), Code::Unavailable);
    }
}
