//! Drives the agent through a conversation, one batch per call, carrying the
//! memory (text layers and `state_json`) from each call to the next exactly
//! as the worker does.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use summarizer_agent::{
    backend::offline::OfflineBackend,
    summarizer::SummarizerAgent,
    tool::{InputMessage, PriorMemory, Role, SummarizeInput, SummarizeOutput, TokenLimits},
};

use crate::dataset::{Conversation, Message};

/// How messages are grouped into calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One call per session (the eval's protocol).
    PerSession,
    /// Fixed-size batches across sessions (latency measurements).
    Fixed(usize),
}

/// The final memory of one conversation and what each call took.
#[derive(Debug, Clone)]
pub struct Driven {
    pub memory: SummarizeOutput,
    pub latencies: Vec<Duration>,
}

/// The offline backend behind the agent layer, with a deadline generous
/// enough for debug builds.
///
/// # Errors
/// When the agent cannot be built.
pub fn offline_agent() -> anyhow::Result<SummarizerAgent> {
    SummarizerAgent::new(Arc::new(OfflineBackend::new()), Duration::from_secs(120))
        .map_err(|e| anyhow::anyhow!("building the agent: {e}"))
}

/// Feeds `conversation` to `agent` batch by batch.
///
/// # Errors
/// When a call fails.
pub async fn drive(
    agent: &SummarizerAgent,
    conversation: &Conversation,
    limits: TokenLimits,
    batching: Batching,
) -> anyhow::Result<Driven> {
    let mut prior: Option<PriorMemory> = None;
    let mut last: Option<SummarizeOutput> = None;
    let mut latencies = Vec::new();
    for batch in batches(conversation, batching) {
        let input = SummarizeInput {
            chat_id: conversation.conv_id.clone(),
            prior: prior.take(),
            messages: batch,
            limits,
        };
        let started = Instant::now();
        let output = agent
            .summarize(input)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("summarizing {}", conversation.conv_id))?;
        latencies.push(started.elapsed());
        prior = Some(PriorMemory {
            user_confirmed: output.user_confirmed.clone(),
            llm_inferred: output.llm_inferred.clone(),
            general_summary: output.general_summary.clone(),
            state_json: Some(output.state_json.clone()),
        });
        last = Some(output);
    }
    let memory = last.with_context(|| format!("{} has no messages", conversation.conv_id))?;
    Ok(Driven { memory, latencies })
}

fn batches(conversation: &Conversation, batching: Batching) -> Vec<Vec<InputMessage>> {
    let mut out = Vec::new();
    for (s, session) in conversation.sessions.iter().enumerate() {
        let converted = session.messages.iter().enumerate().map(|(m, message)| {
            let fallback = format!("s{}#{m}", s + 1);
            input_message(message, session.ts.as_deref(), fallback)
        });
        match batching {
            Batching::PerSession => out.push(converted.collect()),
            Batching::Fixed(_) => {
                if out.is_empty() {
                    out.push(Vec::new());
                }
                if let Some(all) = out.last_mut() {
                    all.extend(converted);
                }
            }
        }
    }
    match batching {
        Batching::PerSession => out.retain(|b| !b.is_empty()),
        Batching::Fixed(size) => {
            let all = out.into_iter().flatten().collect::<Vec<_>>();
            out = all.chunks(size.max(1)).map(<[_]>::to_vec).collect();
        }
    }
    out
}

fn input_message(message: &Message, session_ts: Option<&str>, fallback_id: String) -> InputMessage {
    let role = match message.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        _ => Role::Tool,
    };
    let mut input = InputMessage::new(
        message.turn_id.clone().unwrap_or(fallback_id),
        role,
        message.content.clone(),
    );
    input.sent_at = message.ts.clone().or_else(|| session_ts.map(str::to_owned));
    input
}
