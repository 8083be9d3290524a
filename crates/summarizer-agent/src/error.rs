//! Errors of the agent's server side.

use std::io;

/// Why the agent stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The listener's local address could not be read.
    #[error("cannot read the listener address: {0}")]
    ListenerAddress(#[source] io::Error),
    /// Serving HTTP failed (accepting connections, for example).
    #[error("serving failed: {0}")]
    Serve(#[source] io::Error),
}
