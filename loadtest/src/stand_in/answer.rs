//! The completion the stand-in answers with: a minimal draft in the shape
//! the request's JSON schema asks for (the summarizer's `memory_draft`),
//! derived from the messages in the request so that it passes the agent's
//! checks: one user fact citing the first user message, one inference citing
//! the first assistant message, and a one-line summary.
//!
//! The agent puts the messages in the first user turn, as JSON inside a DATA
//! block: `<untrusted-data name="messages">` … `</untrusted-data>`.

use serde::Deserialize;
use serde_json::{Value, json};

/// Opening line of the messages block in the agent's user turn.
const MESSAGES_OPEN: &str = "<untrusted-data name=\"messages\">";
/// Closing marker of a DATA block.
const DATA_CLOSE: &str = "</untrusted-data>";
/// Longest statement the stand-in writes, in characters.
const MAX_STATEMENT_CHARS: usize = 160;

/// Why a request is not the one the agent sends.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the body is not a chat completion request: {0}")]
    NotARequest(#[source] serde_json::Error),
    #[error("{0}")]
    Unsupported(&'static str),
}

#[derive(Deserialize)]
struct Request {
    model: String,
    messages: Vec<Turn>,
    response_format: Option<ResponseFormat>,
}

#[derive(Deserialize)]
struct Turn {
    role: String,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat {
    name: String,
    schema: Value,
}

/// A message as the agent shows it to the model.
#[derive(Deserialize)]
struct ViewMessage {
    id: String,
    role: String,
    content: String,
}

/// The completion for a request body.
///
/// # Errors
/// [`AnswerError`] when the body is not a Chat Completions request asking
/// for the `memory_draft` JSON schema.
pub fn complete(body: &[u8]) -> Result<Value, AnswerError> {
    let request: Request = serde_json::from_slice(body).map_err(AnswerError::NotARequest)?;
    if request.model.trim().is_empty() {
        return Err(AnswerError::Unsupported("`model` must not be empty"));
    }
    let format = request
        .response_format
        .filter(|f| f.kind == "json_schema")
        .and_then(|f| f.json_schema)
        .ok_or(AnswerError::Unsupported(
            "this stand-in answers only `response_format: {type: \"json_schema\"}` requests",
        ))?;
    if format.name != "memory_draft" || !format.schema["properties"]["user_facts"].is_object() {
        return Err(AnswerError::Unsupported(
            "this stand-in knows only the summarizer's `memory_draft` schema",
        ));
    }
    let prompt: String = request
        .messages
        .iter()
        .filter_map(|t| t.content.as_deref())
        .collect();
    let messages = request
        .messages
        .iter()
        .filter(|t| t.role == "user")
        .filter_map(|t| t.content.as_deref())
        .find_map(messages_block)
        .unwrap_or_default();
    let content = draft(&messages).to_string();
    // About four characters a token: close enough for cost arithmetic.
    let prompt_tokens = prompt.len() / 4;
    let completion_tokens = content.len() / 4;
    Ok(json!({
        "id": format!("chatcmpl-standin-{:016x}", rand::random::<u64>()),
        "object": "chat.completion",
        "created": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    }))
}

/// The messages of the DATA block in `turn`, if it has one that parses.
fn messages_block(turn: &str) -> Option<Vec<ViewMessage>> {
    let start = turn.find(MESSAGES_OPEN)? + MESSAGES_OPEN.len();
    let rest = &turn[start..];
    let end = rest.find(DATA_CLOSE)?;
    serde_json::from_str(&rest[..end]).ok()
}

fn statement(content: &str) -> String {
    let first = content
        .split_inclusive(['.', '!', '?'])
        .next()
        .unwrap_or(content)
        .trim();
    first.chars().take(MAX_STATEMENT_CHARS).collect()
}

fn draft(messages: &[ViewMessage]) -> Value {
    let first = |role: &str| {
        messages
            .iter()
            .find(|m| m.role == role && !statement(&m.content).is_empty())
    };
    let user_facts: Vec<Value> = first("user")
        .map(|m| json!({"text": statement(&m.content), "message_ids": [m.id]}))
        .into_iter()
        .collect();
    let inferences: Vec<Value> = first("assistant")
        .map(|m| json!({"text": statement(&m.content), "message_ids": [m.id]}))
        .into_iter()
        .collect();
    json!({
        "user_facts": user_facts,
        "assistant_inferences": inferences,
        "confirmed": [],
        "corrected_keys": [],
        "summary": format!("The chat went on for {} more messages.", messages.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user_turn: &str, format: Value) -> Vec<u8> {
        json!({
            "model": "stand-in",
            "messages": [
                {"role": "system", "content": "You summarize."},
                {"role": "user", "content": user_turn}
            ],
            "response_format": format
        })
        .to_string()
        .into_bytes()
    }

    fn draft_schema() -> Value {
        json!({"type": "json_schema", "json_schema": {
            "name": "memory_draft", "strict": true,
            "schema": {"type": "object", "properties": {"user_facts": {"type": "array"}}}
        }})
    }

    #[test]
    fn the_draft_cites_the_first_user_and_assistant_messages_of_the_request() {
        let turn = format!(
            "Known memory:\n<untrusted-data name=\"memory\">\n[]\n</untrusted-data>\n\n\
             New messages (oldest first):\n{MESSAGES_OPEN}\n\
             [{{\"id\": \"m1\", \"role\": \"user\", \"content\": \"My member ID is M1. Thanks.\"}},\
              {{\"id\": \"m2\", \"role\": \"assistant\", \"content\": \"Claim \\u003cX\\u003e may apply.\"}}]\n\
             {DATA_CLOSE}\n\nAnswer with the JSON object for this batch."
        );

        let reply = complete(&request(&turn, draft_schema())).map_err(|e| e.to_string());

        let content = reply
            .as_ref()
            .ok()
            .and_then(|r| r["choices"][0]["message"]["content"].as_str())
            .unwrap_or_default();
        let draft: Value = serde_json::from_str(content).unwrap_or_default();
        assert_eq!(
            draft["user_facts"][0]["message_ids"],
            json!(["m1"]),
            "{reply:?}"
        );
        assert_eq!(draft["user_facts"][0]["text"], "My member ID is M1.");
        assert_eq!(
            draft["assistant_inferences"][0]["message_ids"],
            json!(["m2"])
        );
        assert_eq!(draft["confirmed"], json!([]));
    }

    #[test]
    fn a_request_without_json_schema_output_is_refused() {
        let cases = [
            json!({"type": "text"}),
            json!({"type": "json_schema", "json_schema": {"name": "other", "schema": {}}}),
            Value::Null,
        ];
        for format in cases {
            let reply = complete(&request("hello", format.clone()));
            assert!(
                matches!(reply, Err(AnswerError::Unsupported(_))),
                "{format}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_refused() {
        assert!(matches!(
            complete(b"not json"),
            Err(AnswerError::NotARequest(_))
        ));
    }
}
