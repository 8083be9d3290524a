//! The language model behind an [`super::runner::LlmAgent`]: one trait, so
//! an OpenAI-compatible endpoint, a local server or a test double are
//! interchangeable.

use std::{future::Future, pin::Pin};

use crate::{error::BackendError, tool::CallUsage};

/// Author of one turn of a chat-completion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnRole {
    System,
    User,
    Assistant,
}

/// One turn of a chat-completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: TurnRole,
    pub content: String,
}

/// What the model is asked: the conversation so far and the JSON Schema its
/// answer must follow (structured output).
#[derive(Debug, Clone)]
pub struct ModelRequest {
    pub turns: Vec<Turn>,
    /// Schema name for the endpoint (`[a-zA-Z0-9_-]`).
    pub schema_name: &'static str,
    /// Shared: one schema per agent, sent with every request.
    pub schema: std::sync::Arc<serde_json::Value>,
}

/// The model's answer: raw text (expected to be JSON) and the token usage
/// the endpoint reported, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReply {
    pub content: String,
    pub usage: Option<CallUsage>,
}

/// Boxed so the trait is usable as `Arc<dyn ChatModel>`.
pub type ModelFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ModelReply, BackendError>> + Send + 'a>>;

/// A chat-completion model.
pub trait ChatModel: Send + Sync + 'static {
    /// Short stable name for logs, e.g. `"openai"`.
    fn name(&self) -> &'static str;

    /// One completion.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] for rate limits, server errors, network
    /// failures and timeouts (a later retry may succeed);
    /// [`BackendError::Internal`] for refusals of the request itself
    /// (bad credentials, unknown model).
    fn complete(&self, request: ModelRequest) -> ModelFuture<'_>;
}
