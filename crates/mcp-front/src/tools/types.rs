//! The tools' inputs and outputs, and their conversions to and from the
//! gateway's messages.
//!
//! These types are the JSON schemas a model reads: each doc comment becomes
//! the field's `description`, so they are written for that reader. Inputs are
//! deliberately loose (plain strings and numbers): the gateway validates
//! every field and names the one that is wrong, exactly as for gRPC callers.

use chat_memory_proto::v1::{
    ChatMessage, GetMemoryRequest, GetMemoryResponse, GetUpdateStatusRequest,
    GetUpdateStatusResponse, JobState as ProtoJobState, ReadCondition as ProtoReadCondition,
    Role as ProtoRole, UpdateMemoryRequest, UpdateMemoryResponse,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ToolError;

/// Arguments of `read_memory`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct ReadMemoryInput {
    /// The chat (conversation) id: 1-128 characters of A-Z a-z 0-9 . _ : @ -.
    /// Use the same id as in add_messages.
    pub chat_id: String,
    /// Read-your-writes: answer once the memory has at least this version.
    #[serde(default)]
    pub min_version: Option<i64>,
    /// Read-your-writes: answer once this update (a job_id that add_messages
    /// returned for the same chat) has been applied, or has failed.
    #[serde(default)]
    pub after_job_id: Option<String>,
    /// How long to wait for min_version / after_job_id, in milliseconds (at
    /// most 10000). Without it the answer comes at once.
    #[serde(default)]
    pub wait_ms: Option<u32>,
}

impl From<ReadMemoryInput> for GetMemoryRequest {
    fn from(input: ReadMemoryInput) -> Self {
        Self {
            chat_id: input.chat_id,
            min_version: input.min_version.unwrap_or(0),
            after_job_id: input.after_job_id.unwrap_or_default(),
            wait_ms: input.wait_ms.unwrap_or(0),
        }
    }
}

/// A chat's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ChatMemory {
    /// The chat's id.
    pub chat_id: String,
    /// Facts the user stated or explicitly confirmed: true for this user.
    pub user_confirmed: String,
    /// What the assistant inferred earlier and the user has NOT confirmed:
    /// never present it as fact; ask the user to confirm it first.
    pub llm_inferred: String,
    /// A rolling summary of the conversation so far.
    pub general_summary: String,
    /// Memory version: 1 after the first applied update, +1 with each one.
    pub version: i64,
    /// When the memory last changed (RFC 3339).
    pub updated_at: Option<String>,
    /// Token counts (cl100k) of the fields.
    pub tokens: TokenCounts,
    /// How fresh the memory is.
    pub freshness: Freshness,
    /// Whether min_version / after_job_id was reached: `met`, `timed_out`
    /// (the answer is the memory as it is now) or `job_failed`; null when
    /// neither was asked.
    pub condition: Option<ReadCondition>,
}

/// Token counts of a memory's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TokenCounts {
    pub user_confirmed: u32,
    pub llm_inferred: u32,
    pub general_summary: u32,
    pub total: u32,
}

/// How fresh a memory is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Freshness {
    /// The update (job_id) folded in last.
    pub last_applied_job_id: String,
    /// Updates accepted for this chat and not yet applied: when above 0, the
    /// latest messages are not in the memory yet.
    pub pending_jobs: u32,
}

/// Outcome of a read-your-writes condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadCondition {
    /// The memory has min_version / includes after_job_id.
    Met,
    /// The wait ended first; the memory is the current one.
    TimedOut,
    /// after_job_id failed (see update_status); the memory is the current one.
    JobFailed,
}

impl TryFrom<GetMemoryResponse> for ChatMemory {
    type Error = ToolError;

    fn try_from(response: GetMemoryResponse) -> Result<Self, ToolError> {
        let memory = response.memory.ok_or(ToolError::Contract("memory"))?;
        let tokens = memory.token_counts.unwrap_or_default();
        let freshness = response.freshness.unwrap_or_default();
        let condition = match ProtoReadCondition::try_from(response.condition) {
            Ok(ProtoReadCondition::Unspecified) => None,
            Ok(ProtoReadCondition::Met) => Some(ReadCondition::Met),
            Ok(ProtoReadCondition::TimedOut) => Some(ReadCondition::TimedOut),
            Ok(ProtoReadCondition::JobFailed) => Some(ReadCondition::JobFailed),
            Err(_) => return Err(ToolError::Contract("condition")),
        };
        Ok(Self {
            chat_id: response.chat_id,
            user_confirmed: memory.user_confirmed,
            llm_inferred: memory.llm_inferred,
            general_summary: memory.general_summary,
            version: memory.version,
            updated_at: memory.updated_at.as_ref().and_then(rfc3339),
            tokens: TokenCounts {
                user_confirmed: tokens.user_confirmed,
                llm_inferred: tokens.llm_inferred,
                general_summary: tokens.general_summary,
                total: tokens.total,
            },
            freshness: Freshness {
                last_applied_job_id: freshness.last_applied_job_id,
                pending_jobs: freshness.pending_jobs,
            },
            condition,
        })
    }
}

/// Arguments of `add_messages`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct AddMessagesInput {
    /// The chat (conversation) id: 1-128 characters of A-Z a-z 0-9 . _ : @ -.
    pub chat_id: String,
    /// The turn's new messages, oldest first (1-100; each at most 32 KiB).
    pub messages: Vec<MessageInput>,
    /// The turn's id. Sending the same key again for the same chat (a retry)
    /// returns the same job_id and adds nothing; the same key with other
    /// messages is refused. At most 128 printable ASCII characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct MessageInput {
    /// Who wrote it: `user`, `assistant`, `system` or `tool`.
    #[schemars(extend("enum" = ["user", "assistant", "system", "tool"]))]
    pub role: String,
    /// The message text, as written.
    pub content: String,
}

impl TryFrom<AddMessagesInput> for UpdateMemoryRequest {
    type Error = ToolError;

    fn try_from(input: AddMessagesInput) -> Result<Self, ToolError> {
        let messages = input
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                Ok(ChatMessage {
                    role: role(&m.role, i)? as i32,
                    content: m.content,
                    ..ChatMessage::default()
                })
            })
            .collect::<Result<Vec<_>, ToolError>>()?;
        Ok(Self {
            chat_id: input.chat_id,
            messages,
            idempotency_key: input.idempotency_key.unwrap_or_default(),
        })
    }
}

fn role(name: &str, index: usize) -> Result<ProtoRole, ToolError> {
    match name.trim().to_ascii_lowercase().as_str() {
        "user" => Ok(ProtoRole::User),
        "assistant" => Ok(ProtoRole::Assistant),
        "system" => Ok(ProtoRole::System),
        "tool" => Ok(ProtoRole::Tool),
        _ => Err(ToolError::InvalidArgument {
            field: format!("messages[{index}].role"),
            reason: format!("unknown role {name:?}: one of user, assistant, system, tool"),
        }),
    }
}

/// An accepted update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AddMessagesOutput {
    /// The update's id: pass it to read_memory as after_job_id to read the
    /// memory that includes these messages, or to update_status.
    pub job_id: String,
    /// True when this call repeated an earlier one with the same
    /// idempotency_key: nothing was added again.
    pub deduplicated: bool,
}

impl From<UpdateMemoryResponse> for AddMessagesOutput {
    fn from(response: UpdateMemoryResponse) -> Self {
        Self {
            job_id: response.job_id,
            deduplicated: response.deduplicated,
        }
    }
}

/// Arguments of `update_status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
pub struct UpdateStatusInput {
    /// A job_id that add_messages returned.
    pub job_id: String,
}

impl From<UpdateStatusInput> for GetUpdateStatusRequest {
    fn from(input: UpdateStatusInput) -> Self {
        Self {
            job_id: input.job_id,
        }
    }
}

/// Where an update is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct UpdateStatus {
    pub job_id: String,
    pub chat_id: String,
    /// `queued`, `running`, `succeeded` (in the memory) or `failed`.
    pub state: JobState,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Why it failed (or the last transient error); null otherwise.
    pub error: Option<String>,
    /// The memory version this update produced, once it succeeded.
    pub resulting_version: Option<i64>,
    /// When the update was accepted (RFC 3339).
    pub accepted_at: Option<String>,
    /// When its state last changed (RFC 3339).
    pub updated_at: Option<String>,
}

/// State of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl TryFrom<GetUpdateStatusResponse> for UpdateStatus {
    type Error = ToolError;

    fn try_from(response: GetUpdateStatusResponse) -> Result<Self, ToolError> {
        let state = match ProtoJobState::try_from(response.state) {
            Ok(ProtoJobState::Queued) => JobState::Queued,
            Ok(ProtoJobState::Running) => JobState::Running,
            Ok(ProtoJobState::Succeeded) => JobState::Succeeded,
            Ok(ProtoJobState::Failed) => JobState::Failed,
            Ok(ProtoJobState::Unspecified) | Err(_) => return Err(ToolError::Contract("state")),
        };
        Ok(Self {
            job_id: response.job_id,
            chat_id: response.chat_id,
            state,
            attempts: response.attempts,
            error: Some(response.error).filter(|e| !e.is_empty()),
            resulting_version: response.resulting_version,
            accepted_at: response.accepted_at.as_ref().and_then(rfc3339),
            updated_at: response.updated_at.as_ref().and_then(rfc3339),
        })
    }
}

fn rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    chat_memory_proto::time::from_timestamp(ts).map(|t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use chat_memory_proto::v1::{Freshness as ProtoFreshness, Memory};

    use super::*;

    #[test]
    fn roles_map_by_name_and_an_unknown_one_names_its_field() {
        let input = AddMessagesInput {
            chat_id: "c1".into(),
            messages: vec![
                MessageInput {
                    role: "user".into(),
                    content: "hi".into(),
                },
                MessageInput {
                    role: "Assistant".into(),
                    content: "hello".into(),
                },
                MessageInput {
                    role: "bot".into(),
                    content: "?".into(),
                },
            ],
            idempotency_key: Some("turn-1".into()),
        };
        let refused = UpdateMemoryRequest::try_from(input.clone());
        match refused {
            Err(ToolError::InvalidArgument { field, .. }) => assert_eq!(field, "messages[2].role"),
            other => panic!("expected messages[2].role to be refused: {other:?}"),
        }

        let mut ok = input;
        ok.messages.truncate(2);
        let request = UpdateMemoryRequest::try_from(ok).map_err(|e| e.to_string());
        let roles = request
            .as_ref()
            .map(|r| r.messages.iter().map(|m| m.role).collect::<Vec<_>>());
        assert_eq!(
            roles,
            Ok(vec![ProtoRole::User as i32, ProtoRole::Assistant as i32])
        );
        assert_eq!(request.map(|r| r.idempotency_key), Ok("turn-1".to_owned()));
    }

    #[test]
    fn a_read_without_conditions_asks_for_none() {
        let request = GetMemoryRequest::from(ReadMemoryInput {
            chat_id: "c1".into(),
            min_version: None,
            after_job_id: None,
            wait_ms: None,
        });
        assert_eq!(
            request,
            GetMemoryRequest {
                chat_id: "c1".into(),
                ..GetMemoryRequest::default()
            }
        );
    }

    #[test]
    fn a_memory_answer_converts_with_its_condition_and_freshness() {
        let response = GetMemoryResponse {
            chat_id: "c1".into(),
            memory: Some(Memory {
                user_confirmed: "- plan PPO".into(),
                version: 3,
                ..Memory::default()
            }),
            freshness: Some(ProtoFreshness {
                last_applied_job_id: "j3".into(),
                pending_jobs: 1,
            }),
            condition: ProtoReadCondition::TimedOut as i32,
        };
        let memory = ChatMemory::try_from(response).map_err(|e| e.to_string());
        let memory = memory.as_ref();
        assert_eq!(memory.map(|m| m.version), Ok(3));
        assert_eq!(
            memory.map(|m| m.condition),
            Ok(Some(ReadCondition::TimedOut))
        );
        assert_eq!(memory.map(|m| m.freshness.pending_jobs), Ok(1));
    }

    #[test]
    fn an_answer_without_a_memory_breaks_the_contract() {
        let converted = ChatMemory::try_from(GetMemoryResponse::default());
        assert!(matches!(converted, Err(ToolError::Contract("memory"))));
    }
}
