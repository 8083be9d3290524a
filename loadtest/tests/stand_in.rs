//! The summarizer agent's real `openai` backend against the stand-in model:
//! the stand-in's answers pass the agent's checks, and its concurrency cap
//! (429 + Retry-After) slows calls down without failing them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_memory_loadtest::stand_in::{StandIn, StandInConfig, StatsSnapshot};
use summarizer_agent::{
    backend::openai::{OpenAiBackend, OpenAiSettings},
    summarizer::SummarizerAgent,
    tool::{InputMessage, Role, SummarizeInput, TokenLimits},
};

/// An agent on the `openai` backend pointed at `stand_in`, with `deadline`
/// bounding each call.
fn agent(stand_in: &StandIn, deadline: Duration) -> anyhow::Result<SummarizerAgent> {
    let settings = OpenAiSettings {
        base_url: stand_in.base_url(),
        model: "stand-in".into(),
        api_key: None,
        max_output_tokens: 500,
    };
    let backend =
        OpenAiBackend::new(&settings, deadline, 3).map_err(|e| anyhow::anyhow!("backend: {e}"))?;
    SummarizerAgent::new(Arc::new(backend), deadline).map_err(|e| anyhow::anyhow!("agent: {e}"))
}

fn batch(chat: &str) -> SummarizeInput {
    SummarizeInput {
        chat_id: chat.into(),
        prior: None,
        messages: vec![
            InputMessage::new(
                "u1",
                Role::User,
                "My member ID is M00042. Claim CLM-0007 was billed at $170.",
            ),
            InputMessage::new(
                "a1",
                Role::Assistant,
                "It sounds like claim CLM-0007 may apply to your deductible.",
            ),
        ],
        limits: TokenLimits::default(),
    }
}

async fn stand_in(config: StandInConfig) -> anyhow::Result<StandIn> {
    Ok(StandIn::start("127.0.0.1:0", config).await?)
}

#[tokio::test]
async fn the_stand_ins_answer_becomes_a_memory_citing_the_batchs_messages() -> anyhow::Result<()> {
    // Arrange
    let model = stand_in(StandInConfig {
        latency_mean: Duration::from_millis(20),
        latency_sigma: 0.0,
        ..StandInConfig::default()
    })
    .await?;
    let agent = agent(&model, Duration::from_secs(10))?;

    // Act
    let out = agent
        .summarize(batch("chat-1"))
        .await
        .map_err(|e| anyhow::anyhow!("summarize: {e}"))?;

    // Assert
    assert!(
        out.user_confirmed.contains("M00042"),
        "{}",
        out.user_confirmed
    );
    assert!(
        out.llm_inferred.contains("deductible"),
        "{}",
        out.llm_inferred
    );
    assert_eq!(
        out.usage.map(|u| u.attempts),
        Some(1),
        "accepted on the first attempt"
    );
    let stats = model.stats();
    assert_eq!(
        (stats.calls, stats.completions, stats.bad_requests),
        (1, 1, 0)
    );
    Ok(())
}

#[tokio::test]
async fn a_call_over_the_cap_returns_at_once_rate_limited_with_the_providers_retry_after()
-> anyhow::Result<()> {
    // Arrange: one call at a time, held 800 ms; a call over the cap gets 429
    // with Retry-After: 30.
    let model = stand_in(StandInConfig {
        latency_mean: Duration::from_millis(800),
        latency_sigma: 0.0,
        max_concurrency: 1,
        retry_after_secs: 30,
        ..StandInConfig::default()
    })
    .await?;
    let agent = agent(&model, Duration::from_secs(10))?;

    // Act
    let (first, (second, second_took)) = tokio::join!(agent.summarize(batch("a")), async {
        // Let the first call take the only slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        (agent.summarize(batch("b")).await, started.elapsed())
    });

    // Assert: the agent does not wait out the limit itself (the worker does):
    // the refusal comes back before the first call ends, carrying the delay.
    assert!(first.is_ok(), "{first:?}");
    assert!(
        matches!(
            &second,
            Err(summarizer_agent::backend::BackendError::RateLimited {
                retry_after: Some(after),
                ..
            }) if *after == Duration::from_secs(30)
        ),
        "{second:?}"
    );
    assert!(second_took < Duration::from_millis(700), "{second_took:?}");
    let stats = model.stats();
    assert_eq!(
        (stats.rate_limited, stats.completions, stats.max_in_flight),
        (1, 1, 1),
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_stats_endpoint_reports_calls_and_calls_in_flight() -> anyhow::Result<()> {
    // Arrange
    let model = stand_in(StandInConfig {
        latency_mean: Duration::from_millis(10),
        latency_sigma: 0.0,
        ..StandInConfig::default()
    })
    .await?;
    let agent = agent(&model, Duration::from_secs(10))?;
    agent
        .summarize(batch("c"))
        .await
        .map_err(|e| anyhow::anyhow!("summarize: {e}"))?;

    // Act: a plain HTTP/1.1 GET, as a benchmark script would send.
    let body = http_get(model.addr(), "/stats").await?;

    // Assert
    let stats: StatsSnapshot = serde_json::from_str(&body)?;
    assert_eq!(stats, model.stats());
    assert_eq!(
        (stats.calls, stats.in_flight, stats.max_in_flight),
        (1, 0, 1)
    );
    Ok(())
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no body in {response:?}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_owned())
}

#[tokio::test]
async fn an_injected_server_error_reaches_the_agent_as_a_transient_failure() -> anyhow::Result<()> {
    // Arrange: every admitted call fails with HTTP 500.
    let model = stand_in(StandInConfig {
        latency_mean: Duration::from_millis(10),
        latency_sigma: 0.0,
        error_rate: 1.0,
        ..StandInConfig::default()
    })
    .await?;
    let agent = agent(&model, Duration::from_secs(5))?;

    // Act
    let result = agent.summarize(batch("d")).await;

    // Assert
    assert!(
        matches!(
            &result,
            Err(summarizer_agent::backend::BackendError::Unavailable(_))
        ),
        "{result:?}"
    );
    let stats = model.stats();
    assert_eq!(
        (stats.calls, stats.server_errors, stats.completions),
        (1, 1, 0)
    );
    Ok(())
}
