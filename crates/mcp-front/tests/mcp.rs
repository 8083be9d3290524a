//! The MCP front on the real stack (Postgres, NATS, every service in-process),
//! called the way an MCP agent calls it: rmcp's own client over streamable
//! HTTP, with a bearer token minted for a tenant and user (or without one).

use std::net::SocketAddr;
use std::time::Duration;

use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig},
    service::{RunningService, ServiceError},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use chat_memory_proto::v1::QueryAuditRequest;
use mcp_front::{FrontError, settings::Settings};
use test_support::requests::get;
use test_support::{StackOptions, TestStack, auth};

const READ_WRITE: &[&str] = &["memory:read", "memory:write"];
/// Long enough never to be the reason a test passes.
const WAIT_MS: u32 = 10_000;

/// The front on a loopback port, calling `gateway`.
struct Front {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), FrontError>>,
}

impl Front {
    async fn start(gateway: SocketAddr) -> Self {
        Self::start_with(gateway, service_kit::tls::ServerTls::default()).await
    }

    /// The front serving `tls` (plain HTTP when it is off).
    async fn start_with(gateway: SocketAddr, tls: service_kit::tls::ServerTls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let mut settings = Settings::default();
        settings.gateway.url = format!("http://{gateway}");
        settings.tls = tls;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mcp_front::server::run(settings, listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// An MCP session presenting `token`.
    async fn client(&self, token: &str) -> RunningService<RoleClient, ClientConfig> {
        self.try_client(Some(token))
            .await
            .unwrap_or_else(|e| panic!("MCP initialisation failed: {e}"))
    }

    async fn try_client(
        &self,
        token: Option<&str>,
    ) -> Result<RunningService<RoleClient, ClientConfig>, String> {
        self.client_with(token, std::collections::HashMap::new())
            .await
    }

    /// An MCP session presenting `token` and these HTTP headers on every request.
    async fn client_with(
        &self,
        token: Option<&str>,
        headers: std::collections::HashMap<http::HeaderName, http::HeaderValue>,
    ) -> Result<RunningService<RoleClient, ClientConfig>, String> {
        // rmcp's client builds a reqwest client: rustls (when a workspace
        // build enables it) needs its provider first.
        summarizer_contract::tls::install_ring_provider();
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(self.url()).custom_headers(headers);
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        ClientConfig::default()
            .serve(StreamableHttpClientTransport::from_config(config))
            .await
            .map_err(|e| e.to_string())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let stopped = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "the front did not stop cleanly: {stopped:?}"
        );
    }
}

async fn call(
    mcp: &RunningService<RoleClient, ClientConfig>,
    tool: &'static str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments must be a JSON object");
    };
    mcp.call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
}

/// The structured content of a successful call.
async fn ok(
    mcp: &RunningService<RoleClient, ClientConfig>,
    tool: &'static str,
    args: Value,
) -> Value {
    let result = call(mcp, tool, args.clone())
        .await
        .unwrap_or_else(|e| panic!("{tool}({args}) failed at the protocol level: {e}"));
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool}({args}) returned a tool error: {:?}",
        result.structured_content
    );
    result
        .structured_content
        .unwrap_or_else(|| panic!("{tool} returned no structured content"))
}

/// The structured content of a tool error (`isError: true`).
async fn tool_error(
    mcp: &RunningService<RoleClient, ClientConfig>,
    tool: &'static str,
    args: Value,
) -> Value {
    let result = call(mcp, tool, args.clone())
        .await
        .unwrap_or_else(|e| panic!("{tool}({args}) failed at the protocol level: {e}"));
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool}({args}) succeeded: {:?}",
        result.structured_content
    );
    result
        .structured_content
        .unwrap_or_else(|| panic!("{tool}'s error has no structured content"))
}

fn turn(user: &str, assistant: &str) -> Value {
    json!([
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ])
}

fn chat_id(name: &str) -> String {
    format!("mcp-{name}-{}", test_support::unique_suffix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tool_list_offers_three_tools_saying_when_to_call_them() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let front = Front::start(stack.gateway_addr).await;
    let mcp = front
        .client(&auth::mint(auth::TENANT, auth::USER, READ_WRITE))
        .await;

    let tools = mcp
        .list_all_tools()
        .await
        .unwrap_or_else(|e| panic!("tools/list: {e}"));

    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["add_messages", "read_memory", "update_status"]);
    let expectations: [(&str, &str, &[&str]); 3] = [
        (
            "read_memory",
            "before answering",
            &["chat_id", "min_version", "after_job_id", "wait_ms"],
        ),
        (
            "add_messages",
            "after each turn",
            &["chat_id", "messages", "idempotency_key"],
        ),
        ("update_status", "job_id", &["job_id"]),
    ];
    for (name, when, fields) in expectations {
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        let description = tool.description.as_deref().unwrap_or_default();
        assert!(description.contains(when), "{name}: {description}");
        let properties = tool
            .input_schema
            .get("properties")
            .cloned()
            .unwrap_or_default();
        for field in fields {
            let described = properties[*field]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                !described.is_empty(),
                "{name}.{field} has no description: {properties}"
            );
        }
        assert!(tool.output_schema.is_some(), "{name} has no output schema");
    }
    let read = tools.iter().find(|t| t.name == "read_memory");
    let output = read
        .and_then(|t| t.output_schema.as_ref())
        .map(|s| Value::Object((**s).clone()))
        .unwrap_or_default();
    for field in [
        "user_confirmed",
        "llm_inferred",
        "general_summary",
        "version",
        "freshness",
    ] {
        assert!(
            output["properties"][field].is_object(),
            "read_memory's output lacks {field}: {output}"
        );
    }

    mcp.cancel().await.ok();
    front.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_added_through_mcp_are_read_back_once_their_job_is_applied() {
    let stack = TestStack::start().await;
    let front = Front::start(stack.gateway_addr).await;
    let mcp = front
        .client(&auth::mint(auth::TENANT, auth::USER, READ_WRITE))
        .await;
    let chat = chat_id("roundtrip");
    let messages = turn(
        "Hi, I'm on the Aetna Choice POS II plan and my member ID is W123456789.",
        "Thanks. It sounds like you may have already met your deductible this year.",
    );

    let added = ok(
        &mcp,
        "add_messages",
        json!({"chat_id": chat, "messages": messages, "idempotency_key": "turn-1"}),
    )
    .await;
    let job_id = added["job_id"].as_str().unwrap_or_default().to_owned();
    assert!(!job_id.is_empty(), "{added}");
    assert_eq!(added["deduplicated"], false);

    let memory = ok(
        &mcp,
        "read_memory",
        json!({"chat_id": chat, "after_job_id": job_id, "wait_ms": WAIT_MS}),
    )
    .await;

    assert_eq!(memory["condition"], "met", "{memory}");
    assert_eq!(memory["chat_id"], chat.as_str());
    assert_eq!(memory["version"], 1);
    assert_eq!(memory["freshness"]["last_applied_job_id"], job_id.as_str());
    let confirmed = memory["user_confirmed"].as_str().unwrap_or_default();
    let inferred = memory["llm_inferred"].as_str().unwrap_or_default();
    assert!(confirmed.contains("W123456789"), "{memory}");
    assert!(inferred.contains("deductible"), "{memory}");
    assert!(
        !confirmed.contains("deductible"),
        "a guess became a fact: {memory}"
    );
    assert!(
        memory["tokens"]["total"].as_u64().unwrap_or(0) > 0,
        "{memory}"
    );

    // A retry of the turn (same key) adds nothing and returns the same job.
    let retried = ok(
        &mcp,
        "add_messages",
        json!({"chat_id": chat, "messages": messages, "idempotency_key": "turn-1"}),
    )
    .await;
    assert_eq!(retried["job_id"], job_id.as_str());
    assert_eq!(retried["deduplicated"], true);

    let status = ok(&mcp, "update_status", json!({"job_id": job_id})).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["resulting_version"], 1);
    assert_eq!(status["chat_id"], chat.as_str());

    // The same memory, the same chat, through the gRPC API with the same identity.
    let mut grpc = stack.gateway().await;
    let direct = grpc
        .get_memory(get(&chat))
        .await
        .unwrap_or_else(|s| panic!("GetMemory: {s:?}"))
        .into_inner();
    assert_eq!(
        direct.memory.map(|m| m.user_confirmed).unwrap_or_default(),
        confirmed
    );

    mcp.cancel().await.ok();
    front.stop().await;
    stack.shutdown().await;
}

/// With `tls.*` set the front serves TLS: an agent trusting its CA works
/// through it, even while silent connections hold handshakes open (each
/// handshake runs on its own, so they stop nobody), and neither plain HTTP
/// nor a client that does not trust the certificate gets an answer (a bearer
/// token never crosses in clear text).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_front_serves_tls_and_tool_calls_work_over_it_but_not_over_plain_http() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let pki = test_support::pki::TestPki::generate();
    let front = Front::start_with(stack.gateway_addr, pki.server_tls(false)).await;
    summarizer_contract::tls::install_ring_provider();
    let ca = std::fs::read(pki.path("ca.crt")).unwrap_or_else(|e| panic!("ca.crt: {e}"));
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap_or_else(|e| panic!("{e}"))])
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let https = format!("https://{}/mcp", front.addr);
    // Connections that never start their handshake: each holds one handshake
    // open until its 5 s timeout.
    let mut silent = Vec::new();
    for _ in 0..32 {
        silent.push(
            tokio::net::TcpStream::connect(front.addr)
                .await
                .unwrap_or_else(|e| panic!("connect: {e}")),
        );
    }
    let token = auth::mint(auth::TENANT, auth::USER, READ_WRITE);
    let config = StreamableHttpClientTransportConfig::with_uri(https.clone()).auth_header(token);
    let chat = chat_id("over-tls");
    // Well inside the silent handshakes' 5 s: a listener that waited for
    // them would not answer in time.
    let added = tokio::time::timeout(Duration::from_secs(4), async {
        let mcp = ClientConfig::default()
            .serve(StreamableHttpClientTransport::with_client(trusting, config))
            .await
            .unwrap_or_else(|e| panic!("MCP over TLS: {e}"));
        ok(
            &mcp,
            "add_messages",
            json!({"chat_id": chat, "messages": turn("My plan is the Gold PPO.", "Noted.")}),
        )
        .await
    })
    .await
    .unwrap_or_else(|_| panic!("no answer over TLS while silent connections were open"));
    drop(silent);
    assert!(
        added["job_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{added}"
    );

    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}
    });
    for (name, url, client) in [
        (
            "plain HTTP",
            format!("http://{}/mcp", front.addr),
            reqwest::Client::new(),
        ),
        (
            "TLS trusting only the system's roots",
            https,
            reqwest::Client::new(),
        ),
    ] {
        let answer = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(answer.is_err(), "{name} got an answer: {answer:?}");
    }
    front.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_without_a_bearer_token_is_refused_with_401_before_any_tool_runs() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let front = Front::start(stack.gateway_addr).await;
    summarizer_contract::tls::install_ring_provider();
    let http = reqwest::Client::new();
    let chat = chat_id("no-token");
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}
    });
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "add_messages", "arguments": {
            "chat_id": chat, "messages": [{"role": "user", "content": "no token"}]}}
    });

    for (body, authorization) in [
        (&initialize, None),
        (&call, None),
        (&call, Some("Basic dXNlcjpwdw==")),
        (&call, Some("Bearer ")),
    ] {
        let mut request = http
            .post(front.url())
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /mcp: {e}"));

        assert_eq!(response.status(), 401, "authorization {authorization:?}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{challenge:?}");
    }

    // An MCP client without a token cannot even initialise.
    let refused = front.try_client(None).await.err().unwrap_or_default();
    assert!(refused.contains("Auth required"), "{refused}");

    // Nothing reached the gateway: the chat does not exist for anyone.
    let read = stack.gateway().await.get_memory(get(&chat)).await;
    assert_eq!(read.err().map(|s| s.code()), Some(tonic::Code::NotFound));

    front.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_token_is_refused_by_the_gateway_as_an_unauthenticated_tool_error() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let front = Front::start(stack.gateway_addr).await;
    let forged = auth::sign(
        &auth::claims(auth::TENANT, auth::USER, READ_WRITE),
        "not-the-gateways-key-0123456789abcdef",
    );
    let expired = auth::expired(auth::TENANT, auth::USER, READ_WRITE, 600);
    let read_only = auth::mint(auth::TENANT, auth::USER, &["memory:read"]);

    for (what, token, tool, args, code) in [
        (
            "forged",
            forged.as_str(),
            "read_memory",
            json!({"chat_id": "c1"}),
            "UNAUTHENTICATED",
        ),
        (
            "expired",
            expired.as_str(),
            "read_memory",
            json!({"chat_id": "c1"}),
            "UNAUTHENTICATED",
        ),
        (
            "not a JWT",
            "hello",
            "update_status",
            json!({"job_id": "x"}),
            "UNAUTHENTICATED",
        ),
        (
            "read-only",
            read_only.as_str(),
            "add_messages",
            json!({"chat_id": "c1", "messages": [{"role": "user", "content": "hi"}]}),
            "PERMISSION_DENIED",
        ),
    ] {
        // The front checks no signature: the session opens, the gateway refuses the call.
        let mcp = front.client(token).await;
        let error = tool_error(&mcp, tool, args).await;
        assert_eq!(error["code"], code, "{what}: {error}");
        assert!(!error["message"].as_str().unwrap_or_default().is_empty());
        mcp.cancel().await.ok();
    }

    front.stop().await;
    stack.shutdown().await;
}

/// The front forwards its caller's address (after the chain the caller came
/// with): a gateway that trusts the front limits failed authentications per
/// MCP client, not per front (DEBT D-7).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_through_the_front_are_limited_per_client_address() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        failed_auth_per_minute: 2,
        trusted_proxies: vec!["127.0.0.1".to_owned()],
        ..StackOptions::default()
    })
    .await;
    let front = Front::start(stack.gateway_addr).await;
    // As if behind the caller's own (trusted-by-nobody) proxy: the front
    // appends its peer, 127.0.0.1, which the gateway trusts, so the client is
    // the address before it.
    let from = |client: &'static str| {
        std::collections::HashMap::from([(
            http::HeaderName::from_static("x-forwarded-for"),
            http::HeaderValue::from_static(client),
        )])
    };
    let guesser = front
        .client_with(Some("not.a.token"), from("198.51.100.1"))
        .await
        .unwrap_or_else(|e| panic!("MCP initialisation failed: {e}"));
    let mut codes = Vec::new();
    for _ in 0..3 {
        let error = tool_error(&guesser, "read_memory", json!({"chat_id": "c1"})).await;
        codes.push(error["code"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        codes,
        ["UNAUTHENTICATED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"],
        "the third failure of one client is limited"
    );
    let other = front
        .client_with(Some("not.a.token"), from("198.51.100.2"))
        .await
        .unwrap_or_else(|e| panic!("MCP initialisation failed: {e}"));
    let error = tool_error(&other, "read_memory", json!({"chat_id": "c1"})).await;
    assert_eq!(
        error["code"], "UNAUTHENTICATED",
        "another client has its own budget: {error}"
    );
    guesser.cancel().await.ok();
    other.cancel().await.ok();
    front.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_chat_and_job_are_not_found() {
    let stack = TestStack::start().await;
    let front = Front::start(stack.gateway_addr).await;
    let owner = front
        .client(&auth::mint(auth::TENANT, auth::USER, READ_WRITE))
        .await;
    let other = front
        .client(&auth::mint("tenant-b", auth::USER, READ_WRITE))
        .await;
    let chat = chat_id("isolation");
    let added = ok(
        &owner,
        "add_messages",
        json!({"chat_id": chat, "messages": turn("My plan is Blue Shield PPO.", "Noted.")}),
    )
    .await;
    let job_id = added["job_id"].as_str().unwrap_or_default().to_owned();
    ok(
        &owner,
        "read_memory",
        json!({"chat_id": chat, "after_job_id": job_id, "wait_ms": WAIT_MS}),
    )
    .await;

    let read = tool_error(&other, "read_memory", json!({"chat_id": chat})).await;
    let status = tool_error(&other, "update_status", json!({"job_id": job_id})).await;

    assert_eq!(read["code"], "NOT_FOUND", "{read}");
    assert_eq!(status["code"], "NOT_FOUND", "{status}");
    assert!(
        !read.to_string().contains("Blue Shield"),
        "the other tenant saw content: {read}"
    );
    // The owner still reads it.
    let mine = ok(&owner, "read_memory", json!({"chat_id": chat})).await;
    assert_eq!(mine["version"], 1);

    owner.cancel().await.ok();
    other.cancel().await.ok();
    front.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_as_invalid_argument_naming_the_field() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let front = Front::start(stack.gateway_addr).await;
    let mcp = front
        .client(&auth::mint(auth::TENANT, auth::USER, READ_WRITE))
        .await;
    let user = |content: &str| json!([{"role": "user", "content": content}]);

    let cases = [
        (
            "add_messages",
            json!({"chat_id": "a/b", "messages": user("hi")}),
            "chat_id",
        ),
        (
            "add_messages",
            json!({"chat_id": "", "messages": user("hi")}),
            "chat_id",
        ),
        (
            "add_messages",
            json!({"chat_id": "c1", "messages": []}),
            "messages",
        ),
        (
            "add_messages",
            json!({"chat_id": "c1", "messages": [{"role": "bot", "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            "add_messages",
            json!({"chat_id": "c1", "messages": user("   ")}),
            "messages[0].content",
        ),
        (
            "add_messages",
            json!({"chat_id": "c1", "messages": user("hi"), "idempotency_key": "é".repeat(3)}),
            "idempotency_key",
        ),
        (
            "read_memory",
            json!({"chat_id": "c1", "wait_ms": 60_000}),
            "wait_ms",
        ),
        (
            "read_memory",
            json!({"chat_id": "c1", "min_version": -1}),
            "min_version",
        ),
        ("update_status", json!({"job_id": "not-a-job-id"}), "job_id"),
    ];
    for (tool, args, field) in cases {
        let error = tool_error(&mcp, tool, args.clone()).await;
        assert_eq!(error["code"], "INVALID_ARGUMENT", "{tool}({args}): {error}");
        assert_eq!(
            error["field_violations"][0]["field"], field,
            "{tool}({args}): {error}"
        );
    }

    // Arguments of the wrong JSON type never reach a tool: rmcp answers with a
    // tool error saying why, and the server keeps serving.
    let wrong_type = call(&mcp, "read_memory", json!({"chat_id": 5}))
        .await
        .unwrap_or_else(|e| panic!("a wrongly typed argument failed the protocol: {e}"));
    assert_eq!(wrong_type.is_error, Some(true));
    let text = format!("{:?}", wrong_type.content);
    assert!(
        text.contains("failed to deserialize parameters") && text.contains("expected a string"),
        "{text}"
    );
    let missing = tool_error(&mcp, "read_memory", json!({"chat_id": "never-written"})).await;
    assert_eq!(missing["code"], "NOT_FOUND");

    mcp.cancel().await.ok();
    front.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_through_mcp_are_audited_and_rate_limited_as_the_caller() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        rate_limit_per_minute: 3,
        ..StackOptions::default()
    })
    .await;
    let front = Front::start(stack.gateway_addr).await;
    let user = format!("mcp-user-{}", test_support::unique_suffix());
    let mcp = front
        .client(&auth::mint(auth::TENANT, &user, READ_WRITE))
        .await;
    let chat = chat_id("audit");

    let added = ok(
        &mcp,
        "add_messages",
        json!({"chat_id": chat, "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let job_id = added["job_id"].as_str().unwrap_or_default().to_owned();
    ok(&mcp, "update_status", json!({"job_id": job_id})).await;
    ok(&mcp, "update_status", json!({"job_id": job_id})).await;
    // The fourth call within the minute is over this user's budget of 3.
    let limited = tool_error(&mcp, "update_status", json!({"job_id": job_id})).await;
    assert_eq!(limited["code"], "RESOURCE_EXHAUSTED", "{limited}");
    assert!(
        limited["retry_after_secs"].as_u64().is_some_and(|s| s >= 1),
        "{limited}"
    );
    assert_eq!(limited["reason"], "RATE_LIMITED", "{limited}");

    // Another user of the same tenant has a budget of their own. The rows
    // reach audit_log once the outbox is relayed.
    stack.audit_relayed().await;
    let admin = auth::mint(auth::TENANT, "auditor", &["memory:admin"]);
    let rows = stack
        .gateway_as(&admin)
        .await
        .query_audit(QueryAuditRequest {
            chat_id: chat.clone(),
            user: user.clone(),
            ..QueryAuditRequest::default()
        })
        .await
        .unwrap_or_else(|s| panic!("QueryAudit: {s:?}"))
        .into_inner()
        .entries;
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.action.clone(), r.outcome.clone()))
        .collect();
    seen.sort();
    assert!(
        seen.contains(&("update".into(), "OK".into())),
        "no audited update by {user}: {seen:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.tenant == auth::TENANT && r.user == user),
        "{rows:?}"
    );
    let statuses = rows.iter().filter(|r| r.action == "status").count();
    assert_eq!(statuses, 2, "{seen:?}");

    mcp.cancel().await.ok();
    front.stop().await;
    stack.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_gateway_is_an_unavailable_tool_error_without_internals() {
    // A port nothing listens on: bound, then released.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        l.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"))
    };
    let front = Front::start(closed).await;
    let mcp = front.client("any-token").await;

    let error = tool_error(&mcp, "read_memory", json!({"chat_id": "c1"})).await;

    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("unreachable"), "{message}");
    assert!(!message.contains(&closed.port().to_string()), "{message}");
    mcp.cancel().await.ok();
    front.stop().await;
}
