//! The crate's errors: [`BackendError`] (why one summarize call failed,
//! shared by the agent layer and every backend) and [`AgentError`] (why the
//! server stopped).

use std::io;

/// Why the agent stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The listener's local address could not be read.
    #[error("cannot read the listener address: {0}")]
    ListenerAddress(#[source] io::Error),
    /// The configured backend or the agent around it could not be built.
    #[error("cannot build the summarizer backend: {0}")]
    Backend(#[source] BackendError),
    /// The listener's TLS could not be set up (a file missing or unusable).
    #[error("{0}")]
    Tls(#[source] service_kit::settings::SettingsError),
    /// Serving HTTP failed (accepting connections, for example).
    #[error("serving failed: {0}")]
    Serve(#[source] io::Error),
}

/// Why a backend could not summarize. The variants decide what the caller
/// does next: fix the request, retry later, or report a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The request is malformed; retrying it unchanged fails again.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A dependency of the backend is down or overloaded; a retry may succeed.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The model provider refused the call for its rate or concurrency limit
    /// (HTTP 429). The agent does not wait: the worker owns this retry and
    /// waits at least `retry_after` (the provider's `Retry-After`, if sent).
    #[error("model rate limited: {reason}")]
    RateLimited {
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The model kept answering with output that fails validation, after the
    /// bounded retries; retrying the same input later is unlikely to help.
    #[error("invalid output after retries: {0}")]
    InvalidOutput(String),
    /// The backend failed in a way it should not have.
    #[error("internal backend error: {0}")]
    Internal(String),
}
