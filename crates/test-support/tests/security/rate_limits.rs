//! Per-user limits shared by gateway replicas; failed authentications per address.

use std::time::Instant;

use tonic::Code;

use test_support::auth::{self, Bearer};
use test_support::stack::gateway_client;
use test_support::{GatewayClient, StackOptions, TestStack};

use super::{RW, get};

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
    // GCRA refills one request every 60/LIMIT s while the test runs.
    let refilled = (elapsed.as_secs_f64() * f64::from(LIMIT) / 60.0).floor() as u32;
    println!(
        "\nRATE LIMIT: two gateways, {total} requests in {:.2} s: allowed {allowed}, limited {limited}; limit {LIMIT}/min (+{refilled} refilled during the run); retry-after {retry_after:?}",
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
