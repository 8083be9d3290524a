//! The default backend: deterministic heuristics, no network, no model.
//!
//! One call runs the pipeline
//!
//! ```text
//! prior.state_json ──load──▶ MemoryState ──fold_messages──▶ items (+ confirmations)
//!   (or text layers)                      ──push_batch_line─▶ summary line
//!                                         ──fit_items / fit_summary──▶ three layers within budget
//! ```
//!
//! Same input, byte-identical output: only ordered collections, no clock, no
//! randomness.

mod budget;
mod classify;
mod extract;
mod lexicon;
mod state;
mod summary;
#[cfg(test)]
mod tests;
mod text;
mod tokens;

pub use tokens::{count_tokens, warm_tokenizer};

use self::state::{Field, MemoryState};
use super::{BackendError, SummarizeFuture, SummarizerBackend};
use crate::tool::{SummarizeInput, SummarizeOutput, TokenCounts};

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
        summary::push_batch_line(&mut state, &input.messages);

        let limits = input.limits;
        let user_confirmed =
            budget::fit_items(&mut state, Field::UserConfirmed, limits.user_confirmed);
        let llm_inferred = budget::fit_items(&mut state, Field::LlmInferred, limits.llm_inferred);
        let general_summary = summary::fit_summary(&mut state, limits.general_summary);

        let counts = [&user_confirmed, &llm_inferred, &general_summary].map(|s| count_tokens(s));
        let state_json = serde_json::to_string(&state)
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
        })
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
