//! Behaviour of the offline backend on realistic health-insurance chats.

mod classification;
mod memory;

use super::OfflineBackend;
use crate::tool::{InputMessage, PriorMemory, Role, SummarizeInput, SummarizeOutput, TokenLimits};

pub(super) fn msg(id: &str, role: Role, content: &str) -> InputMessage {
    InputMessage::new(id, role, content)
}

pub(super) fn batch(
    messages: Vec<InputMessage>,
    prior: Option<&SummarizeOutput>,
) -> SummarizeInput {
    SummarizeInput {
        chat_id: "chat-42".into(),
        prior: prior.map(as_prior),
        messages,
        limits: TokenLimits::default(),
    }
}

pub(super) fn as_prior(output: &SummarizeOutput) -> PriorMemory {
    PriorMemory {
        user_confirmed: output.user_confirmed.clone(),
        llm_inferred: output.llm_inferred.clone(),
        general_summary: output.general_summary.clone(),
        state_json: Some(output.state_json.clone()),
    }
}

pub(super) fn summarize(input: &SummarizeInput) -> SummarizeOutput {
    match OfflineBackend::new().summarize_now(input) {
        Ok(output) => output,
        Err(e) => panic!("offline summarize failed: {e}"),
    }
}

pub(super) fn state(output: &SummarizeOutput) -> serde_json::Value {
    serde_json::from_str(&output.state_json).unwrap_or_default()
}

pub(super) fn first_batch() -> Vec<InputMessage> {
    vec![
        msg(
            "u1",
            Role::User,
            "Hi! My plan is the Blue Cross Silver PPO 2500 through my employer. My member ID is XKH448812.",
        ),
        msg(
            "a1",
            Role::Assistant,
            "Thanks. It sounds like you probably haven't met your deductible yet this year. Let me check what your plan covers.",
        ),
    ]
}
