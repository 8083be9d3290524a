//! Twenty realistic insurance-navigation chats (`fixtures/insurance_chats.json`),
//! each with the facts its layers must and must not contain, run through the
//! agent layer with the offline backend. Every user-stated fact must land in
//! `user_confirmed`; nothing the assistant only guessed may.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use summarizer_agent::{
    backend::offline::OfflineBackend,
    summarizer::SummarizerAgent,
    tool::{InputMessage, PriorMemory, SummarizeInput, SummarizeOutput, TokenLimits},
};

const FIXTURES: &str = include_str!("fixtures/insurance_chats.json");

#[derive(Deserialize)]
struct Chat {
    name: String,
    batches: Vec<Vec<InputMessage>>,
    user_confirmed_must: Vec<String>,
    user_confirmed_must_not: Vec<String>,
    llm_inferred_must: Vec<String>,
    llm_inferred_must_not: Vec<String>,
}

/// Violations of one chat's expectations, worded for the failure message.
fn check(chat: &Chat, out: &SummarizeOutput) -> Vec<String> {
    let has = |layer: &str, fact: &str| layer.to_lowercase().contains(&fact.to_lowercase());
    let mut problems = Vec::new();
    let rules = [
        (
            "user_confirmed",
            &out.user_confirmed,
            &chat.user_confirmed_must,
            true,
        ),
        (
            "user_confirmed",
            &out.user_confirmed,
            &chat.user_confirmed_must_not,
            false,
        ),
        (
            "llm_inferred",
            &out.llm_inferred,
            &chat.llm_inferred_must,
            true,
        ),
        (
            "llm_inferred",
            &out.llm_inferred,
            &chat.llm_inferred_must_not,
            false,
        ),
    ];
    for (name, layer, facts, wanted) in rules {
        for fact in facts {
            if has(layer, fact) != wanted {
                let verb = if wanted { "lacks" } else { "must not contain" };
                problems.push(format!("{name} {verb} {fact:?}"));
            }
        }
    }
    problems
}

#[tokio::test]
async fn every_user_fact_lands_in_user_confirmed_and_no_assistant_guess_does() -> anyhow::Result<()>
{
    let chats: Vec<Chat> = serde_json::from_str(FIXTURES)?;
    assert_eq!(chats.len(), 20);
    summarizer_agent::warm_tokenizer();
    let agent = SummarizerAgent::new(Arc::new(OfflineBackend::new()), Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut failures = Vec::new();
    println!("| chat | must (uc/li) | must-not (uc/li) | result |\n|---|---|---|---|");
    for chat in &chats {
        let mut prior: Option<PriorMemory> = None;
        let mut last = None;
        for messages in &chat.batches {
            let out = agent
                .summarize(SummarizeInput {
                    chat_id: chat.name.clone(),
                    prior: prior.take(),
                    messages: messages.clone(),
                    limits: TokenLimits::default(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", chat.name))?;
            prior = Some(PriorMemory {
                user_confirmed: out.user_confirmed.clone(),
                llm_inferred: out.llm_inferred.clone(),
                general_summary: out.general_summary.clone(),
                state_json: Some(out.state_json.clone()),
            });
            last = Some(out);
        }
        let out = last.ok_or_else(|| anyhow::anyhow!("{}: no batches", chat.name))?;
        let problems = check(chat, &out);
        println!(
            "| {} | {}/{} | {}/{} | {} |",
            chat.name,
            chat.user_confirmed_must.len(),
            chat.llm_inferred_must.len(),
            chat.user_confirmed_must_not.len(),
            chat.llm_inferred_must_not.len(),
            if problems.is_empty() {
                "ok".to_owned()
            } else {
                problems.join("; ")
            }
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  user_confirmed:\n{}\n  llm_inferred:\n{}",
                chat.name,
                problems.join("; "),
                out.user_confirmed,
                out.llm_inferred
            ));
        }
    }
    println!(
        "{} of {} chats pass",
        chats.len() - failures.len(),
        chats.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
