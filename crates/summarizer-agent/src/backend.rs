//! What computes a summary. The MCP server only adapts requests to a
//! [`SummarizerBackend`]; swapping the offline heuristics for a model-backed
//! implementation later does not touch the transport.

pub mod offline;

use std::{future::Future, pin::Pin};

use crate::tool::{SummarizeInput, SummarizeOutput};

/// The future a backend returns; boxed so the trait is usable as
/// `Arc<dyn SummarizerBackend>`.
pub type SummarizeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SummarizeOutput, BackendError>> + Send + 'a>>;

/// Turns a batch of messages plus the prior memory into the new memory.
pub trait SummarizerBackend: Send + Sync + 'static {
    /// Short stable name for logs and metrics, e.g. `"offline"`.
    fn name(&self) -> &'static str;

    /// Summarizes one batch.
    ///
    /// # Errors
    /// [`BackendError::InvalidInput`] when the input can never succeed,
    /// [`BackendError::Unavailable`] when a retry later may succeed,
    /// [`BackendError::Internal`] for bugs.
    fn summarize(&self, input: SummarizeInput) -> SummarizeFuture<'_>;
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
    /// The backend failed in a way it should not have.
    #[error("internal backend error: {0}")]
    Internal(String),
}
