//! Per-user limits shared by gateway replicas, per-tenant budgets of tokens
//! acting for their tenant; failed authentications per address.

use std::time::Instant;

use tonic::Code;

use test_support::auth::{self, Bearer};
use test_support::requests::get;
use test_support::stack::gateway_client;
use test_support::{GatewayClient, StackOptions, TestStack};

use super::RW;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_together_hold_one_per_user_rate_limit() {
    const LIMIT: u32 = 100;
    let mut stack = TestStack::start_with(StackOptions {
        workers: 0,
        rate_limit_per_minute: LIMIT,
        ..StackOptions::default()
    })
    .await;
    let second = stack.add_gateway().await;
    let token = auth::mint(auth::TENANT, "busy-user", RW);
    let clients: Vec<GatewayClient> = vec![
        stack.gateway_as(&token).await,
        gateway_client(second, Bearer::new(&token)).await,
    ];
    let writes_before = kv_writes(&stack).await;
    let started = Instant::now();
    let mut allowed = 0u32;
    let mut limited = 0u32;
    let mut retry_after = None;
    let total = 160usize;
    for round in 0..total / 8 {
        let calls = (0..8).map(|i| {
            let mut client = clients[(round * 8 + i) % 2].clone();
            async move { client.get_memory(get("never-written")).await }
        });
        for result in futures::future::join_all(calls).await {
            match result {
                Err(s) if s.code() == Code::ResourceExhausted => {
                    limited += 1;
                    let reason =
                        tonic_types::StatusExt::get_details_error_info(&s).map(|i| i.reason);
                    assert_eq!(reason.as_deref(), Some("RATE_LIMITED"), "{s:?}");
                    retry_after = s
                        .metadata()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                }
                Err(s) if s.code() == Code::NotFound => allowed += 1,
                other => panic!("unexpected answer: {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let writes = kv_writes(&stack).await - writes_before;
    // GCRA refills one request every 60/LIMIT s while the test runs.
    let refilled = (elapsed.as_secs_f64() * f64::from(LIMIT) / 60.0).floor() as u32;
    println!(
        "\nRATE LIMIT: two gateways, {total} requests in {:.2} s: allowed {allowed}, limited {limited}; limit {LIMIT}/min (+{refilled} refilled during the run); retry-after {retry_after:?}; {writes} KV writes",
        elapsed.as_secs_f64()
    );
    let ceiling = f64::from(LIMIT + refilled) * 1.05;
    assert!(
        f64::from(allowed) <= ceiling,
        "allowed {allowed} > {ceiling}"
    );
    assert!(
        f64::from(allowed) >= f64::from(LIMIT) * 0.95,
        "allowed only {allowed}"
    );
    assert!(
        retry_after.is_some(),
        "RESOURCE_EXHAUSTED without retry-after"
    );
    stack.shutdown().await;
}

/// Writes to the rate-limit bucket so far: its stream's last sequence number
/// (each compare-and-set that succeeds is one message).
async fn kv_writes(stack: &TestStack) -> u64 {
    let suffix = stack.queue.stream.trim_start_matches("CMT_");
    let mut bucket = stack
        .jetstream()
        .await
        .get_stream(format!("KV_CMT_RL_{suffix}"))
        .await
        .unwrap_or_else(|e| panic!("rate-limit bucket: {e}"));
    let info = bucket
        .info()
        .await
        .unwrap_or_else(|e| panic!("rate-limit bucket info: {e}"));
    info.state.last_sequence
}

/// Counts the answers of `calls` GetMemory calls on a never-written chat,
/// `concurrency` at a time: (allowed, limited).
async fn call_many(client: &GatewayClient, calls: usize, concurrency: usize) -> (u32, u32) {
    let (mut allowed, mut limited) = (0, 0);
    for _ in 0..calls / concurrency {
        let batch = (0..concurrency).map(|_| {
            let mut client = client.clone();
            async move { client.get_memory(get("never-written")).await }
        });
        for result in futures::future::join_all(batch).await {
            match result {
                Err(s) if s.code() == Code::ResourceExhausted => limited += 1,
                Err(s) if s.code() == Code::NotFound => allowed += 1,
                other => panic!("unexpected answer: {other:?}"),
            }
        }
    }
    (allowed, limited)
}

/// An agent service calling for many end users with one token that acts for its
/// tenant (`memory:service`) draws on the tenant's budget (default 6000/min), not
/// on the per-user limit, and leases it in blocks of 2% (120 tokens), so its
/// calls cost a handful of KV writes instead of one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_token_acting_for_its_tenant_draws_on_the_tenant_budget_not_the_per_user_limit() {
    const PER_USER: u32 = 100;
    const CALLS: usize = 480;
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        rate_limit_per_minute: PER_USER,
        ..StackOptions::default()
    })
    .await;
    let service = stack
        .gateway_as(&auth::mint(
            auth::TENANT,
            "agent-service",
            &["memory:service"],
        ))
        .await;
    let end_user = stack
        .gateway_as(&auth::mint(auth::TENANT, "agent-service", RW))
        .await;

    let before = kv_writes(&stack).await;
    let (allowed, limited) = call_many(&service, CALLS, 16).await;
    let writes = kv_writes(&stack).await - before;
    println!(
        "\nTENANT BUDGET: {CALLS} calls of a tenant-acting token: allowed {allowed}, limited {limited}; {writes} KV writes"
    );
    assert_eq!((allowed, limited), (CALLS as u32, 0));
    // Leases of 120 tokens, topped up from below half: at most one write per 60 calls.
    assert!(
        writes <= (CALLS as u64).div_ceil(60) + 1,
        "{writes} KV writes"
    );

    // The same subject with a per-user token still has its own per-user limit.
    let (allowed, limited) = call_many(&end_user, 160, 8).await;
    assert!(limited > 0, "the per-user limit did not apply");
    assert!(
        f64::from(allowed) <= f64::from(PER_USER) * 1.05 + 3.0,
        "allowed {allowed}"
    );
    stack.shutdown().await;
}

/// Calls without a valid token are limited per client address (token guessing
/// costs the guesser time); callers with valid tokens from the same address are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_are_limited_per_address_without_slowing_valid_callers() {
    let stack = TestStack::start_with(StackOptions {
        failed_auth_per_minute: 5,
        ..StackOptions::default()
    })
    .await;
    let mut guesser = gateway_client(stack.gateway_addr, Bearer::new("not.a.token")).await;
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let status = guesser
            .get_memory(get("any"))
            .await
            .map(|_| ())
            .expect_err("no valid token");
        if status.code() == Code::ResourceExhausted {
            retry_after = status.metadata().get("retry-after").cloned();
            let reason = tonic_types::StatusExt::get_details_error_info(&status).map(|i| i.reason);
            assert_eq!(reason.as_deref(), Some("AUTH_FAILURES_LIMITED"));
        }
        codes.push(status.code());
    }
    assert_eq!(
        codes,
        [
            vec![Code::Unauthenticated; 5],
            vec![Code::ResourceExhausted; 3]
        ]
        .concat()
    );
    assert!(
        retry_after.is_some(),
        "RESOURCE_EXHAUSTED without retry-after"
    );
    // The same address with a valid token is served.
    let mut client = stack.gateway().await;
    let status = client.get_memory(get("never-written")).await;
    assert_eq!(
        status.map(|_| ()).expect_err("unknown chat").code(),
        Code::NotFound
    );
    stack.shutdown().await;
}

/// Behind a trusted proxy (a load balancer, chat-memory-mcp) failed
/// authentications are limited per forwarded client address; from an
/// untrusted peer `x-forwarded-for` is ignored, so a guesser cannot pick a
/// fresh address per call (DEBT D-7, D-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_behind_a_trusted_proxy_are_limited_per_forwarded_client() {
    async fn failing(client: &mut test_support::GatewayClient, forwarded_for: &str) -> Code {
        let mut request = tonic::Request::new(get("any"));
        request.metadata_mut().insert(
            "x-forwarded-for",
            forwarded_for.parse().expect("metadata value"),
        );
        client
            .get_memory(request)
            .await
            .map(|_| ())
            .expect_err("no valid token")
            .code()
    }
    for (trusted, expected) in [
        // The proxy (this test, on loopback) is trusted: each client its own budget.
        (
            vec!["127.0.0.0/8".to_owned()],
            [
                Code::Unauthenticated,
                Code::Unauthenticated,
                Code::ResourceExhausted,
                Code::Unauthenticated,
            ],
        ),
        // Not trusted: every call is the connection's address, whatever it claims.
        (
            Vec::new(),
            [
                Code::Unauthenticated,
                Code::Unauthenticated,
                Code::ResourceExhausted,
                Code::ResourceExhausted,
            ],
        ),
    ] {
        let stack = TestStack::start_with(StackOptions {
            failed_auth_per_minute: 2,
            trusted_proxies: trusted.clone(),
            workers: 0,
            ..StackOptions::default()
        })
        .await;
        let mut guesser = gateway_client(stack.gateway_addr, Bearer::new("not.a.token")).await;
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(failing(&mut guesser, "198.51.100.1, 127.0.0.1").await);
        }
        codes.push(failing(&mut guesser, "198.51.100.2").await);
        assert_eq!(codes, expected, "trusted proxies {trusted:?}");
        stack.shutdown().await;
    }
}
