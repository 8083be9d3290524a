//! [`LlmAgent`]: runs an [`AgentSpec`] on a [`ChatModel`] with structured
//! output, bounded retries (the validation error goes back to the model as
//! the next turn), one deadline per call, and token accounting.

use std::{sync::Arc, time::Duration};

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    AgentInfo,
    model::{ChatModel, ModelRequest, Turn, TurnRole},
    prompt::Prompts,
    schema::{InvalidOutput, OutputSchema},
};
use crate::{error::BackendError, memory::tokens::count_tokens, tool::CallUsage};

/// What an agent is: identity, prompts, and how its typed input becomes the
/// user turn. The output type's JSON Schema is the model's answer format.
pub trait AgentSpec: Send + Sync + 'static {
    /// What the agent is given.
    type Input: Send + Sync;
    /// What the agent must answer; its doc comments are the schema the model sees.
    type Output: JsonSchema + Serialize + DeserializeOwned + Send;

    /// Name and version, logged with every call.
    fn info(&self) -> AgentInfo;

    /// The prompt files.
    fn prompts(&self) -> &Prompts;

    /// Schema name sent to the endpoint (`[a-zA-Z0-9_-]`).
    fn schema_name(&self) -> &'static str;

    /// The user turn for `input`; untrusted content goes inside DATA blocks.
    ///
    /// # Errors
    /// [`BackendError::InvalidInput`] when the input cannot be rendered.
    fn render_input(&self, input: &Self::Input) -> Result<String, BackendError>;

    /// Checks the schema cannot express (ids refer to real messages, …).
    ///
    /// # Errors
    /// [`InvalidOutput`] worded for the model, which gets it as feedback.
    fn check(&self, input: &Self::Input, output: &Self::Output) -> Result<(), InvalidOutput> {
        let _ = (input, output);
        Ok(())
    }
}

/// Retries and deadline of one agent call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Model calls per agent call, the first included; at least 1.
    pub max_attempts: u32,
    /// Deadline of the whole agent call, retries included.
    pub call_timeout: Duration,
}

/// An agent spec bound to a model.
pub struct LlmAgent<S: AgentSpec> {
    spec: S,
    model: Arc<dyn ChatModel>,
    schema: OutputSchema<S::Output>,
    policy: RetryPolicy,
}

impl<S: AgentSpec> LlmAgent<S> {
    /// Binds `spec` to `model`.
    ///
    /// # Errors
    /// [`BackendError::Internal`] when the output schema does not compile.
    pub fn new(
        spec: S,
        model: Arc<dyn ChatModel>,
        policy: RetryPolicy,
    ) -> Result<Self, BackendError> {
        let schema = OutputSchema::new().map_err(BackendError::Internal)?;
        Ok(Self {
            spec,
            model,
            schema,
            policy,
        })
    }

    /// The spec (for callers that post-process with it).
    pub fn spec(&self) -> &S {
        &self.spec
    }

    /// Runs one agent call: the output and what it cost.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the model is unreachable, rate
    /// limited or failing, or the deadline passes (transient);
    /// [`BackendError::InvalidOutput`] when every attempt was invalid.
    pub async fn run(&self, input: &S::Input) -> Result<(S::Output, CallUsage), BackendError> {
        let timeout = self.policy.call_timeout;
        match tokio::time::timeout(timeout, self.attempts(input)).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Unavailable(format!(
                "{} gave no valid answer within {timeout:?}",
                self.model.name()
            ))),
        }
    }

    async fn attempts(&self, input: &S::Input) -> Result<(S::Output, CallUsage), BackendError> {
        let info = self.spec.info();
        let mut turns = vec![
            Turn {
                role: TurnRole::System,
                content: self.spec.prompts().system_message(),
            },
            Turn {
                role: TurnRole::User,
                content: self.spec.render_input(input)?,
            },
        ];
        let mut usage = CallUsage::default();
        let mut last_error = String::new();
        for attempt in 1..=self.policy.max_attempts.max(1) {
            let request = ModelRequest {
                turns: turns.clone(),
                schema_name: self.spec.schema_name(),
                schema: self.schema.schema().clone(),
            };
            let reply = self.model.complete(request).await?;
            // The provider's own count when it reports one (the OpenAI API does);
            // counting the whole prompt is the agent's largest CPU cost, so it is
            // estimated only for a provider that reports nothing.
            let spent = reply.usage.unwrap_or_else(|| CallUsage {
                prompt_tokens: turns.iter().map(|t| count_tokens(&t.content)).sum::<u32>(),
                completion_tokens: count_tokens(&reply.content),
                attempts: 1,
            });
            usage.prompt_tokens = usage.prompt_tokens.saturating_add(spent.prompt_tokens);
            usage.completion_tokens = usage
                .completion_tokens
                .saturating_add(spent.completion_tokens);
            usage.attempts = attempt;
            let verdict = self
                .schema
                .parse(&reply.content)
                .and_then(|output| self.spec.check(input, &output).map(|()| output));
            match verdict {
                Ok(output) => {
                    // Debug: the caller's one line per call ("summarize call")
                    // already has the attempts and tokens.
                    tracing::debug!(
                        agent = info.name,
                        version = info.version,
                        model = self.model.name(),
                        attempt,
                        prompt_tokens = usage.prompt_tokens,
                        completion_tokens = usage.completion_tokens,
                        "agent call succeeded"
                    );
                    return Ok((output, usage));
                }
                Err(InvalidOutput(reason)) => {
                    tracing::warn!(
                        agent = info.name,
                        model = self.model.name(),
                        attempt,
                        %reason,
                        "model output invalid"
                    );
                    turns.push(Turn {
                        role: TurnRole::Assistant,
                        content: reply.content,
                    });
                    turns.push(Turn {
                        role: TurnRole::User,
                        content: format!(
                            "Your previous answer was rejected: {reason}. Answer again with \
                             only a JSON object that follows the schema exactly."
                        ),
                    });
                    last_error = reason;
                }
            }
        }
        Err(BackendError::InvalidOutput(format!(
            "{} attempts: {last_error}",
            self.policy.max_attempts.max(1)
        )))
    }
}
