//! TLS on every gRPC listener, mTLS into memory-store and into the agent's MCP
//! listener, JWKS-verified tokens, and the service token the agent requires.

use std::time::Duration;

use tonic::Code;

use test_support::auth;
use test_support::requests::{get, user_update};
use test_support::{StackOptions, TestStack};

use super::{JOB_TIMEOUT, RW};

/// TLS on every gRPC listener, mTLS from the gateway and the worker into
/// memory-store and from the worker into the agent's MCP listener, and tokens
/// verified with RS256/ES256 keys from a JWKS file: a whole update round trip
/// over it, and what each listener refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_everywhere_mtls_into_memory_store_and_jwks_signed_tokens() {
    use jsonwebtoken::Algorithm;
    use test_support::pki::TestPki;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let pki = std::sync::Arc::new(TestPki::generate());
    let stack = TestStack::start_with(StackOptions {
        pki: Some(pki.clone()),
        auth: Some(auth::jwks_auth()),
        ..StackOptions::default()
    })
    .await;
    let claims = auth::claims(auth::TENANT, auth::USER, RW);

    // RS256 over TLS: the full round trip (gateway -> JetStream -> worker ->
    // memory-store over mTLS -> read back).
    let rs256 = auth::sign_with_key(&claims, Algorithm::RS256, "rsa-1", "rsa.pem");
    let mut client = stack.gateway_as(&rs256).await;
    let job = client
        .update_memory(user_update("tls-chat", "My member id is XKW-88123."))
        .await
        .expect("update over TLS")
        .into_inner()
        .job_id;
    let done = stack.wait_job_done(&job, JOB_TIMEOUT).await;
    assert_eq!(
        done.state,
        chat_memory_proto::v1::JobState::Succeeded as i32,
        "{done:?}"
    );
    let memory = client
        .get_memory(get("tls-chat"))
        .await
        .expect("read over TLS")
        .into_inner()
        .memory
        .expect("memory");
    assert!(
        memory.user_confirmed.contains("XKW-88123"),
        "{:?}",
        memory.user_confirmed
    );

    // ES256 from the same JWKS.
    let es256 = auth::sign_with_key(&claims, Algorithm::ES256, "ec-1", "ec.pem");
    stack
        .gateway_as(&es256)
        .await
        .get_memory(get("tls-chat"))
        .await
        .expect("ES256 token");
    // A key outside the JWKS, and an HS256 token, are refused.
    for (name, token) in [
        (
            "RS256 by another key",
            auth::sign_with_key(&claims, Algorithm::RS256, "rsa-1", "rsa-other.pem"),
        ),
        ("HS256", auth::mint(auth::TENANT, auth::USER, RW)),
    ] {
        let refused = stack
            .gateway_as(&token)
            .await
            .get_memory(get("tls-chat"))
            .await;
        assert_eq!(
            refused.map(|_| ()).expect_err(name).code(),
            Code::Unauthenticated,
            "{name}"
        );
    }

    // Plain HTTP/2 reaches no listener.
    for (name, addr) in [
        ("gateway", stack.gateway_addr),
        ("memory-store", stack.store_addr),
        ("worker", stack.worker_addrs[0]),
    ] {
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await;
        let answered = match plain {
            Err(_) => false,
            Ok(channel) => HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_ok(),
        };
        assert!(!answered, "{name} answered plain HTTP/2");
    }
    // memory-store wants a client certificate: without one, no call gets through.
    let without_cert = match pki.channel(stack.store_addr, false).await {
        Err(_) => false,
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_ok(),
    };
    assert!(
        !without_cert,
        "memory-store answered a client without a certificate"
    );
    // The agent's MCP listener: TLS with client certificates. The round trip
    // above went through it (the worker dials https:// with its certificate);
    // here, what it refuses.
    let input: summarizer_agent::tool::SummarizeInput = serde_json::from_value(serde_json::json!({
        "chat_id": "t/c", "messages": [{"id": "m1", "role": "user", "content": "hello"}]
    }))
    .unwrap_or_else(|e| panic!("input: {e}"));
    let token = auth::service_token();
    let agent_client = |url: String, tls: summarizer_agent::client::AgentTls| {
        summarizer_agent::client::AgentClient::with_options(
            &url,
            Duration::from_secs(5),
            Some(&token),
            &tls,
        )
        .unwrap_or_else(|e| panic!("{url}: {e}"))
    };
    let read = |f: &str| std::fs::read(pki.path(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let https = format!("https://{}/mcp", stack.agent_addr);
    let ca_only = summarizer_agent::client::AgentTls {
        ca_pem: Some(read("ca.crt")),
        identity_pem: None,
    };
    let with_cert = summarizer_agent::client::AgentTls {
        identity_pem: Some([read("client.crt"), read("client.key")].join(&b'\n')),
        ..ca_only.clone()
    };
    let summarized = agent_client(https.clone(), with_cert)
        .summarize(&input)
        .await;
    assert!(summarized.is_ok(), "mTLS summarize: {summarized:?}");
    for (name, client) in [
        (
            "plain HTTP",
            agent_client(
                format!("http://{}/mcp", stack.agent_addr),
                summarizer_agent::client::AgentTls::default(),
            ),
        ),
        (
            "TLS without a client certificate",
            agent_client(https.clone(), ca_only),
        ),
        (
            "TLS trusting only the system's roots",
            agent_client(https, summarizer_agent::client::AgentTls::default()),
        ),
    ] {
        let refused = client.summarize(&input).await;
        assert!(
            matches!(
                refused,
                Err(summarizer_agent::client::AgentClientError::Unavailable(_))
            ),
            "{name}: {refused:?}"
        );
    }
    let agent_health = HealthClient::new(
        pki.channel(stack.agent_addr, true)
            .await
            .expect("TLS with a client certificate to the agent"),
    )
    .check(HealthCheckRequest::default())
    .await;
    assert!(
        agent_health.is_ok(),
        "agent health over TLS: {agent_health:?}"
    );

    // The gateway does not want a client certificate (its clients are
    // authenticated by their tokens).
    let gateway_health = HealthClient::new(
        pki.channel(stack.gateway_addr, false)
            .await
            .expect("TLS without a client certificate"),
    )
    .check(HealthCheckRequest::default())
    .await;
    assert!(gateway_health.is_ok(), "{gateway_health:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_mcp_calls_without_the_service_token() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let url = format!("http://{}/mcp", stack.agent_addr);
    let input: summarizer_agent::tool::SummarizeInput = serde_json::from_value(serde_json::json!({
        "chat_id": "t/c", "messages": [{"id": "m1", "role": "user", "content": "hello"}]
    }))
    .unwrap_or_else(|e| panic!("input: {e}"));
    let anonymous = summarizer_agent::client::AgentClient::new(&url, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        anonymous.summarize(&input).await.is_err(),
        "anonymous MCP call succeeded"
    );
    let token = auth::service_token();
    let trusted = summarizer_agent::client::AgentClient::with_service_token(
        &url,
        Duration::from_secs(5),
        Some(&token),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    trusted
        .summarize(&input)
        .await
        .unwrap_or_else(|e| panic!("trusted call: {e}"));
    stack.shutdown().await;
}
