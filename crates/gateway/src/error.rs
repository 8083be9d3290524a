//! The gateway's errors and their one mapping to gRPC status codes.
//!
//! Expected failures (bad input, not found, full queue) carry a precise message.
//! Unexpected ones (a dependency down, an internal fault) are logged with their
//! cause here and reach the caller as a short, content-free message.

use chat_memory_proto::v1::ERROR_DOMAIN;
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
    /// The caller's address failed authentication too often.
    #[error("too many failed authentications")]
    AuthFailuresLimited { retry_after: std::time::Duration },
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
    /// This chat has as many unfinished jobs as the queue takes for one chat.
    #[error("this chat has too many updates waiting, retry later")]
    ChatBacklogged(String),
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
    /// A repeat of a keyed update whose first request could not be compared
    /// with it: the first has left the queue and memory-store is unavailable.
    /// Answering "deduplicated" unchecked could drop other messages silently.
    #[error("the idempotency key's first request cannot be compared now")]
    UnverifiedRepeat(#[source] Status),
    /// A deletion could not be announced to every gateway before it is made
    /// (NATS unreachable, or no answer in time): it is not made.
    #[error("the deletion cannot be announced: {0}")]
    ChangesUnavailable(String),
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
            e @ QueueError::ChatBacklogged { .. } => Self::ChatBacklogged(e.to_string()),
            QueueError::TooLarge { .. } => Self::JobTooLarge,
            e @ (QueueError::Connect { .. }
            | QueueError::ConnectTimeout(_)
            | QueueError::Stream { .. }
            | QueueError::Publish(_)) => Self::QueueUnavailable(e),
        }
    }
}

/// Why a call was refused with RESOURCE_EXHAUSTED, machine-readable: the
/// `reason` of the `google.rpc.ErrorInfo` detail beside `RetryInfo`
/// (README, "Errors"). A client tells "slow down" from "this chat is
/// backlogged" from "read faster" without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The caller's (or tenant's) per-minute budget is spent.
    RateLimited,
    /// Too many failed authentications from the caller's address.
    AuthFailuresLimited,
    /// Too many updates wait across the queue (backpressure).
    UpdatesBacklogged,
    /// This chat has as many unfinished updates as one chat may have.
    ChatBacklogged,
    /// The update queue (the JetStream stream) is at its limits.
    QueueFull,
    /// This gateway serves its `watch.max_streams` streams already.
    TooManyWatchStreams,
    /// A watch client stopped reading: its buffer filled and the stream closed.
    WatchClientTooSlow,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "RATE_LIMITED",
            Self::AuthFailuresLimited => "AUTH_FAILURES_LIMITED",
            Self::UpdatesBacklogged => "UPDATES_BACKLOGGED",
            Self::ChatBacklogged => "CHAT_BACKLOGGED",
            Self::QueueFull => "QUEUE_FULL",
            Self::TooManyWatchStreams => "TOO_MANY_WATCH_STREAMS",
            Self::WatchClientTooSlow => "WATCH_CLIENT_TOO_SLOW",
        }
    }
}

/// RESOURCE_EXHAUSTED with `ErrorInfo{reason, domain}` and, when the gateway
/// knows a delay, `RetryInfo` plus `retry-after` metadata (whole seconds,
/// rounded up, as HTTP's Retry-After).
pub fn exhausted(
    reason: Reason,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        reason.as_str(),
        ERROR_DOMAIN,
        std::collections::HashMap::new(),
    );
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    let mut status = Status::with_error_details(Code::ResourceExhausted, message, details);
    if let Some(delay) = retry_after
        && let Ok(value) = whole_secs(delay).to_string().parse()
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

fn whole_secs(delay: std::time::Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
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
            GatewayError::RateLimited { retry_after } => exhausted(
                Reason::RateLimited,
                &format!(
                    "rate limit exceeded, retry in {} s",
                    whole_secs(retry_after)
                ),
                Some(retry_after),
            ),
            GatewayError::AuthFailuresLimited { retry_after } => exhausted(
                Reason::AuthFailuresLimited,
                &format!(
                    "too many failed authentications from this address, retry in {} s",
                    whole_secs(retry_after)
                ),
                Some(retry_after),
            ),
            GatewayError::Invalid(v) => Status::with_error_details(
                Code::InvalidArgument,
                v.to_string(),
                ErrorDetails::with_bad_request_violation(v.field, v.reason),
            ),
            GatewayError::NotFound(what) => Status::not_found(format!("{what} not found")),
            GatewayError::Backlogged { what, retry_after } => {
                tracing::warn!(backlog = %what, "update refused: backpressure");
                exhausted(
                    Reason::UpdatesBacklogged,
                    &format!(
                        "too many updates are waiting, retry in {} s",
                        whole_secs(retry_after)
                    ),
                    Some(retry_after),
                )
            }
            GatewayError::ShuttingDown => {
                Status::unavailable("this gateway is shutting down; retry on another replica")
            }
            GatewayError::TooManyWatches(limit) => {
                tracing::warn!(limit, "watch refused: watch.max_streams reached");
                exhausted(
                    Reason::TooManyWatchStreams,
                    &format!(
                        "this gateway serves {limit} watch streams already; retry later or on another replica"
                    ),
                    Some(std::time::Duration::from_secs(1)),
                )
            }
            GatewayError::QueueFull(detail) => {
                tracing::warn!(detail = %detail, "update rejected: queue full");
                exhausted(
                    Reason::QueueFull,
                    "the update queue is full, retry later",
                    None,
                )
            }
            GatewayError::ChatBacklogged(detail) => {
                tracing::warn!(detail = %detail, "update rejected: the chat's backlog is full");
                exhausted(
                    Reason::ChatBacklogged,
                    "this chat has too many updates waiting, retry later",
                    None,
                )
            }
            GatewayError::JobTooLarge => {
                Status::invalid_argument("messages: the update is too large for the queue")
            }
            GatewayError::QueueUnavailable(e) => {
                tracing::error!(error = %e, "update queue unavailable");
                Status::unavailable("the update queue is unavailable, retry later")
            }
            GatewayError::ChangesUnavailable(e) => {
                tracing::error!(error = %e, "a deletion could not be announced; not made");
                Status::unavailable(
                    "the deletion cannot be announced to every gateway now; nothing was deleted, retry later",
                )
            }
            GatewayError::StoreUnavailable(s) => {
                tracing::error!(code = ?s.code(), error = %s.message(), "memory-store unavailable");
                Status::unavailable("memory storage is unavailable, retry later")
            }
            GatewayError::UnverifiedRepeat(s) => {
                tracing::warn!(code = ?s.code(), error = %s.message(), "repeat of a keyed update not checked: memory-store unavailable");
                Status::unavailable(
                    "idempotency_key: this key was used before and memory storage, which holds its request, \
                     is unavailable to compare them; nothing was accepted, retry later",
                )
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The ErrorInfo reason and RetryInfo delay of a refusal.
    fn reason_and_delay(error: GatewayError) -> (String, String, Option<Duration>, bool) {
        let status = Status::from(error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo detail");
        let delay = status.get_details_retry_info().and_then(|r| r.retry_delay);
        let header = status.metadata().get("retry-after").is_some();
        (info.reason, info.domain, delay, header)
    }

    #[test]
    fn every_resource_exhausted_names_its_reason_beside_the_delay() {
        let cases = [
            (
                GatewayError::RateLimited {
                    retry_after: Duration::from_millis(1_500),
                },
                "RATE_LIMITED",
                Some(Duration::from_millis(1_500)),
            ),
            (
                GatewayError::AuthFailuresLimited {
                    retry_after: Duration::from_secs(30),
                },
                "AUTH_FAILURES_LIMITED",
                Some(Duration::from_secs(30)),
            ),
            (
                GatewayError::Backlogged {
                    what: "100 jobs queued".into(),
                    retry_after: Duration::from_secs(5),
                },
                "UPDATES_BACKLOGGED",
                Some(Duration::from_secs(5)),
            ),
            (
                GatewayError::from_queue(QueueError::Full("max_bytes".into())),
                "QUEUE_FULL",
                None,
            ),
            (
                GatewayError::from_queue(QueueError::ChatBacklogged { depth: 8, limit: 8 }),
                "CHAT_BACKLOGGED",
                None,
            ),
            (
                GatewayError::TooManyWatches(10),
                "TOO_MANY_WATCH_STREAMS",
                Some(Duration::from_secs(1)),
            ),
        ];
        for (error, reason, delay) in cases {
            let (got, domain, got_delay, header) = reason_and_delay(error);
            assert_eq!((got.as_str(), domain.as_str()), (reason, ERROR_DOMAIN));
            assert_eq!(got_delay, delay, "{reason}");
            assert_eq!(
                header,
                delay.is_some(),
                "{reason}: retry-after with a delay only"
            );
        }
    }
}
