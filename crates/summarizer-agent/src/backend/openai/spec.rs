//! The summarizer as an [`AgentSpec`]: prompt files, the model's view of a
//! batch, and the draft it must answer with.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    agent::{
        AgentInfo,
        prompt::{Prompts, data_block},
        runner::AgentSpec,
        schema::InvalidOutput,
    },
    backend::BackendError,
    memory::state::{Field, MemoryState},
    tool::{InputMessage, Role},
};

const PROMPTS: Prompts = Prompts {
    system: include_str!("../../../prompts/summarizer-system.md"),
    instructions: include_str!("../../../prompts/summarizer-instructions.md"),
    examples: include_str!("../../../prompts/summarizer-examples.md"),
};

/// Changes to a chat's memory found in one batch of messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryDraft {
    /// Facts the user stated about themselves in these messages, each one
    /// short first-person sentence, citing the user messages it comes from.
    pub user_facts: Vec<DraftItem>,
    /// Guesses the assistant made about the user that the user has not
    /// confirmed, citing the assistant messages.
    pub assistant_inferences: Vec<DraftItem>,
    /// Known `llm_inferred` items the user confirmed in these messages.
    pub confirmed: Vec<DraftConfirmation>,
    /// Keys of known `user_confirmed` items that a newer user statement in
    /// these messages corrects.
    pub corrected_keys: Vec<String>,
    /// One or two sentences on what this batch was about.
    pub summary: String,
}

/// One statement and the messages it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftItem {
    /// The statement.
    pub text: String,
    /// Ids of the messages it comes from (at least one).
    pub message_ids: Vec<String>,
}

/// A known inference the user confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftConfirmation {
    /// Key of the known `llm_inferred` item, e.g. "K2".
    pub key: String,
    /// Id of the user message that confirms it.
    pub message_id: String,
    /// The fact as the user's own first-person sentence.
    pub text: String,
}

/// A known item as the model sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KnownItem {
    pub key: String,
    pub layer: &'static str,
    pub text: String,
}

/// A message as the model sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ViewMessage {
    pub id: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    pub content: String,
}

/// One batch as the model sees it, plus what the checks need.
#[derive(Debug, Clone)]
pub struct DraftRequest {
    pub(crate) known: Vec<KnownItem>,
    pub(crate) messages: Vec<ViewMessage>,
    /// Role of every message id in the batch.
    pub(crate) roles: BTreeMap<String, Role>,
}

impl DraftRequest {
    pub(crate) fn new(state: &MemoryState, messages: &[InputMessage]) -> Self {
        let known = state
            .items
            .iter()
            .filter(|i| i.field != Field::GeneralSummary)
            .enumerate()
            .map(|(n, i)| KnownItem {
                key: format!("K{}", n + 1),
                layer: match i.field {
                    Field::UserConfirmed => "user_confirmed",
                    Field::LlmInferred | Field::GeneralSummary => "llm_inferred",
                },
                text: i.text.clone(),
            })
            .collect();
        Self {
            known,
            messages: messages
                .iter()
                .map(|m| ViewMessage {
                    id: m.id.clone(),
                    role: m.role,
                    sent_at: m.sent_at.clone(),
                    content: m.content.clone(),
                })
                .collect(),
            roles: messages.iter().map(|m| (m.id.clone(), m.role)).collect(),
        }
    }

    pub(crate) fn known(&self, key: &str) -> Option<&KnownItem> {
        self.known.iter().find(|k| k.key == key)
    }

    /// True when `ids` is non-empty, all in the batch, and one has `role`.
    pub(crate) fn cites(&self, ids: &[String], role: Role) -> bool {
        !ids.is_empty()
            && ids.iter().all(|id| self.roles.contains_key(id))
            && ids.iter().any(|id| self.roles.get(id) == Some(&role))
    }
}

/// The summarizer agent's spec.
#[derive(Debug, Clone, Copy, Default)]
pub struct SummarizerSpec;

impl SummarizerSpec {
    pub fn new() -> Self {
        Self
    }
}

impl AgentSpec for SummarizerSpec {
    type Input = DraftRequest;
    type Output = MemoryDraft;

    fn info(&self) -> AgentInfo {
        crate::agent::SUMMARIZER
    }

    fn prompts(&self) -> &Prompts {
        &PROMPTS
    }

    fn schema_name(&self) -> &'static str {
        "memory_draft"
    }

    fn render_input(&self, input: &DraftRequest) -> Result<String, BackendError> {
        let encoding =
            |e: serde_json::Error| BackendError::InvalidInput(format!("cannot encode: {e}"));
        let memory = data_block("memory", &input.known).map_err(encoding)?;
        let messages = data_block("messages", &input.messages).map_err(encoding)?;
        Ok(format!(
            "Known memory:\n{memory}\n\nNew messages (oldest first):\n{messages}\n\n\
             Answer with the JSON object for this batch."
        ))
    }

    fn check(&self, input: &DraftRequest, draft: &MemoryDraft) -> Result<(), InvalidOutput> {
        let mut problems = Vec::new();
        for fact in &draft.user_facts {
            if !input.cites(&fact.message_ids, Role::User) {
                problems.push(format!(
                    "user fact {:?} must cite at least one user message of this batch and only ids of this batch",
                    fact.text
                ));
            }
        }
        for guess in &draft.assistant_inferences {
            if !input.cites(&guess.message_ids, Role::Assistant) {
                problems.push(format!(
                    "inference {:?} must cite at least one assistant message of this batch",
                    guess.text
                ));
            }
        }
        for confirmation in &draft.confirmed {
            let known = input.known(&confirmation.key);
            if known.is_none_or(|k| k.layer != "llm_inferred")
                || !input.cites(std::slice::from_ref(&confirmation.message_id), Role::User)
            {
                problems.push(format!(
                    "confirmation of {:?} must name a known llm_inferred key and a user message of this batch",
                    confirmation.key
                ));
            }
        }
        for key in &draft.corrected_keys {
            if input.known(key).is_none_or(|k| k.layer != "user_confirmed") {
                problems.push(format!(
                    "corrected key {key:?} is not a known user_confirmed item"
                ));
            }
        }
        let empty = draft
            .user_facts
            .iter()
            .chain(&draft.assistant_inferences)
            .any(|i| i.text.trim().is_empty());
        if empty {
            problems.push("statements must not be empty".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidOutput(problems.join("; ")))
        }
    }
}
