//! The agent layer's guarantees, whatever the backend does.

use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    backend::{SummarizeFuture, offline::OfflineBackend},
    tool::{InputMessage, Role},
};

/// A backend returning a fixed output, or never answering.
struct Scripted(Option<SummarizeOutput>);

impl SummarizerBackend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn summarize(&self, _input: SummarizeInput) -> SummarizeFuture<'_> {
        let output = self.0.clone();
        Box::pin(async move {
            match output {
                Some(output) => Ok(output),
                None => std::future::pending().await,
            }
        })
    }
}

fn input(limits: TokenLimits) -> SummarizeInput {
    SummarizeInput {
        chat_id: "c1".into(),
        prior: None,
        messages: vec![InputMessage::new(
            "m1",
            Role::User,
            "My member ID is XKH448812.",
        )],
        limits,
    }
}

fn agent(backend: impl SummarizerBackend, timeout: Duration) -> SummarizerAgent {
    match SummarizerAgent::new(Arc::new(backend), timeout) {
        Ok(agent) => agent,
        Err(e) => panic!("agent: {e}"),
    }
}

fn lines(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("- {prefix} fact number {i} about the plan and the deductible"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn output_over_budget_is_trimmed_to_every_limit_and_the_total() {
    let greedy = SummarizeOutput {
        user_confirmed: lines("user", 60),
        llm_inferred: lines("guess", 60),
        general_summary: lines("summary", 60),
        // Lies about its counts: the agent recounts.
        token_counts: TokenCounts {
            user_confirmed: 1,
            llm_inferred: 1,
            general_summary: 1,
            total: 3,
        },
        state_json: "{}".into(),
        usage: None,
    };
    let limits = TokenLimits {
        user_confirmed: 200,
        llm_inferred: 100,
        general_summary: 150,
        total: 350,
    };
    let out = agent(Scripted(Some(greedy)), Duration::from_secs(5))
        .summarize(input(limits))
        .await;
    let out = match out {
        Ok(out) => out,
        Err(e) => panic!("summarize: {e}"),
    };
    let counts =
        [&out.user_confirmed, &out.llm_inferred, &out.general_summary].map(|s| count_tokens(s));
    assert!(
        counts[0] <= 200 && counts[1] <= 100 && counts[2] <= 150,
        "{counts:?}"
    );
    assert!(counts.iter().sum::<u32>() <= 350, "{counts:?}");
    assert_eq!(out.token_counts.total, counts.iter().sum::<u32>());
    assert!(out.user_confirmed.starts_with("- user fact number 0"));
    // The rolling summary keeps its newest lines.
    assert!(
        out.general_summary.is_empty()
            || out
                .general_summary
                .ends_with("number 59 about the plan and the deductible"),
        "{}",
        out.general_summary
    );
}

#[tokio::test]
async fn a_backend_that_never_answers_is_unavailable_within_the_deadline() {
    let started = std::time::Instant::now();
    let result = agent(Scripted(None), Duration::from_millis(200))
        .summarize(input(TokenLimits::default()))
        .await;
    assert!(
        matches!(result, Err(BackendError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_empty_chat_id_is_refused_before_the_backend_runs() {
    let mut bad = input(TokenLimits::default());
    bad.chat_id = " ".into();
    let result = agent(Scripted(None), Duration::from_secs(5))
        .summarize(bad)
        .await;
    assert!(
        matches!(result, Err(BackendError::InvalidInput(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn offline_output_carries_token_accounting() {
    let result = agent(OfflineBackend::new(), Duration::from_secs(30))
        .summarize(input(TokenLimits::default()))
        .await;
    let usage = result.ok().and_then(|o| o.usage);
    assert!(
        usage.is_some_and(|u| u.prompt_tokens > 0 && u.completion_tokens > 0 && u.attempts == 1),
        "{usage:?}"
    );
}
