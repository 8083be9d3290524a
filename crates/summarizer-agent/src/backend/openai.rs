//! The `openai` backend: any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp server) with JSON-schema structured output.
//!
//! ```text
//! prior state ─▶ known items (keys K1…) ─┐
//! new messages ──────────────────────────┴▶ LlmAgent<SummarizerSpec> ─▶ MemoryDraft
//!                                             (retries, schema, deadline)     │
//! state ◀── apply (ids and roles re-checked in code) ◀────────────────────────┘
//!   └─▶ fit_memory ─▶ three layers within budget
//! ```
//!
//! The model proposes; the code disposes. The model only returns a draft of
//! changes citing message ids. Which layer a fact may enter is decided here
//! from the roles of the cited messages, so a message that talks the model
//! into misfiling something ("ignore previous instructions…") cannot put an
//! assistant's words into `user_confirmed`.

mod apply;
mod chat;
mod spec;

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use service_kit::{
    secret::Secret,
    settings::{SettingsError, Validate},
};

pub use self::chat::OpenAiChat;
pub use self::spec::{DraftConfirmation, DraftItem, MemoryDraft, SummarizerSpec};
use super::{BackendError, SummarizeFuture, SummarizerBackend};
use crate::{
    agent::{
        model::ChatModel,
        runner::{LlmAgent, RetryPolicy},
    },
    memory::{budget::fit_memory, state::MemoryState},
    tool::SummarizeInput,
};

/// Where and how to call the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiSettings {
    /// Base URL up to and including the API version, e.g.
    /// `https://api.openai.com/v1`, `http://vllm:8000/v1`,
    /// `http://ollama:11434/v1`. `/chat/completions` is appended.
    pub base_url: String,
    /// Model name as the endpoint knows it.
    pub model: String,
    /// Bearer token; unset for local servers. Never printed. (An `Option`:
    /// defaults are loaded through serialisation, where a `Secret` renders
    /// `<redacted>`.)
    pub api_key: Option<Secret>,
    /// Upper bound on the tokens of one answer.
    pub max_output_tokens: u32,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            max_output_tokens: 2000,
        }
    }
}

impl PartialEq for OpenAiSettings {
    fn eq(&self, other: &Self) -> bool {
        self.base_url == other.base_url
            && self.model == other.model
            && self.api_key.as_ref().map(Secret::expose)
                == other.api_key.as_ref().map(Secret::expose)
            && self.max_output_tokens == other.max_output_tokens
    }
}

impl Eq for OpenAiSettings {}

impl Validate for OpenAiSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| SettingsError::invalid("openai.base_url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SettingsError::invalid(
                "openai.base_url",
                "must be an http:// or https:// URL",
            ));
        }
        if url.scheme() == "https" && !crate::tls::HTTPS {
            return Err(SettingsError::invalid(
                "openai.base_url",
                "https needs the agent built with `--features https`",
            ));
        }
        if self.model.trim().is_empty() {
            return Err(SettingsError::invalid("openai.model", "must not be empty"));
        }
        if self.max_output_tokens == 0 {
            return Err(SettingsError::invalid(
                "openai.max_output_tokens",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The model-backed summarizer. Cheap to share; one HTTP connection pool.
pub struct OpenAiBackend {
    agent: LlmAgent<SummarizerSpec>,
}

impl OpenAiBackend {
    /// A backend calling the endpoint in `settings`; `call_timeout` bounds
    /// each `summarize` (retries included), `max_attempts` the retries on
    /// invalid output.
    ///
    /// # Errors
    /// [`BackendError::Internal`] when the HTTP client or the output schema
    /// cannot be built.
    pub fn new(
        settings: &OpenAiSettings,
        call_timeout: Duration,
        max_attempts: u32,
    ) -> Result<Self, BackendError> {
        let model = OpenAiChat::new(settings, call_timeout)?;
        Self::with_model(Arc::new(model), call_timeout, max_attempts)
    }

    /// A backend on any [`ChatModel`] (tests, other providers).
    ///
    /// # Errors
    /// [`BackendError::Internal`] when the output schema does not compile.
    pub fn with_model(
        model: Arc<dyn ChatModel>,
        call_timeout: Duration,
        max_attempts: u32,
    ) -> Result<Self, BackendError> {
        let policy = RetryPolicy {
            max_attempts,
            call_timeout,
        };
        Ok(Self {
            agent: LlmAgent::new(SummarizerSpec::new(), model, policy)?,
        })
    }

    async fn run(
        &self,
        input: SummarizeInput,
    ) -> Result<crate::tool::SummarizeOutput, BackendError> {
        let mut state = MemoryState::load(input.prior.as_ref());
        state.batch += 1;
        let request = spec::DraftRequest::new(&state, &input.messages);
        let (draft, usage) = self.agent.run(&request).await?;
        apply::apply(&mut state, &request, draft);
        let layers = fit_memory(&mut state, input.limits);
        let mut output = super::output_from(layers, &state)?;
        output.usage = Some(usage);
        Ok(output)
    }
}

impl SummarizerBackend for OpenAiBackend {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn summarize(&self, input: SummarizeInput) -> SummarizeFuture<'_> {
        Box::pin(self.run(input))
    }
}
