//! [`OpenAiChat`]: `POST {base_url}/chat/completions` with
//! `response_format: {type: "json_schema"}`. Only the subset every
//! OpenAI-compatible server implements is used.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::OpenAiSettings;
use crate::{
    agent::model::{ChatModel, ModelFuture, ModelReply, ModelRequest, TurnRole},
    backend::BackendError,
    tool::CallUsage,
};

/// Most characters of an error body quoted in an error message.
const MAX_QUOTED_BODY: usize = 300;

/// A Chat Completions client. The API key stays inside `settings`' `Secret`
/// and only reaches the `Authorization` header.
pub struct OpenAiChat {
    http: reqwest::Client,
    url: String,
    settings: OpenAiSettings,
}

impl OpenAiChat {
    /// A client for `settings`; each HTTP request is bounded by `timeout`.
    ///
    /// # Errors
    /// [`BackendError::Internal`] when the HTTP client cannot be built.
    pub fn new(settings: &OpenAiSettings, timeout: Duration) -> Result<Self, BackendError> {
        crate::tls::install_ring_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| BackendError::Internal(format!("http client: {e}")))?;
        Ok(Self {
            http,
            url: format!(
                "{}/chat/completions",
                settings.base_url.trim_end_matches('/')
            ),
            settings: settings.clone(),
        })
    }

    async fn call(&self, request: ModelRequest) -> Result<ModelReply, BackendError> {
        let messages: Vec<_> = request
            .turns
            .iter()
            .map(|t| {
                let role = match t.role {
                    TurnRole::System => "system",
                    TurnRole::User => "user",
                    TurnRole::Assistant => "assistant",
                };
                json!({"role": role, "content": t.content})
            })
            .collect();
        let body = json!({
            "model": self.settings.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.settings.max_output_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": true,
                },
            },
        });
        let mut call = self.http.post(&self.url).json(&body);
        if let Some(key) = self.settings.api_key.as_ref().filter(|k| !k.is_empty()) {
            call = call.bearer_auth(key.expose());
        }
        let response = call.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transport_error(&e))?;
        if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
            return Err(BackendError::Unavailable(format!(
                "model endpoint answered {status}: {}",
                quote(&text)
            )));
        }
        if !status.is_success() {
            return Err(BackendError::Internal(format!(
                "model endpoint refused the request with {status}: {}",
                quote(&text)
            )));
        }
        let envelope: Completion = serde_json::from_str(&text).map_err(|e| {
            // A proxy's HTML error page, a truncated body: the endpoint is unwell.
            BackendError::Unavailable(format!("unreadable completion envelope: {e}"))
        })?;
        let choice = envelope.choices.into_iter().next();
        // No content (a refusal, an empty choice list) reads as invalid
        // output: the agent feeds that back and retries.
        let content = choice
            .and_then(|c| c.message.content.or(c.message.refusal))
            .unwrap_or_default();
        Ok(ModelReply {
            content,
            usage: envelope.usage.map(|u| CallUsage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                attempts: 1,
            }),
        })
    }
}

impl ChatModel for OpenAiChat {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn complete(&self, request: ModelRequest) -> ModelFuture<'_> {
        Box::pin(self.call(request))
    }
}

fn transport_error(error: &reqwest::Error) -> BackendError {
    // Connect failures, resets and timeouts: all worth a later retry.
    BackendError::Unavailable(format!("model endpoint unreachable: {error}"))
}

fn quote(body: &str) -> String {
    body.chars().take(MAX_QUOTED_BODY).collect()
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}
