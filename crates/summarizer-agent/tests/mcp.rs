//! The real agent on a loopback port, called the way other services call it:
//! through `AgentClient` (MCP over streamable HTTP) and gRPC health.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rmcp::{
    ServiceExt,
    model::ClientConfig,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use summarizer_agent::{
    AgentError,
    backend::{SummarizeFuture, SummarizerBackend, offline::OfflineBackend},
    client::{AgentClient, AgentClientError},
    server::{self, HEALTH_SERVICE_NAME},
    settings::Settings,
    tool::{InputMessage, Role, SummarizeInput, TokenLimits},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Generous: debug builds are slow, and these calls are expected to succeed.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A running agent and the means to stop it.
struct TestAgent {
    addr: SocketAddr,
    /// Resolves the agent's shutdown future.
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl TestAgent {
    /// The agent with the offline backend on `addr` (port 0 for any).
    async fn start(addr: &str) -> anyhow::Result<Self> {
        Self::start_with(addr, Arc::new(OfflineBackend::new())).await
    }

    async fn start_with(addr: &str, backend: Arc<dyn SummarizerBackend>) -> anyhow::Result<Self> {
        // Built once per process; keeps tokenizer start-up out of call timeouts.
        tokio::task::spawn_blocking(summarizer_agent::warm_tokenizer).await?;
        let listener = bind_within(addr, Duration::from_secs(10)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(server::run_with_backend(
            Settings::default(),
            backend,
            listener,
            shutdown,
        ));
        Ok(Self { addr, stop, task })
    }

    fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Shuts the agent down and waits until it has stopped serving.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .context("agent did not stop within 15 s")???;
        Ok(())
    }
}

/// Binds `addr`, retrying until `deadline` passes (a just-closed port can take a moment).
async fn bind_within(addr: &str, deadline: Duration) -> anyhow::Result<TcpListener> {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if start.elapsed() < deadline => {
                eprintln!("bind {addr} failed ({e}), retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context(format!("cannot bind {addr}")),
        }
    }
}

fn insurance_batch(chat_id: &str) -> SummarizeInput {
    let msg = |id: &str, role, content: &str| InputMessage::new(id, role, content);
    SummarizeInput {
        chat_id: chat_id.into(),
        prior: None,
        messages: vec![
            msg(
                "m1",
                Role::User,
                "My member ID is UHC-90210 and my plan is the UnitedHealthcare Choice Plus PPO.",
            ),
            msg(
                "m2",
                Role::Assistant,
                "It sounds like you probably have out-of-network coverage too.",
            ),
        ],
        limits: TokenLimits::default(),
    }
}

#[tokio::test]
async fn a_summarize_call_round_trips_through_the_real_server() -> anyhow::Result<()> {
    let agent = TestAgent::start("127.0.0.1:0").await?;
    let client = AgentClient::new(&agent.mcp_url(), CALL_TIMEOUT)?;

    let out = client.summarize(&insurance_batch("chat-1")).await?;

    assert!(
        out.user_confirmed.contains("UHC-90210"),
        "{}",
        out.user_confirmed
    );
    assert!(
        out.llm_inferred.contains("out-of-network coverage"),
        "{}",
        out.llm_inferred
    );
    assert!(
        out.general_summary.contains("Batch 1:"),
        "{}",
        out.general_summary
    );
    let counts = out.token_counts;
    assert_eq!(
        counts.total,
        counts.user_confirmed + counts.llm_inferred + counts.general_summary
    );
    assert!(counts.user_confirmed > 0);
    assert!(serde_json::from_str::<serde_json::Value>(&out.state_json).is_ok());
    agent.stop().await
}

#[tokio::test]
async fn many_tasks_can_share_one_client() -> anyhow::Result<()> {
    let agent = TestAgent::start("127.0.0.1:0").await?;
    let client = AgentClient::new(&agent.mcp_url(), CALL_TIMEOUT)?;

    let calls = (0..8).map(|n| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .summarize(&insurance_batch(&format!("chat-{n}")))
                .await
        })
    });
    for result in futures::future::join_all(calls).await {
        let out = result??;
        assert!(out.user_confirmed.contains("UHC-90210"));
    }
    agent.stop().await
}

#[tokio::test]
async fn the_tool_list_exposes_summarize_with_its_schemas() -> anyhow::Result<()> {
    let agent = TestAgent::start("127.0.0.1:0").await?;
    // This raw rmcp client builds its own reqwest client: rustls needs its provider.
    summarizer_agent::install_ring_provider();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(agent.mcp_url()),
    );
    let mcp = ClientConfig::default().serve(transport).await?;

    let tools = mcp.list_all_tools().await?;

    let tool = tools
        .iter()
        .find(|t| t.name == "summarize")
        .context("no summarize tool")?;
    assert!(
        tool.description
            .as_deref()
            .is_some_and(|d| d.contains("memory"))
    );
    let properties = tool
        .input_schema
        .get("properties")
        .context("input schema has no properties")?;
    for field in ["chat_id", "prior", "messages", "limits"] {
        assert!(
            properties.get(field).is_some(),
            "input schema lacks {field}: {properties}"
        );
    }
    let output = tool.output_schema.as_ref().context("no output schema")?;
    assert!(serde_json::to_string(output)?.contains("state_json"));
    mcp.cancel().await?;
    agent.stop().await
}

#[tokio::test]
async fn grpc_health_reports_serving_for_the_server_and_the_agent() -> anyhow::Result<()> {
    let agent = TestAgent::start("127.0.0.1:0").await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", agent.addr))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);

    for service in ["", HEALTH_SERVICE_NAME] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        assert_eq!(
            reply.into_inner().status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    agent.stop().await
}

#[tokio::test]
async fn a_client_keeps_working_after_the_agent_restarts_on_the_same_port() -> anyhow::Result<()> {
    let agent = TestAgent::start("127.0.0.1:0").await?;
    let addr = agent.addr.to_string();
    let client = AgentClient::new(&agent.mcp_url(), Duration::from_secs(5))?;
    client.summarize(&insurance_batch("before")).await?;

    // Restart with no call in between: the client's pooled connection is stale.
    agent.stop().await?;
    let agent = TestAgent::start(&addr).await?;
    let out = client.summarize(&insurance_batch("after-restart")).await?;
    assert!(out.user_confirmed.contains("UHC-90210"));

    // Calls while the agent is down fail as transient, then work again.
    agent.stop().await?;
    let while_down = client.summarize(&insurance_batch("down")).await;
    assert!(
        while_down
            .as_ref()
            .is_err_and(AgentClientError::is_transient),
        "{while_down:?}"
    );
    let agent = TestAgent::start(&addr).await?;
    let out = client.summarize(&insurance_batch("after-outage")).await?;
    assert!(out.user_confirmed.contains("UHC-90210"));
    agent.stop().await
}

#[tokio::test]
async fn a_call_to_a_dead_address_is_unavailable_within_the_timeout() -> anyhow::Result<()> {
    // A port that was just free: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let timeout = Duration::from_secs(2);
    let client = AgentClient::new(&format!("http://{addr}/mcp"), timeout)?;

    let started = Instant::now();
    let result = client.summarize(&insurance_batch("dead")).await;

    assert!(
        matches!(result, Err(AgentClientError::Unavailable(_))),
        "{result:?}"
    );
    assert!(result.as_ref().is_err_and(AgentClientError::is_transient));
    assert!(
        started.elapsed() < timeout + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// The offline backend behind a gate: calls wait until the test opens it.
struct GatedBackend {
    gate: Arc<tokio::sync::Semaphore>,
    inner: OfflineBackend,
}

impl SummarizerBackend for GatedBackend {
    fn name(&self) -> &'static str {
        "gated-offline"
    }

    fn summarize(&self, input: SummarizeInput) -> SummarizeFuture<'_> {
        Box::pin(async move {
            let _permit = self.gate.acquire().await;
            self.inner.summarize(input).await
        })
    }
}

#[tokio::test]
async fn a_call_the_agent_does_not_answer_in_time_is_unavailable_and_the_client_recovers()
-> anyhow::Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let backend = Arc::new(GatedBackend {
        gate: Arc::clone(&gate),
        inner: OfflineBackend::new(),
    });
    let agent = TestAgent::start_with("127.0.0.1:0", backend).await?;
    let client = AgentClient::new(&agent.mcp_url(), Duration::from_millis(500))?;

    let started = Instant::now();
    let stuck = client.summarize(&insurance_batch("slow")).await;
    assert!(
        matches!(stuck, Err(AgentClientError::Unavailable(_))),
        "{stuck:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    gate.add_permits(1_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.summarize(&insurance_batch("fast")).await {
            Ok(out) => {
                assert!(out.user_confirmed.contains("UHC-90210"));
                break;
            }
            Err(e) if e.is_transient() && Instant::now() < deadline => continue,
            Err(e) => bail!("client did not recover: {e}"),
        }
    }
    agent.stop().await
}

#[tokio::test]
async fn invalid_input_is_rejected_permanently() -> anyhow::Result<()> {
    let agent = TestAgent::start("127.0.0.1:0").await?;
    let client = AgentClient::new(&agent.mcp_url(), CALL_TIMEOUT)?;

    let result = client.summarize(&insurance_batch("")).await;

    assert!(
        matches!(result, Err(AgentClientError::Rejected { .. })),
        "{result:?}"
    );
    assert!(!result.as_ref().is_err_and(AgentClientError::is_transient));
    agent.stop().await
}

/// A backend that always answers with `error`.
struct FailingBackend(fn() -> summarizer_agent::backend::BackendError);

impl SummarizerBackend for FailingBackend {
    fn name(&self) -> &'static str {
        "failing"
    }

    fn summarize(&self, _input: SummarizeInput) -> SummarizeFuture<'_> {
        let error = (self.0)();
        Box::pin(async move { Err(error) })
    }
}

#[tokio::test]
async fn a_providers_rate_limit_reaches_the_client_with_its_retry_after_and_an_outage_as_unavailable()
-> anyhow::Result<()> {
    use summarizer_agent::backend::BackendError;
    for (make, rate_limited) in [
        (
            (|| BackendError::RateLimited {
                reason: "model endpoint answered 429".into(),
                retry_after: Some(Duration::from_millis(1_500)),
            }) as fn() -> BackendError,
            true,
        ),
        (
            (|| BackendError::Unavailable("model endpoint answered 503".into()))
                as fn() -> BackendError,
            false,
        ),
    ] {
        let agent = TestAgent::start_with("127.0.0.1:0", Arc::new(FailingBackend(make))).await?;
        let client = AgentClient::new(&agent.mcp_url(), Duration::from_secs(5))?;
        let result = client.summarize(&insurance_batch("limited")).await;
        if rate_limited {
            assert!(
                matches!(
                    result,
                    Err(AgentClientError::RateLimited { retry_after: Some(after), .. })
                        if after == Duration::from_millis(1_500)
                ),
                "{result:?}"
            );
        } else {
            assert!(
                matches!(result, Err(AgentClientError::Unavailable(_))),
                "{result:?}"
            );
        }
        assert!(result.as_ref().is_err_and(AgentClientError::is_transient));
        agent.stop().await?;
    }
    Ok(())
}
