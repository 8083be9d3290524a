//! Errors of the agent's server side.

use std::io;

/// Why the agent stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The listener's local address could not be read.
    #[error("cannot read the listener address: {0}")]
    ListenerAddress(#[source] io::Error),
    /// The configured backend or the agent around it could not be built.
    #[error("cannot build the summarizer backend: {0}")]
    Backend(#[source] crate::backend::BackendError),
    /// Serving HTTP failed (accepting connections, for example).
    #[error("serving failed: {0}")]
    Serve(#[source] io::Error),
}
