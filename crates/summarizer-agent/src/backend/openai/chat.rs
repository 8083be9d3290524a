//! [`OpenAiChat`]: `POST {base_url}/chat/completions` with
//! `response_format: {type: "json_schema"}`. Only the subset every
//! OpenAI-compatible server implements is used.
//!
//! A `429 Too Many Requests` is the provider's concurrency or rate limit: it
//! returns at once as [`BackendError::RateLimited`], carrying the delay its
//! `Retry-After` (seconds or an HTTP date, or `retry-after-ms`) asks for. The
//! agent does not wait: the worker owns that retry (it waits at least the
//! delay, spends no attempt and holds the job), so a rate limit never fails a
//! job and no model slot sleeps inside the agent (docs/reliability.md, "Who
//! retries what").

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::OpenAiSettings;
use crate::{
    agent::model::{ChatModel, ModelFuture, ModelReply, ModelRequest, TurnRole},
    backend::BackendError,
    tool::CallUsage,
};

/// The request body, serialized straight from borrowed parts: the prompt and
/// the schema are not copied into a JSON tree first.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatTurn<'a>>,
    temperature: u8,
    max_tokens: u32,
    response_format: ResponseFormat<'a>,
}

#[derive(Serialize)]
struct ChatTurn<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: JsonSchemaFormat<'a>,
}

#[derive(Serialize)]
struct JsonSchemaFormat<'a> {
    name: &'static str,
    schema: &'a serde_json::Value,
    strict: bool,
}

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
        let body = ChatRequest {
            model: &self.settings.model,
            messages: request
                .turns
                .iter()
                .map(|t| ChatTurn {
                    role: match t.role {
                        TurnRole::System => "system",
                        TurnRole::User => "user",
                        TurnRole::Assistant => "assistant",
                    },
                    content: &t.content,
                })
                .collect(),
            temperature: 0,
            max_tokens: self.settings.max_output_tokens,
            response_format: ResponseFormat {
                kind: "json_schema",
                json_schema: JsonSchemaFormat {
                    name: request.schema_name,
                    schema: &request.schema,
                    strict: true,
                },
            },
        };
        let mut call = self.http.post(&self.url).json(&body);
        if let Some(key) = self.settings.api_key.as_ref().filter(|k| !k.is_empty()) {
            call = call.bearer_auth(key.expose());
        }
        let response = call.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let retry_after = (status.as_u16() == 429)
            .then(|| retry_after(response.headers(), SystemTime::now()))
            .flatten();
        let text = response.text().await.map_err(|e| transport_error(&e))?;
        if status.as_u16() == 429 {
            return Err(BackendError::RateLimited {
                reason: format!("model endpoint answered {status}: {}", quote(&text)),
                retry_after,
            });
        }
        if status.as_u16() == 408 || status.is_server_error() {
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

/// The delay a 429 asks for: `retry-after-ms` (milliseconds, sent by some
/// providers), else `Retry-After` as delay-seconds or an HTTP date (RFC 9110
/// section 10.2.3); `None` when absent or unreadable.
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header("retry-after")?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    /// Response headers as (name, value) pairs.
    type Pairs = &'static [(&'static str, &'static str)];

    fn headers(pairs: Pairs) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn retry_after_is_read_as_seconds_as_an_http_date_or_as_milliseconds() {
        // Arrange: "now" is 2015-10-21 07:27:58 UTC.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_478);
        let cases: [(Pairs, Option<Duration>); 6] = [
            (&[("retry-after", "3")], Some(Duration::from_secs(3))),
            (
                &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
                Some(Duration::from_secs(2)),
            ),
            (
                &[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")],
                Some(Duration::ZERO),
            ),
            (
                &[("retry-after-ms", "250"), ("retry-after", "9")],
                Some(Duration::from_millis(250)),
            ),
            (&[("retry-after", "soon")], None),
            (&[], None),
        ];
        for (pairs, expected) in cases {
            // Act
            let wait = retry_after(&headers(pairs), now);
            // Assert
            assert_eq!(wait, expected, "{pairs:?}");
        }
    }
}
