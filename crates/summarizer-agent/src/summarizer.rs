//! [`SummarizerAgent`]: the `summarize` tool's agent. Whatever backend
//! computes the memory, this layer gives every call the same guarantees: a
//! deadline, validation of the output against the tool's JSON Schema, token
//! budgets enforced on what will be stored, and token accounting in the output
//! and the logs.
//!
//! It retries nothing: a model's invalid answer is retried with feedback where
//! the model is called (`crate::agent::runner`), and a failed call is retried
//! by the worker, which owns the job (docs/reliability.md, "Who retries what").
//! An output that still fails the schema here is a bug of the backend, and the
//! same input would give it again.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    agent::{SUMMARIZER, schema::OutputSchema},
    backend::{BackendError, SummarizerBackend},
    memory::{budget::clip_line, tokens::count_tokens},
    tool::{CallUsage, SummarizeInput, SummarizeOutput, TokenCounts, TokenLimits},
};

/// A backend wrapped with the agent's guarantees. Cheap to share.
pub struct SummarizerAgent {
    backend: Arc<dyn SummarizerBackend>,
    schema: OutputSchema<SummarizeOutput>,
    /// Deadline of one call. Keep it below the worker's agent-call timeout so
    /// the agent answers `Unavailable` itself.
    call_timeout: Duration,
}

impl SummarizerAgent {
    /// Wraps `backend`; each call ends within `call_timeout`.
    ///
    /// # Errors
    /// [`BackendError::Internal`] when the output schema does not compile.
    pub fn new(
        backend: Arc<dyn SummarizerBackend>,
        call_timeout: Duration,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            backend,
            schema: OutputSchema::new().map_err(BackendError::Internal)?,
            call_timeout,
        })
    }

    /// Name of the wrapped backend.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Summarizes one batch.
    ///
    /// # Errors
    /// [`BackendError::InvalidInput`] for an empty `chat_id`;
    /// [`BackendError::Unavailable`] when the deadline passes or the backend
    /// is down; [`BackendError::InvalidOutput`] when the backend's output
    /// fails the schema; the backend's own errors otherwise.
    pub async fn summarize(&self, input: SummarizeInput) -> Result<SummarizeOutput, BackendError> {
        if input.chat_id.trim().is_empty() {
            return Err(BackendError::InvalidInput(
                "chat_id must not be empty".into(),
            ));
        }
        let started = Instant::now();
        let deadline = self.call_timeout;
        let limits = input.limits;
        let call = self.backend.summarize(input.clone());
        let mut output = match tokio::time::timeout(deadline, call).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "{} backend gave no answer within {deadline:?}",
                    self.backend.name()
                )));
            }
        };
        if let Err(invalid) = self.schema.check(&output) {
            tracing::error!(backend = self.backend.name(), reason = %invalid, "backend output invalid");
            return Err(BackendError::InvalidOutput(invalid.0));
        }
        if enforce_budgets(&mut output, limits) {
            tracing::warn!(
                backend = self.backend.name(),
                "backend output exceeded its token budgets; trimmed"
            );
        }
        // Counted only when the backend reported no usage (the prompt is long).
        let completion_tokens = output.token_counts.total;
        let usage = output.usage.get_or_insert_with(|| CallUsage {
            prompt_tokens: prompt_tokens(&input),
            completion_tokens,
            attempts: 1,
        });
        tracing::info!(
            agent = SUMMARIZER.name,
            version = SUMMARIZER.version,
            backend = self.backend.name(),
            chat_id = %input.chat_id,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            attempts = usage.attempts,
            memory_tokens = output.token_counts.total,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "summarize call"
        );
        Ok(output)
    }
}

/// What the call read: the batch and the prior memory, in cl100k tokens.
fn prompt_tokens(input: &SummarizeInput) -> u32 {
    let messages = input
        .messages
        .iter()
        .map(|m| count_tokens(&m.content))
        .fold(0u32, u32::saturating_add);
    let prior = input.prior.as_ref().map_or(0, |p| {
        count_tokens(&p.user_confirmed)
            .saturating_add(count_tokens(&p.llm_inferred))
            .saturating_add(count_tokens(&p.general_summary))
    });
    messages.saturating_add(prior)
}

/// Makes `output` respect `limits` whatever the backend did: each layer
/// within its own limit, then the total, giving way in the order summary,
/// inferences, user facts. Recounts the tokens. True when anything was cut.
pub(crate) fn enforce_budgets(output: &mut SummarizeOutput, limits: TokenLimits) -> bool {
    let mut cut = false;
    let mut fit = |text: &mut String, limit: u32, newest_last: bool| {
        if count_tokens(text) > limit {
            *text = trim_lines(text, limit, newest_last);
            cut = true;
        }
    };
    fit(&mut output.user_confirmed, limits.user_confirmed, false);
    fit(&mut output.llm_inferred, limits.llm_inferred, false);
    fit(&mut output.general_summary, limits.general_summary, true);
    let used =
        |o: &SummarizeOutput| count_tokens(&o.user_confirmed) + count_tokens(&o.llm_inferred);
    let room = limits.total.saturating_sub(used(output));
    fit(&mut output.general_summary, room, true);
    let room = limits
        .total
        .saturating_sub(count_tokens(&output.user_confirmed));
    fit(&mut output.llm_inferred, room, false);
    fit(&mut output.user_confirmed, limits.total, false);
    let counts = [
        &output.user_confirmed,
        &output.llm_inferred,
        &output.general_summary,
    ]
    .map(|s| count_tokens(s));
    output.token_counts = TokenCounts {
        user_confirmed: counts[0],
        llm_inferred: counts[1],
        general_summary: counts[2],
        total: counts.iter().fold(0u32, |a, b| a.saturating_add(*b)),
    };
    cut
}

/// Whole lines of `text` within `limit` tokens: the first ones, or the last
/// ones for the rolling summary. If not even one line fits, its clipped start.
fn trim_lines(text: &str, limit: u32, newest_last: bool) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    if newest_last {
        lines.reverse();
    }
    let mut kept: Vec<&str> = Vec::new();
    for line in &lines {
        kept.push(line);
        let mut candidate = kept.clone();
        if newest_last {
            candidate.reverse();
        }
        if count_tokens(&candidate.join("\n")) > limit {
            kept.pop();
            break;
        }
    }
    if kept.is_empty() {
        let first = lines.first().map_or("", |l| l.trim_start_matches("- "));
        return clip_line(first, limit);
    }
    if newest_last {
        kept.reverse();
    }
    kept.join("\n")
}

#[cfg(test)]
mod tests;
