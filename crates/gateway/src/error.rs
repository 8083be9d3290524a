//! The gateway's errors and their one mapping to gRPC status codes.
//!
//! Expected failures (bad input, not found, full queue) carry a precise message.
//! Unexpected ones (a dependency down, an internal fault) are logged with their
//! cause here and reach the caller as a short, content-free message.

use job_queue::QueueError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::validation::FieldViolation;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No, or no acceptable, bearer token.
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// A valid token without the scope the RPC needs (names the scope).
    #[error("this call needs the {0} scope")]
    PermissionDenied(&'static str),
    /// A method the gateway does not serve (its path).
    #[error("{0} is not served here")]
    Unimplemented(String),
    /// The caller's per-minute budget is spent.
    #[error("rate limit exceeded")]
    RateLimited { retry_after: std::time::Duration },
    #[error("{0}")]
    Invalid(#[from] FieldViolation),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Backpressure: too many jobs are waiting (see `backpressure`).
    #[error("too many updates are waiting ({what}), retry later")]
    Backlogged {
        what: String,
        retry_after: std::time::Duration,
    },
    #[error("the update queue is full, retry later")]
    QueueFull(String),
    /// The gateway is shutting down and opens no new streams.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// This gateway serves its `watch.max_streams` streams already.
    #[error("too many watch streams on this gateway ({0})")]
    TooManyWatches(usize),
    #[error("the update job is too large for the queue")]
    JobTooLarge,
    #[error("the update queue is unavailable")]
    QueueUnavailable(#[source] QueueError),
    #[error("memory-store is unavailable")]
    StoreUnavailable(#[source] Status),
    #[error("memory-store failed")]
    Store(#[source] Status),
    /// A read whose audit row neither memory-store nor the outbox took: the
    /// memory is not handed out unaudited.
    #[error("the read could not be audited")]
    Unaudited(#[source] crate::audit::AuditError),
}

impl GatewayError {
    /// Classifies a failed memory-store call. `what` names the entity for NOT_FOUND.
    pub fn from_store(status: Status, what: &'static str) -> Self {
        match status.code() {
            Code::NotFound => Self::NotFound(what),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted => Self::StoreUnavailable(status),
            Code::Ok
            | Code::Unknown
            | Code::InvalidArgument
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated => Self::Store(status),
        }
    }

    /// Classifies a failed publish.
    pub fn from_queue(error: QueueError) -> Self {
        match error {
            QueueError::Full(detail) => Self::QueueFull(detail),
            e @ QueueError::ChatBacklogged { .. } => Self::QueueFull(e.to_string()),
            QueueError::TooLarge { .. } => Self::JobTooLarge,
            e @ (QueueError::Connect { .. }
            | QueueError::ConnectTimeout(_)
            | QueueError::Stream { .. }
            | QueueError::Publish(_)) => Self::QueueUnavailable(e),
        }
    }
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::Unauthenticated(reason) => {
                Status::unauthenticated(format!("authentication failed: {reason}"))
            }
            GatewayError::PermissionDenied(scope) => {
                Status::permission_denied(format!("this call needs the {scope} scope"))
            }
            GatewayError::Unimplemented(path) => {
                Status::unimplemented(format!("{path} is not served by the gateway"))
            }
            GatewayError::RateLimited { retry_after } => {
                // Whole seconds, rounded up, as HTTP's Retry-After; the exact
                // delay also travels as google.rpc.RetryInfo.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let mut status = Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("rate limit exceeded, retry in {secs} s"),
                    ErrorDetails::with_retry_info(Some(retry_after)),
                );
                if let Ok(value) = secs.to_string().parse() {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            GatewayError::Invalid(v) => Status::with_error_details(
                Code::InvalidArgument,
                v.to_string(),
                ErrorDetails::with_bad_request_violation(v.field, v.reason),
            ),
            GatewayError::NotFound(what) => Status::not_found(format!("{what} not found")),
            GatewayError::Backlogged { what, retry_after } => {
                tracing::warn!(backlog = %what, "update refused: backpressure");
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let mut status = Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("too many updates are waiting, retry in {secs} s"),
                    ErrorDetails::with_retry_info(Some(retry_after)),
                );
                if let Ok(value) = secs.to_string().parse() {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            GatewayError::ShuttingDown => {
                Status::unavailable("this gateway is shutting down; retry on another replica")
            }
            GatewayError::TooManyWatches(limit) => {
                tracing::warn!(limit, "watch refused: watch.max_streams reached");
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!(
                        "this gateway serves {limit} watch streams already; retry later or on another replica"
                    ),
                    ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1))),
                )
            }
            GatewayError::QueueFull(detail) => {
                tracing::warn!(detail = %detail, "update rejected: queue full");
                Status::resource_exhausted("the update queue is full, retry later")
            }
            GatewayError::JobTooLarge => {
                Status::invalid_argument("messages: the update is too large for the queue")
            }
            GatewayError::QueueUnavailable(e) => {
                tracing::error!(error = %e, "update queue unavailable");
                Status::unavailable("the update queue is unavailable, retry later")
            }
            GatewayError::StoreUnavailable(s) => {
                tracing::error!(code = ?s.code(), error = %s.message(), "memory-store unavailable");
                Status::unavailable("memory storage is unavailable, retry later")
            }
            GatewayError::Store(s) => {
                tracing::error!(code = ?s.code(), error = %s.message(), "memory-store call failed");
                Status::internal("internal error")
            }
            GatewayError::Unaudited(e) => {
                tracing::error!(error = %e, "read refused: it could not be audited");
                Status::unavailable("the audit log is unavailable, retry later")
            }
        }
    }
}
