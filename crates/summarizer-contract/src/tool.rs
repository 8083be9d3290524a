//! The `summarize` tool's wire contract: its typed input and output.
//!
//! These types are the schema the model (and every MCP client) sees: the doc
//! comment on each field becomes its `description` in the JSON schema, so they
//! are written for the reader of the schema, not for Rust programmers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the MCP tool the agent exposes.
pub const TOOL_NAME: &str = "summarize";

/// JSON-RPC error code the server uses when the backend is temporarily
/// unavailable (a retry later may succeed). Clients treat it as transient; every
/// other JSON-RPC error from the tool is permanent.
pub const BACKEND_UNAVAILABLE_CODE: i32 = -32050;

/// The `reason` an error with [`BACKEND_UNAVAILABLE_CODE`] carries in its
/// `data` (`{"reason": "rate_limited"}`) when the model provider refused the
/// call for its rate or concurrency limit (HTTP 429). Clients that do not know
/// it still see a transient error; those that do back off without counting an
/// outage.
pub const RATE_LIMITED_REASON: &str = "rate_limited";

/// The field of a rate-limited error's `data` holding the provider's
/// `Retry-After` in milliseconds, when it sent one
/// (`{"reason": "rate_limited", "retry_after_ms": 1000}`). The agent does not
/// wait it out: the caller does.
pub const RETRY_AFTER_MS_FIELD: &str = "retry_after_ms";

/// One batch of new chat messages to fold into a chat's layered memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SummarizeInput {
    /// Identifier of the chat this memory belongs to. Must not be empty.
    pub chat_id: String,
    /// The memory produced by the previous call for this chat, if any. The new
    /// memory is merged into it rather than rebuilt from scratch.
    #[serde(default)]
    pub prior: Option<PriorMemory>,
    /// The new messages of this batch, oldest first.
    pub messages: Vec<InputMessage>,
    /// Token budget of each memory layer and of the three together; defaults
    /// to 1000 / 500 / 500, total 2000.
    #[serde(default)]
    pub limits: TokenLimits,
}

/// Memory returned by an earlier `summarize` call, handed back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PriorMemory {
    /// Facts the user stated or confirmed, one `- ` item per line.
    pub user_confirmed: String,
    /// Inferences the assistant made that the user has not confirmed, one `- ` item per line.
    pub llm_inferred: String,
    /// Rolling summary of the conversation, one line per batch, oldest first.
    pub general_summary: String,
    /// Opaque structured state from the previous output's `state_json`. When
    /// absent or unreadable, the memory is re-seeded from the three text fields.
    #[serde(default)]
    pub state_json: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InputMessage {
    /// Stable message identifier; memory items record the ids they came from.
    pub id: String,
    /// Who wrote the message.
    pub role: Role,
    /// The message text.
    pub content: String,
    /// When the message was sent (RFC 3339), if known. Lets relative dates
    /// ("yesterday", "last week") be anchored to the calendar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

impl InputMessage {
    /// A message without a timestamp.
    pub fn new(id: impl Into<String>, role: Role, content: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            role,
            content: content.into(),
            sent_at: None,
        }
    }
}

/// Author of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person chatting. Only user messages can produce confirmed facts.
    User,
    /// The assistant. Its guesses about the user become inferred items.
    Assistant,
    /// System prompt or instructions; never treated as facts about the user.
    System,
    /// Output of a tool call; never treated as facts about the user.
    Tool,
}

/// Maximum number of tokens (cl100k_base) of each memory layer, and of the
/// three layers together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TokenLimits {
    /// Budget of `user_confirmed`.
    pub user_confirmed: u32,
    /// Budget of `llm_inferred`.
    pub llm_inferred: u32,
    /// Budget of `general_summary`.
    pub general_summary: u32,
    /// Budget of the three layers together (defaults to 2000). When it is
    /// smaller than the sum of the layer budgets, the summary gives way first,
    /// then the inferences, then the user's facts.
    pub total: u32,
}

impl Default for TokenLimits {
    fn default() -> Self {
        Self {
            user_confirmed: 1000,
            llm_inferred: 500,
            general_summary: 500,
            total: 2000,
        }
    }
}

impl TokenLimits {
    /// Per-layer budgets that also respect `total`: each layer keeps its own
    /// budget while the total allows, in priority order user facts,
    /// inferences, summary.
    pub fn effective(&self) -> Self {
        let mut left = self.total;
        let mut take = |want: u32| {
            let got = want.min(left);
            left -= got;
            got
        };
        let user_confirmed = take(self.user_confirmed);
        let llm_inferred = take(self.llm_inferred);
        let general_summary = take(self.general_summary);
        Self {
            user_confirmed,
            llm_inferred,
            general_summary,
            total: user_confirmed + llm_inferred + general_summary,
        }
    }
}

/// The chat's updated layered memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SummarizeOutput {
    /// Facts the user stated or confirmed, one `- ` item per line, within its token limit.
    pub user_confirmed: String,
    /// Unconfirmed assistant inferences, one `- ` item per line, within its token limit.
    pub llm_inferred: String,
    /// Rolling conversation summary, one line per batch, within its token limit.
    pub general_summary: String,
    /// Token counts of the three layers as returned.
    pub token_counts: TokenCounts,
    /// Opaque structured state (items with the message ids they came from). Store
    /// it and pass it back as `prior.state_json` on the next call for this chat.
    pub state_json: String,
    /// What producing this output cost, for logs and metrics; not part of the memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CallUsage>,
}

/// Token accounting of one `summarize` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CallUsage {
    /// Tokens sent to the model (for the offline backend: the batch and prior
    /// memory it read, counted with cl100k_base).
    pub prompt_tokens: u32,
    /// Tokens the model produced (offline: the returned layers).
    pub completion_tokens: u32,
    /// Model calls made, retries included (offline: 1).
    pub attempts: u32,
}

/// Token counts (cl100k_base) of the returned layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenCounts {
    /// Tokens in `user_confirmed`.
    pub user_confirmed: u32,
    /// Tokens in `llm_inferred`.
    pub llm_inferred: u32,
    /// Tokens in `general_summary`.
    pub general_summary: u32,
    /// Sum of the three.
    pub total: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_below_the_layer_budgets_squeezes_the_summary_first() {
        let limits = TokenLimits {
            user_confirmed: 600,
            llm_inferred: 300,
            general_summary: 300,
            total: 1000,
        };
        let e = limits.effective();
        assert_eq!(
            (e.user_confirmed, e.llm_inferred, e.general_summary, e.total),
            (600, 300, 100, 1000)
        );
    }

    #[test]
    fn limits_without_a_total_still_parse() {
        let limits: Result<TokenLimits, _> =
            serde_json::from_str(r#"{"user_confirmed":10,"llm_inferred":10,"general_summary":10}"#);
        assert_eq!(limits.map(|l| l.total).ok(), Some(2000));
    }

    #[test]
    fn roles_are_snake_case_on_the_wire() {
        let json = serde_json::to_string(&Role::Assistant).unwrap_or_default();
        assert_eq!(json, "\"assistant\"");
    }

    #[test]
    fn missing_limits_take_the_documented_defaults() {
        let input: Result<SummarizeInput, _> =
            serde_json::from_str(r#"{"chat_id":"c1","messages":[]}"#);
        let limits = input.map(|i| i.limits).ok();
        assert_eq!(
            limits,
            Some(TokenLimits {
                user_confirmed: 1000,
                llm_inferred: 500,
                general_summary: 500,
                total: 2000,
            })
        );
    }
}
