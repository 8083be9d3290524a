//! What computes a summary: the [`SummarizerBackend`] trait, the default
//! deterministic [`offline::OfflineBackend`], and [`openai::OpenAiBackend`]
//! for any OpenAI-compatible Chat Completions endpoint. The agent layer
//! (`crate::summarizer::SummarizerAgent`) wraps whichever is configured, so every
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

pub use crate::error::BackendError;

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
