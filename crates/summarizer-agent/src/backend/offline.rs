//! The default backend: deterministic heuristics, no network, no model.
//!
//! One call runs the pipeline
//!
//! ```text
//! prior.state_json ──load──▶ MemoryState ──fold_messages──▶ sentences scored, deduplicated,
//!   (or text layers)                                          dated, sorted into layers
//!                                         ──fit_memory──▶ three layers within budget
//! ```
//!
//! Same input, byte-identical output: only ordered collections, no clock, no
//! randomness.

mod classify;
mod extract;
mod lexicon;
#[cfg(test)]
mod tests;

pub use crate::memory::tokens::{count_tokens, warm_tokenizer};

use super::{BackendError, SummarizeFuture, SummarizerBackend};
use crate::{
    memory::{budget::fit_memory, state::MemoryState},
    tool::{SummarizeInput, SummarizeOutput},
};

/// Heuristic summarizer; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineBackend;

impl OfflineBackend {
    /// A new offline backend (it holds no state; the tokenizer is process-wide).
    pub fn new() -> Self {
        Self
    }

    /// Summarizes on the calling thread.
    ///
    /// # Errors
    /// [`BackendError::InvalidInput`] when `chat_id` is empty.
    pub fn summarize_now(&self, input: &SummarizeInput) -> Result<SummarizeOutput, BackendError> {
        if input.chat_id.trim().is_empty() {
            return Err(BackendError::InvalidInput(
                "chat_id must not be empty".into(),
            ));
        }
        let mut state = MemoryState::load(input.prior.as_ref());
        state.batch += 1;
        extract::fold_messages(&mut state, &input.messages);
        let layers = fit_memory(&mut state, input.limits);
        super::output_from(layers, &state)
    }
}

impl SummarizerBackend for OfflineBackend {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn summarize(&self, input: SummarizeInput) -> SummarizeFuture<'_> {
        let backend = *self;
        Box::pin(async move {
            // Tokenizing long batches is CPU work: keep it off the async workers.
            tokio::task::spawn_blocking(move || backend.summarize_now(&input))
                .await
                .map_err(|e| BackendError::Internal(format!("summarize task failed: {e}")))?
        })
    }
}
