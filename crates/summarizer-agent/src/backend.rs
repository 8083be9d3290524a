//! What computes a summary: the [`SummarizerBackend`] trait, the default
//! deterministic [`offline::OfflineBackend`], and [`openai::OpenAiBackend`]
//! for any OpenAI-compatible Chat Completions endpoint. The agent layer
//! (`crate::agent::SummarizerAgent`) wraps whichever is configured, so every
//! output is validated and budgeted the same way.

pub mod offline;
pub mod openai;

use std::{future::Future, pin::Pin};

use crate::{
    memory::{budget::Layers, state::MemoryState, tokens::count_tokens},
    tool::{SummarizeInput, SummarizeOutput, TokenCounts},
};

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
    /// The model provider refused the call for its rate or concurrency limit
    /// (HTTP 429) past what this call could wait; a retry later may succeed.
    #[error("model rate limited: {0}")]
    RateLimited(String),
    /// The model kept answering with output that fails validation, after the
    /// bounded retries; retrying the same input later is unlikely to help.
    #[error("invalid output after retries: {0}")]
    InvalidOutput(String),
    /// The backend failed in a way it should not have.
    #[error("internal backend error: {0}")]
    Internal(String),
}

/// The tool output for rendered `layers` and the `state` behind them.
pub(crate) fn output_from(
    layers: Layers,
    state: &MemoryState,
) -> Result<SummarizeOutput, BackendError> {
    let Layers {
        user_confirmed,
        llm_inferred,
        general_summary,
    } = layers;
    let counts = [&user_confirmed, &llm_inferred, &general_summary].map(|s| count_tokens(s));
    let state_json = serde_json::to_string(state)
        .map_err(|e| BackendError::Internal(format!("cannot serialise state: {e}")))?;
    Ok(SummarizeOutput {
        user_confirmed,
        llm_inferred,
        general_summary,
        token_counts: TokenCounts {
            user_confirmed: counts[0],
            llm_inferred: counts[1],
            general_summary: counts[2],
            total: counts.iter().fold(0u32, |a, b| a.saturating_add(*b)),
        },
        state_json,
        usage: None,
    })
}
